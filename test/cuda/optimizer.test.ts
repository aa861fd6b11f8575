/**
 * The optimizer on CUDA against the CPU on fresh random data (skipped without a GPU): the
 * multi-tensor AdamW / Muon momentum / Muon apply kernels, the bf16 Newton–Schulz, and whole
 * Optimizer steps.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { type Tensor, memoryStats, randn, synchronize, tensor, zeros } from '../../lib/index.js';
import { binding } from '../../lib/native.js';
import { newtonSchulz } from '../../lib/ops/newton_schulz.js';
import { Optimizer } from '../../lib/optim/optimizer.js';
import { dtypeCode } from '../../lib/dtype.js';
import { RTOL, assertClose, assertKilnError, cudaTest } from '../helpers.js';

const test = suite('cuda optimizer');

// odd sizes: 1 element, a partial 64K chunk, one past a chunk, several chunks
const SIZES = [1, 1000, 65537, 200000];
const fresh = (n: number, seed: number, std = 1) => randn([n], { seed, std });

cudaTest(test, 'multi-tensor AdamW matches the CPU (f32 state, several odd-sized tensors, one launch)', async () => {
  const cpu = SIZES.map((n, i) => ({ w: fresh(n, 10 + i), m: fresh(n, 20 + i, 0.1), v: fresh(n, 30 + i, 0.01), g: fresh(n, 40 + i) }));
  // v must be non-negative
  for (const t of cpu) t.v = tensor(Float32Array.from(await t.v.toArray(), Math.abs));
  const gpu = cpu.map((t) => ({ w: t.w.to('cuda'), m: t.m.to('cuda'), v: t.v.to('cuda'), g: t.g.to('cuda') }));
  for (const step of [1, 2, 7]) {
    const params = { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step };
    for (const side of [cpu, gpu]) binding().adamwMulti(side.map((t) => t.w.handle), side.map((t) => t.m.handle), side.map((t) => t.v.handle), side.map((t) => t.g.handle), params);
  }
  for (const [i, t] of cpu.entries()) {
    // same f32 formula; only the order of a few float operations may differ
    assertClose(await gpu[i].w.toArray(), await t.w.toArray(), 1e-5, 1e-7, `w[${i}]`);
    assertClose(await gpu[i].m.toArray(), await t.m.toArray(), 1e-6, 1e-8, `m[${i}]`);
    assertClose(await gpu[i].v.toArray(), await t.v.toArray(), 1e-6, 1e-10, `v[${i}]`);
  }
});

for (const nesterov of [true, false]) {
  for (const updateDType of ['f32', 'bf16'] as const) {
    cudaTest(test, `multi-tensor Muon momentum (nesterov ${nesterov}, ${updateDType} update) and apply match the CPU`, async () => {
      const m = SIZES.map((n, i) => fresh(n, 50 + i, 0.1));
      const g = SIZES.map((n, i) => fresh(n, 60 + i));
      const uCpu = SIZES.map((n) => zeros([n]));
      const mCpu = m.map((t) => t.clone());
      binding().muonMomentumMulti(mCpu.map((t) => t.handle), uCpu.map((t) => t.handle), g.map((t) => t.handle), 0.95, nesterov);
      const mGpu = m.map((t) => t.to('cuda'));
      const uGpu = SIZES.map((n) => zeros([n], { device: 'cuda', dtype: updateDType }));
      binding().muonMomentumMulti(mGpu.map((t) => t.handle), uGpu.map((t) => t.handle), g.map((t) => t.to('cuda').handle), 0.95, nesterov);
      for (const i of SIZES.keys()) {
        assertClose(await mGpu[i].toArray(), await mCpu[i].toArray(), 1e-6, 1e-8, `momentum[${i}]`);
        assertClose(await uGpu[i].toArray(), await uCpu[i].toArray(), updateDType === 'bf16' ? RTOL.bf16 : 1e-6, 1e-8, `update[${i}]`);
      }
      // apply: w -= lr·s_i·o_i with weight decay, o in the update dtype
      const w = SIZES.map((n, i) => fresh(n, 70 + i));
      const wCpu = w.map((t) => t.clone());
      const wGpu = w.map((t) => t.to('cuda'));
      const scales = SIZES.map((_, i) => 0.5 + i);
      const oCpu = uGpu.map((t) => t); // the CPU applies the very values the GPU holds
      const oHost: Tensor[] = [];
      for (const t of oCpu) oHost.push(tensor(Float32Array.from(await t.toArray())));
      binding().muonApplyMulti(wCpu.map((t) => t.handle), oHost.map((t) => t.handle), scales, 0.02, 0.1);
      binding().muonApplyMulti(wGpu.map((t) => t.handle), uGpu.map((t) => t.handle), scales, 0.02, 0.1);
      for (const i of SIZES.keys()) assertClose(await wGpu[i].toArray(), await wCpu[i].toArray(), 1e-6, 1e-7, `apply[${i}]`);
    });
  }
}

for (const dtype of ['f32', 'bf16'] as const) {
  cudaTest(test, `NorMuon row normalization on CUDA matches the CPU (${dtype} update)`, async () => {
    for (const [rows, cols] of [[1, 7], [37, 300], [2048, 5632]]) {
      const o = randn([rows, cols], { seed: rows, std: 0.05 }).to('cpu', dtype).to('cpu', 'f32'); // values representable in both
      const v = tensor(Float32Array.from({ length: rows }, (_, i) => 1e-3 * (1 + (i % 5))));
      const oCpu = o.clone();
      const vCpu = v.clone();
      binding().normuonNormalize(oCpu.handle, vCpu.handle, rows, cols, 0.95, 1e-8);
      const oGpu = o.to('cuda', dtype);
      const vGpu = v.to('cuda');
      binding().normuonNormalize(oGpu.handle, vGpu.handle, rows, cols, 0.95, 1e-8);
      assertClose(await vGpu.toArray(), await vCpu.toArray(), 1e-5, 0, `${rows}x${cols} second moments`);
      // f32: the CPU rounds twice (row factor, then rescale) where CUDA rounds once; bf16 stores round to bf16
      assertClose(await oGpu.toArray(), await oCpu.toArray(), dtype === 'bf16' ? RTOL.bf16 : 1e-5, 1e-7, `${rows}x${cols} update`);
    }
  });
}

/** max |x − ref| over max |ref| */
function relativeError(x: ArrayLike<number>, ref: ArrayLike<number>): number {
  let err = 0;
  let scale = 0;
  for (let i = 0; i < ref.length; i++) {
    err = Math.max(err, Math.abs(x[i] - ref[i]));
    scale = Math.max(scale, Math.abs(ref[i]));
  }
  return err / scale;
}

cudaTest(test, 'bf16 Newton–Schulz on CUDA is as close to the f64 oracle as the CPU bf16 path (square, wide, tall, batched, 2048x5632)', async () => {
  for (const [batch, rows, cols] of [[1, 64, 64], [1, 96, 257], [1, 300, 70], [3, 128, 384], [1, 2048, 5632]]) {
    const g = randn([batch, rows, cols], { seed: rows + cols });
    const oracle = await newtonSchulz(g, { compute: 'f64' }).toArray();
    const cpuBf16 = relativeError(await newtonSchulz(g, { compute: 'bf16' }).toArray(), oracle);
    for (const outDType of ['f32', 'bf16'] as const) {
      const out = zeros([batch, rows, cols], { device: 'cuda', dtype: outDType });
      newtonSchulz(g.to('cuda'), { compute: 'bf16', out });
      const gpu = relativeError(await out.toArray(), oracle);
      // the rule for half-precision kernels: at most twice the error of the naive half-precision reference
      assert.ok(gpu <= 2 * cpuBf16 + (outDType === 'bf16' ? RTOL.bf16 : 0), `${batch}x${rows}x${cols} -> ${outDType}: cuda error ${gpu}, cpu bf16 error ${cpuBf16}`);
    }
    // bf16 input takes the same path
    const fromBf16 = newtonSchulz(g.to('cuda', 'bf16'), { compute: 'bf16' });
    assert.ok(relativeError(await fromBf16.toArray(), oracle) <= 2 * cpuBf16 + RTOL.bf16, 'bf16 input');
  }
});

cudaTest(test, 'whole Optimizer steps on CUDA follow the CPU (every Muon variant, AdamW; no cudaMalloc after the first step)', async () => {
  for (const variant of ['standard', 'normuon', 'extrapolated'] as const) {
    const make = (device: 'cpu' | 'cuda:0') => [
      ['q', 256, 128], ['k', 256, 128], ['o', 128, 256], ['embed', 1000, 128],
    ].map(([name, rows, cols], i) => ({ name: name as string, value: randn([rows as number, cols as number], { seed: 80 + i, std: 0.02, device }), grad: zeros([rows as number, cols as number], { device }) }));
    const groups = (ps: ReturnType<typeof make>, compute: 'bf16' | 'f32') => [
      { rule: 'muon' as const, variant, params: ps.slice(0, 3), lr: 0.02, weightDecay: 0.01, newtonSchulz: { compute } },
      { rule: 'adamw' as const, params: ps.slice(3), lr: 3e-3 },
    ];
    const cpuParams = make('cpu');
    const gpuParams = make('cuda:0');
    const cpu = new Optimizer(groups(cpuParams, 'bf16'));
    const gpu = new Optimizer(groups(gpuParams, 'bf16'));
    let misses = 0;
    for (let step = 0; step < 3; step++) {
      // every temporary is disposed (using) and the queue drained before counting, so a block
      // freed by the last step is back in the cache whatever the GC or the queue's timing
      await synchronize();
      if (step === 1) misses = memoryStats('cuda').deviceAllocations;
      cpu.prepareGradientPoint();
      gpu.prepareGradientPoint();
      for (const [i, p] of cpuParams.entries()) {
        using g = randn([...p.value.shape], { seed: 900 + 10 * step + i });
        using gGpu = g.to('cuda');
        binding().copy(p.grad.handle, g.handle);
        binding().copy(gpuParams[i].grad.handle, gGpu.handle);
      }
      cpu.update();
      gpu.update();
    }
    await synchronize();
    assert.is(memoryStats('cuda').deviceAllocations, misses, 'no cudaMalloc in steady-state optimizer steps');
    for (const [i, p] of cpuParams.entries()) {
      // the CUDA NS input/output are bf16 where the CPU keeps f32: compare the weight change
      const before = await randn([...p.value.shape], { seed: 80 + i, std: 0.02 }).toArray();
      const a = await p.value.toArray();
      const b = await gpuParams[i].value.toArray();
      const da = a.map((x, j) => x - before[j]);
      const db = b.map((x, j) => x - before[j]);
      let dot = 0, na = 0, nb = 0;
      for (let j = 0; j < da.length; j++) {
        dot += da[j] * db[j];
        na += da[j] * da[j];
        nb += db[j] * db[j];
      }
      assert.ok(dot / Math.sqrt(na * nb) > 0.99 && Math.abs(Math.sqrt(nb / na) - 1) < 0.02, `${variant} ${p.name}: cosine ${dot / Math.sqrt(na * nb)}, norm ratio ${Math.sqrt(nb / na)}`);
    }
    cpu.dispose();
    gpu.dispose();
  }
});

cudaTest(test, 'mixed devices and what the CUDA paths cannot take are typed errors', async () => {
  const c = zeros([4], { device: 'cuda' });
  const h = zeros([4]);
  const params = { lr: 0.1, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0, step: 1 };
  const call = (f: string, ...args: unknown[]) => (binding() as unknown as Record<string, (...x: unknown[]) => void>)[f](...args);
  // one device per call
  await assertKilnError(() => call('adamwMulti', [c.handle], [c.handle], [h.handle], [c.handle], params), 'ERR_DEVICE');
  await assertKilnError(() => call('adamwMulti', [c.handle, h.handle], [c.handle, h.handle], [c.handle, h.handle], [c.handle, h.handle], params), 'ERR_DEVICE');
  await assertKilnError(() => call('muonMomentumMulti', [c.handle], [c.handle], [h.handle], 0.9, true), 'ERR_DEVICE');
  await assertKilnError(() => call('muonApplyMulti', [c.handle], [h.handle], [1], 0.1, 0), 'ERR_DEVICE');
  await assertKilnError(() => call('normuonNormalize', zeros([2, 2], { device: 'cuda' }).handle, zeros([2]).handle, 2, 2, 0.9, 1e-8), 'ERR_DEVICE');
  // Newton–Schulz on CUDA: bf16 compute only, no oracle, f32/bf16 out, one device
  const g = randn([8, 8], { seed: 1, device: 'cuda' });
  const ns = (out: Tensor, x: Tensor, compute: 'bf16' | 'f32', reference = false) =>
    call('newtonSchulz', out.handle, x.handle, { batch: 1, rows: 8, cols: 8, steps: 1, coefficients: [3.4445, -4.775, 2.0315], normScale: 1, eps: 1e-7, compute: dtypeCode(compute), reference });
  await assertKilnError(() => ns(zeros([8, 8], { device: 'cuda' }), g, 'f32'), 'ERR_DTYPE');
  await assertKilnError(() => ns(zeros([8, 8], { device: 'cuda' }), g, 'bf16', true), 'ERR_ARG');
  await assertKilnError(() => ns(zeros([8, 8], { device: 'cuda', dtype: 'f16' }), g, 'bf16'), 'ERR_DTYPE');
  await assertKilnError(() => ns(zeros([8, 8]), g, 'bf16'), 'ERR_DEVICE');
  await assertKilnError(() => newtonSchulz(g, { compute: 'f32' }), 'ERR_DTYPE');
  await assertKilnError(() => newtonSchulz(g, { out: zeros([8, 8]) }), 'ERR_DEVICE');
  // an optimizer over parameters on two devices
  const p = (name: string, device: 'cpu' | 'cuda') => ({ name, value: zeros([4, 4], { device }), grad: zeros([4, 4], { device }) });
  await assertKilnError(() => new Optimizer([{ rule: 'muon', params: [p('a', 'cuda'), p('b', 'cpu')], lr: 0.02 }]), 'ERR_DEVICE');
  await assertKilnError(() => new Optimizer([{ rule: 'muon', params: [p('a', 'cuda')], lr: 0.02 }, { rule: 'adamw', params: [p('b', 'cpu')], lr: 0.01 }]), 'ERR_DEVICE');
});

test.run();
