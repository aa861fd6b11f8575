/** The incremental detokenizer on its own (lib/serve/detokenizer.ts): UTF-8 split over byte tokens, and stop strings held back. */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { byteTokenizer } from '../../lib/data/tokenizer.js';
import { IncrementalDetokenizer } from '../../lib/serve/detokenizer.js';

const test = suite('serve: detokenizer');

test('detokenizer: multi-byte characters split over byte tokens come out whole', () => {
  const text = 'héllo wörld — 漢字 🎉!';
  const d = new IncrementalDetokenizer(byteTokenizer, []);
  const deltas: string[] = [];
  for (const b of byteTokenizer.encode(text)) deltas.push(d.push(b));
  deltas.push(d.flush());
  for (const delta of deltas) assert.not.ok(delta.includes('\uFFFD'), `delta ${JSON.stringify(delta)}`);
  assert.is(deltas.join(''), text);
  assert.ok(deltas.filter((x) => x === '').length >= 6, 'partial characters were held');
  // a byte that never completes a character is released (as U+FFFD) after 4 tokens, not held forever
  const bad = new IncrementalDetokenizer(byteTokenizer, []);
  const out = [0xe6, 0x41, 0x42, 0x43, 0x44].map((b) => bad.push(b)).join('') + bad.flush();
  assert.is(out, Buffer.from([0xe6, 0x41, 0x42, 0x43, 0x44]).toString('utf8'));
});

test('detokenizer: stop strings are held back across tokens and never released', () => {
  const run = (text: string, stops: string[]) => {
    const d = new IncrementalDetokenizer(byteTokenizer, stops);
    const deltas: string[] = [];
    for (const b of byteTokenizer.encode(text)) {
      deltas.push(d.push(b));
      if (d.stopped) break;
    }
    if (!d.stopped) deltas.push(d.flush());
    return { deltas, stopped: d.stopped, text: deltas.join('') };
  };
  const r = run('one two ###END### three', ['###END###']);
  assert.ok(r.stopped);
  assert.is(r.text, 'one two ');
  for (const delta of r.deltas) assert.not.ok(delta.includes('#'), 'no part of the stop string leaked');
  // a false start is released once it can no longer become the stop string
  const f = run('a ##b ###END', ['###END']);
  assert.is(f.text, 'a ##b ');
  // the earliest of several stop strings wins; text without one is released whole at the end
  assert.is(run('xx STOP yy END', ['END', 'STOP']).text, 'xx ');
  assert.is(run('plain text', ['zz']).text, 'plain text');
  // a stop string made of multi-byte characters
  assert.is(run('café☕ and more', ['☕']).text, 'café');
});

test.run();
