/**
 * Issue 22, sections 4 and 5a: `kiln train --from CHECKPOINT` starts from a Hugging Face (or kiln)
 * checkpoint of any registry family: its weights and config, a fresh optimizer at step 0; its
 * checkpoints keep the source's model_type, config.json fields and tokenizer files, load in the
 * Engine and resume. `--config config.json` trains any family's config from random weights. The
 * data must come from the model's tokenizer (the shards' recorded sha256), and the refusals are
 * typed.
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Engine } from '../../lib/index.js';
import { loadCheckpoint, saveCheckpoint } from '../../lib/io/checkpoint.js';
import { f32ToBf16Bits } from '../../lib/io/gguf.js';
import { type RawTensor, readSafetensors, writeSafetensors } from '../../lib/io/safetensors.js';
import { type ModelConfig, fromHfConfig } from '../../lib/model/config.js';
import { LlamaModel } from '../../lib/model/llama.js';
import { kiln, lenmlModels, output, shardDir, tempDir } from './fixture.js';

const test = suite('cli: kiln train --from and --config');
const root = tempDir('train-from');

const qwen3Json = (vocab: number, extra: Record<string, unknown> = {}) => ({
  model_type: 'qwen3', architectures: ['Qwen3ForCausalLM'], vocab_size: vocab, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2,
  num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16, max_position_embeddings: 256, rms_norm_eps: 1e-6, rope_theta: 1000000,
  tie_word_embeddings: vocab > 256, attention_bias: false, use_sliding_window: false, ...extra,
});

/** A random-weight HF directory of `json`'s family (written by kiln's HF writer), with `json`'s extra fields in config.json. */
async function hfDir(name: string, json: Record<string, unknown>): Promise<string> {
  const dir = join(tempDir(`hf-${name}`), name);
  const config: ModelConfig = fromHfConfig(json);
  const model = new LlamaModel(config, { seed: 5 });
  await saveCheckpoint(dir, config, model.namedWeights(), undefined, undefined);
  model.dispose();
  const written = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...json, ...written, torch_dtype: 'bfloat16' }));
  return dir;
}

const losses = (stdout: string) => [...stdout.matchAll(/^step (\d+) loss ([\d.]+)/gm)].map((m) => Number(m[2]));
const flags = async (steps: number) => ['--data', await shardDir(), '--steps', String(steps), '--batch', '4', '--seq', '32', '--eval-every', '0', '--log-every', '1'];
const configOf = (dir: string) => JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;

test('--from a qwen3 HF directory: the loss falls; the checkpoint keeps model_type, config fields and tokenizer files, loads in the Engine and generates; --resume continues it', async () => {
  const source = await hfDir('qwen3', qwen3Json(256, { bos_token_id: 1, eos_token_id: 0 }));
  writeFileSync(join(source, 'generation_config.json'), JSON.stringify({ bos_token_id: 1, eos_token_id: 0 }));
  const out = join(root, 'from');
  const r = kiln(['train', '--from', source, ...(await flags(6)), '--out', out]);
  assert.is(r.status, 0, output(r));
  const l = losses(r.stdout);
  assert.is(l.length, 6, r.stdout);
  assert.ok(l[5] < l[0] - 0.1, `loss ${l.join(' ')}`);
  const saved = join(out, 'step-000006');
  const config = configOf(saved);
  assert.is(config.model_type, 'qwen3');
  assert.equal(config.architectures, ['Qwen3ForCausalLM']);
  assert.is(config.bos_token_id, 1);
  assert.is(config.torch_dtype, 'float32');
  assert.ok(existsSync(join(saved, 'generation_config.json')));
  const trainer = JSON.parse(readFileSync(join(saved, 'trainer.json'), 'utf8'));
  assert.is(trainer.step, 6);
  // the weights are the source's: a --config run of the same config (random weights) starts elsewhere
  const fresh = kiln(['train', '--config', join(source, 'config.json'), ...(await flags(1)), '--out', join(root, 'config')]);
  assert.is(fresh.status, 0, output(fresh));
  assert.not.equal(losses(fresh.stdout)[0], l[0]);
  assert.is(configOf(join(root, 'config', 'step-000001')).model_type, 'qwen3');
  const engine = await Engine.load(out, { tokenizer: 'byte' });
  try {
    const completion = await engine.generate('The film', { maxTokens: 5, temperature: 0, ignoreEos: true });
    assert.is(completion.usage.completionTokens, 5);
  } finally {
    await engine.close();
  }
  const resumed = kiln(['train', '--resume', out, ...(await flags(8)), '--out', out]);
  assert.is(resumed.status, 0, output(resumed));
  assert.match(resumed.stdout, /resumed from .* at step 6/);
  assert.is(losses(resumed.stdout).length, 2);
  const next = join(out, 'step-000008');
  assert.is(configOf(next).model_type, 'qwen3');
  assert.is(configOf(next).bos_token_id, 1);
  assert.ok(existsSync(join(next, 'generation_config.json')));
});

test('--from takes bf16 weights (as Hugging Face releases ship them), widened to f32', async () => {
  const source = await hfDir('qwen3-bf16', qwen3Json(256));
  const f32 = loadCheckpoint(source).weights;
  const bf16 = new Map<string, RawTensor>();
  for (const [name, t] of readSafetensors(join(source, 'model.safetensors')).tensors) {
    const bits = f32ToBf16Bits(new Float32Array(t.data.slice().buffer));
    bf16.set(name, { dtype: 'bf16', shape: t.shape, data: new Uint8Array(bits.buffer) });
  }
  writeSafetensors(join(source, 'model.safetensors'), bf16, { format: 'pt' });
  for (const [name, w] of loadCheckpoint(source).weights) {
    assert.is(w.dtype, 'f32');
    const original = f32.get(name)!.values;
    for (let i = 0; i < w.values.length; i++) assert.ok(Math.abs(w.values[i] - original[i]) <= Math.abs(original[i]) * 2 ** -8, `${name}[${i}]`);
  }
  const r = kiln(['train', '--from', source, ...(await flags(2)), '--out', join(root, 'bf16')]);
  assert.is(r.status, 0, output(r));
  assert.is(losses(r.stdout).length, 2);
});

test('refusals: --from with --preset, --config or --resume; --config with --preset; a --config that is not JSON (ERR_ARG, saying why)', async () => {
  const source = await hfDir('qwen3-refusals', qwen3Json(256));
  const cases: [string[], RegExp][] = [
    [['--from', source, '--preset', 'tiny'], /ERR_ARG: --from and --preset both name the model: --from trains the checkpoint's own config/],
    [['--from', source, '--config', join(source, 'config.json')], /ERR_ARG: --from and --config both name the model/],
    [['--from', source, '--resume', source], /ERR_ARG: --from starts a new run from a model's weights .*--resume continues a run/],
    [['--config', join(source, 'config.json'), '--preset', 'tiny'], /ERR_ARG: --config and --preset both name the model/],
    [['--config', join(source, 'model.safetensors')], /ERR_ARG: --config .*model\.safetensors: not valid JSON/],
  ];
  for (const [args, pattern] of cases) {
    const r = kiln(['train', ...args, ...(await flags(1)), '--out', join(root, 'refused')]);
    assert.is(r.status, 1, output(r));
    assert.match(r.stderr, pattern);
  }
});

test('the data must come from the model\'s tokenizer: shards of another tokenizer (or none recorded) are refused naming both; its own train, and the checkpoint carries tokenizer.json', async () => {
  const models = lenmlModels('llama3');
  const source = await hfDir('llama-tok', { ...qwen3Json(128256), model_type: 'llama', architectures: ['LlamaForCausalLM'], hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, head_dim: 8 });
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(models, f), join(source, f));
  const text = join(root, 'text');
  mkdirSync(text);
  writeFileSync(join(text, 'a.txt'), Array.from({ length: 40 }, (_, i) => `Document ${i}: the quick brown fox jumps over the lazy dog ${i} times.`).join('\n\n'));
  const own = join(root, 'data-llama3');
  const qwen = join(root, 'data-qwen3');
  for (const [tokenizer, dir] of [[source, own], [join(lenmlModels('qwen3'), 'tokenizer.json'), qwen]]) {
    const p = kiln(['prepare', '--tokenizer', tokenizer, '--val', '0.2', '--out', dir, text]);
    assert.is(p.status, 0, output(p));
  }
  const train = (data: string, out: string, extra: string[] = []) => kiln(['train', '--from', source, '--data', data, '--steps', '1', '--batch', '1', '--seq', '16', '--eval-every', '0', '--out', join(root, out), ...extra]);
  const byte = train(await shardDir(), 'byte');
  assert.is(byte.status, 1, output(byte));
  assert.match(byte.stderr, /ERR_ARG: --data .* was made with the byte tokenizer, but the model \(--from .*\) uses its tokenizer\.json with sha256 [0-9a-f]{16}…: run kiln prepare --tokenizer/);
  const other = train(qwen, 'qwen');
  assert.is(other.status, 1, output(other));
  assert.match(other.stderr, /ERR_ARG: --data .* was made with the tokenizer\.json with sha256 [0-9a-f]{16}…, but the model \(--from .*\) uses its tokenizer\.json with sha256/);
  // a vocabulary larger than the model's is refused (the tiny preset's 256 ids)
  const big = kiln(['train', '--preset', 'tiny', '--data', own, '--steps', '1', '--batch', '1', '--seq', '16', '--out', join(root, 'big')]);
  assert.is(big.status, 1, output(big));
  assert.match(big.stderr, /ERR_ARG: the data uses the tokenizer\.json with sha256 [0-9a-f]{16}… \(128256 ids\): too many for the tiny preset's vocabulary \(256\)/);
  // kiln prepare leaves the tokenizer beside the shards; a --config run on them saves it with its checkpoints
  assert.equal(readFileSync(join(own, 'tokenizer.json')), readFileSync(join(models, 'tokenizer.json')));
  const configured = kiln(['train', '--config', join(source, 'config.json'), '--data', own, '--steps', '1', '--batch', '1', '--seq', '16', '--eval-every', '0', '--out', join(root, 'configured')]);
  assert.is(configured.status, 0, output(configured));
  assert.equal(readFileSync(join(root, 'configured', 'step-000001', 'tokenizer.json')), readFileSync(join(models, 'tokenizer.json')));
  assert.ok(existsSync(join(root, 'configured', 'step-000001', 'tokenizer_config.json')));
  const ok = train(own, 'own');
  assert.is(ok.status, 0, output(ok));
  const saved = join(root, 'own', 'step-000001');
  assert.equal(readFileSync(join(saved, 'tokenizer.json')), readFileSync(join(models, 'tokenizer.json')));
  const engine = await Engine.load(saved);
  try {
    const completion = await engine.generate('The quick brown', { maxTokens: 3, temperature: 0, ignoreEos: true });
    assert.is(completion.usage.completionTokens, 3);
  } finally {
    await engine.close();
  }
});

test.run();
