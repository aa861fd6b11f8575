/**
 * A model's own tokenizer for `kiln prepare`: a Hugging Face tokenizer.json (a model directory
 * holding one, or the file itself), read by @huggingface/tokenizers (pure JS, nothing
 * downloaded). Text is encoded with the tokenizer's default special-token handling, so BOS
 * comes where its post-processor puts it; EOS (tokenizer_config.json's eos_token, else
 * config.json's eos_token_id) goes between documents. Its identity is the sha256 of
 * tokenizer.json, which the shards record and `kiln train` compares with the model's.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { fail } from '../errors.js';
import { type Tokenizer, tokenizerByName } from './tokenizer.js';

/** A tokenizer read from tokenizer.json: `sha256` (hex) identifies it. */
export interface FileTokenizer extends Tokenizer {
  readonly sha256: string;
  readonly path: string;
}

/** A JSON file as an object; anything unreadable is a KilnError with `code` naming the file. */
export function readJsonFile(path: string, code: 'ERR_ARG' | 'ERR_CHECKPOINT'): Record<string, unknown> {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  } catch (error) {
    fail(code, `${path} is not valid JSON: ${(error as Error).message}`);
  }
}

function tokenContent(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') return (value as { content: string }).content;
  return undefined;
}

/**
 * tokenizer.json at `file` read by @huggingface/tokenizers with the tokenizer_config.json beside
 * it (prepare and serving read a model's tokenizer the same way); failures are `code`.
 */
export function openHfTokenizer(file: string, code: 'ERR_ARG' | 'ERR_CHECKPOINT'): { hf: HfTokenizer; config: Record<string, unknown> } {
  const json = readJsonFile(file, code);
  const configPath = join(dirname(file), 'tokenizer_config.json');
  const config = existsSync(configPath) ? readJsonFile(configPath, code) : {};
  try {
    return { hf: new HfTokenizer(json, config), config };
  } catch (error) {
    fail(code, `${file} could not be read as a tokenizer: ${(error as Error).message}`);
  }
}

/** The end-of-text id: tokenizer_config.json's eos_token, else config.json's eos_token_id (its first, when a list). */
export function endOfTextId(hf: HfTokenizer, tokenizerConfig: Record<string, unknown>, modelConfig: Record<string, unknown> | undefined): number | undefined {
  const eosName = tokenContent(tokenizerConfig.eos_token);
  const byName = eosName !== undefined ? hf.token_to_id(eosName) : undefined;
  if (byName !== undefined) return byName;
  const fromConfig = modelConfig?.eos_token_id;
  return typeof fromConfig === 'number' ? fromConfig : Array.isArray(fromConfig) && typeof fromConfig[0] === 'number' ? fromConfig[0] : undefined;
}

/** The tokenizer.json a model directory (or the file itself) stands for; undefined when a directory has none. */
export function tokenizerJsonOf(path: string): string | undefined {
  if (existsSync(path) && statSync(path).isDirectory()) {
    const file = join(path, 'tokenizer.json');
    return existsSync(file) ? file : undefined;
  }
  return existsSync(path) ? path : undefined;
}

/** sha256 (hex) of a tokenizer.json's bytes. */
export function tokenizerHash(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

/** The tokenizer of tokenizer.json at `file` (tokenizer_config.json and config.json beside it supply EOS). */
export function fileTokenizer(file: string): FileTokenizer {
  const { hf, config } = openHfTokenizer(file, 'ERR_ARG');
  // config.json beside it is read only when tokenizer_config.json names no eos_token
  const modelConfigPath = join(dirname(file), 'config.json');
  let eot = endOfTextId(hf, config, undefined);
  if (eot === undefined && existsSync(modelConfigPath)) eot = endOfTextId(hf, config, readJsonFile(modelConfigPath, 'ERR_ARG'));
  if (eot === undefined) fail('ERR_ARG', `${file}: no end-of-text token: tokenizer_config.json beside it names none (eos_token), nor does config.json (eos_token_id)`);
  // ids run from 0 to the largest of the vocabulary and the added tokens
  let vocabSize = 0;
  for (const id of hf.get_vocab(true).values()) vocabSize = Math.max(vocabSize, id + 1);
  for (const id of hf.get_added_tokens_decoder().keys()) vocabSize = Math.max(vocabSize, id + 1);
  const end = eot;
  return {
    name: 'hf', vocabSize, eot: end, sha256: tokenizerHash(file), path: file,
    encode: (text) => hf.encode(text).ids,
    decode: (ids) => hf.decode(ids.filter((i) => i !== end), { skip_special_tokens: true }),
  };
}

/** `--tokenizer`: byte, gpt2, a model directory holding tokenizer.json, or a tokenizer.json file. */
export async function tokenizerOf(spec: string): Promise<Tokenizer | FileTokenizer> {
  if (spec === 'byte' || spec === 'gpt2') return tokenizerByName(spec);
  if (!existsSync(spec)) fail('ERR_ARG', `unknown tokenizer '${spec}': pass byte, gpt2, a model directory holding tokenizer.json, or a tokenizer.json file`);
  const file = tokenizerJsonOf(spec);
  if (!file) fail('ERR_ARG', `${spec} has no tokenizer.json (pass a model directory holding one, the file itself, byte or gpt2)`);
  if (basename(file) !== 'tokenizer.json' && !file.endsWith('.json')) fail('ERR_ARG', `${file} is not a tokenizer.json`);
  return fileTokenizer(file);
}
