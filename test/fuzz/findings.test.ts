/**
 * Regression tests for what the fuzzer (test/fuzz/harness.ts) found in the serving, monitoring
 * and collective entry points: each case once threw a TypeError (or crashed the process from a
 * callback) and is now a KilnError with a code.
 */
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as kiln from '../../lib/index.js';
import { binding } from '../../lib/native.js';
import { assertKilnError } from '../helpers.js';

const b = () => binding() as unknown as Record<string, (...args: unknown[]) => unknown>;
const local = { port: 0, host: '127.0.0.1' };
const loadedResult = () => ({ file: 'm.json', benchmark: 'matmul', results: [{ device: 'cpu', medianMs: 1 }] });

test('cudaArchCoverage: a BigInt or symbol is ERR_ARG (the message once JSON.stringify-ed it: TypeError)', async () => {
  await assertKilnError(() => kiln.cudaArchCoverage(1n as never, ['86-real']), 'ERR_ARG');
  await assertKilnError(() => kiln.cudaArchCoverage('8.6', [2n] as never), 'ERR_ARG');
  await assertKilnError(() => kiln.cudaArchCoverage(Symbol('cc') as never, ['86-real']), 'ERR_ARG');
  assert.is(kiln.cudaArchCoverage('8.6', ['86-real']).covered, true);
  const holes = kiln.cudaArchCoverage('8.6', new Array(5) as string[]); // holes: an empty list of names
  assert.is(holes.covered, false);
});

test('ChatTemplate: a source or special tokens of the wrong type are ERR_ARG', async () => {
  await assertKilnError(() => new kiln.ChatTemplate(5 as unknown as string), 'ERR_ARG');
  await assertKilnError(() => new kiln.ChatTemplate(undefined, null as never), 'ERR_ARG');
  await assertKilnError(() => new kiln.ChatTemplate(undefined, { bos: 1, eos: '' } as never), 'ERR_ARG');
  assert.ok(new kiln.ChatTemplate(undefined).render([{ role: 'user', content: 'hi' }]).includes('hi'));
});

test('createServer: a non-engine (or a promise of one) and bad options are ERR_ARG, never a crash', async () => {
  await assertKilnError(() => kiln.createServer(undefined as never), 'ERR_ARG');
  await assertKilnError(() => kiln.createServer({} as never), 'ERR_ARG');
  const fake = { stream() {}, generate() {}, tokenizer: { eot: 0, decode: () => '' }, modelName: 'x', stats() {}, onRequestFinished: () => () => undefined };
  await assertKilnError(() => kiln.createServer(fake as never, { bodyLimit: -1 }), 'ERR_ARG');
  await assertKilnError(() => kiln.createServer(fake as never, { apiKey: 5 as never }), 'ERR_ARG');
  await assertKilnError(() => kiln.createServer(fake as never, null as never), 'ERR_ARG');
  // a promise that resolves to a non-engine: the server reports a failed load (this crashed the process)
  const app = kiln.createServer(Promise.resolve(undefined as never));
  await new Promise((r) => setTimeout(r, 10));
  assert.is(app.kiln.state, 'failed');
  const health = await app.inject({ method: 'GET', url: '/health' });
  assert.is(health.statusCode, 503);
  await app.close();
});

test('dashboards: hostile options, engines, trainers and runs are ERR_ARG; nothing is left listening', async () => {
  await assertKilnError(() => kiln.startDashboard(null as never), 'ERR_ARG');
  await assertKilnError(() => kiln.startDashboard({ ...local, port: Symbol('p') as never }), 'ERR_ARG');
  await assertKilnError(() => kiln.startDashboard({ ...local, token: 12345678901234567890 as never }), 'ERR_ARG');
  await assertKilnError(() => kiln.attachServingDashboard(undefined as never, local), 'ERR_ARG');
  await assertKilnError(() => kiln.attachServingDashboard({ stats() {}, onRequestFinished: () => () => undefined, modelName: Symbol('m') } as never, local), 'ERR_ARG');
  await assertKilnError(() => kiln.attachTrainingDashboard({ onStep: () => () => undefined, options: { steps: NaN }, currentStep: 0 } as never, local), 'ERR_ARG');
  await assertKilnError(() => kiln.attachTrainingDashboard(null as never, local), 'ERR_ARG');
  const source = { stats() {}, onRequestFinished: () => () => undefined };
  await assertKilnError(() => kiln.attachServingDashboard(source as never, { ...local, intervalMs: Object.create(null) }), 'ERR_ARG');
  await assertKilnError(() => kiln.attachServingDashboard(source as never, { ...local, windowS: 1n as never }), 'ERR_ARG');
  await assertKilnError(() => kiln.attachServingDashboard(source as never, { ...local, maxGaps: -1 }), 'ERR_ARG');
  const d = await kiln.startDashboard(local);
  try {
    await assertKilnError(() => d.addStep(undefined as never, { step: 1, loss: 1 }), 'ERR_ARG');
    const run = d.addRun('r', { totalSteps: 3 });
    assert.ok(d.addStep(run, { step: 1, loss: 1 }, 5));
    await assertKilnError(() => d.addStep(run, { step: 2, loss: 1 }, 10n as never), 'ERR_ARG');
    await assertKilnError(() => d.addRun('r', { totalSteps: -1 }), 'ERR_ARG');
    await assertKilnError(() => d.addRun(1 as never), 'ERR_ARG');
    const other = await kiln.startDashboard(local);
    await assertKilnError(() => other.finishRun(run), 'ERR_ARG');
    await other.close();
  } finally {
    await d.close();
  }
});

test('toHttpError maps any thrown value (even an unprintable one) to an HttpError; HttpError refuses bad fields', async () => {
  const detached = new Float32Array(new ArrayBuffer(16));
  structuredClone(detached.buffer, { transfer: [detached.buffer] });
  assert.is(kiln.toHttpError(detached).status, 500);
  assert.is(kiln.toHttpError(Object.create(null)).status, 500);
  const odd = kiln.toHttpError({ statusCode: 404, code: 7, message: Symbol('m') });
  assert.is(odd.status, 404);
  assert.is(odd.code, null);
  await assertKilnError(() => new kiln.HttpError(200, 'ok', 'x'), 'ERR_ARG');
  await assertKilnError(() => new kiln.HttpError(400, Symbol('m') as never, 'x'), 'ERR_ARG');
});

test('renderReport / writeReport: results, skipped lists and titles of the wrong shape are ERR_ARG', async () => {
  await assertKilnError(() => kiln.renderReport([loadedResult()], [], { title: NaN as never }), 'ERR_ARG');
  await assertKilnError(() => kiln.renderReport([{ file: 'x' }] as never), 'ERR_ARG');
  await assertKilnError(() => kiln.renderReport([loadedResult()], [null] as never), 'ERR_ARG');
  await assertKilnError(() => kiln.writeReport('dir' as never, '/tmp/x.html'), 'ERR_ARG');
  await assertKilnError(() => kiln.writeReport(['dir'], 5 as never), 'ERR_ARG');
  // an output path that is a directory: ERR_ARG, and no temp file left beside it
  const dir = mkdtempSync(join(tmpdir(), 'kiln-report-'));
  try {
    writeFileSync(join(dir, 'r.json'), JSON.stringify({ benchmark: 'matmul', results: [{ device: 'cpu', medianMs: 1 }] }));
    mkdirSync(join(dir, 'out'));
    await assertKilnError(() => kiln.writeReport([join(dir, 'r.json')], join(dir, 'out')), 'ERR_ARG');
    assert.equal(readdirSync(dir).sort(), ['out', 'r.json']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  assert.ok(kiln.renderReport([loadedResult()] as never, [], { title: 't' }).includes('<title>t</title>'));
});

test('collectives on a one-rank communicator: element getters run before tensors resolve (order rule), closed handles are ERR_DISPOSED', async () => {
  const comm = await b().distConnect({ rank: 0, worldSize: 1, storeHost: '127.0.0.1', storePort: 0, token: '', prefix: 'r', bindHost: '127.0.0.1', timeoutMs: 1000 });
  const t = kiln.randn([4], { seed: 1 });
  const before = await t.toArray();
  // an element getter that disposes the tensor it returns: ERR_DISPOSED, not ERR_INTERNAL (the merge left the list read interleaved with resolving)
  const list = [t.handle];
  const victim = kiln.randn([4], { seed: 2 });
  Object.defineProperty(list, 0, { get: () => { victim.dispose(); return victim.handle; } });
  await assertKilnError(() => b().distAllReduce(comm, list, true, false, 'x'), 'ERR_DISPOSED');
  b().distWait(b().distAllReduce(comm, [t.handle], true, false, 'avg'));
  await kiln.synchronize();
  assert.equal(await t.toArray(), before); // one rank: the average is the tensor itself
  b().distClose(comm);
  await assertKilnError(() => b().distBarrier(comm, 'after close'), 'ERR_DISPOSED');
  t.dispose();
});

test.run();
