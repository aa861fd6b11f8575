/**
 * The dashboard server in Node: SSE snapshot and step events, /metrics, the token and host
 * rules, the serving feed's percentiles (against a ServingEngine test double, so the feed's math
 * is checked on scripted figures; test/monitor/engine.test.ts drives the real engine), metrics.jsonl following, and the Trainer's onStep hook on a real run.
 */
import { appendFileSync, mkdtempSync, truncateSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Dashboard, attachServingDashboard, attachTrainingDashboard } from '../../lib/monitor/dashboard.js';
import { normalizeDashboardFlag, dashboardOptionsFrom } from '../../lib/cli/monitor.js';
import { MetricsFollower, openRuns } from '../../lib/monitor/runs.js';
import { ServingFeed, percentile } from '../../lib/monitor/serving.js';
import { COMMUNICATION_FIELDS, TrainingRun, toTrainingPoint } from '../../lib/monitor/training.js';
import { bundledCorpus, prepareDocuments } from '../../lib/io/shards.js';
import { byteTokenizer } from '../../lib/data/tokenizer.js';
import { preset } from '../../lib/model/config.js';
import { Trainer } from '../../lib/train/trainer.js';
import { assertKilnError } from '../helpers.js';
import { FakeEngine, FakeTrainer, distStepMetrics, stepMetrics } from './fixtures.js';

const test = suite('monitor: dashboard server');
const root = mkdtempSync(join(tmpdir(), 'kiln-monitor-'));

function request(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string; headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    get(url, { headers }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, body, headers: res.headers }));
    }).on('error', reject);
  });
}

/** An SSE client collecting events; `next(name)` resolves with the next event of that name. */
function events(url: string) {
  const seen: { event: string; data: any }[] = [];
  const waiters: { name: string; resolve: (d: any) => void; from: number }[] = [];
  let buffer = '';
  const req = get(url, (res) => {
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => {
      buffer += chunk;
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const event = /^event: (.*)$/m.exec(block)?.[1];
        const data = /^data: (.*)$/m.exec(block)?.[1];
        if (!event || data === undefined) continue;
        seen.push({ event, data: JSON.parse(data) });
        for (const w of [...waiters]) {
          const hit = seen.slice(w.from).find((e) => e.event === w.name);
          if (hit) {
            waiters.splice(waiters.indexOf(w), 1);
            w.resolve(hit.data);
          }
        }
      }
    });
  });
  return {
    seen,
    next(name: string, timeoutMs = 3000): Promise<any> {
      const from = seen.length;
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no '${name}' event within ${timeoutMs} ms`)), timeoutMs);
        waiters.push({ name, from, resolve: (d) => { clearTimeout(timer); resolve(d); } });
      });
    },
    first(name: string): Promise<any> {
      const hit = seen.find((e) => e.event === name);
      if (hit) return Promise.resolve(hit.data);
      return new Promise((resolve) => waiters.push({ name, from: 0, resolve }));
    },
    close: () => req.destroy(),
  };
}

test('training steps reach the page over SSE, /metrics and /api/state carry the same figures', async () => {
  const trainer = new FakeTrainer({ steps: 100 });
  const { dashboard, detach } = await attachTrainingDashboard(trainer, { port: 0, name: 'run-a' });
  try {
    for (let i = 0; i < 5; i++) trainer.emit();
    const sse = events(`${dashboard.url}events`);
    const snapshot = await sse.first('snapshot');
    assert.is(snapshot.runs.length, 1);
    assert.is(snapshot.runs[0].data.length, 5);
    assert.is(snapshot.runs[0].name, 'run-a');
    assert.is(snapshot.runs[0].totalSteps, 100);
    const pending = sse.next('step');
    const m = trainer.emit({ valLoss: 2.5 });
    const step = await pending;
    assert.is(step.point.step, 6);
    assert.is(step.point.loss, m.loss, 'the exact loss the trainer computed');
    assert.is(step.point.valLoss, 2.5);
    assert.is(step.status.progress, 0.06);
    assert.ok(step.status.etaS > 0, 'an ETA from the pace of recent steps');
    const metrics = await request(`${dashboard.url}metrics`);
    assert.is(metrics.status, 200);
    assert.match(metrics.body, `kiln_train_loss{run="run-a"} ${m.loss}`);
    assert.match(metrics.body, `kiln_train_step_seconds{run="run-a",phase="backward"} ${m.backwardMs / 1e3}`);
    assert.match(metrics.body, 'kiln_train_tokens_total{run="run-a"} 12288');
    const state = JSON.parse((await request(`${dashboard.url}api/state`)).body);
    assert.is(state.runs[0].data.length, 6);
    sse.close();
  } finally {
    detach();
    await dashboard.close();
  }
});

test('loopback without a token refuses foreign Host headers; other hosts need a token', async () => {
  const d = await Dashboard.start({ port: 0 });
  try {
    assert.is((await request(d.url, { host: 'attacker.example:80' })).status, 401, 'DNS rebinding: a foreign Host is refused');
    const page = await request(d.url);
    assert.is(page.status, 200);
    assert.match(page.body, '/assets/uPlot.iife.min.js');
    assert.not.match(page.body, /https?:\/\//, 'no external URL in the page');
    const uplot = await request(`${d.url}assets/uPlot.iife.min.js`);
    assert.is(uplot.status, 200);
    assert.ok(uplot.body.length > 20_000, 'uPlot served from node_modules');
    assert.is((await request(`${d.url}nope`)).status, 404);
  } finally {
    await d.close();
  }
  await assertKilnError(() => Dashboard.start({ port: 0, host: '0.0.0.0' }), 'ERR_ARG');
  await assertKilnError(() => Dashboard.start({ port: 0, token: 'short' }), 'ERR_ARG');
  await assertKilnError(() => Dashboard.start({ port: 70000 }), 'ERR_ARG');
  const token = 'a-long-enough-test-token-123';
  const t = await Dashboard.start({ port: 0, token });
  try {
    const base = `http://127.0.0.1:${t.port}`;
    assert.is((await request(`${base}/metrics`)).status, 401);
    assert.is((await request(`${base}/metrics`, { authorization: 'Bearer wrong-token-wrong-token' })).status, 401);
    assert.is((await request(`${base}/metrics`, { authorization: `Bearer ${token}` })).status, 200);
    const page = await request(`${base}/?token=${token}`);
    assert.is(page.status, 200);
    const cookie = String((page.headers['set-cookie'] as string[])[0]).split(';')[0];
    assert.is((await request(`${base}/assets/dashboard.js`, { cookie })).status, 200, 'the page loads its assets with the cookie');
  } finally {
    await t.close();
  }
  // a port in use is a KilnError, not a crash
  const a = await Dashboard.start({ port: 0 });
  try {
    await assertKilnError(() => Dashboard.start({ port: a.port }), 'ERR_ARG');
  } finally {
    await a.close();
  }
});

test('--dashboard takes an optional port', async () => {
  assert.equal(normalizeDashboardFlag(['--dashboard', '--steps', '5']), ['--dashboard=8788', '--steps', '5']);
  assert.equal(normalizeDashboardFlag(['--dashboard', '9000']), ['--dashboard=9000']);
  assert.equal(normalizeDashboardFlag(['--steps', '5', '--dashboard']), ['--steps', '5', '--dashboard=8788']);
  assert.equal(dashboardOptionsFrom({ dashboard: '9000' }).port, 9000);
  await assertKilnError(() => dashboardOptionsFrom({ dashboard: '99999' }), 'ERR_ARG');
  const remote = dashboardOptionsFrom({ dashboard: '9000', 'dashboard-host': '0.0.0.0' });
  assert.ok(remote.token && remote.token.length >= 16, 'a non-loopback host gets a token');
});

test('serving: percentiles over the window, engine stats, SSE samples and /metrics (ServingEngine test double)', async () => {
  assert.is(percentile([1, 2, 3, 4], 0.5), 2);
  assert.is(percentile([1, 2, 3, 4], 0.99), 4);
  assert.is(percentile([], 0.5), undefined);
  const feed = new ServingFeed({ windowS: 10 });
  const engine = new FakeEngine();
  const t0 = 1_000_000;
  for (let i = 1; i <= 100; i++) {
    feed.add({ id: `r${i}`, promptTokens: 5, completionTokens: 3, finishReason: 'length', timings: { ttftMs: i, totalMs: i + 20, queueMs: 0, tpotMs: 10 }, interTokenMs: [i / 10, i / 10 + 100] }, t0);
  }
  const s = feed.sample({ ...engine.stats(), running: 3, waiting: 2, kvUsage: 0.5 }, t0 + 1);
  assert.is(s.ttftP50Ms, 50);
  assert.is(s.ttftP99Ms, 99);
  assert.is(s.itlP50Ms, 10, '200 gaps: the 100th smallest');
  assert.is(s.itlP99Ms, 100 + 98 / 10, 'nearest rank: the 198th of 200');
  assert.is(s.running, 3);
  assert.is(s.windowRequests, 100);
  const later = feed.sample(engine.stats(), t0 + 20_000);
  assert.is(later.windowRequests, 0, 'requests older than the window leave it');
  assert.is(later.ttftP50Ms, undefined, 'no request in the window: a gap, not a zero');

  const dashboard = await attachServingDashboard(engine, { port: 0, intervalMs: 50 });
  try {
    assert.is(engine.listenerCount, 1);
    const sse = events(`${dashboard.url}events`);
    await sse.first('snapshot');
    engine.current = { ...engine.current, running: 4, waiting: 7, tokensPerSecond: 321.5, kvUsage: 0.25, prefixCacheHitRate: 0.5 };
    engine.finish({ ttftMs: 42, interTokenMs: [5, 6, 7] });
    let sample;
    do sample = await sse.next('serve'); while (sample.windowRequests === 0);
    assert.is(sample.running, 4);
    assert.is(sample.waiting, 7);
    assert.is(sample.tokensPerSecond, 321.5);
    assert.is(sample.ttftP50Ms, 42);
    assert.is(sample.itlP50Ms, 6);
    const metrics = (await request(`${dashboard.url}metrics`)).body;
    assert.match(metrics, 'kiln_serve_requests_waiting 7');
    assert.match(metrics, 'kiln_serve_time_to_first_token_seconds_count 1');
    assert.match(metrics, 'kiln_serve_inter_token_latency_seconds_count 3');
    await assertKilnError(() => attachServingDashboard(engine, { dashboard }), 'ERR_ARG');
    sse.close();
  } finally {
    await dashboard.close();
  }
  assert.is(engine.listenerCount, 0, 'closing the dashboard unsubscribes from the engine');
});

test('metrics.jsonl: read, followed as it grows (partial lines wait), replaced files start over', async () => {
  const dir = join(root, 'run-file');
  const file = join(dir, 'metrics.jsonl');
  const { mkdirSync } = await import('node:fs');
  mkdirSync(dir);
  writeFileSync(file, [1, 2, 3].map((s) => JSON.stringify(stepMetrics(s))).join('\n') + '\nnot json\n{"step": 4}\n');
  const d = await Dashboard.start({ port: 0 });
  try {
    const [f] = openRuns(d, [dir]);
    f.stop();
    assert.is(f.run.points.length, 3);
    assert.is(f.badLines, 2, 'a non-JSON line and a line without a loss are skipped');
    const line = JSON.stringify(stepMetrics(4));
    appendFileSync(file, line.slice(0, 20));
    assert.is(f.poll(), 0, 'half a line waits for its newline');
    appendFileSync(file, line.slice(20) + '\n');
    assert.is(f.poll(), 1);
    assert.is(f.run.points[3].loss, stepMetrics(4).loss);
    truncateSync(file, 0);
    writeFileSync(file, JSON.stringify(stepMetrics(1)) + '\n');
    f.poll();
    assert.is(f.run.points.length, 1, 'a replaced file resets the run');
    assert.is(f.run.generation, 1);
    assert.is(f.run.state, 'running', 'a file growing now');
    const { utimesSync } = await import('node:fs');
    utimesSync(file, new Date(Date.now() - 600_000), new Date(Date.now() - 600_000));
    f.poll();
    assert.is(f.run.state, 'idle', 'a file that stopped growing without reaching its planned steps');
    mkdirSync(join(dir, 'step-000002'));
    writeFileSync(join(dir, 'step-000002', 'trainer.json'), JSON.stringify({ step: 2, options: { steps: 2 } }));
    appendFileSync(file, JSON.stringify(stepMetrics(2)) + '\n');
    f.run.totalSteps = undefined;
    f.poll();
    assert.is(f.run.totalSteps, 2, 'the plan comes from the checkpoint\'s trainer.json');
    assert.is(f.run.state, 'finished');
    await assertKilnError(() => openRuns(d, [join(root, 'missing')]), 'ERR_ARG');
    await assertKilnError(() => openRuns(d, []), 'ERR_ARG');
    assert.ok(new MetricsFollower(join(root, 'none.jsonl'), d, d.addRun('x')).poll() === 0, 'a file not yet written is waited for');
  } finally {
    await d.close();
  }
});

test('toTrainingPoint keeps finite figures only; TrainingRun progress and ETA', () => {
  assert.is(toTrainingPoint({ loss: 1 }), undefined);
  assert.is(toTrainingPoint(null), undefined);
  const p = toTrainingPoint({ step: 1, loss: 2, mfu: NaN, commMs: 3, extra: 'x' })!;
  assert.equal(p, { step: 1, loss: 2, communicationMs: 3 });
  const run = new TrainingRun(0, 'r', 'live', 10);
  run.add({ step: 1, loss: 1, stepMs: 100 }, 1000);
  run.add({ step: 2, loss: 1, stepMs: 100 }, 1100);
  run.add({ step: 3, loss: 1, stepMs: 100 }, 1200);
  const s = run.status();
  assert.is(s.progress, 0.3);
  assert.ok(Math.abs(s.etaS! - 0.7) < 1e-9, `7 steps at 0.1 s: ${s.etaS}`);
  assert.ok(Math.abs(s.elapsedS - 0.3) < 1e-9);
});

test('data-parallel steps: every communication figure reaches the point exactly, over SSE, from metrics.jsonl and in /metrics; other runs carry none', async () => {
  const sync = distStepMetrics(5, 'sync', 7000);
  const p = toTrainingPoint(sync)!;
  for (const field of ['worldSize', 'buckets', 'commExposedMs', 'commBytes', 'commPayloadBytes', 'commBytesPerToken', 'algBandwidthGBs', 'busBandwidthGBs', 'scalingEfficiency'] as const) {
    assert.is(p[field], sync[field], field);
  }
  assert.is(p.communicationMs, sync.commMs, 'lib/parallel\'s commMs is the point\'s communication time');
  assert.is(p.syncMode, 'sync');
  assert.ok(p.scalingEfficiency! > 0 && p.algBandwidthGBs! > 0);
  const diloco = toTrainingPoint(distStepMetrics(8, 'diloco'))!;
  assert.equal([diloco.syncMode, diloco.innerSteps, diloco.quantBits, diloco.outerSteps, diloco.worldSize], ['diloco', 4, 4, 2, 2]);
  assert.is(diloco.scalingEfficiency, undefined, 'no baseline given: no efficiency');
  assert.is(toTrainingPoint(distStepMetrics(9, 'diloco'))!.algBandwidthGBs, 0, 'a step without collectives: lib/parallel\'s own 0, kept as it is');
  const plain = toTrainingPoint(stepMetrics(5))!;
  for (const field of COMMUNICATION_FIELDS) assert.is(plain[field], undefined, `a one-process step has no ${field}`);
  assert.is(toTrainingPoint({ ...stepMetrics(1), syncMode: '<script>' })!.syncMode, undefined, 'a sync mode is a short name or nothing');
  assert.is(toTrainingPoint({ ...stepMetrics(1), syncMode: 3 })!.syncMode, undefined);
  assert.is(toTrainingPoint({ ...stepMetrics(1), commBytes: Infinity })!.commBytes, undefined);

  // live (Trainer.onStep) and over SSE
  const trainer = new FakeTrainer({ steps: 10 });
  const { dashboard, detach } = await attachTrainingDashboard(trainer, { port: 0, name: 'dp' });
  const dir = join(root, 'run-dist');
  const { mkdirSync } = await import('node:fs');
  mkdirSync(dir);
  writeFileSync(join(dir, 'metrics.jsonl'), [1, 2, 3, 4, 5].map((s) => JSON.stringify(distStepMetrics(s, 'diloco'))).join('\n') + '\n');
  try {
    const sse = events(`${dashboard.url}events`);
    await sse.first('snapshot');
    const pending = sse.next('step');
    const emitted = trainer.emit(distStepMetrics(1, 'sync', 7000));
    const step = await pending;
    for (const field of ['commExposedMs', 'commBytes', 'algBandwidthGBs', 'busBandwidthGBs', 'scalingEfficiency', 'worldSize'] as const) assert.is(step.point[field], emitted[field], field);
    assert.is(step.point.syncMode, 'sync');
    sse.close();

    // from a file (`kiln dashboard DIR`)
    const [f] = openRuns(dashboard, [dir]);
    f.stop();
    assert.is(f.run.points.length, 5);
    assert.is(f.run.points[3].outerSteps, 1);
    assert.is(f.run.points[3].commBytes, distStepMetrics(4, 'diloco').commBytes);
    assert.is(f.run.points[2].commBytes, 0);

    const metrics = (await request(`${dashboard.url}metrics`)).body;
    assert.match(metrics, `kiln_train_world_size{run="dp"} 2`);
    assert.match(metrics, `kiln_train_comm_bytes{run="dp",kind="wire"} ${emitted.commBytes}`);
    assert.match(metrics, `kiln_train_comm_bandwidth_bytes_per_second{run="dp",kind="bus"} ${(emitted.busBandwidthGBs as number) * 1e9}`);
    assert.match(metrics, `kiln_train_scaling_efficiency_ratio{run="dp"} ${emitted.scalingEfficiency}`);
    assert.match(metrics, `kiln_train_step_seconds{run="dp",phase="communication_exposed"} ${(emitted.commExposedMs as number) / 1e3}`);
    assert.not.match(metrics, 'kiln_train_scaling_efficiency_ratio{run="run-dist"}', 'DiLoCo without a baseline: no efficiency');
  } finally {
    detach();
    await dashboard.close();
  }
  // a one-process run sets none of the data-parallel series
  const single = await Dashboard.start({ port: 0 });
  try {
    single.addStep(single.addRun('one'), stepMetrics(1));
    const metrics = (await request(`${single.url}metrics`)).body;
    assert.not.match(metrics, /kiln_train_(world_size|comm_bytes|comm_bandwidth_bytes_per_second|scaling_efficiency_ratio)\{/);
    assert.not.match(metrics, 'communication_exposed');
  } finally {
    await single.close();
  }
});

test('a real Trainer publishes each step (validation included) through onStep', async () => {
  const data = join(root, 'data');
  prepareDocuments(await bundledCorpus(50), data, byteTokenizer, { valFraction: 0.1 });
  const config = { ...preset('tiny'), dModel: 32, layers: 1, heads: 2, kvHeads: 1, headDim: 16, ffn: 64, context: 32 };
  const trainer = new Trainer({ config, data, steps: 3, batch: 2, seqLen: 32, evalEvery: 3, evalBatches: 1 });
  const { dashboard, detach } = await attachTrainingDashboard(trainer, { port: 0, name: 'real' });
  try {
    const history = await trainer.run();
    const state = dashboard.snapshot();
    assert.is(state.runs[0].data.length, 3);
    assert.is(state.runs[0].data[2].loss, history[2].loss);
    assert.is(state.runs[0].data[2].valLoss, history[2].valLoss);
    assert.is(state.runs[0].state, 'finished');
  } finally {
    detach();
    await dashboard.close();
    trainer.close();
  }
});

test.run();
