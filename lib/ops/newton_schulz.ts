/**
 * ops.newtonSchulz: the quintic Newton–Schulz orthogonalization Muon applies to each update
 * (Jordan et al.'s Muon). X = G / (‖G‖_F·normScale + eps), tall matrices transposed; then per step
 * A = X·Xᵀ, B = b·A + c·A·A, X = a·X + B·X. The result's singular values land roughly in
 * (0.5, 1.5) by design (classic coefficients), not exactly 1.
 */
import type { DType } from '../dtype.js';
import { dtypeCode } from '../dtype.js';
import { describe, fail } from '../errors.js';
import { binding } from '../native.js';
import { Tensor, empty, checkTensor } from '../tensor.js';
import { checkOptions, sameShape } from '../validate.js';

export const CLASSIC: readonly [number, number, number] = [3.4445, -4.775, 2.0315];
export const POLAR_EXPRESS: readonly (readonly [number, number, number])[] = [
  [8.156554524902461, -22.48329292557795, 15.878769915207462],
  [4.042929935166739, -2.808917465908714, 0.5000178451051316],
  [3.8916678022926607, -2.772484153217685, 0.5060648178503393],
  [3.285753657755655, -2.3681294933425376, 0.46449024233003106],
  [2.3465413258596377, -1.7097828382687081, 0.42323551169305323],
];

export interface NewtonSchulzOptions {
  /** 'classic' (default), 'polar-express', or explicit per-step [a, b, c] triples */
  coefficients?: 'classic' | 'polar-express' | (readonly [number, number, number])[];
  /** steps (default 5; polar-express and explicit lists set it) */
  steps?: number;
  /** default: classic 1 / 1e-7, polar-express 1.02 / 1e-6 */
  normScale?: number;
  eps?: number;
  /** 'bf16' (default, as the reference implementation) rounds X each step; 'f32' does not; 'f64' is the oracle */
  compute?: Extract<DType, 'bf16' | 'f32' | 'f64'>;
  /** plain double loops (the oracle) */
  reference?: boolean;
  /** write the result here (g's shape; f32, or bf16 on CUDA) instead of a new f32 tensor */
  out?: Tensor;
}

export function resolveCoefficients(options: NewtonSchulzOptions = {}): { triples: number[][]; normScale: number; eps: number } {
  const c = options.coefficients ?? 'classic';
  let triples: number[][];
  let normScale = 1;
  let eps = 1e-7;
  if (c === 'classic') {
    const steps = options.steps ?? 5;
    if (!Number.isInteger(steps) || steps < 0 || steps > 100) fail('ERR_ARG', 'steps must be an integer in [0, 100]');
    triples = Array.from({ length: steps }, () => [...CLASSIC]);
  } else if (c === 'polar-express') {
    triples = POLAR_EXPRESS.map((t) => [...t]);
    normScale = 1.02;
    eps = 1e-6;
  } else if (Array.isArray(c)) {
    triples = c.map((t) => {
      if (!Array.isArray(t) || t.length !== 3 || !t.every((x) => typeof x === 'number' && Number.isFinite(x))) fail('ERR_ARG', 'coefficients must be [a, b, c] triples of finite numbers');
      return [...t];
    });
  } else {
    fail('ERR_ARG', `coefficients must be 'classic', 'polar-express' or a list of triples, got ${describe(c)}`);
  }
  if (options.steps !== undefined && options.steps !== triples.length) fail('ERR_ARG', `steps (${options.steps}) disagrees with the ${triples.length} coefficient triples`);
  return { triples, normScale: options.normScale ?? normScale, eps: options.eps ?? eps };
}

/**
 * Orthogonalizes g: (rows, cols) or (batch, rows, cols). CPU: f32 in and out, compute f64, f32
 * or bf16. CUDA: f32, bf16 or f16 in, f32 or bf16 out, compute bf16.
 */
export function newtonSchulz(g: Tensor, options?: NewtonSchulzOptions): Tensor {
  const x = checkTensor(g, 'g');
  const o = checkOptions(options, ['coefficients', 'steps', 'normScale', 'eps', 'compute', 'reference', 'out'], 'newtonSchulz options') as NewtonSchulzOptions;
  const cuda = x.device !== 'cpu';
  if (cuda ? !['f32', 'bf16', 'f16'].includes(x.dtype) : x.dtype !== 'f32') fail('ERR_DTYPE', `newtonSchulz takes ${cuda ? 'f32, bf16 or f16' : 'f32'} updates on ${x.device}, got ${x.dtype}`);
  if (x.ndim !== 2 && x.ndim !== 3) fail('ERR_SHAPE', 'newtonSchulz takes (rows, cols) or (batch, rows, cols)');
  const [batch, rows, cols] = x.ndim === 2 ? [1, ...x.shape] : x.shape;
  const { triples, normScale, eps } = resolveCoefficients(o);
  if (typeof normScale !== 'number' || typeof eps !== 'number' || !(normScale > 0) || !(eps >= 0) || !Number.isFinite(normScale) || !Number.isFinite(eps)) fail('ERR_ARG', 'normScale must be > 0 and eps >= 0');
  const compute = o.compute ?? 'bf16';
  if (!['bf16', 'f32', 'f64'].includes(compute)) fail('ERR_DTYPE', 'compute must be bf16, f32 or f64');
  if (cuda && compute !== 'bf16') fail('ERR_DTYPE', `newtonSchulz computes in bf16 on CUDA, not ${compute}`);
  let out: Tensor;
  if (o.out === undefined) {
    out = empty([...x.shape], { device: x.device });
  } else {
    out = checkTensor(o.out, 'out');
    if (out.device !== x.device) fail('ERR_DEVICE', `out is on ${out.device}, g on ${x.device}`);
    if (!sameShape(out.shape, x.shape)) fail('ERR_SHAPE', `out has shape [${out.shape}], g [${x.shape}]`);
    if (cuda ? !['f32', 'bf16'].includes(out.dtype) : out.dtype !== 'f32') fail('ERR_DTYPE', `newtonSchulz writes ${cuda ? 'f32 or bf16' : 'f32'} on ${x.device}, not ${out.dtype}`);
    if (out.handle === x.handle) fail('ERR_ARG', 'out must not be g');
  }
  binding().newtonSchulz(out.handle, x.handle, {
    batch, rows, cols, steps: triples.length, coefficients: triples.flat(), normScale, eps, compute: dtypeCode(compute), reference: o.reference ?? false,
  });
  return out;
}

/** FLOPs of newtonSchulz on `batch` matrices, with or without the symmetric-product saving. */
export function newtonSchulzFlops(batch: number, rows: number, cols: number, steps = 5, symmetric = false): number {
  return binding().newtonSchulzFlops(batch, rows, cols, steps, symmetric);
}
