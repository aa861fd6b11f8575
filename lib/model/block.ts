/**
 * The decoder layer's forward, one piece of code for training (LlamaModel) and serving
 * (ModelRunner), so the two cannot drift apart. Its parameter is the attention backend: full
 * causal attention over the batch (training, the reference forward) or the paged KV cache
 * (serving: append this step's k/v, attend to the cached prefix).
 *
 * Per layer (N tokens, h the residual stream (N, d); features from the architecture declaration):
 *   y1 = rmsnorm(h)·w_in
 *   q, k, v = y1·Wqᵀ (+ b_q), y1·Wkᵀ (+ b_k), y1·Wvᵀ (+ b_v)        qkvBias: the bias row gathered
 *                                                                     per token, the matmul adds onto it
 *   q, k = rmsnorm_D(q)·w_qn, rmsnorm_D(k)·w_kn  per head over D     qkNorm (before RoPE)
 *   q, k = rope(q, k; positions, inverse frequencies)
 *   o = attention(q, k, v);  h' = h + o·Woᵀ
 *   y2 = rmsnorm(h')·w_post;  s = swiglu(y2·[Wgate | Wup]ᵀ);  h'' = h' + s·Wdownᵀ
 * Every op computes a row from that row alone, so the serving engine's batch invariance holds
 * whatever the features.
 */
import type { ModelConfig } from './config.js';
import type { LayerFeatures } from './arch/types.js';
import * as ops from '../ops/index.js';
import type { Tensor } from '../tensor.js';

/** A layer's weights as the kernels read them (compute dtype); optional ones per feature. */
export interface BlockWeights {
  inputNorm: Tensor; // (d)
  q: Tensor; // (Hq·D, d)
  k: Tensor; // (Hkv·D, d)
  v: Tensor; // (Hkv·D, d)
  qBias?: Tensor; // (Hq·D)
  kBias?: Tensor; // (Hkv·D)
  vBias?: Tensor; // (Hkv·D)
  qNorm?: Tensor; // (D)
  kNorm?: Tensor; // (D)
  o: Tensor; // (d, Hq·D)
  postNorm: Tensor; // (d)
  gateUp: Tensor; // (2·ffn, d)
  down: Tensor; // (d, ffn)
}

/**
 * Where the layer reads and writes; R·T = N (training: R sequences of T tokens; serving: one
 * row of N tokens). The per-head views share storage with the flat ones.
 */
export interface BlockBuffers {
  h: Tensor; // (N, d) the layer's input
  y1: Tensor; // (N, d)
  rstd1: Tensor; // (N)
  q: Tensor; // (N, Hq·D) after norm and RoPE
  k: Tensor; // (N, Hkv·D)
  v: Tensor; // (N, Hkv·D)
  qHeads: Tensor; // (R, T, Hq, D) = q
  kHeads: Tensor; // (R, T, Hkv, D) = k
  vHeads: Tensor; // (R, T, Hkv, D) = v
  /** qkNorm: the projections before their norm (backward reads them) and the norms' statistics */
  qRaw?: Tensor; // (N, Hq·D)
  kRaw?: Tensor; // (N, Hkv·D)
  qRstd?: Tensor; // (N·Hq)
  kRstd?: Tensor; // (N·Hkv)
  /** qkvBias: N zeros (i32), the row of a (1, width) bias table each token gathers */
  biasRows?: Tensor; // (N) i32
  attn: Tensor; // (N, Hq·D)
  attnHeads: Tensor; // (R, T, Hq, D) = attn
  hMid: Tensor; // (N, d) residual stream after attention
  y2: Tensor; // (N, d)
  rstd2: Tensor; // (N)
  gu: Tensor; // (N, 2·ffn)
  s: Tensor; // (N, ffn)
  /** (N, d) the layer's output; absent: stop before the down projection (recomputation needs no more) */
  out?: Tensor;
}

export interface BlockBackend {
  /** positions (R, T) i32 of the tokens */
  positions: Tensor;
  /** (D/2) f32 rotary inverse frequencies of a scaled RoPE; absent: base^(-2j/D) */
  invFreq?: Tensor;
  /** out = x·wᵀ (+ residual) (+ out when accumulate): how this caller runs its matmuls */
  matmul(x: Tensor, w: Tensor, out: Tensor, residual?: Tensor, accumulate?: boolean): void;
  /** attnHeads = attention(qHeads, kHeads, vHeads): full causal, or over the paged cache */
  attention(b: BlockBuffers): void;
}

/** out (N, width) = x·wᵀ + bias, the bias gathered into every row first (the matmul accumulates onto it). */
function projection(backend: BlockBackend, x: Tensor, w: Tensor, bias: Tensor | undefined, rows: Tensor | undefined, out: Tensor): void {
  if (!bias) return backend.matmul(x, w, out);
  ops.embedding(bias.reshape(1, bias.numel), rows!, { out });
  backend.matmul(x, w, out, undefined, true);
}

export function blockForward(c: ModelConfig, features: LayerFeatures, w: BlockWeights, b: BlockBuffers, backend: BlockBackend): void {
  ops.rmsnorm(b.h, w.inputNorm, { eps: c.normEps, y: b.y1, rstd: b.rstd1 });
  const qOut = features.qkNorm ? b.qRaw! : b.q;
  const kOut = features.qkNorm ? b.kRaw! : b.k;
  projection(backend, b.y1, w.q, w.qBias, b.biasRows, qOut);
  projection(backend, b.y1, w.k, w.kBias, b.biasRows, kOut);
  projection(backend, b.y1, w.v, w.vBias, b.biasRows, b.v);
  if (features.qkNorm) {
    // each head's D values are one row of the norm: (N·H, D)
    const D = c.headDim;
    ops.rmsnorm(b.qRaw!.reshape(b.qRaw!.numel / D, D), w.qNorm!, { eps: c.normEps, y: b.q.reshape(b.q.numel / D, D), rstd: b.qRstd! });
    ops.rmsnorm(b.kRaw!.reshape(b.kRaw!.numel / D, D), w.kNorm!, { eps: c.normEps, y: b.k.reshape(b.k.numel / D, D), rstd: b.kRstd! });
  }
  const rope = backend.invFreq ? { base: c.ropeTheta, invFreq: backend.invFreq, inPlace: true } : { base: c.ropeTheta, inPlace: true };
  ops.rope(b.qHeads, backend.positions, rope);
  ops.rope(b.kHeads, backend.positions, rope);
  backend.attention(b);
  backend.matmul(b.attn, w.o, b.hMid, b.h);
  ops.rmsnorm(b.hMid, w.postNorm, { eps: c.normEps, y: b.y2, rstd: b.rstd2 });
  backend.matmul(b.y2, w.gateUp, b.gu);
  ops.swiglu(b.gu, { out: b.s });
  if (b.out) backend.matmul(b.s, w.down, b.out, b.hMid);
}
