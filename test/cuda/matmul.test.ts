/**
 * CUDA GEMMs against the f64 reference of every case the CPU suite runs (bf16/f16/f32; f64 is
 * CPU-only), on the automatic path and on each forced path (KILN_MATMUL_PATH is read per call).
 */
import { suite } from 'uvu';
import { cudaTest } from '../helpers.js';
import { checkCase, label, matmulCases } from '../matmul_cases.js';

const test = suite('cuda matmul');
const cases = matmulCases().filter((c) => c.dtype !== 'f64');

for (const path of ['auto', 'sm80', 'sm90', 'simt']) {
  cudaTest(test, `every layout, dtype, epilogue and odd size on path ${path}`, async () => {
    const saved = process.env.KILN_MATMUL_PATH;
    if (path === 'auto') delete process.env.KILN_MATMUL_PATH;
    else process.env.KILN_MATMUL_PATH = path;
    try {
      for (const [i, c] of cases.entries()) {
        try {
          await checkCase(c, 'cuda:0', 900 + i);
        } catch (error) {
          throw new Error(`${label(c)} on path ${path}: ${(error as Error).message}`);
        }
      }
    } finally {
      if (saved === undefined) delete process.env.KILN_MATMUL_PATH;
      else process.env.KILN_MATMUL_PATH = saved;
    }
  });
}

test.run();
