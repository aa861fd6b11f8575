/**
 * DiLoCo / MuLoCo: low-communication data parallelism (Douillard et al. 2023, "DiLoCo";
 * MuLoCo: Muon as the inner optimizer). Each rank takes H local steps of the trainer's own
 * optimizer (Muon + AdamW) on its data shard; then the pseudo-gradients Δ = θ_anchor − θ_local
 * are averaged across ranks and an outer Nesterov SGD applies them:
 *
 *   m = μ·m + Δ̄;  θ_anchor ← θ_anchor − η_out·(Δ̄ + μ·m)   (nesterov; without: − η_out·m)
 *
 * defaults η_out = 0.7, μ = 0.9 (the DiLoCo paper's). Every rank then continues from the new
 * anchor; the inner optimizer state stays local.
 *
 * Optional quantization of Δ to 8, 4 or 2 bits (symmetric, one f32 absmax scale per block of
 * 128 values) with error feedback (the rounding error is added to the next Δ, so nothing is
 * lost, only delayed): the ranks all-gather the packed codes and each dequantizes and averages
 * them. Bytes per outer step: f32 all-reduce 2(W−1)/W·4N, quantized all-gather (W−1)·N·(b/8 + 4/128).
 *
 * The outer step runs on host copies of the weights (read once per H steps); the packing
 * loops are plain TypeScript over those copies.
 */
import { fail } from '../errors.js';
import type { OptimizerOptions } from '../optim/optimizer.js';
import { type Tensor, tensor } from '../tensor.js';
import type { TrainParallel, Trainer } from '../train/trainer.js';
import { cudaCollectivesEnabled } from '../ops/collectives.js';
import type { Communicator } from './communicator.js';
import { commMetrics, definedOnly } from './data_parallel.js';

export interface DiLoCoOptions {
  /** inner steps between synchronizations (H) */
  innerSteps: number;
  outerLr?: number;
  outerMomentum?: number;
  nesterov?: boolean;
  /** 0 (f32, default), 8, 4 or 2 */
  quantBits?: 0 | 8 | 4 | 2;
  /** add each rank's quantization error to its next pseudo-gradient (default true) */
  errorFeedback?: boolean;
  baselineTokensPerSecond?: number;
}

export const QUANT_BLOCK = 128;

/** Packed size in bytes of n values at `bits` (codes + one f32 scale per block), padded to 4. */
export function packedBytes(n: number, bits: number): number {
  const blocks = Math.ceil(n / QUANT_BLOCK);
  return Math.ceil((blocks * 4 + Math.ceil((n * bits) / 8)) / 4) * 4;
}

/**
 * Quantizes x into out (packedBytes(x.length, bits) bytes): per block, scale = absmax / L with
 * L = 2^(bits−1) − 1, code = round(x / scale) + L in `bits` bits. Writes the dequantized values
 * into `dequantized` (what every rank will reconstruct).
 */
export function quantize(x: Float32Array, bits: number, out: Uint8Array, dequantized: Float32Array): void {
  const n = x.length;
  const L = 2 ** (bits - 1) - 1;
  const blocks = Math.ceil(n / QUANT_BLOCK);
  const scales = new Float32Array(out.buffer, out.byteOffset, blocks);
  const codesAt = blocks * 4;
  out.fill(0, codesAt);
  for (let b = 0; b < blocks; b++) {
    const lo = b * QUANT_BLOCK;
    const hi = Math.min(n, lo + QUANT_BLOCK);
    let absmax = 0;
    for (let i = lo; i < hi; i++) absmax = Math.max(absmax, Math.abs(x[i]));
    const scale = absmax / L;
    scales[b] = scale;
    const inv = scale > 0 ? 1 / Math.fround(scale) : 0;
    for (let i = lo; i < hi; i++) {
      const q = Math.max(-L, Math.min(L, Math.round(x[i] * inv)));
      dequantized[i] = q * Math.fround(scale);
      const code = q + L;
      const bit = i * bits;
      // bits divides 8: a code never straddles a byte
      out[codesAt + (bit >> 3)] |= code << (bit & 7);
    }
  }
}

/** Adds the dequantized values of `packed` (n values) times `weight` into acc. */
export function dequantizeAdd(packed: Uint8Array, n: number, bits: number, weight: number, acc: Float32Array): void {
  const L = 2 ** (bits - 1) - 1;
  const blocks = Math.ceil(n / QUANT_BLOCK);
  const scales = new Float32Array(packed.buffer, packed.byteOffset, blocks);
  const codesAt = blocks * 4;
  const mask = (1 << bits) - 1;
  for (let i = 0; i < n; i++) {
    const bit = i * bits;
    const code = (packed[codesAt + (bit >> 3)] >> (bit & 7)) & mask;
    acc[i] += weight * (code - L) * scales[Math.floor(i / QUANT_BLOCK)];
  }
}

export class DiLoCo implements TrainParallel {
  readonly rank: number;
  readonly worldSize: number;
  private readonly comm: Communicator;
  readonly options: Required<Omit<DiLoCoOptions, 'baselineTokensPerSecond'>> & DiLoCoOptions;
  private params: Tensor[] = [];
  private anchor?: Float32Array;
  private momentum?: Float32Array;
  private error?: Float32Array;
  private total = 0;
  private voteWork?: unknown;
  outerSteps = 0;

  constructor(comm: Communicator, options: DiLoCoOptions) {
    this.comm = comm;
    this.rank = comm.rank;
    this.worldSize = comm.worldSize;
    this.options = { outerLr: 0.7, outerMomentum: 0.9, nesterov: true, quantBits: 0, errorFeedback: true, ...definedOnly(options), innerSteps: options.innerSteps };
    const o = this.options;
    if (!Number.isSafeInteger(o.innerSteps) || o.innerSteps < 1) fail('ERR_ARG', `innerSteps must be a positive integer, got ${o.innerSteps}`);
    if (![0, 2, 4, 8].includes(o.quantBits)) fail('ERR_ARG', `quantBits must be 0, 8, 4 or 2, got ${o.quantBits}`);
    for (const [k, v] of [['outerLr', o.outerLr], ['outerMomentum', o.outerMomentum]] as const) {
      if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) fail('ERR_ARG', `${k} must be a finite number >= 0`);
    }
  }

  optimizerOptions(): OptimizerOptions {
    return {}; // the inner steps are local: each rank runs its whole optimizer
  }

  attach(trainer: Trainer): void {
    if (trainer.options.device !== 'cpu' && this.worldSize > 1 && !cudaCollectivesEnabled()) {
      fail('ERR_DEVICE', `DiLoCo on ${trainer.options.device} exchanges host copies of the weights: written but unverified without GPUs; set KILN_CUDA_DIST=1 to run it`);
    }
    this.params = trainer.model.parameters.map((p) => p.value);
    this.total = this.params.reduce((a, t) => a + t.numel, 0);
  }

  gradientsReady(): void {}
  finishGradients(_slots: Tensor[], step: number, stopVotes: Tensor): void {
    this.comm.step = step;
    // the losses stay local; the stop votes (4 bytes) are summed so every rank stops after the
    // same step, waited for only after the optimizer update is queued (it overlaps the update)
    this.voteWork = this.comm.allReduce([stopVotes], { average: false, what: 'stop vote all-reduce' });
  }

  /** Every H steps: the outer step. */
  async afterUpdate(step: number): Promise<void> {
    this.comm.step = step;
    if (this.voteWork) this.comm.wait(this.voteWork as never);
    this.voteWork = undefined;
    if (step % this.options.innerSteps === 0) await this.outerStep();
  }

  /** The loop ended between two synchronizations (an agreed stop, or steps not a multiple of H): one outer step more, so the ranks end on their common anchor. */
  async finish(step: number): Promise<void> {
    this.comm.step = step;
    if (this.anchor && step % this.options.innerSteps !== 0) await this.outerStep();
  }

  /** Reads the weights, exchanges the pseudo-gradients, applies the outer Nesterov step and writes the new anchor into the weights. */
  private async outerStep(): Promise<void> {
    const o = this.options;
    const current = await this.readWeights();
    const anchor = this.anchor!;
    const delta = new Float32Array(this.total);
    for (let i = 0; i < this.total; i++) delta[i] = anchor[i] - current[i];
    const mean = new Float32Array(this.total);
    if (o.quantBits === 0) {
      const t = tensor(delta, { shape: [this.total] });
      this.comm.wait(this.comm.allReduce([t], { average: true, what: 'DiLoCo pseudo-gradient all-reduce' }));
      mean.set(await t.toArray() as Float32Array);
      t.dispose();
    } else {
      if (o.errorFeedback) {
        this.error ??= new Float32Array(this.total);
        for (let i = 0; i < this.total; i++) delta[i] += this.error[i];
      }
      const bytes = packedBytes(this.total, o.quantBits);
      const all = new Uint8Array(bytes * this.worldSize);
      const mine = all.subarray(this.rank * bytes, (this.rank + 1) * bytes);
      const dq = new Float32Array(this.total);
      quantize(delta, o.quantBits, mine, dq);
      if (o.errorFeedback) for (let i = 0; i < this.total; i++) this.error![i] = delta[i] - dq[i];
      const t = tensor(new Float32Array(all.buffer), { shape: [all.byteLength / 4] });
      this.comm.wait(this.comm.allGather(t, `DiLoCo ${o.quantBits}-bit pseudo-gradient all-gather`));
      const gathered = new Uint8Array(((await t.toArray()) as Float32Array).buffer);
      t.dispose();
      for (let r = 0; r < this.worldSize; r++) dequantizeAdd(gathered.subarray(r * bytes, (r + 1) * bytes), this.total, o.quantBits, 1 / this.worldSize, mean);
    }
    // outer Nesterov SGD on the anchor
    this.momentum ??= new Float32Array(this.total);
    const m = this.momentum;
    const mu = o.outerMomentum;
    for (let i = 0; i < this.total; i++) {
      m[i] = mu * m[i] + mean[i];
      const update = o.nesterov ? mean[i] + mu * m[i] : m[i];
      anchor[i] -= o.outerLr * update;
    }
    let at = 0;
    for (const p of this.params) {
      p.write(anchor.subarray(at, at + p.numel));
      at += p.numel;
    }
    this.outerSteps++;
  }

  /** The first step (or the first after a resume) starts from the current weights: they are the anchor. */
  async beforeStep(): Promise<void> {
    if (!this.anchor) this.anchor = await this.readWeights();
  }

  private async readWeights(): Promise<Float32Array> {
    const out = new Float32Array(this.total);
    let at = 0;
    for (const p of this.params) {
      out.set((await p.toArray()) as Float32Array, at);
      at += p.numel;
    }
    return out;
  }

  /**
   * Anchor and outer momentum for checkpoints (identical on every rank). A checkpoint taken at
   * a multiple of H resumes exactly, except for the error-feedback residuals, which are per rank
   * and restart at zero; elsewhere the weights saved are rank 0's inner weights.
   */
  stateTensors(): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    if (this.anchor) out.set('diloco.anchor', tensor(this.anchor, { shape: [this.total] }));
    if (this.momentum) out.set('diloco.outerMomentum', tensor(this.momentum, { shape: [this.total] }));
    return out;
  }

  loadState(values: Map<string, Float32Array>): void {
    const anchor = values.get('diloco.anchor');
    const momentum = values.get('diloco.outerMomentum');
    for (const [k, v] of [['anchor', anchor], ['outer momentum', momentum]] as const) {
      if (v && v.length !== this.total) fail('ERR_CHECKPOINT', `the checkpoint's DiLoCo ${k} has ${v.length} values, the model ${this.total}`);
    }
    if (anchor) this.anchor = Float32Array.from(anchor);
    if (momentum) this.momentum = Float32Array.from(momentum);
  }

  stepMetrics(stepMs: number, tokens: number): Record<string, number | string> {
    return {
      syncMode: 'diloco', innerSteps: this.options.innerSteps, quantBits: this.options.quantBits, outerSteps: this.outerSteps,
      ...commMetrics(this.comm, stepMs, tokens, this.options.baselineTokensPerSecond),
    };
  }

  explain(error: unknown): Promise<unknown> {
    return this.comm.explain(error);
  }
}
