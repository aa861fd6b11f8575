import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { KilnError, empty, full, ops, rand, randn, tensor, zeros } from '../../lib/index.js';
import { binding } from '../../lib/native.js';
import { assertKilnError, hasCuda } from '../helpers.js';

const test = suite('errors');

test('bad shapes are ERR_SHAPE', async () => {
  await assertKilnError(() => zeros([2, -1]), 'ERR_SHAPE');
  await assertKilnError(() => zeros([NaN]), 'ERR_SHAPE');
  await assertKilnError(() => zeros([1.5]), 'ERR_SHAPE');
  await assertKilnError(() => zeros(['3' as unknown as number]), 'ERR_SHAPE');
  await assertKilnError(() => tensor([1, 2, 3], { shape: [2, 2] }), 'ERR_SHAPE');
  await assertKilnError(() => tensor([[1, 2], [3]]), 'ERR_SHAPE', 'ragged');
  await assertKilnError(() => ops.add(zeros([2, 3]), zeros([3, 2])), 'ERR_SHAPE');
  await assertKilnError(() => zeros([6]).reshape(4, -1), 'ERR_SHAPE');
  await assertKilnError(() => zeros([6]).reshape(-1, -1), 'ERR_SHAPE');
  await assertKilnError(() => ops.sum(zeros([2, 3]), { dim: 0 }), 'ERR_ARG');
});

test('dtype mismatches and unsupported dtypes are ERR_DTYPE', async () => {
  await assertKilnError(() => ops.add(zeros([2]), zeros([2], { dtype: 'bf16' })), 'ERR_DTYPE');
  await assertKilnError(() => zeros([2], { dtype: 'f8' as never }), 'ERR_DTYPE');
  await assertKilnError(() => ops.sum(zeros([2], { dtype: 'i32' })), 'ERR_DTYPE');
  await assertKilnError(() => randn([2], { dtype: 'i32' }), 'ERR_DTYPE');
  await assertKilnError(() => zeros([2]).cast('u8' as never), 'ERR_DTYPE');
});

test('bad devices are ERR_DEVICE, or ERR_NO_CUDA without a GPU', async () => {
  await assertKilnError(() => zeros([2], { device: 'gpu' as never }), 'ERR_DEVICE');
  await assertKilnError(() => zeros([2], { device: 'cuda:x' as never }), 'ERR_DEVICE');
  if (!hasCuda) {
    await assertKilnError(() => zeros([2], { device: 'cuda' }), 'ERR_NO_CUDA');
    await assertKilnError(() => tensor([1], { device: 'cuda:0' }), 'ERR_NO_CUDA');
    await assertKilnError(() => zeros([2]).to('cuda'), 'ERR_NO_CUDA');
  } else {
    await assertKilnError(() => zeros([2], { device: 'cuda:999' }), 'ERR_DEVICE');
    await assertKilnError(() => ops.add(zeros([2]), zeros([2], { device: 'cuda' })), 'ERR_DEVICE');
    await assertKilnError(() => zeros([2], { device: 'cuda', dtype: 'f64' }), 'ERR_DTYPE');
  }
});

test('disposed tensors are ERR_DISPOSED everywhere', async () => {
  const t = zeros([4]);
  t.dispose();
  await assertKilnError(() => t.toArray(), 'ERR_DISPOSED');
  await assertKilnError(() => ops.add(t, t), 'ERR_DISPOSED');
  await assertKilnError(() => t.reshape(2, 2), 'ERR_DISPOSED');
  await assertKilnError(() => t.slice(0, 1), 'ERR_DISPOSED');
  await assertKilnError(() => t.clone(), 'ERR_DISPOSED');
  await assertKilnError(() => binding().read(t.handle), 'ERR_DISPOSED');
});

test('absurd sizes are a typed error, not a crash', async () => {
  await assertKilnError(() => zeros([2 ** 30, 2 ** 30]), 'ERR_OOM');
  // allowed by the shape check but far beyond this machine's memory
  await assertKilnError(() => empty([2 ** 47]), 'ERR_OOM');
  await assertKilnError(() => binding().empty(-1, 0, 2 ** 53 + 2), 'ERR_ARG');
});

test('bad numbers and options are ERR_ARG', async () => {
  await assertKilnError(() => ops.scale(zeros([2]), NaN), 'ERR_ARG');
  await assertKilnError(() => ops.scale(zeros([2]), Infinity), 'ERR_ARG');
  await assertKilnError(() => randn([2], { std: -1 }), 'ERR_ARG');
  await assertKilnError(() => rand([2], { low: 1, high: 0 }), 'ERR_ARG');
  await assertKilnError(() => randn([2], { seed: -1 }), 'ERR_ARG');
  await assertKilnError(() => randn([2], { seed: 1.5 }), 'ERR_ARG');
  await assertKilnError(() => zeros([2], { dtpye: 'f32' } as never), 'ERR_ARG', 'unknown option');
  await assertKilnError(() => tensor([1, 2.5], { dtype: 'i32' }), 'ERR_ARG');
  await assertKilnError(() => tensor('abc' as never), 'ERR_ARG');
  await assertKilnError(() => full([2], 'x' as never), 'ERR_ARG');
  await assertKilnError(() => zeros([4]).slice(3, 2), 'ERR_ARG');
});

test('wrong argument types from plain JavaScript reach the addon as errors, not crashes', async () => {
  const b = binding() as unknown as Record<string, (...args: unknown[]) => unknown>;
  const garbage: unknown[][] = [
    [],
    [null, undefined],
    [{}, {}, {}, {}],
    ['a', 'b', 'c'],
    [1.5, 0, 3],
    [-1, 9, 3],
    [-1, 0, -3],
    [-1, 0, NaN],
    [0, zeros([2]).handle, {}, zeros([2]).handle],
    [5, zeros([2]).handle, zeros([2]).handle, zeros([2]).handle],
    [zeros([2]).handle, zeros([3]).handle, zeros([3]).handle, zeros([3]).handle],
  ];
  for (const name of ['empty', 'fromBuffer', 'read', 'copy', 'fill', 'random', 'binary', 'scale', 'cast', 'reduceRows', 'memoryStats']) {
    for (const args of garbage) {
      let error: unknown;
      try {
        const r = b[name](...args);
        if (r instanceof Promise) await r;
      } catch (e) {
        error = e;
      }
      if (error === undefined) continue; // some garbage happens to be valid (e.g. memoryStats(-1))
      assert.ok(error instanceof KilnError, `${name}(${args.map(String).join(', ')}) threw ${String(error)}`);
    }
  }
  // sizes whose product wraps around int64 are refused, not matched against a small tensor
  const huge = 2 ** 40;
  await assertKilnError(
    () => binding().attentionForward(zeros([1]).handle, zeros([1]).handle, zeros([1]).handle, zeros([1]).handle, zeros([1]).handle,
      { B: huge, Tq: huge, Tk: 1, Hq: huge, Hkv: 1, D: 1, scale: 1, causal: true, reference: false }),
    'ERR_ARG',
  );
  // the handle class cannot be constructed from JS
  const NativeTensor = (binding() as unknown as { NativeTensor: new (...a: unknown[]) => unknown }).NativeTensor;
  assert.throws(() => new NativeTensor());
  // copy between mismatched sizes is refused natively even without lib/'s checks
  await assertKilnError(() => binding().copy(zeros([2]).handle, zeros([3]).handle), 'ERR_SHAPE');
  await assertKilnError(() => binding().binary(0, zeros([2]).handle, zeros([2]).handle, zeros([2], { dtype: 'f64' }).handle), 'ERR_DTYPE');
});

test.run();
