/**
 * Attention ops (contract: native/ops/attention.h): FlashAttention-style forward/backward with
 * GQA and causal masking, rotary embeddings, and decode over a paged KV cache.
 *
 *   attention:          q (B, Tq, Hq, D), k, v (B, Tk, Hkv, D) -> out (B, Tq, Hq, D), lse (B, Hq, Tq) f32
 *   attentionBackward:  + out, lse, dout -> dq, dk, dv (q's and k's shapes)
 *   rope:               x (B, T, H, D), positions (B, T) i32 -> y (HF rotate_half convention)
 *   kvAppend:           kNew, vNew (B, Tnew, Hkv, D) into kCache, vCache (blocks, blockSize, Hkv, D)
 *                       at positions start[b] .. start[b] + Tnew - 1 through blockTable (B, maxBlocks) i32
 *   attentionDecode:    q (B, Hq, D) over the first seqLens[b] cached tokens -> out (B, Hq, D), lse (B, Hq)
 */
import type { DType } from '../dtype.js';
import { deviceCode } from '../device.js';
import { dtypeCode } from '../dtype.js';
import { fail } from '../errors.js';
import { binding } from '../native.js';
import { Tensor, checkTensor } from '../tensor.js';
import { checkFiniteNumber, checkOptions, checkSameDevice, sameShape } from '../validate.js';
import { checkNoAlias, output } from './output.js';

function newTensor(like: Tensor, shape: number[], dtype: DType = like.dtype): Tensor {
  return new Tensor(binding().empty(deviceCode(like.device), dtypeCode(dtype), shape.reduce((p, q) => p * q, 1)), shape);
}

function lseDType(dtype: DType): DType {
  return dtype === 'f64' ? 'f64' : 'f32';
}

export interface AttentionOptions {
  /** Mask keys after each query (bottom-right aligned when Tq != Tk). Default true. */
  causal?: boolean;
  /** Softmax scale; default 1 / sqrt(D). */
  scale?: number;
  /** CPU only: the plain-loop reference (materialized scores, f64 accumulation). */
  reference?: boolean;
}

/** Planned outputs for attention (otherwise new tensors). */
export interface AttentionOutputs {
  out?: Tensor;
  lse?: Tensor;
}

/** Planned gradient outputs for attentionBackward (otherwise new tensors). */
export interface AttentionGradOutputs {
  dq?: Tensor;
  dk?: Tensor;
  dv?: Tensor;
}

interface Checked {
  q: Tensor;
  k: Tensor;
  v: Tensor;
  B: number;
  Tq: number;
  Tk: number;
  Hq: number;
  Hkv: number;
  D: number;
  causal: boolean;
  scale: number;
  reference: boolean;
  options: Record<string, unknown>;
}

function checkAttention(qIn: unknown, kIn: unknown, vIn: unknown, options: unknown, outputs: readonly string[]): Checked {
  const q = checkTensor(qIn, 'q');
  const k = checkTensor(kIn, 'k');
  const v = checkTensor(vIn, 'v');
  const o = checkOptions(options, ['causal', 'scale', 'reference', ...outputs], 'attention options');
  for (const [t, name] of [[k, 'k'], [v, 'v']] as const) {
    checkSameDevice(t, q, name, 'q');
    if (t.dtype !== q.dtype) fail('ERR_DTYPE', `${name} is ${t.dtype} but q is ${q.dtype}`);
  }
  if (q.dtype === 'i32') fail('ERR_DTYPE', 'attention needs float tensors');
  if (q.device !== 'cpu' && q.dtype !== 'bf16' && q.dtype !== 'f16') fail('ERR_DTYPE', `CUDA attention takes bf16 or f16, got ${q.dtype}`);
  if (q.ndim !== 4 || k.ndim !== 4 || v.ndim !== 4) fail('ERR_SHAPE', 'q, k and v must be (B, T, H, D)');
  const [B, Tq, Hq, D] = q.shape;
  const [Bk, Tk, Hkv, Dk] = k.shape;
  if (!sameShape(k.shape, v.shape)) fail('ERR_SHAPE', `k [${k.shape}] and v [${v.shape}] differ`);
  if (Bk !== B || Dk !== D) fail('ERR_SHAPE', `q [${q.shape}] and k [${k.shape}] disagree on batch or head dim`);
  if (Hkv === 0 || Hq % Hkv !== 0) fail('ERR_SHAPE', `kv heads (${Hkv}) must divide query heads (${Hq})`);
  if (D === 0) fail('ERR_SHAPE', 'head dim must be positive');
  const causal = o.causal === undefined ? true : o.causal;
  if (typeof causal !== 'boolean') fail('ERR_ARG', 'causal must be a boolean');
  const scale = o.scale === undefined ? 1 / Math.sqrt(D) : checkFiniteNumber(o.scale, 'scale');
  const reference = o.reference === undefined ? false : o.reference;
  if (typeof reference !== 'boolean') fail('ERR_ARG', 'reference must be a boolean');
  if (reference && q.device !== 'cpu') fail('ERR_ARG', 'the reference attention runs on the CPU only');
  return { q, k, v, B, Tq, Tk, Hq, Hkv, D, causal, scale, reference, options: o };
}

function dims(c: Checked) {
  return { B: c.B, Tq: c.Tq, Tk: c.Tk, Hq: c.Hq, Hkv: c.Hkv, D: c.D, scale: c.scale, causal: c.causal, reference: c.reference };
}

/** softmax(scale · q·kᵀ, masked) · v, and the log-sum-exp of each query row. */
export function attention(q: Tensor, k: Tensor, v: Tensor, options?: AttentionOptions & AttentionOutputs): { out: Tensor; lse: Tensor } {
  const c = checkAttention(q, k, v, options, ['out', 'lse']);
  const out = output(c.options.out, 'out', c.q.device, c.q.dtype, [c.B, c.Tq, c.Hq, c.D]);
  const lse = output(c.options.lse, 'lse', c.q.device, lseDType(c.q.dtype), [c.B, c.Hq, c.Tq]);
  checkNoAlias({ out, lse }, { q: c.q, k: c.k, v: c.v });
  binding().attentionForward(out.handle, lse.handle, c.q.handle, c.k.handle, c.v.handle, dims(c));
  return { out, lse };
}

/** Gradients of attention given dout, recomputing the probabilities from lse. */
export function attentionBackward(
  q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, dout: Tensor, options?: AttentionOptions & AttentionGradOutputs,
): { dq: Tensor; dk: Tensor; dv: Tensor } {
  const c = checkAttention(q, k, v, options, ['dq', 'dk', 'dv']);
  const o = checkTensor(out, 'out');
  const l = checkTensor(lse, 'lse');
  const d = checkTensor(dout, 'dout');
  for (const [t, name] of [[o, 'out'], [d, 'dout']] as const) {
    checkSameDevice(t, c.q, name, 'q');
    if (t.dtype !== c.q.dtype) fail('ERR_DTYPE', `${name} is ${t.dtype} but q is ${c.q.dtype}`);
    if (!sameShape(t.shape, c.q.shape)) fail('ERR_SHAPE', `${name} has shape [${t.shape}], expected q's [${c.q.shape}]`);
  }
  checkSameDevice(l, c.q, 'lse', 'q');
  if (l.dtype !== lseDType(c.q.dtype)) fail('ERR_DTYPE', `lse must be ${lseDType(c.q.dtype)}`);
  if (!sameShape(l.shape, [c.B, c.Hq, c.Tq])) fail('ERR_SHAPE', `lse has shape [${l.shape}], expected [${[c.B, c.Hq, c.Tq]}]`);
  const dq = output(c.options.dq, 'dq', c.q.device, c.q.dtype, c.q.shape);
  const dk = output(c.options.dk, 'dk', c.q.device, c.q.dtype, c.k.shape);
  const dv = output(c.options.dv, 'dv', c.q.device, c.q.dtype, c.v.shape);
  checkNoAlias({ dq, dk, dv }, { q: c.q, k: c.k, v: c.v, out: o, lse: l, dout: d });
  if (dq === dk || dq === dv || dk === dv) fail('ERR_ARG', 'dq, dk and dv must be distinct tensors');
  binding().attentionBackward(dq.handle, dk.handle, dv.handle, c.q.handle, c.k.handle, c.v.handle, o.handle, l.handle, d.handle, dims(c));
  return { dq, dk, dv };
}

export interface RopeOptions {
  /** theta base; default 10000 (LLaMA). */
  base?: number;
  /**
   * (D/2) f32 inverse frequency of each dimension pair, on x's device, replacing base^(-2j/D):
   * scaled RoPE (llama3, linear; lib/model/arch/rope_scaling.ts computes them).
   */
  invFreq?: Tensor;
  /** Rotate by -theta: the gradient of the forward rotation. */
  backward?: boolean;
  /** Write into x instead of a new tensor. */
  inPlace?: boolean;
}

/** Rotary position embedding, HF LLaMA convention (rotate_half over the two halves of D). */
export function rope(x: Tensor, positions: Tensor, options?: RopeOptions): Tensor {
  const t = checkTensor(x, 'x');
  const pos = checkTensor(positions, 'positions');
  const o = checkOptions(options, ['base', 'invFreq', 'backward', 'inPlace'], 'rope options');
  if (t.ndim !== 4) fail('ERR_SHAPE', 'x must be (B, T, H, D)');
  const [B, T, H, D] = t.shape;
  if (D % 2 !== 0) fail('ERR_SHAPE', `rope needs an even head dim, got ${D}`);
  if (t.dtype === 'i32') fail('ERR_DTYPE', 'rope needs a float tensor');
  checkSameDevice(pos, t, 'positions', 'x');
  if (pos.dtype !== 'i32') fail('ERR_DTYPE', 'positions must be i32');
  if (!sameShape(pos.shape, [B, T])) fail('ERR_SHAPE', `positions has shape [${pos.shape}], expected [${B}, ${T}]`);
  const base = o.base === undefined ? 10000 : checkFiniteNumber(o.base, 'base');
  if (!(base > 1)) fail('ERR_ARG', 'base must be > 1');
  const invFreq = o.invFreq === undefined ? undefined : checkTensor(o.invFreq, 'invFreq');
  if (invFreq) {
    checkSameDevice(invFreq, t, 'invFreq', 'x');
    if (invFreq.dtype !== 'f32' || !sameShape(invFreq.shape, [D / 2])) fail('ERR_SHAPE', `invFreq must be (${D / 2}) f32, got [${invFreq.shape}] ${invFreq.dtype}`);
    // the CUDA kernel's inverse-frequency path has not run on a GPU: only the gated CUDA paths may take it
    if (invFreq.device !== 'cpu' && process.env.KILN_CUDA_TRAINING !== '1' && process.env.KILN_CUDA_SERVING !== '1') {
      fail('ERR_DEVICE', 'scaled RoPE (invFreq) on CUDA is built but not yet verified on a GPU: run on cpu, or set KILN_CUDA_TRAINING=1 / KILN_CUDA_SERVING=1 to run the unverified path');
    }
  }
  const backward = o.backward ?? false;
  const inPlace = o.inPlace ?? false;
  if (typeof backward !== 'boolean' || typeof inPlace !== 'boolean') fail('ERR_ARG', 'backward and inPlace must be booleans');
  const y = inPlace ? t : newTensor(t, [...t.shape]);
  binding().rope(y.handle, t.handle, pos.handle, { B, T, H, D, base, backward }, invFreq?.handle ?? null);
  return y;
}

export interface PagedCache {
  /** (numBlocks, blockSize, Hkv, D) */
  k: Tensor;
  v: Tensor;
  /** (B, maxBlocks) i32: physical block ids of each sequence's logical blocks */
  blockTable: Tensor;
}

function checkCache(cache: unknown): { k: Tensor; v: Tensor; table: Tensor; numBlocks: number; blockSize: number; Hkv: number; D: number; maxBlocks: number; B: number } {
  if (cache === null || typeof cache !== 'object') fail('ERR_ARG', 'cache must be { k, v, blockTable }');
  const c = cache as Record<string, unknown>;
  const k = checkTensor(c.k, 'cache.k');
  const v = checkTensor(c.v, 'cache.v');
  const table = checkTensor(c.blockTable, 'cache.blockTable');
  if (k.ndim !== 4 || !sameShape(k.shape, v.shape)) fail('ERR_SHAPE', 'cache.k and cache.v must both be (numBlocks, blockSize, Hkv, D)');
  checkSameDevice(v, k, 'cache.v', 'cache.k');
  checkSameDevice(table, k, 'cache.blockTable', 'cache.k');
  if (v.dtype !== k.dtype) fail('ERR_DTYPE', 'cache.k and cache.v dtypes differ');
  if (table.dtype !== 'i32' || table.ndim !== 2) fail('ERR_DTYPE', 'cache.blockTable must be (B, maxBlocks) i32');
  const [numBlocks, blockSize, Hkv, D] = k.shape;
  return { k, v, table, numBlocks, blockSize, Hkv, D, maxBlocks: table.shape[1], B: table.shape[0] };
}

/** Writes new keys/values into the paged cache at each sequence's start position. */
export function kvAppend(cache: PagedCache, kNew: Tensor, vNew: Tensor, start: Tensor): void {
  const c = checkCache(cache);
  const kn = checkTensor(kNew, 'kNew');
  const vn = checkTensor(vNew, 'vNew');
  const s = checkTensor(start, 'start');
  if (kn.ndim !== 4 || !sameShape(kn.shape, vn.shape)) fail('ERR_SHAPE', 'kNew and vNew must both be (B, Tnew, Hkv, D)');
  const [B, Tnew, Hkv, D] = kn.shape;
  if (B !== c.B || Hkv !== c.Hkv || D !== c.D) fail('ERR_SHAPE', `kNew [${kn.shape}] does not fit the cache (B ${c.B}, Hkv ${c.Hkv}, D ${c.D})`);
  for (const [t, name] of [[kn, 'kNew'], [vn, 'vNew'], [s, 'start']] as const) checkSameDevice(t, c.k, name, 'cache');
  if (kn.dtype !== c.k.dtype || vn.dtype !== c.k.dtype) fail('ERR_DTYPE', 'new keys/values must have the cache dtype');
  if (s.dtype !== 'i32' || !sameShape(s.shape, [B])) fail('ERR_SHAPE', 'start must be (B) i32');
  binding().kvAppend(c.k.handle, c.v.handle, kn.handle, vn.handle, c.table.handle, s.handle, {
    B, Tnew, Hkv, D, blockSize: c.blockSize, maxBlocks: c.maxBlocks, numBlocks: c.numBlocks,
  });
}

export interface DecodeOptions {
  scale?: number;
  /** An upper bound of seqLens (CUDA sizes its split-K work from it); default: the cache capacity. */
  maxSeqLen?: number;
  reference?: boolean;
  /** Planned outputs (B, Hq, D) and (B, Hq) f32 (otherwise new tensors): the serving loop reuses them. */
  out?: Tensor;
  lse?: Tensor;
}

/**
 * One query token per row against its cached keys/values (a ragged batch). Rows are
 * independent: a row of the block table may repeat another's, so the tokens of a prefill chunk
 * (row n: that sequence's table, seqLens[n] = its position + 1) attend causally to the paged
 * cache exactly as decode tokens do.
 */
export function attentionDecode(q: Tensor, cache: PagedCache, seqLens: Tensor, options?: DecodeOptions): { out: Tensor; lse: Tensor } {
  const c = checkCache(cache);
  const query = checkTensor(q, 'q');
  const lens = checkTensor(seqLens, 'seqLens');
  const o = checkOptions(options, ['scale', 'maxSeqLen', 'reference', 'out', 'lse'], 'decode options');
  if (query.ndim !== 3) fail('ERR_SHAPE', 'q must be (B, Hq, D)');
  const [B, Hq, D] = query.shape;
  if (B !== c.B || D !== c.D) fail('ERR_SHAPE', `q [${query.shape}] does not fit the cache (B ${c.B}, D ${c.D})`);
  if (Hq % c.Hkv !== 0) fail('ERR_SHAPE', `kv heads (${c.Hkv}) must divide query heads (${Hq})`);
  checkSameDevice(query, c.k, 'q', 'cache');
  checkSameDevice(lens, c.k, 'seqLens', 'cache');
  if (query.dtype !== c.k.dtype) fail('ERR_DTYPE', 'q must have the cache dtype');
  if (lens.dtype !== 'i32' || !sameShape(lens.shape, [B])) fail('ERR_SHAPE', 'seqLens must be (B) i32');
  const capacity = c.maxBlocks * c.blockSize;
  const maxSeqLen = o.maxSeqLen === undefined ? capacity : checkFiniteNumber(o.maxSeqLen, 'maxSeqLen');
  if (!Number.isInteger(maxSeqLen) || maxSeqLen < 1 || maxSeqLen > capacity) fail('ERR_ARG', `maxSeqLen must be an integer in [1, ${capacity}]`);
  const scale = o.scale === undefined ? 1 / Math.sqrt(D) : checkFiniteNumber(o.scale, 'scale');
  const reference = o.reference ?? false;
  if (typeof reference !== 'boolean') fail('ERR_ARG', 'reference must be a boolean');
  if (reference && query.device !== 'cpu') fail('ERR_ARG', 'the reference decode runs on the CPU only');
  const out = o.out === undefined ? newTensor(query, [B, Hq, D]) : output(o.out, 'out', query.device, query.dtype, [B, Hq, D]);
  const lse = o.lse === undefined ? newTensor(query, [B, Hq], lseDType(query.dtype)) : output(o.lse, 'lse', query.device, lseDType(query.dtype), [B, Hq]);
  checkNoAlias({ out, lse }, { q: query, kCache: c.k, vCache: c.v });
  binding().attentionDecode(out.handle, lse.handle, query.handle, c.k.handle, c.v.handle, c.table.handle, lens.handle, {
    B, Hq, Hkv: c.Hkv, D, blockSize: c.blockSize, maxBlocks: c.maxBlocks, numBlocks: c.numBlocks, scale, maxSeqLen, reference,
  });
  return { out, lse };
}
