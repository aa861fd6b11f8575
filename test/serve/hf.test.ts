/**
 * A Hugging Face LLaMA directory (config.json, bf16 model.safetensors with tied embeddings,
 * a byte-level BPE tokenizer.json and tokenizer_config.json with a chat template, all written
 * here) loads into the engine: its tokenizer round-trips, the chat template is exposed, and
 * greedy decoding equals the recompute oracle on the same weights.
 */
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Engine } from '../../lib/index.js';
import { generateTokens } from '../oracles/generate_reference.js';
import { type RawTensor, writeSafetensors } from '../../lib/io/safetensors.js';
import { type ModelConfig, toHfConfig } from '../../lib/model/config.js';
import { LlamaModel } from '../../lib/model/llama.js';
import { assertKilnError } from '../helpers.js';

const test = suite('serving a Hugging Face directory');

/** GPT-2's reversible byte -> printable character map (byte-level BPE vocabularies use it). */
function bytesToUnicode(): string[] {
  const keep: number[] = [];
  for (let b = 33; b <= 126; b++) keep.push(b);
  for (let b = 161; b <= 172; b++) keep.push(b);
  for (let b = 174; b <= 255; b++) keep.push(b);
  const out = new Array<string>(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) out[b] = keep.includes(b) ? String.fromCharCode(b) : String.fromCharCode(256 + extra++);
  return out;
}

function tokenizerJson(): { json: object; vocabSize: number; eos: number } {
  const chars = bytesToUnicode();
  const vocab: Record<string, number> = {};
  chars.forEach((c, i) => (vocab[c] = i));
  const merges = ['Ġ t', 'h e', 'Ġt he'];
  vocab['Ġt'] = 256;
  vocab['he'] = 257;
  vocab['Ġthe'] = 258;
  const eos = 259;
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  return {
    vocabSize: 260,
    eos,
    json: {
      version: '1.0',
      truncation: null,
      padding: null,
      added_tokens: [{ id: eos, content: '<|end|>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }],
      normalizer: null,
      pre_tokenizer: byteLevel,
      post_processor: null,
      decoder: byteLevel,
      model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab, merges },
    },
  };
}

/** f32 -> bf16 bits (round to nearest even) and back. */
function toBf16(values: Float32Array): { bits: Uint16Array; rounded: Float32Array } {
  const u32 = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const bits = new Uint16Array(values.length);
  const back = new Uint32Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const x = u32[i];
    bits[i] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
    back[i] = bits[i] << 16;
  }
  return { bits, rounded: new Float32Array(back.buffer) };
}

test('HF layout: bf16 weights, tied embeddings, tokenizer.json, chat template', async () => {
  const tok = tokenizerJson();
  const config: ModelConfig = {
    vocabSize: tok.vocabSize, dModel: 64, layers: 2, heads: 4, kvHeads: 2, headDim: 16, ffn: 96, context: 128, ropeTheta: 10000, normEps: 1e-5, tiedEmbeddings: true,
  };
  const source = new LlamaModel(config, { seed: 21 });
  const dir = join(mkdtempSync(join(tmpdir(), 'kiln-hfserve-')), 'tiny-llama');
  mkdirSync(dir);
  const raw = new Map<string, RawTensor>();
  const rounded = new Map<string, { shape: number[]; values: Float32Array }>();
  for (const [name, t] of source.namedWeights()) {
    const { bits, rounded: r } = toBf16((await t.toArray()) as Float32Array);
    raw.set(name, { dtype: 'bf16', shape: [...t.shape], data: new Uint8Array(bits.buffer) });
    rounded.set(name, { shape: [...t.shape], values: r });
  }
  source.dispose();
  writeSafetensors(join(dir, 'model.safetensors'), raw, { format: 'pt' });
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...toHfConfig(config, 'bfloat16'), bos_token_id: null, eos_token_id: tok.eos }));
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tok.json));
  const template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>";
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ eos_token: '<|end|>', chat_template: template, clean_up_tokenization_spaces: false }));

  const engine = await Engine.load(dir);
  try {
    assert.is(engine.modelName, 'tiny-llama');
    assert.is(engine.chatTemplate, template);
    assert.is(engine.contextLength, 128);
    assert.is(engine.tokenizer.eot, tok.eos);
    const ids = engine.tokenizer.encode('the theme');
    assert.equal(ids.slice(0, 2), [vocabId(tok.json, 't'), 257], 'BPE merges applied ("t" "he" then "Ġthe")');
    assert.ok(ids.includes(258));
    assert.is(engine.tokenizer.decode(ids), 'the theme');
    assert.is(engine.tokenizer.decode([...ids, tok.eos]), 'the theme', 'special tokens are skipped');

    const oracle = new LlamaModel(config);
    oracle.loadWeights(rounded);
    const expected = await generateTokens(oracle, ids, { maxTokens: 30, temperature: 0 });
    oracle.dispose();
    const out = await engine.generate('the theme', { maxTokens: 30, temperature: 0, ignoreEos: true });
    assert.equal(out.tokenIds, expected);
    assert.is(out.text, engine.tokenizer.decode(expected));
    await assertKilnError(() => engine.generate([tok.vocabSize]), 'ERR_ARG');
  } finally {
    await engine.close();
  }
  // a checkpoint whose tensors do not fit its config
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...toHfConfig({ ...config, ffn: 128 }, 'bfloat16') }));
  await assertKilnError(() => Engine.load(dir), 'ERR_CHECKPOINT');
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...toHfConfig(config), rope_scaling: { rope_type: 'yarn', factor: 2 } }));
  await assertKilnError(() => Engine.load(dir), 'ERR_CHECKPOINT', 'rope_scaling');
});

function vocabId(json: object, token: string): number {
  return (json as { model: { vocab: Record<string, number> } }).model.vocab[token];
}

test.run();
