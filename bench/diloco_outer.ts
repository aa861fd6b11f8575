#!/usr/bin/env node
/**
 * DiLoCo's outer step on one rank, without the collective: the work every rank does around
 * the exchange, before (host copies of the weights and plain TypeScript loops, as
 * lib/parallel/diloco.ts did until the native ops) and after (the native ops on the training
 * device: lib/ops/outer_step.ts).
 *
 *   node dist/bench/diloco_outer.js [--bits 4] [--repeats 7] [--out bench/results]
 *
 * Sizes: the tiny preset's parameters (as the WAN harness trains) and 10M values. Both paths
 * take Δ = anchor − weights + residual, quantize it with error feedback, dequantize the
 * (one-rank) mean, take the outer Nesterov step and write the weights; wall time until the
 * weights are written (await synchronize()), median of the repeats. The machine is shared:
 * the load average is recorded with each result.
 */
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { dequantizeAdd, packedBytes, quantize } from '../lib/parallel/diloco.js';
import { LlamaModel } from '../lib/model/llama.js';
import type { DilocoOuterStepRow } from '../lib/monitor/results_schema.js';
import { preset } from '../lib/model/config.js';
import { copyInto } from '../lib/ops/layers.js';
import { dequantizeMean, outerNesterov, pseudoGradientQuantize } from '../lib/ops/outer_step.js';
import { type Tensor, randn, synchronize, zeros } from '../lib/index.js';
import { median, writeResults } from './harness.js';

async function hostPath(params: Tensor[], anchor: Float32Array, momentum: Float32Array, residual: Float32Array, bits: number): Promise<void> {
  const total = anchor.length;
  const current = new Float32Array(total);
  let at = 0;
  for (const p of params) {
    current.set((await p.toArray()) as Float32Array, at);
    at += p.numel;
  }
  const delta = new Float32Array(total);
  for (let i = 0; i < total; i++) delta[i] = anchor[i] - current[i] + residual[i];
  const packed = new Uint8Array(packedBytes(total, bits));
  const dq = new Float32Array(total);
  quantize(delta, bits, packed, dq);
  for (let i = 0; i < total; i++) residual[i] = delta[i] - dq[i];
  const mean = new Float32Array(total);
  dequantizeAdd(packed, total, bits, 1, mean);
  for (let i = 0; i < total; i++) {
    momentum[i] = 0.9 * momentum[i] + mean[i];
    anchor[i] -= 0.7 * (mean[i] + 0.9 * momentum[i]);
  }
  at = 0;
  for (const p of params) {
    p.write(anchor.subarray(at, at + p.numel));
    at += p.numel;
  }
  await synchronize();
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { bits: { type: 'string', default: '4' }, repeats: { type: 'string', default: '7' }, out: { type: 'string', default: 'bench/results' } } });
  const bits = Number(values.bits) as 2 | 4 | 8;
  const repeats = Number(values.repeats);
  const tiny = new LlamaModel(preset('tiny'), { device: 'cpu', seed: 1 });
  const cases: { name: string; params: Tensor[] }[] = [
    { name: 'tiny preset', params: tiny.parameters.map((p) => p.value) },
    { name: '10M values', params: [randn([2500, 2000], { seed: 1 }), randn([5_000_000], { seed: 2 })] },
  ];
  const results: DilocoOuterStepRow[] = [];
  for (const { name, params } of cases) {
    const total = params.reduce((a, p) => a + p.numel, 0);
    // before: host arrays
    const hostTimes: number[] = [];
    const anchor = new Float32Array(total).fill(0.01);
    const momentum = new Float32Array(total);
    const residual = new Float32Array(total);
    for (let r = 0; r < repeats + 1; r++) {
      const t0 = performance.now();
      await hostPath(params, anchor, momentum, residual, bits);
      if (r > 0) hostTimes.push(performance.now() - t0);
    }
    // after: device tensors and the native ops
    const [a, m, res, cur, mean] = [0, 1, 2, 3, 4].map(() => zeros([total]));
    const packed = zeros([packedBytes(total, bits) / 4]);
    let at = 0;
    const views = params.map((p) => {
      const v = cur.slice(at, at + p.numel).reshape(p.shape as number[]);
      at += p.numel;
      return v;
    });
    const opTimes: number[] = [];
    for (let r = 0; r < repeats + 1; r++) {
      const t0 = performance.now();
      params.forEach((p, i) => copyInto(views[i], p));
      pseudoGradientQuantize(packed, res, a, cur, bits);
      dequantizeMean(mean, packed, 1, bits);
      outerNesterov(a, m, cur, mean, { lr: 0.7, momentum: 0.9 });
      params.forEach((p, i) => copyInto(p, views[i]));
      await synchronize();
      if (r > 0) opTimes.push(performance.now() - t0);
    }
    const before = median(hostTimes);
    const after = median(opTimes);
    const row: DilocoOuterStepRow = { name, values: total, bits, hostLoopsMedianMs: before, nativeOpsMedianMs: after, speedup: before / after, repeats, loadAverage: loadavg()[0], threads: process.env.KILN_NUM_THREADS ?? 'default' };
    console.log(JSON.stringify(row));
    results.push(row);
  }
  console.log(`wrote ${writeResults(values.out!, 'diloco-outer-step', results)}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
