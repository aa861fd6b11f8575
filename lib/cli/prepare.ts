/** `kiln prepare`: tokenizes .txt/.md/.jsonl files (default: the bundled corpus) into train.bin and val.bin token shards, with byte, gpt2 or a model's tokenizer.json. */
import { copyFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { KilnError } from '../errors.js';
import { tokenizerOf } from '../data/hf_tokenizer.js';
import { bundledCorpus, prepareDocuments, prepareFiles } from '../io/shards.js';
import { parseCommand } from './commands.js';

export async function prepareCommand(rest: string[]): Promise<number> {
  const parsed = parseCommand('prepare', rest);
  if (!parsed) return 0;
  const { values, positionals } = parsed;
  const valFraction = Number(values.val);
  if (!(valFraction > 0 && valFraction < 1)) throw new KilnError('ERR_ARG', `--val takes the share of documents held out for validation, a number in (0, 1) such as 0.01, got ${values.val}`);
  const seed = Number(values.seed);
  if (!Number.isSafeInteger(seed)) throw new KilnError('ERR_ARG', `--seed takes an integer, got ${values.seed}`);
  const tokenizer = await tokenizerOf(values.tokenizer);
  const options = { valFraction, seed, strict: values.strict };
  const started = performance.now();
  const result = positionals.length
    ? prepareFiles(positionals, values.out, tokenizer, options)
    : prepareDocuments(await bundledCorpus(), values.out, tokenizer, options);
  for (const bad of result.invalidUtf8 ?? []) {
    console.error(`warning: ${bad.file} is not valid UTF-8: ${bad.sequences} invalid sequence${bad.sequences === 1 ? '' : 's'} on ${bad.lines} line${bad.lines === 1 ? '' : 's'} (the first: line ${bad.firstLine}) became U+FFFD; --strict refuses such files`);
  }
  const skipped = result.skipped ?? [];
  if (skipped.length) {
    console.error(`note: skipped ${skipped.length} file${skipped.length === 1 ? '' : 's'} that ${skipped.length === 1 ? 'is' : 'are'} not .txt, .md or .jsonl: ${skipped.slice(0, 5).join(', ')}${skipped.length > 5 ? ', ...' : ''}`);
  }
  if (tokenizer.sha256 && 'path' in tokenizer) {
    // beside the shards, so that a run of a preset or --config on them saves the tokenizer with its checkpoints
    const from = tokenizer.path as string;
    copyFileSync(from, join(values.out, 'tokenizer.json'));
    const config = join(dirname(from), 'tokenizer_config.json');
    if (existsSync(config)) copyFileSync(config, join(values.out, 'tokenizer_config.json'));
  }
  for (const shard of [result.train, result.val]) {
    console.log(`${shard.path}: ${shard.tokens.toLocaleString()} ${tokenizer.sha256 ? `tokenizer.json (sha256 ${tokenizer.sha256.slice(0, 16)}…)` : tokenizer.name} tokens (${shard.bytesPerToken} bytes each)`);
  }
  console.log(`prepared in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  return 0;
}
