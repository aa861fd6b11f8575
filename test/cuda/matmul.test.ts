/**
 * CUDA GEMMs against the f64 reference of every case the CPU suite runs (bf16/f16/f32; f64 is
 * CPU-only), on the automatic path and on each forced path (KILN_MATMUL_PATH is read per call);
 * then the sm80 kernel's beta accumulation and, on Hopper, the sm90 kernel's epilogues, beta,
 * f32 output, batches and tile tails, each checked to run on the path it targets.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { info, ops, zeros } from '../../lib/index.js';
import { binding } from '../../lib/native.js';
import { recordMatmulCalls } from '../../lib/ops/matmul.js';
import { type Case, checkCase, label, matmulCases, sm80BetaCases, sm90Cases } from '../matmul_cases.js';
import { cudaTest, hasCuda } from '../helpers.js';

const test = suite('cuda matmul');
const cases = matmulCases().filter((c) => c.dtype !== 'f64');

async function withPath<T>(path: string, fn: () => Promise<T>): Promise<T> {
  const saved = process.env.KILN_MATMUL_PATH;
  if (path === 'auto') delete process.env.KILN_MATMUL_PATH;
  else process.env.KILN_MATMUL_PATH = path;
  try {
    return await fn();
  } finally {
    if (saved === undefined) delete process.env.KILN_MATMUL_PATH;
    else process.env.KILN_MATMUL_PATH = saved;
  }
}

/** The configuration the dispatcher runs c with on cuda:0 now (operands as checkCase makes them). */
function configFor(c: Case): string {
  const batch = c.batch ?? 1;
  const nInner = c.epilogue === 'swiglu' ? 2 * c.N : c.N;
  const aShape = c.transA ? [c.K, c.M] : [c.M, c.K];
  const bShape = c.transB ? [nInner, c.K] : [c.K, nInner];
  const batched = c.batch !== undefined;
  const outShape = batched ? [batch, c.M, c.N] : [c.M, c.N];
  const outDtype = c.outDtype ?? c.dtype;
  using a = zeros(batched ? [batch, ...aShape] : aShape, { device: 'cuda:0', dtype: c.dtype });
  using b = zeros(batched && !c.sharedB ? [batch, ...bShape] : bShape, { device: 'cuda:0', dtype: c.dtype });
  using out = zeros(outShape, { device: 'cuda:0', dtype: outDtype });
  using residual = c.epilogue === 'residual' ? zeros(outShape, { device: 'cuda:0', dtype: outDtype }) : null;
  const { calls } = recordMatmulCalls(() =>
    ops.matmul(a, b, { transA: c.transA, transB: c.transB, alpha: c.alpha, beta: c.beta, out, epilogue: c.epilogue, residual: residual ?? undefined }));
  const { defaultConfig } = binding().matmulCandidates(out.handle, a.handle, b.handle, residual?.handle ?? null, calls[0].params);
  return binding().matmulConfigNames()[defaultConfig];
}

/** Checks c on cuda:0 against the f64 reference; returns the configuration it ran with. */
async function checkOnPath(c: Case, seed: number): Promise<string> {
  try {
    await checkCase(c, 'cuda:0', seed);
  } catch (error) {
    throw new Error(`${label(c)}: ${(error as Error).message}`);
  }
  return configFor(c);
}

for (const path of ['auto', 'sm80', 'sm90', 'simt']) {
  cudaTest(test, `every layout, dtype, epilogue and odd size on path ${path}`, () =>
    withPath(path, async () => {
      for (const [i, c] of cases.entries()) {
        try {
          await checkCase(c, 'cuda:0', 900 + i);
        } catch (error) {
          throw new Error(`${label(c)} on path ${path}: ${(error as Error).message}`);
        }
      }
    }));
}

cudaTest(test, 'sm80 tensor-core kernel: beta accumulation (f32 and half outputs)', () =>
  withPath('sm80', async () => {
    for (const [i, c] of sm80BetaCases().entries()) {
      const config = await checkOnPath(c, 700 + i);
      assert.ok(config.startsWith('sm80'), `${label(c)} ran on ${config}, not the sm80 kernel`);
    }
  }));

const hopper = hasCuda && info().devices[0]?.computeCapability === '9.0';
if (hopper) {
  cudaTest(test, 'sm90 kernel (KILN_MATMUL_PATH=sm90): epilogues, beta, f32 output, batches, tile tails, both tile configs', () =>
    withPath('sm90', async () => {
      const used = new Set<string>();
      for (const [i, c] of sm90Cases().entries()) {
        const config = await checkOnPath(c, 800 + i);
        assert.ok(config.startsWith('sm90'), `${label(c)} ran on ${config}, not the sm90 kernel (is the build's sm_90a code loaded?)`);
        used.add(config);
      }
      assert.is(used.size, 2, `both sm90 tile configurations ran (${[...used].join(', ')})`);
    }));
} else {
  test.skip('sm90 kernel (KILN_MATMUL_PATH=sm90): needs a Hopper (sm_90) GPU');
}

test.run();
