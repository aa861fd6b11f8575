/**
 * The training benchmark (`kiln bench train`): tokens/s, step latency p50/p99 and its forward /
 * backward / optimizer split, the host time to issue a step, achieved FLOP/s and MFU (6N +
 * 12·L·H·Q·T per token, attention counted dense), peak memory and tensor allocations per
 * steady-state step, next to the same model and optimizer in PyTorch (bench/peers/
 * torch_train.py: eager on the CPU; torch.compile + SDPA (+ torch.optim.Muon where present) on
 * CUDA) in the same run.
 *
 * Default set: the tiny preset on the CPU (with and without activation recomputation), and the
 * 1.4B preset at 16,384 tokens per step (8 x 2048) on each GPU. Targets (bench/targets.ts): tiny
 * on a 2-core CPU >= 1.0x PyTorch; 1.4B on an H100: MFU >= 50%, >= 1.2x PyTorch, p99 within 5% of p50.
 */
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { type Device, info, memoryStats } from '../lib/index.js';
import { preset } from '../lib/model/config.js';
import { bundledCorpus, prepareDocuments } from '../lib/io/shards.js';
import { byteTokenizer, gpt2Tokenizer } from '../lib/data/tokenizer.js';
import type { TrainPeer, TrainRow } from '../lib/monitor/results_schema.js';
import { Trainer } from '../lib/train/trainer.js';
import { runPeer } from './peers.js';

export interface TrainBenchOptions {
  preset: string;
  device: Device;
  batch: number;
  seqLen: number;
  warmup: number;
  steps: number;
  recompute: boolean;
  /** run the PyTorch peer too */
  peer: boolean;
}

function percentile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
}

/** Byte tokens for byte-vocabulary presets (tiny), GPT-2 tokens otherwise, cached under KILN_CACHE_DIR. */
export async function corpusFor(vocabSize: number): Promise<string> {
  const byte = vocabSize <= 256;
  const dir = join(process.env.KILN_CACHE_DIR ?? join(homedir(), '.cache', 'kiln'), byte ? 'data-byte' : 'data-gpt2');
  if (!existsSync(join(dir, 'train.bin'))) prepareDocuments(await bundledCorpus(), dir, byte ? byteTokenizer : await gpt2Tokenizer());
  return dir;
}

export async function benchTrainRun(o: TrainBenchOptions): Promise<TrainRow> {
  const config = preset(o.preset);
  const row: TrainRow = {
    device: o.device, preset: o.preset, batch: o.batch, seqLen: o.seqLen, tokensPerStep: o.batch * o.seqLen, warmup: o.warmup, steps: o.steps, recompute: o.recompute,
  };
  const label = `train ${o.device} ${o.preset}${o.recompute ? ' (recompute)' : ''}`;
  if (o.device !== 'cpu' && process.env.KILN_CUDA_TRAINING !== '1') {
    console.log(`${label}: skipped (CUDA training is not yet verified; set KILN_CUDA_TRAINING=1)`);
    return { ...row, skipped: 'KILN_CUDA_TRAINING is not 1' };
  }
  try {
    const data = await corpusFor(config.vocabSize);
    const trainer = new Trainer({ config, data, steps: o.warmup + o.steps, batch: o.batch, seqLen: o.seqLen, device: o.device, recompute: o.recompute, evalEvery: 0 });
    let allocationsAtWarmup = 0;
    const history = await trainer.run((m) => {
      if (m.step === o.warmup) allocationsAtWarmup = memoryStats(o.device).allocations;
    });
    // allocation requests per steady-state step (the step plan and optimizer state are made once)
    const allocationsPerStep = (memoryStats(o.device).allocations - allocationsAtWarmup) / o.steps;
    trainer.close();
    const measured = history.slice(o.warmup);
    const sorted = measured.map((m) => m.stepMs).sort((a, b) => a - b);
    const mean = (f: (m: (typeof measured)[number]) => number) => measured.reduce((s, m) => s + f(m), 0) / measured.length;
    const p50 = percentile(sorted, 0.5);
    const p99 = percentile(sorted, 0.99);
    Object.assign(row, {
      p50Ms: p50, p99Ms: p99, p99OverP50: p99 / p50, tokensPerSecond: (o.batch * o.seqLen) / (p50 / 1e3),
      forwardMs: mean((m) => m.forwardMs), backwardMs: mean((m) => m.backwardMs), optimizerMs: mean((m) => m.optimizerMs),
      // host time to issue a step (JavaScript + enqueueing) and its share of the step; the device works concurrently
      issueMs: mean((m) => m.issueMs), issueShare: mean((m) => m.issueMs / m.stepMs),
      gflops: mean((m) => m.achievedTflops) * 1e3, mfu: o.device === 'cpu' ? undefined : mean((m) => m.mfu ?? NaN),
      peakMemoryBytes: Math.max(...measured.map((m) => m.peakMemoryBytes)), allocationsPerStep,
      loss: [history[0].loss, history[history.length - 1].loss], threads: info().cpuThreads,
    });
  } catch (e) {
    row.error = (e as Error).message;
  }
  if (o.peer) {
    const cpu = o.device === 'cpu';
    const peer = runPeer('torch_train.py', { config, batch: o.batch, seqLen: o.seqLen, steps: o.steps, warmup: o.warmup, device: cpu ? 'cpu' : 'cuda', compile: !cpu },
      cpu ? { OMP_NUM_THREADS: String(info().cpuThreads) } : {});
    // torch_train.py's figures, as it printed them
    row.peer = 'error' in peer ? (peer as { error: string }) : ({ name: cpu ? 'PyTorch (CPU, eager)' : 'PyTorch (CUDA, torch.compile)', ...peer } as unknown as TrainPeer);
    const peerTps = 'error' in peer ? undefined : (peer as unknown as { tokensPerSecond: number }).tokensPerSecond;
    if (peerTps && typeof row.tokensPerSecond === 'number') row.speedupVsPeer = row.tokensPerSecond / peerTps;
  }
  const f = (x: unknown, d = 1) => (typeof x === 'number' ? x.toFixed(d) : String(x));
  const peer = row.peer as { error?: string; tokensPerSecond?: number } | undefined;
  console.log(
    `${label}: ` + (row.error ? `error: ${row.error}` :
      `${Math.round(row.tokensPerSecond as number)} tok/s, step p50 ${f(row.p50Ms)} ms p99 ${f(row.p99Ms)} ms ` +
      `(fwd ${f(row.forwardMs)} / bwd ${f(row.backwardMs)} / opt ${f(row.optimizerMs)} ms; issue ${f(row.issueMs)} ms = ${f(100 * (row.issueShare as number), 0)}%), ` +
      `${f(row.gflops)} GFLOP/s${row.mfu !== undefined ? `, MFU ${f(100 * (row.mfu as number))}%` : ''}, peak ${f((row.peakMemoryBytes as number) / 2 ** 20, 0)} MiB, ` +
      `${f(row.allocationsPerStep, 1)} allocations/step`) +
      (peer === undefined ? '' : peer.error ? `; peer unavailable: ${peer.error}` : `; PyTorch ${Math.round(peer.tokensPerSecond!)} tok/s` + (row.speedupVsPeer ? ` -> ${f(row.speedupVsPeer, 2)}x` : '')),
  );
  return row;
}

/** The default set for `npm run bench` / check:gpu. */
export async function benchTrain(devices: Device[]): Promise<TrainRow[]> {
  const results: TrainRow[] = [];
  for (const device of devices) {
    if (device === 'cpu') {
      const base = { preset: 'tiny', device, batch: 16, seqLen: 128, warmup: 5, steps: 40 } as const;
      results.push(await benchTrainRun({ ...base, recompute: false, peer: true }));
      results.push(await benchTrainRun({ ...base, recompute: true, peer: false }));
    } else {
      results.push(await benchTrainRun({ preset: process.env.KILN_BENCH_TRAIN_PRESET ?? '1.4b', device, batch: 8, seqLen: 2048, warmup: 3, steps: 12, recompute: false, peer: true }));
    }
  }
  return results;
}
