/**
 * The dashboard and the report in a real browser: playwright-core driving Debian's chromium
 * (never a downloaded browser; .ci/run installs chromium when missing). Skipped only when no
 * chromium is installed. Screenshots go to test-artifacts/ (git-ignored) for a person to look at.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Browser, Page } from 'playwright-core';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Dashboard, attachServingDashboard, attachTrainingDashboard } from '../../lib/monitor/dashboard.js';
import { writeReport } from '../../lib/monitor/report/index.js';
import { FakeEngine, FakeTrainer, distResultFiles, distStepMetrics, resultFiles, stepMetrics } from './fixtures.js';
import { openRuns } from '../../lib/monitor/runs.js';
import { Engine } from '../../lib/serve/engine.js';
import { bundledCorpus, prepareDocuments } from '../../lib/io/shards.js';
import { byteTokenizer } from '../../lib/data/tokenizer.js';
import { preset } from '../../lib/model/config.js';
import { Trainer } from '../../lib/train/trainer.js';

const test = suite('monitor: browser (chromium)');
const CHROMIUM = [process.env.KILN_CHROMIUM, '/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p): p is string => !!p && existsSync(p));
const ARTIFACTS = resolve('test-artifacts');
let browser: Browser;

/** A page that records console errors and uncaught exceptions. */
async function page(width = 1400, height = 1000): Promise<{ page: Page; errors: string[] }> {
  // bypassCSP: the dashboard's policy forbids eval, which playwright's string predicates use
  const p = await browser.newPage({ viewport: { width, height }, bypassCSP: true });
  const errors: string[] = [];
  p.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  p.on('pageerror', (e) => errors.push(e.message));
  return { page: p, errors };
}

/** What window.kilnDashboard.charts() returns. */
type Charts = Record<string, { displayed: number; series: { label: string; points: number; max: number }[] }>;

if (!CHROMIUM) {
  test.skip('dashboard and report in chromium (no chromium installed: apt-get install -y chromium)');
} else {
  test.before(async () => {
    const { chromium } = await import('playwright-core');
    mkdirSync(ARTIFACTS, { recursive: true });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu'] });
  });
  test.after(async () => {
    await browser?.close();
  });

  test('training dashboard: loads clean, charts hold every point, a new step shows within 2 s, 20,000 steps thin for drawing only', async () => {
    const trainer = new FakeTrainer({ steps: 1000 });
    const { dashboard, detach } = await attachTrainingDashboard(trainer, { port: 0, name: 'tiny-a' });
    const { page: p, errors } = await page();
    try {
      for (let i = 0; i < 300; i++) trainer.emit(trainer.currentStep % 50 === 49 ? { valLoss: 3 - i / 300 } : {});
      await p.goto(dashboard.url);
      await p.waitForFunction('window.kilnDashboard?.charts().loss?.displayed === 300', undefined, { timeout: 5000 });
      const charts = (await p.evaluate('window.kilnDashboard.charts()')) as Charts;
      assert.equal(Object.keys(charts).sort(), ['gradNorm', 'latency', 'loss', 'lr', 'memory', 'tokens'], 'no MFU chart: these steps have no MFU');
      assert.equal(charts.loss.series.map((s) => [s.label, s.points]), [['tiny-a/loss', 300], ['tiny-a/valLoss', 6]]);
      assert.equal(charts.latency.series.map((s) => s.points), [300, 300, 300, 300]);
      assert.is(charts.memory.series[0].max, stepMetrics(1).peakMemoryBytes);

      const started = Date.now();
      trainer.emit();
      await p.waitForFunction(`document.querySelector('#runs tbody td.step')?.textContent === '301 / 1000'`, undefined, { timeout: 2000 });
      const seen = Date.now() - started;
      assert.ok(seen < 2000, `step 301 on the page after ${seen} ms`);
      await p.screenshot({ path: join(ARTIFACTS, 'dashboard-training.png'), fullPage: true });

      // a second, long run overlaid: the page keeps all 20,000 steps but draws a thinned set that keeps the spike
      const long = dashboard.addRun('long-b', { totalSteps: 20_000, source: 'file' });
      for (let s = 1; s <= 20_000; s++) dashboard.addStep(long, stepMetrics(s, s === 12_345 ? { loss: 50 } : {}));
      // as `kiln dashboard` opens a finished run: the whole history arrives in the snapshot
      await p.reload();
      await p.waitForFunction('window.kilnDashboard.runs()[1]?.stored === 20000', undefined, { timeout: 10_000 });
      await p.waitForFunction('window.kilnDashboard.charts().loss.series.length === 3', undefined, { timeout: 5000 });
      const overlay = (await p.evaluate('window.kilnDashboard.charts()')) as Charts;
      const longLoss = overlay.loss.series.find((s) => s.label === 'long-b/loss')!;
      assert.ok(longLoss.points >= 1000 && longLoss.points <= 4000, `thinned to ${longLoss.points} drawn points`);
      assert.is(longLoss.max, 50, 'the spike survives thinning');
      assert.is(overlay.loss.series.find((s) => s.label === 'tiny-a/loss')!.points, 301, 'the short run is drawn whole');
      // and it stays live: one more step of the short run reaches the overlaid page
      trainer.emit();
      await p.waitForFunction(`window.kilnDashboard.runs()[0].lastStep === 302`, undefined, { timeout: 2000 });
      await p.screenshot({ path: join(ARTIFACTS, 'dashboard-overlay.png'), fullPage: true });
      assert.equal(errors, [], 'no console errors');
    } finally {
      await p.close();
      detach();
      await dashboard.close();
    }
  });

  test('communication panel: absent for a one-process run, drawn from the exact figures of data-parallel runs (live and from metrics.jsonl)', async () => {
    const trainer = new FakeTrainer({ steps: 100 });
    const { dashboard, detach } = await attachTrainingDashboard(trainer, { port: 0, name: 'single' });
    const { page: p, errors } = await page();
    try {
      for (let i = 0; i < 20; i++) trainer.emit();
      await p.goto(dashboard.url);
      await p.waitForFunction('window.kilnDashboard?.charts().loss?.displayed === 20', undefined, { timeout: 5000 });
      assert.is(await p.evaluate('window.kilnDashboard.communication()'), false, 'no panel for a one-process run');
      assert.is(await p.isVisible('#communication'), false);
      assert.is((await p.$$('[data-dist]')).length, 0, 'its row looks as it always did');
      assert.equal(Object.keys((await p.evaluate('window.kilnDashboard.charts()')) as Charts).sort(), ['gradNorm', 'latency', 'loss', 'lr', 'memory', 'tokens']);

      // a live synchronous run joins: the panel appears with its figures, the one-process run stays out of it
      const dp = dashboard.addRun('dp-sync', { totalSteps: 100 });
      const sent = Array.from({ length: 30 }, (_, i) => distStepMetrics(i + 1, 'sync', 7000));
      for (const m of sent) dashboard.addStep(dp, m, Date.now());
      await p.waitForFunction('window.kilnDashboard.communication() && window.kilnDashboard.charts().commTime?.displayed === 30', undefined, { timeout: 5000 });
      const charts = (await p.evaluate('window.kilnDashboard.charts()')) as Charts;
      assert.equal(Object.keys(charts).filter((k) => !['gradNorm', 'latency', 'loss', 'lr', 'memory', 'tokens'].includes(k)).sort(), ['bandwidth', 'commBytes', 'commPerToken', 'commTime', 'scaling']);
      const max = (key: string) => Math.max(...sent.map((m) => m[key] as number));
      const series = (chart: string) => Object.fromEntries(charts[chart].series.map((s) => [s.label, s]));
      assert.equal(Object.keys(series('commTime')), ['dp-sync/communicationMs', 'dp-sync/commExposedMs'], 'only the data-parallel run');
      assert.is(series('commTime')['dp-sync/communicationMs'].max, max('commMs'));
      assert.is(series('commTime')['dp-sync/commExposedMs'].max, max('commExposedMs'));
      assert.is(series('commBytes')['dp-sync/commBytes'].max, max('commBytes'));
      assert.is(series('commPerToken')['dp-sync/commBytesPerToken'].max, max('commBytesPerToken'));
      assert.is(series('bandwidth')['dp-sync/algBandwidthGBs'].max, max('algBandwidthGBs'));
      assert.is(series('bandwidth')['dp-sync/busBandwidthGBs'].max, max('busBandwidthGBs'));
      assert.is(series('scaling')['dp-sync/scalingEfficiency'].max, max('scalingEfficiency'));
      assert.is(series('scaling')['dp-sync/scalingEfficiency'].points, 30);
      assert.is(await p.textContent('tr[data-run="1"] [data-dist]'), '2 ranks · sync · 1 bucket');
      assert.is(await p.$('tr[data-run="0"] [data-dist]'), null);

      // a DiLoCo run from its metrics.jsonl (as `kiln dashboard DIR` opens it): H, bits and outer steps in its row; no baseline, no efficiency
      const dir = join(mkdtempSync(join(tmpdir(), 'kiln-browser-dist-')), 'diloco-run');
      mkdirSync(dir);
      writeFileSync(join(dir, 'metrics.jsonl'), Array.from({ length: 12 }, (_, i) => JSON.stringify(distStepMetrics(i + 1, 'diloco'))).join('\n') + '\n');
      const [follower] = openRuns(dashboard, [dir]);
      follower.stop();
      await p.reload();
      await p.waitForFunction('window.kilnDashboard.runs().length === 3 && window.kilnDashboard.charts().commTime?.series.length === 4', undefined, { timeout: 5000 });
      assert.is(await p.textContent('tr[data-run="2"] [data-dist]'), '2 ranks · DiLoCo H=4 · 4-bit · 3 outer steps');
      const after = (await p.evaluate('window.kilnDashboard.charts()')) as Charts;
      assert.equal(after.scaling.series.map((s) => s.label), ['dp-sync/scalingEfficiency']);
      const dilocoBytes = after.commBytes.series.find((s) => s.label === 'diloco-run/commBytes')!;
      assert.is(dilocoBytes.points, 12, 'every step drawn, the quiet ones at the 0 lib/parallel reported');
      assert.is(dilocoBytes.max, distStepMetrics(4, 'diloco').commBytes);
      await p.screenshot({ path: join(ARTIFACTS, 'dashboard-communication.png'), fullPage: true });
      assert.equal(errors, [], 'no console errors');
    } finally {
      await p.close();
      detach();
      await dashboard.close();
    }
  });

  test('serving panel updates under load (ServingEngine test double)', async () => {
    const engine = new FakeEngine();
    const dashboard = await attachServingDashboard(engine, { port: 0, intervalMs: 200 });
    const { page: p, errors } = await page(1400, 900);
    let n = 0;
    // a load loop: a request finishes every 10 ms, the queue and KV usage move
    const load = setInterval(() => {
      n++;
      engine.current = { ...engine.current, running: 8 + (n % 5), waiting: n % 7, tokensPerSecond: 400 + (n % 50), kvUsage: 0.3 + (n % 10) / 50, prefixCacheHitRate: 0.4 };
      engine.finish({ ttftMs: 50 + (n % 30), interTokenMs: [20 + (n % 5), 21, 22 + (n % 9)] });
    }, 10);
    try {
      await p.goto(dashboard.url);
      await p.waitForFunction('window.kilnDashboard.servingSamples() >= 3', undefined, { timeout: 5000 });
      const finished = async () => Number((await p.textContent('[data-tile="requests finished"] .value'))!.replace(/,/g, ''));
      const before = await finished();
      const samples = (await p.evaluate('window.kilnDashboard.servingSamples()')) as number;
      // wait for the page to move (not a fixed 1 s sleep, which a loaded machine can outlast): the
      // tile and the TTFT chart must both advance; the timeout only breaks a hang
      await p.waitForFunction(`Number(document.querySelector('[data-tile="requests finished"] .value').textContent.replace(/,/g, '')) > ${before} && window.kilnDashboard.charts().ttft.displayed > ${samples}`, undefined, { timeout: 30_000 });
      const after = await finished();
      assert.ok(after > before, `finished requests tile moved: ${before} -> ${after}`);
      const charts = (await p.evaluate('window.kilnDashboard.charts()')) as Charts;
      assert.ok(charts.ttft.displayed > samples, 'new samples keep arriving');
      assert.equal(Object.keys(charts).sort(), ['cache', 'itl', 'requests', 'serveTokens', 'ttft']);
      const ttft = await p.textContent('[data-tile="TTFT p50"] .value');
      assert.match(ttft!, / ms$/);
      await p.screenshot({ path: join(ARTIFACTS, 'dashboard-serving.png'), fullPage: true });
      assert.equal(errors, []);
    } finally {
      clearInterval(load);
      await p.close();
      await dashboard.close();
    }
  });

  test('serving panel on the real engine: a load loop of concurrent requests moves the page', async () => {
    const root = mkdtempSync(join(tmpdir(), 'kiln-browser-engine-'));
    prepareDocuments(await bundledCorpus(40), join(root, 'data'), byteTokenizer, { valFraction: 0.1 });
    const config = { ...preset('tiny'), dModel: 32, layers: 1, heads: 2, kvHeads: 1, headDim: 16, ffn: 64, context: 128 };
    const trainer = new Trainer({ config, data: join(root, 'data'), steps: 2, batch: 2, seqLen: 32, out: join(root, 'run'), evalEvery: 0 });
    await trainer.run();
    const checkpoint = await trainer.save();
    trainer.close();
    const engine = await Engine.load(checkpoint, {});
    const dashboard = await attachServingDashboard(engine, { port: 0, intervalMs: 200 });
    const { page: p, errors } = await page(1400, 900);
    let running = true;
    const loop = (async () => {
      for (let i = 0; running; i++) {
        await Promise.all(Array.from({ length: 4 }, (_, j) => engine.generate(`Request ${i}.${j}: the film was`, { maxTokens: 8, temperature: 0.8, seed: i * 4 + j, ignoreEos: true })));
      }
    })();
    try {
      await p.goto(dashboard.url);
      await p.waitForFunction(`Number(document.querySelector('[data-tile="requests finished"] .value')?.textContent.replace(/,/g, '')) > 0`, undefined, { timeout: 10_000 });
      const finished = async () => Number((await p.textContent('[data-tile="requests finished"] .value'))!.replace(/,/g, ''));
      const before = await finished();
      await p.waitForFunction(`Number(document.querySelector('[data-tile="requests finished"] .value').textContent.replace(/,/g, '')) > ${before}`, undefined, { timeout: 5000 });
      assert.match((await p.textContent('[data-tile="TTFT p50"] .value'))!, / ms$/);
      assert.match((await p.textContent('[data-tile="ITL p99"] .value'))!, / ms$/);
      await p.screenshot({ path: join(ARTIFACTS, 'dashboard-serving-engine.png'), fullPage: true });
      assert.equal(errors, []);
    } finally {
      running = false;
      await loop;
      await p.close();
      await dashboard.close();
      await engine.close();
    }
  });

  test('report: opens from a file URL with the network blocked, its tables equal the JSON; 50 files render quickly', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kiln-report-browser-'));
    const files = resultFiles();
    for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, name), JSON.stringify(content));
    for (const [name, content] of Object.entries(distResultFiles())) writeFileSync(join(dir, name), JSON.stringify(content));
    for (const f of readdirSync('bench/results')) writeFileSync(join(dir, f), readFileSync(join('bench/results', f)));
    const out = join(dir, 'report.html');
    writeReport([dir], out);
    const context = await browser.newContext({ offline: true, viewport: { width: 1400, height: 1000 } });
    const outside: string[] = [];
    await context.route('**/*', (route) => {
      const url = route.request().url();
      if (url.startsWith('file:')) return route.continue();
      outside.push(url);
      return route.abort();
    });
    const p = await context.newPage();
    const errors: string[] = [];
    p.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    p.on('pageerror', (e) => errors.push(e.message));
    try {
      await p.goto(pathToFileURL(out).href);
      const training = (await p.evaluate(`Array.from(document.querySelectorAll('#training-table tbody tr')).map((r) => ({
        file: r.getAttribute('data-file'),
        cells: Object.fromEntries(Array.from(r.querySelectorAll('td[data-field]')).map((c) => [c.getAttribute('data-field'), { value: c.getAttribute('data-value'), text: c.textContent }])),
      }))`)) as { file: string; cells: Record<string, { value: string; text: string }> }[];
      const gpuRow = training.find((r) => r.file === 'train-gpu.json')!;
      const gpu = (files['train-gpu.json'] as any).results[0];
      for (const field of ['tokensPerSecond', 'p50Ms', 'forwardMs', 'backwardMs', 'optimizerMs', 'communicationMs', 'mfu', 'peakMemoryBytes']) {
        assert.is(Number(gpuRow.cells[field].value), gpu[field], field);
      }
      // every kiln train row in the repository's results: the page shows the JSON's tokens/s
      for (const f of readdirSync('bench/results').filter((x) => x.startsWith('train'))) {
        const json = JSON.parse(readFileSync(join('bench/results', f), 'utf8'));
        const rows = training.filter((r) => r.file === f);
        assert.is(rows.length, json.results.length, f);
        rows.forEach((r, i) => assert.is(r.cells.tokensPerSecond.value === '' ? undefined : Number(r.cells.tokensPerSecond.value), json.results[i].tokensPerSecond, `${f} row ${i}`));
      }
      const cpuRow = training.find((r) => r.file === 'train-cpu.json')!;
      assert.is(cpuRow.cells.mfu.text, '—', 'a missing MFU is a gap');
      const sorted = await p.evaluate(`document.querySelector('#training-table th:nth-child(6)').click(), document.querySelector('#training-table tbody tr').getAttribute('data-file')`);
      assert.ok(sorted, 'tables sort on a header click');
      assert.ok((await p.$$('svg.chart')).length >= 6, 'charts drawn');
      assert.ok(await p.isVisible('#dist-allreduce-table td.met'), 'the data-parallel tables show their verdicts');
      assert.ok(await p.isVisible('#dist-wan-table td.missed'));
      await p.screenshot({ path: join(ARTIFACTS, 'report.png'), fullPage: true });
      assert.equal(outside, [], 'the report fetched nothing');
      assert.equal(errors, []);

      // 50 result files: time to write the report in Node plus the browser's load
      const many = mkdtempSync(join(tmpdir(), 'kiln-report-50-'));
      const shapes = Object.values(files);
      for (let i = 0; i < 50; i++) {
        const f = JSON.parse(JSON.stringify(shapes[i % shapes.length]));
        f.date = new Date(Date.UTC(2026, 10, 1, 0, i)).toISOString();
        writeFileSync(join(many, `r${i}.json`), JSON.stringify(f));
      }
      const t0 = performance.now();
      writeReport([many], join(many, 'report.html'));
      const written = performance.now() - t0;
      await p.goto(pathToFileURL(join(many, 'report.html')).href, { waitUntil: 'load' });
      const loadMs = (await p.evaluate(`performance.getEntriesByType('navigation')[0].duration`)) as number;
      console.log(`  report of 50 result files: written in ${written.toFixed(0)} ms, loaded and rendered in ${loadMs.toFixed(0)} ms (target: under 2 s together)`);
      // the target is 2 s; the bound here is loose because CI machines are shared (the README gives the measurement)
      assert.ok(written + loadMs < 10_000, `50 files: ${written.toFixed(0)} + ${loadMs.toFixed(0)} ms`);
    } finally {
      await context.close();
    }
  });
}

test.run();
