/**
 * DiLoCo / MuLoCo: low-communication data parallelism (Douillard et al. 2023, "DiLoCo";
 * MuLoCo: Muon as the inner optimizer), optionally streamed (Douillard et al. 2025, "Streaming
 * DiLoCo with overlapping communication"). Each rank takes H local steps of the trainer's own
 * optimizer (Muon + AdamW) on its data shard; then the pseudo-gradients Δ = θ_anchor − θ_local
 * are averaged across ranks and an outer Nesterov SGD applies them:
 *
 *   m = μ·m + Δ̄;  θ_anchor ← θ_anchor − η_out·(Δ̄ + μ·m)   (nesterov; without: − η_out·m)
 *
 * defaults η_out = 0.7, μ = 0.9 (the DiLoCo paper's). Every rank then continues from the new
 * anchor; the inner optimizer state stays local.
 *
 * Streaming (streamFragments P > 1, or overlapSteps τ given): the parameters are cut into P
 * fragments (contiguous runs of the parameter list — embedding, layers, head — balanced by
 * size). Fragment p synchronizes at the steps t > 0 with (t − p·⌊H/P⌋) mod H = 0: its Δ is
 * computed and its exchange launched after step t's update, and waited for τ steps later, so
 * the communication runs under the next τ steps' compute. Then the outer step gives the new
 * anchor θ̃_p and the local fragment is merged as the paper does: θ_p ← α·θ_p + (1−α)·θ̃_p
 * (mixAlpha α, default 0.5). τ = 0 waits at once and sets θ_p ← θ̃_p: plain DiLoCo (exactly,
 * with P = 1). Each exchange carries about 1/P of the parameters: the peak bytes drop by ~P.
 *
 * Optional quantization of Δ to 8, 4 or 2 bits (symmetric, one f32 absmax scale per block of
 * 128 values, native/ops/outer_step.h) with error feedback (each rank's rounding error is added
 * to its next Δ, so nothing is lost, only delayed): the ranks all-gather the packed codes and
 * each dequantizes and averages them. Bytes per exchange of n values: f32 all-reduce
 * 2(W−1)/W·4n, quantized all-gather (W−1)·n·(b/8 + 4/128).
 *
 * Everything runs as ops on the training device (lib/ops/outer_step.ts): anchor, outer
 * momentum, residuals and exchange buffers are device tensors; the parameters are copied into
 * a flat buffer on the device; nothing is read back to the host.
 *
 * Checkpoints (stateTensors, on every rank): the anchor and outer momentum ([N], the same on
 * every rank); the error-feedback residuals of all ranks, all-gathered into [W, N]; fragments
 * in flight: their mean pseudo-gradient ([N], zero elsewhere) and launch steps ([P], −1 when
 * idle); with W > 1 every rank's inner optimizer state ([W, n] per state tensor, since the
 * trainer saves rank 0's). Resuming with the same world size restores each rank its own residual; with another
 * world size every rank takes the mean of the saved residuals (so the mean of the next
 * pseudo-gradients — what the outer step applies — is preserved).
 */
import { fail } from '../errors.js';
import type { OptimizerOptions } from '../optim/optimizer.js';
import { copyInto, fill } from '../ops/layers.js';
import { QUANT_BLOCK, dequantizeMean, outerNesterov, packedBytes, pseudoGradientQuantize } from '../ops/outer_step.js';
import { type Tensor, empty, tensor, zeros } from '../tensor.js';
import type { TrainParallel, Trainer } from '../train/trainer.js';
import { cudaCollectivesEnabled, type Work } from '../ops/collectives.js';
import type { Communicator } from './communicator.js';
import { commMetrics, definedOnly } from './data_parallel.js';

export { QUANT_BLOCK, packedBytes };

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
  /** Streaming DiLoCo: fragments synchronized in turn (default 1) */
  streamFragments?: number;
  /** steps between launching a fragment's exchange and applying it (default 1 when streamFragments > 1, else 0); < H */
  overlapSteps?: number;
  /** merge after an overlapped exchange: θ ← α·θ_local + (1−α)·θ_outer (default 0.5) */
  mixAlpha?: number;
  baselineTokensPerSecond?: number;
}

/**
 * Plain reference of the packed quantization (native/ops/outer_step.h; the tests compare the
 * ops with it): per block, scale = absmax / L in f32, q = rint(x · (1/scale)) (half to even)
 * clamped to ±L, code = q + L. `dequantized` gets q·scale (what every rank reconstructs).
 */
export function quantize(x: Float32Array, bits: number, out: Uint8Array, dequantized: Float32Array): void {
  const n = x.length;
  const L = 2 ** (bits - 1) - 1;
  const blocks = Math.ceil(n / QUANT_BLOCK);
  const scales = new Float32Array(out.buffer, out.byteOffset, blocks);
  const codesAt = blocks * 4;
  const f = Math.fround;
  out.fill(0, codesAt);
  for (let b = 0; b < blocks; b++) {
    const lo = b * QUANT_BLOCK;
    const hi = Math.min(n, lo + QUANT_BLOCK);
    let absmax = 0;
    for (let i = lo; i < hi; i++) absmax = Math.max(absmax, Math.abs(x[i]));
    const scale = f(absmax / L);
    scales[b] = scale;
    const inv = scale > 0 ? f(1 / scale) : 0;
    for (let i = lo; i < hi; i++) {
      const q = Math.max(-L, Math.min(L, roundHalfEven(f(x[i] * inv))));
      dequantized[i] = f(q * scale);
      const bit = i * bits;
      // bits divides 8: a code never straddles a byte
      out[codesAt + (bit >> 3)] |= (q + L) << (bit & 7);
    }
  }
}

function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Adds the dequantized values of `packed` (n values) times `weight` into acc (plain reference). */
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

/**
 * Cuts parameter sizes (in order) into `parts` contiguous groups of similar total size: each
 * cut goes where the running total passes k/parts of the whole. Returns the first index of
 * each group. Needs parts <= sizes.length.
 */
export function fragmentStarts(sizes: number[], parts: number): number[] {
  if (!Number.isSafeInteger(parts) || parts < 1 || parts > sizes.length) fail('ERR_ARG', `streamFragments must be an integer in [1, ${sizes.length}] (the number of parameter tensors), got ${parts}`);
  const total = sizes.reduce((a, b) => a + b, 0);
  const starts = [0];
  let running = 0;
  for (let i = 0; i < sizes.length && starts.length < parts; i++) {
    running += sizes[i];
    const remainingTensors = sizes.length - (i + 1);
    const remainingCuts = parts - starts.length;
    // cut after tensor i when the running total reached the next share, or when every remaining tensor must start a group
    if ((running >= (total * starts.length) / parts || remainingTensors === remainingCuts) && remainingTensors >= remainingCuts && remainingTensors > 0) starts.push(i + 1);
  }
  return starts;
}

interface Fragment {
  index: number;
  /** first element of the fragment in the flat parameter vector, and its length */
  offset: number;
  numel: number;
  /** views into the flat buffers */
  anchor: Tensor;
  momentum: Tensor;
  residual?: Tensor;
  current: Tensor;
  /** the fragment's parameters and, for each, its view of `current` shaped like it */
  params: Tensor[];
  currentViews: Tensor[];
  /** bits 0: [n] f32 (all-reduced in place, then the mean); else [W · packed/4], this rank's chunk at rank */
  exchange: Tensor;
  mine: Tensor;
  /** [n] the mean pseudo-gradient (bits 0: the exchange buffer itself) */
  mean: Tensor;
  /** in flight since this step; `work` undefined once waited for */
  pending?: { launchedAt: number; work?: Work; dequantized: boolean };
}

export class DiLoCo implements TrainParallel {
  readonly rank: number;
  readonly worldSize: number;
  private readonly comm: Communicator;
  readonly options: Required<Omit<DiLoCoOptions, 'baselineTokensPerSecond'>> & DiLoCoOptions;
  private total = 0;
  private fragments: Fragment[] = [];
  private flat: Tensor[] = [];
  private anchorAll?: Tensor;
  private momentumAll?: Tensor;
  private residualAll?: Tensor;
  private anchorReady = false;
  private trainer?: Trainer;
  /** this rank's own inner optimizer state from a checkpoint, restored before the next step */
  private ownOptimizerState?: Map<string, Float32Array>;
  /** the stop votes of the last two steps (alternating), each summed by its own 4-byte all-reduce */
  private readonly votes = [zeros([1]), zeros([1])];
  private voteWork?: Work;
  /** fragment outer steps applied (P per full round) */
  outerSteps = 0;
  /** payload bytes of the largest single exchange launched so far (this rank's packed or f32 Δ) */
  peakExchangePayloadBytes = 0;

  constructor(comm: Communicator, options: DiLoCoOptions) {
    this.comm = comm;
    this.rank = comm.rank;
    this.worldSize = comm.worldSize;
    const given = definedOnly(options);
    const streamFragments = given.streamFragments ?? 1;
    this.options = {
      outerLr: 0.7, outerMomentum: 0.9, nesterov: true, quantBits: 0, errorFeedback: true, streamFragments, overlapSteps: streamFragments > 1 ? 1 : 0, mixAlpha: 0.5,
      ...given, innerSteps: options.innerSteps,
    };
    const o = this.options;
    if (!Number.isSafeInteger(o.innerSteps) || o.innerSteps < 1) fail('ERR_ARG', `innerSteps must be a positive integer, got ${o.innerSteps}`);
    if (![0, 2, 4, 8].includes(o.quantBits)) fail('ERR_ARG', `quantBits must be 0, 8, 4 or 2, got ${o.quantBits}`);
    for (const [k, v] of [['outerLr', o.outerLr], ['outerMomentum', o.outerMomentum]] as const) {
      if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) fail('ERR_ARG', `${k} must be a finite number >= 0`);
    }
    if (!Number.isSafeInteger(o.streamFragments) || o.streamFragments < 1) fail('ERR_ARG', `streamFragments must be a positive integer, got ${o.streamFragments}`);
    if (o.streamFragments > o.innerSteps) fail('ERR_ARG', `streamFragments (${o.streamFragments}) must not exceed innerSteps (${o.innerSteps}): each fragment needs its own step within H`);
    if (!Number.isSafeInteger(o.overlapSteps) || o.overlapSteps < 0 || o.overlapSteps >= o.innerSteps) {
      fail('ERR_ARG', `overlapSteps must be an integer in [0, innerSteps) = [0, ${o.innerSteps}), got ${o.overlapSteps}`);
    }
    if (typeof o.mixAlpha !== 'number' || !(o.mixAlpha >= 0 && o.mixAlpha <= 1)) fail('ERR_ARG', `mixAlpha must be a number in [0, 1], got ${o.mixAlpha}`);
    if (typeof o.nesterov !== 'boolean' || typeof o.errorFeedback !== 'boolean') fail('ERR_ARG', 'nesterov and errorFeedback must be booleans');
  }

  optimizerOptions(): OptimizerOptions {
    return {}; // the inner steps are local: each rank runs its whole optimizer
  }

  attach(trainer: Trainer): void {
    const device = trainer.options.device;
    if (device !== 'cpu' && this.worldSize > 1 && !cudaCollectivesEnabled()) {
      fail('ERR_DEVICE', `DiLoCo on ${device} exchanges staged copies of the pseudo-gradients: written but unverified without GPUs; set KILN_CUDA_DIST=1 to run it`);
    }
    this.trainer = trainer;
    const params = trainer.model.parameters.map((p) => p.value);
    this.total = params.reduce((a, t) => a + t.numel, 0);
    const o = this.options;
    const make = () => zeros([this.total], { device });
    this.anchorAll = make();
    this.momentumAll = make();
    const currentAll = make();
    const meanAll = make();
    this.flat = [this.anchorAll, this.momentumAll, currentAll, meanAll];
    const quantized = o.quantBits !== 0;
    if (quantized && o.errorFeedback) this.flat.push((this.residualAll = make()));
    const starts = fragmentStarts(params.map((p) => p.numel), o.streamFragments);
    let offset = 0;
    this.fragments = starts.map((first, index) => {
      const group = params.slice(first, starts[index + 1] ?? params.length);
      const numel = group.reduce((a, t) => a + t.numel, 0);
      const view = (t: Tensor) => t.slice(offset, offset + numel);
      const current = view(currentAll);
      let at = 0;
      const currentViews = group.map((p) => {
        const v = current.slice(at, at + p.numel).reshape(p.shape as number[]);
        at += p.numel;
        return v;
      });
      const chunk = packedBytes(numel, o.quantBits) / 4;
      const exchange = quantized ? empty([chunk * this.worldSize], { device }) : empty([numel], { device });
      const mine = quantized ? exchange.slice(this.rank * chunk, (this.rank + 1) * chunk) : exchange;
      const f: Fragment = {
        index, offset, numel, anchor: view(this.anchorAll!), momentum: view(this.momentumAll!), residual: this.residualAll && view(this.residualAll), current,
        params: group, currentViews, exchange, mine, mean: quantized ? view(meanAll) : exchange,
      };
      offset += numel;
      return f;
    });
  }

  gradientsReady(): void {}
  /**
   * The losses stay local. The stop votes are summed by a 4-byte all-reduce that gets a whole
   * step to finish (a latency-bound message must not cost a round trip every step): this step's
   * vote leaves now, and `stopVotes` returns the previous step's sum, which every rank reads at
   * the same step. A stop asked for during step s therefore ends the run after step s + 1 on
   * every rank.
   */
  finishGradients(_slots: Tensor[], step: number, stopVotes: Tensor): void {
    this.comm.step = step;
    const previous = this.voteWork;
    const mine = this.votes[step % 2];
    copyInto(mine, stopVotes);
    this.voteWork = this.comm.allReduce([mine], { average: false, what: 'stop vote all-reduce' });
    if (previous) {
      this.comm.wait(previous);
      copyInto(stopVotes, this.votes[(step - 1) % 2]); // the previous step's sum
    } else {
      fill(stopVotes, 0);
    }
  }

  /** Whether fragment p synchronizes at step t: t > 0 and (t − p·⌊H/P⌋) mod H = 0. */
  private syncsAt(f: Fragment, step: number): boolean {
    const H = this.options.innerSteps;
    const shift = f.index * Math.floor(H / this.options.streamFragments);
    return step > 0 && step >= shift && (step - shift) % H === 0;
  }

  /** After each step's update: apply the exchanges due now, launch the ones that start now. */
  async afterUpdate(step: number): Promise<void> {
    this.comm.step = step;
    const tau = this.options.overlapSteps;
    for (const f of this.fragments) {
      if (f.pending && f.pending.launchedAt + tau === step) this.apply(f, tau > 0);
      if (this.syncsAt(f, step)) {
        this.launch(f, step);
        if (tau === 0) this.apply(f, false);
      }
    }
  }

  /**
   * The loop ended (every rank, same step): the ranks end on their common anchor. Exchanges in
   * flight are applied (mixed if inner steps ran since their launch, else replaced), then every
   * fragment not synchronized at this very step is synchronized once more, without overlap.
   */
  async finish(step: number): Promise<void> {
    this.comm.step = step;
    if (this.voteWork) this.comm.wait(this.voteWork); // the last step's vote: nothing left in flight
    this.voteWork = undefined;
    if (!this.anchorReady) return;
    for (const f of this.fragments) {
      const launchedNow = f.pending?.launchedAt === step || (!f.pending && this.syncsAt(f, step));
      if (f.pending) this.apply(f, f.pending.launchedAt !== step);
      if (!launchedNow) {
        this.launch(f, step);
        this.apply(f, false);
      }
    }
  }

  /** Δ = anchor − current (+ residual), packed, and its exchange queued: all-reduce (f32) or all-gather (quantized). */
  private launch(f: Fragment, step: number): void {
    const o = this.options;
    f.params.forEach((p, i) => copyInto(f.currentViews[i], p));
    pseudoGradientQuantize(f.mine, f.residual ?? null, f.anchor, f.current, o.quantBits);
    const what = `DiLoCo fragment ${f.index} pseudo-gradient`;
    const work = o.quantBits === 0
      ? this.comm.allReduce([f.exchange], { average: true, what: `${what} all-reduce` })
      : this.comm.allGather(f.exchange, `${what} ${o.quantBits}-bit all-gather`);
    f.pending = { launchedAt: step, work, dequantized: false };
    this.peakExchangePayloadBytes = Math.max(this.peakExchangePayloadBytes, f.mine.numel * 4);
  }

  /** Waits for the exchange (later ops wait; the host does not) and dequantizes the mean. */
  private receive(f: Fragment): void {
    const p = f.pending!;
    if (p.work) this.comm.wait(p.work);
    p.work = undefined;
    if (!p.dequantized && this.options.quantBits !== 0) dequantizeMean(f.mean, f.exchange, this.worldSize, this.options.quantBits);
    p.dequantized = true;
  }

  /** The outer Nesterov step on the fragment's anchor; the local fragment becomes the anchor, or (mix) α·local + (1−α)·anchor. */
  private apply(f: Fragment, mix: boolean): void {
    const o = this.options;
    this.receive(f);
    if (mix) f.params.forEach((p, i) => copyInto(f.currentViews[i], p));
    outerNesterov(f.anchor, f.momentum, f.current, f.mean, { lr: o.outerLr, momentum: o.outerMomentum, nesterov: o.nesterov, mixAlpha: mix ? o.mixAlpha : undefined });
    f.params.forEach((p, i) => copyInto(p, f.currentViews[i]));
    f.pending = undefined;
    this.outerSteps++;
  }

  /** The first step (or the first after a resume without DiLoCo state) starts from the current weights: they are the anchor. */
  async beforeStep(): Promise<void> {
    if (this.ownOptimizerState) {
      // the trainer restored rank 0's inner optimizer state; each rank's own was saved too
      const optimizer = this.trainer!.optimizer;
      await optimizer.loadState(optimizer.step, this.ownOptimizerState);
      this.ownOptimizerState = undefined;
    }
    if (this.anchorReady) return;
    for (const f of this.fragments) f.params.forEach((p, i) => copyInto(f.currentViews[i], p));
    for (const f of this.fragments) copyInto(f.anchor, f.current);
    this.anchorReady = true;
  }

  /** This rank's error-feedback residual (tests), or undefined without quantization or error feedback. */
  async residualValues(): Promise<Float32Array | undefined> {
    return this.residualAll ? ((await this.residualAll.toArray()) as Float32Array) : undefined;
  }

  /**
   * The DiLoCo state for a checkpoint (called on every rank at the same step; rank 0 writes):
   * anchor and outer momentum [N]; every rank's residual gathered into [W, N]; in-flight
   * exchanges received (waiting changes no arithmetic) and saved as their mean pseudo-gradient
   * [N] with their launch steps [P]; every rank's inner optimizer state. Weights saved are rank 0's local ones: a resume continues
   * exactly where the ranks agree (at a synchronization with overlap 0, or all fragments merged).
   */
  async stateTensors(): Promise<Map<string, Tensor>> {
    const out = new Map<string, Tensor>();
    if (!this.anchorReady) return out;
    out.set('diloco.anchor', this.anchorAll!.clone());
    out.set('diloco.outerMomentum', this.momentumAll!.clone());
    if (this.residualAll) {
      const gathered = zeros([this.worldSize * this.total], { device: this.residualAll.device });
      copyInto(gathered.slice(this.rank * this.total, (this.rank + 1) * this.total), this.residualAll);
      this.comm.wait(this.comm.allGather(gathered, 'DiLoCo residual all-gather (checkpoint)'));
      out.set('diloco.residual', gathered.reshape([this.worldSize, this.total]));
      gathered.dispose();
    }
    if (this.worldSize > 1) {
      // the inner optimizer state is per rank too (the trainer saves rank 0's): one all-gather of all of it
      const state = [...this.trainer!.optimizer.localStateTensors()].filter(([, t]) => t.dtype === 'f32');
      const size = state.reduce((a, [, t]) => a + t.numel, 0);
      const all = zeros([this.worldSize * size], { device: this.anchorAll!.device });
      let at = this.rank * size;
      for (const [, t] of state) {
        copyInto(all.slice(at, at + t.numel).reshape(t.shape as number[]), t);
        at += t.numel;
      }
      this.comm.wait(this.comm.allGather(all, 'DiLoCo inner optimizer state all-gather (checkpoint)'));
      at = 0;
      for (const [key, t] of state) {
        // [W, n]: rank r's tensor in row r (strided in the gathered buffer: copied out per rank)
        const mine = zeros([this.worldSize, t.numel], { device: all.device });
        for (let r = 0; r < this.worldSize; r++) copyInto(mine.slice(r, r + 1), all.slice(r * size + at, r * size + at + t.numel).reshape([1, t.numel]));
        out.set(`diloco.rankOptimizer.${key}`, mine);
        at += t.numel;
      }
      all.dispose();
    }
    if (this.fragments.some((f) => f.pending)) {
      const mean = zeros([this.total], { device: this.anchorAll!.device });
      const since = new Float32Array(this.fragments.length).fill(-1);
      for (const f of this.fragments) {
        if (!f.pending) continue;
        this.receive(f);
        copyInto(mean.slice(f.offset, f.offset + f.numel), f.mean);
        since[f.index] = f.pending.launchedAt;
      }
      out.set('diloco.pendingMean', mean);
      out.set('diloco.pendingSince', tensor(since, { shape: [since.length] }));
    }
    return out;
  }

  loadState(values: Map<string, Float32Array>): void {
    const anchor = values.get('diloco.anchor');
    const momentum = values.get('diloco.outerMomentum');
    for (const [k, v] of [['anchor', anchor], ['outer momentum', momentum]] as const) {
      if (v && v.length !== this.total) fail('ERR_CHECKPOINT', `the checkpoint's DiLoCo ${k} has ${v.length} values, the model ${this.total}`);
    }
    if (anchor) {
      this.anchorAll!.write(anchor);
      this.anchorReady = true;
    }
    if (momentum) this.momentumAll!.write(momentum);
    const residual = values.get('diloco.residual');
    if (residual && this.residualAll) {
      if (residual.length === 0 || residual.length % this.total !== 0) fail('ERR_CHECKPOINT', `the checkpoint's DiLoCo residuals have ${residual.length} values, not a multiple of the model's ${this.total}`);
      const savedWorld = residual.length / this.total;
      if (savedWorld === this.worldSize) {
        this.residualAll.write(residual.subarray(this.rank * this.total, (this.rank + 1) * this.total));
      } else {
        // another world size: every rank starts from the mean residual, so Σ_r residual_r / W (the
        // error the next mean pseudo-gradient owes) is what the saved ranks owed
        const mean = new Float32Array(this.total);
        for (let r = 0; r < savedWorld; r++) for (let i = 0; i < this.total; i++) mean[i] += residual[r * this.total + i];
        for (let i = 0; i < this.total; i++) mean[i] /= savedWorld;
        this.residualAll.write(mean);
      }
    } else if (this.residualAll) {
      fill(this.residualAll, 0);
    }
    // each rank's own inner optimizer state (same world size only; otherwise rank 0's, as loaded)
    const optimizerState = this.trainer!.optimizer.localStateTensors();
    const own = new Map<string, Float32Array>();
    for (const [key, t] of optimizerState) {
      const v = values.get(`diloco.rankOptimizer.${key}`);
      if (v && v.length === this.worldSize * t.numel) own.set(key, v.subarray(this.rank * t.numel, (this.rank + 1) * t.numel));
    }
    this.ownOptimizerState = own.size === optimizerState.size ? own : undefined;
    const pendingMean = values.get('diloco.pendingMean');
    const since = values.get('diloco.pendingSince');
    for (const f of this.fragments) f.pending = undefined;
    if (pendingMean && since) {
      if (pendingMean.length !== this.total || since.length !== this.fragments.length) {
        fail('ERR_CHECKPOINT', `the checkpoint's DiLoCo exchanges in flight are for ${since.length} fragments of ${pendingMean.length} values; this run has ${this.fragments.length} of ${this.total}`);
      }
      for (const f of this.fragments) {
        if (since[f.index] < 0) continue;
        f.mean.write(pendingMean.subarray(f.offset, f.offset + f.numel));
        f.pending = { launchedAt: since[f.index], dequantized: true };
      }
    }
  }

  stepMetrics(stepMs: number, tokens: number): Record<string, number | string> {
    const o = this.options;
    return {
      syncMode: 'diloco', innerSteps: o.innerSteps, quantBits: o.quantBits, streamFragments: o.streamFragments, overlapSteps: o.overlapSteps, outerSteps: this.outerSteps,
      ...commMetrics(this.comm, stepMs, tokens, this.options.baselineTokensPerSecond),
    };
  }

  explain(error: unknown): Promise<unknown> {
    return this.comm.explain(error);
  }

  /** What a checkpoint's trainer state records of this run's parallelism (not the buffers, nor the trainer it points back to). */
  toJSON(): Record<string, unknown> {
    return { sync: 'diloco', worldSize: this.worldSize, ...this.options };
  }

  /** Frees the device buffers (the trainer's close() does not know them). */
  dispose(): void {
    for (const t of this.votes) t.dispose();
    for (const f of this.fragments) f.exchange.dispose();
    for (const t of this.flat) t.dispose();
  }
}
