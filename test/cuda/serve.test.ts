/**
 * The serving engine on CUDA tensors against the same engine on the CPU (skipped without a
 * GPU; CUDA serving is gated behind KILN_CUDA_SERVING=1 until this passes on one). Both run in
 * bf16 on a small trained checkpoint (head dim 64, which the CUDA attention kernels take): the
 * greedy continuations agree, the chosen tokens' log-probabilities agree to bf16 tolerance,
 * batching on the GPU leaves each sequence's tokens as they are alone, and every KV block returns.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { type Completion, Engine, type SamplingParams } from '../../lib/index.js';
import { bundledCorpus, prepareDocuments } from '../../lib/io/shards.js';
import { byteTokenizer } from '../../lib/data/tokenizer.js';
import type { ModelConfig } from '../../lib/model/config.js';
import { Trainer } from '../../lib/train/trainer.js';
import { cudaDevices, cudaTest } from '../helpers.js';

const test = suite('cuda serving engine');
const config: ModelConfig = {
  vocabSize: 256, dModel: 128, layers: 2, heads: 2, kvHeads: 1, headDim: 64, ffn: 352, context: 256, ropeTheta: 10000, normEps: 1e-5, tiedEmbeddings: false,
};

async function trainedCheckpoint(): Promise<string> {
  const root = mkdtempSync(join(tmpdir(), 'kiln-cuda-serve-'));
  prepareDocuments(await bundledCorpus(300), join(root, 'data'), byteTokenizer, { valFraction: 0.05 });
  const trainer = new Trainer({ config, data: join(root, 'data'), steps: 40, batch: 8, seqLen: 64, out: join(root, 'run'), evalEvery: 0, seed: 5 });
  await trainer.run();
  const saved = await trainer.save();
  trainer.close();
  return saved;
}

cudaTest(test, 'CUDA engine output equals the CPU engine (bf16), batched or alone; blocks return', async () => {
  const checkpoint = await trainedCheckpoint();
  const previous = process.env.KILN_CUDA_SERVING;
  process.env.KILN_CUDA_SERVING = '1';
  try {
    const prompts = ['The film was', 'It is a truth universally', 'A', 'When the rain came the whole town'].map((p) => byteTokenizer.encode(p));
    const params: SamplingParams = { maxTokens: 24, temperature: 0, ignoreEos: true, logprobs: 0 };
    const cpu = await Engine.load(checkpoint, { computeDType: 'bf16' });
    const expected: Completion[] = [];
    for (const p of prompts) expected.push(await cpu.generate(p, params));
    await cpu.close();
    const gpu = await Engine.load(checkpoint, { device: cudaDevices[0], computeDType: 'bf16' });
    try {
      const alone: Completion[] = [];
      for (const p of prompts) alone.push(await gpu.generate(p, params));
      for (const [i, c] of alone.entries()) {
        // bf16 rounding differs between the kernels: compare the first tokens exactly and the
        // log-probabilities of the tokens both chose
        const agree = c.tokenIds.findIndex((t, j) => t !== expected[i].tokenIds[j]);
        const same = agree < 0 ? c.tokenIds.length : agree;
        assert.ok(same >= 8, `prompt ${i}: CUDA and CPU agree on ${same} greedy tokens (CPU ${expected[i].tokenIds.slice(0, 12)}, CUDA ${c.tokenIds.slice(0, 12)})`);
        for (let j = 0; j < same; j++) {
          const a = c.logprobs![j].logprob, b = expected[i].logprobs![j].logprob;
          assert.ok(Math.abs(a - b) <= 0.05 + 0.02 * Math.abs(b), `prompt ${i} token ${j}: logprob ${a} on CUDA, ${b} on the CPU`);
        }
      }
      // all together, joining mid-flight: each sequence as it was alone on the GPU
      const together = await Promise.all(prompts.map((p, i) => new Promise((r) => setTimeout(r, i * 3)).then(() => gpu.generate(p, params))));
      for (const [i, c] of together.entries()) assert.equal(c.tokenIds, alone[i].tokenIds, `prompt ${i} batched on CUDA`);
      // a tiny KV budget forces preemption on the device
      const small = await Engine.load(checkpoint, { device: cudaDevices[0], computeDType: 'bf16', kvCacheBlocks: 8, blockSize: 8 });
      const squeezed = await Promise.all(prompts.map((p) => small.generate(p, params)));
      for (const [i, c] of squeezed.entries()) assert.equal(c.tokenIds, alone[i].tokenIds, `prompt ${i} under preemption on CUDA`);
      assert.is(small.stats().kvBlocksUsed, 0);
      await small.close();
      assert.is(gpu.stats().kvBlocksUsed, 0);
    } finally {
      await gpu.close();
    }
  } finally {
    if (previous === undefined) delete process.env.KILN_CUDA_SERVING;
    else process.env.KILN_CUDA_SERVING = previous;
  }
});

test.run();
