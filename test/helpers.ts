/** Shared test helpers: tolerances, CUDA gating, and error assertions. */
import * as assert from 'uvu/assert';
import { KilnError, type KilnErrorCode, info } from '../lib/index.js';
import type { DType } from '../lib/dtype.js';

export const cudaDevices = info().devices.map((d) => d.device);
export const hasCuda = cudaDevices.length > 0;
export const requireGpu = process.env.KILN_REQUIRE_GPU === '1';

import type { Test } from 'uvu';
type Suite = Test;

/**
 * Registers a CUDA test: it runs when a CUDA device is present, is skipped when none is, and
 * fails when none is but KILN_REQUIRE_GPU=1 (the GPU check must not pass by skipping).
 */
export function cudaTest(suite: Suite, name: string, fn: () => void | Promise<void>): void {
  if (hasCuda) {
    suite(name, fn);
  } else if (requireGpu) {
    suite(name, () => {
      assert.unreachable(`KILN_REQUIRE_GPU=1 but no CUDA device is usable (${info().cudaStatus})`);
    });
  } else {
    suite.skip(name);
  }
}

/** Relative tolerance of one rounding to each dtype. */
export const RTOL: Record<DType, number> = { f64: 1e-12, f32: 2e-6, bf16: 8e-3, f16: 1e-3, i32: 0 };

/**
 * |actual - expected| <= atol + rtol * |expected| elementwise; on failure, reports the max
 * error and the first bad elements (the project's tolerance rule for every kernel test).
 */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  rtol: number,
  atol = 0,
  label = 'values',
): void {
  assert.is(actual.length, expected.length, `${label}: length`);
  let maxError = 0;
  const bad: string[] = [];
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i];
    const e = expected[i];
    const error = Math.abs(a - e);
    if (Number.isNaN(a) !== Number.isNaN(e)) {
      bad.push(`[${i}] ${a} vs ${e}`);
      continue;
    }
    if (Number.isNaN(a)) continue;
    if (error > maxError) maxError = error;
    if (!(error <= atol + rtol * Math.abs(e)) && !(a === e)) {
      if (bad.length < 5) bad.push(`[${i}] ${a} vs ${e}`);
      else if (bad.length === 5) bad.push('...');
    }
  }
  if (bad.length) assert.unreachable(`${label}: max abs error ${maxError} (rtol ${rtol}, atol ${atol}); first bad: ${bad.join(', ')}`);
}

/** Asserts fn throws (or rejects with) a KilnError with this code. */
export async function assertKilnError(fn: () => unknown, code: KilnErrorCode, messagePart?: string): Promise<void> {
  let error: unknown;
  try {
    await fn();
  } catch (e) {
    error = e;
  }
  if (!(error instanceof KilnError)) {
    assert.unreachable(`expected KilnError ${code}, got ${error === undefined ? 'no error' : String(error)}`);
    return;
  }
  assert.is(error.code, code, `error code (message: ${error.message})`);
  if (messagePart) assert.ok(error.message.includes(messagePart), `message "${error.message}" mentions "${messagePart}"`);
}

/** Deterministic pseudo-random numbers for building inputs in JS (mulberry32). */
export function seededValues(n: number, seed: number, scale = 1): Float64Array {
  let s = seed >>> 0;
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = ((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * scale;
  }
  return out;
}
