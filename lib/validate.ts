/** Argument checks shared by lib/: each failure is a KilnError with the right code. */
import { describe, fail } from './errors.js';
import type { Tensor } from './tensor.js';

/** Largest element count kiln accepts for one tensor (2^48): beyond it, sizes are bugs. */
export const MAX_NUMEL = 2 ** 48;

export function checkShape(shape: unknown, name = 'shape'): number[] {
  if (!Array.isArray(shape)) fail('ERR_ARG', `${name} must be an array of non-negative integers, got ${describe(shape)}`);
  let numel = 1;
  const out: number[] = [];
  for (const [i, dim] of shape.entries()) {
    if (typeof dim !== 'number' || !Number.isInteger(dim) || dim < 0) {
      fail('ERR_SHAPE', `${name}[${i}] must be a non-negative integer, got ${describe(dim)}`);
    }
    numel *= dim;
    out.push(dim);
  }
  if (numel > MAX_NUMEL) fail('ERR_OOM', `${name} [${out.join(', ')}] has ${numel} elements, more than kiln allows (2^48)`);
  return out;
}

export function numelOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function checkFiniteNumber(value: unknown, name: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) fail('ERR_ARG', `${name} must be a finite number, got ${describe(value)}`);
  return value;
}

export function checkInteger(value: unknown, name: string, min = -Infinity, max = Infinity): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    fail('ERR_ARG', `${name} must be an integer in [${min}, ${max}], got ${describe(value)}`);
  }
  return value;
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

export function checkSameShape(a: Tensor, b: Tensor, aName: string, bName: string): void {
  if (!sameShape(a.shape, b.shape)) {
    fail('ERR_SHAPE', `${aName} has shape [${a.shape.join(', ')}] but ${bName} has shape [${b.shape.join(', ')}]`);
  }
}

export function checkSameDevice(a: Tensor, b: Tensor, aName: string, bName: string): void {
  if (a.device !== b.device) fail('ERR_DEVICE', `${aName} is on ${a.device} but ${bName} is on ${b.device}`);
}

export function checkSameDType(a: Tensor, b: Tensor, aName: string, bName: string): void {
  if (a.dtype !== b.dtype) fail('ERR_DTYPE', `${aName} is ${a.dtype} but ${bName} is ${b.dtype}`);
}

export function checkOptions(options: unknown, allowed: readonly string[], name: string): Record<string, unknown> {
  if (options === undefined) return {};
  if (options === null || typeof options !== 'object' || Array.isArray(options)) fail('ERR_ARG', `${name} must be an object`);
  for (const key of Object.keys(options)) {
    if (!allowed.includes(key)) fail('ERR_ARG', `${name} has an unknown option '${key}' (known: ${allowed.join(', ')})`);
  }
  return options as Record<string, unknown>;
}

