import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { type Tensor, ops, tensor, zeros } from '../../lib/index.js';
import { CLASSIC, POLAR_EXPRESS, newtonSchulz, newtonSchulzFlops } from '../../lib/ops/newton_schulz.js';
import { Optimizer, llamaParamGroups } from '../../lib/optim/optimizer.js';
import { assertClose, assertKilnError, seededValues } from '../helpers.js';

const test = suite('muon (cpu)');

const matrix = (rows: number, cols: number, seed: number, batch?: number) =>
  tensor(Float32Array.from(seededValues((batch ?? 1) * rows * cols, seed)), { shape: batch ? [batch, rows, cols] : [rows, cols] });

const shapes: [number, number][] = [[64, 64], [48, 80], [80, 48], [100, 37], [17, 256], [1, 9]];

for (const coefficients of ['classic', 'polar-express'] as const) {
  for (const [rows, cols] of shapes) {
    test(`Newton–Schulz f32 matches the f64 iteration: ${rows}x${cols} ${coefficients}`, async () => {
      const g = matrix(rows, cols, rows * 7 + cols);
      const fast = await newtonSchulz(g, { coefficients, compute: 'f32' }).toArray();
      const exact = await newtonSchulz(g, { coefficients, compute: 'f64', reference: true }).toArray();
      assertClose(fast, exact, 1e-3, 2e-4, 'f32 vs f64');
      // bf16 compute (as the reference implementation runs it) stays close to the exact iteration
      const bf = await newtonSchulz(g, { coefficients, compute: 'bf16' }).toArray();
      let maxAbs = 0;
      for (const v of exact) maxAbs = Math.max(maxAbs, Math.abs(v));
      assertClose(bf, exact, 0, 0.08 * maxAbs, 'bf16 vs f64');
    });
  }
}

/** Singular values of a small matrix from the eigenvalues of X·Xᵀ (cyclic Jacobi, f64). */
function singularValues(x: ArrayLike<number>, rows: number, cols: number): number[] {
  const m = Math.min(rows, cols);
  const a = new Float64Array(m * m);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < m; j++) {
      let s = 0;
      for (let k = 0; k < Math.max(rows, cols); k++) s += rows <= cols ? x[i * cols + k] * x[j * cols + k] : x[k * cols + i] * x[k * cols + j];
      a[i * m + j] = s;
    }
  for (let sweep = 0; sweep < 60; sweep++) {
    let off = 0;
    for (let p = 0; p < m; p++)
      for (let q = p + 1; q < m; q++) {
        const apq = a[p * m + q];
        off += apq * apq;
        if (Math.abs(apq) < 1e-300) continue;
        const theta = (a[q * m + q] - a[p * m + p]) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < m; k++) {
          const akp = a[k * m + p];
          const akq = a[k * m + q];
          a[k * m + p] = c * akp - s * akq;
          a[k * m + q] = s * akp + c * akq;
        }
        for (let k = 0; k < m; k++) {
          const apk = a[p * m + k];
          const aqk = a[q * m + k];
          a[p * m + k] = c * apk - s * aqk;
          a[q * m + k] = s * apk + c * aqk;
        }
      }
    if (off < 1e-24) break;
  }
  return Array.from({ length: m }, (_, i) => Math.sqrt(Math.max(0, a[i * m + i])));
}

test('classic Newton–Schulz lands singular values in roughly (0.5, 1.5)', async () => {
  for (const [rows, cols] of [[48, 80], [80, 48], [30, 100]] as [number, number][]) {
    const out = await newtonSchulz(matrix(rows, cols, 5), { compute: 'f32' }).toArray();
    const sv = singularValues(out, rows, cols);
    const lo = Math.min(...sv);
    const hi = Math.max(...sv);
    assert.ok(lo > 0.5 && hi < 1.5, `${rows}x${cols}: singular values in [${lo.toFixed(3)}, ${hi.toFixed(3)}]`);
    // and the input's were far from 1: the iteration did the work
    const before = singularValues(await matrix(rows, cols, 5).toArray(), rows, cols);
    assert.ok(Math.max(...before) / Math.min(...before) > 2);
  }
});

test('batched Newton–Schulz equals one matrix at a time', async () => {
  const g = matrix(24, 40, 9, 3);
  const all = await newtonSchulz(g, { compute: 'f32' }).toArray();
  for (let z = 0; z < 3; z++) {
    const one = await newtonSchulz(g.slice(z, z + 1).reshape(24, 40), { compute: 'f32' }).toArray();
    assert.equal(all.slice(z * 960, (z + 1) * 960), one);
  }
});

test('Newton–Schulz options and FLOP counts', async () => {
  const g = matrix(8, 8, 1);
  await assertKilnError(() => newtonSchulz(g, { coefficients: 'fast' as never }), 'ERR_ARG');
  await assertKilnError(() => newtonSchulz(g, { coefficients: 'polar-express', steps: 3 }), 'ERR_ARG');
  await assertKilnError(() => newtonSchulz(g.cast('bf16')), 'ERR_DTYPE');
  await assertKilnError(() => newtonSchulz(zeros([2, 2, 2, 2])), 'ERR_SHAPE');
  const custom = await newtonSchulz(g, { coefficients: [[...CLASSIC], [...CLASSIC]], compute: 'f32' }).toArray();
  assert.equal(custom, await newtonSchulz(g, { steps: 2, compute: 'f32' }).toArray());
  assert.is(POLAR_EXPRESS.length, 5);
  // 2m²n + 2m³ + 2m²n per step for m <= n; the symmetric saving roughly halves the first two
  const [m, n] = [1024, 4096];
  assert.is(newtonSchulzFlops(1, m, n, 5, false), 5 * (4 * m * m * n + 2 * m * m * m));
  const saved = newtonSchulzFlops(1, n, m, 5, true);
  assert.ok(Math.abs(saved - 5 * ((2 * m * m * n + 2 * m * m * m) * ((m + 1) / (2 * m)) + 2 * m * m * n)) < 1);
});

function param(name: string, rows: number, cols: number, seed: number) {
  const value = matrix(rows, cols, seed);
  const grad = matrix(rows, cols, seed + 100);
  return { name, value, grad };
}

test('one Muon step matches the formula (nesterov on and off, both scales)', async () => {
  for (const nesterov of [true, false]) {
    for (const scale of ['spectral', 'match-adamw'] as const) {
      const p = param('w', 32, 16, 3);
      const w0 = await p.value.toArray();
      const g = await p.grad.toArray();
      const opt = new Optimizer([{ rule: 'muon', params: [p], lr: 0.1, weightDecay: 0.01, momentum: 0.9, nesterov, scale, newtonSchulz: { compute: 'f32' } }]);
      opt.update(0.5);
      const m = Float32Array.from(g, (x) => 0.1 * x);
      const u = nesterov ? Float32Array.from(g, (x, i) => 0.1 * x + 0.9 * m[i]) : m;
      const o = await newtonSchulz(tensor(u, { shape: [32, 16] }), { compute: 'f32' }).toArray();
      const s = scale === 'spectral' ? Math.sqrt(2) : 0.2 * Math.sqrt(32);
      const lr = 0.05;
      assertClose(await p.value.toArray(), Float64Array.from(w0, (w, i) => w * (1 - lr * 0.01) - lr * s * o[i]), 1e-6, 1e-7, `muon nesterov=${nesterov} ${scale}`);
      assertClose(await (await opt.stateTensors()).tensors.get('w.momentum')!.toArray(), m, 1e-6, 0, 'momentum'); // (1 - β) is rounded to f32
    }
  }
});

test('NorMuon normalizes rows by their second-moment EMA and keeps the Frobenius norm', async () => {
  const p = param('w', 16, 24, 4);
  const w0 = await p.value.toArray();
  const g = await p.grad.toArray();
  const opt = new Optimizer([{ rule: 'muon', variant: 'normuon', beta2: 0.9, params: [p], lr: 0.1, momentum: 0.9, nesterov: false, newtonSchulz: { compute: 'f32' } }]);
  opt.update();
  const u = Float32Array.from(g, (x) => 0.1 * x);
  const o = Float64Array.from(await newtonSchulz(tensor(u, { shape: [16, 24] }), { compute: 'f32' }).toArray());
  let before = 0;
  for (const x of o) before += x * x;
  const v = new Float64Array(16);
  for (let r = 0; r < 16; r++) {
    let ms = 0;
    for (let c = 0; c < 24; c++) ms += o[r * 24 + c] ** 2;
    v[r] = 0.1 * (ms / 24);
    for (let c = 0; c < 24; c++) o[r * 24 + c] /= Math.sqrt(v[r]) + 1e-8;
  }
  let after = 0;
  for (const x of o) after += x * x;
  const k = Math.sqrt(before) / Math.sqrt(after);
  const s = Math.sqrt(Math.max(1, 16 / 24));
  assertClose(await p.value.toArray(), Float64Array.from(w0, (w, i) => w - 0.1 * s * o[i] * k), 1e-5, 1e-6, 'normuon step');
  assertClose(await (await opt.stateTensors()).tensors.get('w.rowSecondMoment')!.toArray(), v, 1e-5, 0, 'row second moments');
});

test('the extrapolated variant takes the gradient at x + β/(1−β)·(x − x_prev)', async () => {
  const p = param('w', 8, 8, 6);
  const opt = new Optimizer([{ rule: 'muon', variant: 'extrapolated', params: [p], lr: 0.05, momentum: 0.5, newtonSchulz: { compute: 'f32' } }]);
  const x0 = await p.value.toArray();
  opt.prepareGradientPoint(); // x_prev = x_0: the point is x_0 itself
  assert.equal(await p.value.toArray(), x0);
  opt.update();
  const x1 = await p.value.toArray();
  opt.prepareGradientPoint(); // now x1 + 1·(x1 − x0)
  assertClose(await p.value.toArray(), Float64Array.from(x1, (x, i) => 2 * x - x0[i]), 1e-6, 1e-7, 'extrapolated point');
  opt.update(); // moves back to x1 before stepping
  assert.ok(opt.step === 2);
});

test('AdamW steps match the formula with bias correction', async () => {
  const p = param('b', 7, 5, 11);
  const w0 = Float64Array.from(await p.value.toArray());
  const g = Float64Array.from(await p.grad.toArray());
  const opt = new Optimizer([{ rule: 'adamw', params: [p], lr: 0.01, betas: [0.9, 0.99], eps: 1e-8, weightDecay: 0.1 }]);
  opt.update();
  opt.update();
  const m = new Float64Array(g.length);
  const v = new Float64Array(g.length);
  const w = Float64Array.from(w0);
  for (let t = 1; t <= 2; t++) {
    for (let i = 0; i < g.length; i++) {
      m[i] = 0.9 * m[i] + 0.1 * g[i];
      v[i] = 0.99 * v[i] + 0.01 * g[i] * g[i];
      w[i] = w[i] * (1 - 0.01 * 0.1) - (0.01 * (m[i] / (1 - 0.9 ** t))) / (Math.sqrt(v[i] / (1 - 0.99 ** t)) + 1e-8);
    }
  }
  assertClose(await p.value.toArray(), w, 1e-5, 1e-7, 'adamw');
  assert.is(opt.step, 2);
});

async function leastSquares(groups: 'muon' | 'adamw' | 'normuon' | 'extrapolated' | 'polar-express', steps: number): Promise<[number, number]> {
  // minimize mean ||X·Wᵀ - Y||² over W (8 x 16), Y from a hidden W*
  const N = 256;
  const X = matrix(N, 16, 1);
  const wStar = matrix(8, 16, 2);
  const Y = ops.matmul(X, wStar, { transB: true });
  const p = { name: 'w', value: zeros([8, 16]), grad: zeros([8, 16]), kind: groups === 'adamw' ? ('norm' as const) : ('matrix' as const) };
  const variant = groups === 'normuon' || groups === 'extrapolated' ? groups : 'standard';
  const newton = { compute: 'f32' as const, coefficients: groups === 'polar-express' ? ('polar-express' as const) : ('classic' as const) };
  const opt = new Optimizer(llamaParamGroups([p], { muon: { lr: 0.05, variant, newtonSchulz: newton }, adamw: { lr: 0.05 } }));
  const lossOf = async () => {
    const r = ops.add(ops.matmul(X, p.value, { transB: true }), ops.scale(Y, -1));
    return { r, loss: (await ops.mean(ops.mul(r, r)).toArray())[0] };
  };
  const first = (await lossOf()).loss;
  let last = first;
  for (let i = 0; i < steps; i++) {
    opt.prepareGradientPoint();
    const { r, loss } = await lossOf();
    last = loss;
    // dL/dW = (2/N) · rᵀ·X  (W is (8, 16), r (N, 8))
    ops.matmul(r, X, { transA: true, alpha: 2 / (N * 8), out: p.grad });
    opt.update(1 - i / steps);
  }
  return [first, last];
}

test('a least-squares problem converges with each optimizer variant', async () => {
  for (const rule of ['muon', 'polar-express', 'normuon', 'extrapolated', 'adamw'] as const) {
    const [first, last] = await leastSquares(rule, 150);
    assert.ok(last < first / 20, `${rule}: loss ${first.toFixed(4)} -> ${last.toFixed(6)}`);
  }
});

test('optimizer state saves and restores bit for bit', async () => {
  const make = () => [param('a', 16, 8, 1), param('b', 8, 8, 2)];
  const run = (ps: ReturnType<typeof make>) =>
    new Optimizer([
      { rule: 'muon', params: [ps[0]], lr: 0.02, newtonSchulz: { compute: 'f32' } },
      { rule: 'adamw', params: [ps[1]], lr: 0.01 },
    ]);
  const ps1 = make();
  const opt1 = run(ps1);
  for (let i = 0; i < 3; i++) opt1.update();
  const saved = await opt1.stateTensors();
  const values = new Map<string, Float32Array>();
  for (const [k, t] of saved.tensors) values.set(k, (await t.toArray()) as Float32Array);
  const ps2 = make();
  for (let i = 0; i < 2; i++) ops.cast(ps1[i].value, 'f32'); // no-op reads keep order explicit
  for (let i = 0; i < 2; i++) (await import('../../lib/native.js')).binding().copy(ps2[i].value.handle, ps1[i].value.handle);
  const opt2 = run(ps2);
  await opt2.loadState(saved.step, values);
  opt1.update();
  opt2.update();
  for (let i = 0; i < 2; i++) assert.equal(await ps2[i].value.toArray(), await ps1[i].value.toArray());
  await assertKilnError(() => opt2.loadState(1, new Map()), 'ERR_CHECKPOINT');
});

test('bad optimizer configurations are typed errors', async () => {
  const p = param('w', 4, 4, 1);
  await assertKilnError(() => new Optimizer([{ rule: 'sgd' as never, params: [p], lr: 1 }]), 'ERR_ARG');
  await assertKilnError(() => new Optimizer([{ rule: 'adamw', params: [p], lr: NaN }]), 'ERR_ARG');
  await assertKilnError(() => new Optimizer([{ rule: 'adamw', params: [p, p], lr: 1 }]), 'ERR_ARG', 'two groups');
  const bias = { name: 'bias', value: zeros([4]), grad: zeros([4]) };
  await assertKilnError(() => new Optimizer([{ rule: 'muon', params: [bias], lr: 1 }]), 'ERR_SHAPE', 'adamw group');
  await assertKilnError(() => new Optimizer([{ rule: 'muon', variant: 'fast' as never, params: [p], lr: 1 }]), 'ERR_ARG', 'variant');
  await assertKilnError(() => new Optimizer([{ rule: 'adamw', params: [p], lr: 1 }]).update(NaN), 'ERR_ARG', 'lrMultiplier');
  void (null as unknown as Tensor);
});

// The straightforward per-parameter optimizer the fused one replaced, one binding call per
// parameter (one-tensor lists): the fused, shape-batched Optimizer must match it bit for bit.
async function perParameterReference(
  variant: 'standard' | 'normuon' | 'extrapolated',
  params: { name: string; value: Tensor; grad: Tensor }[],
  steps: number,
  grads: (step: number) => Float32Array[],
) {
  const { binding } = await import('../../lib/native.js');
  const beta = 0.9;
  const state = params.map((p) => ({
    momentum: zeros([...p.value.shape]), v: zeros([p.value.shape[0]]), previous: p.value.clone(), current: p.value.clone(),
  }));
  const c = beta / (1 - beta);
  for (let step = 0; step < steps; step++) {
    if (variant === 'extrapolated') {
      for (const [i, p] of params.entries()) {
        binding().copy(state[i].current.handle, p.value.handle);
        const ahead = ops.scale(p.value, 1 + c);
        binding().muonApplyMulti([ahead.handle], [state[i].previous.handle], [1], c, 0);
        binding().copy(p.value.handle, ahead.handle);
      }
    }
    const g = grads(step);
    for (const [i, p] of params.entries()) {
      binding().copy(p.grad.handle, tensor(g[i], { shape: [...p.grad.shape] }).handle);
      if (variant === 'extrapolated') {
        binding().copy(p.value.handle, state[i].current.handle);
        binding().copy(state[i].previous.handle, state[i].current.handle);
      }
      const [rows, cols] = p.value.shape;
      const update = zeros([rows, cols]);
      binding().muonMomentumMulti([state[i].momentum.handle], [update.handle], [p.grad.handle], beta, variant !== 'extrapolated');
      const ortho = newtonSchulz(update, { compute: 'f32' });
      if (variant === 'normuon') binding().normuonNormalize(ortho.handle, state[i].v.handle, rows, cols, 0.95, 1e-8);
      binding().muonApplyMulti([p.value.handle], [ortho.handle], [Math.sqrt(Math.max(1, rows / cols))], 0.03, 0.1);
    }
  }
  return Promise.all(params.map((p) => p.value.toArray()));
}

for (const variant of ['standard', 'normuon', 'extrapolated'] as const) {
  test(`the fused, shape-batched Muon step equals the per-parameter one bit for bit, allocating nothing (${variant})`, async () => {
    // two 24x40 matrices share one Newton–Schulz batch; 40x24 and 16x16 get their own
    const make = () => [param('a', 24, 40, 1), param('b', 40, 24, 2), param('c', 24, 40, 3), param('d', 16, 16, 4)];
    const grads = (step: number) => make().map((p, i) => Float32Array.from(seededValues(p.value.numel, 1000 + 10 * step + i)));
    const reference = await perParameterReference(variant, make(), 3, grads);
    const ps = make();
    const opt = new Optimizer([{ rule: 'muon', variant, params: ps, lr: 0.03, weightDecay: 0.1, momentum: 0.9, newtonSchulz: { compute: 'f32' } }]);
    const { binding } = await import('../../lib/native.js');
    const { memoryStats } = await import('../../lib/runtime.js');
    for (let step = 0; step < 3; step++) {
      const g = grads(step).map((v, i) => tensor(v, { shape: [...ps[i].grad.shape] }));
      const before = memoryStats('cpu').allocations;
      opt.prepareGradientPoint();
      for (const [i, p] of ps.entries()) binding().copy(p.grad.handle, g[i].handle);
      opt.update();
      assert.is(memoryStats('cpu').allocations - before, 0, `step ${step} allocated`);
    }
    for (const [i, p] of ps.entries()) assert.equal(await p.value.toArray(), reference[i], `${p.name} after 3 steps`);
    opt.dispose();
  });
}

test('the fused AdamW step equals the per-parameter one bit for bit, allocating nothing', async () => {
  const { binding } = await import('../../lib/native.js');
  const { memoryStats } = await import('../../lib/runtime.js');
  const make = () => [param('a', 7, 9, 5), param('b', 1, 70000, 6), param('c', 3, 1, 7)];
  const ref = make();
  const ms = ref.map((p) => zeros([...p.value.shape]));
  const vs = ref.map((p) => zeros([...p.value.shape]));
  const ps = make();
  const opt = new Optimizer([{ rule: 'adamw', params: ps, lr: 0.01, weightDecay: 0.1, betas: [0.8, 0.99], eps: 1e-6 }]);
  for (let step = 1; step <= 3; step++) {
    for (const [i, p] of ref.entries()) binding().adamwMulti([p.value.handle], [ms[i].handle], [vs[i].handle], [p.grad.handle], { lr: 0.01, beta1: 0.8, beta2: 0.99, eps: 1e-6, weightDecay: 0.1, step });
    const before = memoryStats('cpu').allocations;
    opt.update();
    assert.is(memoryStats('cpu').allocations - before, 0);
  }
  for (const [i, p] of ps.entries()) assert.equal(await p.value.toArray(), await ref[i].value.toArray(), p.name);
});

test('multi-tensor bindings reject bad lists with typed errors', async () => {
  const { binding } = await import('../../lib/native.js');
  const a = zeros([4]);
  const b = zeros([5]);
  const h = zeros([4], { dtype: 'bf16' });
  const params = { lr: 0.1, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0, step: 1 };
  const call = (f: string, ...args: unknown[]) => (binding() as unknown as Record<string, (...x: unknown[]) => void>)[f](...args);
  await assertKilnError(() => call('adamwMulti', [a.handle], [a.handle], [a.handle], [b.handle], params), 'ERR_SHAPE');
  await assertKilnError(() => call('adamwMulti', [a.handle], [a.handle], [a.handle], [], params), 'ERR_ARG', 'expected 1');
  await assertKilnError(() => call('adamwMulti', [a.handle], [h.handle], [a.handle], [a.handle], params), 'ERR_DTYPE');
  await assertKilnError(() => call('adamwMulti', 'x', [], [], [], params), 'ERR_ARG');
  await assertKilnError(() => call('adamwMulti', [{}], [a.handle], [a.handle], [a.handle], params), 'ERR_ARG');
  await assertKilnError(() => call('adamwMulti', [a.handle], [a.handle], [a.handle], [a.handle], { ...params, step: 0 }), 'ERR_ARG');
  await assertKilnError(() => call('muonMomentumMulti', [a.handle], [h.handle, a.handle], [a.handle], 0.9, true), 'ERR_ARG');
  await assertKilnError(() => call('muonMomentumMulti', [a.handle], [b.handle], [a.handle], 0.9, true), 'ERR_SHAPE');
  await assertKilnError(() => call('muonApplyMulti', [a.handle], [a.handle], [], 0.1, 0), 'ERR_ARG', 'scales');
  await assertKilnError(() => call('muonApplyMulti', [a.handle], [a.handle], [NaN], 0.1, 0), 'ERR_ARG', 'finite');
  call('muonApplyMulti', [], [], [], 0.1, 0); // an empty list is nothing to do
  const o = zeros([2, 3]);
  const v = zeros([2]);
  await assertKilnError(() => call('normuonNormalize', o.handle, v.handle, 2, 3, 1.5, 1e-8), 'ERR_ARG', 'beta2');
  await assertKilnError(() => call('normuonNormalize', o.handle, v.handle, 3, 2, 0.9, 1e-8), 'ERR_SHAPE');
  await assertKilnError(() => call('normuonNormalize', zeros([2, 3], { dtype: 'bf16' }).handle, v.handle, 2, 3, 0.9, 1e-8), 'ERR_DTYPE');
  await assertKilnError(() => call('normuonNormalize', o.handle, zeros([2], { dtype: 'bf16' }).handle, 2, 3, 0.9, 1e-8), 'ERR_DTYPE');
  await assertKilnError(() => newtonSchulz(matrix(4, 4, 1), { out: zeros([4, 5]) }), 'ERR_SHAPE');
  await assertKilnError(() => newtonSchulz(matrix(4, 4, 1), { out: zeros([4, 4], { dtype: 'bf16' }) }), 'ERR_DTYPE');
});

test.run();
