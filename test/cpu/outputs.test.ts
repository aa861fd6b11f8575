// Planned outputs (`out` options) give the same values as fresh outputs, reuse the caller's
// memory, and reject wrong shapes, dtypes, devices and aliasing; Tensor.write fills in place.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { empty, ops, randn, tensor } from '../../lib/index.js';
import { memoryStats } from '../../lib/runtime.js';
import { assertKilnError } from '../helpers.js';

const test = suite('planned outputs');

async function same(planned: { toArray(): Promise<ArrayLike<number>> }, fresh: { toArray(): Promise<ArrayLike<number>> }, what: string) {
  assert.equal(Array.from(await planned.toArray()), Array.from(await fresh.toArray()), what);
}

test('every layer op writes its planned outputs exactly as it would write new ones', async () => {
  const x = randn([6, 8], { seed: 1 });
  const w = randn([8], { seed: 2, mean: 1, std: 0.1 });
  const table = randn([11, 8], { seed: 3 });
  const ids = tensor(new Int32Array([0, 3, 10, 3, 1, 2]));
  const before = memoryStats('cpu').allocations;
  const y = empty([6, 8]);
  const rstd = empty([6]);
  const emb = empty([6, 8]);
  const g = empty([6, 4]);
  const dgu = empty([6, 8]);
  const dx = empty([6, 8]);
  const loss = empty([6]);
  const total = empty([]);
  const scaled = empty([6, 8]);
  const bf = empty([6, 8], { dtype: 'bf16' });
  const planned = memoryStats('cpu').allocations - before;
  const fresh = ops.rmsnorm(x, w);
  const mark = memoryStats('cpu').allocations;
  ops.rmsnorm(x, w, { y, rstd });
  ops.embedding(table, ids, { out: emb });
  ops.swiglu(x, { out: g });
  ops.swigluBackward(x, g, { out: dgu });
  ops.rmsnormBackward(x, x, w, fresh.rstd, { dweight: empty([8]), dresidual: y, dx });
  ops.crossEntropy(x, tensor(new Int32Array([1, 2, 3, 4, 5, -1])), { loss });
  ops.sum(loss, { out: total });
  ops.scale(x, 0.5, { out: scaled });
  ops.cast(x, 'bf16', { out: bf });
  assert.is(memoryStats('cpu').allocations - mark, 2, 'only the dweight and targets the test passes in are new');
  assert.is(planned, 10);
  await same(y, fresh.y, 'rmsnorm y');
  await same(rstd, fresh.rstd, 'rmsnorm rstd');
  await same(emb, ops.embedding(table, ids), 'embedding');
  await same(g, ops.swiglu(x), 'swiglu');
  await same(dgu, ops.swigluBackward(x, g), 'swigluBackward');
  await same(dx, ops.rmsnormBackward(x, x, w, fresh.rstd, { dweight: empty([8]), dresidual: y }), 'rmsnormBackward');
  const ce = ops.crossEntropy(x, tensor(new Int32Array([1, 2, 3, 4, 5, -1]))).loss;
  await same(loss, ce, 'crossEntropy');
  await same(total, ops.sum(ce), 'sum');
  await same(scaled, ops.scale(x, 0.5), 'scale');
  await same(bf, ops.cast(x, 'bf16'), 'cast');
  // scale in place
  const copy = x.clone();
  ops.scale(copy, 2, { out: copy });
  assert.equal(Array.from(await copy.toArray()), Array.from(await x.toArray()).map((v) => 2 * v));
});

test('attention and its backward write planned outputs', async () => {
  const q = randn([1, 5, 4, 8], { seed: 4 });
  const k = randn([1, 5, 2, 8], { seed: 5 });
  const v = randn([1, 5, 2, 8], { seed: 6 });
  const fresh = ops.attention(q, k, v);
  const out = empty([1, 5, 4, 8]);
  const lse = empty([1, 4, 5]);
  ops.attention(q, k, v, { out, lse });
  await same(out, fresh.out, 'attention out');
  await same(lse, fresh.lse, 'attention lse');
  const dout = randn([1, 5, 4, 8], { seed: 7 });
  const g = ops.attentionBackward(q, k, v, out, lse, dout);
  const dq = empty([1, 5, 4, 8]);
  const dk = empty([1, 5, 2, 8]);
  const dv = empty([1, 5, 2, 8]);
  ops.attentionBackward(q, k, v, out, lse, dout, { dq, dk, dv });
  await same(dq, g.dq, 'dq');
  await same(dk, g.dk, 'dk');
  await same(dv, g.dv, 'dv');
  await assertKilnError(() => ops.attention(q, k, v, { out: empty([1, 5, 4, 7]) }), 'ERR_SHAPE', 'out');
  await assertKilnError(() => ops.attention(q, k, v, { lse: empty([1, 4, 5], { dtype: 'f64' }) }), 'ERR_DTYPE', 'lse');
  await assertKilnError(() => ops.attention(q, k, v, { out: q }), 'ERR_ARG', 'input');
  await assertKilnError(() => ops.attentionBackward(q, k, v, out, lse, dout, { dk: dv, dv }), 'ERR_ARG', 'distinct');
  await assertKilnError(() => ops.attention(q, k, v, { dq } as never), 'ERR_ARG', 'unknown option');
});

test('wrong planned outputs are typed errors', async () => {
  const x = randn([4, 6], { seed: 8 });
  const w = randn([6], { seed: 9 });
  await assertKilnError(() => ops.rmsnorm(x, w, { y: empty([4, 5]) }), 'ERR_SHAPE', 'y');
  await assertKilnError(() => ops.rmsnorm(x, w, { rstd: empty([4], { dtype: 'bf16' }) }), 'ERR_DTYPE', 'rstd');
  await assertKilnError(() => ops.rmsnorm(x, w, { y: x }), 'ERR_ARG', 'input');
  await assertKilnError(() => ops.swiglu(x, { out: 'no' as never }), 'ERR_ARG', 'Tensor');
  const gone = empty([4, 3]);
  gone.dispose();
  await assertKilnError(() => ops.swiglu(x, { out: gone }), 'ERR_DISPOSED');
  await assertKilnError(() => ops.sum(x, { out: empty([1]) }), 'ERR_SHAPE');
  await assertKilnError(() => ops.sum(x, { dim: -1, out: empty([4], { dtype: 'f64' }) }), 'ERR_DTYPE');
  await assertKilnError(() => ops.cast(x, 'bf16', { out: empty([4, 6]) }), 'ERR_DTYPE');
  await assertKilnError(() => ops.embedding(x, tensor(new Int32Array([1])), { out: empty([1, 6], { dtype: 'i32' }) }), 'ERR_DTYPE');
  await assertKilnError(() => ops.gradNormClip([x], 0, { out: empty([2]) }), 'ERR_SHAPE');
  await assertKilnError(() => ops.crossEntropy(x, tensor(new Int32Array(4)), { loss: empty([3]) }), 'ERR_SHAPE');
});

test('Tensor.write overwrites in place, in queue order', async () => {
  const t = tensor([1, 2, 3, 4]);
  const before = memoryStats('cpu').allocations;
  const doubled = ops.scale(t, 2); // enqueued before the write: sees the old values
  t.write(new Float32Array([5, 6, 7, 8]));
  assert.equal(Array.from(await doubled.toArray()), [2, 4, 6, 8]);
  assert.equal(Array.from(await t.toArray()), [5, 6, 7, 8]);
  assert.is(memoryStats('cpu').allocations - before, 1, 'the write reuses the tensor');
  const ids = empty([2, 2], { dtype: 'i32' }).write(new Int32Array([1, -2, 3, 2 ** 31 - 1]));
  assert.equal(Array.from(await ids.toArray()), [1, -2, 3, 2 ** 31 - 1]);
  const half = empty([2], { dtype: 'bf16' }).write(new Uint16Array([0x3f80, 0xc000]));
  assert.equal(Array.from(await half.toArray()), [1, -2]);
  const view = tensor([0, 0, 0, 0]);
  view.slice(2).write(new Float32Array([9, 9]));
  assert.equal(Array.from(await view.toArray()), [0, 0, 9, 9]);
  await assertKilnError(() => t.write(new Float64Array(4)), 'ERR_DTYPE', 'Float32Array');
  await assertKilnError(() => t.write(new Float32Array(3)), 'ERR_SHAPE', '4');
  await assertKilnError(() => t.write([1, 2, 3, 4] as never), 'ERR_DTYPE');
  const gone = tensor([1]);
  gone.dispose();
  await assertKilnError(() => gone.write(new Float32Array(1)), 'ERR_DISPOSED');
  const { binding } = await import('../../lib/native.js');
  await assertKilnError(() => binding().write(t.handle, new Float32Array(2)), 'ERR_SHAPE');
  await assertKilnError(() => (binding().write as (...a: unknown[]) => void)(t.handle, 'abc'), 'ERR_ARG');
  await assertKilnError(() => (binding().write as (...a: unknown[]) => void)({}, new Float32Array(4)), 'ERR_ARG');
});

test.run();
