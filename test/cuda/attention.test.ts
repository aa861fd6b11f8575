/**
 * CUDA attention against references on fresh random data (skipped without a GPU). The bf16/f16
 * rule (FlashAttention's): the kernel's max error against an f64 computation on the same
 * rounded inputs is at most 2x that of a naive half-precision computation (probabilities
 * rounded to the dtype before P·V, output rounded) plus a small absolute slack.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { type DType, KilnError, type Tensor, ops, tensor, zeros } from '../../lib/index.js';
import { naiveAttention } from '../attention_reference.js';
import { assertClose, assertKilnError, cudaTest, seededValues } from '../helpers.js';

const test = suite('cuda attention');

function maxError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

async function roundTo(values: ArrayLike<number>, dtype: DType): Promise<Float32Array> {
  return (await tensor(Float64Array.from(values), { dtype: 'f64' }).cast('f32').cast(dtype).toArray()) as Float32Array;
}

const cases = [
  { B: 1, T: 64, Hq: 1, Hkv: 1, D: 64, causal: false },
  { B: 2, T: 17, Hq: 4, Hkv: 2, D: 64, causal: true },
  { B: 1, T: 1, Hq: 8, Hkv: 1, D: 128, causal: true },
  { B: 1, T: 200, Hq: 8, Hkv: 1, D: 128, causal: true },
  { B: 1, T: 1000, Hq: 2, Hkv: 2, D: 64, causal: true },
  { B: 1, T: 2048, Hq: 2, Hkv: 1, D: 128, causal: true },
  { B: 1, T: 4097, Hq: 1, Hkv: 1, D: 64, causal: true },
  { B: 1, T: 333, Hq: 4, Hkv: 4, D: 128, causal: false },
];

interface Case {
  B: number;
  Tq: number;
  Tk: number;
  Hq: number;
  Hkv: number;
  D: number;
  causal: boolean;
}

async function checkAgainstF64(c: Case, dtype: DType): Promise<void> {
  const qs = [c.B, c.Tq, c.Hq, c.D];
  const ks = [c.B, c.Tk, c.Hkv, c.D];
  const n = (s: number[]) => s.reduce((a, b) => a * b, 1);
  const make = (seed: number, shape: number[]) => tensor(seededValues(n(shape), seed, 1.5), { shape }).cast(dtype);
  const q = make(1, qs);
  const k = make(2, ks);
  const v = make(3, ks);
  const dout = make(4, qs);
  const [qh, kh, vh] = [await q.toArray(), await k.toArray(), await v.toArray()];
  const scale = Math.fround(1 / Math.sqrt(c.D));
  const shape = { B: c.B, Tq: c.Tq, Tk: c.Tk, Hq: c.Hq, Hkv: c.Hkv, D: c.D };
  const exact = naiveAttention(qh, kh, vh, shape, c.causal, scale);
  const roundP = dtype === 'bf16' ? (x: number) => bf16(x) : (x: number) => Math.fround(x);
  const naive = naiveAttention(qh, kh, vh, shape, c.causal, scale, roundP);
  const naiveError = maxError(await roundTo(naive.out, dtype), exact.out);

  const gpu = ops.attention(q.to('cuda'), k.to('cuda'), v.to('cuda'), { causal: c.causal });
  const out = await gpu.out.toArray();
  const error = maxError(out, exact.out);
  assert.ok(error <= 2 * naiveError + 1e-4, `out: max error ${error} vs naive ${dtype} ${naiveError}`);
  // rows that see no key (Tq > Tk, causal): lse = -inf (assertClose takes -inf == -inf) and out = 0
  assertClose(await gpu.lse.toArray(), exact.lse, 1e-3, 1e-3, 'lse');

  // backward: against the f64 CPU backward on the same rounded inputs; the naive baseline is
  // the f32 CPU backward rounded to the dtype
  const f64 = (t: Tensor) => t.cast('f64');
  const ref = ops.attention(f64(q), f64(k), f64(v), { causal: c.causal });
  const gradsRef = ops.attentionBackward(f64(q), f64(k), f64(v), ref.out, ref.lse, f64(dout), { causal: c.causal });
  const f32 = (t: Tensor) => t.cast('f32');
  const r32 = ops.attention(f32(q), f32(k), f32(v), { causal: c.causal });
  const grads32 = ops.attentionBackward(f32(q), f32(k), f32(v), r32.out, r32.lse, f32(dout), { causal: c.causal });
  const gradsGpu = ops.attentionBackward(q.to('cuda'), k.to('cuda'), v.to('cuda'), gpu.out, gpu.lse, dout.to('cuda'), { causal: c.causal });
  for (const key of ['dq', 'dk', 'dv'] as const) {
    const exactGrad = await gradsRef[key].toArray();
    const naiveGrad = await roundTo(await grads32[key].toArray(), dtype);
    const bound = 4 * maxError(naiveGrad, exactGrad) + 1e-3;
    const got = maxError(await gradsGpu[key].toArray(), exactGrad);
    assert.ok(got <= bound, `${key}: max error ${got} vs bound ${bound}`);
  }
}

// Tq != Tk: causal masking is bottom-right aligned (query i sees keys j <= i + Tk - Tq). With
// Tq > Tk the first Tq - Tk query rows see no key at all (out = 0, lse = -inf, dq = 0).
const crossCases: Case[] = [
  { B: 2, Tq: 50, Tk: 20, Hq: 4, Hkv: 2, D: 64, causal: true },
  { B: 1, Tq: 130, Tk: 64, Hq: 2, Hkv: 1, D: 128, causal: true },
  { B: 1, Tq: 7, Tk: 300, Hq: 4, Hkv: 1, D: 128, causal: true },
  { B: 2, Tq: 1, Tk: 77, Hq: 2, Hkv: 2, D: 64, causal: true },
  { B: 1, Tq: 90, Tk: 33, Hq: 2, Hkv: 1, D: 64, causal: false },
];

for (const dtype of ['bf16', 'f16'] as DType[]) {
  for (const c of [...cases.map((x) => ({ B: x.B, Tq: x.T, Tk: x.T, Hq: x.Hq, Hkv: x.Hkv, D: x.D, causal: x.causal })), ...crossCases]) {
    const name = `B${c.B} Tq${c.Tq} Tk${c.Tk} Hq${c.Hq} Hkv${c.Hkv} D${c.D}${c.causal ? ' causal' : ''} ${dtype}`;
    cudaTest(test, `forward and backward vs f64 (2x naive ${dtype} error): ${name}`, () => checkAgainstF64(c, dtype));
  }
}

function bf16(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer);
  u[0] = (u[0] + 0x7fff + ((u[0] >> 16) & 1)) & 0xffff0000;
  return f[0];
}

cudaTest(test, 'rope, kv append and paged decode match the CPU', async () => {
  for (const dtype of ['bf16', 'f16'] as DType[]) {
    const [B, T, H, D] = [2, 33, 4, 128];
    const x = tensor(seededValues(B * T * H * D, 5), { shape: [B, T, H, D] }).cast(dtype);
    const pos = tensor(Int32Array.from({ length: B * T }, (_, i) => (i * 13) % 4000), { shape: [B, T] });
    const cpu = await ops.rope(x.cast('f32'), pos).toArray();
    const gpu = await ops.rope(x.to('cuda'), pos.to('cuda')).toArray();
    assertClose(gpu, await roundTo(cpu, dtype), dtype === 'bf16' ? 1.6e-2 : 2e-3, 1e-3, `rope ${dtype}`);

    const [Hq, Hkv, blockSize] = [8, 2, 16];
    const lengths = [1, 17, 300, 64];
    const maxBlocks = Math.ceil(300 / blockSize);
    const numBlocks = lengths.length * maxBlocks;
    const table = Int32Array.from({ length: lengths.length * maxBlocks }, (_, i) => (i * 7) % numBlocks);
    const mkCache = (device: 'cpu' | 'cuda') => ({
      k: zeros([numBlocks, blockSize, Hkv, D], { dtype: device === 'cpu' ? 'f32' : dtype, device }),
      v: zeros([numBlocks, blockSize, Hkv, D], { dtype: device === 'cpu' ? 'f32' : dtype, device }),
      blockTable: tensor(table, { shape: [lengths.length, maxBlocks], device }),
    });
    const cpuCache = mkCache('cpu');
    const gpuCache = mkCache('cuda');
    const Tmax = 300;
    const kNew = tensor(seededValues(lengths.length * Tmax * Hkv * D, 6), { shape: [lengths.length, Tmax, Hkv, D] }).cast(dtype);
    const vNew = tensor(seededValues(lengths.length * Tmax * Hkv * D, 7), { shape: [lengths.length, Tmax, Hkv, D] }).cast(dtype);
    const start = tensor(new Int32Array(lengths.length));
    ops.kvAppend(cpuCache, kNew.cast('f32'), vNew.cast('f32'), start);
    ops.kvAppend(gpuCache, kNew.to('cuda'), vNew.to('cuda'), start.to('cuda'));
    assert.equal(await gpuCache.k.toArray(), await roundTo(await cpuCache.k.toArray(), dtype), 'appended keys');
    const q = tensor(seededValues(lengths.length * Hq * D, 8), { shape: [lengths.length, Hq, D] }).cast(dtype);
    const lens = tensor(Int32Array.from(lengths));
    const ref = ops.attentionDecode(q.cast('f32'), cpuCache, lens);
    const got = ops.attentionDecode(q.to('cuda'), gpuCache, lens.to('cuda'), { maxSeqLen: 300 });
    assertClose(await got.out.toArray(), await ref.out.toArray(), dtype === 'bf16' ? 2e-2 : 3e-3, 2e-3, `decode ${dtype}`);
    assertClose(await got.lse.toArray(), await ref.lse.toArray(), 1e-3, 1e-3, `decode lse ${dtype}`);
  }
});

// Decode with D = 64, and with GQA groups larger than 8 (the kernel splits a group into chunks of
// 8 query heads: 12 = 8 + 4, 16 = 8 + 8, 32), against the CPU f32 decode on the same rounded data.
cudaTest(test, 'paged decode: D = 64 and GQA groups > 8 match the CPU', async () => {
  for (const { D, Hq, Hkv } of [{ D: 64, Hq: 8, Hkv: 2 }, { D: 64, Hq: 12, Hkv: 1 }, { D: 128, Hq: 16, Hkv: 1 }, { D: 128, Hq: 32, Hkv: 2 }, { D: 64, Hq: 24, Hkv: 2 }]) {
    for (const dtype of ['bf16', 'f16'] as DType[]) {
      const blockSize = 16;
      const lengths = [1, 40, 129];
      const maxBlocks = Math.ceil(129 / blockSize);
      const numBlocks = lengths.length * maxBlocks + 3;
      const table = Int32Array.from({ length: lengths.length * maxBlocks }, (_, i) => (i * 5 + 3) % numBlocks);
      const kv = (seed: number) => tensor(seededValues(numBlocks * blockSize * Hkv * D, seed), { shape: [numBlocks, blockSize, Hkv, D] }).cast(dtype);
      const k = kv(21);
      const v = kv(22);
      const blockTable = tensor(table, { shape: [lengths.length, maxBlocks] });
      const q = tensor(seededValues(lengths.length * Hq * D, 23, 2), { shape: [lengths.length, Hq, D] }).cast(dtype);
      const lens = tensor(Int32Array.from(lengths));
      const ref = ops.attentionDecode(q.cast('f32'), { k: k.cast('f32'), v: v.cast('f32'), blockTable }, lens);
      const got = ops.attentionDecode(q.to('cuda'), { k: k.to('cuda'), v: v.to('cuda'), blockTable: blockTable.to('cuda') }, lens.to('cuda'), { maxSeqLen: 129 });
      const label = `decode D${D} Hq${Hq} Hkv${Hkv} ${dtype}`;
      assertClose(await got.out.toArray(), await roundTo(await ref.out.toArray(), dtype), dtype === 'bf16' ? 2e-2 : 3e-3, 2e-3, label);
      assertClose(await got.lse.toArray(), await ref.lse.toArray(), 1e-3, 1e-3, `${label} lse`);
    }
  }
});

// RoPE's backward (rotation by -theta) and the in-place forms, as the training step uses them.
cudaTest(test, 'rope backward and in place match the CPU', async () => {
  for (const dtype of ['f32', 'bf16', 'f16'] as DType[]) {
    const [B, T, H, D] = [2, 19, 3, 64];
    const x = tensor(seededValues(B * T * H * D, 31), { shape: [B, T, H, D] }).cast(dtype);
    const pos = tensor(Int32Array.from({ length: B * T }, (_, i) => (i * 29 + 5) % 2048), { shape: [B, T] });
    const rtol = dtype === 'bf16' ? 1.6e-2 : dtype === 'f16' ? 2e-3 : 1e-5;
    for (const backward of [false, true]) {
      const ref = await roundTo(await ops.rope(x.cast('f64'), pos, { backward }).toArray(), dtype);
      const gpu = await ops.rope(x.to('cuda'), pos.to('cuda'), { backward }).toArray();
      assertClose(gpu, ref, rtol, 1e-3, `rope${backward ? ' backward' : ''} ${dtype}`);
      const inPlace = x.to('cuda');
      const same = ops.rope(inPlace, pos.to('cuda'), { backward, inPlace: true });
      assert.ok(same === inPlace, 'inPlace returns x');
      assert.equal(await inPlace.toArray(), gpu, `in-place rope${backward ? ' backward' : ''} ${dtype} equals the out-of-place result`);
    }
    // backward undoes forward (up to rounding)
    const there = ops.rope(x.to('cuda'), pos.to('cuda'));
    const back = await ops.rope(there, pos.to('cuda'), { backward: true, inPlace: true }).toArray();
    assertClose(back, await x.toArray(), 2 * rtol, 2e-3, `rope round trip ${dtype}`);
  }
});

// kvAppend after tokens already cached (start > 0, crossing block boundaries), then decode over
// the whole sequence: the CUDA cache equals the CPU cache.
cudaTest(test, 'kvAppend with start > 0 matches the CPU', async () => {
  for (const dtype of ['bf16', 'f32'] as DType[]) {
    const [Hkv, D, blockSize] = [2, 64, 8];
    const maxBlocks = 6;
    const B = 3;
    const numBlocks = B * maxBlocks;
    const table = Int32Array.from({ length: B * maxBlocks }, (_, i) => (i * 7 + 2) % numBlocks);
    const mk = (device: 'cpu' | 'cuda') => ({
      k: zeros([numBlocks, blockSize, Hkv, D], { dtype, device }),
      v: zeros([numBlocks, blockSize, Hkv, D], { dtype, device }),
      blockTable: tensor(table, { shape: [B, maxBlocks], device }),
    });
    const cpu = mk('cpu');
    const gpu = mk('cuda');
    // first a prefill of 5 tokens each, then 11 more at start = [5, 5, 5], then 1 at [16, 16, 16]
    let seed = 40;
    for (const [Tnew, first] of [[5, 0], [11, 5], [1, 16]] as const) {
      const kNew = tensor(seededValues(B * Tnew * Hkv * D, seed++), { shape: [B, Tnew, Hkv, D] }).cast(dtype);
      const vNew = tensor(seededValues(B * Tnew * Hkv * D, seed++), { shape: [B, Tnew, Hkv, D] }).cast(dtype);
      const start = tensor(new Int32Array(B).fill(first));
      ops.kvAppend(cpu, kNew, vNew, start);
      ops.kvAppend(gpu, kNew.to('cuda'), vNew.to('cuda'), start.to('cuda'));
    }
    assert.equal(await gpu.k.toArray(), await cpu.k.toArray(), `keys after appends at start > 0 (${dtype})`);
    assert.equal(await gpu.v.toArray(), await cpu.v.toArray(), `values after appends at start > 0 (${dtype})`);
  }
});

// seqLens and block tables live on the device: the CUDA decode checks them in the kernel (no
// host sync), computes nothing out of bounds, and reports the first bad value as ERR_ARG at the
// next wait, with the CPU op's message; the device keeps working afterwards.
cudaTest(test, 'bad seqLens, block ids and append positions are ERR_ARG on CUDA as on the CPU', async () => {
  const [Hkv, D, blockSize] = [1, 64, 8];
  const mk = (device: 'cpu' | 'cuda', ids: number[]) => ({
    k: zeros([4, blockSize, Hkv, D], { dtype: 'bf16', device }),
    v: zeros([4, blockSize, Hkv, D], { dtype: 'bf16', device }),
    blockTable: tensor(Int32Array.from(ids), { shape: [2, 2], device }),
  });
  const q = zeros([2, 2, D], { dtype: 'bf16' });
  const cases: { name: string; ids: number[]; lens: number[]; message: string }[] = [
    { name: 'seqLen 0', ids: [0, 1, 2, 3], lens: [0, 3], message: 'seq_lens[0] = 0 is outside [1, 16]' },
    { name: 'seqLen past the table', ids: [0, 1, 2, 3], lens: [3, 17], message: 'seq_lens[1] = 17 is outside [1, 16]' },
    { name: 'block id past the cache', ids: [0, 9, 2, 3], lens: [12, 3], message: 'block_table[0, 1] = 9 is outside [0, 4)' },
    { name: 'negative block id', ids: [0, 1, -1, 3], lens: [2, 3], message: 'block_table[1, 0] = -1 is outside [0, 4)' },
  ];
  for (const c of cases) {
    for (const device of ['cpu', 'cuda'] as const) {
      const cache = mk(device, c.ids);
      const qd = device === 'cpu' ? q.cast('f32') : q.to('cuda');
      const cacheD = device === 'cpu' ? { ...cache, k: cache.k.cast('f32'), v: cache.v.cast('f32') } : cache;
      await assertKilnError(async () => {
        const { out } = ops.attentionDecode(qd, cacheD, tensor(Int32Array.from(c.lens), { device }), { maxSeqLen: 16 });
        await out.toArray();
      }, 'ERR_ARG', c.message);
    }
  }
  // an append past the table, and into a bad block
  for (const device of ['cpu', 'cuda'] as const) {
    const cache = mk(device, [0, 1, 2, 7]);
    const kNew = zeros([2, 2, Hkv, D], { dtype: 'bf16', device });
    await assertKilnError(async () => {
      ops.kvAppend(cache, kNew, kNew, tensor(new Int32Array([15, 0]), { device }));
      await cache.k.toArray();
    }, 'ERR_ARG', 'token position 16 of sequence 0 does not fit the block table (capacity 16)');
    await assertKilnError(async () => {
      ops.kvAppend(cache, kNew, kNew, tensor(new Int32Array([0, 7]), { device }));
      await cache.k.toArray();
    }, 'ERR_ARG', 'block_table[1, 1] = 7 is outside [0, 4)');
  }
  // the error was reported once and cleared: the device still computes
  const cache = mk('cuda', [0, 1, 2, 3]);
  const { out, lse } = ops.attentionDecode(q.to('cuda'), cache, tensor(new Int32Array([3, 16]), { device: 'cuda' }), { maxSeqLen: 16 });
  assert.equal(Array.from(await out.toArray()), new Array(2 * 2 * D).fill(0), 'decode over zero values');
  for (const x of await lse.toArray()) assert.ok(Number.isFinite(x));
});

// Argument errors the CUDA kernels cannot take are thrown by the call itself (the binding runs the
// launcher's checks before enqueueing), not at the next synchronize.
cudaTest(test, 'CUDA-only argument limits throw at the call', () => {
  const expectThrow = (fn: () => unknown, code: string, what: string) => {
    let error: unknown;
    try {
      fn();
    } catch (e) {
      error = e;
    }
    assert.ok(error instanceof KilnError && error.code === code, `${what}: expected ${code} at the call, got ${String(error)}`);
  };
  const q96 = zeros([1, 4, 2, 96], { dtype: 'bf16', device: 'cuda' });
  expectThrow(() => ops.attention(q96, q96, q96), 'ERR_ARG', 'attention head dim 96');
  const cache = { k: zeros([2, 8, 1, 64], { device: 'cuda' }), v: zeros([2, 8, 1, 64], { device: 'cuda' }), blockTable: zeros([1, 2], { dtype: 'i32', device: 'cuda' }) };
  expectThrow(() => ops.attentionDecode(zeros([1, 2, 64], { device: 'cuda' }), cache, zeros([1], { dtype: 'i32', device: 'cuda' })), 'ERR_DTYPE', 'f32 decode');
  const D = 16385;
  const x = zeros([2, D], { dtype: 'bf16', device: 'cuda' });
  const w = zeros([D], { dtype: 'bf16', device: 'cuda' });
  const { rstd } = ops.rmsnorm(x, w);
  expectThrow(() => ops.rmsnormBackward(x, x, w, rstd, { dweight: zeros([D], { device: 'cuda' }) }), 'ERR_SHAPE', 'rmsnorm backward D > 16384');
});

test.run();
