/** CUDA runtime against the CPU reference: skipped without a GPU, failing with KILN_REQUIRE_GPU=1. */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { type DType, cudaDeviceCount, emptyCache, memoryStats, ops, rand, randn, synchronize, tensor, zeros } from '../../lib/index.js';
import { RTOL, assertClose, assertKilnError, cudaTest, seededValues } from '../helpers.js';

const test = suite('cuda runtime');

cudaTest(test, 'randn and rand are bit-identical on CPU and CUDA', async () => {
  for (const dtype of ['f32', 'bf16', 'f16'] as DType[]) {
    const n = 100_003;
    const cpu = await randn([n], { seed: 11, offset: 4, dtype }).toArray();
    const gpu = await randn([n], { seed: 11, offset: 4, dtype, device: 'cuda' }).toArray();
    let same = 0;
    for (let i = 0; i < n; i++) if (cpu[i] === gpu[i] || (Number.isNaN(cpu[i]) && Number.isNaN(gpu[i]))) same++;
    assert.is(same, n, `${dtype}: ${n - same} elements differ`);
    const ucpu = await rand([n], { seed: 5, dtype }).toArray();
    const ugpu = await rand([n], { seed: 5, dtype, device: 'cuda' }).toArray();
    assert.equal(ugpu, ucpu);
    // a non-zero mean / low: mean + std·z and low + (high - low)·u are rounded twice on both
    // devices (nvcc would fuse them into an FMA and the host would not)
    for (const [mean, std] of [[0.3, 1.7], [-2.5, 0.02], [1e-3, 3.1]]) {
      const c = await randn([n], { seed: 12, mean, std, dtype }).toArray();
      const g = await randn([n], { seed: 12, mean, std, dtype, device: 'cuda' }).toArray();
      assert.equal(g, c, `randn mean ${mean} std ${std} ${dtype}`);
    }
    for (const [low, high] of [[-0.7, 2.2], [5, 5.5]]) {
      const c = await rand([n], { seed: 13, low, high, dtype }).toArray();
      const g = await rand([n], { seed: 13, low, high, dtype, device: 'cuda' }).toArray();
      assert.equal(g, c, `rand [${low}, ${high}) ${dtype}`);
    }
  }
});

// Peer copies run on the destination's stream and are ordered with the source's stream by
// events both ways: the source block, freed and reused by the source device's next op right
// after the copy is issued, still arrives intact.
if (cudaDeviceCount() >= 2) {
  cudaTest(test, 'cross-device copies are ordered with the source device (2 GPUs)', async () => {
    const values = Float32Array.from(seededValues(4_000_000, 9));
    for (let round = 0; round < 5; round++) {
      let copy;
      {
        using src = tensor(values, { device: 'cuda:0' });
        ops.scale(src, 2, { out: src }); // pending work on the source stream that writes src
        copy = src.to('cuda:1');
      }
      // src's block is back in cuda:0's cache: overwrite whatever reuses it at once
      using clobber = zeros([values.length], { device: 'cuda:0' });
      ops.fill(clobber, -1);
      const got = await copy.toArray();
      for (let i = 0; i < values.length; i += 9973) assert.is(got[i], Math.fround(2 * values[i]), `round ${round} element ${i}`);
      copy.dispose();
    }
  });
}

cudaTest(test, 'uploads, downloads and device copies round-trip exactly', async () => {
  const values = Float32Array.from(seededValues(1_000_001, 4));
  const g = tensor(values, { device: 'cuda' });
  assert.is(g.device, 'cuda:0');
  assert.equal(await g.toArray(), values);
  assert.equal(await g.clone().toArray(), values);
  assert.equal(await g.to('cpu').toArray(), values);
  assert.equal(await tensor(values).to('cuda').toArray(), values);
  assert.equal(await g.slice(10, 20).toArray(), values.slice(10, 20));
  const i = tensor(new Int32Array([1, -2, 3]), { device: 'cuda' });
  assert.equal(Array.from(await i.toArray()), [1, -2, 3]);
});

cudaTest(test, 'elementwise ops, casts and reductions match the CPU', async () => {
  for (const dtype of ['f32', 'bf16', 'f16'] as DType[]) {
    const rows = 129;
    const cols = 4099;
    const a = seededValues(rows * cols, 7, 3);
    const b = seededValues(rows * cols, 8, 3);
    const ca = tensor(a, { dtype: 'f32', shape: [rows, cols] }).cast(dtype);
    const cb = tensor(b, { dtype: 'f32', shape: [rows, cols] }).cast(dtype);
    const ga = ca.to('cuda');
    const gb = cb.to('cuda');
    // add/mul/scale/cast round once from f32 on both backends: bit-identical
    assert.equal(await ops.add(ga, gb).toArray(), await ops.add(ca, cb).toArray(), `${dtype} add`);
    assert.equal(await ops.mul(ga, gb).toArray(), await ops.mul(ca, cb).toArray(), `${dtype} mul`);
    assert.equal(await ops.scale(ga, 0.7).toArray(), await ops.scale(ca, 0.7).toArray(), `${dtype} scale`);
    for (const to of ['f32', 'bf16', 'f16', 'i32'] as DType[]) {
      assert.equal(await ga.cast(to).toArray(), await ca.cast(to).toArray(), `${dtype} -> ${to}`);
    }
    // reductions: f32 tree on the GPU vs f64 on the CPU
    const tol = dtype === 'f32' ? 1e-5 : RTOL[dtype];
    assertClose(await ops.sum(ga, { dim: -1 }).toArray(), await ops.sum(ca, { dim: -1 }).toArray(), tol, 1e-3, `${dtype} row sums`);
    assertClose(await ops.mean(ga).toArray(), await ops.mean(ca).toArray(), tol, 1e-6, `${dtype} mean`);
  }
});

cudaTest(test, 'the caching allocator reuses blocks in a steady state and reports stats', async () => {
  await synchronize();
  for (let i = 0; i < 3; i++) {
    using a = zeros([1 << 20], { device: 'cuda' });
    using b = ops.add(a, a);
  }
  await synchronize();
  const warm = memoryStats('cuda');
  for (let i = 0; i < 50; i++) {
    using a = zeros([1 << 20], { device: 'cuda' });
    using b = ops.add(a, a);
  }
  await synchronize();
  const after = memoryStats('cuda');
  assert.is(after.deviceAllocations, warm.deviceAllocations, 'no cudaMalloc in the steady state');
  assert.ok(after.allocations >= warm.allocations + 100);
  assert.is(after.allocated, warm.allocated);
  assert.ok(after.reserved >= after.allocated);
  assert.ok(after.peakAllocated >= 8 << 20);
  emptyCache('cuda');
  assert.is(memoryStats('cuda').reserved, memoryStats('cuda').allocated);
});

cudaTest(test, 'running out of device memory is ERR_OOM and leaves the device usable', async () => {
  await assertKilnError(() => zeros([2 ** 46], { device: 'cuda' }), 'ERR_OOM');
  const t = tensor([1, 2, 3], { device: 'cuda' });
  assert.equal(Array.from(await ops.add(t, t).toArray()), [2, 4, 6]);
});

test.run();
