/** Shared matmul test machinery: an f64 reference in JS with a per-element error bound. */
import { type DType, type Device, type Tensor, full, ops, tensor } from '../lib/index.js';
import { RTOL, assertClose, seededValues } from './helpers.js';

export interface Case {
  M: number;
  N: number;
  K: number;
  batch?: number;
  transA?: boolean;
  transB?: boolean;
  alpha?: number;
  beta?: number;
  epilogue?: 'none' | 'residual' | 'swiglu';
  dtype: DType;
  outDtype?: DType;
  /** b shared by all batches (2-D weights) */
  sharedB?: boolean;
}

export function label(c: Case): string {
  return `${c.dtype}->${c.outDtype ?? c.dtype} M${c.M} N${c.N} K${c.K} b${c.batch ?? 1}${c.transA ? ' tA' : ''}${c.transB ? ' tB' : ''}${c.alpha !== undefined ? ` α${c.alpha}` : ''}${c.beta ? ` β${c.beta}` : ''}${c.epilogue && c.epilogue !== 'none' ? ` ${c.epilogue}` : ''}${c.sharedB ? ' sharedB' : ''}`;
}

const silu = (x: number) => x / (1 + Math.exp(-x));

/** Runs one case on `device` and checks it against an f64 reference computed here. */
export async function checkCase(c: Case, device: Device, seed: number, reference = false): Promise<void> {
  const batch = c.batch ?? 1;
  const nInner = c.epilogue === 'swiglu' ? 2 * c.N : c.N;
  const aShape = c.transA ? [c.K, c.M] : [c.M, c.K];
  const bShape = c.transB ? [nInner, c.K] : [c.K, nInner];
  const batched = batch > 1 || c.batch !== undefined;
  const aFull = batched ? [batch, ...aShape] : aShape;
  const bFull = batched && !c.sharedB ? [batch, ...bShape] : bShape;
  const outDtype = c.outDtype ?? c.dtype;
  const outShape = batched ? [batch, c.M, c.N] : [c.M, c.N];
  const aCount = aFull.reduce((p, q) => p * q, 1);
  const bCount = bFull.reduce((p, q) => p * q, 1);
  const oCount = outShape.reduce((p, q) => p * q, 1);

  // inputs rounded to the compute dtype once, on the CPU, so both sides see the same values
  const aHost = await tensor(seededValues(aCount, seed, 1), { dtype: c.dtype === 'f64' ? 'f64' : c.dtype }).toArray();
  const bHost = await tensor(seededValues(bCount, seed + 1, 1), { dtype: c.dtype === 'f64' ? 'f64' : c.dtype }).toArray();
  const prior = c.beta ? await tensor(seededValues(oCount, seed + 2, 1), { dtype: outDtype }).toArray() : undefined;
  const resid = c.epilogue === 'residual' ? await tensor(seededValues(oCount, seed + 3, 1), { dtype: outDtype }).toArray() : undefined;

  const upload = (values: ArrayLike<number>, shape: number[], dtype: DType): Tensor =>
    tensor(Float64Array.from(values), { shape, dtype: dtype === 'f64' ? 'f64' : 'f32' }).to(device, dtype);
  const a = upload(aHost, aFull, c.dtype);
  const b = upload(bHost, bFull, c.dtype);
  let out: Tensor | undefined;
  if (prior) out = upload(prior, outShape, outDtype);
  else out = full(outShape, NaN, { dtype: outDtype === 'i32' ? 'f32' : outDtype }).to(device); // poisoned: must be overwritten
  const residual = resid ? upload(resid, outShape, outDtype) : undefined;

  ops.matmul(a, b, {
    transA: c.transA, transB: c.transB, alpha: c.alpha, beta: c.beta, out, epilogue: c.epilogue,
    residual, reference: reference || undefined,
  });
  const got = await out.toArray();

  const expected = new Float64Array(oCount);
  const bound = new Float64Array(oCount);
  const alpha = c.alpha ?? 1;
  const accEps = c.dtype === 'f64' ? 2 ** -52 : 2 ** -23;
  const at = (z: number, m: number, k: number) => aHost[(batched ? z * aShape[0] * aShape[1] : 0) + (c.transA ? k * c.M + m : m * c.K + k)];
  const bStride = batched && !c.sharedB ? bShape[0] * bShape[1] : 0;
  const bt = (z: number, k: number, n: number) => bHost[z * bStride + (c.transB ? n * c.K + k : k * nInner + n)];
  for (let z = 0; z < batch; z++) {
    for (let m = 0; m < c.M; m++) {
      for (let n = 0; n < c.N; n++) {
        let acc = 0;
        let mag = 0;
        let up = 0;
        let upMag = 0;
        for (let k = 0; k < c.K; k++) {
          const p = at(z, m, k) * bt(z, k, n);
          acc += p;
          mag += Math.abs(p);
          if (c.epilogue === 'swiglu') {
            const q = at(z, m, k) * bt(z, k, n + c.N);
            up += q;
            upMag += Math.abs(q);
          }
        }
        const i = z * c.M * c.N + m * c.N + n;
        let value = alpha * acc;
        let errorBound = Math.abs(alpha) * mag * accEps * (4 + Math.sqrt(c.K));
        if (prior) {
          value += (c.beta ?? 0) * prior[i];
          errorBound += Math.abs((c.beta ?? 0) * prior[i]) * accEps * 2;
        }
        if (resid) value += resid[i];
        if (c.epilogue === 'swiglu') {
          const gate = value;
          const u = alpha * up;
          const g = silu(gate);
          value = g * u;
          // d(silu)/dx <= 1.1, plus the f32 evaluation of exp and the product
          errorBound = 1.1 * errorBound * Math.abs(u) + Math.abs(g) * Math.abs(alpha) * upMag * accEps * (4 + Math.sqrt(c.K)) + Math.abs(value) * 8 * accEps;
        }
        expected[i] = value;
        bound[i] = errorBound + RTOL[outDtype] * Math.abs(value) + 1e-30;
      }
    }
  }
  let worst = -1;
  let worstRatio = 0;
  for (let i = 0; i < oCount; i++) {
    const ratio = Math.abs(got[i] - expected[i]) / bound[i];
    if (!(ratio <= 1)) {
      if (!(ratio <= worstRatio)) {
        worstRatio = ratio;
        worst = i;
      }
    }
  }
  if (worst >= 0) {
    assertClose([got[worst]], [expected[worst]], 0, bound[worst], `${label(c)} on ${device}${reference ? ' (reference)' : ''}: element ${worst} is ${worstRatio.toFixed(2)}x its error bound`);
  }
  for (const t of [a, b, out, residual]) t?.dispose();
}

/**
 * beta accumulation with operands the sm80 tensor-core path takes (16-byte aligned, lda and ldb
 * multiples of 8): the weight gradient dW += dyᵀ·x into f32, a scaled accumulation into f32, and
 * one into a half output. The odd-sized beta cases above fall back to the SIMT kernel.
 */
export function sm80BetaCases(): Case[] {
  return [
    { M: 64, N: 48, K: 128, dtype: 'bf16', outDtype: 'f32', transA: true, beta: 1 },
    { M: 72, N: 40, K: 96, dtype: 'f16', outDtype: 'f32', transB: true, alpha: 0.5, beta: -0.25 },
    { M: 40, N: 56, K: 64, dtype: 'bf16', beta: 0.5 },
    { M: 24, N: 136, K: 200, dtype: 'f16', outDtype: 'f32', beta: 1 },
  ];
}

/**
 * Calls the sm90 (wgmma + TMA) kernel takes: "TN" (A row-major, B stored N x K), K and the
 * leading dims multiples of 8, every epilogue, beta accumulation, f32 output, batches with
 * strides, N and M that end inside a tile (BN 128/256, swiglu's BN_OUT 64/128, BM 128), and one
 * call with enough tiles (>= 132) to pick the 128x256 configuration on an H100/H200.
 */
export function sm90Cases(): Case[] {
  return [
    { M: 300, N: 200, K: 256, dtype: 'bf16', transB: true, epilogue: 'swiglu' },
    { M: 129, N: 72, K: 64, dtype: 'f16', transB: true, epilogue: 'swiglu' },
    { M: 129, N: 300, K: 192, dtype: 'bf16', transB: true, epilogue: 'residual' },
    { M: 70, N: 264, K: 128, dtype: 'bf16', outDtype: 'f32', transB: true, epilogue: 'residual' },
    { M: 128, N: 520, K: 128, dtype: 'bf16', outDtype: 'f32', transB: true, beta: 1 },
    { M: 100, N: 136, K: 320, dtype: 'f16', outDtype: 'f32', transB: true, alpha: 0.5, beta: -0.25 },
    { M: 77, N: 130, K: 64, dtype: 'bf16', transB: true, beta: 0.5 },
    { M: 70, N: 136, K: 64, dtype: 'f16', outDtype: 'f32', transB: true },
    { M: 65, N: 264, K: 320, batch: 3, dtype: 'bf16', transB: true },
    { M: 33, N: 40, K: 72, batch: 2, dtype: 'bf16', transB: true, epilogue: 'swiglu' },
    { M: 512, N: 1024, K: 64, batch: 34, dtype: 'bf16', transB: true },
  ];
}

/** Every layout, dtype, epilogue and odd size the dispatcher must handle, sized for a 2-core CPU. */
export function matmulCases(): Case[] {
  const cases: Case[] = [];
  const sizes: [number, number, number][] = [
    [1, 1, 1], [7, 33, 1], [1, 7, 33], [33, 1, 7], [33, 33, 33], [17, 100, 64], [100, 37, 257], [64, 64, 1000], [4097, 7, 33], [33, 4097, 7],
  ];
  for (const dtype of ['f32', 'bf16', 'f16', 'f64'] as DType[]) {
    for (const [M, N, K] of sizes) {
      for (const [transA, transB] of [[false, false], [false, true], [true, false], [true, true]]) {
        cases.push({ M, N, K, dtype, transA, transB });
      }
    }
  }
  // bigger blocks that cross the fast path's cache-block boundaries
  cases.push({ M: 300, N: 520, K: 600, dtype: 'f32', transB: true });
  cases.push({ M: 257, N: 255, K: 513, dtype: 'bf16', transA: true });
  // output dtypes of half inputs, alpha, beta accumulation into f32 (weight gradient)
  cases.push({ M: 65, N: 47, K: 129, dtype: 'bf16', outDtype: 'f32', transA: true, beta: 1 });
  cases.push({ M: 65, N: 47, K: 129, dtype: 'f16', outDtype: 'f32', transB: true, alpha: 0.5, beta: -0.25 });
  cases.push({ M: 31, N: 9, K: 77, dtype: 'bf16', outDtype: 'f16' });
  cases.push({ M: 31, N: 9, K: 77, dtype: 'f16', outDtype: 'bf16', alpha: 2 });
  cases.push({ M: 40, N: 60, K: 50, dtype: 'f32', alpha: -1.5, beta: 0.5 });
  cases.push(...sm80BetaCases());
  cases.push({ M: 40, N: 60, K: 50, dtype: 'f64', transA: true, beta: 1 });
  // epilogues
  for (const dtype of ['f32', 'bf16', 'f16'] as DType[]) {
    cases.push({ M: 37, N: 45, K: 70, dtype, transB: true, epilogue: 'residual' });
    cases.push({ M: 37, N: 45, K: 70, dtype, transB: true, epilogue: 'swiglu' });
    cases.push({ M: 64, N: 32, K: 16, dtype, epilogue: 'swiglu' });
  }
  cases.push({ M: 30, N: 20, K: 40, dtype: 'bf16', outDtype: 'f32', transB: true, epilogue: 'residual' });
  // batches with strides, and weights shared by every batch
  cases.push({ M: 13, N: 17, K: 19, batch: 5, dtype: 'f32' });
  cases.push({ M: 13, N: 17, K: 19, batch: 3, dtype: 'bf16', transA: true, transB: true });
  cases.push({ M: 33, N: 20, K: 24, batch: 4, dtype: 'f32', transB: true, sharedB: true });
  cases.push({ M: 16, N: 8, K: 8, batch: 2, dtype: 'f16', transB: true, sharedB: true, epilogue: 'swiglu' });
  return cases;
}
