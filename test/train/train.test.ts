import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { memoryStats, tensor } from '../../lib/index.js';
import { bundledCorpus, prepareDocuments } from '../../lib/io/shards.js';
import { byteTokenizer } from '../../lib/data/tokenizer.js';
import { loadModel } from '../../lib/io/checkpoint.js';
import { type ModelConfig, preset } from '../../lib/model/config.js';
import { loadCheckpoint } from '../../lib/io/checkpoint.js';
import { Trainer } from '../../lib/train/trainer.js';
import { assertKilnError } from '../helpers.js';

const test = suite('training (cpu)');
const root = mkdtempSync(join(tmpdir(), 'kiln-train-'));
const data = join(root, 'data');
const small: ModelConfig = { ...preset('tiny'), dModel: 64, layers: 2, heads: 4, kvHeads: 2, headDim: 16, ffn: 176, context: 64 };

test.before(async () => {
  prepareDocuments(await bundledCorpus(400), data, byteTokenizer, { valFraction: 0.05 });
});

const options = (out: string, steps: number) => ({ config: small, data, steps, batch: 8, seqLen: 64, out, evalEvery: 0, seed: 3 });

test('loss falls on the bundled corpus', async () => {
  const trainer = new Trainer({ ...options(join(root, 'fall'), 60), evalEvery: 60 });
  const history = await trainer.run();
  const first = history.slice(0, 5).reduce((a, m) => a + m.loss, 0) / 5;
  const last = history.slice(-5).reduce((a, m) => a + m.loss, 0) / 5;
  assert.ok(last < first - 1.5, `loss ${first.toFixed(3)} -> ${last.toFixed(3)}`);
  assert.ok(history[history.length - 1].valLoss! < first - 1, 'validation loss falls too');
  for (const m of history) assert.ok(m.tokensPerSecond > 0 && m.forwardMs > 0 && m.backwardMs > 0 && m.optimizerMs > 0 && m.peakMemoryBytes > 0 && m.issueMs > 0 && m.issueMs <= m.stepMs);
  trainer.close();
});

test('steady-state steps allocate no tensor memory; recomputation trains the same curve', async () => {
  const plain = new Trainer({ ...options(join(root, 'plan'), 6), accumulation: 2 });
  const recomputed = new Trainer({ ...options(join(root, 'plan-r'), 6), accumulation: 2, recompute: true });
  const losses: number[][] = [[], []];
  for (let step = 0; step < 6; step++) {
    for (const [i, trainer] of [plain, recomputed].entries()) {
      const before = memoryStats('cpu').allocations;
      losses[i].push((await trainer.trainStep()).loss);
      const allocated = memoryStats('cpu').allocations - before;
      if (step >= 2) assert.is(allocated, 0, `step ${step}${i ? ' (recompute)' : ''} allocated ${allocated} tensors`);
    }
  }
  assert.equal(losses[1], losses[0], 'bit-identical losses with recomputation');
  assert.ok(recomputed.model.planBytes < plain.model.planBytes);
  plain.close();
  recomputed.close();
});

test('bf16 compute with f32 master weights follows the f32 loss curve', async () => {
  const f32 = new Trainer(options(join(root, 'f32'), 8));
  const bf16 = new Trainer({ ...options(join(root, 'bf16'), 8), computeDType: 'bf16' });
  const a = (await f32.run()).map((m) => m.loss);
  const b = (await bf16.run()).map((m) => m.loss);
  // weights change every step: stale bf16 copies would show up as a diverging curve
  for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i] - b[i]) < 0.02 * a[i], `step ${i + 1}: f32 ${a[i]} vs bf16 ${b[i]}`);
  assert.ok(b[b.length - 1] < b[0] - 0.3, 'the bf16 run learns');
  f32.close();
  bf16.close();
  await assertKilnError(() => new Trainer({ ...options(join(root, 'f'), 1), computeDType: 'f16' as never }), 'ERR_ARG', 'computeDType');
});

test('resuming from a checkpoint continues the exact loss curve', async () => {
  const straight = new Trainer(options(join(root, 'a'), 12));
  const reference = (await straight.run()).map((m) => m.loss);
  straight.close();

  const first = new Trainer(options(join(root, 'b'), 12));
  for (let i = 0; i < 7; i++) await first.trainStep();
  const saved = await first.save();
  first.close();
  const second = new Trainer(options(join(root, 'b'), 12));
  await second.resume(join(root, 'b')); // through the "latest" pointer
  assert.is(second.currentStep, 7);
  const rest = (await second.run()).map((m) => m.loss);
  assert.equal(rest, reference.slice(7), 'losses after resume are bit-identical');
  second.close();
  assert.ok(existsSync(join(saved, 'model.safetensors')) && existsSync(join(saved, 'optimizer.safetensors')));
  assert.ok(!readdirSync(join(root, 'b')).some((f) => f.includes('.tmp')), 'no temp directories left');
});

test('a saved checkpoint reloads to identical logits, in the HF layout', async () => {
  const trainer = new Trainer(options(join(root, 'c'), 3));
  await trainer.run();
  const dir = await trainer.save();
  const ids = tensor(Int32Array.from({ length: 20 }, (_, i) => (i * 13) % 256), { shape: [2, 10] });
  const before = await trainer.model.forward(ids, false).toArray();
  const loaded = loadModel(dir);
  assert.equal(await loaded.forward(ids, false).toArray(), before);
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  assert.is(config.architectures[0], 'LlamaForCausalLM');
  assert.is(config.num_key_value_heads, 2);
  const names = [...loadCheckpoint(dir).weights.keys()];
  for (const name of ['model.embed_tokens.weight', 'model.layers.0.self_attn.q_proj.weight', 'model.layers.1.mlp.gate_proj.weight',
    'model.layers.1.mlp.up_proj.weight', 'model.layers.0.mlp.down_proj.weight', 'model.layers.0.input_layernorm.weight',
    'model.layers.0.post_attention_layernorm.weight', 'model.norm.weight', 'lm_head.weight']) {
    assert.ok(names.includes(name), `checkpoint has ${name}`);
  }
  trainer.close();
  loaded.dispose();
});

test('corrupt, truncated and mismatched checkpoints are ERR_CHECKPOINT', async () => {
  const trainer = new Trainer(options(join(root, 'd'), 1));
  await trainer.run();
  const dir = await trainer.save();
  const model = join(dir, 'model.safetensors');
  const bytes = readFileSync(model);
  writeFileSync(model, bytes.subarray(0, bytes.length - 100));
  await assertKilnError(() => loadModel(dir), 'ERR_CHECKPOINT', 'truncated');
  writeFileSync(model, bytes);
  const other = new Trainer({ ...options(join(root, 'e'), 1), config: { ...small, layers: 1 } });
  await assertKilnError(() => other.resume(dir), 'ERR_CHECKPOINT', 'does not match');
  writeFileSync(join(dir, 'config.json'), '{"model_type": "llama", "hidden_size": 64');
  await assertKilnError(() => loadModel(dir), 'ERR_CHECKPOINT');
  await assertKilnError(() => loadModel(join(root, 'nowhere')), 'ERR_CHECKPOINT');
  trainer.close();
  other.close();
});

test('bad training options are typed errors', async () => {
  await assertKilnError(() => new Trainer({ ...options(join(root, 'f'), 0) }), 'ERR_ARG');
  await assertKilnError(() => new Trainer({ ...options(join(root, 'f'), 1), seqLen: 1000 }), 'ERR_ARG', 'context');
  await assertKilnError(() => new Trainer({ ...options(join(root, 'f'), 1), data: join(root, 'missing') }), 'ERR_ARG');
  await assertKilnError(() => new Trainer({ ...options(join(root, 'f'), 1), config: { ...small, vocabSize: 100 } }), 'ERR_ARG', 'vocabulary');
  await assertKilnError(() => new Trainer({ ...options(join(root, 'f'), 1), device: 'cuda:0' }), 'ERR_DEVICE');
  await assertKilnError(() => new Trainer({ ...options(join(root, 'f'), 1), gradClip: -1 }), 'ERR_ARG', 'gradClip');
});

test.run();
