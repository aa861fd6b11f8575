/**
 * The training loop: data -> forward -> backward -> Muon/AdamW step, with LR schedules,
 * gradient accumulation, periodic validation, per-step metrics (loss, tokens/s, device time
 * of forward / backward / optimizer, MFU on GPUs with a known peak, peak memory), a JSONL log,
 * atomic checkpoints and exact resume (the loader position, optimizer state and step travel
 * with the checkpoint, and every op is deterministic, so a resumed run continues the same loss
 * curve bit for bit).
 */
import { appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { type Device, parseDevice } from '../device.js';
import { describe, fail } from '../errors.js';
import { info } from '../info.js';
import * as ops from '../ops/index.js';
import { type DeviceTimeMark, checkDevice, deviceTimeBetween, markDeviceTime, memoryStats, resetPeakMemory } from '../runtime.js';
import { type Tensor, empty, zeros } from '../tensor.js';
import { type ModelConfig, trainingFlopsPerToken, validateConfig } from '../model/config.js';
import { LlamaModel } from '../model/llama.js';
import { Optimizer, type OptimizerOptions, type OptimizedParameter, llamaParamGroups } from '../optim/optimizer.js';
import { TokenLoader } from '../io/shards.js';
import { type TrainerState, loadCheckpoint, resolveCheckpoint, saveCheckpoint } from '../io/checkpoint.js';
import { type ScheduleConfig, lrMultiplier } from './schedule.js';

/**
 * Data parallelism's hooks into the step (implemented in lib/parallel: synchronous all-reduce or
 * DiLoCo). The trainer reads rows [rank·batch, (rank+1)·batch) of each global batch of
 * batch·worldSize rows (the data position stays global), reports gradients as backward
 * finishes them, and leaves checkpoints and metrics.jsonl to rank 0.
 */
export interface TrainParallel {
  readonly rank: number;
  readonly worldSize: number;
  /** options for the optimizer (distributed Newton–Schulz) */
  optimizerOptions(): OptimizerOptions;
  /** after the model and optimizer exist (e.g. broadcast rank 0's weights, plan buckets) */
  attach(trainer: Trainer): void;
  /** the last micro-batch's backward finished these parameters' gradients (queued, in backward order) */
  gradientsReady(params: OptimizedParameter[], step: number): void;
  /**
   * Before clipping: queue the waits for the gradient reductions and average the loss slots.
   * `stopVotes` ([1] f32: 1 where this rank was asked to stop, else 0) must come back as a value
   * every rank agrees on (any positive number = stop after this step), so that a Ctrl-C reaching
   * ranks at different moments still ends them all at the same step.
   */
  finishGradients(lossSlots: Tensor[], step: number, stopVotes: Tensor): void;
  /** before a step's first op (DiLoCo records its anchor weights) */
  beforeStep?(step: number): Promise<void> | void;
  /** after the optimizer update was queued (DiLoCo's outer step every H steps) */
  afterUpdate(step: number): Promise<void> | void;
  /** after the step's reads: communication figures for metrics.jsonl */
  stepMetrics(stepMs: number, tokens: number): Record<string, number | string>;
  /** a failed step's error, explained (which rank left) */
  explain(error: unknown): Promise<unknown>;
  /**
   * State saved with checkpoints next to the optimizer's (e.g. DiLoCo's anchor and outer
   * momentum). Called on every rank at the same step (it may run collectives, e.g. to gather
   * per-rank state); rank 0 writes what it returns. The caller disposes the tensors.
   */
  stateTensors?(): Promise<Map<string, Tensor>> | Map<string, Tensor>;
  loadState?(values: Map<string, Float32Array>): void;
  /**
   * The loop ends at `step` (all steps done, or an agreed stop), on every rank, before the
   * final checkpoint: e.g. DiLoCo's outer step when `step` is not a multiple of H, so that the
   * weights saved are the ranks' common anchor, not rank 0's inner weights.
   */
  finish?(step: number): Promise<void> | void;
}

export interface TrainOptions {
  /** data parallelism (lib/parallel); batch is then per rank */
  parallel?: TrainParallel;
  config: ModelConfig;
  /** directory with train.bin and val.bin (kiln prepare) */
  data: string;
  steps: number;
  batch: number;
  seqLen: number;
  /** micro-batches per optimizer step */
  accumulation?: number;
  device?: Device;
  seed?: number;
  muonLr?: number;
  adamwLr?: number;
  weightDecay?: number;
  schedule?: Omit<ScheduleConfig, 'totalSteps'>;
  evalEvery?: number;
  evalBatches?: number;
  /** clip the global gradient norm to this (0 = off; default 1) */
  gradClip?: number;
  /** activations and matmul weights: f32 (CPU default) or bf16 (CUDA default; also runs on the CPU), f32 master weights either way */
  computeDType?: 'f32' | 'bf16';
  /** activation recomputation (see ModelOptions.recompute): less memory, one more layer forward per layer */
  recompute?: boolean;
  /** run directory for checkpoints (step-NNNNNN/ and latest) and metrics.jsonl */
  out?: string;
  checkpointEvery?: number;
  /**
   * Start from this checkpoint (Hugging Face or kiln, any form resolveCheckpoint takes): its
   * weights, with fresh optimizer state at step 0; `config` must be its config. Checkpoints keep
   * its config.json fields and tokenizer files.
   */
  from?: string;
  /** without `from`: a directory whose tokenizer files the checkpoints carry (the data's, from kiln prepare --tokenizer) */
  tokenizerFiles?: string;
}

export interface StepMetrics {
  /** data parallelism: communication figures (commMs, commExposedMs, commBytes, algBandwidthGBs, busBandwidthGBs, ...) */
  [extra: string]: number | string | undefined;
  step: number;
  loss: number;
  /** global gradient norm before clipping */
  gradNorm: number;
  lr: number;
  tokens: number;
  stepMs: number;
  tokensPerSecond: number;
  forwardMs: number;
  backwardMs: number;
  optimizerMs: number;
  /**
   * Host time spent issuing the step's ops (JavaScript, argument checks, enqueueing), from
   * the start of the step until the last op is queued; the device works concurrently, so
   * launches dominate only when this approaches stepMs.
   */
  issueMs: number;
  achievedTflops: number;
  mfu?: number;
  peakMemoryBytes: number;
  valLoss?: number;
}

/** Called after every step of run() (validation included); lib/monitor's dashboard feeds on it. */
export type StepListener = (metrics: StepMetrics, trainer: Trainer) => void;

/**
 * Refuses a device the Trainer cannot use, before any rule that depends on it: CUDA without
 * KILN_CUDA_TRAINING=1 (ERR_DEVICE: the CUDA step compiles but has not yet run against the CPU on
 * a GPU, test/cuda/train.test.ts), then a device that is not usable here (ERR_NO_CUDA).
 */
export function checkTrainingDevice(device: Device): void {
  if (device !== 'cpu' && process.env.KILN_CUDA_TRAINING !== '1') {
    let unusable = '';
    try {
      checkDevice(device);
    } catch (e) {
      unusable = ` (nor is ${device} usable here: ${(e as Error).message})`;
    }
    fail('ERR_DEVICE', `CUDA training is built but not yet verified on a GPU; asked for ${device}: train on cpu, or set KILN_CUDA_TRAINING=1 to run the unverified CUDA path${unusable}`);
  }
  checkDevice(device);
}

/** The fields in which two model configs differ, as 'name: checkpoint A, this model B' (sorted by name). */
export function configDifferences(checkpoint: ModelConfig, model: ModelConfig, labels: [string, string] = ['checkpoint', 'this model']): string[] {
  const show = (v: unknown) => (v === undefined ? 'unset' : JSON.stringify(v));
  const keys = [...new Set([...Object.keys(checkpoint), ...Object.keys(model)])].sort() as (keyof ModelConfig)[];
  return keys
    .filter((k) => JSON.stringify(checkpoint[k]) !== JSON.stringify(model[k]))
    .map((k) => `${k}: ${labels[0]} ${show(checkpoint[k])}, ${labels[1]} ${show(model[k])}`);
}

export class Trainer {
  readonly options: Required<Omit<TrainOptions, 'out' | 'schedule' | 'parallel' | 'from' | 'tokenizerFiles'>> & Pick<TrainOptions, 'out' | 'parallel' | 'from' | 'tokenizerFiles'> & { schedule: ScheduleConfig };
  readonly model: LlamaModel;
  readonly optimizer: Optimizer;
  private train: TokenLoader;
  private readonly val: TokenLoader;
  private step = 0;
  private stopRequested = false;
  private readonly stepListeners = new Set<StepListener>();
  /** Planned once: the batch (written in place each micro-batch), one loss slot per micro-batch, the gradient norm. */
  private readonly ids: Tensor;
  private readonly targets: Tensor;
  private readonly lossSlots: Tensor[];
  private readonly gradNorm: Tensor;
  /** data parallelism: this rank's stop request, summed across ranks with the step's gradients */
  private readonly stopVotes: Tensor;
  /** every rank saw a stop vote in the last step: all leave the loop after the same step */
  private stopAgreed = false;

  constructor(options: TrainOptions) {
    // Shape checks before anything reads the options (a BigInt or a getter must not reach arithmetic below).
    if (!options || typeof options !== 'object') fail('ERR_ARG', `trainer options must be an object, got ${describe(options)}`);
    options = { ...options };
    options.config = validateConfig(options.config);
    if (typeof options.data !== 'string' || options.data.length === 0) fail('ERR_ARG', `data must be a directory path, got ${describe(options.data)}`);
    if (options.out !== undefined && (typeof options.out !== 'string' || options.out.length === 0)) fail('ERR_ARG', `out must be a directory path, got ${describe(options.out)}`);
    if (options.device !== undefined) options.device = parseDevice(options.device);
    for (const key of ['steps', 'batch', 'seqLen'] as const) {
      const v = options[key];
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) fail('ERR_ARG', `${key} must be a positive integer, got ${describe(v)}`);
    }
    for (const key of ['accumulation', 'seed', 'evalEvery', 'evalBatches', 'checkpointEvery'] as const) {
      const v = options[key];
      if (v !== undefined && (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)) fail('ERR_ARG', `${key} must be a non-negative integer, got ${describe(v)}`);
    }
    for (const key of ['muonLr', 'adamwLr', 'weightDecay'] as const) {
      const v = options[key];
      if (v !== undefined && (typeof v !== 'number' || !Number.isFinite(v) || v < 0)) fail('ERR_ARG', `${key} must be a finite number >= 0, got ${describe(v)}`);
    }
    if (options.recompute !== undefined && typeof options.recompute !== 'boolean') fail('ERR_ARG', `recompute must be a boolean, got ${describe(options.recompute)}`);
    if (options.schedule !== undefined && (options.schedule === null || typeof options.schedule !== 'object')) fail('ERR_ARG', `schedule must be an object, got ${describe(options.schedule)}`);
    const o = {
      accumulation: 1, device: 'cpu' as Device, seed: 0, gradClip: 1, muonLr: 0.02, adamwLr: 3e-3, weightDecay: 0, evalEvery: 0, evalBatches: 4,
      checkpointEvery: 0, recompute: false, computeDType: options.device && options.device !== 'cpu' ? ('bf16' as const) : ('f32' as const), ...options,
      schedule: { kind: 'cosine' as const, warmupSteps: Math.min(50, Math.floor(options.steps / 10)), ...options.schedule, totalSteps: options.steps },
    };
    for (const [k, v] of Object.entries({ steps: o.steps, batch: o.batch, seqLen: o.seqLen, accumulation: o.accumulation })) {
      if (!Number.isSafeInteger(v) || v < 1) fail('ERR_ARG', `${k} must be a positive integer, got ${describe(v)}`);
    }
    checkTrainingDevice(o.device);
    if (o.device !== 'cpu' && o.config.headDim !== 64 && o.config.headDim !== 128) {
      fail('ERR_ARG', `the CUDA attention kernels take head dims 64 and 128; the model has ${o.config.headDim}`);
    }
    if (typeof o.gradClip !== 'number' || !(o.gradClip >= 0) || !Number.isFinite(o.gradClip)) fail('ERR_ARG', `gradClip must be a finite number >= 0, got ${describe(o.gradClip)}`);
    if (o.seqLen > o.config.context) fail('ERR_ARG', `seqLen ${o.seqLen} exceeds the model context ${o.config.context}`);
    this.options = o;
    this.train = new TokenLoader(join(o.data, 'train.bin'), o.batch * this.worldSize, o.seqLen, { seed: o.seed, step: 0 });
    this.val = new TokenLoader(join(o.data, 'val.bin'), o.batch, o.seqLen, { seed: o.seed + 1, step: 0 });
    if (this.train.info.vocabSize > o.config.vocabSize) {
      fail('ERR_ARG', `the data's tokenizer has ${this.train.info.vocabSize} ids but the model's vocabulary is ${o.config.vocabSize}`);
    }
    if (o.computeDType !== 'f32' && o.computeDType !== 'bf16') fail('ERR_ARG', `computeDType must be 'f32' or 'bf16', got ${describe(o.computeDType)}`);
    this.model = new LlamaModel(o.config, { device: o.device, seed: o.seed, recompute: o.recompute, computeDType: o.computeDType });
    const shape = [o.batch, o.seqLen];
    this.ids = empty(shape, { device: o.device, dtype: 'i32' });
    this.targets = empty(shape, { device: o.device, dtype: 'i32' });
    this.lossSlots = Array.from({ length: o.accumulation }, () => empty([], { device: o.device }));
    this.gradNorm = empty([1], { device: o.device });
    this.stopVotes = zeros([1]);
    this.optimizer = new Optimizer(
      llamaParamGroups(this.model.parameters, {
        muon: { lr: o.muonLr, weightDecay: o.weightDecay, newtonSchulz: { compute: o.device === 'cpu' ? 'f32' : 'bf16' } },
        adamw: { lr: o.adamwLr, weightDecay: 0 },
      }),
      o.parallel?.optimizerOptions() ?? {},
    );
    if (o.from !== undefined) {
      if (typeof o.from !== 'string' || o.from.length === 0) fail('ERR_ARG', `from must be a checkpoint path, got ${describe(o.from)}`);
      this.source = resolveCheckpoint(o.from);
      const c = loadCheckpoint(this.source);
      const differs = configDifferences(c.config, o.config, [o.from, 'config']);
      if (differs.length) fail('ERR_CHECKPOINT', `from ${o.from}: its config is not this model's (${differs.join('; ')})`);
      this.model.loadWeights(c.weights);
    }
    o.parallel?.attach(this);
  }

  /** The checkpoint the model came from (from, or the one resumed): checkpoints keep its config fields and tokenizer files. */
  private source?: string;

  private get worldSize(): number {
    return this.options?.parallel?.worldSize ?? 1;
  }

  /** rank 0 (or a single process) writes checkpoints and metrics.jsonl */
  get isWriter(): boolean {
    return (this.options.parallel?.rank ?? 0) === 0;
  }

  get currentStep(): number {
    return this.step;
  }

  /** Subscribes to the metrics of each step run() completes (cheap: one call per step); returns the unsubscribe function. */
  onStep(listener: StepListener): () => void {
    this.stepListeners.add(listener);
    return () => this.stepListeners.delete(listener);
  }

  /**
   * Asks the loop to stop after the current step (SIGINT handler). With data parallelism the
   * request travels with the next step's gradients and every rank stops after that same step.
   */
  requestStop(): void {
    this.stopRequested = true;
  }

  /** Whether the loop stops (or stopped) early: single process, on request; data parallel, once the ranks agreed. */
  get stopping(): boolean {
    return this.options.parallel ? this.stopAgreed : this.stopRequested;
  }

  /** The next batch written into the planned ids/targets tensors (queue order keeps earlier readers safe). */
  private nextBatch(loader: TokenLoader, shard = false): number {
    const p = this.options.parallel;
    const { ids, targets } = shard && p ? loader.next({ first: p.rank * this.options.batch, count: this.options.batch }) : loader.next();
    this.ids.write(ids);
    this.targets.write(targets);
    let count = 0;
    for (let i = 0; i < targets.length; i++) if (targets[i] >= 0) count++;
    return count;
  }

  /** One optimizer step (with accumulation); returns its metrics. */
  async trainStep(): Promise<StepMetrics> {
    const o = this.options;
    resetPeakMemory(o.device);
    await o.parallel?.beforeStep?.(this.step + 1);
    const started = performance.now();
    this.model.zeroGrad();
    const marks: { forward: [DeviceTimeMark, DeviceTimeMark][]; backward: [DeviceTimeMark, DeviceTimeMark][] } = { forward: [], backward: [] };
    let lossSum = 0;
    for (let micro = 0; micro < o.accumulation; micro++) {
      const count = this.nextBatch(this.train, true);
      if (micro === 0) this.optimizer.prepareGradientPoint();
      // forward = embedding through the final norm; backward includes the fused, chunked classifier
      const m0 = markDeviceTime(o.device);
      let m1!: DeviceTimeMark;
      const parallel = o.parallel;
      const step = this.step + 1;
      this.model.forwardBackward(this.ids, this.targets, count, 1 / o.accumulation, {
        loss: this.lossSlots[micro],
        afterForward: () => (m1 = markDeviceTime(o.device)),
        gradientsReady: parallel && micro === o.accumulation - 1 ? (params) => parallel.gradientsReady(params, step) : undefined,
      });
      const m2 = markDeviceTime(o.device);
      marks.forward.push([m0, m1]);
      marks.backward.push([m1, m2]);
    }
    const lr = lrMultiplier(o.schedule, this.step);
    const m3 = markDeviceTime(o.device);
    if (o.parallel) {
      // written when the step is issued: the ranks' votes are summed with this step's gradients
      this.stopVotes.write(new Float32Array([this.stopRequested ? 1 : 0]));
      o.parallel.finishGradients(this.lossSlots, this.step + 1, this.stopVotes);
    }
    ops.gradNormClip(this.model.parameters.map((p) => p.grad), o.gradClip, { out: this.gradNorm });
    this.optimizer.update(lr);
    const m4 = markDeviceTime(o.device);
    const issueMs = performance.now() - started;
    let gradNorm = 0;
    try {
      await o.parallel?.afterUpdate(this.step + 1);
      for (const l of this.lossSlots) lossSum += (await l.toArray())[0];
      gradNorm = (await this.gradNorm.toArray())[0];
      if (o.parallel && (await this.stopVotes.toArray())[0] > 0) this.stopAgreed = true;
    } catch (e) {
      throw o.parallel ? await o.parallel.explain(e) : e;
    }
    const elapsed = async (pairs: [DeviceTimeMark, DeviceTimeMark][]) => {
      let total = 0;
      for (const [a, b] of pairs) total += await deviceTimeBetween(a, b);
      return total;
    };
    const forwardMs = await elapsed(marks.forward);
    const backwardMs = await elapsed(marks.backward);
    const optimizerMs = await deviceTimeBetween(m3, m4);
    const stepMs = performance.now() - started;
    this.step++;
    const tokens = o.batch * o.seqLen * o.accumulation * this.worldSize;
    const flops = trainingFlopsPerToken(o.config, o.seqLen) * tokens;
    const achievedTflops = flops / (stepMs / 1e3) / 1e12;
    const peak = info().devices.find((d) => d.device === o.device)?.peak?.bf16Tflops;
    return {
      step: this.step, loss: lossSum / o.accumulation, gradNorm, lr: lr, tokens, stepMs, tokensPerSecond: tokens / (stepMs / 1e3),
      forwardMs, backwardMs, optimizerMs, issueMs, achievedTflops, mfu: peak ? achievedTflops / peak : undefined,
      peakMemoryBytes: memoryStats(o.device).peakAllocated,
      ...o.parallel?.stepMetrics(stepMs, tokens),
    };
  }

  /** Mean loss over `evalBatches` validation batches (the validation loader restarts each time). */
  async evaluate(): Promise<number> {
    const loader = new TokenLoader(this.val.info.path, this.options.batch, this.options.seqLen, { seed: this.options.seed + 1, step: 0 });
    let total = 0;
    for (let i = 0; i < this.options.evalBatches; i++) {
      this.nextBatch(loader);
      using logits = this.model.forward(this.ids, false);
      using loss = ops.crossEntropy(logits, this.targets.reshape(this.targets.numel)).loss;
      using mean = ops.mean(loss);
      total += (await mean.toArray())[0];
    }
    loader.close();
    return total / this.options.evalBatches;
  }

  state(): TrainerState {
    return { step: this.step, optimizerStep: this.optimizer.step, loader: this.train.position, options: { ...this.options, config: undefined, parallel: undefined, ...(this.options.parallel ? { worldSize: this.worldSize } : {}) } };
  }

  /**
   * Writes a checkpoint (atomically) and returns its directory. With data parallelism every rank
   * calls it at the same step (the parallel state may be gathered with collectives) and rank 0
   * writes; the others return the directory rank 0 writes.
   */
  async save(dir?: string): Promise<string> {
    const out = this.options.out;
    if (!out && !dir) fail('ERR_ARG', 'no checkpoint directory (set out)');
    const target = dir ?? join(out!, `step-${String(this.step).padStart(6, '0')}`);
    const optimizerState = await this.optimizer.stateTensors(); // ZeRO-1: gathered from every rank
    const state = optimizerState.tensors;
    let extra: Map<string, Tensor> | undefined;
    try {
      extra = await this.options.parallel?.stateTensors?.();
      if (!this.isWriter) return target;
      for (const [k, t] of extra ?? []) state.set(k, t);
      return await saveCheckpoint(target, this.options.config, this.model.namedWeights(), state, this.state(), { source: this.source, tokenizerFiles: this.options.tokenizerFiles });
    } catch (e) {
      throw this.options.parallel ? await this.options.parallel.explain(e) : e;
    } finally {
      for (const t of extra?.values() ?? []) t.dispose();
      optimizerState.release();
    }
  }

  /** Restores weights, optimizer state, step and data position from a checkpoint. */
  async resume(path: string): Promise<void> {
    const c = loadCheckpoint(path);
    this.source ??= resolveCheckpoint(path);
    // compare field by field (JSON key order differs between presets and loaded configs) and name each that differs
    const differs = configDifferences(c.config, this.options.config);
    if (differs.length) {
      fail('ERR_CHECKPOINT', `the config of ${path} does not match this model (${differs.join('; ')}): resume it with the preset or config it was trained with`);
    }
    if (!c.trainer || !c.optimizer) fail('ERR_CHECKPOINT', 'checkpoint has no trainer/optimizer state (an inference-only export?)');
    this.model.loadWeights(c.weights);
    await this.optimizer.loadState(c.trainer.optimizerStep, c.optimizer);
    this.options.parallel?.loadState?.(c.optimizer);
    this.step = c.trainer.step;
    this.train.close();
    this.train = new TokenLoader(join(this.options.data, 'train.bin'), this.options.batch * this.worldSize, this.options.seqLen, c.trainer.loader);
  }

  /** Runs to `steps`, logging to out/metrics.jsonl, validating and checkpointing as configured. */
  async run(onStep?: (m: StepMetrics) => void): Promise<StepMetrics[]> {
    const o = this.options;
    const history: StepMetrics[] = [];
    const writer = this.isWriter;
    if (o.out && writer) mkdirSync(o.out, { recursive: true });
    while (this.step < o.steps && !this.stopping) {
      const m = await this.trainStep();
      if (o.evalEvery > 0 && (this.step % o.evalEvery === 0 || this.step === o.steps)) m.valLoss = await this.evaluate();
      if (o.out && writer) appendFileSync(join(o.out, 'metrics.jsonl'), JSON.stringify(m) + '\n');
      history.push(m);
      onStep?.(m);
      for (const listener of this.stepListeners) listener(m, this);
      // every rank: the parallel state may be gathered for the checkpoint; rank 0 writes
      if (o.out && o.checkpointEvery > 0 && this.step % o.checkpointEvery === 0) await this.save();
    }
    try {
      await o.parallel?.finish?.(this.step);
    } catch (e) {
      throw o.parallel ? await o.parallel.explain(e) : e;
    }
    return history;
  }

  close(): void {
    this.train.close();
    this.val.close();
    this.model.dispose();
    this.optimizer.dispose();
    for (const t of [this.ids, this.targets, this.gradNorm, this.stopVotes, ...this.lossSlots]) t.dispose();
  }
}
