/**
 * Issue 28, item 1: wherever a checkpoint is taken (train --resume, generate, serve, export,
 * Engine.load, loadCheckpoint), a run directory and its "latest" pointer resolve to the newest
 * checkpoint; a path that is neither says which forms are accepted.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { checkpointName, loadCheckpoint, resolveCheckpoint } from '../../lib/io/checkpoint.js';
import { exportLlamaGguf } from '../../lib/io/gguf_llama.js';
import { Engine } from '../../lib/serve/engine.js';
import { Trainer } from '../../lib/train/trainer.js';
import { preset } from '../../lib/model/config.js';
import { kiln, output, shardDir, tempDir, throwsKiln, trainFlags, trainRun } from './fixture.js';

const test = suite('checkpoint paths: run directories and latest pointers');
const root = tempDir('ckpt-paths');
const run = join(root, 'tiny');
let step = '';

test.before(async () => {
  step = await trainRun(run, 2);
});

test('a run directory, its latest pointer and the checkpoint itself resolve to the checkpoint', () => {
  assert.is(basename(step), 'step-000002');
  for (const path of [run, join(run, 'latest'), step, `${run}/`]) assert.is(resolveCheckpoint(path), step, path);
  for (const path of [run, join(run, 'latest')]) assert.is(loadCheckpoint(path).trainer?.step, 2, path);
});

test('the default model name is the run name for a run or its pointer, else the directory name', () => {
  assert.is(checkpointName(run), 'tiny');
  assert.is(checkpointName(join(run, 'latest')), 'tiny');
  assert.is(checkpointName(step), 'step-000002');
});

test('what is not a checkpoint is ERR_CHECKPOINT naming the accepted forms', () => {
  const empty = join(root, 'empty');
  mkdirSync(empty);
  throwsKiln(() => resolveCheckpoint(join(root, 'missing')), 'ERR_CHECKPOINT', /does not exist: pass a checkpoint directory .*a run directory .*latest pointer/);
  throwsKiln(() => resolveCheckpoint(empty), 'ERR_CHECKPOINT', /neither config\.json nor a latest pointer/);
  const corrupt = join(root, 'corrupt');
  mkdirSync(corrupt);
  writeFileSync(join(corrupt, 'latest'), 'step-1');
  throwsKiln(() => resolveCheckpoint(corrupt), 'ERR_CHECKPOINT', /latest is corrupt/);
  throwsKiln(() => resolveCheckpoint(join(corrupt, 'latest')), 'ERR_CHECKPOINT', /latest is corrupt/);
  writeFileSync(join(corrupt, 'latest'), JSON.stringify({ checkpoint: '../tiny/step-000002' }));
  throwsKiln(() => resolveCheckpoint(corrupt), 'ERR_CHECKPOINT', /corrupt/);
  writeFileSync(join(corrupt, 'latest'), JSON.stringify({ checkpoint: 'step-000009' }));
  throwsKiln(() => resolveCheckpoint(corrupt), 'ERR_CHECKPOINT', /names step-000009, which is not a checkpoint/);
});

test('Engine.load, Trainer.resume and the GGUF export take the latest pointer', async () => {
  const engine = await Engine.load(join(run, 'latest'), { kvCacheBytes: 2 ** 20 });
  assert.is(engine.modelName, 'tiny');
  await engine.close();
  const trainer = new Trainer({ config: preset('tiny'), data: await shardDir(), steps: 3, batch: 2, seqLen: 32, evalEvery: 0 });
  await trainer.resume(join(run, 'latest'));
  assert.is(trainer.currentStep, 2);
  trainer.close();
  const gguf = join(root, 'tiny.gguf');
  await exportLlamaGguf(join(run, 'latest'), gguf);
  assert.ok(existsSync(gguf));
});

test('kiln generate, export and train --resume take a run directory and its latest pointer', async () => {
  const generated = kiln(['generate', '--checkpoint', join(run, 'latest'), '--prompt', 'The', '--tokens', '3']);
  assert.is(generated.status, 0, output(generated));
  assert.match(generated.stdout, /^The/);
  const exported = kiln(['export', '--checkpoint', run, '--out', join(root, 'cli.gguf')]);
  assert.is(exported.status, 0, output(exported));
  const resumed = kiln(['train', ...(await trainFlags(3)), '--resume', join(run, 'latest'), '--out', join(root, 'continued')]);
  assert.is(resumed.status, 0, output(resumed));
  assert.match(resumed.stdout, /resumed from .*latest at step 2/);
  assert.ok(existsSync(join(root, 'continued', 'step-000003', 'config.json')), output(resumed));
});

test.run();
