/**
 * Synchronous data parallelism (the trainer's TrainParallel hooks, lib/train/trainer.ts).
 *
 * - Each rank reads its rows of every global batch (the trainer does: seeded, resumable, the
 *   data position is global, so a run resumes with any world size).
 * - Gradients are all-reduced (averaged) in buckets of `bucketBytes` (default 25 MiB, PyTorch
 *   DDP's default), filled last layers first, each launched as soon as backward finished every
 *   gradient in it: the all-reduce runs on the communication thread while backward continues
 *   on the op queue, and the queue waits only before the gradient-norm clip needs them.
 *   Optionally reduced in bf16 (half the bytes; sums rounded to bf16).
 * - Muon is distributed: each rank runs Newton–Schulz on its share of the matrices and the
 *   results are all-gathered (Optimizer's newtonSchulzSharding).
 * - ZeRO-1 (optional): each rank keeps optimizer state for its share only (Optimizer's zero1:
 *   Muon momentum of the matrices it orthogonalizes, AdamW m and v of its range of the
 *   flattened AdamW parameters, whose updated weights are all-gathered).
 * - The loss slots are averaged so every rank reports the global batch's loss.
 */
import { fail } from '../errors.js';
import type { OptimizedParameter, OptimizerMemory, OptimizerOptions } from '../optim/optimizer.js';
import type { Tensor } from '../tensor.js';
import type { TrainParallel, Trainer } from '../train/trainer.js';
import { cudaCollectivesEnabled } from '../ops/collectives.js';
import type { Communicator } from './communicator.js';

/** The keys whose values are not undefined (so defaults survive a spread). */
export function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

export interface SyncOptions {
  /** gradient bucket size in bytes (default 25 MiB) */
  bucketBytes?: number;
  /** reduce gradients in bf16 (default false) */
  bf16Reduce?: boolean;
  /** share Newton–Schulz between ranks (default true) */
  distributedMuon?: boolean;
  /** ZeRO-1: shard the optimizer state between ranks (default false; needs distributedMuon, whose ownership it follows) */
  zero1?: boolean;
  /** tokens/s of one rank alone, for scalingEfficiency in the step metrics */
  baselineTokensPerSecond?: number;
}

interface Bucket {
  params: OptimizedParameter[];
  bytes: number;
  launched: boolean;
}

/** Figures every DP mode reports (nccl-tests' definitions: algbw = S / t, busbw = algbw · the algorithm's factor = bytes sent / t). */
export function commMetrics(comm: Communicator, stepMs: number, tokens: number, baselineTokensPerSecond?: number): Record<string, number> {
  const s = comm.stats();
  const seconds = s.commMs / 1e3;
  const out: Record<string, number> = {
    worldSize: comm.worldSize,
    commMs: s.commMs,
    commExposedMs: s.commExposedMs,
    commBytes: s.commBytes,
    commPayloadBytes: s.commPayloadBytes,
    commBytesPerToken: tokens > 0 ? s.commBytes / tokens : 0,
    algBandwidthGBs: seconds > 0 ? s.commPayloadBytes / seconds / 1e9 : 0,
    busBandwidthGBs: seconds > 0 ? s.commBytes / seconds / 1e9 : 0,
  };
  if (baselineTokensPerSecond && baselineTokensPerSecond > 0) {
    out.scalingEfficiency = tokens / (stepMs / 1e3) / (comm.worldSize * baselineTokensPerSecond);
  }
  return out;
}

export class SyncDataParallel implements TrainParallel {
  readonly rank: number;
  readonly worldSize: number;
  readonly mode = 'sync';
  private readonly comm: Communicator;
  private readonly options: Required<Omit<SyncOptions, 'baselineTokensPerSecond'>> & SyncOptions;
  private buckets: Bucket[] = [];
  private readonly bucketOf = new Map<OptimizedParameter, Bucket>();
  private ready = new Set<OptimizedParameter>();
  private works: unknown[] = [];
  /** the optimizer's memory figures for the step metrics (an ES private field: checkpoints serialize the trainer's options, this included) */
  #optimizerMemory?: () => OptimizerMemory;

  constructor(comm: Communicator, options: SyncOptions = {}) {
    this.comm = comm;
    this.rank = comm.rank;
    this.worldSize = comm.worldSize;
    this.options = { bucketBytes: 25 * 2 ** 20, bf16Reduce: false, distributedMuon: true, zero1: false, ...definedOnly(options) };
    const b = this.options.bucketBytes;
    if (!Number.isSafeInteger(b) || b < 1) fail('ERR_ARG', `bucketBytes must be a positive integer, got ${b}`);
    if (typeof this.options.zero1 !== 'boolean') fail('ERR_ARG', `zero1 must be a boolean, got ${String(this.options.zero1)}`);
    if (this.options.zero1 && !this.options.distributedMuon) {
      fail('ERR_ARG', 'ZeRO-1 keeps Muon momentum only for the matrices a rank orthogonalizes: it needs distributed Muon (drop --no-distributed-muon)');
    }
  }

  optimizerOptions(): OptimizerOptions {
    if (!this.options.distributedMuon || this.worldSize === 1) return {};
    return {
      zero1: this.options.zero1,
      newtonSchulzSharding: {
        rank: this.rank, worldSize: this.worldSize,
        allGather: (t: Tensor) => this.comm.allGather(t, 'Newton–Schulz all-gather'),
        wait: (w: unknown) => this.comm.wait(w as never),
      },
    };
  }

  attach(trainer: Trainer): void {
    this.#optimizerMemory = () => trainer.optimizer.memory();
    if (trainer.options.device !== 'cpu' && this.worldSize > 1 && !cudaCollectivesEnabled()) {
      fail('ERR_DEVICE', `data parallelism on ${trainer.options.device} stages gradients through host memory: written but unverified without GPUs; set KILN_CUDA_DIST=1 to run it (NCCL is not wired in yet)`);
    }
    // backward order: head, final norm, layers last to first, embedding (the reverse of declaration)
    const order = [...trainer.model.parameters].reverse();
    let current: Bucket | undefined;
    for (const p of order) {
      const bytes = p.grad.numel * 4;
      if (!current || current.bytes + bytes > this.options.bucketBytes) {
        current = { params: [], bytes: 0, launched: false };
        this.buckets.push(current);
      }
      current.params.push(p);
      current.bytes += bytes;
      this.bucketOf.set(p, current);
    }
    this.buckets = this.buckets.filter((b) => b.params.length > 0);
  }

  get bucketCount(): number {
    return this.buckets.length;
  }

  gradientsReady(params: OptimizedParameter[], step: number): void {
    this.comm.step = step;
    const last = this.buckets[this.buckets.length - 1];
    for (const p of params) {
      this.ready.add(p);
      const bucket = this.bucketOf.get(p);
      // the last bucket leaves with the loss slots in finishGradients (nothing runs in between)
      if (bucket && bucket !== last && !bucket.launched && bucket.params.every((q) => this.ready.has(q))) this.launch(bucket);
    }
  }

  private launch(bucket: Bucket, extra: Tensor[] = []): void {
    bucket.launched = true;
    const index = this.buckets.indexOf(bucket);
    this.works.push(this.comm.allReduce([...bucket.params.map((p) => p.grad), ...extra], { average: true, bf16Wire: this.options.bf16Reduce, what: `gradient bucket ${index} all-reduce` }));
  }

  finishGradients(lossSlots: Tensor[], step: number, stopVotes: Tensor): void {
    this.comm.step = step;
    const last = this.buckets[this.buckets.length - 1];
    for (const b of this.buckets) if (!b.launched && b !== last) this.launch(b);
    // averaged, the stop votes stay positive where any rank voted: every rank reads the same value
    if (this.options.bf16Reduce) {
      this.launch(last);
      this.works.push(this.comm.allReduce([...lossSlots, stopVotes], { average: true, what: 'loss all-reduce' }));
    } else {
      this.launch(last, [...lossSlots, stopVotes]); // the losses ride with the last gradients: one message fewer per step
    }
    for (const w of this.works) this.comm.wait(w as never);
    this.works = [];
    this.ready = new Set();
    for (const b of this.buckets) b.launched = false;
  }

  afterUpdate(): void {}

  stepMetrics(stepMs: number, tokens: number): Record<string, number | string> {
    const memory = this.#optimizerMemory?.();
    return {
      syncMode: 'sync', buckets: this.buckets.length, zero1: this.options.zero1 && this.worldSize > 1 ? 1 : 0,
      ...(memory ? { optimizerStateBytes: memory.stateBytes, optimizerWorkspaceBytes: memory.workspaceBytes } : {}),
      ...commMetrics(this.comm, stepMs, tokens, this.options.baselineTokensPerSecond),
    };
  }

  explain(error: unknown): Promise<unknown> {
    return this.comm.explain(error);
  }
}
