/**
 * The training step on CUDA against the same step on the CPU (skipped without a GPU): the
 * model's forward/backward in bf16 with f32 master weights, the step plan's no-allocation
 * property on the device, and a few Trainer steps (Muon + AdamW on the device).
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { memoryStats, synchronize, tensor } from '../../lib/index.js';
import { bundledCorpus, prepareDocuments } from '../../lib/io/shards.js';
import { byteTokenizer } from '../../lib/data/tokenizer.js';
import { LlamaModel } from '../../lib/model/llama.js';
import type { ModelConfig } from '../../lib/model/config.js';
import { Trainer } from '../../lib/train/trainer.js';
import { cudaTest } from '../helpers.js';

const test = suite('cuda training step');

// head dim 64 (the CUDA attention kernels take 64 and 128), GQA 4/2
const config: ModelConfig = {
  vocabSize: 256, dModel: 256, layers: 2, heads: 4, kvHeads: 2, headDim: 64, ffn: 704, context: 128,
  ropeTheta: 10000, normEps: 1e-5, tiedEmbeddings: false,
};

function batch(B: number, T: number, seed: number) {
  const ids = Int32Array.from({ length: B * T }, (_, i) => (i * 131 + seed * 17) % config.vocabSize);
  const targets = Int32Array.from({ length: B * T }, (_, i) => (i * 59 + seed) % config.vocabSize);
  return { ids, targets, count: targets.length };
}

function cosine(a: ArrayLike<number>, b: ArrayLike<number>): { cosine: number; ratio: number } {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return { cosine: dot / Math.sqrt(na * nb), ratio: Math.sqrt(nb / na) };
}

for (const recompute of [false, true]) {
  cudaTest(test, `bf16 forward and backward on CUDA match the CPU's bf16 step${recompute ? ' (recomputation)' : ''}`, async () => {
    const cpu = new LlamaModel(config, { seed: 11, computeDType: 'bf16', recompute });
    const gpu = new LlamaModel(config, { seed: 11, device: 'cuda:0', recompute });
    assert.is(gpu.computeDType, 'bf16');
    const loss = { cpu: 0, gpu: 0 };
    for (const step of [0, 1, 2]) {
      const d = batch(2, 128, step);
      // the last step's ids, targets and loss are disposed (using) and the queue drained, so
      // their blocks are back in the cache before counting, whatever the GC or queue timing
      await synchronize();
      const misses = memoryStats('cuda').deviceAllocations;
      for (const [name, model] of [['cpu', cpu], ['gpu', gpu]] as const) {
        const device = model.device;
        model.zeroGrad();
        using ids = tensor(d.ids, { shape: [2, 128], device });
        using targets = tensor(d.targets, { shape: [2, 128], device });
        using l = model.backward(model.forward(ids), targets, d.count);
        loss[name] = (await l.toArray())[0];
      }
      await synchronize();
      // planned buffers, and kernel workspaces served from the caching allocator: no cudaMalloc after the first step
      if (step > 0) assert.is(memoryStats('cuda').deviceAllocations - misses, 0, 'cudaMalloc calls in a steady-state step');
      assert.ok(Math.abs(loss.gpu - loss.cpu) < 5e-3 * loss.cpu, `step ${step}: loss cpu ${loss.cpu} vs cuda ${loss.gpu}`);
      for (let i = 0; i < cpu.parameters.length; i++) {
        const c = cosine(await cpu.parameters[i].grad.toArray(), await gpu.parameters[i].grad.toArray());
        // both accumulate bf16 products in f32, in different orders: close, not equal
        assert.ok(c.cosine > 0.999 && Math.abs(c.ratio - 1) < 0.01, `${cpu.parameters[i].name}: cosine ${c.cosine}, norm ratio ${c.ratio}`);
      }
    }
    cpu.dispose();
    gpu.dispose();
  });
}

cudaTest(test, 'Trainer steps on CUDA follow the CPU bf16 loss curve', async () => {
  const data = mkdtempSync(join(tmpdir(), 'kiln-cuda-train-'));
  prepareDocuments(await bundledCorpus(200), data, byteTokenizer, { valFraction: 0.05 });
  const options = { config, data, steps: 8, batch: 4, seqLen: 128, evalEvery: 0, seed: 5 };
  const previous = process.env.KILN_CUDA_TRAINING;
  process.env.KILN_CUDA_TRAINING = '1';
  try {
    const cpu = new Trainer({ ...options, computeDType: 'bf16' });
    const gpu = new Trainer({ ...options, device: 'cuda:0' });
    const a = (await cpu.run()).map((m) => m.loss);
    const before = memoryStats('cuda').deviceAllocations;
    const history = await gpu.run();
    const b = history.map((m) => m.loss);
    for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i] - b[i]) < 0.03 * a[i], `step ${i + 1}: cpu ${a[i]} vs cuda ${b[i]}`);
    assert.ok(b[b.length - 1] < b[0] - 0.3, 'the CUDA run learns');
    for (const m of history) assert.ok(m.forwardMs > 0 && m.backwardMs > 0 && m.optimizerMs > 0 && m.issueMs > 0 && (m.mfu === undefined || m.mfu > 0));
    await synchronize();
    const again = memoryStats('cuda').deviceAllocations;
    await gpu.trainStep();
    await synchronize();
    assert.is(memoryStats('cuda').deviceAllocations, again, 'a steady-state CUDA step calls no cudaMalloc');
    assert.ok(again > before, 'the first steps planned their buffers');
    cpu.close();
    gpu.close();
  } finally {
    if (previous === undefined) delete process.env.KILN_CUDA_TRAINING;
    else process.env.KILN_CUDA_TRAINING = previous;
  }
});

test.run();
