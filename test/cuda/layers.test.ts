/** CUDA model layers against the CPU on fresh random data (skipped without a GPU). */
import { suite } from 'uvu';
import { type DType, ops, tensor, zeros } from '../../lib/index.js';
import { RTOL, assertClose, cudaTest, seededValues } from '../helpers.js';

const test = suite('cuda model layers');

for (const dtype of ['f32', 'bf16', 'f16'] as DType[]) {
  cudaTest(test, `embedding, rmsnorm, swiglu and cross-entropy match the CPU (${dtype})`, async () => {
    const tol = dtype === 'f32' ? 1e-5 : RTOL[dtype] * 2;
    for (const [N, D, V, F] of [[64, 2048, 50304, 5632], [37, 203, 1037, 77]]) {
      const make = (n: number, seed: number, shape: number[]) => tensor(seededValues(n, seed), { shape }).cast(dtype);
      const ids = tensor(Int32Array.from({ length: N }, (_, i) => (i * 7919) % V));
      const table = make(V * D, 1, [V, D]);
      assertClose(await ops.embedding(table.to('cuda'), ids.to('cuda')).toArray(), await ops.embedding(table, ids).toArray(), 0, 0, 'embedding');
      const dtableCpu = zeros([V, D]);
      const dtableGpu = zeros([V, D], { device: 'cuda' });
      const dout = make(N * D, 2, [N, D]);
      ops.embeddingBackward(dtableCpu, ids, dout);
      ops.embeddingBackward(dtableGpu, ids.to('cuda'), dout.to('cuda'));
      assertClose(await dtableGpu.toArray(), await dtableCpu.toArray(), 1e-6, 1e-6, 'embedding backward');

      const x = make(N * D, 3, [N, D]);
      const w = make(D, 4, [D]);
      const cpu = ops.rmsnorm(x, w);
      const gpu = ops.rmsnorm(x.to('cuda'), w.to('cuda'));
      assertClose(await gpu.y.toArray(), await cpu.y.toArray(), tol, 1e-3, 'rmsnorm');
      const dy = make(N * D, 5, [N, D]);
      const dwCpu = zeros([D]);
      const dwGpu = zeros([D], { device: 'cuda' });
      const dxCpu = ops.rmsnormBackward(dy, x, w, cpu.rstd, { dweight: dwCpu, dresidual: dy });
      const dxGpu = ops.rmsnormBackward(dy.to('cuda'), x.to('cuda'), w.to('cuda'), gpu.rstd, { dweight: dwGpu, dresidual: dy.to('cuda') });
      assertClose(await dxGpu.toArray(), await dxCpu.toArray(), tol * 4, 2e-3, 'rmsnorm backward');
      assertClose(await dwGpu.toArray(), await dwCpu.toArray(), 1e-4, 1e-3, 'rmsnorm dweight');

      const gu = make(N * 2 * F, 6, [N, 2 * F]);
      assertClose(await ops.swiglu(gu.to('cuda')).toArray(), await ops.swiglu(gu).toArray(), tol, 1e-3, 'swiglu');
      const ds = make(N * F, 7, [N, F]);
      assertClose(await ops.swigluBackward(gu.to('cuda'), ds.to('cuda')).toArray(), await ops.swigluBackward(gu, ds).toArray(), tol * 2, 1e-3, 'swiglu backward');

      const logits = make(N * V, 8, [N, V]);
      const targets = tensor(Int32Array.from({ length: N }, (_, i) => (i === 3 ? -1 : (i * 31) % V)));
      const c = ops.crossEntropy(logits, targets, { gradScale: 1 / N });
      const g = ops.crossEntropy(logits.to('cuda'), targets.to('cuda'), { gradScale: 1 / N });
      assertClose(await g.loss.toArray(), await c.loss.toArray(), 1e-4, 1e-4, 'cross-entropy loss');
      assertClose(await g.dlogits!.toArray(), await c.dlogits!.toArray(), tol, 1e-7, 'dlogits');
    }
  });
}

test.run();
