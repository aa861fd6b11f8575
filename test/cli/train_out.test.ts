/**
 * Issue 28, item 6: `kiln train` into an --out that holds a run is refused unless --resume
 * continues it or --overwrite replaces it (it used to overwrite the checkpoints and append a
 * second run to metrics.jsonl); `npm start` (kiln start) run twice trains a second run beside the
 * first, runs/tiny-2.
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { kiln, output, shardDir, tempDir, trainFlags } from './fixture.js';

const test = suite('cli: kiln train --out, --resume, --overwrite; kiln start twice');
const root = tempDir('train-out');

const steps = (out: string) => readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { step: number }).step);
const latest = (out: string) => (JSON.parse(readFileSync(join(out, 'latest'), 'utf8')) as { checkpoint: string }).checkpoint;

test('a second run into the same --out is refused, naming --resume and --overwrite, and changes nothing', async () => {
  const out = join(root, 'a');
  const first = kiln(['train', ...(await trainFlags(2)), '--out', out]);
  assert.is(first.status, 0, output(first));
  const before = { metrics: readFileSync(join(out, 'metrics.jsonl'), 'utf8'), mtime: statSync(join(out, 'step-000002', 'model.safetensors')).mtimeMs };
  const again = kiln(['train', ...(await trainFlags(2)), '--out', out]);
  assert.is(again.status, 1, output(again));
  assert.match(again.stderr, new RegExp(`kiln: ERR_ARG: --out ${out} already holds a run \\(1 checkpoint, the newest step-000002, metrics.jsonl with 2 steps\\): pass --resume ${out} to continue it, --overwrite to replace it, or another --out`));
  assert.is(readFileSync(join(out, 'metrics.jsonl'), 'utf8'), before.metrics, 'metrics.jsonl untouched');
  assert.is(statSync(join(out, 'step-000002', 'model.safetensors')).mtimeMs, before.mtime, 'the checkpoint untouched');
  assert.not.match(again.stdout, /step 1/, 'refused before training');
});

test('--resume of that run continues its metrics; --overwrite replaces the run', async () => {
  const out = join(root, 'b');
  assert.is(kiln(['train', ...(await trainFlags(2)), '--out', out]).status, 0);
  const resumed = kiln(['train', ...(await trainFlags(3)), '--out', out, '--resume', out]);
  assert.is(resumed.status, 0, output(resumed));
  assert.equal(steps(out), [1, 2, 3], 'one run, continued');
  assert.is(latest(out), 'step-000003');
  writeFileSync(join(out, 'notes.txt'), 'mine');
  const replaced = kiln(['train', ...(await trainFlags(1)), '--out', out, '--overwrite']);
  assert.is(replaced.status, 0, output(replaced));
  assert.match(replaced.stdout, /--overwrite: removed the run .* held \(2 checkpoints, the newest step-000003, metrics\.jsonl with 3 steps\)/);
  assert.equal(steps(out), [1], 'only the new run');
  assert.equal(readdirSync(out).filter((f) => f.startsWith('step-')), ['step-000001']);
  assert.is(latest(out), 'step-000001');
  assert.is(readFileSync(join(out, 'notes.txt'), 'utf8'), 'mine', 'files that are not the run stay');
});

test('--resume of another run into an --out holding a run is refused too', async () => {
  const a = join(root, 'c1');
  const b = join(root, 'c2');
  assert.is(kiln(['train', ...(await trainFlags(1)), '--out', a]).status, 0);
  assert.is(kiln(['train', ...(await trainFlags(1)), '--out', b]).status, 0);
  const r = kiln(['train', ...(await trainFlags(2)), '--out', b, '--resume', a]);
  assert.is(r.status, 1, output(r));
  assert.match(r.stderr, /already holds a run .*\(--resume .*c1 is not one of its checkpoints\)/);
  const fresh = kiln(['train', ...(await trainFlags(2)), '--out', join(root, 'c3'), '--resume', a]);
  assert.is(fresh.status, 0, output(fresh));
});

test('kiln start (npm start) run twice trains runs/tiny, then runs/tiny-2; an explicit taken --out is refused', async () => {
  const cwd = tempDir('start');
  // kiln start's data directory, pre-filled with the small shard (it would tokenize the whole bundled corpus)
  const cache = join(cwd, 'cache');
  mkdirSync(join(cache, 'data-byte'), { recursive: true });
  for (const f of ['train.bin', 'val.bin']) copyFileSync(join(await shardDir(), f), join(cache, 'data-byte', f));
  const env = { KILN_CACHE_DIR: cache };
  const first = kiln(['start', '--steps', '1'], { cwd, env });
  assert.is(first.status, 0, output(first));
  assert.match(first.stdout, /checkpoint \(Hugging Face layout\): runs\/tiny\/step-000001/);
  const second = kiln(['start', '--steps', '1'], { cwd, env });
  assert.is(second.status, 0, output(second));
  assert.match(second.stdout, /runs\/tiny holds an earlier run: this one trains into runs\/tiny-2/);
  assert.ok(existsSync(join(cwd, 'runs', 'tiny', 'step-000001', 'config.json')), 'the first run is kept');
  assert.ok(existsSync(join(cwd, 'runs', 'tiny-2', 'step-000001', 'config.json')));
  assert.equal(steps(join(cwd, 'runs', 'tiny')), [1]);
  const taken = kiln(['start', '--steps', '1', '--out', 'runs/tiny'], { cwd, env });
  assert.is(taken.status, 1);
  assert.match(taken.stderr, /--out runs\/tiny already holds a run .*: pass --overwrite to replace it, or another --out \(`kiln train --resume runs\/tiny` continues it\)/);
});

test.run();
