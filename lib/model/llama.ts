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
 */
import type { Device } from '../device.js';
import type { DType } from '../dtype.js';
import * as ops from '../ops/index.js';
import { Tensor, full, randn, tensor, zeros } from '../tensor.js';
import { fail } from '../errors.js';
import type { ModelConfig } from './config.js';

export interface Parameter {
  /** HF name, e.g. model.layers.0.self_attn.q_proj.weight */
  name: string;
  /** f32 master weight */
  value: Tensor;
  /** f32 gradient, accumulated across micro-batches (zeroGrad resets it) */
  grad: Tensor;
  /** 'matrix' (hidden 2-D: Muon), 'embedding', 'head', 'norm' */
  kind: 'matrix' | 'embedding' | 'head' | 'norm';
}

interface LayerParams {
  inputNorm: Parameter;
  q: Parameter;
  k: Parameter;
  v: Parameter;
  o: Parameter;
  postNorm: Parameter;
  /** [gate | up] stacked: (2·ffn, d) — HF gate_proj and up_proj are views of its halves */
  gateUp: Parameter;
  down: Parameter;
}

interface LayerActivations {
  h: Tensor;
  y1: Tensor;
  rstd1: Tensor;
  q: Tensor;
  k: Tensor;
  v: Tensor;
  attn: Tensor;
  lse: Tensor;
  hMid: Tensor;
  y2: Tensor;
  rstd2: Tensor;
  gu: Tensor;
  s: Tensor;
}

export interface ModelOptions {
  device?: Device;
  /** dtype of master weights and gradients: f32 (default), or f64 for gradient checks on the CPU */
  paramDType?: 'f32' | 'f64';
  /** dtype of activations and of the weight copies used in matmuls (default f32 on cpu, bf16 on cuda) */
  computeDType?: DType;
  seed?: number;
}

export class LlamaModel {
  readonly config: ModelConfig;
  readonly device: Device;
  readonly computeDType: DType;
  readonly paramDType: 'f32' | 'f64';
  readonly parameters: Parameter[] = [];
  private readonly embed: Parameter;
  private readonly head: Parameter;
  private readonly finalNorm: Parameter;
  private readonly layers: LayerParams[] = [];
  private saved?: { ids: Tensor; positions: Tensor; B: number; T: number; acts: LayerActivations[]; hFinal: Tensor; yFinal: Tensor; rstdFinal: Tensor };

  constructor(config: ModelConfig, options: ModelOptions = {}) {
    this.config = config;
    this.device = options.device ?? 'cpu';
    this.paramDType = options.paramDType ?? 'f32';
    this.computeDType = options.computeDType ?? (this.device === 'cpu' ? this.paramDType : 'bf16');
    const dtype = this.paramDType;
    const seed = options.seed ?? 0;
    let offset = 0;
    const c = config;
    // GPT-2/LLaMA-style init: N(0, 0.02), output projections scaled by 1/sqrt(2·layers)
    const std = 0.02;
    const param = (name: string, shape: number[], kind: Parameter['kind'], init: 'normal' | 'ones', scale = std): Parameter => {
      const stream = offset++; // one Philox stream per parameter, in declaration order
      const value =
        init === 'ones'
          ? full(shape, 1, { device: this.device, dtype })
          : randn(shape, { seed, offset: stream, std: scale, device: this.device, dtype });
      const p: Parameter = { name, value, grad: zeros(shape, { device: this.device, dtype }), kind };
      this.parameters.push(p);
      return p;
    };
    this.embed = param('model.embed_tokens.weight', [c.vocabSize, c.dModel], 'embedding', 'normal');
    const residualScale = std / Math.sqrt(2 * c.layers);
    for (let i = 0; i < c.layers; i++) {
      const prefix = `model.layers.${i}`;
      this.layers.push({
        inputNorm: param(`${prefix}.input_layernorm.weight`, [c.dModel], 'norm', 'ones'),
        q: param(`${prefix}.self_attn.q_proj.weight`, [c.heads * c.headDim, c.dModel], 'matrix', 'normal'),
        k: param(`${prefix}.self_attn.k_proj.weight`, [c.kvHeads * c.headDim, c.dModel], 'matrix', 'normal'),
        v: param(`${prefix}.self_attn.v_proj.weight`, [c.kvHeads * c.headDim, c.dModel], 'matrix', 'normal'),
        o: param(`${prefix}.self_attn.o_proj.weight`, [c.dModel, c.heads * c.headDim], 'matrix', 'normal', residualScale),
        postNorm: param(`${prefix}.post_attention_layernorm.weight`, [c.dModel], 'norm', 'ones'),
        gateUp: param(`${prefix}.mlp.gate_up_proj.weight`, [2 * c.ffn, c.dModel], 'matrix', 'normal'),
        down: param(`${prefix}.mlp.down_proj.weight`, [c.dModel, c.ffn], 'matrix', 'normal', residualScale),
      });
    }
    this.finalNorm = param('model.norm.weight', [c.dModel], 'norm', 'ones');
    this.head = c.tiedEmbeddings ? this.embed : param('lm_head.weight', [c.vocabSize, c.dModel], 'head', 'normal');
  }

  /** Weight copies in the compute dtype, refreshed after each optimizer step. */
  private weight(p: Parameter): Tensor {
    return this.computeDType === this.paramDType ? p.value : p.value.cast(this.computeDType);
  }

  private release(t: Tensor, p: Parameter): void {
    if (t !== p.value) t.dispose();
  }

  /**
   * Forward pass over ids (B, T) i32; returns the logits (B·T, V) in the compute dtype and keeps
   * what backward needs.
   */
  forward(ids: Tensor, keepForBackward = true): Tensor {
    const c = this.config;
    if (ids.dtype !== 'i32' || ids.ndim !== 2) fail('ERR_SHAPE', 'ids must be (B, T) i32');
    const [B, T] = ids.shape;
    if (T > c.context) fail('ERR_SHAPE', `sequence length ${T} exceeds the context ${c.context}`);
    const N = B * T;
    this.dropSaved();
    const positions = tensor(Int32Array.from({ length: N }, (_, i) => i % T), { shape: [B, T], device: this.device });
    const embedW = this.weight(this.embed);
    let h = ops.embedding(embedW, ids.reshape(N));
    this.release(embedW, this.embed);
    const acts: LayerActivations[] = [];
    for (const L of this.layers) {
      const { y: y1, rstd: rstd1 } = ops.rmsnorm(h, L.inputNorm.value, { eps: c.normEps });
      const mm = (x: Tensor, p: Parameter, extra: Parameters<typeof ops.matmul>[2] = {}) => {
        const w = this.weight(p);
        const out = ops.matmul(x, w, { transB: true, ...extra });
        this.release(w, p);
        return out;
      };
      const q = ops.rope(mm(y1, L.q).reshape(B, T, c.heads, c.headDim), positions, { base: c.ropeTheta, inPlace: true });
      const k = ops.rope(mm(y1, L.k).reshape(B, T, c.kvHeads, c.headDim), positions, { base: c.ropeTheta, inPlace: true });
      const v = mm(y1, L.v).reshape(B, T, c.kvHeads, c.headDim);
      const { out: attn, lse } = ops.attention(q, k, v, { causal: true });
      const hMid = mm(attn.reshape(N, c.heads * c.headDim), L.o, { epilogue: 'residual', residual: h });
      const { y: y2, rstd: rstd2 } = ops.rmsnorm(hMid, L.postNorm.value, { eps: c.normEps });
      const gu = mm(y2, L.gateUp);
      const s = ops.swiglu(gu);
      const hOut = mm(s, L.down, { epilogue: 'residual', residual: hMid });
      if (keepForBackward) {
        acts.push({ h, y1, rstd1, q, k, v, attn, lse, hMid, y2, rstd2, gu, s });
      } else {
        for (const t of [h, y1, rstd1, q, k, v, attn, lse, hMid, y2, rstd2, gu, s]) t.dispose();
      }
      h = hOut;
    }
    const { y: yFinal, rstd: rstdFinal } = ops.rmsnorm(h, this.finalNorm.value, { eps: c.normEps });
    const headW = this.weight(this.head);
    const logits = ops.matmul(yFinal, headW, { transB: true });
    this.release(headW, this.head);
    if (keepForBackward) {
      this.saved = { ids, positions, B, T, acts, hFinal: h, yFinal, rstdFinal };
    } else {
      for (const t of [positions, h, yFinal, rstdFinal]) t.dispose();
    }
    return logits;
  }

  /**
   * Loss of the last forward against targets (B, T) i32 (-1 = ignore), and backward: the
   * parameter gradients accumulate (+=) into each Parameter.grad, scaled by `lossScale`
   * (1 / micro-batches for gradient accumulation). Returns the mean loss as a 0-d f32 tensor.
   */
  backward(logits: Tensor, targets: Tensor, targetCount: number, lossScale = 1): Tensor {
    const s = this.saved;
    if (!s) fail('ERR_ARG', 'backward needs a forward(ids, true) first');
    const c = this.config;
    const N = s.B * s.T;
    if (targets.dtype !== 'i32' || targets.numel !== N) fail('ERR_SHAPE', `targets must be (B, T) i32 matching the forward's ${s.B}x${s.T}`);
    if (!(targetCount >= 1)) fail('ERR_ARG', 'targetCount (non-ignored targets) must be >= 1');
    // loss per row, and dlogits written over the logits (one pass, no f32 copy of the logits)
    const { loss: losses } = ops.crossEntropy(logits, targets.reshape(N), { gradScale: lossScale / targetCount, inPlace: true });
    const total = ops.sum(losses);
    const loss = ops.scale(total, 1 / targetCount);
    losses.dispose();
    total.dispose();
    const dlogits = logits;

    const mmGrad = (dy: Tensor, x: Tensor, p: Parameter) => {
      // dW (out, in) += dyᵀ (out, N) · x (N, in)
      ops.matmul(dy, x, { transA: true, out: p.grad, beta: 1 });
    };
    const mmInput = (dy: Tensor, p: Parameter, extra: Parameters<typeof ops.matmul>[2] = {}) => {
      const w = this.weight(p);
      const out = ops.matmul(dy, w, extra);
      this.release(w, p);
      return out;
    };

    // head and final norm
    let dh: Tensor;
    {
      const dy = mmInput(dlogits, this.head);
      mmGrad(dlogits, s.yFinal, this.head);
      dh = ops.rmsnormBackward(dy, s.hFinal, this.finalNorm.value, s.rstdFinal, { dweight: this.finalNorm.grad });
      dy.dispose();
    }
    for (let i = this.layers.length - 1; i >= 0; i--) {
      const L = this.layers[i];
      const a = s.acts[i];
      // h'' = h' + s·Wdownᵀ
      const ds = mmInput(dh, L.down);
      mmGrad(dh, a.s, L.down);
      const dgu = ops.swigluBackward(a.gu, ds);
      ds.dispose();
      const dy2 = mmInput(dgu, L.gateUp);
      mmGrad(dgu, a.y2, L.gateUp);
      dgu.dispose();
      const dhMid = ops.rmsnormBackward(dy2, a.hMid, L.postNorm.value, a.rstd2, { dweight: L.postNorm.grad, dresidual: dh });
      dy2.dispose();
      dh.dispose();
      // h' = h + o·Woᵀ
      const attn2d = a.attn.reshape(N, c.heads * c.headDim);
      const dattn = mmInput(dhMid, L.o).reshape(s.B, s.T, c.heads, c.headDim);
      mmGrad(dhMid, attn2d, L.o);
      const g = ops.attentionBackward(a.q, a.k, a.v, a.attn, a.lse, dattn, { causal: true });
      dattn.dispose();
      ops.rope(g.dq, s.positions, { base: c.ropeTheta, backward: true, inPlace: true });
      ops.rope(g.dk, s.positions, { base: c.ropeTheta, backward: true, inPlace: true });
      const dq = g.dq.reshape(N, c.heads * c.headDim);
      const dk = g.dk.reshape(N, c.kvHeads * c.headDim);
      const dv = g.dv.reshape(N, c.kvHeads * c.headDim);
      const dy1 = mmInput(dq, L.q);
      for (const [d, p] of [[dk, L.k], [dv, L.v]] as const) {
        const w = this.weight(p);
        ops.matmul(d, w, { out: dy1, beta: 1 });
        this.release(w, p);
      }
      mmGrad(dq, a.y1, L.q);
      mmGrad(dk, a.y1, L.k);
      mmGrad(dv, a.y1, L.v);
      for (const t of [g.dq, g.dk, g.dv]) t.dispose();
      dh = ops.rmsnormBackward(dy1, a.h, L.inputNorm.value, a.rstd1, { dweight: L.inputNorm.grad, dresidual: dhMid });
      dy1.dispose();
      dhMid.dispose();
    }
    ops.embeddingBackward(this.embed.grad, s.ids.reshape(N), dh);
    dh.dispose();
    this.dropSaved();
    return loss;
  }

  zeroGrad(): void {
    for (const p of this.parameters) ops.fill(p.grad, 0);
  }

  private dropSaved(): void {
    if (!this.saved) return;
    for (const a of this.saved.acts) for (const t of Object.values(a)) (t as Tensor).dispose();
    for (const t of [this.saved.positions, this.saved.hFinal, this.saved.yFinal, this.saved.rstdFinal]) t.dispose();
    this.saved = undefined;
  }

  /** HF tensor names -> f32 master weights (gate/up split into their HF halves as views). */
  namedWeights(): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    for (const p of this.parameters) {
      if (p.name.endsWith('mlp.gate_up_proj.weight')) {
        const base = p.name.replace('gate_up_proj.weight', '');
        out.set(`${base}gate_proj.weight`, p.value.slice(0, this.config.ffn));
        out.set(`${base}up_proj.weight`, p.value.slice(this.config.ffn));
      } else {
        out.set(p.name, p.value);
      }
    }
    return out;
  }

  /**
   * Copies checkpoint weights (HF names) into the parameters. Every parameter must be present
   * with its exact shape; a missing, extra or mis-shaped tensor is ERR_CHECKPOINT.
   */
  loadWeights(weights: Map<string, { shape: number[]; values: Float32Array | Float64Array }>): void {
    const expected = this.namedWeights();
    for (const name of weights.keys()) if (!expected.has(name)) fail('ERR_CHECKPOINT', `checkpoint tensor ${name} does not belong to this model`);
    for (const [name, target] of expected) {
      const w = weights.get(name);
      if (!w) fail('ERR_CHECKPOINT', `checkpoint is missing ${name}`);
      if (w.shape.length !== target.shape.length || w.shape.some((d, i) => d !== target.shape[i])) {
        fail('ERR_CHECKPOINT', `${name} has shape [${w.shape}] in the checkpoint, [${target.shape}] in the model`);
      }
      using src = tensor(w.values, { shape: w.shape }).to(this.device, this.paramDType);
      ops.copyInto(target, src);
    }
  }

  dispose(): void {
    this.dropSaved();
    for (const p of this.parameters) {
      p.value.dispose();
      p.grad.dispose();
    }
  }
}

