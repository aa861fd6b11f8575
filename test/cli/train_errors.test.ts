/**
 * Issue 28, item 10: training errors that named the wrong problem. A CUDA device that is not
 * there is ERR_NO_CUDA before the CUDA kernels' head-dim rule is checked; resuming with another
 * preset names the fields that differ (and the preset the checkpoint matches) instead of dumping
 * two arrays of [key, value] pairs.
 */
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { cudaDeviceCount } from '../../lib/runtime.js';
import { preset } from '../../lib/model/config.js';
import { Trainer } from '../../lib/train/trainer.js';
import { kiln, output, shardDir, tempDir, throwsKiln, trainFlags, trainRun } from './fixture.js';

const test = suite('cli: training errors name the real problem');
const root = tempDir('train-errors');
const run = join(root, 'tiny');

test.before(async () => {
  await trainRun(run, 1);
});

test('with KILN_CUDA_TRAINING=1 a CUDA device that is not there is ERR_NO_CUDA, before the head-dim rule', async () => {
  const missing = `cuda:${cudaDeviceCount()}`; // one past the last GPU: cuda:0 on a machine without CUDA
  const r = kiln(['train', ...(await trainFlags(1)), '--device', missing, '--out', join(root, 'cuda')], { env: { KILN_CUDA_TRAINING: '1' } });
  assert.is(r.status, 1, output(r));
  assert.match(r.stderr, new RegExp(`kiln: ERR_NO_CUDA: ${missing} requested but`));
  assert.not.match(r.stderr, /head dims/);
  // without it, CUDA training is refused as unverified (ERR_DEVICE, as before), and the message adds that the device is missing
  const unverified = kiln(['train', ...(await trainFlags(1)), '--device', missing, '--out', join(root, 'cuda')], { env: { KILN_CUDA_TRAINING: '' } });
  assert.is(unverified.status, 1, output(unverified));
  assert.match(unverified.stderr, new RegExp(`kiln: ERR_DEVICE: CUDA training is built but not yet verified .* \\(nor is ${missing} usable here: ${missing} requested but`));
  const previous = process.env.KILN_CUDA_TRAINING;
  process.env.KILN_CUDA_TRAINING = '1';
  try {
    throwsKiln(() => new Trainer({ config: preset('tiny'), data: run, steps: 1, batch: 1, seqLen: 8, device: missing as 'cuda:0' }), 'ERR_NO_CUDA', /requested but/);
  } finally {
    if (previous === undefined) delete process.env.KILN_CUDA_TRAINING;
    else process.env.KILN_CUDA_TRAINING = previous;
  }
});

test('kiln train --resume with another preset names the fields that differ and the preset to pass', async () => {
  const flags = (await trainFlags(2)).map((f) => (f === 'tiny' ? '125m' : f));
  const r = kiln(['train', ...flags, '--resume', run, '--out', join(root, 'other')]);
  assert.is(r.status, 1, output(r));
  assert.match(r.stderr, /kiln: ERR_CHECKPOINT: --resume .*tiny holds another model than --preset 125m \(.*dModel: checkpoint 128, --preset 125m 768;.*layers: checkpoint 4, --preset 125m 12;.*\): it is the tiny preset: pass --preset tiny/);
  assert.not.match(r.stderr, /\[\["|\],\[/, 'no arrays of [key, value] pairs');
});

test('Trainer.resume with another config names the fields that differ', async () => {
  const trainer = new Trainer({ config: { ...preset('tiny'), ffn: 256 }, data: await shardDir(), steps: 2, batch: 2, seqLen: 32, evalEvery: 0 });
  try {
    let message = '';
    await trainer.resume(run).catch((e: Error) => (message = e.message));
    assert.match(message, /the config of .*tiny does not match this model \(ffn: checkpoint 352, this model 256\): resume it with the preset or config it was trained with/);
  } finally {
    trainer.close();
  }
});

test.run();
