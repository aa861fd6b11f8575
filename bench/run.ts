#!/usr/bin/env node
/**
 * Runs kiln's benchmarks and writes one JSON file per benchmark into --out (default
 * bench/results). `npm run bench -- --only memory --out /tmp/results`.
 */
import { parseArgs } from 'node:util';
import { formatInfo } from '../lib/index.js';
import { devicesToBenchmark, writeResults } from './harness.js';
import { benchMatmul } from './matmul.js';
import { benchMemory } from './memory.js';
import { benchTrain } from './train.js';

const BENCHMARKS: Record<string, (devices: ReturnType<typeof devicesToBenchmark>) => Promise<unknown[]>> = {
  memory: benchMemory,
  matmul: benchMatmul,
  train: benchTrain,
};

const { values } = parseArgs({
  options: { out: { type: 'string', default: 'bench/results' }, only: { type: 'string' } },
  strict: true,
});

console.log(formatInfo() + '\n');
const selected = values.only ? values.only.split(',') : Object.keys(BENCHMARKS);
for (const name of selected) {
  const bench = BENCHMARKS[name];
  if (!bench) {
    console.error(`unknown benchmark '${name}' (known: ${Object.keys(BENCHMARKS).join(', ')})`);
    process.exit(2);
  }
  const results = await bench(devicesToBenchmark());
  console.log(`wrote ${writeResults(values.out!, name, results)}`);
}
