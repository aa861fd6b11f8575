import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { ops, tensor } from '../../lib/index.js';
import { memoryStats } from '../../lib/runtime.js';
import { binding } from '../../lib/native.js';
import { LlamaModel } from '../../lib/model/llama.js';
import type { ModelConfig } from '../../lib/model/config.js';
import { assertClose, assertKilnError } from '../helpers.js';

const test = suite('llama model (cpu)');

const tinyGqa: ModelConfig = {
  vocabSize: 11, dModel: 8, layers: 2, heads: 4, kvHeads: 2, headDim: 4, ffn: 12, context: 8,
  ropeTheta: 10000, normEps: 1e-5, tiedEmbeddings: false,
};

function batch(B: number, T: number, V: number, seed: number) {
  const ids = Int32Array.from({ length: B * T }, (_, i) => (i * 7 + seed * 3) % V);
  const targets = Int32Array.from({ length: B * T }, (_, i) => (i * 5 + seed) % V);
  targets[1] = -1; // one ignored position
  return { ids: tensor(ids, { shape: [B, T] }), targets: tensor(targets, { shape: [B, T] }), count: targets.filter((t) => t >= 0).length };
}

async function lossOnly(model: LlamaModel, ids: ReturnType<typeof batch>): Promise<number> {
  const logits = model.forward(ids.ids, false);
  const { loss } = ops.crossEntropy(logits, ids.targets.reshape(ids.targets.numel));
  const total = (await ops.sum(loss).toArray())[0];
  logits.dispose();
  return total / ids.count;
}

for (const tied of [false, true]) {
  test(`whole-model gradients match f64 finite differences (GQA 4/2${tied ? ', tied embeddings' : ''})`, async () => {
    const model = new LlamaModel({ ...tinyGqa, tiedEmbeddings: tied }, { paramDType: 'f64', seed: 3 });
    const data = batch(2, 6, tinyGqa.vocabSize, 1);
    model.zeroGrad();
    const logits = model.forward(data.ids);
    const loss = (await model.backward(logits, data.targets, data.count).toArray())[0];
    assert.ok(Math.abs(loss - (await lossOnly(model, data))) < 1e-12, 'backward returns the forward loss');
    const h = 1e-5;
    let checked = 0;
    for (const p of model.parameters) {
      const grad = await p.grad.toArray();
      const values = Float64Array.from(await p.value.toArray());
      // a few elements of every parameter, including the first and last
      const picks = [0, Math.floor(values.length / 2), values.length - 1];
      for (const i of picks) {
        const original = values[i];
        const set = (v: number) => {
          values[i] = v;
          binding().copy(p.value.handle, tensor(values, { shape: [...p.value.shape] }).handle);
        };
        set(original + h);
        const plus = await lossOnly(model, data);
        set(original - h);
        const minus = await lossOnly(model, data);
        set(original);
        const numeric = (plus - minus) / (2 * h);
        assert.ok(Math.abs(grad[i] - numeric) <= 1e-7 + 1e-5 * Math.abs(numeric), `${p.name}[${i}]: analytic ${grad[i]} vs numeric ${numeric}`);
        checked++;
      }
    }
    assert.is(checked, 3 * (tied ? 18 : 19)); // embed, 2 x 8 per layer, final norm (+ head)
    model.dispose();
  });
}

test('gradient accumulation over micro-batches equals one big batch', async () => {
  const config = { ...tinyGqa, layers: 1 };
  const whole = new LlamaModel(config, { paramDType: 'f64', seed: 5 });
  const parts = new LlamaModel(config, { paramDType: 'f64', seed: 5 });
  const a = batch(2, 6, config.vocabSize, 2);
  const b = batch(2, 6, config.vocabSize, 3);
  const joined = {
    ids: tensor(Int32Array.from([...(await a.ids.toArray()), ...(await b.ids.toArray())]), { shape: [4, 6] }),
    targets: tensor(Int32Array.from([...(await a.targets.toArray()), ...(await b.targets.toArray())]), { shape: [4, 6] }),
    count: a.count + b.count,
  };
  whole.zeroGrad();
  whole.backward(whole.forward(joined.ids), joined.targets, joined.count);
  parts.zeroGrad();
  // each micro-batch scaled by its share of the targets: the sum equals the big batch's mean
  parts.backward(parts.forward(a.ids), a.targets, a.count, a.count / joined.count);
  parts.backward(parts.forward(b.ids), b.targets, b.count, b.count / joined.count);
  for (let i = 0; i < whole.parameters.length; i++) {
    const x = await whole.parameters[i].grad.toArray();
    const y = await parts.parameters[i].grad.toArray();
    for (let j = 0; j < x.length; j++) assert.ok(Math.abs(x[j] - y[j]) <= 1e-12 + 1e-9 * Math.abs(x[j]), `${whole.parameters[i].name}[${j}]`);
  }
});

test('gradNormClip computes the global norm and clips to maxNorm', async () => {
  const a = tensor([3, 0, 0]);
  const b = tensor([[0, 4], [0, 0]]);
  assert.equal(Array.from(await ops.gradNormClip([a, b]).toArray()), [5]);
  assert.equal(Array.from(await a.toArray()), [3, 0, 0], 'maxNorm 0 leaves the tensors alone');
  assert.equal(Array.from(await ops.gradNormClip([a, b], 10).toArray()), [5]);
  assert.equal(Array.from(await a.toArray()), [3, 0, 0], 'under the limit: unchanged');
  assert.equal(Array.from(await ops.gradNormClip([a, b], 1).toArray()), [5]);
  const scale = 1 / (5 + 1e-6);
  assert.ok(Math.abs((await a.toArray())[0] - 3 * scale) < 1e-6 && Math.abs((await b.toArray())[1] - 4 * scale) < 1e-6, 'clipped to norm 1');
  await assertKilnError(() => ops.gradNormClip([]), 'ERR_ARG');
  await assertKilnError(() => (binding() as unknown as { gradNormClip: (...x: unknown[]) => void }).gradNormClip([{}], 1, tensor([0]).handle), 'ERR_ARG');
});

test('bad model inputs are typed errors', async () => {
  const model = new LlamaModel(tinyGqa, { seed: 1 });
  await assertKilnError(() => model.forward(tensor([1, 2, 3])), 'ERR_SHAPE');
  await assertKilnError(() => model.forward(tensor(new Int32Array(20), { shape: [2, 10] })), 'ERR_SHAPE', 'context');
  await assertKilnError(async () => {
    model.forward(tensor(new Int32Array([1, 99]), { shape: [1, 2] }), false);
    await ops.sum(tensor([1])).toArray();
  }, 'ERR_ARG', 'vocabulary');
  await assertKilnError(() => model.backward(tensor([1]), tensor(new Int32Array([1]), { shape: [1, 1] }), 1), 'ERR_ARG');
  model.dispose();
});

test('a steady-state step allocates no tensor memory; recomputation gives bit-identical gradients with less memory', async () => {
  const config = { ...tinyGqa, layers: 3 };
  const plain = new LlamaModel(config, { seed: 7 });
  const recomputed = new LlamaModel(config, { seed: 7, recompute: true });
  const data = [batch(2, 8, config.vocabSize, 4), batch(2, 8, config.vocabSize, 5), batch(2, 8, config.vocabSize, 6)];
  const loss = tensor([0]).reshape([]);
  for (const [step, d] of data.entries()) {
    const before = memoryStats('cpu').allocations;
    const results: Float32Array[][] = [];
    for (const model of [plain, recomputed]) {
      model.zeroGrad();
      model.backward(model.forward(d.ids), d.targets, d.count, 1, { loss });
      const grads = [await loss.toArray() as Float32Array];
      for (const p of model.parameters) grads.push((await p.grad.toArray()) as Float32Array);
      results.push(grads);
    }
    const allocated = memoryStats('cpu').allocations - before;
    if (step > 0) assert.is(allocated, 0, `step ${step} allocated ${allocated} tensors`);
    else assert.ok(allocated > 0, 'the first step plans its buffers');
    for (let i = 0; i < results[0].length; i++) {
      assert.equal(results[1][i], results[0][i], `${i === 0 ? 'loss' : plain.parameters[i - 1].name} differs with recomputation`);
    }
  }
  const layerActs = plain.planBytes - recomputed.planBytes;
  assert.ok(layerActs > 0 && recomputed.planBytes < 0.75 * plain.planBytes, `plan ${plain.planBytes} B vs ${recomputed.planBytes} B with recomputation`);
  // another shape replaces the plan; inference at a third shape leaves it alone
  const other = batch(1, 5, config.vocabSize, 8);
  plain.backward(plain.forward(other.ids), other.targets, other.count);
  const bytes = plain.planBytes;
  const input = tensor(new Int32Array([1, 2, 3]), { shape: [1, 3] });
  const mark = memoryStats('cpu').allocations;
  using generated = plain.forward(input, false);
  assert.equal(generated.shape, [3, config.vocabSize]);
  // an inference-only plan: one activation set, the residual streams, positions, final norm, loss
  // scratch and the returned logits; no backward scratch
  assert.is(memoryStats('cpu').allocations - mark, 12 + (config.layers + 1) + 6);
  assert.is(plain.planBytes, bytes);
  plain.dispose();
  recomputed.dispose();
});

test('backward takes only the logits of the last training forward', async () => {
  const model = new LlamaModel(tinyGqa, { seed: 2 });
  const d = batch(1, 4, tinyGqa.vocabSize, 1);
  const logits = model.forward(d.ids);
  await assertKilnError(() => model.backward(tensor([1]), d.targets, d.count), 'ERR_ARG', 'logits');
  model.backward(logits, d.targets, d.count);
  await assertKilnError(() => model.backward(logits, d.targets, d.count), 'ERR_ARG', 'forward');
  using inference = model.forward(d.ids, false);
  await assertKilnError(() => model.backward(inference, d.targets, d.count), 'ERR_ARG');
  await assertKilnError(() => new LlamaModel(tinyGqa, { recompute: 'yes' as unknown as boolean }), 'ERR_ARG');
  model.dispose();
});

test('bf16 compute with f32 master weights (the CUDA recipe) tracks the f32 model on the CPU', async () => {
  const config = { ...tinyGqa, layers: 2, dModel: 32, heads: 4, kvHeads: 2, headDim: 8, ffn: 64, vocabSize: 40, context: 16 };
  const f32 = new LlamaModel(config, { seed: 9 });
  const bf16 = new LlamaModel(config, { seed: 9, computeDType: 'bf16' });
  assert.is(bf16.computeDType, 'bf16');
  const d = batch(2, 16, config.vocabSize, 2);
  const losses: number[] = [];
  for (const model of [f32, bf16]) {
    model.zeroGrad();
    const logits = model.forward(d.ids);
    assert.is(logits.dtype, model === f32 ? 'f32' : 'bf16');
    losses.push((await model.backward(logits, d.targets, d.count).toArray())[0]);
  }
  assert.ok(Math.abs(losses[1] - losses[0]) < 1e-2 * Math.abs(losses[0]), `loss ${losses[0]} vs bf16 ${losses[1]}`);
  for (let i = 0; i < f32.parameters.length; i++) {
    const a = await f32.parameters[i].grad.toArray();
    const b = await bf16.parameters[i].grad.toArray();
    assert.is(bf16.parameters[i].grad.dtype, 'f32', 'gradients accumulate in f32');
    let dot = 0, na = 0, nb = 0;
    for (let j = 0; j < a.length; j++) {
      dot += a[j] * b[j];
      na += a[j] * a[j];
      nb += b[j] * b[j];
    }
    const cosine = dot / Math.sqrt(na * nb);
    // bf16 keeps 8 bits of mantissa: the gradients agree closely, not exactly (measured: cosine >= 0.99995, norms within 0.4%)
    assert.ok(cosine > 0.9995 && Math.abs(Math.sqrt(nb / na) - 1) < 0.02, `${f32.parameters[i].name}: cosine ${cosine}, norm ratio ${Math.sqrt(nb / na)}`);
  }
  f32.dispose();
  bf16.dispose();
});

test('forwardBackward (fused, chunked classifier) equals forward + backward', async () => {
  const config = { ...tinyGqa, vocabSize: 37 };
  const d = batch(3, 7, config.vocabSize, 3); // 21 rows: chunks of 8 leave a tail of 5
  const reference = new LlamaModel(config, { seed: 4 });
  reference.zeroGrad();
  const expectedLoss = (await reference.backward(reference.forward(d.ids), d.targets, d.count, 0.5).toArray())[0];
  const expected = await Promise.all(reference.parameters.map((p) => p.grad.toArray()));
  for (const rows of [1000, 8, 1]) {
    const fused = new LlamaModel(config, { seed: 4, classifierRows: rows });
    fused.zeroGrad();
    let marked = 0;
    const loss = (await fused.forwardBackward(d.ids, d.targets, d.count, 0.5, { afterForward: () => marked++ }).toArray())[0];
    assert.is(marked, 1);
    assert.ok(Math.abs(loss - expectedLoss) <= 1e-6 * expectedLoss, `rows ${rows}: loss ${loss} vs ${expectedLoss}`);
    for (const [i, p] of fused.parameters.entries()) {
      const g = await p.grad.toArray();
      if (rows >= 21) assert.equal(g, expected[i], `${p.name}: one chunk is the same computation`);
      else assertClose(g, expected[i], 1e-5, 1e-7, `${p.name} with ${rows}-row chunks`);
    }
    // steady state: no allocation
    const before = memoryStats('cpu').allocations;
    fused.forwardBackward(d.ids, d.targets, d.count);
    assert.is(memoryStats('cpu').allocations - before, 1, 'only the returned loss is new');
    fused.dispose();
  }
  const model = new LlamaModel(config, { seed: 4 });
  await assertKilnError(() => model.forwardBackward(d.ids, tensor(new Int32Array(5), { shape: [1, 5] }), 5), 'ERR_SHAPE', 'targets');
  await assertKilnError(() => model.forwardBackward(d.ids, d.targets, 0), 'ERR_ARG', 'targetCount');
  await assertKilnError(() => new LlamaModel(config, { classifierRows: 0 }), 'ERR_ARG', 'classifierRows');
  model.dispose();
});

test.run();
