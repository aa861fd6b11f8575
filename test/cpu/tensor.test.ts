import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Tensor, empty, full, manualSeed, memoryStats, ones, rand, randn, tensor, zeros } from '../../lib/index.js';
import { assertClose, seededValues } from '../helpers.js';

const test = suite('tensor (cpu)');

test('creates from nested arrays and typed arrays with the right shape and dtype', async () => {
  const a = tensor([[1, 2, 3], [4, 5, 6]]);
  assert.equal(a.shape, [2, 3]);
  assert.is(a.dtype, 'f32');
  assert.is(a.device, 'cpu');
  assert.is(a.numel, 6);
  assert.equal(Array.from(await a.toArray()), [1, 2, 3, 4, 5, 6]);
  const b = tensor(new Float64Array([0.1, 0.2]));
  assert.is(b.dtype, 'f64');
  assert.equal(Array.from(await b.toArray()), [0.1, 0.2]);
  const c = tensor(new Int32Array([7, -8, 9, 10]), { shape: [2, 2] });
  assert.is(c.dtype, 'i32');
  assert.equal(c.shape, [2, 2]);
  assert.equal(Array.from(await c.toArray()), [7, -8, 9, 10]);
  const d = tensor([1, 2, 3], { dtype: 'i32' });
  assert.equal(Array.from(await d.toArray()), [1, 2, 3]);
  const scalar = tensor(new Float32Array([5]), { shape: [] });
  assert.equal(scalar.shape, []);
  assert.equal(Array.from(await scalar.toArray()), [5]);
});

test('rounds to bf16 and f16 with round-to-nearest-even, including specials', async () => {
  // 1 + 2^-8 is halfway between bf16 neighbours 1 and 1 + 2^-7: ties to even (1).
  // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties to even (1 + 2^-6).
  const values = [1 + 2 ** -8, 1 + 3 * 2 ** -8, -2.5, 65504, 70000, 1e-8, Infinity, -Infinity];
  const bf = await tensor(values, { dtype: 'bf16' }).toArray();
  assert.equal(Array.from(bf.slice(0, 3)), [1, 1 + 2 ** -6, -2.5]);
  assert.is(bf[6], Infinity);
  assert.is(bf[7], -Infinity);
  const h = await tensor(values, { dtype: 'f16' }).toArray();
  assert.is(h[0], 1 + 2 ** -8); // f16 keeps 10 mantissa bits: exact
  assert.is(h[2], -2.5);
  assert.is(h[3], 65504);
  assert.is(h[4], Infinity); // overflow
  assert.ok(Math.abs(h[5] - 1e-8) < 3e-8); // subnormal range
  const nan = await tensor([NaN], { dtype: 'bf16' }).toArray();
  assert.ok(Number.isNaN(nan[0]));
});

test('zeros, ones, full and empty', async () => {
  assert.equal(Array.from(await zeros([3]).toArray()), [0, 0, 0]);
  assert.equal(Array.from(await ones([2], { dtype: 'bf16' }).toArray()), [1, 1]);
  assert.equal(Array.from(await full([2, 2], -1.5, { dtype: 'f64' }).toArray()), [-1.5, -1.5, -1.5, -1.5]);
  assert.equal(Array.from(await full([2], 3, { dtype: 'i32' }).toArray()), [3, 3]);
  const e = empty([0, 5]);
  assert.is(e.numel, 0);
  assert.equal(Array.from(await e.toArray()), []);
});

test('reshape and slice are views over the same memory', async () => {
  const base = tensor(Float32Array.from({ length: 12 }, (_, i) => i), { shape: [4, 3] });
  const r = base.reshape(2, -1);
  assert.equal(r.shape, [2, 6]);
  assert.equal(base.reshape([3, 4]).shape, [3, 4]);
  const s = base.slice(1, 3);
  assert.equal(s.shape, [2, 3]);
  assert.equal(Array.from(await s.toArray()), [3, 4, 5, 6, 7, 8]);
  assert.equal(Array.from(await base.slice(3).toArray()), [9, 10, 11]);
  assert.is(base.slice(2, 2).numel, 0);
  // a view keeps memory alive after the base handle is disposed
  base.dispose();
  assert.equal(Array.from(await s.toArray()), [3, 4, 5, 6, 7, 8]);
});

test('clone, cast and to() copy across dtypes', async () => {
  const x = tensor([1.5, -2.25, 3.999, 100.5]);
  const c = x.clone();
  assert.equal(Array.from(await c.toArray()), [1.5, -2.25, 3.999000072479248, 100.5]);
  assert.equal(Array.from(await x.cast('i32').toArray()), [2, -2, 4, 100]); // nearest even
  assert.equal(Array.from(await x.cast('f64').toArray()), [1.5, -2.25, Math.fround(3.999), 100.5]);
  const y = x.to('cpu', 'bf16');
  assert.is(y.dtype, 'bf16');
  assert.equal(Array.from(await y.toArray()), [1.5, -2.25, 4, 100.5]);
});

test('randn and rand scale and shift in f32, rounding the product and the sum separately (as CUDA does)', async () => {
  const n = 4096;
  const z = await randn([n], { seed: 7, offset: 2 }).toArray();
  const u = await rand([n], { seed: 8 }).toArray();
  const mean = 0.3, std = 1.7, low = -0.7, high = 2.9;
  const shifted = await randn([n], { seed: 7, offset: 2, mean, std }).toArray();
  const spread = await rand([n], { seed: 8, low, high }).toArray();
  const f = Math.fround;
  let fusedDiffers = 0;
  for (let i = 0; i < n; i++) {
    assert.is(shifted[i], f(f(mean) + f(f(std) * z[i])), `randn element ${i}`);
    assert.is(spread[i], f(f(low) + f(f(high - low) * u[i])), `rand element ${i}`);
    if (f(f(mean) + f(std) * z[i]) !== shifted[i]) fusedDiffers++; // one rounding (an FMA) would differ here
  }
  assert.ok(fusedDiffers > 0, 'the check can tell a fused evaluation from a separately rounded one');
});

test('randn and rand are seeded, deterministic and have the right statistics', async () => {
  const n = 1 << 16;
  const a = await randn([n], { seed: 42 }).toArray();
  const b = await randn([n], { seed: 42 }).toArray();
  const c = await randn([n], { seed: 43 }).toArray();
  const d = await randn([n], { seed: 42, offset: 1 }).toArray();
  assert.equal(a, b);
  assert.not.equal(a, c);
  assert.not.equal(a, d);
  let mean = 0;
  let sq = 0;
  for (const v of a) {
    mean += v;
    sq += v * v;
  }
  mean /= n;
  const std = Math.sqrt(sq / n - mean * mean);
  assert.ok(Math.abs(mean) < 0.02, `mean ${mean}`);
  assert.ok(Math.abs(std - 1) < 0.02, `std ${std}`);
  const scaled = await randn([n], { seed: 42, mean: 3, std: 0.5 }).toArray();
  for (let i = 0; i < 100; i++) assert.ok(Math.abs(scaled[i] - (3 + 0.5 * a[i])) < 1e-5);
  const u = await rand([n], { seed: 1, low: -2, high: 2 }).toArray();
  let umin = Infinity;
  let umax = -Infinity;
  for (const v of u) {
    umin = Math.min(umin, v);
    umax = Math.max(umax, v);
  }
  assert.ok(umin >= -2 && umax < 2 && umin < -1.99 && umax > 1.99, `range ${umin} ${umax}`);
  // bf16 random equals the f32 random rounded
  const bf = await randn([64], { seed: 42, dtype: 'bf16' }).toArray();
  const rounded = await tensor(a.slice(0, 64), { dtype: 'bf16' }).toArray();
  assert.equal(bf, rounded);
});

test('manualSeed makes unseeded draws reproducible', async () => {
  manualSeed(123);
  const a1 = await randn([8]).toArray();
  const a2 = await randn([8]).toArray();
  manualSeed(123);
  assert.equal(await randn([8]).toArray(), a1);
  assert.equal(await randn([8]).toArray(), a2);
  assert.not.equal(a1, a2);
  manualSeed(2n ** 63n + 5n);
  assert.is((await randn([4]).toArray()).length, 4);
});

test('dispose frees host memory and Symbol.dispose works with using', async () => {
  const before = memoryStats('cpu').allocated;
  const t = zeros([1 << 20]);
  assert.ok(memoryStats('cpu').allocated >= before + 4 * (1 << 20));
  t.dispose();
  t.dispose(); // idempotent
  assert.ok(t.disposed);
  await import('../../lib/index.js').then((k) => k.synchronize());
  assert.ok(memoryStats('cpu').allocated <= before);
  {
    using u = zeros([1 << 20]);
    assert.ok(u instanceof Tensor);
  }
  await import('../../lib/index.js').then((k) => k.synchronize());
  assert.ok(memoryStats('cpu').allocated <= before);
  assert.ok(memoryStats('cpu').peakAllocated >= before + 4 * (1 << 20));
});

test('large round trip preserves every value', async () => {
  const values = seededValues(100_003, 9);
  const f64 = await tensor(values).toArray();
  assertClose(await tensor(Float32Array.from(values)).toArray(), Float32Array.from(values), 0);
  assertClose(f64, values, 0);
});

test.run();
