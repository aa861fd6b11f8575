/**
 * Issue 28, items 7 and 10 (--val): kiln prepare counts invalid UTF-8 and warns (--strict
 * refuses it), reads only .txt/.md/.jsonl (a directory's other files are skipped and counted, a
 * named one refused), says that blank lines split .txt documents, and names --val, not valFraction.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { byteTokenizer } from '../../lib/data/tokenizer.js';
import { prepareFiles } from '../../lib/io/shards.js';
import { kiln, output, tempDir } from './fixture.js';

const test = suite('cli: kiln prepare');
const root = tempDir('prepare');
const paragraphs = (n: number) => Array.from({ length: n }, (_, i) => `paragraph ${i} of some text`).join('\n\n');

test('invalid UTF-8 is counted and warned about; --strict refuses it and writes nothing', () => {
  const dir = join(root, 'utf8');
  mkdirSync(dir);
  // line 3 holds two invalid bytes; line 5 a U+FFFD written validly (not counted)
  const bytes = Buffer.concat([Buffer.from('one\n\ntwo '), Buffer.from([0xff, 0xfe]), Buffer.from('\n\nthree \ufffd\n\nfour\n')]);
  writeFileSync(join(dir, 'a.txt'), bytes);
  const r = kiln(['prepare', '--out', join(root, 'out-utf8'), dir]);
  assert.is(r.status, 0, output(r));
  assert.match(r.stderr, /warning: .*a\.txt is not valid UTF-8: 2 invalid sequences on 1 line \(the first: line 3\) became U\+FFFD; --strict refuses such files/);
  const api = prepareFiles([dir], join(root, 'out-api'), byteTokenizer, { valFraction: 0.3 });
  assert.equal(api.invalidUtf8!.map((b) => [b.sequences, b.lines, b.firstLine]), [[2, 1, 3]]);
  const strict = kiln(['prepare', '--strict', '--out', join(root, 'out-strict'), dir]);
  assert.is(strict.status, 1, output(strict));
  assert.match(strict.stderr, /kiln: ERR_ARG: .*a\.txt is not valid UTF-8: 2 invalid sequences on 1 line, the first on line 3/);
  assert.not.ok(existsSync(join(root, 'out-strict', 'train.bin')));
  // valid files give no warning
  writeFileSync(join(dir, 'a.txt'), paragraphs(4));
  const clean = kiln(['prepare', '--strict', '--out', join(root, 'out-clean'), dir]);
  assert.is(clean.status, 0, output(clean));
  assert.not.match(clean.stderr, /warning/);
});

test('only .txt, .md and .jsonl are read: a directory\'s other files are skipped and counted, a named one is refused', () => {
  const dir = join(root, 'ext');
  mkdirSync(dir);
  writeFileSync(join(dir, 'a.txt'), paragraphs(6));
  writeFileSync(join(dir, 'b.csv'), 'x,y\n1,2\n\n3,4\n');
  const r = kiln(['prepare', '--out', join(root, 'out-ext'), dir]);
  assert.is(r.status, 0, output(r));
  assert.match(r.stderr, /note: skipped 1 file that is not \.txt, \.md or \.jsonl: .*b\.csv/);
  const onlyTxt = prepareFiles([join(dir, 'a.txt')], join(root, 'out-txt'), byteTokenizer, { valFraction: 0.2 });
  const both = prepareFiles([dir], join(root, 'out-dir'), byteTokenizer, { valFraction: 0.2 });
  assert.is(both.train.tokens + both.val.tokens, onlyTxt.train.tokens + onlyTxt.val.tokens, 'the .csv was not read');
  const named = kiln(['prepare', '--out', join(root, 'out-csv'), join(dir, 'b.csv')]);
  assert.is(named.status, 1);
  assert.match(named.stderr, /ERR_ARG: .*b\.csv: kiln prepare reads \.txt, \.md, \.jsonl files \(in \.txt and \.md files, blank lines separate documents/);
});

test('too few documents says that blank lines separate documents', () => {
  writeFileSync(join(root, 'one.txt'), 'a single paragraph\nwith two lines and no blank line\n');
  const r = kiln(['prepare', '--out', join(root, 'out-one'), join(root, 'one.txt')]);
  assert.is(r.status, 1);
  assert.match(r.stderr, /ERR_ARG: need at least two documents \(one is held out for validation\); .*one\.txt holds 1: in \.txt and \.md files, blank lines separate documents/);
});

test('--val out of range names --val, not an internal option', () => {
  writeFileSync(join(root, 'v.txt'), paragraphs(4));
  for (const val of ['2', '0', 'abc']) {
    const r = kiln(['prepare', '--val', val, '--out', join(root, 'out-val'), join(root, 'v.txt')]);
    assert.is(r.status, 1);
    assert.match(r.stderr, new RegExp(`ERR_ARG: --val takes the share of documents held out for validation, a number in \\(0, 1\\) such as 0\\.01, got ${val}`));
    assert.not.match(r.stderr, /valFraction/);
  }
});

test.run();
