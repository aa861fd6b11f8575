/**
 * DiLoCo's outer-step kernels (native/ops/cuda/outer_step/) against the CPU ops on fresh random data
 * (skipped without a GPU): packing and residuals, the mean of gathered buffers, the outer
 * Nesterov step and merge. The kernels use the CPU's float operations (no FMA), so the results
 * must match bit for bit. Gated: without KILN_CUDA_DIST=1 the ops refuse CUDA tensors.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { packedBytes } from '../../lib/parallel/diloco.js';
import { dequantizeMean, outerNesterov, pseudoGradientQuantize } from '../../lib/ops/outer_step.js';
import { type Tensor, randn, tensor } from '../../lib/tensor.js';
import { assertKilnError, cudaTest } from '../helpers.js';

const test = suite('cuda DiLoCo outer-step ops');
const SIZES = [1, 127, 129, 3 * 128 + 37, 70_001, 1_000_003];
const values = async (t: Tensor) => Array.from((await t.toArray()) as Float32Array);

cudaTest(test, 'the CUDA outer-step ops are refused unless KILN_CUDA_DIST=1', async () => {
  const saved = process.env.KILN_CUDA_DIST;
  delete process.env.KILN_CUDA_DIST;
  try {
    const x = randn([5], { device: 'cuda' });
    await assertKilnError(() => pseudoGradientQuantize(randn([2], { device: 'cuda' }), null, x, randn([5], { device: 'cuda' }), 4), 'ERR_DEVICE');
  } finally {
    if (saved !== undefined) process.env.KILN_CUDA_DIST = saved;
  }
});

cudaTest(test, 'pseudoGradientQuantize on CUDA equals the CPU bit for bit (codes, scales, padding, residual)', async () => {
  process.env.KILN_CUDA_DIST = '1';
  for (const n of SIZES) {
    for (const bits of [8, 4, 2, 0]) {
      const cpu = { a: randn([n], { seed: n }), c: randn([n], { seed: n + 1 }), r: randn([n], { seed: n + 2, std: 0.01 }), p: tensor(new Float32Array(packedBytes(n, bits) / 4).fill(NaN)) };
      const gpu = { a: cpu.a.to('cuda'), c: cpu.c.to('cuda'), r: cpu.r.to('cuda'), p: cpu.p.to('cuda') };
      for (const s of [cpu, gpu]) pseudoGradientQuantize(s.p, bits ? s.r : null, s.a, s.c, bits);
      const bytes = async (t: Tensor) => Array.from(new Uint8Array(((await t.toArray()) as Float32Array).buffer));
      assert.equal(await bytes(gpu.p), await bytes(cpu.p), `n ${n}, ${bits}-bit packed`);
      assert.equal(await values(gpu.r), await values(cpu.r), `n ${n}, ${bits}-bit residual`);
    }
  }
});

cudaTest(test, 'dequantizeMean and outerNesterov on CUDA equal the CPU bit for bit', async () => {
  process.env.KILN_CUDA_DIST = '1';
  for (const n of SIZES) {
    for (const bits of [8, 4, 2, 0]) {
      const world = 3;
      const each = packedBytes(n, bits) / 4;
      const gathered = tensor(new Float32Array(each * world));
      for (let r = 0; r < world; r++) pseudoGradientQuantize(gathered.slice(r * each, (r + 1) * each), null, randn([n], { seed: r }), randn([n], { seed: 9 + r }), bits);
      const cpu = tensor(new Float32Array(n).fill(NaN));
      const gpu = cpu.to('cuda');
      dequantizeMean(cpu, gathered, world, bits);
      dequantizeMean(gpu, gathered.to('cuda'), world, bits);
      assert.equal(await values(gpu), await values(cpu), `n ${n}, ${bits}-bit mean`);
    }
    for (const mixAlpha of [undefined, 0.5]) {
      const host = [0, 1, 2, 3].map((k) => randn([n], { seed: 50 + k }));
      const dev = host.map((t) => t.to('cuda'));
      for (const [a, m, w, d] of [host, dev]) outerNesterov(a, m, w, d, { lr: 0.7, momentum: 0.9, nesterov: true, mixAlpha });
      for (let k = 0; k < 3; k++) assert.equal(await values(dev[k]), await values(host[k]), `n ${n}, tensor ${k}, mix ${mixAlpha}`);
    }
  }
});

test.run();
