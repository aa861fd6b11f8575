import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { type DType, ops, tensor } from '../../lib/index.js';
import { RTOL, assertClose, seededValues } from '../helpers.js';

const test = suite('elementwise and reductions (cpu)');

function round(values: Float64Array, dtype: DType): Promise<Float32Array | Float64Array | Int32Array> {
  return tensor(values, { dtype }).toArray();
}

for (const dtype of ['f32', 'f64', 'bf16', 'f16'] as DType[]) {
  test(`add, mul, scale match an f64 reference in ${dtype}`, async () => {
    const n = 10_007; // not a multiple of any vector width
    const a = seededValues(n, 1, 4);
    const b = seededValues(n, 2, 4);
    const x = tensor(a, { dtype });
    const y = tensor(b, { dtype });
    const ra = await round(a, dtype);
    const rb = await round(b, dtype);
    const sum = await ops.add(x, y).toArray();
    const product = await ops.mul(x, y).toArray();
    const scaled = await ops.scale(x, -0.3).toArray();
    assertClose(sum, Float64Array.from(ra, (v, i) => v + rb[i]), RTOL[dtype], 1e-30, 'add');
    assertClose(product, Float64Array.from(ra, (v, i) => v * rb[i]), RTOL[dtype], 1e-30, 'mul');
    assertClose(scaled, Float64Array.from(ra, (v) => -0.3 * v), RTOL[dtype] * 2, 1e-30, 'scale');
  });

  test(`sum and mean match an f64 reference in ${dtype}`, async () => {
    const rows = 37;
    const cols = 1001;
    const values = seededValues(rows * cols, 3);
    const x = tensor(values, { dtype, shape: [rows, cols] });
    const rounded = await round(values, dtype);
    let total = 0;
    const rowSums = new Float64Array(rows);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) rowSums[r] += rounded[r * cols + c];
      total += rowSums[r];
    }
    const s = ops.sum(x);
    assert.equal(s.shape, []);
    assertClose(await s.toArray(), [total], RTOL[dtype], 1e-9, 'sum');
    assertClose(await ops.mean(x).toArray(), [total / (rows * cols)], RTOL[dtype], 1e-12, 'mean');
    const perRow = ops.sum(x, { dim: -1 });
    assert.equal(perRow.shape, [rows]);
    assertClose(await perRow.toArray(), rowSums, RTOL[dtype], 1e-9, 'row sums');
    assertClose(await ops.mean(x, { dim: 1 }).toArray(), rowSums.map((v) => v / cols), RTOL[dtype], 1e-12, 'row means');
  });
}

test('i32 add and mul are exact and wrap around', async () => {
  const a = tensor([1, -2, 2147483647, 46341], { dtype: 'i32' });
  const b = tensor([3, 5, 1, 46341], { dtype: 'i32' });
  assert.equal(Array.from(await ops.add(a, b).toArray()), [4, 3, -2147483648, 92682]);
  assert.equal(Array.from(await ops.mul(a, b).toArray()), [3, -10, 2147483647, -2147479015]);
});

test('cast covers every pair of dtypes', async () => {
  const values = [0, 1, -1, 2.5, -3.5, 1000.25, 1e-3];
  const dtypes: DType[] = ['f32', 'f64', 'bf16', 'f16', 'i32'];
  for (const from of dtypes) {
    const src = tensor(from === 'i32' ? values.map(Math.round) : values, { dtype: from });
    const srcValues = await src.toArray();
    for (const to of dtypes) {
      const out = await ops.cast(src, to).toArray();
      const expected = await tensor(Float64Array.from(srcValues), { dtype: to === 'i32' ? 'f64' : to }).toArray();
      const want = to === 'i32' ? Array.from(expected, (v) => roundHalfEven(v)) : Array.from(expected);
      assert.equal(Array.from(out), want, `${from} -> ${to}`);
    }
  }
  // saturation and NaN into i32
  assert.equal(Array.from(await tensor([1e10, -1e10, NaN]).cast('i32').toArray()), [2147483647, -2147483648, 0]);
});

function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

test('empty tensors reduce to 0 (sum) and NaN (mean)', async () => {
  const e = tensor(new Float32Array(0));
  assert.equal(Array.from(await ops.sum(e).toArray()), [0]);
  assert.ok(Number.isNaN((await ops.mean(e).toArray())[0]));
});

test.run();
