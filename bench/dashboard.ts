/**
 * What the live dashboard costs a training step (target, bench/targets.ts: under 1% on the tiny
 * preset, 2-core CPU). One Trainer runs the tiny preset; after a warm-up, phases of steps alternate
 * between no dashboard and a dashboard with a connected client draining its event stream, so
 * drifting machine load hits both alike. Two figures:
 *   - publishUs: the time the step hook spends publishing (point, ETA, Prometheus gauges, JSON,
 *     writes to the client), measured around the call: exact, and what --dashboard adds per step;
 *   - the wall time between consecutive steps with and without the dashboard (medians): the
 *     end-to-end view, noisy on a shared machine (the load average and each phase's median are
 *     recorded with it, so the noise can be read off).
 * With KILN_BENCH_BROWSER=1 (and Debian's chromium), a real page is open on the same machine
 * throughout, drawing every step: its rendering competes with training for the same cores.
 */
import { existsSync } from 'node:fs';
import { get } from 'node:http';
import { loadavg } from 'node:os';
import type { Device } from '../lib/index.js';
import { info } from '../lib/index.js';
import { preset } from '../lib/model/config.js';
import { Dashboard } from '../lib/monitor/dashboard.js';
import type { DashboardRow } from '../lib/monitor/results_schema.js';
import { Trainer } from '../lib/train/trainer.js';
import { corpusFor } from './train.js';

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

export async function benchDashboard(devices: Device[]): Promise<DashboardRow[]> {
  if (!devices.includes('cpu')) return [];
  const warmup = 5, phaseSteps = 10, phases = 8;
  const config = preset('tiny');
  const data = await corpusFor(config.vocabSize);
  const trainer = new Trainer({ config, data, steps: warmup + phaseSteps * phases, batch: 16, seqLen: 128, evalEvery: 0 });
  const dashboard = await Dashboard.start({ port: 0 });
  // a client draining the event stream, as a browser tab would (or a real page in chromium)
  const chromiumPath = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find(existsSync);
  const useBrowser = process.env.KILN_BENCH_BROWSER === '1' && chromiumPath !== undefined;
  let closeBrowser = async () => {};
  let renderStats = async (): Promise<{ renders: number; renderMs: number } | undefined> => undefined;
  if (useBrowser) {
    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({ executablePath: chromiumPath, args: ['--no-sandbox'] });
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    await page.goto(dashboard.url);
    closeBrowser = () => browser.close();
    renderStats = async () => (await page.evaluate('window.kilnDashboard.renderStats()')) as { renders: number; renderMs: number };
  } else {
    await new Promise<void>((resolve) => get(`${dashboard.url}events`, (res) => { res.on('data', () => {}); resolve(); }));
  }
  const run = dashboard.addRun('bench', { totalSteps: trainer.options.steps });
  const intervals: { on: number[]; off: number[] } = { on: [], off: [] };
  const byPhase: number[][] = Array.from({ length: phases }, () => []);
  const publishMs: number[] = [];
  const stepMs: number[] = [];
  let last = performance.now();
  const load = [loadavg()[0]];
  await trainer.run((m) => {
    const now = performance.now();
    const phase = m.step <= warmup ? undefined : Math.floor((m.step - warmup - 1) / phaseSteps) % 2 ? 'on' : 'off';
    // the interval ending at this step belongs to the phase this step ran in
    if (phase && m.step > warmup + 1) {
      intervals[phase].push(now - last);
      byPhase[Math.floor((m.step - warmup - 1) / phaseSteps)].push(now - last);
    }
    if (phase === 'on') {
      const t = performance.now();
      dashboard.addStep(run, m, Date.now());
      publishMs.push(performance.now() - t);
      stepMs.push(m.stepMs);
    }
    last = performance.now();
  });
  load.push(loadavg()[0]);
  trainer.close();
  const drawn = await renderStats();
  await closeBrowser();
  await dashboard.close();
  const off = median(intervals.off);
  const on = median(intervals.on);
  const row: DashboardRow = {
    device: 'cpu', preset: 'tiny', batch: 16, seqLen: 128, threads: info().cpuThreads, warmup, phaseSteps, phases,
    stepsWithout: intervals.off.length, stepsWith: intervals.on.length,
    publishUsMedian: median(publishMs) * 1e3, publishUsMax: Math.max(...publishMs) * 1e3, stepMsMedian: median(stepMs),
    publishShare: median(publishMs) / median(stepMs),
    client: useBrowser ? 'chromium page drawing every step' : 'SSE client draining the stream',
    intervalMsWithout: off, intervalMsWith: on, endToEndOverhead: on / off - 1, loadAverage1m: load,
    // phases alternate without, with, without, ...: the spread of the 'without' medians is the noise floor
    phaseMedianMs: byPhase.map((p) => (p.length ? median(p) : null)),
    // the page's main-thread drawing time over the wall time of the steps it drew (the browser shares the cores)
    pageRenders: drawn?.renders, pageRenderMs: drawn?.renderMs,
    pageRenderShare: drawn ? drawn.renderMs / intervals.on.reduce((a, b) => a + b, 0) : undefined,
  };
  console.log(
    `dashboard on tiny (cpu, ${row.threads} threads; ${row.client}): publishing a step takes ${row.publishUsMedian.toFixed(0)} µs median (max ${row.publishUsMax.toFixed(0)} µs) ` +
    `= ${(100 * row.publishShare).toFixed(3)}% of a ${row.stepMsMedian.toFixed(1)} ms step; wall time between steps ${off.toFixed(1)} ms without, ${on.toFixed(1)} ms with ` +
    `(${(100 * row.endToEndOverhead).toFixed(1)}%, load average ${load.map((l) => l.toFixed(1)).join(' -> ')})` +
    (drawn ? `; the page drew ${drawn.renders} times, ${drawn.renderMs.toFixed(0)} ms of main-thread time = ${(100 * row.pageRenderShare!).toFixed(2)}% of the steps' wall time` : ''),
  );
  return [row];
}
