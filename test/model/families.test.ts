/**
 * The LLaMA family as people use it, from Hugging Face directories written here with random
 * weights: LLaMA 3.x (rope_scaling llama3, linear), head_dim independent of hidden_size / heads,
 * rms_norm_eps from config.json, Qwen2 (q/k/v biases), Qwen3 (per-head q/k RMSNorm). For each,
 * kiln's next-token log-probabilities (the training forward) equal an independent f64 forward of
 * the HF formulas (test/oracles/hf_decoder_reference.ts), and that oracle without the feature is
 * far off (so the feature is really in use); the serving engine decodes the training forward's
 * greedy tokens; the new parameters' gradients match finite differences; the loss falls.
 */
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Engine, ops, tensor } from '../../lib/index.js';
import { loadCheckpoint, loadModel, saveCheckpoint } from '../../lib/io/checkpoint.js';
import { exportLlamaGguf } from '../../lib/io/gguf_llama.js';
import { type RawTensor, writeSafetensors } from '../../lib/io/safetensors.js';
import { type ModelConfig, fromHfConfig, parameterLayout, toHfConfig, totalParameters } from '../../lib/model/config.js';
import { LlamaModel } from '../../lib/model/llama.js';
import { binding } from '../../lib/native.js';
import { layerWeights } from '../../lib/train/matmul_tuner.js';
import { Optimizer, llamaParamGroups } from '../../lib/optim/optimizer.js';
import { generateTokens } from '../oracles/generate_reference.js';
import { type ReferenceModel, hfInverseFrequencies, referenceLogProbs } from '../oracles/hf_decoder_reference.js';
import { assertKilnError } from '../helpers.js';

const test = suite('model families (llama3 rope, qwen2, qwen3)');

/** Seeded uniform(-1, 1) values (a plain LCG: the weights need no quality, only reproducibility). */
function uniform(n: number, seed: number, scale: number, offset = 0): Float32Array {
  let state = seed >>> 0 || 1;
  return Float32Array.from({ length: n }, () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return offset + scale * (state / 2 ** 31 - 1);
  });
}

interface Family {
  name: string;
  hf: Record<string, unknown>;
  qkvBias: boolean;
  qkNorm: boolean;
}

const V = 256, d = 32, L = 2, Hq = 4, Hkv = 2, D = 16, F = 48;

function hfConfig(extra: Record<string, unknown>): Record<string, unknown> {
  // head_dim 16 with 4 heads: q is 64 wide, not hidden_size 32 (independent head_dim)
  return {
    vocab_size: V, hidden_size: d, intermediate_size: F, num_hidden_layers: L, num_attention_heads: Hq, num_key_value_heads: Hkv,
    head_dim: D, max_position_embeddings: 1024, rms_norm_eps: 1e-6, rope_theta: 10000, hidden_act: 'silu', tie_word_embeddings: false, ...extra,
  };
}

/** The family's HF tensors, named and shaped here (not from kiln's declaration); 2-D shapes by name. */
const shapes = new Map<string, number[]>();

function hfWeights(f: Family, seed: number): Map<string, Float32Array> {
  const w = new Map<string, Float32Array>();
  let s = seed;
  const matrix = (name: string, rows: number, cols: number) => {
    shapes.set(name, [rows, cols]);
    w.set(name, uniform(rows * cols, s++, Math.sqrt(3 / cols)));
  };
  const norm = (name: string, n: number) => w.set(name, uniform(n, s++, 0.3, 1));
  matrix('model.embed_tokens.weight', V, d);
  w.set('model.embed_tokens.weight', uniform(V * d, s++, 1));
  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}`;
    norm(`${p}.input_layernorm.weight`, d);
    matrix(`${p}.self_attn.q_proj.weight`, Hq * D, d);
    matrix(`${p}.self_attn.k_proj.weight`, Hkv * D, d);
    matrix(`${p}.self_attn.v_proj.weight`, Hkv * D, d);
    if (f.qkvBias) {
      for (const [n, rows] of [['q_proj', Hq * D], ['k_proj', Hkv * D], ['v_proj', Hkv * D]] as const) w.set(`${p}.self_attn.${n}.bias`, uniform(rows, s++, 0.8));
    }
    if (f.qkNorm) {
      norm(`${p}.self_attn.q_norm.weight`, D);
      norm(`${p}.self_attn.k_norm.weight`, D);
    }
    matrix(`${p}.self_attn.o_proj.weight`, d, Hq * D);
    norm(`${p}.post_attention_layernorm.weight`, d);
    matrix(`${p}.mlp.gate_proj.weight`, F, d);
    matrix(`${p}.mlp.up_proj.weight`, F, d);
    matrix(`${p}.mlp.down_proj.weight`, d, F);
  }
  norm('model.norm.weight', d);
  if (!(f.hf.tie_word_embeddings === true)) matrix('lm_head.weight', V, d);
  return w;
}

function writeHfDir(f: Family, weights: Map<string, Float32Array>): string {
  const dir = join(mkdtempSync(join(tmpdir(), 'kiln-family-')), f.name);
  mkdirSync(dir);
  const raw = new Map<string, RawTensor>();
  for (const [name, values] of weights) {
    const shape = shapes.get(name) ?? [values.length]; // vectors: biases and norms
    raw.set(name, { dtype: 'f32', shape, data: new Uint8Array(values.buffer) });
  }
  writeSafetensors(join(dir, 'model.safetensors'), raw, { format: 'pt' });
  writeFileSync(join(dir, 'config.json'), JSON.stringify(f.hf));
  return dir;
}

function referenceOf(f: Family, drop: { scaling?: boolean; bias?: boolean; qkNorm?: boolean } = {}): ReferenceModel {
  const scaling = drop.scaling ? undefined : (f.hf.rope_scaling as Record<string, number | string> | undefined);
  return {
    vocab: V, dModel: d, layers: L, heads: Hq, kvHeads: Hkv, headDim: D, ffn: F, eps: f.hf.rms_norm_eps as number, tied: f.hf.tie_word_embeddings === true,
    invFreq: hfInverseFrequencies(D, f.hf.rope_theta as number, scaling),
    qkvBias: f.qkvBias && !drop.bias, qkNorm: f.qkNorm && !drop.qkNorm,
  };
}

/** kiln's next-token log-probabilities at every position (the training forward, f32). */
async function kilnLogProbs(model: LlamaModel, ids: number[]): Promise<Float64Array[]> {
  const logits = (await model.forward(tensor(Int32Array.from(ids), { shape: [1, ids.length] }), false).toArray()) as Float32Array;
  return ids.map((_, t) => {
    const row = Float64Array.from(logits.subarray(t * V, (t + 1) * V));
    const max = Math.max(...row);
    const lse = max + Math.log(row.reduce((a, v) => a + Math.exp(v - max), 0));
    return row.map((v) => v - lse);
  });
}

const maxDiff = (a: Float64Array[], b: Float64Array[]) => Math.max(...a.map((row, t) => Math.max(...row.map((v, i) => Math.abs(v - b[t][i])))));

const prompt = (n: number, seed: number) => Array.from({ length: n }, (_, i) => (i * 131 + seed * 17 + ((i * i) % 7)) % V);

/**
 * f32 kiln vs the f64 oracle, max |Δ log p| over every position and token (observed 2e-6 to 7e-6
 * on these configs, 720 positions included); dropping a feature moves it by more than 1.
 */
const TOLERANCE = 5e-5;

const FAMILIES: (Family & { tokens: number; drop: 'scaling' | 'bias' | 'qkNorm' | null })[] = [
  {
    name: 'llama3-scaled', qkvBias: false, qkNorm: false, tokens: 720, drop: 'scaling',
    // original context 64: the scaling changes every frequency that matters at 700 positions
    hf: hfConfig({
      model_type: 'llama', architectures: ['LlamaForCausalLM'], attention_bias: false, mlp_bias: false, rope_theta: 10000,
      rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 },
    }),
  },
  {
    name: 'llama-linear', qkvBias: false, qkNorm: false, tokens: 200, drop: 'scaling',
    hf: hfConfig({ model_type: 'llama', rope_scaling: { type: 'linear', factor: 4 }, rms_norm_eps: 1e-5 }),
  },
  {
    name: 'qwen2', qkvBias: true, qkNorm: false, tokens: 96, drop: 'bias',
    hf: hfConfig({ model_type: 'qwen2', architectures: ['Qwen2ForCausalLM'], rope_theta: 1000000, use_sliding_window: false, sliding_window: 4096, max_window_layers: 2, tie_word_embeddings: true }),
  },
  {
    name: 'qwen3', qkvBias: false, qkNorm: true, tokens: 96, drop: 'qkNorm',
    hf: hfConfig({ architectures: ['Qwen3ForCausalLM'], rope_theta: 1000000, attention_bias: false, use_sliding_window: false }),
  },
];

for (const f of FAMILIES) {
  test(`${f.name}: kiln's log-probabilities equal the f64 HF-formula oracle; without the feature they do not; serving decodes the same greedy tokens`, async () => {
    const weights = hfWeights(f, 7);
    const dir = writeHfDir(f, weights);
    const ids = prompt(f.tokens, 3);
    const model = loadModel(dir);
    try {
      const ours = await kilnLogProbs(model, ids);
      const reference = referenceLogProbs(referenceOf(f), weights, ids);
      const diff = maxDiff(ours, reference);
      if (process.env.KILN_FAMILY_DIFFS) console.log(f.name, 'kiln vs oracle', diff);
      assert.ok(diff < TOLERANCE, `${f.name}: max |log p - oracle| = ${diff}`);
      if (f.drop) {
        const without = referenceLogProbs(referenceOf(f, { [f.drop]: true }), weights, ids);
        const off = maxDiff(ours, without);
        if (process.env.KILN_FAMILY_DIFFS) console.log(f.name, `kiln vs oracle without ${f.drop}`, off);
        assert.ok(off > 1000 * TOLERANCE, `${f.name} without ${f.drop}: the oracle differs by only ${off}`);
      }
      // serving: paged KV, chunked prefill (maxBatchTokens below the prompt), batch-invariant matmuls
      const expected = await generateTokens(model, ids, { maxTokens: 8, temperature: 0 });
      const engine = await Engine.load(dir, { maxBatchTokens: 256, tokenizer: 'byte' });
      try {
        const out = await engine.generate(ids, { maxTokens: 8, temperature: 0, ignoreEos: true });
        assert.equal(out.tokenIds, expected);
      } finally {
        await engine.close();
      }
    } finally {
      model.dispose();
    }
  });
}

test('config.json of each family reads back as it was written, and checkpoints keep the family', async () => {
  for (const f of FAMILIES) {
    const config = fromHfConfig(f.hf);
    const again = fromHfConfig(JSON.parse(JSON.stringify(toHfConfig(config))));
    assert.equal(again, config, f.name);
  }
  const qwen3 = fromHfConfig(FAMILIES[3].hf);
  assert.is(qwen3.arch, 'qwen3');
  assert.is(qwen3.headDim, 16);
  assert.is(qwen3.normEps, 1e-6);
  assert.is(toHfConfig(qwen3).model_type, 'qwen3');
  // q/k norms: 2 layers x 2 x head_dim more parameters than the same LLaMA
  const { arch: _, ...asLlama } = qwen3;
  assert.is(totalParameters(qwen3) - totalParameters(asLlama), L * 2 * D);
  const model = new LlamaModel({ ...qwen3, context: 16 }, { seed: 1 });
  const dir = join(mkdtempSync(join(tmpdir(), 'kiln-family-ckpt-')), 'ckpt');
  await saveCheckpoint(dir, model.config, model.namedWeights(), undefined, undefined);
  const loaded = loadCheckpoint(dir);
  assert.equal(loaded.config, model.config);
  assert.ok(loaded.weights.has('model.layers.1.self_attn.k_norm.weight'));
  model.dispose();
});

test("the tuner's layer GEMMs and the parameter kinds follow the declaration", () => {
  const qwen3 = fromHfConfig(FAMILIES[3].hf);
  // q is 64 wide (4 heads of 16) on a 32-wide model, so q and o are distinct GEMMs
  assert.equal(layerWeights(qwen3), [['q', 64, 32], ['k/v', 32, 32], ['o', 32, 64], ['gate+up', 96, 32], ['down', 32, 48]]);
  const layer = parameterLayout(fromHfConfig(FAMILIES[2].hf)).layers[0];
  assert.equal(layer.filter((p) => p.kind === 'bias').map((p) => p.name), ['q_proj', 'k_proj', 'v_proj'].map((n) => `model.layers.0.self_attn.${n}.bias`));
});

test('what kiln does not implement is refused, naming the field', async () => {
  const base = FAMILIES[2].hf;
  const refused: [Record<string, unknown>, string][] = [
    [{ ...base, use_sliding_window: true }, 'use_sliding_window'],
    [{ ...base, model_type: 'gemma', architectures: ['GemmaForCausalLM'] }, 'model_type'],
    [{ ...base, model_type: 'mistral' }, 'model_type'],
    [{ ...base, model_type: undefined, architectures: ['Gemma2ForCausalLM'] }, 'architectures'],
    [{ ...base, rope_scaling: { rope_type: 'yarn', factor: 4 } }, 'rope_scaling'],
    [{ ...base, model_type: 'llama', attention_bias: true }, 'attention_bias'],
    [{ ...base, model_type: 'qwen3', attention_bias: true }, 'attention_bias'],
    [{ ...base, hidden_act: 'gelu' }, 'hidden_act'],
    [{ ...base, rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 4, high_freq_factor: 1, original_max_position_embeddings: 64 } }, 'highFreqFactor'],
  ];
  for (const [json, field] of refused) await assertKilnError(() => fromHfConfig(json), 'ERR_CHECKPOINT', field);
  // a qwen3 config that leaves head_dim out gets Qwen3's default (128), as transformers reads it
  const { head_dim: _, ...noHeadDim } = FAMILIES[3].hf;
  assert.is(fromHfConfig(noHeadDim).headDim, 128);
});

test('GGUF export refuses the families and rope scalings it cannot write (no file)', async () => {
  for (const f of [FAMILIES[0], FAMILIES[2]]) {
    const config: ModelConfig = { ...fromHfConfig(f.hf), layers: 1, context: 16 };
    const model = new LlamaModel(config, { seed: 2 });
    const dir = join(mkdtempSync(join(tmpdir(), 'kiln-family-gguf-')), 'ckpt');
    await saveCheckpoint(dir, model.config, model.namedWeights(), undefined, undefined);
    model.dispose();
    const out = join(dir, '..', 'model.gguf');
    await assertKilnError(() => exportLlamaGguf(dir, out), 'ERR_ARG', f.name === 'qwen2' ? 'qwen2' : 'rope_scaling');
    assert.not.ok((await import('node:fs')).existsSync(out));
  }
});

// ---------- training: gradients of the new parameters, and the loss falls ----------

const small = (arch: string | undefined, extra: Partial<ModelConfig> = {}): ModelConfig => ({
  vocabSize: 11, dModel: 8, layers: 2, heads: 4, kvHeads: 2, headDim: 6, ffn: 12, context: 8, ropeTheta: 10000, normEps: 1e-5, tiedEmbeddings: false,
  ...(arch ? { arch } : {}), ...extra,
});

function batch(B: number, T: number, vocab: number) {
  const ids = Int32Array.from({ length: B * T }, (_, i) => (i * 7 + 3) % vocab);
  const targets = Int32Array.from({ length: B * T }, (_, i) => (i * 5 + 1) % vocab);
  return { ids: tensor(ids, { shape: [B, T] }), targets: tensor(targets, { shape: [B, T] }), count: B * T };
}

async function meanLoss(model: LlamaModel, data: ReturnType<typeof batch>): Promise<number> {
  const logits = model.forward(data.ids, false);
  const { loss } = ops.crossEntropy(logits, data.targets.reshape(data.count));
  const total = (await ops.sum(loss).toArray())[0];
  logits.dispose();
  return total / data.count;
}

const TRAINED: [string, ModelConfig, RegExp][] = [
  ['qwen2 q/k/v biases', small('qwen2'), /_proj\.bias$/],
  ['qwen3 q/k norms', small('qwen3'), /_norm\.weight$/],
  ['llama3 rope scaling', small(undefined, { ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalContext: 16 } }), /[qk]_proj\.weight$/],
];

for (const [name, config, pattern] of TRAINED) {
  test(`${name}: gradients match f64 finite differences`, async () => {
    const model = new LlamaModel(config, { paramDType: 'f64', seed: 5 });
    const data = batch(2, 6, config.vocabSize);
    // non-trivial biases and norm weights (they start at 0 and 1)
    for (const p of model.parameters) if (/bias$|_norm\.weight$/.test(p.name)) binding().copy(p.value.handle, tensor(Float64Array.from(uniform(p.value.numel, p.name.length, 0.5, p.kind === 'norm' ? 1 : 0)), { shape: [...p.value.shape] }).handle);
    model.zeroGrad();
    const logits = model.forward(data.ids);
    await model.backward(logits, data.targets, data.count).toArray();
    const h = 1e-5;
    let checked = 0;
    for (const p of model.parameters) {
      if (!pattern.test(p.name)) continue;
      const grad = await p.grad.toArray();
      const values = Float64Array.from(await p.value.toArray());
      for (const i of [0, Math.floor(values.length / 2), values.length - 1]) {
        const original = values[i];
        const set = (v: number) => {
          values[i] = v;
          binding().copy(p.value.handle, tensor(values, { shape: [...p.value.shape] }).handle);
        };
        set(original + h);
        const plus = await meanLoss(model, data);
        set(original - h);
        const minus = await meanLoss(model, data);
        set(original);
        const numeric = (plus - minus) / (2 * h);
        assert.ok(Math.abs(grad[i] - numeric) <= 1e-7 + 1e-5 * Math.abs(numeric), `${p.name}[${i}]: analytic ${grad[i]} vs numeric ${numeric}`);
        if (Math.abs(numeric) > 1e-6) checked++;
      }
    }
    assert.ok(checked >= 6, `only ${checked} checked elements have a gradient above 1e-6`);
    model.dispose();
  });
}

test('activation recomputation gives the same gradients with biases, q/k norms and scaled RoPE', async () => {
  for (const [, config] of TRAINED) {
    const grads: Float32Array[][] = [];
    for (const recompute of [false, true]) {
      const model = new LlamaModel(config, { seed: 6, recompute });
      const data = batch(2, 8, 11);
      model.zeroGrad();
      await model.forwardBackward(data.ids, data.targets, data.count).toArray();
      grads.push(await Promise.all(model.parameters.map(async (p) => (await p.grad.toArray()) as Float32Array)));
      model.dispose();
    }
    grads[0].forEach((g, i) => assert.equal(Array.from(grads[1][i]), Array.from(g), `${config.arch ?? 'llama'} parameter ${i}`));
  }
});

test('ops.rope checks invFreq', async () => {
  const x = tensor(new Float32Array(2 * 3 * 8), { shape: [1, 2, 3, 8] });
  const positions = tensor(Int32Array.from([0, 1]), { shape: [1, 2] });
  await assertKilnError(() => ops.rope(x, positions, { invFreq: tensor(new Float32Array(3)) }), 'ERR_SHAPE');
  await assertKilnError(() => ops.rope(x, positions, { invFreq: tensor(new Float64Array(4)) }), 'ERR_SHAPE');
  // the inverse frequencies of plain RoPE give plain RoPE (to f32 rounding of the frequencies)
  const values = uniform(48, 9, 1);
  const plain = await ops.rope(tensor(values, { shape: [1, 2, 3, 8] }), positions, { base: 500 }).toArray();
  const inv = Float32Array.from({ length: 4 }, (_, j) => 500 ** (-j / 4));
  const given = await ops.rope(tensor(values, { shape: [1, 2, 3, 8] }), positions, { base: 500, invFreq: tensor(inv) }).toArray();
  given.forEach((v, i) => assert.ok(Math.abs(v - plain[i]) < 1e-6, `element ${i}: ${v} vs ${plain[i]}`));
});

test('qwen2 and qwen3 train: biases in a no-decay AdamW group, the loss falls', async () => {
  for (const arch of ['qwen2', 'qwen3']) {
    const model = new LlamaModel(small(arch), { seed: 4 });
    const groups = llamaParamGroups(model.parameters, { adamw: { lr: 1e-2, weightDecay: 0.1 } });
    const biases = model.parameters.filter((p) => p.kind === 'bias');
    const biasGroup = groups.find((g) => g.params.some((p) => biases.includes(p as (typeof biases)[number])));
    if (arch === 'qwen2') {
      assert.ok(biasGroup && biasGroup.rule === 'adamw' && biasGroup.weightDecay === 0 && biasGroup.params.length === 2 * 3, 'qwen2: 6 biases, AdamW, no decay');
      assert.ok(biases.every((b) => b.name.endsWith('_proj.bias')));
    } else {
      assert.is(biasGroup, undefined);
    }
    const optimizer = new Optimizer(groups);
    const data = batch(2, 8, 11);
    const losses: number[] = [];
    for (let step = 0; step < 6; step++) {
      model.zeroGrad();
      losses.push((await model.forwardBackward(data.ids, data.targets, data.count).toArray())[0]);
      optimizer.update();
    }
    assert.ok(losses.at(-1)! < losses[0] - 0.1, `${arch} losses ${losses.map((l) => l.toFixed(3)).join(' ')}`);
    optimizer.dispose();
    model.dispose();
  }
});

test.run();
