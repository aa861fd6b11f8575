/**
 * The tokenizer a served model uses: a Hugging Face tokenizer.json (read by
 * @huggingface/tokenizers, pure JS, nothing downloaded) with its tokenizer_config.json, or
 * kiln's own tokenizers for kiln checkpoints (byte-level for vocabularies up to 256 ids, GPT-2
 * BPE otherwise: the rule `kiln generate` always used), or one named explicitly.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { fail } from '../errors.js';
import { type Tokenizer, byteTokenizer, tokenizerByName } from '../data/tokenizer.js';

export interface ServingTokenizer {
  readonly name: string;
  encode(text: string): number[];
  decode(ids: number[]): string;
  readonly eot: number;
  readonly vocabSize: number;
}

function readJson(path: string): Record<string, unknown> {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  } catch (error) {
    fail('ERR_CHECKPOINT', `${path} is not valid JSON: ${(error as Error).message}`);
  }
}

function tokenContent(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') return (value as { content: string }).content;
  return undefined;
}

/** tokenizer.json (+ tokenizer_config.json) in `dir`; undefined when there is none. */
export function loadHfTokenizer(dir: string, modelConfig: Record<string, unknown>, vocabSize: number): { tokenizer: ServingTokenizer; chatTemplate?: string } | undefined {
  const path = join(dir, 'tokenizer.json');
  if (!existsSync(path)) return undefined;
  const json = readJson(path);
  const configPath = join(dir, 'tokenizer_config.json');
  const config = existsSync(configPath) ? readJson(configPath) : {};
  let hf: HfTokenizer;
  try {
    hf = new HfTokenizer(json, config);
  } catch (error) {
    fail('ERR_CHECKPOINT', `${path} could not be read as a tokenizer: ${(error as Error).message}`);
  }
  const eosName = tokenContent(config.eos_token);
  let eot = eosName !== undefined ? hf.token_to_id(eosName) : undefined;
  if (eot === undefined) {
    const fromConfig = modelConfig.eos_token_id;
    eot = typeof fromConfig === 'number' ? fromConfig : Array.isArray(fromConfig) && typeof fromConfig[0] === 'number' ? fromConfig[0] : -1;
  }
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
