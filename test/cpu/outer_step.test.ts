/**
 * DiLoCo's outer-step ops (lib/ops/outer_step.ts, native/ops/cpu/*) against plain TypeScript
 * references on random data: odd lengths, partial last blocks, every width; then the checks.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { QUANT_BLOCK, packedBytes, quantize } from '../../lib/parallel/diloco.js';
import { dequantizeMean, outerNesterov, pseudoGradientQuantize } from '../../lib/ops/outer_step.js';
import { type Tensor, randn, tensor, zeros } from '../../lib/tensor.js';
import { assertKilnError } from '../helpers.js';

const test = suite('DiLoCo outer-step ops (CPU)');
const f = Math.fround;
const SIZES = [1, 5, 127, 128, 129, 3 * QUANT_BLOCK + 37, 70_001];

async function values(t: Tensor): Promise<Float32Array> {
  return (await t.toArray()) as Float32Array;
}
const bytesOf = (x: Float32Array) => new Uint8Array(x.buffer, x.byteOffset, x.byteLength);

/** Δ as the op computes it in f32: (anchor − current) + residual. */
function deltaOf(a: Float32Array, c: Float32Array, r?: Float32Array): Float32Array {
  return a.map((v, i) => f(f(v - c[i]) + (r ? r[i] : 0)));
}

test('pseudoGradientQuantize writes the reference packing and error-feedback residual bit for bit (every width, odd lengths)', async () => {
  for (const n of SIZES) {
    const anchor = randn([n], { seed: n });
    const current = randn([n], { seed: n + 1, std: 0.9 });
    // some blocks tiny, one all-zero block: scales span orders of magnitude and 0 is handled
    const r0 = (await values(randn([n], { seed: n + 2, std: 0.01 })));
    const [a, c] = [await values(anchor), await values(current)];
    if (n > 2 * QUANT_BLOCK) for (let i = QUANT_BLOCK; i < 2 * QUANT_BLOCK; i++) c[i] = a[i], r0[i] = 0;
    current.write(c);
    for (const bits of [8, 4, 2, 0] as const) {
      const residual = tensor(r0);
      const packed = tensor(new Float32Array(packedBytes(n, bits) / 4).fill(NaN)); // poisoned
      pseudoGradientQuantize(packed, bits ? residual : null, anchor, current, bits);
      const delta = deltaOf(a, c, bits ? r0 : undefined);
      const got = await values(packed);
      if (bits === 0) {
        assert.equal(Array.from(got), Array.from(deltaOf(a, c)), `n ${n}: f32 Δ`);
        continue;
      }
      const ref = new Uint8Array(packedBytes(n, bits));
      const dq = new Float32Array(n);
      quantize(delta, bits, ref, dq);
      assert.equal(Array.from(bytesOf(got)), Array.from(ref), `n ${n}, ${bits}-bit: packed bytes`);
      assert.equal(Array.from(await values(residual)), Array.from(delta.map((d, i) => f(d - dq[i]))), `n ${n}, ${bits}-bit: residual`);
    }
  }
});

test('dequantizeMean averages W gathered packed buffers like the reference (every width, W = 1, 2, 3)', async () => {
  for (const n of SIZES) {
    for (const bits of [8, 4, 2, 0] as const) {
      for (const world of [1, 2, 3]) {
        const each = packedBytes(n, bits);
        const gathered = new Uint8Array(each * world);
        const parts: Float32Array[] = [];
        for (let r = 0; r < world; r++) {
          const x = (await values(randn([n], { seed: 100 * r + n + bits, std: r + 1 })));
          const dq = new Float32Array(n);
          if (bits) quantize(x, bits, gathered.subarray(r * each, (r + 1) * each), dq);
          else gathered.set(bytesOf(x), r * each);
          parts.push(bits ? dq : x);
        }
        const mean = tensor(new Float32Array(n).fill(NaN));
        dequantizeMean(mean, tensor(new Float32Array(gathered.buffer)), world, bits);
        const inv = f(1 / world);
        const expected = new Float32Array(n).map((_, i) => {
          let sum = 0;
          for (let r = 0; r < world; r++) sum = f(sum + parts[r][i]);
          return f(sum * inv);
        });
        assert.equal(Array.from(await values(mean)), Array.from(expected), `n ${n}, ${bits}-bit, W ${world}`);
      }
    }
  }
});

test('outerNesterov applies the outer Nesterov SGD and the merge like the reference', async () => {
  for (const n of [1, 129, 70_001]) {
    for (const nesterov of [true, false]) {
      for (const mixAlpha of [undefined, 0.5, 0.3]) {
        const [a0, m0, w0, d] = await Promise.all([0, 1, 2, 3].map((k) => values(randn([n], { seed: 7 * n + k }))));
        const [anchor, momentum, weights, delta] = [a0, m0, w0, d].map((x) => tensor(x));
        const lr = 0.7, mu = 0.9;
        outerNesterov(anchor, momentum, weights, delta, { lr, momentum: mu, nesterov, mixAlpha });
        const m = m0.map((v, i) => f(f(f(mu) * v) + d[i]));
        const a = a0.map((v, i) => f(v - f(f(lr) * (nesterov ? f(d[i] + f(f(mu) * m[i])) : m[i]))));
        const w = mixAlpha === undefined ? a : w0.map((v, i) => f(f(f(mixAlpha) * v) + f(f(1 - f(mixAlpha)) * a[i])));
        assert.equal(Array.from(await values(momentum)), Array.from(m), 'momentum');
        assert.equal(Array.from(await values(anchor)), Array.from(a), 'anchor');
        assert.equal(Array.from(await values(weights)), Array.from(w), `weights (mix ${mixAlpha})`);
      }
    }
  }
});

test('the outer-step ops refuse bad arguments with typed errors', async () => {
  const v = (n: number) => zeros([n]);
  await assertKilnError(() => pseudoGradientQuantize(v(2), v(5), v(5), v(5), 3), 'ERR_ARG');
  await assertKilnError(() => pseudoGradientQuantize(v(3), v(5), v(5), v(5), 4), 'ERR_SHAPE');
  await assertKilnError(() => pseudoGradientQuantize(v(2), v(4), v(5), v(5), 4), 'ERR_SHAPE');
  await assertKilnError(() => pseudoGradientQuantize(zeros([2], { dtype: 'f64' }), null, v(5), v(5), 4), 'ERR_DTYPE');
  const r = v(5);
  await assertKilnError(() => pseudoGradientQuantize(v(2), r, r, v(5), 4), 'ERR_ARG');
  await assertKilnError(() => dequantizeMean(v(5), v(3), 2, 4), 'ERR_SHAPE');
  await assertKilnError(() => dequantizeMean(v(5), v(4), 0, 4), 'ERR_ARG');
  const t = v(4);
  await assertKilnError(() => outerNesterov(t, v(4), t, v(4), { lr: 1, momentum: 0 }), 'ERR_ARG');
  await assertKilnError(() => outerNesterov(v(4), v(4), v(3), v(4), { lr: 1, momentum: 0 }), 'ERR_SHAPE');
  await assertKilnError(() => outerNesterov(v(4), v(4), v(4), v(4), { lr: 1, momentum: 0, mixAlpha: 2 }), 'ERR_ARG');
  await assertKilnError(() => outerNesterov(v(4), v(4), v(4), v(4), { lr: NaN, momentum: 0 }), 'ERR_ARG');
  await assertKilnError(() => outerNesterov(v(4), v(4), v(4), v(4), { lr: 1, momentum: 0, bogus: 1 } as never), 'ERR_ARG');
  assert.is(packedBytes(5, 4), 8);
  assert.is(packedBytes(129, 2), 44);
  assert.is(packedBytes(3, 0), 12);
});

test.run();
