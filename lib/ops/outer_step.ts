/**
 * DiLoCo's outer step as ops (native/ops/outer_step.h has the math and the packed format):
 * argument checks, then the binding. lib/parallel/diloco.ts composes them; the anchor, outer
 * momentum and error-feedback residual live on the training device and never visit the host.
 *
 * Packed pseudo-gradients are f32 tensors of packedBytes(n, bits) / 4 elements (so the
 * collectives can move them): per 128-value block one f32 scale, then the codes. bits 0 = no
 * quantization (the packed tensor is Δ itself, n f32 values).
 *
 * CUDA kernels are compiled but unverified without a GPU: refused unless KILN_CUDA_DIST=1
 * (the same opt-in as DiLoCo's staged collectives; test/cuda/outer_step.test.ts checks them).
 */
import { fail } from '../errors.js';
import { binding } from '../native.js';
import { type Tensor, checkTensor } from '../tensor.js';
import { checkFiniteNumber, checkOptions } from '../validate.js';

export const QUANT_BLOCK = 128;
export type PseudoGradientBits = 0 | 2 | 4 | 8;

/** Bytes of the packed form of n values: blocks·4 + ceil(n·bits/8), padded to 4 (n·4 for bits 0). */
export function packedBytes(n: number, bits: number): number {
  if (!Number.isSafeInteger(n) || n < 0) fail('ERR_ARG', `n must be a non-negative integer, got ${n}`);
  checkBits(bits);
  if (bits === 0) return n * 4;
  const blocks = Math.ceil(n / QUANT_BLOCK);
  return Math.ceil((blocks * 4 + Math.ceil((n * bits) / 8)) / 4) * 4;
}

function checkBits(bits: unknown): PseudoGradientBits {
  if (bits !== 0 && bits !== 2 && bits !== 4 && bits !== 8) fail('ERR_ARG', `bits must be 0, 2, 4 or 8, got ${String(bits)}`);
  return bits;
}

function checkF32(t: unknown, name: string, device?: string): Tensor {
  const x = checkTensor(t, name);
  if (x.dtype !== 'f32') fail('ERR_DTYPE', `${name} must be f32, got ${x.dtype}`);
  if (device !== undefined && x.device !== device) fail('ERR_DEVICE', `${name} is on ${x.device}, expected ${device} like the other tensors`);
  if (x.device !== 'cpu' && process.env.KILN_CUDA_DIST !== '1') {
    fail('ERR_DEVICE', `${name} is on ${x.device}: the CUDA outer-step kernels are built but not yet verified on a GPU; set KILN_CUDA_DIST=1 to run them`);
  }
  return x;
}

function checkDistinct(named: Record<string, Tensor | undefined>): void {
  const seen = new Map<unknown, string>();
  for (const [name, t] of Object.entries(named)) {
    if (!t) continue;
    const before = seen.get(t.handle) ?? seen.get(t);
    if (before) fail('ERR_ARG', `${name} must not be the same tensor as ${before}`);
    seen.set(t.handle, name).set(t, name);
  }
}

/**
 * packed ← quantize(Δ), Δ = anchor − current + residual, and (error feedback) residual ← Δ − what
 * the receivers will reconstruct. `residual` null: no error feedback. All f32 on one device;
 * anchor, current and residual have n elements, packed packedBytes(n, bits) / 4.
 */
export function pseudoGradientQuantize(packed: Tensor, residual: Tensor | null, anchor: Tensor, current: Tensor, bits: number): void {
  const a = checkF32(anchor, 'anchor');
  const c = checkF32(current, 'current', a.device);
  const p = checkF32(packed, 'packed', a.device);
  const r = residual === null || residual === undefined ? null : checkF32(residual, 'residual', a.device);
  const b = checkBits(bits);
  const n = a.numel;
  if (c.numel !== n) fail('ERR_SHAPE', `current has ${c.numel} elements, anchor ${n}`);
  if (r && r.numel !== n) fail('ERR_SHAPE', `residual has ${r.numel} elements, anchor ${n}`);
  if (p.numel * 4 !== packedBytes(n, b)) fail('ERR_SHAPE', `packed must hold ${packedBytes(n, b) / 4} f32 (${packedBytes(n, b)} bytes for ${n} values at ${b} bits), got ${p.numel}`);
  checkDistinct({ packed: p, anchor: a, residual: r ?? undefined });
  checkDistinct({ packed: p, current: c, residual: r ?? undefined });
  binding().pseudoGradientQuantize(p.handle, r?.handle ?? null, a.handle, c.handle, b);
}

/** mean (n f32) ← the average of the worldSize packed pseudo-gradients laid end to end in `gathered`. */
export function dequantizeMean(mean: Tensor, gathered: Tensor, worldSize: number, bits: number): void {
  const m = checkF32(mean, 'mean');
  const g = checkF32(gathered, 'gathered', m.device);
  if (!Number.isSafeInteger(worldSize) || worldSize < 1) fail('ERR_ARG', `worldSize must be a positive integer, got ${worldSize}`);
  const b = checkBits(bits);
  const each = packedBytes(m.numel, b) / 4;
  if (g.numel !== each * worldSize) fail('ERR_SHAPE', `gathered must hold ${worldSize} × ${each} f32, got ${g.numel}`);
  checkDistinct({ mean: m, gathered: g });
  binding().dequantizeMean(m.handle, g.handle, worldSize, b);
}

export interface OuterNesterovOptions {
  lr: number;
  momentum: number;
  nesterov?: boolean;
  /** Streaming DiLoCo's merge: weights ← α·weights + (1−α)·anchor; undefined: weights ← anchor */
  mixAlpha?: number;
}

/**
 * The outer Nesterov SGD, in place: m = μ·m + Δ̄; anchor −= lr·(Δ̄ + μ·m) (nesterov; else lr·m);
 * then weights ← anchor, or with mixAlpha α: weights ← α·weights + (1−α)·anchor.
 */
export function outerNesterov(anchor: Tensor, momentum: Tensor, weights: Tensor, meanDelta: Tensor, options: OuterNesterovOptions): void {
  const o = checkOptions(options, ['lr', 'momentum', 'nesterov', 'mixAlpha'], 'outerNesterov options');
  const lr = checkFiniteNumber(o.lr, 'lr');
  const mu = checkFiniteNumber(o.momentum, 'momentum');
  const nesterov = o.nesterov;
  if (nesterov !== undefined && typeof nesterov !== 'boolean') fail('ERR_ARG', 'nesterov must be a boolean');
  const mixAlpha = o.mixAlpha;
  const mix = mixAlpha !== undefined;
  const alpha = mix ? checkFiniteNumber(mixAlpha, 'mixAlpha') : 0;
  if (mix && (alpha < 0 || alpha > 1)) fail('ERR_ARG', `mixAlpha must be in [0, 1], got ${alpha}`);
  const a = checkF32(anchor, 'anchor');
  const list = { anchor: a, momentum: checkF32(momentum, 'momentum', a.device), weights: checkF32(weights, 'weights', a.device), meanDelta: checkF32(meanDelta, 'meanDelta', a.device) };
  for (const [name, t] of Object.entries(list)) if (t.numel !== a.numel) fail('ERR_SHAPE', `${name} has ${t.numel} elements, anchor ${a.numel}`);
  checkDistinct(list);
  binding().outerNesterov(a.handle, list.momentum.handle, list.weights.handle, list.meanDelta.handle, lr, mu, nesterov !== false, alpha, mix);
}
