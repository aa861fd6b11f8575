/**
 * The LLaMA decoder as explicit forward and backward passes over kiln ops: pre-norm RMSNorm,
 * RoPE, grouped-query attention, SwiGLU MLP, optional tied embeddings. Parameters are f32 master
 * weights named as in Hugging Face's LlamaForCausalLM; compute runs in `computeDType` (f32 on
 * the CPU, bf16 on CUDA) with f32 gradient accumulation.
 *
 * Per layer (N = B·T tokens, h the residual stream):
 *   y1 = rmsnorm(h) · w_in;  q, k, v = y1·Wqᵀ, y1·Wkᵀ, y1·Wvᵀ;  q, k = rope(q, k)
 *   o = attention(q, k, v) (causal, GQA);  h' = h + o·Woᵀ
 *   y2 = rmsnorm(h') · w_post;  gu = y2·[Wgate | Wup]ᵀ;  s = silu(gate)·up;  h'' = h' + s·Wdownᵀ
 * Head: logits = rmsnorm(h_L)·w_norm · Wheadᵀ; loss = mean cross-entropy over non-ignored targets.
 * The parameters come from the architecture declaration (lib/model/arch) and the layer forward
 * is the block serving runs too (block.ts), with the family's features (q/k/v biases, q/k norms)
 * and scaled RoPE; the backward below follows the same features.
 */
import { type Device, parseDevice } from '../device.js';
import { type DType, parseDType } from '../dtype.js';
import * as ops from '../ops/index.js';
import { Tensor, empty, full, randn, tensor, zeros } from '../tensor.js';
import { types } from 'node:util';
import { describe, fail } from '../errors.js';
import { checkOptions } from '../validate.js';
import { type ModelConfig, validateConfig } from './config.js';
import { type LayerFeatures, type LayerRole, architecture, layoutParameters, modelLayout, ropeInverseFrequencies } from './arch/index.js';
import { type BlockBackend, type BlockBuffers, type BlockWeights, blockForward } from './block.js';

export interface Parameter {
  /** HF name, e.g. model.layers.0.self_attn.q_proj.weight */
  name: string;
  /** f32 master weight */
  value: Tensor;
  /** f32 gradient, accumulated across micro-batches (zeroGrad resets it) */
  grad: Tensor;
  /** 'matrix' (hidden 2-D: Muon), 'embedding', 'head', 'norm', 'bias' (the architecture declares it) */
  kind: 'matrix' | 'embedding' | 'head' | 'norm' | 'bias';
}

/** A layer's parameters by role; gateUp is [gate | up] stacked, (2·ffn, d), HF gate_proj and up_proj its halves. */
type LayerParams = Record<Exclude<LayerRole, 'qBias' | 'kBias' | 'vBias' | 'qNorm' | 'kNorm'>, Parameter> &
  Partial<Record<'qBias' | 'kBias' | 'vBias' | 'qNorm' | 'kNorm', Parameter>>;

/** What backward needs from one layer's forward (compute dtype; rstd f32). */
interface LayerActivations {
  y1: Tensor; // (N, d)
  rstd1: Tensor; // (N)
  q: Tensor; // (B, T, H, hd), after RoPE
  k: Tensor; // (B, T, KV, hd), after RoPE
  v: Tensor; // (B, T, KV, hd)
  attn: Tensor; // (B, T, H, hd)
  lse: Tensor; // (B, H, T) f32
  qRaw?: Tensor; // (N, H·hd) qkNorm: q before its norm
  kRaw?: Tensor; // (N, KV·hd)
  qRstd?: Tensor; // (N·H) f32
  kRstd?: Tensor; // (N·KV) f32
  hMid: Tensor; // (N, d) residual stream after attention
  y2: Tensor; // (N, d)
  rstd2: Tensor; // (N)
  gu: Tensor; // (N, 2·ffn) [gate | up]
  s: Tensor; // (N, ffn) silu(gate)·up
}

/**
 * Every buffer a training step at one (B, T) touches, allocated once and reused step after
 * step, so a steady-state step allocates no tensor memory. With activation recomputation only
 * the residual stream entering each layer is kept; one shared activation set is refilled per
 * layer during backward.
 */
class StepPlan {
  readonly N: number;
  readonly positions: Tensor; // (B, T) i32
  readonly hs: Tensor[]; // layers + 1 residual streams (N, d): hs[i] enters layer i, hs[L] is the final
  readonly acts: LayerActivations[]; // one per layer, or a single shared set when recomputing
  readonly yFinal: Tensor; // (N, d)
  readonly rstdFinal: Tensor; // (N)
  /** rows of logits the fused classifier computes at a time */
  readonly classifierRows: number;
  readonly rowLoss: Tensor; // (N) f32
  readonly lossTotal: Tensor; // () f32
  // backward scratch, reused by every layer (training plans only)
  readonly dh!: Tensor; // (N, d)
  readonly dhMid!: Tensor; // (N, d)
  readonly dy!: Tensor; // (N, d)
  readonly ds!: Tensor; // (N, ffn)
  readonly dgu!: Tensor; // (N, 2·ffn)
  readonly dattn!: Tensor; // (B, T, H, hd)
  readonly dq!: Tensor; // (B, T, H, hd)
  readonly dk!: Tensor; // (B, T, KV, hd)
  readonly dv!: Tensor; // (B, T, KV, hd)
  readonly dqRaw?: Tensor; // (N, H·hd) qkNorm: gradient before the q norm
  readonly dkRaw?: Tensor; // (N, KV·hd)
  /** qkvBias: N zeros, the bias row every token gathers (and scatters its gradient to) */
  readonly biasRows?: Tensor; // (N) i32
  private readonly owned: Tensor[] = [];
  private readonly vocabSize: number;

  constructor(
    readonly B: number,
    readonly T: number,
    c: ModelConfig,
    private readonly device: Device,
    private readonly dtype: DType,
    readonly recompute: boolean,
    classifierRows: number,
    features: LayerFeatures,
    /** false for an inference-only plan (generation at a new length): no backward scratch */
    training = true,
  ) {
    this.vocabSize = c.vocabSize;
    const N = (this.N = B * T);
    const statDType: DType = dtype === 'f64' ? 'f64' : 'f32';
    const make = (shape: number[], d: DType = dtype) => {
      const t = empty(shape, { device, dtype: d });
      this.owned.push(t);
      return t;
    };
    this.positions = make([B, T], 'i32').write(Int32Array.from({ length: N }, (_, i) => i % T));
    this.hs = Array.from({ length: c.layers + 1 }, () => make([N, c.dModel]));
    const actSet = (): LayerActivations => ({
      y1: make([N, c.dModel]),
      rstd1: make([N], statDType),
      q: make([B, T, c.heads, c.headDim]),
      k: make([B, T, c.kvHeads, c.headDim]),
      v: make([B, T, c.kvHeads, c.headDim]),
      attn: make([B, T, c.heads, c.headDim]),
      lse: make([B, c.heads, T], statDType),
      ...(features.qkNorm
        ? {
            qRaw: make([N, c.heads * c.headDim]), kRaw: make([N, c.kvHeads * c.headDim]),
            qRstd: make([N * c.heads], statDType), kRstd: make([N * c.kvHeads], statDType),
          }
        : {}),
      hMid: make([N, c.dModel]),
      y2: make([N, c.dModel]),
      rstd2: make([N], statDType),
      gu: make([N, 2 * c.ffn]),
      s: make([N, c.ffn]),
    });
    this.acts = Array.from({ length: recompute ? 1 : c.layers }, actSet);
    this.yFinal = make([N, c.dModel]);
    this.rstdFinal = make([N], statDType);
    this.classifierRows = Math.max(1, Math.min(N, classifierRows));
    this.rowLoss = make([N], statDType);
    this.lossTotal = make([], statDType);
    if (features.qkvBias) this.biasRows = make([N], 'i32').write(new Int32Array(N));
    if (!training) return;
    this.dh = make([N, c.dModel]);
    this.dhMid = make([N, c.dModel]);
    this.dy = make([N, c.dModel]);
    this.ds = make([N, c.ffn]);
    this.dgu = make([N, 2 * c.ffn]);
    this.dattn = make([B, T, c.heads, c.headDim]);
    this.dq = make([B, T, c.heads, c.headDim]);
    this.dk = make([B, T, c.kvHeads, c.headDim]);
    this.dv = make([B, T, c.kvHeads, c.headDim]);
    if (features.qkNorm) {
      this.dqRaw = make([N, c.heads * c.headDim]);
      this.dkRaw = make([N, c.kvHeads * c.headDim]);
    }
  }

  private fullLogits?: Tensor;
  private chunkLogits?: Tensor;

  /** (N, V) logits for forward(ids, true); backward writes dlogits over them. Made on first use. */
  logits(): Tensor {
    if (!this.fullLogits) {
      this.fullLogits = empty([this.N, this.vocabSize], { device: this.device, dtype: this.dtype });
      this.owned.push(this.fullLogits);
    }
    return this.fullLogits;
  }

  /** (classifierRows, V) logits of one chunk for forwardBackward. Made on first use. */
  logitsChunk(): Tensor {
    if (!this.chunkLogits) {
      this.chunkLogits = empty([this.classifierRows, this.vocabSize], { device: this.device, dtype: this.dtype });
      this.owned.push(this.chunkLogits);
    }
    return this.chunkLogits;
  }

  activations(layer: number): LayerActivations {
    return this.acts[this.recompute ? 0 : layer];
  }

  get bytes(): number {
    return this.owned.reduce((n, t) => n + t.numel * { f32: 4, f64: 8, bf16: 2, f16: 2, i32: 4 }[t.dtype], 0);
  }

  dispose(): void {
    for (const t of this.owned) t.dispose();
  }
}

export interface ModelOptions {
  device?: Device;
  /** dtype of master weights and gradients: f32 (default), or f64 for gradient checks on the CPU */
  paramDType?: 'f32' | 'f64';
  /** dtype of activations and of the weight copies used in matmuls (default f32 on cpu, bf16 on cuda) */
  computeDType?: DType;
  seed?: number;
  /**
   * Activation recomputation: keep only each layer's input and recompute the layer's
   * activations during backward (one extra layer forward per layer but the last; activation
   * memory drops from about 12 tensors per layer to one). Gradients are bit-identical.
   */
  recompute?: boolean;
  /**
   * Rows of logits forwardBackward computes at a time (default: as many as fit in 64 MiB), so
   * the full (tokens, vocabulary) logits never sit in memory during training.
   */
  classifierRows?: number;
}

export interface BackwardOptions {
  /** Write the mean loss here (a 0-d f32 tensor, f64 for f64 models) instead of a new tensor. */
  loss?: Tensor;
  /** forwardBackward: called once the trunk (embedding to final norm) is enqueued, e.g. to record a timer mark */
  afterForward?: () => void;
  /**
   * Called as backward finishes parameters' gradients, last layers first (the head and final
   * norm, each layer from the last, the embedding), so data parallelism can start reducing
   * them while backward goes on. Every parameter is reported exactly once, after its last write.
   */
  gradientsReady?: (params: Parameter[]) => void;
}

function checkLossScale(lossScale: unknown): void {
  if (typeof lossScale !== 'number' || !Number.isFinite(lossScale)) fail('ERR_ARG', `lossScale must be a finite number, got ${describe(lossScale)}`);
}

export class LlamaModel {
  readonly config: ModelConfig;
  readonly device: Device;
  readonly computeDType: DType;
  readonly paramDType: 'f32' | 'f64';
  readonly recompute: boolean;
  readonly classifierRows: number;
  readonly parameters: Parameter[] = [];
  private readonly embed: Parameter;
  private readonly head: Parameter;
  private readonly finalNorm: Parameter;
  private readonly layers: LayerParams[] = [];
  /** each layer's parameters in declaration order (the unit gradientsReady reports) */
  private readonly layerParameterLists: Parameter[][] = [];
  private readonly features: LayerFeatures;
  /** (hd/2) f32 rotary inverse frequencies of a scaled RoPE; absent for plain RoPE (base^(-2j/hd)) */
  private readonly invFreq?: Tensor;
  /** weight copies in the compute dtype (only when it differs from the master dtype), refreshed by each forward */
  private readonly computeWeights = new Map<Parameter, Tensor>();
  private plan?: StepPlan;
  private saved?: { ids: Tensor; logits: Tensor; plan: StepPlan };

  constructor(config: ModelConfig, options: ModelOptions = {}) {
    // The same rules as a checkpoint's config.json (a fresh, frozen copy: later edits to the
    // caller's object cannot desynchronize the model from its config).
    this.config = Object.freeze(validateConfig(config));
    const o = checkOptions(options, ['device', 'paramDType', 'computeDType', 'seed', 'recompute', 'classifierRows'], 'model options') as ModelOptions;
    this.device = o.device === undefined ? 'cpu' : parseDevice(o.device);
    if (o.paramDType !== undefined && o.paramDType !== 'f32' && o.paramDType !== 'f64') fail('ERR_DTYPE', `paramDType must be 'f32' or 'f64', got ${describe(o.paramDType)}`);
    this.paramDType = o.paramDType ?? 'f32';
    this.computeDType = o.computeDType === undefined ? (this.device === 'cpu' ? this.paramDType : 'bf16') : parseDType(o.computeDType, 'computeDType');
    if (this.computeDType === 'i32') fail('ERR_DTYPE', 'computeDType must be a float dtype');
    if ((this.paramDType === 'f64' || this.computeDType === 'f64') && this.device !== 'cpu') fail('ERR_DTYPE', 'f64 models live on the CPU only');
    if (o.seed !== undefined && !(typeof o.seed === 'number' && Number.isSafeInteger(o.seed) && o.seed >= 0)) fail('ERR_ARG', `seed must be a non-negative integer, got ${describe(o.seed)}`);
    this.recompute = o.recompute ?? false;
    if (typeof this.recompute !== 'boolean') fail('ERR_ARG', 'recompute must be a boolean');
    options = o;
    config = this.config;
    const elementBytes = { f32: 4, f64: 8, bf16: 2, f16: 2, i32: 4 }[this.computeDType];
    this.classifierRows = options.classifierRows ?? Math.max(1, Math.floor(2 ** 26 / (config.vocabSize * elementBytes)));
    if (!Number.isSafeInteger(this.classifierRows) || this.classifierRows < 1) fail('ERR_ARG', 'classifierRows must be a positive integer');
    const dtype = this.paramDType;
    const seed = options.seed ?? 0;
    let offset = 0;
    const c = config;
    // GPT-2/LLaMA-style init: N(0, 0.02), output projections scaled by 1/sqrt(2·layers)
    const std = 0.02;
    const residualScale = std / Math.sqrt(2 * c.layers);
    const param = (spec: { name: string; shape: number[]; kind: Parameter['kind']; init: 'normal' | 'ones' | 'zeros'; residualInit?: boolean }): Parameter => {
      const stream = offset++; // one Philox stream per parameter, in declaration order
      const { name, shape, kind, init } = spec;
      const value =
        init === 'ones'
          ? full(shape, 1, { device: this.device, dtype })
          : init === 'zeros'
            ? zeros(shape, { device: this.device, dtype })
            : randn(shape, { seed, offset: stream, std: spec.residualInit ? residualScale : std, device: this.device, dtype });
      const p: Parameter = { name, value, grad: zeros(shape, { device: this.device, dtype }), kind };
      this.parameters.push(p);
      return p;
    };
    this.features = architecture(c).features;
    const layout = modelLayout(c);
    this.embed = param(layout.embed);
    for (const specs of layout.layers) {
      const list = specs.map(param);
      this.layerParameterLists.push(list);
      this.layers.push(Object.fromEntries(specs.map((spec, j) => [spec.role, list[j]])) as LayerParams);
    }
    this.finalNorm = param(layout.finalNorm);
    this.head = layout.head ? param(layout.head) : this.embed;
    if (c.ropeScaling) {
      this.invFreq = tensor(Float32Array.from(ropeInverseFrequencies(c.headDim, c.ropeTheta, c.ropeScaling)), { shape: [c.headDim / 2] }).to(this.device, 'f32');
    }
    if (this.computeDType !== this.paramDType) {
      // every kernel reads its weights in the activations' dtype (the norm kernels too)
      for (const p of this.parameters) this.computeWeights.set(p, empty([...p.value.shape], { device: this.device, dtype: this.computeDType }));
    }
  }

  /** The weight a matmul reads: the master weight, or its compute-dtype copy. */
  private weight(p: Parameter): Tensor {
    return this.computeWeights.get(p) ?? p.value;
  }

  /** Re-rounds the compute-dtype copies from the master weights (they change every optimizer step). */
  private refreshComputeWeights(): void {
    for (const [p, w] of this.computeWeights) ops.cast(p.value, this.computeDType, { out: w });
  }

  /** The plan for (B, T): reused while the shape stays, replaced when it changes. */
  private planFor(B: number, T: number): StepPlan {
    if (this.plan && this.plan.B === B && this.plan.T === T) return this.plan;
    this.plan?.dispose();
    this.plan = new StepPlan(B, T, this.config, this.device, this.computeDType, this.recompute, this.classifierRows, this.features);
    return this.plan;
  }

  /** Bytes held by the current step plan (activations, logits and backward scratch), 0 before the first step. */
  get planBytes(): number {
    return this.plan?.bytes ?? 0;
  }

  private matmulInto(x: Tensor, p: Parameter, out: Tensor, extra: Parameters<typeof ops.matmul>[2] = {}): Tensor {
    return ops.matmul(x, this.weight(p), { transB: true, out, ...extra });
  }

  /**
   * Layer i's forward from plan.hs[i] into its activation set; with `output`, the layer's
   * result h + attention + MLP goes to plan.hs[i + 1] (recomputation skips that last GEMM).
   */
  private layerForward(plan: StepPlan, i: number, output: boolean): void {
    const c = this.config;
    const L = this.layers[i];
    const a = plan.activations(i);
    const N = plan.N;
    const weights = Object.fromEntries(Object.entries(L).map(([role, p]) => [role, this.weight(p)])) as unknown as BlockWeights;
    const buffers: BlockBuffers = {
      h: plan.hs[i], y1: a.y1, rstd1: a.rstd1,
      q: a.q.reshape(N, c.heads * c.headDim), k: a.k.reshape(N, c.kvHeads * c.headDim), v: a.v.reshape(N, c.kvHeads * c.headDim),
      qHeads: a.q, kHeads: a.k, vHeads: a.v,
      ...(a.qRaw ? { qRaw: a.qRaw, kRaw: a.kRaw, qRstd: a.qRstd, kRstd: a.kRstd } : {}),
      ...(plan.biasRows ? { biasRows: plan.biasRows } : {}),
      attn: a.attn.reshape(N, c.heads * c.headDim), attnHeads: a.attn,
      hMid: a.hMid, y2: a.y2, rstd2: a.rstd2, gu: a.gu, s: a.s,
      ...(output ? { out: plan.hs[i + 1] } : {}),
    };
    blockForward(c, this.features, weights, buffers, this.trainingBackend(plan, a));
  }

  /** The block's backend for training and the reference forward: full causal attention over each sequence. */
  private trainingBackend(plan: StepPlan, a: LayerActivations): BlockBackend {
    return {
      positions: plan.positions,
      ...(this.invFreq ? { invFreq: this.invFreq } : {}),
      matmul: (x, w, out, residual, accumulate) =>
        void ops.matmul(x, w, residual ? { transB: true, out, epilogue: 'residual', residual } : accumulate ? { transB: true, out, beta: 1 } : { transB: true, out }),
      attention: (b) => void ops.attention(b.qHeads, b.kHeads, b.vHeads, { causal: true, out: b.attnHeads, lse: a.lse }),
    };
  }

  private checkIds(ids: Tensor): [number, number] {
    const c = this.config;
    if (!(ids instanceof Tensor) || ids.dtype !== 'i32' || ids.ndim !== 2) fail('ERR_SHAPE', 'ids must be (B, T) i32');
    const [B, T] = ids.shape;
    if (T > c.context) fail('ERR_SHAPE', `sequence length ${T} exceeds the context ${c.context}`);
    if (ids.device !== this.device) fail('ERR_DEVICE', `ids are on ${ids.device}, the model on ${this.device}`);
    return [B, T];
  }

  private checkTargets(targets: Tensor, targetCount: number, plan: StepPlan): void {
    if (!(targets instanceof Tensor) || targets.dtype !== 'i32' || targets.numel !== plan.N) fail('ERR_SHAPE', `targets must be (B, T) i32 matching the ids' ${plan.B}x${plan.T}`);
    if (targets.device !== this.device) fail('ERR_DEVICE', `targets are on ${targets.device}, the model on ${this.device}`);
    // typeof first: a comparison would call an object's valueOf/toString (user code, or a throw)
    if (typeof targetCount !== 'number' || !Number.isSafeInteger(targetCount) || targetCount < 1) fail('ERR_ARG', `targetCount (non-ignored targets) must be an integer >= 1, got ${describe(targetCount)}`);
  }

  /** Embedding, every layer and the final norm: plan.yFinal (N, d) ready for the head. */
  private trunkForward(plan: StepPlan, ids: Tensor): void {
    this.refreshComputeWeights();
    ops.embedding(this.weight(this.embed), ids.reshape(plan.N), { out: plan.hs[0] });
    for (let i = 0; i < this.layers.length; i++) this.layerForward(plan, i, true);
    ops.rmsnorm(plan.hs[this.layers.length], this.weight(this.finalNorm), { eps: this.config.normEps, y: plan.yFinal, rstd: plan.rstdFinal });
  }

  /**
   * The training step's forward and backward in one call, with the classifier fused and
   * chunked: per `classifierRows` rows, logits = yFinal·Wheadᵀ, then loss and dlogits in one
   * pass over them, then dy += dlogits·Whead and dWhead += dlogitsᵀ·yFinal, so the full
   * (tokens, vocabulary) logits never exist. Gradients accumulate (+=) scaled by lossScale, as
   * in backward; returns the mean loss (a 0-d tensor; options.loss when given).
   */
  forwardBackward(ids: Tensor, targets: Tensor, targetCount: number, lossScale = 1, options: BackwardOptions = {}): Tensor {
    const [B, T] = this.checkIds(ids);
    this.saved = undefined;
    const plan = this.planFor(B, T);
    this.checkTargets(targets, targetCount, plan);
    checkLossScale(lossScale);
    this.trunkForward(plan, ids);
    options.afterForward?.();
    const N = plan.N;
    const flatTargets = targets.reshape(N);
    const headW = this.weight(this.head);
    const chunk = plan.logitsChunk();
    for (let r0 = 0; r0 < N; r0 += plan.classifierRows) {
      const r1 = Math.min(N, r0 + plan.classifierRows);
      const logits = r1 - r0 === chunk.shape[0] ? chunk : chunk.slice(0, r1 - r0);
      const y = plan.yFinal.slice(r0, r1);
      ops.matmul(y, headW, { transB: true, out: logits });
      ops.crossEntropy(logits, flatTargets.slice(r0, r1), { gradScale: lossScale / targetCount, inPlace: true, loss: plan.rowLoss.slice(r0, r1) });
      ops.matmul(logits, headW, { out: plan.dy.slice(r0, r1) });
      ops.matmul(logits, y, { transA: true, out: this.head.grad, beta: 1 });
    }
    ops.sum(plan.rowLoss, { out: plan.lossTotal });
    const loss = ops.scale(plan.lossTotal, 1 / targetCount, { out: options.loss });
    this.layersBackward(plan, ids, options.gradientsReady);
    return loss;
  }

  /**
   * Forward pass over ids (B, T) i32; returns the logits (B·T, V) in the compute dtype.
   * With keepForBackward (training), the logits live in the step plan: valid until the next
   * forward, and backward overwrites them with their gradient (disposing the returned view is
   * harmless). Without it (evaluation, generation), the logits are a new tensor the caller owns.
   */
  forward(ids: Tensor, keepForBackward = true): Tensor {
    const c = this.config;
    const [B, T] = this.checkIds(ids);
    this.saved = undefined;
    // inference at another shape (generation) gets a transient plan and leaves the training plan alone
    const transient = !keepForBackward && !(this.plan && this.plan.B === B && this.plan.T === T);
    const plan = transient ? new StepPlan(B, T, c, this.device, this.computeDType, true, 1, this.features, false) : this.planFor(B, T);
    try {
      const N = plan.N;
      this.trunkForward(plan, ids);
      if (!keepForBackward) return ops.matmul(plan.yFinal, this.weight(this.head), { transB: true });
      ops.matmul(plan.yFinal, this.weight(this.head), { transB: true, out: plan.logits() });
      const logits = plan.logits().reshape(N, c.vocabSize);
      this.saved = { ids, logits, plan };
      return logits;
    } finally {
      if (transient) plan.dispose();
    }
  }

  /**
   * Loss of the last forward against targets (B, T) i32 (-1 = ignore), and backward: the
   * parameter gradients accumulate (+=) into each Parameter.grad, scaled by `lossScale`
   * (1 / micro-batches for gradient accumulation). Returns the mean loss as a 0-d tensor
   * (options.loss when given).
   */
  backward(logits: Tensor, targets: Tensor, targetCount: number, lossScale = 1, options: BackwardOptions = {}): Tensor {
    const saved = this.saved;
    checkLossScale(lossScale);
    if (!saved) fail('ERR_ARG', 'backward needs a forward(ids, true) first');
    if (logits !== saved.logits) fail('ERR_ARG', 'backward takes the logits returned by the last forward(ids, true)');
    const plan = saved.plan;
    const N = plan.N;
    this.checkTargets(targets, targetCount, plan);
    this.saved = undefined;
    // loss per row, and dlogits written over the logits (one pass, no f32 copy of the logits)
    const dlogits = plan.logits();
    ops.crossEntropy(dlogits, targets.reshape(N), { gradScale: lossScale / targetCount, inPlace: true, loss: plan.rowLoss });
    ops.sum(plan.rowLoss, { out: plan.lossTotal });
    const loss = ops.scale(plan.lossTotal, 1 / targetCount, { out: options.loss });
    // head: dy = dlogits · Whead, dWhead += dlogitsᵀ · yFinal
    ops.matmul(dlogits, this.weight(this.head), { out: plan.dy });
    ops.matmul(dlogits, plan.yFinal, { transA: true, out: this.head.grad, beta: 1 });
    this.layersBackward(plan, saved.ids, options.gradientsReady);
    return loss;
  }

  /** From plan.dy (the gradient at the final norm's output) down to the embedding. */
  private layersBackward(plan: StepPlan, ids: Tensor, gradientsReady?: (params: Parameter[]) => void): void {
    const c = this.config;
    const N = plan.N;
    // dW (out, in) += dyᵀ (out, N) · x (N, in)
    const weightGrad = (dy: Tensor, x: Tensor, p: Parameter) => ops.matmul(dy, x, { transA: true, out: p.grad, beta: 1 });
    // dx (N, in) = dy (N, out) · W (out, in)
    const inputGrad = (dy: Tensor, p: Parameter, out: Tensor, beta = 0) => ops.matmul(dy, this.weight(p), { out, beta });
    ops.rmsnormBackward(plan.dy, plan.hs[this.layers.length], this.weight(this.finalNorm), plan.rstdFinal, { dweight: this.finalNorm.grad, dx: plan.dh });
    // a tied head is the embedding table: complete only after the embedding backward
    gradientsReady?.(this.head === this.embed ? [this.finalNorm] : [this.head, this.finalNorm]);
    for (let i = this.layers.length - 1; i >= 0; i--) {
      const L = this.layers[i];
      // the shared set still holds the last layer's activations from the forward
      if (plan.recompute && i < this.layers.length - 1) this.layerForward(plan, i, false);
      const a = plan.activations(i);
      // h'' = h' + s·Wdownᵀ
      inputGrad(plan.dh, L.down, plan.ds);
      weightGrad(plan.dh, a.s, L.down);
      ops.swigluBackward(a.gu, plan.ds, { out: plan.dgu });
      inputGrad(plan.dgu, L.gateUp, plan.dy);
      weightGrad(plan.dgu, a.y2, L.gateUp);
      ops.rmsnormBackward(plan.dy, a.hMid, this.weight(L.postNorm), a.rstd2, { dweight: L.postNorm.grad, dresidual: plan.dh, dx: plan.dhMid });
      // h' = h + o·Woᵀ
      inputGrad(plan.dhMid, L.o, plan.dattn.reshape(N, c.heads * c.headDim));
      weightGrad(plan.dhMid, a.attn.reshape(N, c.heads * c.headDim), L.o);
      ops.attentionBackward(a.q, a.k, a.v, a.attn, a.lse, plan.dattn, { causal: true, dq: plan.dq, dk: plan.dk, dv: plan.dv });
      const rope = this.invFreq ? { base: c.ropeTheta, invFreq: this.invFreq, backward: true, inPlace: true } : { base: c.ropeTheta, backward: true, inPlace: true };
      ops.rope(plan.dq, plan.positions, rope);
      ops.rope(plan.dk, plan.positions, rope);
      let dq = plan.dq.reshape(N, c.heads * c.headDim);
      let dk = plan.dk.reshape(N, c.kvHeads * c.headDim);
      const dv = plan.dv.reshape(N, c.kvHeads * c.headDim);
      if (this.features.qkNorm) {
        // through the per-head norms (rows of D): d(q before the norm), dw_qn += Σ over tokens and heads
        const D = c.headDim;
        const rowsOf = (t: Tensor) => t.reshape(t.numel / D, D);
        ops.rmsnormBackward(rowsOf(dq), rowsOf(a.qRaw!), this.weight(L.qNorm!), a.qRstd!, { dweight: L.qNorm!.grad, dx: rowsOf(plan.dqRaw!) });
        ops.rmsnormBackward(rowsOf(dk), rowsOf(a.kRaw!), this.weight(L.kNorm!), a.kRstd!, { dweight: L.kNorm!.grad, dx: rowsOf(plan.dkRaw!) });
        dq = plan.dqRaw!;
        dk = plan.dkRaw!;
      }
      if (this.features.qkvBias) {
        // db += Σ over tokens: every token's gradient row scattered onto the bias's single row
        const biasGrad = (p: Parameter, d: Tensor) => ops.embeddingBackward(p.grad.reshape(1, p.grad.numel), plan.biasRows!, d);
        biasGrad(L.qBias!, dq);
        biasGrad(L.kBias!, dk);
        biasGrad(L.vBias!, dv);
      }
      inputGrad(dq, L.q, plan.dy);
      inputGrad(dk, L.k, plan.dy, 1);
      inputGrad(dv, L.v, plan.dy, 1);
      weightGrad(dq, a.y1, L.q);
      weightGrad(dk, a.y1, L.k);
      weightGrad(dv, a.y1, L.v);
      // dh (the old one was consumed as dresidual above) = d(rmsnorm)(dy1) + dhMid
      ops.rmsnormBackward(plan.dy, plan.hs[i], this.weight(L.inputNorm), a.rstd1, { dweight: L.inputNorm.grad, dresidual: plan.dhMid, dx: plan.dh });
      gradientsReady?.(this.layerParameters(i));
    }
    ops.embeddingBackward(this.embed.grad, ids.reshape(N), plan.dh);
    gradientsReady?.([this.embed]);
  }

  /** Layer i's parameters (the unit gradientsReady reports). */
  private layerParameters(i: number): Parameter[] {
    return this.layerParameterLists[i];
  }

  zeroGrad(): void {
    for (const p of this.parameters) ops.fill(p.grad, 0);
  }

  /** HF tensor names -> f32 master weights (as the architecture stores them: gate/up as views of gateUp's halves). */
  namedWeights(): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    const byName = new Map(this.parameters.map((p) => [p.name, p]));
    for (const spec of layoutParameters(modelLayout(this.config))) {
      const p = byName.get(spec.name)!;
      for (const hf of spec.hf) out.set(hf.name, hf.rows ? p.value.slice(hf.rows[0], hf.rows[1]) : p.value);
    }
    return out;
  }

  /**
   * Copies checkpoint weights (HF names) into the parameters. Every parameter must be present
   * with its exact shape; a missing, extra or mis-shaped tensor is ERR_CHECKPOINT.
   */
  loadWeights(weights: Map<string, { shape: number[]; values: Float32Array | Float64Array }>): void {
    if (!types.isMap(weights)) fail('ERR_ARG', `weights must be a Map of name -> { shape, values }, got ${describe(weights)}`);
    const expected = this.namedWeights();
    for (const name of weights.keys()) if (!expected.has(name)) fail('ERR_CHECKPOINT', `checkpoint tensor ${name} does not belong to this model`);
    for (const [name, target] of expected) {
      const w = weights.get(name);
      if (!w) fail('ERR_CHECKPOINT', `checkpoint is missing ${name}`);
      if (typeof w !== 'object' || !Array.isArray(w.shape) || !ArrayBuffer.isView(w.values)) fail('ERR_CHECKPOINT', `${name} must be { shape: number[], values: Float32Array | Float64Array }`);
      if (w.shape.length !== target.shape.length || w.shape.some((d, i) => d !== target.shape[i])) {
        fail('ERR_CHECKPOINT', `${name} has shape [${w.shape}] in the checkpoint, [${target.shape}] in the model`);
      }
      using src = tensor(w.values, { shape: w.shape }).to(this.device, this.paramDType);
      ops.copyInto(target, src);
    }
  }

  dispose(): void {
    this.saved = undefined;
    this.plan?.dispose();
    this.plan = undefined;
    this.invFreq?.dispose();
    for (const w of this.computeWeights.values()) w.dispose();
    for (const p of this.parameters) {
      p.value.dispose();
      p.grad.dispose();
    }
  }
}

