import type { DTypeCode } from '../binding.js';
import { describe, fail } from './errors.js';

/** Element types. f64 lives on the CPU only (reference checks). */
export type DType = 'f32' | 'f64' | 'bf16' | 'f16' | 'i32';

export const DTYPES: readonly DType[] = ['f32', 'f64', 'bf16', 'f16', 'i32'];

const CODES: Record<DType, DTypeCode> = { f32: 0, f64: 1, bf16: 2, f16: 3, i32: 4 };
const BYTES: Record<DType, number> = { f32: 4, f64: 8, bf16: 2, f16: 2, i32: 4 };

export function dtypeCode(dtype: DType): DTypeCode {
  return CODES[dtype];
}

export function dtypeFromCode(code: number): DType {
  const found = DTYPES[code];
  if (!found) fail('ERR_INTERNAL', `unknown dtype code ${code}`);
  return found;
}

export function dtypeBytes(dtype: DType): number {
  return BYTES[dtype];
}

export function isFloat(dtype: DType): boolean {
  return dtype !== 'i32';
}

export function parseDType(value: unknown, name = 'dtype'): DType {
  if (typeof value === 'string' && (DTYPES as readonly string[]).includes(value)) return value as DType;
  fail('ERR_DTYPE', `${name} must be one of ${DTYPES.join(', ')}, got ${describe(value)}`);
}

/** What toArray() returns for each dtype: half types widen to f32. */
export type ArrayFor<D extends DType> = D extends 'f64' ? Float64Array : D extends 'i32' ? Int32Array : Float32Array;

/** Decodes raw f16 bits (IEEE binary16) to a float. */
export function f16ToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 31) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}
