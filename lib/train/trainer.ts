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
import { type Device, deviceCode } from '../device.js';
import { fail } from '../errors.js';
import { info } from '../info.js';
import { binding } from '../native.js';
import * as ops from '../ops/index.js';
import { memoryStats, resetPeakMemory } from '../runtime.js';
import { tensor } from '../tensor.js';
import { type ModelConfig, trainingFlopsPerToken } from '../model/config.js';
import { LlamaModel } from '../model/llama.js';
import { Optimizer, llamaParamGroups } from '../optim/optimizer.js';
import { TokenLoader } from '../data/shards.js';
import { type TrainerState, loadCheckpoint, saveCheckpoint } from './checkpoint.js';
import { type ScheduleConfig, lrMultiplier } from './schedule.js';

export interface TrainOptions {
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
  /** run directory for checkpoints (step-NNNNNN/ and latest) and metrics.jsonl */
  out?: string;
  checkpointEvery?: number;
}

export interface StepMetrics {
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
  achievedTflops: number;
  mfu?: number;
  peakMemoryBytes: number;
  valLoss?: number;
}

export class Trainer {
  readonly options: Required<Omit<TrainOptions, 'out' | 'schedule'>> & Pick<TrainOptions, 'out'> & { schedule: ScheduleConfig };
  readonly model: LlamaModel;
  readonly optimizer: Optimizer;
  private train: TokenLoader;
  private readonly val: TokenLoader;
  private step = 0;
  private stopRequested = false;

  constructor(options: TrainOptions) {
    const o = {
      accumulation: 1, device: 'cpu' as Device, seed: 0, gradClip: 1, muonLr: 0.02, adamwLr: 3e-3, weightDecay: 0, evalEvery: 0, evalBatches: 4,
      checkpointEvery: 0, ...options,
      schedule: { kind: 'cosine' as const, warmupSteps: Math.min(50, Math.floor(options.steps / 10)), ...options.schedule, totalSteps: options.steps },
    };
    for (const [k, v] of Object.entries({ steps: o.steps, batch: o.batch, seqLen: o.seqLen, accumulation: o.accumulation })) {
      if (!Number.isSafeInteger(v) || v < 1) fail('ERR_ARG', `${k} must be a positive integer, got ${v}`);
    }
    if (o.device !== 'cpu') {
      fail('ERR_DEVICE', `training runs on the CPU in this build: the model layers and the optimizer have no CUDA kernels yet (asked for ${o.device})`);
    }
    if (o.seqLen > o.config.context) fail('ERR_ARG', `seqLen ${o.seqLen} exceeds the model context ${o.config.context}`);
    this.options = o;
    this.train = new TokenLoader(join(o.data, 'train.bin'), o.batch, o.seqLen, { seed: o.seed, step: 0 });
    this.val = new TokenLoader(join(o.data, 'val.bin'), o.batch, o.seqLen, { seed: o.seed + 1, step: 0 });
    if (this.train.info.vocabSize > o.config.vocabSize) {
      fail('ERR_ARG', `the data's tokenizer has ${this.train.info.vocabSize} ids but the model's vocabulary is ${o.config.vocabSize}`);
    }
    this.model = new LlamaModel(o.config, { device: o.device, seed: o.seed });
    this.optimizer = new Optimizer(
      llamaParamGroups(this.model.parameters, {
        muon: { lr: o.muonLr, weightDecay: o.weightDecay, newtonSchulz: { compute: o.device === 'cpu' ? 'f32' : 'bf16' } },
        adamw: { lr: o.adamwLr, weightDecay: 0 },
      }),
    );
  }

  get currentStep(): number {
    return this.step;
  }

  /** Asks the loop to stop after the current step (SIGINT handler). */
  requestStop(): void {
    this.stopRequested = true;
  }

  get stopping(): boolean {
    return this.stopRequested;
  }

  private batchTensors(loader: TokenLoader) {
    const { ids, targets } = loader.next();
    const shape = [this.options.batch, this.options.seqLen];
    return { ids: tensor(ids, { shape, device: this.options.device }), targets: tensor(targets, { shape, device: this.options.device }), count: targets.length };
  }

  /** One optimizer step (with accumulation); returns its metrics. */
  async trainStep(): Promise<StepMetrics> {
    const o = this.options;
    const device = deviceCode(o.device);
    resetPeakMemory(o.device);
    const started = performance.now();
    this.model.zeroGrad();
    const marks: { forward: unknown[]; backward: unknown[] } = { forward: [], backward: [] };
    let lossSum = 0;
    const losses = [];
    for (let micro = 0; micro < o.accumulation; micro++) {
      const b = this.batchTensors(this.train);
      if (micro === 0) this.optimizer.prepareGradientPoint();
      const m0 = binding().timerMark(device);
      const logits = this.model.forward(b.ids);
      const m1 = binding().timerMark(device);
      losses.push(this.model.backward(logits, b.targets, b.count, 1 / o.accumulation));
      const m2 = binding().timerMark(device);
      marks.forward.push([m0, m1]);
      marks.backward.push([m1, m2]);
      logits.dispose();
      b.ids.dispose();
      b.targets.dispose();
    }
    const lr = lrMultiplier(o.schedule, this.step);
    const m3 = binding().timerMark(device);
    using norm = ops.gradNormClip(this.model.parameters.map((p) => p.grad), o.gradClip);
    this.optimizer.update(lr);
    const m4 = binding().timerMark(device);
    for (const l of losses) lossSum += (await l.toArray())[0];
    const gradNorm = (await norm.toArray())[0];
    const elapsed = async (pairs: unknown[]) => {
      let total = 0;
      for (const [a, b] of pairs as [never, never][]) total += await binding().timerElapsed(a, b);
      return total;
    };
    const forwardMs = await elapsed(marks.forward);
    const backwardMs = await elapsed(marks.backward);
    const optimizerMs = await binding().timerElapsed(m3 as never, m4 as never);
    const stepMs = performance.now() - started;
    this.step++;
    const tokens = o.batch * o.seqLen * o.accumulation;
    const flops = trainingFlopsPerToken(o.config, o.seqLen) * tokens;
    const achievedTflops = flops / (stepMs / 1e3) / 1e12;
    const peak = info().devices.find((d) => d.device === o.device)?.peak?.bf16Tflops;
    return {
      step: this.step, loss: lossSum / o.accumulation, gradNorm, lr: lr, tokens, stepMs, tokensPerSecond: tokens / (stepMs / 1e3),
      forwardMs, backwardMs, optimizerMs, achievedTflops, mfu: peak ? achievedTflops / peak : undefined,
      peakMemoryBytes: memoryStats(o.device).peakAllocated,
    };
  }

  /** Mean loss over `evalBatches` validation batches (the validation loader restarts each time). */
  async evaluate(): Promise<number> {
    const loader = new TokenLoader(this.val.info.path, this.options.batch, this.options.seqLen, { seed: this.options.seed + 1, step: 0 });
    let total = 0;
    for (let i = 0; i < this.options.evalBatches; i++) {
      const b = this.batchTensors(loader);
      const logits = this.model.forward(b.ids, false);
      const { loss } = ops.crossEntropy(logits, b.targets.reshape(b.count));
      total += (await ops.mean(loss).toArray())[0];
      for (const t of [logits, loss, b.ids, b.targets]) t.dispose();
    }
    loader.close();
    return total / this.options.evalBatches;
  }

  state(): TrainerState {
    return { step: this.step, optimizerStep: this.optimizer.step, loader: this.train.position, options: { ...this.options, config: undefined } };
  }

  async save(dir?: string): Promise<string> {
    const out = this.options.out;
    if (!out && !dir) fail('ERR_ARG', 'no checkpoint directory (set out)');
    const target = dir ?? join(out!, `step-${String(this.step).padStart(6, '0')}`);
    return saveCheckpoint(target, this.options.config, this.model.namedWeights(), this.optimizer.stateTensors().tensors, this.state());
  }

  /** Restores weights, optimizer state, step and data position from a checkpoint. */
  async resume(path: string): Promise<void> {
    const c = loadCheckpoint(path);
    // compare field by field in one order (JSON key order differs between presets and loaded configs)
    const canonical = (x: ModelConfig) => JSON.stringify(Object.keys(x).sort().map((k) => [k, x[k as keyof ModelConfig]]));
    const a = canonical(c.config);
    const b = canonical(this.options.config);
    if (a !== b) fail('ERR_CHECKPOINT', `checkpoint config ${a} does not match the model ${b}`);
    if (!c.trainer || !c.optimizer) fail('ERR_CHECKPOINT', 'checkpoint has no trainer/optimizer state (an inference-only export?)');
    this.model.loadWeights(c.weights);
    await this.optimizer.loadState(c.trainer.optimizerStep, c.optimizer);
    this.step = c.trainer.step;
    this.train.close();
    this.train = new TokenLoader(join(this.options.data, 'train.bin'), this.options.batch, this.options.seqLen, c.trainer.loader);
  }

  /** Runs to `steps`, logging to out/metrics.jsonl, validating and checkpointing as configured. */
  async run(onStep?: (m: StepMetrics) => void): Promise<StepMetrics[]> {
    const o = this.options;
    const history: StepMetrics[] = [];
    if (o.out) mkdirSync(o.out, { recursive: true });
    while (this.step < o.steps && !this.stopRequested) {
      const m = await this.trainStep();
      if (o.evalEvery > 0 && (this.step % o.evalEvery === 0 || this.step === o.steps)) m.valLoss = await this.evaluate();
      if (o.out) appendFileSync(join(o.out, 'metrics.jsonl'), JSON.stringify(m) + '\n');
      history.push(m);
      onStep?.(m);
      if (o.out && o.checkpointEvery > 0 && this.step % o.checkpointEvery === 0) await this.save();
    }
    return history;
  }

  close(): void {
    this.train.close();
    this.val.close();
    this.model.dispose();
    this.optimizer.dispose();
  }
}
