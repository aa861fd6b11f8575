/** add, mul, scale, cast, sum, mean: argument checks and backend choice; math is native. */
import type { DType } from '../dtype.js';
import { deviceCode } from '../device.js';
import { dtypeCode } from '../dtype.js';
import { fail } from '../errors.js';
import { binding } from '../native.js';
import { Tensor, checkTensor } from '../tensor.js';
import { checkFiniteNumber, checkInteger, checkOptions, checkSameDType, checkSameDevice, checkSameShape } from '../validate.js';
import { output } from './output.js';

function like(t: Tensor, shape: readonly number[] = t.shape, dtype: DType = t.dtype): Tensor {
  const numel = shape.reduce((x, y) => x * y, 1);
  return new Tensor(binding().empty(deviceCode(t.device), dtypeCode(dtype), numel), shape);
}

function binary(op: 0 | 1, a: unknown, b: unknown): Tensor {
  const x = checkTensor(a, 'a');
  const y = checkTensor(b, 'b');
  checkSameDevice(x, y, 'a', 'b');
  checkSameDType(x, y, 'a', 'b');
  checkSameShape(x, y, 'a', 'b');
  const out = like(x);
  binding().binary(op, out.handle, x.handle, y.handle);
  return out;
}

/** a + b (same shape, dtype and device). */
export function add(a: Tensor, b: Tensor): Tensor {
  return binary(0, a, b);
}

/** a * b elementwise (same shape, dtype and device). */
export function mul(a: Tensor, b: Tensor): Tensor {
  return binary(1, a, b);
}

/** alpha * a (into `out` when given; out may be a itself). */
export function scale(a: Tensor, alpha: number, options?: { out?: Tensor }): Tensor {
  const x = checkTensor(a, 'a');
  checkFiniteNumber(alpha, 'alpha');
  const o = checkOptions(options, ['out'], 'scale options');
  const out = output(o.out, 'out', x.device, x.dtype, x.shape);
  binding().scale(out.handle, x.handle, alpha);
  return out;
}

/** a converted to dtype (round to nearest even), into `out` (of that dtype and a's shape) when given. */
export function cast(a: Tensor, dtype: DType, options?: { out?: Tensor }): Tensor {
  const x = checkTensor(a, 'a');
  const o = checkOptions(options, ['out'], 'cast options');
  if (o.out === undefined) return x.cast(dtype);
  const out = output(o.out, 'out', x.device, dtype, x.shape);
  if (out.handle === x.handle) fail('ERR_ARG', 'cast cannot write over its input');
  binding().cast(out.handle, x.handle);
  return out;
}

export interface ReduceOptions {
  /** Reduce only this dimension (the last, -1, is supported without a copy); omit for all. */
  dim?: number;
  /** Write the result here (the reduced shape, a's dtype) instead of a new tensor. */
  out?: Tensor;
}

function reduce(a: unknown, options: unknown, mean: boolean): Tensor {
  const x = checkTensor(a, 'a');
  const o = checkOptions(options, ['dim', 'out'], 'options');
  if (x.dtype === 'i32') fail('ERR_DTYPE', 'sum and mean need a float dtype');
  if (o.dim === undefined) {
    const out = output(o.out, 'out', x.device, x.dtype, []);
    if (out.handle === x.handle) fail('ERR_ARG', 'out must not be the input');
    binding().reduceRows(out.handle, x.handle, 1, x.numel, mean);
    return out;
  }
  const dim = checkInteger(o.dim, 'dim', -Math.max(x.ndim, 1), Math.max(x.ndim - 1, 0));
  const resolved = dim < 0 ? dim + x.ndim : dim;
  if (resolved !== x.ndim - 1) fail('ERR_ARG', 'sum/mean reduce over all elements or over the last dimension (dim: -1)');
  const cols = x.shape[x.ndim - 1];
  const rows = cols === 0 ? x.shape.slice(0, -1).reduce((p, q) => p * q, 1) : x.numel / cols;
  const out = output(o.out, 'out', x.device, x.dtype, x.shape.slice(0, -1));
  if (out.handle === x.handle) fail('ERR_ARG', 'out must not be the input');
  binding().reduceRows(out.handle, x.handle, rows, cols, mean);
  return out;
}

/** Sum of all elements (0-d result), or along the last dimension with { dim: -1 }. */
export function sum(a: Tensor, options?: ReduceOptions): Tensor {
  return reduce(a, options, false);
}

/** Mean of all elements, or along the last dimension with { dim: -1 }. */
export function mean(a: Tensor, options?: ReduceOptions): Tensor {
  return reduce(a, options, true);
}
