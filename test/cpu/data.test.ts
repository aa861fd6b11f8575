import { mkdtempSync, readFileSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { TokenLoader, bundledCorpus, prepareDocuments, prepareFiles, readShardInfo } from '../../lib/io/shards.js';
import { byteTokenizer, gpt2Tokenizer, tokenizerByName } from '../../lib/data/tokenizer.js';
import { readSafetensors, writeSafetensors } from '../../lib/io/safetensors.js';
import { lrMultiplier } from '../../lib/train/schedule.js';
import { PRESETS, fromHfConfig, matmulParameters, preset, toHfConfig, totalParameters, validateConfig } from '../../lib/model/config.js';
import { assertKilnError } from '../helpers.js';

const test = suite('data, tokenizers, safetensors, schedules, configs');
const dir = mkdtempSync(join(tmpdir(), 'kiln-data-'));

test('tokenizers round-trip text', async () => {
  const text = 'Kiln fires clay at 1200°C — naïve café ☕.';
  assert.is(byteTokenizer.decode(byteTokenizer.encode(text)), text);
  const gpt2 = await gpt2Tokenizer();
  assert.equal(gpt2.encode('Hello world'), [15496, 995]); // GPT-2's ids
  assert.is(gpt2.decode(gpt2.encode(text)), text);
  assert.is(gpt2.vocabSize, 50257);
  await assertKilnError(() => tokenizerByName('sentencepiece'), 'ERR_ARG');
});

test('prepare splits documents, writes shards with headers, and refuses bad input', async () => {
  const docs = Array.from({ length: 200 }, (_, i) => `document ${i}: ${'abc '.repeat(i % 7 + 1)}`);
  const { train, val } = prepareDocuments(docs, join(dir, 'a'), byteTokenizer, { valFraction: 0.1, seed: 3 });
  const total = docs.reduce((n, d) => n + Buffer.byteLength(d) + 1, 0);
  assert.is(train.tokens + val.tokens, total);
  assert.ok(val.tokens > 0 && train.tokens > val.tokens);
  assert.equal(readShardInfo(train.path), train);
  // deterministic: same input, same split
  const again = prepareDocuments(docs, join(dir, 'b'), byteTokenizer, { valFraction: 0.1, seed: 3 });
  assert.equal(readFileSync(again.train.path), readFileSync(train.path));
  // JSONL and text files
  writeFileSync(join(dir, 'in.jsonl'), docs.map((text) => JSON.stringify({ text })).join('\n'));
  const fromJsonl = prepareFiles([join(dir, 'in.jsonl')], join(dir, 'c'), byteTokenizer, { valFraction: 0.1, seed: 3 });
  assert.is(fromJsonl.train.tokens + fromJsonl.val.tokens, total);
  writeFileSync(join(dir, 'bad.jsonl'), '{"text": "ok"}\nnot json\n');
  await assertKilnError(() => prepareFiles([join(dir, 'bad.jsonl')], join(dir, 'd'), byteTokenizer), 'ERR_ARG', ':2');
  await assertKilnError(() => prepareFiles([join(dir, 'missing.txt')], join(dir, 'd'), byteTokenizer), 'ERR_ARG');
  // a truncated shard is refused
  writeFileSync(join(dir, 'trunc.bin'), readFileSync(train.path).subarray(0, 100));
  await assertKilnError(() => readShardInfo(join(dir, 'trunc.bin')), 'ERR_ARG', 'truncated');
  assert.ok(!readdirSync(join(dir, 'a')).some((f) => f.includes('.tmp')), 'no temp files left behind');
});

test('the loader samples shifted windows deterministically and resumes from its position', async () => {
  const docs = Array.from({ length: 50 }, (_, i) => `doc ${i} ` + 'xyz'.repeat(20));
  const { train } = prepareDocuments(docs, join(dir, 'e'), byteTokenizer, { valFraction: 0.1 });
  const a = new TokenLoader(train.path, 4, 16, { seed: 7, step: 0 });
  const first = [a.next(), a.next(), a.next()];
  for (let i = 0; i < 4 * 16 - 1; i++) if ((i + 1) % 16 !== 0) assert.is(first[0].targets[i], first[0].ids[i + 1]);
  const resumed = new TokenLoader(train.path, 4, 16, { seed: 7, step: 2 });
  assert.equal(resumed.next(), first[2]);
  assert.equal(a.position, { seed: 7, step: 3 });
  const other = new TokenLoader(train.path, 4, 16, { seed: 8, step: 0 });
  assert.not.equal(other.next().ids, first[0].ids);
  for (const l of [a, resumed, other]) l.close();
});

test('the bundled corpus installs with the package', async () => {
  const docs = await bundledCorpus(50);
  assert.is(docs.length, 50);
  assert.ok(docs[0].length > 200);
});

test('safetensors round-trips and rejects corrupt files', async () => {
  const path = join(dir, 'm.safetensors');
  const tensors = new Map([
    ['a.weight', { dtype: 'f32' as const, shape: [2, 3], data: new Uint8Array(new Float32Array([1, 2, 3, 4, 5, 6]).buffer) }],
    ['b', { dtype: 'bf16' as const, shape: [2], data: new Uint8Array([0x80, 0x3f, 0x00, 0x40]) }],
    ['c', { dtype: 'i32' as const, shape: [], data: new Uint8Array(new Int32Array([7]).buffer) }],
  ]);
  writeSafetensors(path, tensors, { format: 'pt' });
  const back = readSafetensors(path);
  assert.equal(back.metadata, { format: 'pt' });
  assert.equal([...back.tensors.keys()], ['a.weight', 'b', 'c']);
  assert.equal(Array.from(new Float32Array(back.tensors.get('a.weight')!.data.slice().buffer)), [1, 2, 3, 4, 5, 6]);
  assert.equal(back.tensors.get('c')!.shape, []);
  const bytes = readFileSync(path);
  assert.is(bytes.readBigUInt64LE(0) % 8n, 0n, 'header padded to 8 bytes');
  writeFileSync(join(dir, 't.safetensors'), bytes.subarray(0, bytes.length - 3));
  await assertKilnError(() => readSafetensors(join(dir, 't.safetensors')), 'ERR_CHECKPOINT', 'truncated');
  const garbage = Buffer.from(bytes);
  garbage.writeBigUInt64LE(10n ** 12n, 0);
  writeFileSync(join(dir, 'g.safetensors'), garbage);
  await assertKilnError(() => readSafetensors(join(dir, 'g.safetensors')), 'ERR_CHECKPOINT');
  await assertKilnError(() => readSafetensors(join(dir, 'none.safetensors')), 'ERR_CHECKPOINT');
  assert.ok(!existsSync(`${path}.tmp`));
});

test('lr schedules: warmup, cosine to the floor, WSD plateau then linear decay', () => {
  const cos = { kind: 'cosine' as const, warmupSteps: 10, totalSteps: 110, minRatio: 0.1 };
  assert.is(lrMultiplier(cos, 0), 0.1);
  assert.is(lrMultiplier(cos, 9), 1);
  assert.ok(Math.abs(lrMultiplier(cos, 10) - 1) < 1e-12);
  assert.ok(Math.abs(lrMultiplier(cos, 109) - 0.1) < 1e-12);
  assert.ok(Math.abs(lrMultiplier(cos, 60) - 0.55) < 0.01);
  const wsd = { kind: 'wsd' as const, warmupSteps: 0, totalSteps: 100, decayFraction: 0.2, minRatio: 0 };
  assert.is(lrMultiplier(wsd, 50), 1);
  assert.is(lrMultiplier(wsd, 79), 1);
  assert.ok(Math.abs(lrMultiplier(wsd, 99) - 0) < 1e-12);
  assert.ok(Math.abs(lrMultiplier(wsd, 89) - 0.5) < 1e-12);
});

test('presets and configs: the 1.4B preset has ~1.34B parameters and round-trips through HF config.json', async () => {
  const big = preset('1.4b');
  const total = totalParameters(big);
  assert.ok(total > 1.3e9 && total < 1.4e9, `1.4b preset has ${total} parameters`);
  assert.ok(matmulParameters(big) < total);
  for (const name of Object.keys(PRESETS)) assert.equal(fromHfConfig(JSON.parse(JSON.stringify(toHfConfig(preset(name))))), preset(name));
  await assertKilnError(() => preset('7b'), 'ERR_ARG');
  await assertKilnError(() => validateConfig({ ...big, kvHeads: 5 }), 'ERR_ARG', 'kvHeads');
  await assertKilnError(() => validateConfig({ ...big, dModel: -1 }), 'ERR_ARG', 'dModel');
  await assertKilnError(() => fromHfConfig({ model_type: 'gpt2' }), 'ERR_CHECKPOINT');
});

test.run();
