/**
 * `kiln bench train`-style benchmark: tokens/s, step latency p50/p99 and its forward /
 * backward / optimizer split, achieved FLOP/s (6N + 12·L·H·Q·T per token, attention counted
 * dense) and peak memory, next to the same model and optimizer in PyTorch (bench/peers/
 * torch_train.py) in the same run. The tiny preset on the CPU today (the model layers' CUDA
 * kernels are owed, so the 1.4B GPU run waits for them).
 */
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { Device } from '../lib/index.js';
import { preset } from '../lib/model/config.js';
import { bundledCorpus, prepareDocuments } from '../lib/data/shards.js';
import { byteTokenizer } from '../lib/data/tokenizer.js';
import { Trainer } from '../lib/train/trainer.js';
import { info, memoryStats } from '../lib/index.js';
import { runPeer } from './peers.js';

function percentile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
}

export async function benchTrain(devices: Device[]): Promise<unknown[]> {
  const results: unknown[] = [];
  if (!devices.includes('cpu')) return results;
  const data = join(process.env.KILN_CACHE_DIR ?? join(homedir(), '.cache', 'kiln'), 'data-byte');
  if (!existsSync(join(data, 'train.bin'))) prepareDocuments(await bundledCorpus(), data, byteTokenizer);
  const config = preset('tiny');
  const [batch, seqLen, warmup, steps] = [16, 128, 5, 40];
  const run = async (recompute: boolean) => {
    const trainer = new Trainer({ config, data, steps: warmup + steps, batch, seqLen, device: 'cpu', recompute });
    let allocationsAtWarmup = 0;
    const history = await trainer.run((m) => {
      if (m.step === warmup) allocationsAtWarmup = memoryStats('cpu').allocations;
    });
    // tensor allocations per steady-state step (the step plan and optimizer workspaces are made once)
    const allocationsPerStep = (memoryStats('cpu').allocations - allocationsAtWarmup) / steps;
    trainer.close();
    const measured = history.slice(warmup);
    const sorted = measured.map((m) => m.stepMs).sort((a, b) => a - b);
    const mean = (f: (m: (typeof measured)[number]) => number) => measured.reduce((s, m) => s + f(m), 0) / measured.length;
    const p50 = percentile(sorted, 0.5);
    return {
      device: 'cpu', preset: 'tiny', batch, seqLen, steps, recompute, p50Ms: p50, p99Ms: percentile(sorted, 0.99), tokensPerSecond: (batch * seqLen) / (p50 / 1e3),
      forwardMs: mean((m) => m.forwardMs), backwardMs: mean((m) => m.backwardMs), optimizerMs: mean((m) => m.optimizerMs),
      // host time to issue a step (JavaScript + enqueueing) and its share of the step: the CPU worker runs concurrently
      issueMs: mean((m) => m.issueMs), issueShare: mean((m) => m.issueMs / m.stepMs),
      gflops: mean((m) => m.achievedTflops) * 1e3, peakMemoryBytes: Math.max(...measured.map((m) => m.peakMemoryBytes)), allocationsPerStep, threads: info().cpuThreads,
    };
  };
  const kiln = await run(false);
  const recomputed = await run(true);
  const p50 = kiln.p50Ms;
  const peer = runPeer('torch_train.py', { config, batch, seqLen, steps, warmup, device: 'cpu' }, { OMP_NUM_THREADS: String(info().cpuThreads) });
  const row = { ...kiln, withRecompute: recomputed, peer: 'error' in peer ? peer : { name: 'PyTorch (CPU, eager)', ...peer }, speedupVsPeer: 'error' in peer ? undefined : kiln.tokensPerSecond / (peer as unknown as { tokensPerSecond: number }).tokensPerSecond };
  console.log(
    `train cpu tiny: ${Math.round(kiln.tokensPerSecond)} tok/s, step p50 ${p50.toFixed(1)} ms p99 ${kiln.p99Ms.toFixed(1)} ms ` +
      `(fwd ${kiln.forwardMs.toFixed(1)} / bwd ${kiln.backwardMs.toFixed(1)} / opt ${kiln.optimizerMs.toFixed(1)} ms), ${kiln.gflops.toFixed(1)} GFLOP/s, peak ${(kiln.peakMemoryBytes / 2 ** 20).toFixed(0)} MiB, ` +
      `issue ${kiln.issueMs.toFixed(1)} ms (${(100 * kiln.issueShare).toFixed(0)}% of the step), ${kiln.allocationsPerStep} allocations/step; ` +
      `recompute: ${Math.round(recomputed.tokensPerSecond)} tok/s, peak ${(recomputed.peakMemoryBytes / 2 ** 20).toFixed(0)} MiB` +
      ('error' in peer ? `; peer unavailable: ${peer.error}` : `; PyTorch ${Math.round((peer as unknown as { tokensPerSecond: number }).tokensPerSecond)} tok/s -> ${row.speedupVsPeer!.toFixed(2)}x`),
  );
  results.push(row);
  return results;
}
