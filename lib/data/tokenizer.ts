/**
 * Tokenizers: byte-level (256 ids, exact round trip of any UTF-8 text) and GPT-2 BPE (r50k_base,
 * 50257 ids) from the gpt-tokenizer package, which ships its vocabulary: nothing is downloaded.
 */
import { fail } from '../errors.js';

export interface Tokenizer {
  readonly name: string;
  readonly vocabSize: number;
  /** end-of-text id appended between documents */
  readonly eot: number;
  /** a tokenizer read from tokenizer.json: the sha256 (hex) of that file, its identity */
  readonly sha256?: string;
  encode(text: string): number[];
  decode(ids: number[]): string;
}

export const byteTokenizer: Tokenizer = {
  name: 'byte',
  vocabSize: 256,
  eot: 0, // NUL never appears in text corpora
  encode: (text) => Array.from(Buffer.from(text, 'utf8')),
  decode: (ids) => Buffer.from(ids.filter((i) => i > 0 && i < 256)).toString('utf8'),
};

let gpt2: Tokenizer | undefined;

export async function gpt2Tokenizer(): Promise<Tokenizer> {
  if (gpt2) return gpt2;
  const m = await import('gpt-tokenizer/encoding/r50k_base');
  const eot = 50256;
  gpt2 = {
    name: 'gpt2',
    vocabSize: 50257,
    eot,
    encode: (text) => m.encode(text, { allowedSpecial: new Set() }),
    decode: (ids) => m.decode(ids.filter((i) => i !== eot)),
  };
  return gpt2;
}

export async function tokenizerByName(name: string): Promise<Tokenizer> {
  if (name === 'byte') return byteTokenizer;
  if (name === 'gpt2') return gpt2Tokenizer();
  fail('ERR_ARG', `unknown tokenizer '${name}' (known: byte, gpt2)`);
}
