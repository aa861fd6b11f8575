import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { type DType, type Tensor, ops, tensor, zeros } from '../../lib/index.js';
import { type AttnShape, naiveAttention } from '../attention_reference.js';
import { RTOL, assertClose, assertKilnError, seededValues } from '../helpers.js';

const test = suite('attention (cpu)');

function make(values: Float64Array, shape: number[], dtype: DType): Tensor {
  return tensor(values, { shape, dtype: dtype === 'f64' ? 'f64' : 'f32' }).cast(dtype);
}

interface Case extends AttnShape {
  causal: boolean;
}

const cases: Case[] = [
  { B: 1, Tq: 1, Tk: 1, Hq: 1, Hkv: 1, D: 8, causal: true },
  { B: 2, Tq: 17, Tk: 17, Hq: 4, Hkv: 2, D: 16, causal: true },
  { B: 1, Tq: 17, Tk: 17, Hq: 8, Hkv: 1, D: 64, causal: false },
  { B: 1, Tq: 33, Tk: 70, Hq: 2, Hkv: 2, D: 32, causal: true }, // Tq < Tk: bottom-right aligned
  { B: 1, Tq: 70, Tk: 33, Hq: 2, Hkv: 1, D: 8, causal: true }, // Tq > Tk: early rows see no key
  { B: 1, Tq: 1000, Tk: 1000, Hq: 2, Hkv: 1, D: 64, causal: true },
  { B: 1, Tq: 129, Tk: 129, Hq: 8, Hkv: 8, D: 128, causal: true },
  { B: 1, Tq: 2048, Tk: 2048, Hq: 1, Hkv: 1, D: 16, causal: true },
  { B: 1, Tq: 4097, Tk: 4097, Hq: 1, Hkv: 1, D: 8, causal: true },
];

const label = (c: Case) => `B${c.B} Tq${c.Tq} Tk${c.Tk} Hq${c.Hq} Hkv${c.Hkv} D${c.D}${c.causal ? ' causal' : ''}`;

for (const [index, c] of cases.entries()) {
  for (const dtype of ['f64', 'f32'] as DType[]) {
    if (dtype === 'f64' && c.Tq > 1000) continue;
    test(`forward matches a naive f64 attention: ${label(c)} ${dtype}`, async () => {
      const qv = seededValues(c.B * c.Tq * c.Hq * c.D, 10 + index, 1.5);
      const kv = seededValues(c.B * c.Tk * c.Hkv * c.D, 20 + index, 1.5);
      const vv = seededValues(c.B * c.Tk * c.Hkv * c.D, 30 + index);
      const q = make(qv, [c.B, c.Tq, c.Hq, c.D], dtype);
      const k = make(kv, [c.B, c.Tk, c.Hkv, c.D], dtype);
      const v = make(vv, [c.B, c.Tk, c.Hkv, c.D], dtype);
      const scale = Math.fround(1 / Math.sqrt(c.D)); // the kernels take the scale in f32
      const ref = naiveAttention(await q.toArray(), await k.toArray(), await v.toArray(), c, c.causal, scale);
      const { out, lse } = ops.attention(q, k, v, { causal: c.causal });
      const tol = dtype === 'f64' ? 1e-10 : 2e-5;
      assertClose(await out.toArray(), ref.out, tol, tol, 'out');
      const gotLse = await lse.toArray();
      for (let i = 0; i < ref.lse.length; i++) {
        if (ref.lse[i] === -Infinity) assert.is(gotLse[i], -Infinity, `lse[${i}] of a row with no key`);
      }
      assertClose(Array.from(gotLse).map((x) => (x === -Infinity ? 0 : x)), Array.from(ref.lse).map((x) => (x === -Infinity ? 0 : x)), tol, tol, 'lse');
      if (c.Tq <= 129) {
        const r = ops.attention(q, k, v, { causal: c.causal, reference: true });
        assertClose(await r.out.toArray(), ref.out, tol, tol, 'reference out');
      }
    });
  }
}

test('bf16 and f16 inputs compute in f32 and round once', async () => {
  const c: Case = { B: 1, Tq: 40, Tk: 40, Hq: 4, Hkv: 2, D: 64, causal: true };
  for (const dtype of ['bf16', 'f16'] as DType[]) {
    const q = make(seededValues(40 * 4 * 64, 1), [1, 40, 4, 64], dtype);
    const k = make(seededValues(40 * 2 * 64, 2), [1, 40, 2, 64], dtype);
    const v = make(seededValues(40 * 2 * 64, 3), [1, 40, 2, 64], dtype);
    const ref = naiveAttention(await q.toArray(), await k.toArray(), await v.toArray(), c, true, 1 / 8);
    const { out } = ops.attention(q, k, v);
    assertClose(await out.toArray(), ref.out, RTOL[dtype] * 2, 1e-3, dtype);
  }
});

/** L = sum(out · W): dL/dx by central differences in f64, against attentionBackward. */
test('backward matches finite differences in f64 (GQA, causal, Tq != Tk)', async () => {
  for (const c of [
    { B: 1, Tq: 5, Tk: 7, Hq: 4, Hkv: 2, D: 6, causal: true },
    { B: 2, Tq: 6, Tk: 6, Hq: 2, Hkv: 1, D: 4, causal: false },
  ] as Case[]) {
    const qv = seededValues(c.B * c.Tq * c.Hq * c.D, 1);
    const kv = seededValues(c.B * c.Tk * c.Hkv * c.D, 2);
    const vv = seededValues(c.B * c.Tk * c.Hkv * c.D, 3);
    const w = seededValues(c.B * c.Tq * c.Hq * c.D, 4);
    const qs = [c.B, c.Tq, c.Hq, c.D];
    const ks = [c.B, c.Tk, c.Hkv, c.D];
    const loss = async (qa: Float64Array, ka: Float64Array, va: Float64Array) => {
      const { out } = ops.attention(make(qa, qs, 'f64'), make(ka, ks, 'f64'), make(va, ks, 'f64'), { causal: c.causal });
      const o = await out.toArray();
      let s = 0;
      for (let i = 0; i < o.length; i++) s += o[i] * w[i];
      return s;
    };
    const q = make(qv, qs, 'f64');
    const k = make(kv, ks, 'f64');
    const v = make(vv, ks, 'f64');
    const { out, lse } = ops.attention(q, k, v, { causal: c.causal });
    for (const reference of [false, true]) {
      const grads = ops.attentionBackward(q, k, v, out, lse, make(w, qs, 'f64'), { causal: c.causal, reference });
      const analytic = [await grads.dq.toArray(), await grads.dk.toArray(), await grads.dv.toArray()];
      const inputs = [qv, kv, vv];
      const h = 1e-6;
      for (let which = 0; which < 3; which++) {
        for (let i = 0; i < inputs[which].length; i += 3) {
          const plus = inputs.map((x) => Float64Array.from(x));
          const minus = inputs.map((x) => Float64Array.from(x));
          plus[which][i] += h;
          minus[which][i] -= h;
          const numeric = ((await loss(plus[0], plus[1], plus[2])) - (await loss(minus[0], minus[1], minus[2]))) / (2 * h);
          const got = analytic[which][i];
          assert.ok(Math.abs(got - numeric) <= 1e-6 + 1e-6 * Math.abs(numeric), `${reference ? 'reference' : 'fast'} d${'qkv'[which]}[${i}]: ${got} vs numeric ${numeric}`);
        }
      }
    }
  }
});

test('fast backward matches the reference backward on larger shapes (f32)', async () => {
  for (const c of [
    { B: 1, Tq: 200, Tk: 200, Hq: 8, Hkv: 2, D: 64, causal: true },
    { B: 2, Tq: 65, Tk: 130, Hq: 2, Hkv: 2, D: 32, causal: true },
    { B: 1, Tq: 77, Tk: 77, Hq: 8, Hkv: 1, D: 128, causal: false },
  ] as Case[]) {
    const qs = [c.B, c.Tq, c.Hq, c.D];
    const ks = [c.B, c.Tk, c.Hkv, c.D];
    const q = make(seededValues(qs.reduce((a, b) => a * b), 5), qs, 'f32');
    const k = make(seededValues(ks.reduce((a, b) => a * b), 6), ks, 'f32');
    const v = make(seededValues(ks.reduce((a, b) => a * b), 7), ks, 'f32');
    const dout = make(seededValues(qs.reduce((a, b) => a * b), 8), qs, 'f32');
    const { out, lse } = ops.attention(q, k, v, { causal: c.causal });
    const fast = ops.attentionBackward(q, k, v, out, lse, dout, { causal: c.causal });
    const ref = ops.attentionBackward(q, k, v, out, lse, dout, { causal: c.causal, reference: true });
    assertClose(await fast.dq.toArray(), await ref.dq.toArray(), 1e-4, 1e-5, 'dq');
    assertClose(await fast.dk.toArray(), await ref.dk.toArray(), 1e-4, 1e-5, 'dk');
    assertClose(await fast.dv.toArray(), await ref.dv.toArray(), 1e-4, 1e-5, 'dv');
  }
});

test('rope matches the HF formula and backward inverts forward', async () => {
  const [B, T, H, D] = [2, 9, 3, 16];
  const xv = seededValues(B * T * H * D, 3);
  const positions = Int32Array.from({ length: B * T }, (_, i) => (i * 7) % 50);
  const x = tensor(xv, { shape: [B, T, H, D] });
  const pos = tensor(positions, { shape: [B, T] });
  for (const base of [10000, 500000]) {
    const y = await ops.rope(x, pos, { base }).toArray();
    const expected = new Float64Array(xv.length);
    for (let b = 0; b < B; b++)
      for (let t = 0; t < T; t++)
        for (let h = 0; h < H; h++)
          for (let j = 0; j < D / 2; j++) {
            const theta = positions[b * T + t] * base ** ((-2 * j) / D);
            const o = ((b * T + t) * H + h) * D;
            const x1 = Math.fround(xv[o + j]);
            const x2 = Math.fround(xv[o + j + D / 2]);
            expected[o + j] = x1 * Math.cos(theta) - x2 * Math.sin(theta);
            expected[o + j + D / 2] = x2 * Math.cos(theta) + x1 * Math.sin(theta);
          }
    assertClose(y, expected, 1e-5, 1e-6, `rope base ${base}`);
  }
  const round = ops.rope(ops.rope(x, pos), pos, { backward: true });
  assertClose(await round.toArray(), await x.toArray(), 1e-5, 1e-6, 'backward(forward(x))');
  const inPlace = x.clone();
  ops.rope(inPlace, pos, { inPlace: true });
  assertClose(await inPlace.toArray(), await ops.rope(x, pos).toArray(), 0, 0, 'in place');
});

test('decode over a paged cache equals the last row of full causal attention (ragged batch)', async () => {
  for (const dtype of ['f32', 'f64'] as DType[]) {
    const [Hq, Hkv, D, blockSize] = [8, 2, 32, 16];
    const lengths = [1, 17, 100, 64];
    const B = lengths.length;
    const maxBlocks = Math.ceil(Math.max(...lengths) / blockSize);
    const numBlocks = B * maxBlocks + 3;
    // physical blocks handed out in a shuffled order
    const order = Array.from({ length: numBlocks }, (_, i) => i).sort((a, b) => ((a * 37) % 11) - ((b * 37) % 11) || a - b);
    const table = new Int32Array(B * maxBlocks).fill(0);
    let next = 0;
    for (let b = 0; b < B; b++) for (let j = 0; j < Math.ceil(lengths[b] / blockSize); j++) table[b * maxBlocks + j] = order[next++];
    const cache = {
      k: zeros([numBlocks, blockSize, Hkv, D], { dtype }),
      v: zeros([numBlocks, blockSize, Hkv, D], { dtype }),
      blockTable: tensor(table, { shape: [B, maxBlocks] }),
    };
    const queries: Float64Array[] = [];
    const keys: Float64Array[] = [];
    const values: Float64Array[] = [];
    for (let b = 0; b < B; b++) {
      keys.push(seededValues(lengths[b] * Hkv * D, 100 + b));
      values.push(seededValues(lengths[b] * Hkv * D, 200 + b));
      queries.push(seededValues(Hq * D, 300 + b));
    }
    // append each sequence's history in two chunks, through a batch-of-one view each time
    for (let b = 0; b < B; b++) {
      const one = { ...cache, blockTable: cache.blockTable.slice(b, b + 1) };
      const split = Math.floor(lengths[b] / 2);
      for (const [from, to] of [[0, split], [split, lengths[b]]]) {
        if (to === from) continue;
        const kChunk = make(keys[b].slice(from * Hkv * D, to * Hkv * D), [1, to - from, Hkv, D], dtype);
        const vChunk = make(values[b].slice(from * Hkv * D, to * Hkv * D), [1, to - from, Hkv, D], dtype);
        ops.kvAppend(one, kChunk, vChunk, tensor(new Int32Array([from])));
      }
    }
    const q = make(Float64Array.from(queries.flatMap((x) => Array.from(x))), [B, Hq, D], dtype);
    const seqLens = tensor(Int32Array.from(lengths));
    for (const reference of [false, true]) {
      const { out, lse } = ops.attentionDecode(q, cache, seqLens, { reference });
      const got = await out.toArray();
      const gotLse = await lse.toArray();
      for (let b = 0; b < B; b++) {
        const T = lengths[b];
        const qFull = new Float64Array(T * Hq * D);
        qFull.set(queries[b], (T - 1) * Hq * D);
        const ref = naiveAttention(qFull, keys[b], values[b], { B: 1, Tq: T, Tk: T, Hq, Hkv, D }, true, Math.fround(1 / Math.sqrt(D)));
        const tol = dtype === 'f64' ? 1e-10 : 2e-5;
        assertClose(got.slice(b * Hq * D, (b + 1) * Hq * D), ref.out.slice((T - 1) * Hq * D), tol, tol, `seq ${b} out`);
        for (let h = 0; h < Hq; h++) assertClose([gotLse[b * Hq + h]], [ref.lse[h * T + T - 1]], tol, tol, `seq ${b} lse`);
      }
    }
  }
});

test('bad attention calls are typed errors', async () => {
  const q = zeros([1, 4, 4, 8]);
  const k = zeros([1, 4, 3, 8]);
  await assertKilnError(() => ops.attention(q, k, k), 'ERR_SHAPE', 'divide');
  await assertKilnError(() => ops.attention(q, zeros([1, 4, 2, 16]), zeros([1, 4, 2, 16])), 'ERR_SHAPE');
  await assertKilnError(() => ops.attention(q, zeros([1, 4, 2, 8], { dtype: 'bf16' }), zeros([1, 4, 2, 8])), 'ERR_DTYPE');
  await assertKilnError(() => ops.attention(zeros([4, 4, 8]), zeros([4, 4, 8]), zeros([4, 4, 8])), 'ERR_SHAPE');
  await assertKilnError(() => ops.attention(q, q, q, { causal: 'yes' as never }), 'ERR_ARG');
  await assertKilnError(() => ops.rope(zeros([1, 2, 2, 7]), zeros([1, 2], { dtype: 'i32' })), 'ERR_SHAPE', 'even');
  await assertKilnError(() => ops.rope(zeros([1, 2, 2, 8]), zeros([1, 2])), 'ERR_DTYPE');
  const cache = { k: zeros([4, 8, 2, 8]), v: zeros([4, 8, 2, 8]), blockTable: tensor(new Int32Array([0, 1, 2, 3]), { shape: [2, 2] }) };
  // a position beyond the table, and a block id beyond the cache, are refused by the op
  await assertKilnError(async () => {
    ops.kvAppend(cache, zeros([2, 1, 2, 8]), zeros([2, 1, 2, 8]), tensor(new Int32Array([16, 0])));
    await cache.k.toArray();
  }, 'ERR_ARG');
  const badTable = { ...cache, blockTable: tensor(new Int32Array([0, 9, 2, 3]), { shape: [2, 2] }) };
  await assertKilnError(async () => {
    ops.attentionDecode(zeros([2, 4, 8]), badTable, tensor(new Int32Array([12, 3])));
    await cache.k.toArray();
  }, 'ERR_ARG');
  await assertKilnError(() => ops.attentionDecode(zeros([2, 4, 8]), cache, tensor(new Int32Array([1, 1])), { maxSeqLen: 99 }), 'ERR_ARG');
});

test.run();
