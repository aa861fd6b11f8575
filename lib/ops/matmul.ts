/**
 * ops.matmul: C = epilogue(alpha · op(A) · op(B) + beta · C) over optional batch dimensions.
 * Argument checks and the backend choice live here; the GEMMs are native (ops/matmul.h).
 *
 *   a: (..., M, K), or (..., K, M) with transA     b: (..., K, N), or (..., N, K) with transB
 *   out: (..., M, N)
 * Batch dimensions of a and b must match, or one of them is 2-D and is shared by every batch
 * (weights). f32 accumulation for f32/bf16/f16 inputs (f64 for f64 on the CPU).
 *
 * Layouts of a LLaMA step: forward y = x·Wᵀ (transB), input gradient dx = dy·W, weight gradient
 * dW += dyᵀ·x (transA, accumulate into an f32 gradient with { out: dW, beta: 1 }).
 * Epilogues: residual (out = acc + residual), swiglu (b holds [gate | up] along N, 2N wide; out
 * = silu(gate) · up, N wide).
 */
import type { MatmulParams } from '../../binding.js';
import type { DType } from '../dtype.js';
import { type Device, deviceCode } from '../device.js';
import { dtypeCode } from '../dtype.js';
import { describe, fail } from '../errors.js';
import { binding } from '../native.js';
import { loadTuned } from './matmul_tuning.js';
import { Tensor, checkTensor } from '../tensor.js';
import { checkFiniteNumber, checkOptions, checkSameDevice, sameShape } from '../validate.js';

export interface MatmulOptions {
  transA?: boolean;
  transB?: boolean;
  alpha?: number;
  /** Scale of the existing `out` added to the product (needs `out`). 1 accumulates (gradients). */
  beta?: number;
  /** Write into this tensor instead of a new one. */
  out?: Tensor;
  /** dtype of a new output: default a's dtype (f32 stays f32, bf16 stays bf16). */
  outDtype?: DType;
  epilogue?: 'none' | 'residual' | 'swiglu';
  residual?: Tensor;
  /** CPU only: the plain-loop reference (f64 accumulation), for tests and baselines. */
  reference?: boolean;
  /**
   * Each output row bit-identical whatever M is (the serving engine's batches): on the CPU every
   * M takes the unpacked dot-product path that small M always takes. CUDA does not read it yet.
   */
  batchInvariant?: boolean;
}

/**
 * One matmul as it reached the binding: the operand dtypes and sizes and the exact params. What
 * `kiln tune` times (lib/train/matmul_tuner.ts), so its tune keys are the keys the model's calls look up.
 */
export interface MatmulCall {
  device: Device;
  abDType: DType;
  outDType: DType;
  /** elements of a, b, out and the residual (null without the residual epilogue) */
  aNumel: number;
  bNumel: number;
  outNumel: number;
  residualNumel: number | null;
  params: MatmulParams;
}

let recording: MatmulCall[] | null = null;

/**
 * Runs fn and returns every matmul it issued (in order; the matmuls still run). Not reentrant:
 * a recording inside a recording is ERR_ARG.
 */
export function recordMatmulCalls<T>(fn: () => T): { result: T; calls: MatmulCall[] } {
  if (recording) fail('ERR_ARG', 'recordMatmulCalls is already recording');
  const calls: MatmulCall[] = [];
  recording = calls;
  try {
    return { result: fn(), calls };
  } finally {
    recording = null;
  }
}

const OUTPUTS: Record<DType, DType[]> = { f32: ['f32'], f64: ['f64'], bf16: ['bf16', 'f16', 'f32'], f16: ['bf16', 'f16', 'f32'], i32: [] };

export function matmul(a: Tensor, b: Tensor, options?: MatmulOptions): Tensor {
  const x = checkTensor(a, 'a');
  const w = checkTensor(b, 'b');
  const o = checkOptions(options, ['transA', 'transB', 'alpha', 'beta', 'out', 'outDtype', 'epilogue', 'residual', 'reference', 'batchInvariant'], 'matmul options');
  const transA = flag(o.transA, 'transA');
  const transB = flag(o.transB, 'transB');
  const reference = flag(o.reference, 'reference');
  const batchInvariant = flag(o.batchInvariant, 'batchInvariant');
  const alpha = o.alpha === undefined ? 1 : checkFiniteNumber(o.alpha, 'alpha');
  const beta = o.beta === undefined ? 0 : checkFiniteNumber(o.beta, 'beta');
  const epilogueName = o.epilogue ?? 'none';
  const epilogues: Record<string, 0 | 1 | 2> = { none: 0, residual: 1, swiglu: 2 };
  const epilogue = typeof epilogueName === 'string' && Object.hasOwn(epilogues, epilogueName) ? epilogues[epilogueName] : undefined;
  if (epilogue === undefined) fail('ERR_ARG', `epilogue must be 'none', 'residual' or 'swiglu', got ${describe(o.epilogue)}`);

  checkSameDevice(x, w, 'a', 'b');
  if (x.dtype !== w.dtype) fail('ERR_DTYPE', `a is ${x.dtype} but b is ${w.dtype}`);
  if (x.dtype === 'i32') fail('ERR_DTYPE', 'matmul needs float inputs');
  if (x.ndim < 2 || w.ndim < 2) fail('ERR_SHAPE', `matmul needs at least 2-D inputs, got [${x.shape}] and [${w.shape}]`);
  if (reference && x.device !== 'cpu') fail('ERR_ARG', 'the reference matmul runs on the CPU only');

  const [aRows, aCols] = x.shape.slice(-2);
  const [bRows, bCols] = w.shape.slice(-2);
  const M = transA ? aCols : aRows;
  const K = transA ? aRows : aCols;
  const kB = transB ? bCols : bRows;
  const nInner = transB ? bRows : bCols;
  if (K !== kB) {
    fail('ERR_SHAPE', `matmul inner dimensions differ: op(a) is ${M}x${K}, op(b) is ${kB}x${nInner} (a [${x.shape}], b [${w.shape}]${transA ? ', transA' : ''}${transB ? ', transB' : ''})`);
  }
  if (epilogue === 2 && nInner % 2 !== 0) fail('ERR_SHAPE', `swiglu needs an even number of output columns in b ([gate | up]), got ${nInner}`);
  const N = epilogue === 2 ? nInner / 2 : nInner;

  const aBatch = x.shape.slice(0, -2);
  const bBatch = w.shape.slice(0, -2);
  let batchShape: readonly number[];
  if (aBatch.length && bBatch.length) {
    if (!sameShape(aBatch, bBatch)) fail('ERR_SHAPE', `batch dimensions differ: [${aBatch}] vs [${bBatch}]`);
    batchShape = aBatch;
  } else {
    batchShape = aBatch.length ? aBatch : bBatch;
  }
  const batch = batchShape.reduce((p, q) => p * q, 1);
  const outShape = [...batchShape, M, N];

  let out: Tensor;
  if (o.out !== undefined) {
    out = checkTensor(o.out, 'out');
    checkSameDevice(out, x, 'out', 'a');
    if (!sameShape(out.shape, outShape)) fail('ERR_SHAPE', `out has shape [${out.shape}], the product is [${outShape}]`);
    if (o.outDtype !== undefined && o.outDtype !== out.dtype) fail('ERR_DTYPE', 'outDtype disagrees with out');
    if (out === x || out === w || out.handle === x.handle || out.handle === w.handle) fail('ERR_ARG', 'out must not alias a or b');
  } else {
    if (beta !== 0) fail('ERR_ARG', 'beta != 0 accumulates into an existing output: pass { out }');
    const dtype = (o.outDtype as DType | undefined) ?? x.dtype;
    out = new Tensor(binding().empty(deviceCode(x.device), dtypeCode(dtype), outShape.reduce((p, q) => p * q, 1)), outShape);
  }
  if (!OUTPUTS[x.dtype].includes(out.dtype)) fail('ERR_DTYPE', `${x.dtype} inputs can produce ${OUTPUTS[x.dtype].join('/')} outputs, not ${out.dtype}`);
  if (epilogue === 2 && beta !== 0) fail('ERR_ARG', 'the swiglu epilogue does not accumulate (beta must be 0)');

  let residual: Tensor | null = null;
  if (epilogue === 1) {
    if (o.residual === undefined) fail('ERR_ARG', "the 'residual' epilogue needs { residual }");
    residual = checkTensor(o.residual, 'residual');
    checkSameDevice(residual, out, 'residual', 'out');
    if (residual.dtype !== out.dtype) fail('ERR_DTYPE', `residual is ${residual.dtype} but out is ${out.dtype}`);
    if (!sameShape(residual.shape, outShape)) fail('ERR_SHAPE', `residual has shape [${residual.shape}], the product is [${outShape}]`);
  } else if (o.residual !== undefined) {
    fail('ERR_ARG', "residual is only used with epilogue: 'residual'");
  }

  if (x.device !== 'cpu') loadTuned(x.device);
  const params: MatmulParams = {
    M, N, K, batch, transA, transB,
    lda: aCols, ldb: bCols, ldc: N, ldResidual: N,
    strideA: aBatch.length ? aRows * aCols : 0,
    strideB: bBatch.length ? bRows * bCols : 0,
    strideC: M * N,
    strideResidual: M * N,
    alpha, beta, epilogue, reference, batchInvariant,
  };
  recording?.push({
    device: x.device, abDType: x.dtype, outDType: out.dtype, aNumel: x.numel, bNumel: w.numel, outNumel: out.numel,
    residualNumel: residual ? residual.numel : null, params: { ...params },
  });
  binding().matmul(out.handle, x.handle, w.handle, residual?.handle ?? null, params);
  return out;
}

function flag(value: unknown, name: string): boolean {
  if (value === undefined) return false;
  if (typeof value !== 'boolean') fail('ERR_ARG', `${name} must be a boolean`);
  return value;
}
