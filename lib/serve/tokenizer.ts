/**
 * The tokenizer a served model uses: a Hugging Face tokenizer.json (read by
 * @huggingface/tokenizers, pure JS, nothing downloaded) with its tokenizer_config.json, or
 * kiln's own tokenizers for kiln checkpoints (byte-level for vocabularies up to 256 ids, GPT-2
 * BPE otherwise: the rule `kiln generate` always used), or one named explicitly.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fail } from '../errors.js';
import { endOfTextId, openHfTokenizer } from '../data/hf_tokenizer.js';
import { type Tokenizer, byteTokenizer, tokenizerByName } from '../data/tokenizer.js';

export interface ServingTokenizer {
  readonly name: string;
  encode(text: string): number[];
  decode(ids: number[]): string;
  readonly eot: number;
  readonly vocabSize: number;
}

/** tokenizer.json (+ tokenizer_config.json) in `dir`; undefined when there is none. */
export function loadHfTokenizer(dir: string, modelConfig: Record<string, unknown>, vocabSize: number): { tokenizer: ServingTokenizer; chatTemplate?: string } | undefined {
  const path = join(dir, 'tokenizer.json');
  if (!existsSync(path)) return undefined;
  const { hf, config } = openHfTokenizer(path, 'ERR_CHECKPOINT');
  const eot = endOfTextId(hf, config, modelConfig) ?? -1;
  const tokenizer: ServingTokenizer = {
    name: 'hf',
    vocabSize,
    eot,
    encode: (text) => hf.encode(text).ids,
    decode: (ids) => (ids.length ? hf.decode(ids, { skip_special_tokens: true }) : ''),
  };
  const template = config.chat_template;
  const chatTemplate = typeof template === 'string' ? template : undefined;
  return { tokenizer, chatTemplate };
}

/** kiln's tokenizer for a kiln checkpoint: named, or chosen by the vocabulary size. */
export async function kilnTokenizer(name: string | undefined, vocabSize: number): Promise<ServingTokenizer> {
  const t: Tokenizer = name ? await tokenizerByName(name) : vocabSize <= 256 ? byteTokenizer : await tokenizerByName('gpt2');
  if (t.vocabSize > vocabSize) fail('ERR_ARG', `the ${t.name} tokenizer has ${t.vocabSize} ids, more than the model's vocabulary (${vocabSize})`);
  // ids past the tokenizer's own vocabulary (the model's padding, e.g. GPT-2's 50257 padded to 50304) decode to nothing
  const known = t.vocabSize;
  return { name: t.name, encode: (s) => t.encode(s), decode: (ids) => t.decode(ids.filter((i) => i < known)), eot: t.eot, vocabSize };
}
