/**
 * The model's layers: embedding, RMSNorm, SwiGLU and the
 * fused cross-entropy, forward and backward (contract: native/ops/layers.h). CPU f32/f64/
 * bf16/f16; CUDA f32/bf16/f16 (compiled, not yet run on a GPU). rstd, loss and the parameter
 * gradients (dtable, dweight) are f32 (f64 for f64 inputs).
 */
import { deviceCode } from '../device.js';
import { dtypeCode } from '../dtype.js';
import { fail } from '../errors.js';
import { binding } from '../native.js';
import { Tensor, checkTensor } from '../tensor.js';
import { checkFiniteNumber, checkOptions, sameShape } from '../validate.js';
import { checkNoAlias, output } from './output.js';

function like(t: Tensor, shape: number[], dtype = t.dtype): Tensor {
  return new Tensor(binding().empty(deviceCode(t.device), dtypeCode(dtype), shape.reduce((a, b) => a * b, 1)), shape);
}

function rows(t: Tensor, name: string): [number, number] {
  if (t.ndim < 1) fail('ERR_SHAPE', `${name} must have at least one dimension`);
  const width = t.shape[t.ndim - 1];
  return [width === 0 ? 0 : t.numel / width, width];
}

/** table (V, D)[ids] -> (...ids.shape, D) */
export function embedding(table: Tensor, ids: Tensor, options?: { out?: Tensor }): Tensor {
  const t = checkTensor(table, 'table');
  const i = checkTensor(ids, 'ids');
  const o = checkOptions(options, ['out'], 'embedding options');
  if (t.ndim !== 2) fail('ERR_SHAPE', 'table must be (V, D)');
  if (i.dtype !== 'i32') fail('ERR_DTYPE', 'ids must be i32');
  const [V, D] = t.shape;
  const out = output(o.out, 'out', t.device, t.dtype, [...i.shape, D]);
  checkNoAlias({ out }, { table: t });
  binding().embedding(out.handle, t.handle, i.handle, i.numel, V, D);
  return out;
}

/** dtable (V, D) += rows of dout (…, D) scattered by ids */
export function embeddingBackward(dtable: Tensor, ids: Tensor, dout: Tensor): void {
  const t = checkTensor(dtable, 'dtable');
  const i = checkTensor(ids, 'ids');
  const g = checkTensor(dout, 'dout');
  if (t.ndim !== 2 || i.dtype !== 'i32' || g.numel !== i.numel * t.shape[1]) fail('ERR_SHAPE', 'embeddingBackward needs dtable (V, D), ids (N) i32, dout (N, D)');
  binding().embeddingBackward(t.handle, i.handle, g.handle, i.numel, t.shape[0], t.shape[1]);
}

/** y = x / sqrt(mean(x²) + eps) · weight over the last dimension; rstd per row for backward. */
export function rmsnorm(x: Tensor, weight: Tensor, options?: { eps?: number; y?: Tensor; rstd?: Tensor }): { y: Tensor; rstd: Tensor } {
  const xt = checkTensor(x, 'x');
  const w = checkTensor(weight, 'weight');
  const o = checkOptions(options, ['eps', 'y', 'rstd'], 'rmsnorm options');
  const eps = o.eps === undefined ? 1e-5 : checkFiniteNumber(o.eps, 'eps');
  const [N, D] = rows(xt, 'x');
  if (!sameShape(w.shape, [D])) fail('ERR_SHAPE', `weight must be (${D})`);
  const y = output(o.y, 'y', xt.device, xt.dtype, xt.shape);
  const rstd = output(o.rstd, 'rstd', xt.device, xt.dtype === 'f64' ? 'f64' : 'f32', xt.shape.slice(0, -1));
  checkNoAlias({ y, rstd }, { x: xt, weight: w });
  binding().rmsnorm(y.handle, rstd.handle, xt.handle, w.handle, N, D, eps);
  return { y, rstd };
}

/** dx (+ dresidual, the residual stream's gradient); dweight (D) accumulates (+=). */
export function rmsnormBackward(dy: Tensor, x: Tensor, weight: Tensor, rstd: Tensor, options: { dweight: Tensor; dresidual?: Tensor; dx?: Tensor }): Tensor {
  const g = checkTensor(dy, 'dy');
  const xt = checkTensor(x, 'x');
  const o = checkOptions(options, ['dweight', 'dresidual', 'dx'], 'rmsnormBackward options');
  const dw = checkTensor(o.dweight, 'dweight');
  const res = o.dresidual === undefined ? null : checkTensor(o.dresidual, 'dresidual');
  const [N, D] = rows(xt, 'x');
  if (!sameShape(g.shape, xt.shape) || (res && !sameShape(res.shape, xt.shape))) fail('ERR_SHAPE', 'dy and dresidual must have x\'s shape');
  const dx = output(o.dx, 'dx', xt.device, xt.dtype, xt.shape);
  checkNoAlias({ dx }, { dy: g, x: xt, dresidual: res, dweight: dw });
  binding().rmsnormBackward(dx.handle, dw.handle, g.handle, xt.handle, checkTensor(weight, 'weight').handle, checkTensor(rstd, 'rstd').handle, res?.handle ?? null, N, D);
  return dx;
}

/** [gate | up] (…, 2F) -> silu(gate)·up (…, F) */
export function swiglu(gateUp: Tensor, options?: { out?: Tensor }): Tensor {
  const x = checkTensor(gateUp, 'gateUp');
  const o = checkOptions(options, ['out'], 'swiglu options');
  const [N, W] = rows(x, 'gateUp');
  if (W % 2 !== 0) fail('ERR_SHAPE', 'swiglu needs an even last dimension ([gate | up])');
  const out = output(o.out, 'out', x.device, x.dtype, [...x.shape.slice(0, -1), W / 2]);
  checkNoAlias({ out }, { gateUp: x });
  binding().swiglu(out.handle, x.handle, N, W / 2);
  return out;
}

export function swigluBackward(gateUp: Tensor, dout: Tensor, options?: { out?: Tensor }): Tensor {
  const x = checkTensor(gateUp, 'gateUp');
  const g = checkTensor(dout, 'dout');
  const o = checkOptions(options, ['out'], 'swigluBackward options');
  const [N, W] = rows(x, 'gateUp');
  if (W % 2 !== 0 || g.numel !== N * (W / 2)) fail('ERR_SHAPE', 'dout must be (…, F) for gateUp (…, 2F)');
  const din = output(o.out, 'out', x.device, x.dtype, x.shape);
  checkNoAlias({ out: din }, { gateUp: x, dout: g });
  binding().swigluBackward(din.handle, x.handle, g.handle, N, W / 2);
  return din;
}

/**
 * Per-row cross-entropy of logits (N, V) against targets (N) i32 (−1 ignores a row). With
 * gradScale, the gradient (softmax − onehot)·gradScale is written over the logits (inPlace) or
 * into a new tensor, in the same pass.
 */
export function crossEntropy(logits: Tensor, targets: Tensor, options?: { gradScale?: number; inPlace?: boolean; loss?: Tensor }): { loss: Tensor; dlogits?: Tensor } {
  const x = checkTensor(logits, 'logits');
  const t = checkTensor(targets, 'targets');
  const o = checkOptions(options, ['gradScale', 'inPlace', 'loss'], 'crossEntropy options');
  if (x.ndim !== 2) fail('ERR_SHAPE', 'logits must be (N, V)');
  const [N, V] = x.shape;
  if (t.dtype !== 'i32' || t.numel !== N) fail('ERR_SHAPE', `targets must be (${N}) i32`);
  const loss = output(o.loss, 'loss', x.device, x.dtype === 'f64' ? 'f64' : 'f32', [N]);
  checkNoAlias({ loss }, { logits: x });
  let dlogits: Tensor | undefined;
  if (o.gradScale !== undefined) {
    checkFiniteNumber(o.gradScale, 'gradScale');
    dlogits = o.inPlace ? x : like(x, [N, V]);
  }
  binding().crossEntropy(loss.handle, dlogits?.handle ?? null, x.handle, t.handle, N, V, (o.gradScale as number | undefined) ?? 0);
  return { loss, dlogits };
}

/** Sets every element of t to value (in place). */
export function fill(t: Tensor, value: number): Tensor {
  const x = checkTensor(t, 't');
  if (typeof value !== 'number') fail('ERR_ARG', 'value must be a number');
  binding().fill(x.handle, value);
  return x;
}

/** Copies src into dst (same shape and dtype; any devices). */
export function copyInto(dst: Tensor, src: Tensor): Tensor {
  const d = checkTensor(dst, 'dst');
  const s = checkTensor(src, 'src');
  if (d.dtype !== s.dtype || !sameShape(d.shape, s.shape)) fail('ERR_SHAPE', `copyInto needs the same shape and dtype: [${d.shape}] ${d.dtype} vs [${s.shape}] ${s.dtype}`);
  binding().copy(d.handle, s.handle);
  return d;
}

/**
 * Global L2 norm of the tensors (a 1-element f32 tensor, computed on their device) and, with
 * maxNorm > 0, clipping: every tensor scaled by min(1, maxNorm / (norm + 1e-6)).
 */
export function gradNormClip(tensors: Tensor[], maxNorm = 0, options?: { out?: Tensor }): Tensor {
  if (!Array.isArray(tensors) || tensors.length === 0) fail('ERR_ARG', 'gradNormClip needs a non-empty array of tensors');
  // Array.from visits holes (map skips them): every slot must hold a tensor
  const list = Array.from({ length: tensors.length }, (_, i) => checkTensor(tensors[i], `tensors[${i}]`));
  const distinct = new Set<unknown>();
  for (const [i, t] of list.entries()) {
    // the same tensor twice would count twice in the norm and be scaled twice (re-checked natively for views)
    if (distinct.has(t) || distinct.has(t.handle)) fail('ERR_ARG', `tensors[${i}] appears twice in the list`);
    distinct.add(t).add(t.handle);
  }
  checkFiniteNumber(maxNorm, 'maxNorm');
  const o = checkOptions(options, ['out'], 'gradNormClip options');
  const norm = output(o.out, 'out', list[0].device, 'f32', [1]);
  checkNoAlias({ out: norm }, Object.fromEntries(list.map((t, i) => [`tensors[${i}]`, t])));
  binding().gradNormClip(list.map((t) => t.handle), maxNorm, norm.handle);
  return norm;
}
