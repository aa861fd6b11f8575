/**
 * GGUF export checked by llama.cpp itself (node-llama-cpp's prebuilt CPU binaries): on trained
 * checkpoints, llama.cpp's greedy continuation equals kiln's and their next-token
 * log-probabilities agree at every step; llama.cpp tokenizes text exactly as kiln does. The
 * llama.cpp tests skip (with the reason) only where node-llama-cpp cannot load on the platform.
 */
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { randn, tensor } from '../../lib/index.js';
import { f16ToFloat } from '../../lib/dtype.js';
import { bundledCorpus, prepareDocuments } from '../../lib/io/shards.js';
import { type Tokenizer, byteTokenizer, gpt2Tokenizer } from '../../lib/data/tokenizer.js';
import { loadModel } from '../../lib/io/checkpoint.js';
import { f32ToBf16Bits, f32ToF16Bits, readGgufHeader, readGgufTensorBytes } from '../../lib/io/gguf.js';
import { byteToUnicode, exportLlamaGguf, permuteForAdjacentRope } from '../../lib/io/gguf_llama.js';
import { type ModelConfig, preset } from '../../lib/model/config.js';
import type { LlamaModel } from '../../lib/model/llama.js';
import { loadCheckpoint } from '../../lib/io/checkpoint.js';
import { Trainer } from '../../lib/train/trainer.js';
import { Engine } from '../../lib/serve/engine.js';
import { assertKilnError } from '../helpers.js';

const test = suite('gguf export, checked by llama.cpp');
// KILN_TEST_TIMING=1 prints where the time goes
const t0 = performance.now();
const lap = (what: string) => process.env.KILN_TEST_TIMING && console.log(`${what}: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
const timed = (name: string, fn: () => Promise<void>) => test(name, async () => {
  await fn();
  lap(name.slice(0, 50));
});
const root = mkdtempSync(join(tmpdir(), 'kiln-gguf-'));

// llama.cpp through node-llama-cpp: the CPU prebuilt only, never a download or a source build
type NodeLlamaCpp = typeof import('node-llama-cpp');
type Llama = Awaited<ReturnType<NodeLlamaCpp['getLlama']>>;
let llama: Llama | undefined;
let unavailable = '';
try {
  const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
  llama = await getLlama({ gpu: false, build: 'never', usePrebuiltBinaries: true, skipDownload: true, progressLogs: false, logLevel: LlamaLogLevel.error });
} catch (error) {
  unavailable = `node-llama-cpp cannot load on ${process.platform}-${process.arch}: ${(error as Error).message}`;
  console.log(`skipping the llama.cpp comparisons: ${unavailable}`);
}
const withLlama = (name: string, fn: () => Promise<void>) => (llama ? timed(name, fn) : test.skip(name));

const tiny = preset('tiny'); // d 128, 4 layers, 4 heads / 2 kv heads, head dim 32, byte vocabulary
const tied: ModelConfig = { ...tiny, layers: 2, tiedEmbeddings: true };
const gpt2Config: ModelConfig = { ...tiny, vocabSize: 50304, layers: 2, dModel: 64, heads: 2, kvHeads: 1, ffn: 176 };

async function trainCheckpoint(name: string, config: ModelConfig, data: string, steps: number, batch = 8, seqLen = 64): Promise<string> {
  const trainer = new Trainer({ config, data, steps, batch, seqLen, out: join(root, name), evalEvery: 0, seed: 5, adamwLr: 0.01 });
  await trainer.run();
  const dir = await trainer.save();
  trainer.close();
  return dir;
}

const checkpoints: Record<string, string> = {};
test.before(async () => {
  lap('llama.cpp loaded');
  const corpus = await bundledCorpus(300);
  prepareDocuments(corpus, join(root, 'bytes'), byteTokenizer, { valFraction: 0.05 });
  lap('byte data');
  checkpoints.tiny = await trainCheckpoint('tiny', tiny, join(root, 'bytes'), 40);
  lap('tiny trained');
  checkpoints.tied = await trainCheckpoint('tied', tied, join(root, 'bytes'), 25);
  lap('tied trained');
  await exportLlamaGguf(checkpoints.tiny, join(root, 'tiny-f32.gguf'));
  if (llama) {
    prepareDocuments(corpus.slice(0, 60), join(root, 'gpt2'), await gpt2Tokenizer(), { valFraction: 0.1 });
    lap('gpt2 data');
    checkpoints.gpt2 = await trainCheckpoint('gpt2', gpt2Config, join(root, 'gpt2'), 8, 4, 32);
    lap('gpt2 trained');
  }
});

test.after(async () => {
  await llama?.dispose();
  rmSync(root, { recursive: true, force: true });
});

/** log-softmax in f64 */
function logSoftmax(logits: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max);
  const lse = max + Math.log(sum);
  return Float64Array.from(logits, (l) => l - lse);
}

async function kilnLastLogits(model: LlamaModel, ids: number[]): Promise<Float32Array> {
  using input = tensor(Int32Array.from(ids), { shape: [1, ids.length] });
  using logits = model.forward(input, false);
  const all = (await logits.toArray()) as Float32Array;
  const V = model.config.vocabSize;
  return all.slice((ids.length - 1) * V, ids.length * V);
}

interface Comparison {
  kilnTokens: number[];
  llamaTokens: number[];
  /** the largest |log p_kiln - log p_llama.cpp| over every step and token with p > 1e-12 */
  maxLogprobError: number;
}

/** Greedy decoding side by side: each step feeds both engines the same history (llama.cpp incrementally through its KV cache). */
async function compareGreedy(gguf: string, checkpoint: string, prompt: number[], steps: number, kvType: 'F32' | 'F16' = 'F32'): Promise<Comparison> {
  const model = loadModel(checkpoint);
  const llamaModel = await llama!.loadModel({ modelPath: gguf, gpuLayers: 0 });
  const context = await llamaModel.createContext({
    contextSize: model.config.context, sequences: 1, threads: 1, batchSize: model.config.context, flashAttention: false,
    experimentalKvCacheKeyType: kvType, experimentalKvCacheValueType: kvType,
  });
  const sequence = context.getSequence();
  const result: Comparison = { kilnTokens: [], llamaTokens: [], maxLogprobError: 0 };
  try {
    const history = [...prompt];
    let pending = [...prompt];
    for (let step = 0; step < steps; step++) {
      const input = pending.map((t, i) => (i === pending.length - 1 ? ([t, { generateNext: { token: true, probabilities: true, options: { temperature: 0 } } }] as const) : t));
      const output = await sequence.controlledEvaluate(input as never);
      const next = output[pending.length - 1]!.next;
      const kilnLogits = await kilnLastLogits(model, history);
      const kilnLogprobs = logSoftmax(kilnLogits);
      let best = 0;
      for (let i = 1; i < kilnLogits.length; i++) if (kilnLogits[i] > kilnLogits[best]) best = i;
      result.kilnTokens.push(best);
      result.llamaTokens.push(next.token as number);
      assert.is(next.probabilities!.size, model.config.vocabSize, 'llama.cpp scores the whole vocabulary');
      for (const [token, p] of next.probabilities!) {
        if (p > 1e-12) result.maxLogprobError = Math.max(result.maxLogprobError, Math.abs(Math.log(p) - kilnLogprobs[token]));
      }
      // both continue from kiln's token, so a disagreement is counted once, not compounded
      history.push(best);
      pending = [best];
    }
  } finally {
    await context.dispose();
    await llamaModel.dispose();
    model.dispose();
  }
  return result;
}

timed('f16 and bf16 conversion round to nearest even, like kiln casts', async () => {
  const special = [0, -0, 1, -1, 65504, 65520, 1e6, -1e6, 6.1e-5, 5.96e-8, 2.98e-8, 2.99e-8, 1e-10, Infinity, -Infinity, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 3.3895314e38];
  const random = await randn([4096], { seed: 3, std: 50 }).toArray();
  const small = await randn([1024], { seed: 4, std: 1e-5 }).toArray();
  const values = Float32Array.from([...special, ...random, ...small]);
  using t = tensor(values);
  const f16 = f32ToF16Bits(values);
  const viaKiln16 = await t.cast('f16').toArray();
  assert.equal(Array.from(f16, f16ToFloat), Array.from(viaKiln16), 'f16 bits match kiln\'s cast');
  const bf16 = f32ToBf16Bits(values);
  const viaKilnBf16 = await t.cast('bf16').toArray();
  assert.equal(Array.from(new Float32Array(new Uint32Array(Array.from(bf16, (b) => b << 16)).buffer)), Array.from(viaKilnBf16), 'bf16 bits match kiln\'s cast');
  const nan = f32ToF16Bits(Float32Array.of(NaN));
  assert.ok(Number.isNaN(f16ToFloat(nan[0])) && Number.isNaN(new Float32Array(new Uint32Array([f32ToBf16Bits(Float32Array.of(NaN))[0] << 16]).buffer)[0]));
});

timed('the file holds llama metadata, the vocabulary and permuted q/k rows', async () => {
  const out = join(root, 'tiny-f32-again.gguf');
  const result = await exportLlamaGguf(checkpoints.tiny, out);
  assert.is(result.tensors, 2 + 9 * tiny.layers + 1);
  const header = readGgufHeader(out);
  const m = header.metadata;
  assert.is(m.get('general.architecture'), 'llama');
  for (const [key, value] of [['llama.context_length', 128], ['llama.embedding_length', 128], ['llama.block_count', 4], ['llama.feed_forward_length', 352],
    ['llama.attention.head_count', 4], ['llama.attention.head_count_kv', 2], ['llama.rope.dimension_count', 32], ['llama.vocab_size', 256],
    ['llama.rope.freq_base', 10000], ['tokenizer.ggml.eos_token_id', 0], ['general.file_type', 0]] as const) {
    assert.is(m.get(key), value, key);
  }
  assert.ok(Math.abs((m.get('llama.attention.layer_norm_rms_epsilon') as number) - 1e-5) < 1e-10);
  const tokens = m.get('tokenizer.ggml.tokens') as string[];
  assert.is(tokens.length, 256);
  assert.is(tokens[0], '<|endoftext|>');
  assert.is(tokens[32], 'Ġ', 'a space is spelled as GPT-2 spells it');
  assert.is(tokens[65], 'A');
  assert.is(new Set(byteToUnicode()).size, 256);
  assert.equal(m.get('tokenizer.ggml.merges'), []);
  const names = header.tensors.map((t) => t.name);
  assert.ok(names.includes('output.weight') && names.includes('blk.3.ffn_down.weight'));
  const down = header.tensors.find((t) => t.name === 'blk.0.ffn_down.weight')!;
  assert.equal(down.shape, [128, 352]);
  for (const t of header.tensors) assert.is(t.fileOffset % 32, 0, `${t.name} is aligned`);
  // q rows: head h row 2i = kiln row i, row 2i+1 = kiln row i + D/2
  const q = loadCheckpoint(checkpoints.tiny).weights.get('model.layers.1.self_attn.q_proj.weight')!.values as Float32Array;
  const info = header.tensors.find((t) => t.name === 'blk.1.attn_q.weight')!;
  const bytes = readGgufTensorBytes(out, info);
  const written = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  assert.equal(Array.from(written.subarray(2 * 128, 3 * 128)), Array.from(q.subarray(1 * 128, 2 * 128)));
  assert.equal(Array.from(written.subarray(3 * 128, 4 * 128)), Array.from(q.subarray(17 * 128, 18 * 128)));
  assert.equal(Array.from(written.subarray((32 + 5) * 128, (32 + 6) * 128)), Array.from(q.subarray((32 + 18) * 128, (32 + 19) * 128)));
  assert.equal(permuteForAdjacentRope(Float32Array.from([0, 1, 2, 3, 4, 5, 6, 7]), 2, 4, 1), Float32Array.from([0, 2, 1, 3, 4, 6, 5, 7]));
  // tied embeddings: no output.weight
  const tiedOut = join(root, 'tied.gguf');
  await exportLlamaGguf(checkpoints.tied, tiedOut, { dtype: 'f16' });
  const tiedHeader = readGgufHeader(tiedOut);
  assert.not.ok(tiedHeader.tensors.some((t) => t.name === 'output.weight'));
  assert.is(tiedHeader.tensors.find((t) => t.name === 'token_embd.weight')!.ggmlType, 1);
  assert.is(tiedHeader.tensors.find((t) => t.name === 'output_norm.weight')!.ggmlType, 0, 'norms stay f32');
  assert.is(tiedHeader.metadata.get('general.file_type'), 1);
});

withLlama('llama.cpp continues greedily exactly as kiln does, with the same log-probabilities (f32, byte tokenizer)', async () => {
  const out = join(root, 'tiny-f32.gguf');
  const text = 'The film was';
  const prompt = byteTokenizer.encode(text);
  const llamaModel = await llama!.loadModel({ modelPath: out, gpuLayers: 0 });
  assert.equal(llamaModel.tokenize(text), prompt, 'llama.cpp tokenizes the prompt as kiln does');
  assert.equal(llamaModel.tokenize('naïve — 東京\n\tend'), byteTokenizer.encode('naïve — 東京\n\tend'));
  assert.is(llamaModel.detokenize(byteTokenizer.encode('naïve — 東京') as never), 'naïve — 東京');
  assert.is(llamaModel.tokens.eos, 0);
  await llamaModel.dispose();
  const r = await compareGreedy(out, checkpoints.tiny, prompt, 40);
  assert.equal(r.llamaTokens, r.kilnTokens, 'greedy continuations agree token for token');
  assert.ok(r.maxLogprobError < 2e-4, `log-probabilities agree to f32 tolerance (max error ${r.maxLogprobError.toExponential(2)})`);
  assert.ok(new Set(r.kilnTokens).size > 3, 'the trained model says something');
  // the serving engine (paged KV cache) continues the same way
  const engine = await Engine.load(checkpoints.tiny);
  const completion = await engine.generate(prompt, { maxTokens: 40, temperature: 0, ignoreEos: true });
  await engine.close();
  assert.equal(completion.tokenIds, r.llamaTokens, 'the kiln engine and llama.cpp agree token for token');
  lap(`byte f32 max log-prob error ${r.maxLogprobError.toExponential(2)}`);
});

withLlama('tied embeddings and half-precision exports agree within their rounding', async () => {
  const prompt = byteTokenizer.encode('It was a ');
  const tiedF32 = join(root, 'tied-f32.gguf');
  await exportLlamaGguf(checkpoints.tied, tiedF32);
  const r = await compareGreedy(tiedF32, checkpoints.tied, prompt, 12);
  assert.equal(r.llamaTokens, r.kilnTokens);
  assert.ok(r.maxLogprobError < 2e-4, `tied f32: max log-probability error ${r.maxLogprobError.toExponential(2)}`);
  lap(`tied f32 max log-prob error ${r.maxLogprobError.toExponential(2)}`);
  for (const [dtype, tolerance] of [['f16', 0.02], ['bf16', 0.1]] as const) {
    const out = join(root, `tiny-${dtype}.gguf`);
    await exportLlamaGguf(checkpoints.tiny, out, { dtype });
    const half = await compareGreedy(out, checkpoints.tiny, prompt, 8, 'F16');
    assert.ok(half.maxLogprobError < tolerance, `${dtype}: max log-probability error ${half.maxLogprobError.toExponential(2)} (tolerance ${tolerance})`);
    lap(`${dtype} max log-prob error ${half.maxLogprobError.toExponential(2)}`);
    const agree = half.llamaTokens.filter((t, i) => t === half.kilnTokens[i]).length;
    assert.ok(agree >= 7, `${dtype}: ${agree}/8 greedy tokens agree`);
  }
});

withLlama('GPT-2 vocabulary: llama.cpp tokenizes like gpt-tokenizer and continues like kiln', async () => {
  const tokenizer: Tokenizer = await gpt2Tokenizer();
  const out = join(root, 'gpt2.gguf');
  const result = await exportLlamaGguf(checkpoints.gpt2, out);
  lap('gpt2 exported');
  assert.is(result.tokenizer, 'gpt2');
  const header = readGgufHeader(out);
  assert.is((header.metadata.get('tokenizer.ggml.merges') as string[]).length, 50000, 'GPT-2 has 50,000 merges');
  assert.is((header.metadata.get('tokenizer.ggml.merges') as string[])[0], 'Ġ t', 'the first merge of GPT-2');
  assert.is((header.metadata.get('tokenizer.ggml.tokens') as string[])[50256], '<|endoftext|>');
  assert.is((header.metadata.get('tokenizer.ggml.tokens') as string[]).length, 50304);
  const llamaModel = await llama!.loadModel({ modelPath: out, gpuLayers: 0 });
  const texts = (await bundledCorpus(16)).map((d) => d.slice(0, 1000));
  texts.push("Hello world! It's 3.14159 -- naïve café, 東京, emoji 🙂, tabs\tand  double  spaces\n\nend");
  for (const text of texts) {
    assert.equal(llamaModel.tokenize(text), tokenizer.encode(text), `tokenization of ${JSON.stringify(text.slice(0, 40))}...`);
  }
  // llama.cpp's GPT-2 detokenizer cleans " ." and the like (clean_up_tokenization_spaces, as Hugging Face's GPT-2 decode does); elsewhere it is exact
  assert.is(llamaModel.detokenize(tokenizer.encode(texts.at(-1)!) as never), texts.at(-1));
  await llamaModel.dispose();
  lap('gpt2 tokenized');
  const r = await compareGreedy(out, checkpoints.gpt2, tokenizer.encode('The story of the'), 12);
  assert.equal(r.llamaTokens, r.kilnTokens);
  assert.ok(r.maxLogprobError < 2e-4, `gpt2 f32: max log-probability error ${r.maxLogprobError.toExponential(2)}`);
  lap(`gpt2 f32 max log-prob error ${r.maxLogprobError.toExponential(2)}`);
});

timed('bad exports are typed errors and leave no file behind', async () => {
  const out = join(root, 'bad', 'x.gguf');
  await assertKilnError(() => exportLlamaGguf(checkpoints.tiny, out, { dtype: 'q4_0' as never }), 'ERR_DTYPE', 'f32, f16, bf16');
  await assertKilnError(() => exportLlamaGguf(join(root, 'missing'), out), 'ERR_CHECKPOINT');
  await assertKilnError(() => exportLlamaGguf(checkpoints.tiny, out, { tokenizer: 'gpt2' }), 'ERR_ARG', 'more than the model');
  await assertKilnError(() => exportLlamaGguf(checkpoints.tiny, out, { tokenizer: 'sentencepiece' }), 'ERR_ARG', 'unknown tokenizer');
  assert.not.ok(existsSync(out));
  assert.not.ok(readdirSync(root).some((f) => f.includes('.tmp-')), 'no temp files left');
});

test.run();
