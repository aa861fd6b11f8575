/** The batch-invariant matmul the model runner relies on: each output row is bit-identical whatever M is, so a sequence's logits do not depend on who shares its batch. */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { ops, randn } from '../../lib/index.js';

const test = suite('serve: batch-invariant matmul');

test('batch-invariant matmul: each row is bit-identical whatever M is', async () => {
  const N = 70;
  for (const K of [96, 100, 7]) {
    // K = 100 and 7: a masked tail after the 16-wide steps
    const w = randn([N, K], { seed: 3 });
    const x = randn([40, K], { seed: 4 });
    const all = await ops.matmul(x, w, { transB: true, batchInvariant: true }).toArray();
    for (const M of [1, 2, 3, 5, 7, 8, 9, 17, 33]) {
      const part = await ops.matmul(x.slice(0, M), w, { transB: true, batchInvariant: true }).toArray();
      for (let i = 0; i < part.length; i++) if (part[i] !== all[i]) assert.unreachable(`K=${K} M=${M}: element ${i} differs (${part[i]} vs ${all[i]})`);
    }
    // and it is a correct matmul
    const ref = await ops.matmul(x, w, { transB: true, reference: true }).toArray();
    for (let i = 0; i < ref.length; i++) assert.ok(Math.abs(all[i] - ref[i]) <= 1e-4 * (1 + Math.abs(ref[i])), `K=${K} element ${i}: ${all[i]} vs ${ref[i]}`);
  }
  const K = 96;
  const w = randn([N, K], { seed: 3 });
  const x = randn([40, K], { seed: 4 });
  // the residual epilogue and bf16 inputs keep the property
  const xb = x.cast('bf16'), wb = w.cast('bf16');
  const res = randn([40, N], { seed: 5 }).cast('bf16');
  const allB = await ops.matmul(xb, wb, { transB: true, batchInvariant: true, epilogue: 'residual', residual: res, out: randn([40, N], { seed: 6 }).cast('bf16') }).toArray();
  const oneB = await ops.matmul(xb.slice(0, 1), wb, { transB: true, batchInvariant: true, epilogue: 'residual', residual: res.slice(0, 1), out: randn([1, N], { seed: 6 }).cast('bf16') }).toArray();
  for (let i = 0; i < N; i++) assert.is(oneB[i], allB[i]);
});

test.run();
