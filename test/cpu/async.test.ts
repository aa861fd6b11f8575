import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { memoryStats, ops, randn, synchronize, tensor, zeros } from '../../lib/index.js';

const test = suite('execution model (cpu)');

test('ops return at once and the event loop keeps running during a long CPU op', async () => {
  let ticks = 0;
  const timer = setInterval(() => ticks++, 5);
  const issued = performance.now();
  // ~64M normals through Box-Muller in f64: hundreds of milliseconds on 2 cores
  const big = randn([1 << 26], { seed: 1 });
  const total = ops.sum(big);
  const issueMs = performance.now() - issued;
  const startTicks = ticks;
  const [value] = await total.toArray();
  const waitMs = performance.now() - issued;
  clearInterval(timer);
  big.dispose();
  total.dispose();
  assert.ok(Number.isFinite(value));
  assert.ok(waitMs > 50, `the op took only ${waitMs.toFixed(1)} ms: too short to test the event loop`);
  // Issuing is measured against the op itself, in the same run (an absolute bound fails when other
  // work shares the cores): ops that computed before returning would take about all of waitMs to
  // issue, and no timer could fire between issuing and the result.
  assert.ok(issueMs < waitMs / 2, `issuing took ${issueMs.toFixed(1)} ms of the op's ${waitMs.toFixed(1)} ms: ops must enqueue, not compute`);
  const fired = ticks - startTicks;
  assert.ok(fired >= 3, `the timer fired ${fired} times while the op ran: the event loop was blocked`);
  assert.ok(fired >= Math.floor(waitMs / 5 / 4), `timer fired ${fired} times in ${waitMs.toFixed(0)} ms`);
});

test('ops run in program order, including in-place style chains', async () => {
  let x = tensor([1, 2, 3]);
  for (let i = 0; i < 100; i++) {
    const next = ops.add(x, x);
    x.dispose(); // disposing an input of a queued op is safe: the op holds the memory
    x = ops.scale(next, 0.5);
    next.dispose();
  }
  assert.equal(Array.from(await x.toArray()), [1, 2, 3]);
  x.dispose();
});

test('synchronize resolves after queued work and can be awaited repeatedly', async () => {
  const a = randn([1 << 20], { seed: 3 });
  const b = ops.mul(a, a);
  await synchronize();
  await synchronize();
  const s = ops.sum(b);
  await synchronize();
  assert.ok((await s.toArray())[0] > 0);
  // disposed here, not by the garbage collector during the next test's memory count
  for (const t of [a, b, s]) t.dispose();
});

test('many concurrent reads resolve with the right values', async () => {
  const tensors = Array.from({ length: 64 }, (_, i) => tensor([i, i + 0.5]));
  const arrays = await Promise.all(tensors.map((t) => t.toArray()));
  arrays.forEach((a, i) => assert.equal(Array.from(a), [i, i + 0.5]));
  for (const t of tensors) t.dispose();
});

test('a steady state of allocate/dispose does not grow memory', async () => {
  await synchronize();
  const before = memoryStats('cpu').allocated;
  for (let i = 0; i < 200; i++) {
    using a = zeros([4096]);
    using b = ops.add(a, a);
  }
  await synchronize();
  assert.is(memoryStats('cpu').allocated, before);
});

test.run();
