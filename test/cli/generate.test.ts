/** Issue 28, item 8: kiln generate without --prompt is refused (it generated from an empty prompt, silently). */
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { kiln, output, tempDir, trainRun } from './fixture.js';

const test = suite('cli: kiln generate --prompt');
const run = join(tempDir('generate'), 'tiny');

test.before(async () => {
  await trainRun(run, 1);
});

test('no --prompt is ERR_ARG before anything loads or generates', () => {
  const r = kiln(['generate', '--checkpoint', run, '--tokens', '3']);
  assert.is(r.status, 1, output(r));
  assert.match(r.stderr, /kiln: ERR_ARG: --prompt TEXT is required: the text to continue \(--prompt '' starts from a single space\)/);
  assert.is(r.stdout, '', 'nothing generated');
});

test('an explicit empty --prompt generates, and says it starts from a single space', () => {
  const r = kiln(['generate', '--checkpoint', run, '--prompt', '', '--tokens', '3']);
  assert.is(r.status, 0, output(r));
  assert.match(r.stderr, /note: --prompt is empty: generating from a single space/);
  assert.match(r.stderr, /\d+ tokens in [\d.]+ s/);
});

test.run();
