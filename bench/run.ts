#!/usr/bin/env node
/**
 * Runs kiln's benchmarks and writes one JSON file per benchmark into --out (default
 * bench/results): `npm run bench -- --only memory --out /tmp/results`, or one benchmark with
 * its own settings, e.g. `kiln bench train --preset 1.4b --device cuda:0 --batch 8 --seq 2048`.
 */
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { KilnError, formatInfo, info } from '../lib/index.js';
import { parseDevice } from '../lib/device.js';
import { preset } from '../lib/model/config.js';
import type { ResultRows } from '../lib/monitor/results_schema.js';
import { devicesToBenchmark, writeResults } from './harness.js';
import { benchMatmul } from './matmul.js';
import { benchMemory } from './memory.js';
import { benchTrain, benchTrainRun } from './train.js';
import { SERVE_DEFAULTS, type ServeBenchOptions, benchServe } from './serve.js';
import { benchDashboard } from './dashboard.js';
import { parseCommand } from '../lib/cli/commands.js';

type DefaultBenchmark = 'memory' | 'matmul' | 'train' | 'dashboard';
const BENCHMARKS: { [B in DefaultBenchmark]: (devices: ReturnType<typeof devicesToBenchmark>) => Promise<ResultRows[B][]> } = {
  memory: benchMemory,
  matmul: benchMatmul,
  train: benchTrain,
  dashboard: benchDashboard,
};

function positiveInt(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 1) throw new KilnError('ERR_ARG', `--${name} must be a positive integer, got ${value}`);
  return n;
}

export async function runBench(args: string[]): Promise<number> {
  // the flags, their defaults and the help: lib/cli/commands.ts (COMMANDS.bench)
  const parsed = parseCommand('bench', args);
  if (!parsed) return 0;
  const { values, positionals } = parsed;
  if (positionals[0] === 'serve' || values.only === 'serve') return runServe(values, positionals.slice(1));
  const selected = values.only ? values.only.split(',') : positionals.length ? positionals : Object.keys(BENCHMARKS);
  const custom = values.preset !== undefined || values.device !== undefined || values.batch !== undefined || values.seq !== undefined || values.steps !== undefined;
  if (custom && (selected.length !== 1 || selected[0] !== 'train')) throw new KilnError('ERR_ARG', '--preset, --device, --batch, --seq and --steps apply to `bench train` alone');
  for (const name of selected) {
    if (!BENCHMARKS[name as DefaultBenchmark]) throw new KilnError('ERR_ARG', `unknown benchmark '${name}' (known: ${Object.keys(BENCHMARKS).join(', ')})`);
  }
  let trainSettings: Parameters<typeof benchTrainRun>[0] | undefined;
  if (custom) {
    const device = parseDevice(values.device ?? 'cpu', '--device');
    const gpu = device !== 'cpu';
    trainSettings = {
      preset: values.preset ?? (gpu ? '1.4b' : 'tiny'), device,
      batch: positiveInt(values.batch, 'batch') ?? (gpu ? 8 : 16), seqLen: positiveInt(values.seq, 'seq') ?? (gpu ? 2048 : 128),
      steps: positiveInt(values.steps, 'steps') ?? (gpu ? 12 : 40), warmup: positiveInt(values.warmup, 'warmup') ?? (gpu ? 3 : 5),
      recompute: values.recompute!, peer: !values['no-peer'],
    };
    preset(trainSettings.preset); // an unknown preset is an error before anything runs
  }
  console.log(formatInfo() + '\n');
  for (const name of selected as DefaultBenchmark[]) {
    const bench = BENCHMARKS[name];
    let results: ResultRows[DefaultBenchmark][];
    if (trainSettings) {
      results = [await benchTrainRun(trainSettings)];
    } else {
      results = await bench(devicesToBenchmark());
    }
    console.log(`wrote ${writeResults(values.out!, name, results)}`);
  }
  return 0;
}

/** `kiln bench serve ...`: the serving benchmark with its own options (bench/serve.ts). */
async function runServe(values: Record<string, string | boolean | undefined>, extra: string[]): Promise<number> {
  if (extra.length) throw new KilnError('ERR_ARG', `bench serve takes no further positionals: ${extra.join(' ')}`);
  const str = (k: string) => values[k] as string | undefined;
  const list = (k: string, positive: boolean) => str(k)?.split(',').map((x) => {
    const n = Number(x);
    if (!(n > 0) || (positive && !Number.isSafeInteger(n))) throw new KilnError('ERR_ARG', `--${k} takes positive ${positive ? 'integers' : 'numbers'}, got ${x}`);
    return n;
  });
  const url = str('url');
  const dtype = str('dtype') ?? SERVE_DEFAULTS.dtype;
  if (dtype !== 'f32' && dtype !== 'bf16') throw new KilnError('ERR_ARG', `--dtype must be f32 or bf16, got ${dtype}`);
  const options: ServeBenchOptions = {
    ...SERVE_DEFAULTS,
    checkpoint: str('checkpoint'), preset: str('preset') ?? SERVE_DEFAULTS.preset, dtype,
    drivers: str('drivers')?.split(',') ?? (url ? ['kiln', 'http'] : SERVE_DEFAULTS.drivers), url, model: str('model'), apiKey: str('api-key'), data: str('data'),
    promptMin: positiveInt(str('prompt-min'), 'prompt-min') ?? SERVE_DEFAULTS.promptMin, promptMax: positiveInt(str('prompt-max'), 'prompt-max') ?? SERVE_DEFAULTS.promptMax,
    outputTokens: positiveInt(str('output-tokens'), 'output-tokens') ?? SERVE_DEFAULTS.outputTokens, requests: positiveInt(str('requests'), 'requests') ?? SERVE_DEFAULTS.requests,
    concurrency: list('concurrency', true) ?? SERVE_DEFAULTS.concurrency, rates: list('rates', false) ?? SERVE_DEFAULTS.rates,
    rateRequests: positiveInt(str('rate-requests'), 'rate-requests') ?? SERVE_DEFAULTS.rateRequests,
    kvCacheMiB: positiveInt(str('kv-cache-mib'), 'kv-cache-mib') ?? SERVE_DEFAULTS.kvCacheMiB, seed: Number(str('seed') ?? 0),
    bandwidth: !values['no-bandwidth'], threads: info().cpuThreads, peerThreads: positiveInt(str('peer-threads'), 'peer-threads'),
  };
  console.log(formatInfo() + '\n');
  const result = await benchServe(options);
  console.log(`wrote ${writeResults(str('out') ?? 'bench/results', 'serve', [result])}`);
  return 0;
}

// run directly (npm run bench); `kiln bench` imports runBench
if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  runBench(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => {
      console.error(e instanceof KilnError ? `kiln bench: ${e.code}: ${e.message}` : e);
      process.exit(e instanceof KilnError ? 2 : 1);
    },
  );
}
