/**
 * CUDA attention against references on fresh random data (skipped without a GPU). The bf16/f16
 * rule (FlashAttention's): the kernel's max error against an f64 computation on the same
 * rounded inputs is at most 2x that of a naive half-precision computation (probabilities
 * rounded to the dtype before P·V, output rounded) plus a small absolute slack.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { type DType, type Tensor, ops, tensor, zeros } from '../../lib/index.js';
import { naiveAttention } from '../attention_reference.js';
import { assertClose, cudaTest, seededValues } from '../helpers.js';

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

for (const dtype of ['bf16', 'f16'] as DType[]) {
  for (const c of cases) {
    const name = `B${c.B} T${c.T} Hq${c.Hq} Hkv${c.Hkv} D${c.D}${c.causal ? ' causal' : ''} ${dtype}`;
    cudaTest(test, `forward and backward vs f64 (2x naive ${dtype} error): ${name}`, async () => {
      const qs = [c.B, c.T, c.Hq, c.D];
      const ks = [c.B, c.T, c.Hkv, c.D];
      const n = (s: number[]) => s.reduce((a, b) => a * b, 1);
      const make = (seed: number, shape: number[]) => tensor(seededValues(n(shape), seed, 1.5), { shape }).cast(dtype);
      const q = make(1, qs);
      const k = make(2, ks);
      const v = make(3, ks);
      const dout = make(4, qs);
      const [qh, kh, vh] = [await q.toArray(), await k.toArray(), await v.toArray()];
      const scale = Math.fround(1 / Math.sqrt(c.D));
      const shape = { B: c.B, Tq: c.T, Tk: c.T, Hq: c.Hq, Hkv: c.Hkv, D: c.D };
      const exact = naiveAttention(qh, kh, vh, shape, c.causal, scale);
      const roundP = dtype === 'bf16' ? (x: number) => bf16(x) : (x: number) => Math.fround(x);
      const naive = naiveAttention(qh, kh, vh, shape, c.causal, scale, roundP);
      const naiveError = maxError(await roundTo(naive.out, dtype), exact.out);

      const gpu = ops.attention(q.to('cuda'), k.to('cuda'), v.to('cuda'), { causal: c.causal });
      const out = await gpu.out.toArray();
      const error = maxError(out, exact.out);
      assert.ok(error <= 2 * naiveError + 1e-4, `out: max error ${error} vs naive ${dtype} ${naiveError}`);
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
    });
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

test.run();
