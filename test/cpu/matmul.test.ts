import { suite } from 'uvu';
import { ops, tensor, zeros } from '../../lib/index.js';
import { assertKilnError } from '../helpers.js';
import { checkCase, label, matmulCases } from '../matmul_cases.js';

const test = suite('matmul (cpu)');

const cases = matmulCases();
cases.forEach((c, i) => {
  test(`fast path: ${label(c)}`, async () => {
    await checkCase(c, 'cpu', 100 + i);
  });
});

// the plain-loop reference itself, on a subset (it is the oracle of the CUDA tests too)
cases
  .filter((c, i) => i % 7 === 0 || c.epilogue !== undefined || c.beta !== undefined)
  .forEach((c, i) => {
    test(`reference: ${label(c)}`, async () => {
      await checkCase(c, 'cpu', 500 + i, true);
    });
  });

test('bad matmul calls are typed errors', async () => {
  const a = zeros([4, 5]);
  const b = zeros([6, 7]);
  await assertKilnError(() => ops.matmul(a, b), 'ERR_SHAPE', 'inner dimensions');
  await assertKilnError(() => ops.matmul(a, zeros([5])), 'ERR_SHAPE');
  await assertKilnError(() => ops.matmul(a, zeros([5, 3], { dtype: 'bf16' })), 'ERR_DTYPE');
  await assertKilnError(() => ops.matmul(zeros([4, 5], { dtype: 'i32' }), zeros([5, 3], { dtype: 'i32' })), 'ERR_DTYPE');
  await assertKilnError(() => ops.matmul(a, zeros([5, 3]), { beta: 1 }), 'ERR_ARG', 'out');
  await assertKilnError(() => ops.matmul(a, zeros([5, 3]), { epilogue: 'swiglu' }), 'ERR_SHAPE', 'even');
  await assertKilnError(() => ops.matmul(a, zeros([5, 4]), { epilogue: 'swiglu', out: zeros([4, 2]), beta: 1 }), 'ERR_ARG');
  await assertKilnError(() => ops.matmul(a, zeros([5, 3]), { epilogue: 'residual' }), 'ERR_ARG', 'residual');
  await assertKilnError(() => ops.matmul(a, zeros([5, 3]), { epilogue: 'gelu' as never }), 'ERR_ARG');
  await assertKilnError(() => ops.matmul(a, zeros([5, 3]), { out: zeros([4, 4]) }), 'ERR_SHAPE');
  await assertKilnError(() => ops.matmul(a, zeros([5, 3]), { outDtype: 'bf16' }), 'ERR_DTYPE');
  await assertKilnError(() => ops.matmul(zeros([2, 4, 5]), zeros([3, 5, 3])), 'ERR_SHAPE', 'batch');
  await assertKilnError(() => ops.matmul(a, zeros([5, 3]), { transA: 1 as never }), 'ERR_ARG');
  await assertKilnError(() => ops.matmul(a, zeros([5, 3]), { alpha: NaN }), 'ERR_ARG');
  const x = tensor([1, 2, 3, 4], { shape: [2, 2] });
  await assertKilnError(() => ops.matmul(x, x, { out: x }), 'ERR_ARG', 'alias');
});

test.run();
