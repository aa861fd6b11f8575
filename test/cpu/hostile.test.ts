/** Regression tests for each finding of the hostile-input fuzz: every bad call is a typed KilnError, never a crash. */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  KilnError, LlamaModel, Optimizer, PRESETS, Tensor, Trainer, describe, llamaParamGroups, loadCheckpoint, manualSeed, ops, preset,
  saveCheckpoint, synchronize, tensor, zeros, full, randn, lrMultiplier, formatInfo, datasheetPeak, toHfConfig, totalParameters,
} from '../../lib/index.js';
import { generateTokens } from '../oracles/generate_reference.js';
import { binding } from '../../lib/native.js';
import { assertKilnError } from '../helpers.js';
import { memoryStats } from '../../lib/index.js';

const raw = () => binding() as unknown as Record<string, (...args: unknown[]) => unknown>;

/** Canaries that take over freed memory: a use after free would change them. */
async function assertCanaries(canaries: Tensor[], value: number): Promise<void> {
  for (const c of canaries) {
    const values = await c.toArray();
    assert.ok(values.every((v) => v === value), 'a canary allocated after the mid-call dispose was overwritten');
    c.dispose();
  }
}

test('use after free: a params getter that disposes an accepted tensor gets ERR_DISPOSED, not a crash', async () => {
  const a = randn([4, 4], { seed: 1 });
  const b = randn([4, 4], { seed: 2 });
  const c = zeros([4, 4]);
  const canaries: Tensor[] = [];
  const params = {
    N: 4, K: 4, batch: 1, transA: false, transB: false, lda: 4, ldb: 4, ldc: 4, ldResidual: 4, strideA: 0, strideB: 0, strideC: 0,
    strideResidual: 0, alpha: 1, beta: 0, epilogue: 0, reference: false,
    get M() {
      a.dispose(); // a getter that frees an operand mid-call
      canaries.push(full([16], 3), full([16], 3));
      return 4;
    },
  };
  await assertKilnError(() => raw().matmul(c.handle, a.handle, b.handle, null, params), 'ERR_DISPOSED');
  // matmulCandidates parses the same way (on the CPU it would then refuse: tuning is for CUDA)
  const b2 = randn([4, 4], { seed: 3 });
  await assertKilnError(() => raw().matmulCandidates(c.handle, b2.handle, b.handle, null, { ...params, get M() { b2.dispose(); return 4; } }), 'ERR_DISPOSED');
  // adamwMulti: a params getter disposing the weight
  const [w, m, v, g] = [zeros([4]), zeros([4]), zeros([4]), zeros([4])];
  const adamwParams = { lr: 0.1, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0, get step() { w.dispose(); canaries.push(full([4], 3)); return 1; } };
  await assertKilnError(() => raw().adamwMulti([w.handle], [m.handle], [v.handle], [g.handle], adamwParams), 'ERR_DISPOSED');
  await synchronize();
  await assertCanaries(canaries, 3);
  b.dispose();
  c.dispose();
});

test('use after free: Proxy traps, array element getters and valueOf in every multi-tensor entry point', async () => {
  const make = () => [zeros([4]), zeros([4]), zeros([4]), zeros([4])];
  // adamwMulti: a Proxy params object disposing a weight
  {
    const [w, m, v, g] = make();
    const params = new Proxy({ lr: 0.1, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0, step: 1 }, { get: (t, k) => (w.dispose(), Reflect.get(t, k)) });
    await assertKilnError(() => raw().adamwMulti([w.handle], [m.handle], [v.handle], [g.handle], params), 'ERR_DISPOSED');
  }
  // gradNormClip: an element getter disposing the norm output
  {
    const [x, norm] = [zeros([4]), zeros([1])];
    const list = [x.handle];
    Object.defineProperty(list, 0, { get: () => (norm.dispose(), x.handle) });
    await assertKilnError(() => raw().gradNormClip(list, 1, norm.handle), 'ERR_DISPOSED');
  }
  // muonApplyMulti: a scales element getter disposing a weight
  {
    const [w, o] = make();
    const scales = [1];
    Object.defineProperty(scales, 0, { get: () => (w.dispose(), 1) });
    await assertKilnError(() => raw().muonApplyMulti([w.handle], [o.handle], scales, 0.1, 0), 'ERR_DISPOSED');
  }
  // muonMomentumMulti: a grads element getter disposing a momentum
  {
    const [mom, u, g] = make();
    const grads = [g.handle];
    Object.defineProperty(grads, 0, { get: () => (mom.dispose(), g.handle) });
    await assertKilnError(() => raw().muonMomentumMulti([mom.handle], [u.handle], grads, 0.9, true), 'ERR_DISPOSED');
  }
  // newtonSchulz: a coefficient element getter disposing the input
  {
    const [out, g] = [zeros([12]), randn([12], { seed: 3 })];
    const coefficients = [3.4445, -4.775, 2.0315];
    Object.defineProperty(coefficients, 1, { get: () => (g.dispose(), -4.775) });
    await assertKilnError(
      () => raw().newtonSchulz(out.handle, g.handle, { batch: 1, rows: 3, cols: 4, steps: 1, coefficients, normScale: 1, eps: 1e-7, compute: 0, reference: false }),
      'ERR_DISPOSED',
    );
  }
  // valueOf never runs: numbers must be numbers
  {
    const [t] = make();
    let ran = false;
    await assertKilnError(() => raw().fill(t.handle, { valueOf: () => ((ran = true), 1) }), 'ERR_ARG');
    assert.not.ok(ran, 'valueOf ran inside the binding');
  }
  await synchronize();
});

test('use after free: attention, decode, kvAppend and rope dims getters', async () => {
  const t = (n: number) => randn([n], { seed: n });
  const idx = (values: number[]) => tensor(Int32Array.from(values));
  const victims = { forward: t(16), decode: t(8), append: t(16), rope: t(16) };
  const dims = (victim: Tensor, base: Record<string, unknown>) => new Proxy(base, { get: (o, k) => (victim.dispose(), Reflect.get(o, k)) });
  await assertKilnError(() => raw().attentionForward(zeros([16]).handle, zeros([4]).handle, victims.forward.handle, t(8).handle, t(8).handle,
    dims(victims.forward, { B: 1, Tq: 2, Tk: 2, Hq: 2, Hkv: 1, D: 4, scale: 0.5, causal: true, reference: false })), 'ERR_DISPOSED');
  await assertKilnError(() => raw().attentionDecode(zeros([8]).handle, zeros([2]).handle, victims.decode.handle, t(16).handle, t(16).handle, idx([0, 1]).handle, idx([3]).handle,
    dims(victims.decode, { B: 1, Hq: 2, Hkv: 1, D: 4, blockSize: 2, maxBlocks: 2, numBlocks: 2, scale: 0.5, maxSeqLen: 4, reference: false })), 'ERR_DISPOSED');
  await assertKilnError(() => raw().kvAppend(victims.append.handle, t(16).handle, t(8).handle, t(8).handle, idx([0, 1]).handle, idx([0]).handle,
    dims(victims.append, { B: 1, Tnew: 2, Hkv: 1, D: 4, blockSize: 2, maxBlocks: 2, numBlocks: 2 })), 'ERR_DISPOSED');
  await assertKilnError(() => raw().rope(zeros([16]).handle, victims.rope.handle, idx([0, 1]).handle,
    dims(victims.rope, { B: 1, T: 2, H: 2, D: 4, base: 10000, backward: false })), 'ERR_DISPOSED');
  await synchronize();
});

test('fake, proxied and foreign handles are ERR_ARG (recognised by type tag, not instanceof)', async () => {
  const t = zeros([4]);
  const proto = Object.getPrototypeOf(t.handle);
  await assertKilnError(() => raw().fill(Object.create(proto), 1), 'ERR_ARG');
  await assertKilnError(() => raw().fill(new Proxy(t.handle, {}), 1), 'ERR_ARG');
  await assertKilnError(() => raw().fill({ numel: 4, dtype: 0 }, 1), 'ERR_ARG');
  assert.throws(() => new Tensor(Object.create(proto), [4]), (e: unknown) => e instanceof KilnError && e.code === 'ERR_ARG');
  t.dispose();
});

test('hang: LlamaModel validates its config at construction (Infinity, 2^31, 1e308 layers, 1n, 0.5)', async () => {
  const base = preset('tiny');
  for (const layers of [Infinity, 2 ** 31, 1e308, 0.5, -1, NaN]) {
    // refused at once: before a single tensor is allocated (counted synchronously, so no other
    // code runs in between; a wall-clock bound failed on a loaded machine)
    const allocations = memoryStats('cpu').allocations;
    assert.throws(() => new LlamaModel({ ...base, layers }), (e: unknown) => e instanceof KilnError && e.code === 'ERR_ARG', `layers ${layers}`);
    assert.is(memoryStats('cpu').allocations, allocations, `layers ${layers} was refused at once, before allocating`);
  }
  await assertKilnError(() => new LlamaModel({ ...base, ffn: 1n as unknown as number }), 'ERR_ARG');
  await assertKilnError(() => new LlamaModel({ ...base, ropeTheta: Infinity }), 'ERR_ARG');
  await assertKilnError(() => new LlamaModel({ ...base, dModel: 2 ** 30 }), 'ERR_ARG');
  await assertKilnError(() => new LlamaModel(null as never), 'ERR_ARG');
  await assertKilnError(() => new LlamaModel(base, { device: 'gpu' as never }), 'ERR_DEVICE');
  await assertKilnError(() => new LlamaModel(base, { paramDType: 'bf16' as never }), 'ERR_DTYPE');
  assert.ok(Object.isFrozen(new LlamaModel({ ...PRESETS.tiny, layers: 1 }).config));
});

test('silent wrong answer: Muon extrapolated update() without prepareGradientPoint() is an error', async () => {
  const w = randn([4, 3], { seed: 5 });
  const g = randn([4, 3], { seed: 6 });
  const opt = new Optimizer([{ rule: 'muon', variant: 'extrapolated', lr: 0.02, params: [{ name: 'w', value: w, grad: g }] }]);
  const before = await w.toArray();
  await assertKilnError(() => opt.update(), 'ERR_ARG', 'prepareGradientPoint');
  assert.equal(await w.toArray(), before, 'the refused update left the weights alone');
  opt.prepareGradientPoint();
  opt.prepareGradientPoint(); // idempotent: a second call must not lose x_t
  opt.update();
  const after = await w.toArray();
  assert.ok(after.every((v) => Number.isFinite(v) && Math.abs(v) < 10), 'weights stay finite and near their start');
  assert.ok(after.some((v, i) => v !== before[i]), 'the step moved the weights');
  await assertKilnError(() => opt.update(), 'ERR_ARG', 'prepareGradientPoint');
  opt.dispose();
});

test('silent wrong answer: the same tensor twice in any multi-tensor list is refused (lib and native)', async () => {
  const a = full([4], 2);
  const b = full([4], 2);
  await assertKilnError(() => ops.gradNormClip([a, a], 1), 'ERR_ARG', 'twice');
  await assertKilnError(() => ops.gradNormClip(new Array(3), 1), 'ERR_ARG'); // holes (map skipped them)
  assert.equal([...(await a.toArray())], [2, 2, 2, 2], 'a was not scaled');
  const norm = zeros([1]);
  // natively: the same handle, and two views of one block
  await assertKilnError(() => raw().gradNormClip([a.handle, a.handle], 1, norm.handle), 'ERR_ARG', 'twice');
  await assertKilnError(() => raw().gradNormClip([a.handle, a.handle.view(1, 2)], 1, norm.handle), 'ERR_ARG');
  await assertKilnError(() => raw().gradNormClip([a.handle], 1, a.handle.view(0, 1)), 'ERR_ARG');
  raw().gradNormClip([a.handle.view(0, 2), a.handle.view(2, 2)], 0, norm.handle); // disjoint views are fine
  const p = { lr: 0.1, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0, step: 1 };
  const [m, v, g, c, d] = [zeros([4]), zeros([4]), zeros([4]), zeros([4]), zeros([4])];
  await assertKilnError(() => raw().adamwMulti([a.handle, a.handle], [m.handle, c.handle], [v.handle, d.handle], [g.handle, b.handle], p), 'ERR_ARG', 'twice');
  await assertKilnError(() => raw().adamwMulti([a.handle], [a.handle], [v.handle], [g.handle], p), 'ERR_ARG', 'twice');
  await assertKilnError(() => raw().adamwMulti([a.handle], [m.handle], [m.handle], [g.handle], p), 'ERR_ARG', 'twice');
  await assertKilnError(() => raw().muonMomentumMulti([m.handle, m.handle], [c.handle, d.handle], [g.handle, b.handle], 0.9, true), 'ERR_ARG', 'twice');
  await assertKilnError(() => raw().muonApplyMulti([a.handle, a.handle], [c.handle, d.handle], [1, 1], 0.1, 0), 'ERR_ARG', 'twice');
  await assertKilnError(
    () => new Optimizer([{ rule: 'adamw', lr: 0.1, params: [{ name: 'x', value: a, grad: g }, { name: 'y', value: a, grad: b }] }]),
    'ERR_ARG', 'distinct',
  );
  await assertKilnError(() => new Optimizer([{ rule: 'adamw', lr: 0.1, params: [{ name: 'x', value: a, grad: a }] }]), 'ERR_ARG', 'distinct');
  await synchronize();
});

test('silent wrong answer: the Tensor constructor refuses negative and non-integer shapes', async () => {
  const t = zeros([4]);
  await assertKilnError(() => new Tensor(t.handle.view(0, 4), [-1, -4]), 'ERR_SHAPE');
  await assertKilnError(() => new Tensor(t.handle.view(0, 4), [2.5, 1.6]), 'ERR_SHAPE');
  await assertKilnError(() => new Tensor(t.handle.view(0, 4), [3]), 'ERR_SHAPE');
  t.dispose();
});

test('SharedArrayBuffer-backed typed arrays work in tensor() and write()', async () => {
  const shared = new Float32Array(new SharedArrayBuffer(16));
  shared.set([1, 2, 3, 4]);
  const t = tensor(shared);
  assert.equal([...(await t.toArray())], [1, 2, 3, 4]);
  const update = new Float32Array(new SharedArrayBuffer(16));
  update.set([5, 6, 7, 8]);
  t.write(update);
  assert.equal([...(await t.toArray())], [5, 6, 7, 8]);
  const detached = new Float32Array(new ArrayBuffer(16));
  structuredClone(detached.buffer, { transfer: [detached.buffer] });
  await assertKilnError(() => t.write(detached), 'ERR_SHAPE');
  t.dispose();
});

test('error messages never throw: BigInt, symbols, Object.create(null), revoked Proxies', async () => {
  const t = zeros([2]);
  await assertKilnError(() => ops.cast(t, 1n as never), 'ERR_DTYPE');
  await assertKilnError(() => ops.cast(t, Symbol('x') as never), 'ERR_DTYPE');
  await assertKilnError(() => manualSeed(Object.create(null)), 'ERR_ARG');
  await assertKilnError(() => manualSeed(Symbol('s') as never), 'ERR_ARG');
  await assertKilnError(() => zeros([1n as never]), 'ERR_SHAPE');
  await assertKilnError(() => zeros([2], { device: Object.create(null) }), 'ERR_DEVICE');
  const { proxy, revoke } = Proxy.revocable({}, {});
  revoke();
  for (const value of [1n, Symbol('s'), Object.create(null), proxy, () => 1, 'x'.repeat(1000), -0, NaN]) assert.type(describe(value), 'string');
  t.dispose();
});

test('loadCheckpoint: null header entries and directories in place of files are ERR_CHECKPOINT', async () => {
  const root = mkdtempSync(join(tmpdir(), 'kiln-hostile-'));
  try {
    const config = { ...PRESETS.tiny, layers: 1 };
    const model = new LlamaModel(config);
    const dir = await saveCheckpoint(join(root, 'ckpt'), config, model.namedWeights(), undefined, undefined);
    model.dispose();
    loadCheckpoint(dir); // the valid one loads
    // a null entry in the safetensors header
    const header = Buffer.from(JSON.stringify({ 'model.norm.weight': null }));
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(BigInt(header.length));
    writeFileSync(join(dir, 'model.safetensors'), Buffer.concat([prefix, header]));
    await assertKilnError(() => loadCheckpoint(dir), 'ERR_CHECKPOINT');
    // a directory where model.safetensors should be
    rmSync(join(dir, 'model.safetensors'));
    mkdirSync(join(dir, 'model.safetensors'));
    await assertKilnError(() => loadCheckpoint(dir), 'ERR_CHECKPOINT');
    // ... and where optimizer.safetensors should be
    const dir2 = await saveCheckpoint(join(root, 'ckpt2'), config, new Map([['w', zeros([2])]]), undefined, undefined);
    mkdirSync(join(dir2, 'optimizer.safetensors'));
    await assertKilnError(() => loadCheckpoint(dir2), 'ERR_CHECKPOINT');
    mkdirSync(join(root, 'trainerdir'));
    await assertKilnError(() => loadCheckpoint(''), 'ERR_ARG');
    await assertKilnError(() => loadCheckpoint(5 as never), 'ERR_ARG');
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('findings of the fuzzer in the public API are typed errors now', async () => {
  const config = { ...PRESETS.tiny, layers: 1 };
  await assertKilnError(() => new Trainer({ config, data: 'x', steps: 1n as never, batch: 1, seqLen: 4 }), 'ERR_ARG');
  await assertKilnError(() => new Trainer(undefined as never), 'ERR_ARG');
  await assertKilnError(() => preset(Symbol('p') as never), 'ERR_ARG');
  await assertKilnError(() => lrMultiplier({ kind: 'cosine', warmupSteps: 1n as never, totalSteps: 10 }, 3), 'ERR_ARG');
  await assertKilnError(() => lrMultiplier(null as never, 3), 'ERR_ARG');
  await assertKilnError(() => formatInfo(null as never), 'ERR_ARG');
  await assertKilnError(() => datasheetPeak(new Float32Array(2) as never), 'ERR_ARG');
  await assertKilnError(() => toHfConfig(undefined as never), 'ERR_ARG');
  await assertKilnError(() => totalParameters({} as never), 'ERR_ARG');
  await assertKilnError(() => llamaParamGroups(undefined as never), 'ERR_ARG');
  await assertKilnError(() => generateTokens(undefined as never, [1]), 'ERR_ARG');
  {
    const small = new LlamaModel({ ...config, context: 8 });
    // refused at once: the call returns its rejection before any forward pass allocated a tensor
    // (a wall-clock bound failed on a loaded machine)
    const allocations = memoryStats('cpu').allocations;
    const refused = generateTokens(small, [1, 2], { maxTokens: 2 ** 31 });
    assert.is(memoryStats('cpu').allocations, allocations, 'refused at once, before generating');
    await assertKilnError(() => refused, 'ERR_ARG', 'maxTokens');
    small.dispose();
  }
  await assertKilnError(() => tensor(new Proxy(new Float32Array(4), {}) as never), 'ERR_ARG');
  await assertKilnError(() => zeros([4]).write(new Proxy(new Float32Array(4), {}) as never), 'ERR_DTYPE');
  await assertKilnError(() => ops.add(Object.create(Tensor.prototype), zeros([1])), 'ERR_ARG');
  await assertKilnError(() => ops.add(new Proxy(zeros([1]), {}), zeros([1])), 'ERR_ARG');
  const model = new LlamaModel(config);
  await assertKilnError(() => model.loadWeights(new Proxy(new Map(), {}) as never), 'ERR_ARG');
  // a targetCount that is an object: the comparison used to call Tensor.prototype.toString on a fake
  const ids = tensor(Int32Array.from([1, 2, 3, 4])).reshape(1, 4);
  await assertKilnError(() => model.forwardBackward(ids, ids, Object.create(Tensor.prototype)), 'ERR_ARG', 'targetCount');
  await assertKilnError(() => model.forwardBackward(ids, ids, 4, 1n as never), 'ERR_ARG', 'lossScale');
  assert.is(String(Object.create(Tensor.prototype)), 'Tensor(not a kiln tensor)');
  ids.dispose();
  model.dispose();
});

test('an optimizer step with a disposed tensor fails before it changes any state', async () => {
  const w = randn([4, 3], { seed: 1 });
  const g = randn([4, 3], { seed: 2 });
  const n = randn([3], { seed: 3 });
  const ng = randn([3], { seed: 4 });
  const opt = new Optimizer([
    { rule: 'muon', lr: 0.02, params: [{ name: 'w', value: w, grad: g }] },
    { rule: 'adamw', lr: 0.01, params: [{ name: 'n', value: n, grad: ng }] },
  ]);
  const before = await w.toArray();
  n.dispose();
  await assertKilnError(() => opt.update(), 'ERR_DISPOSED');
  assert.is(opt.step, 0, 'the step count did not advance');
  assert.equal(await w.toArray(), before, 'the muon weight was not updated by the failed step');
  opt.dispose();
});

test('reachability: the public classes and helpers are exported from the package root', () => {
  for (const value of [LlamaModel, Optimizer, Trainer, loadCheckpoint, saveCheckpoint, llamaParamGroups, preset]) assert.type(value, 'function');
});

test.run();
