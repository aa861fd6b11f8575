#!/usr/bin/env node
/**
 * Runs kiln's benchmarks and writes one JSON file per benchmark into --out (default
 * bench/results): `npm run bench -- --only memory --out /tmp/results`, or one benchmark with
 * its own settings, e.g. `kiln bench train --preset 1.4b --device cuda:0 --batch 8 --seq 2048`.
 */
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { KilnError, formatInfo } from '../lib/index.js';
import { parseDevice } from '../lib/device.js';
import { preset } from '../lib/model/config.js';
import { devicesToBenchmark, writeResults } from './harness.js';
import { benchMatmul } from './matmul.js';
import { benchMemory } from './memory.js';
import { benchTrain, benchTrainRun } from './train.js';
import { benchDashboard } from './dashboard.js';

const BENCHMARKS: Record<string, (devices: ReturnType<typeof devicesToBenchmark>) => Promise<unknown[]>> = {
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
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      out: { type: 'string', default: 'bench/results' }, only: { type: 'string' },
      // `train` with explicit settings
      preset: { type: 'string' }, device: { type: 'string' }, batch: { type: 'string' }, seq: { type: 'string' },
      steps: { type: 'string' }, warmup: { type: 'string' }, recompute: { type: 'boolean', default: false }, 'no-peer': { type: 'boolean', default: false },
    },
    strict: true,
  });
  const selected = values.only ? values.only.split(',') : positionals.length ? positionals : Object.keys(BENCHMARKS);
  const custom = values.preset !== undefined || values.device !== undefined || values.batch !== undefined || values.seq !== undefined || values.steps !== undefined;
  if (custom && (selected.length !== 1 || selected[0] !== 'train')) throw new KilnError('ERR_ARG', '--preset, --device, --batch, --seq and --steps apply to `bench train` alone');
  for (const name of selected) {
    if (!BENCHMARKS[name]) throw new KilnError('ERR_ARG', `unknown benchmark '${name}' (known: ${Object.keys(BENCHMARKS).join(', ')})`);
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
  for (const name of selected) {
    const bench = BENCHMARKS[name];
    let results: unknown[];
    if (trainSettings) {
      results = [await benchTrainRun(trainSettings)];
    } else {
      results = await bench(devicesToBenchmark());
    }
    console.log(`wrote ${writeResults(values.out!, name, results)}`);
  }
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
