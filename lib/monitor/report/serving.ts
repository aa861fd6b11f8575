/** Serving: kiln and its peers, output tokens/s against latency as load rises, and the latency percentiles. */
import { basename } from 'node:path';
import { type ChartSeries, PALETTE, escapeXml, lineChart } from '../svg.js';
import { cell, fmt, minute, table, textCell } from './cells.js';
import type { FlatServeRow, ServeDriverResult, ServeRow, ServeScenario } from '../results_schema.js';
import { type Row, type Unchecked, pick, rows, text } from './fields.js';
import type { LoadedResult } from './load.js';
import { type Machine, machineOf } from './machines.js';

const Q = [50, 90, 95, 99] as const;

/** A latency percentile under any of the spellings serving benchmarks use (ttftP50Ms, ttft.p50Ms, ttftMs.p50 as bench/serve.ts writes it, ...). */
function latency(row: Row, metric: 'ttft' | 'tpot' | 'itl' | 'e2e', q: number): number | undefined {
  const cap = metric[0].toUpperCase() + metric.slice(1);
  return pick(row, `${metric}P${q}Ms`, `${metric}.p${q}Ms`, `${metric}.p${q}`, `${metric}Ms.p${q}`, `p${q}${cap}Ms`, ...(q === 50 ? [`median${cap}Ms`, `${metric}.medianMs`] : []));
}

interface ServePoint {
  system: string;
  load: string;
  loadValue?: number;
  concurrency?: number;
  rate?: number;
  outputTps?: number;
  rps?: number;
  kvUsage?: number;
  prefixHitRate?: number;
  mbu?: number;
  row: Unchecked<ServeScenario | FlatServeRow>;
}

/** A serving point of a row: a scenario of bench/serve.ts, or a flat row (`inherit`: the row a peer's figures sit in). */
function serveRow(f: LoadedResult, row: Unchecked<ServeScenario | FlatServeRow>, inherit: Unchecked<FlatServeRow> | undefined): ServePoint {
  const concurrency = pick(row, 'concurrency', 'maxConcurrency') ?? pick(inherit, 'concurrency', 'maxConcurrency');
  const rate = pick(row, 'requestRate', 'rate') ?? pick(inherit, 'requestRate', 'rate');
  const load = rate !== undefined ? `${fmt(rate)} req/s` : concurrency !== undefined ? `concurrency ${concurrency}` : (text(row, 'name') ?? text(inherit, 'name') ?? '—');
  return {
    system: text(row, 'name') && inherit ? text(row, 'name')! : text(row, 'system') ?? text(row, 'engine') ?? text(row, 'server') ?? 'kiln',
    load, loadValue: rate ?? concurrency, concurrency, rate,
    outputTps: pick(row, 'outputTokensPerSecond', 'outputThroughput', 'output.tokensPerSecond', 'tokensPerSecond'),
    rps: pick(row, 'requestsPerSecond', 'requestThroughput'), kvUsage: pick(row, 'kvUsage', 'kvUsage.mean', 'kvCacheUsage'), prefixHitRate: pick(row, 'prefixCacheHitRate'),
    mbu: pick(row, 'mbu', 'bandwidthUtilization'), row,
  };
  void f;
}

/**
 * Serving points of a result file, in either shape: flat rows (one per load level, a `peer`
 * object beside kiln's figures), or `kiln bench serve`'s nested rows ({ drivers: [{ driver,
 * scenarios: [{ concurrency | rate, outputTokensPerSecond, ttftMs: { p50, p99 }, ... }],
 * bandwidth?: { utilization } }] }, the utilization belonging to concurrency 1).
 */
export function servePoints(f: LoadedResult): (ServePoint & { f: LoadedResult; m: Machine; model?: string })[] {
  const points: (ServePoint & { f: LoadedResult; m: Machine; model?: string })[] = [];
  for (const row of rows<ServeRow | FlatServeRow>(f)) {
    const m = machineOf(f, text(row, 'device'));
    const model = text(row, 'preset') ?? text(row, 'model') ?? text(row, 'checkpoint');
    if (Array.isArray(row.drivers)) {
      for (const d of row.drivers as Unchecked<ServeDriverResult>[]) {
        if (typeof d !== 'object' || d === null || !Array.isArray(d.scenarios)) continue;
        const utilization = pick(d, 'bandwidth.utilization');
        for (const sc of d.scenarios as Unchecked<ServeScenario>[]) {
          if (typeof sc !== 'object' || sc === null) continue;
          const p = serveRow(f, sc, undefined);
          // a driver's `name`: no benchmark writes one (bench/serve.ts names it `driver`)
          points.push({ ...p, system: text(d, 'driver') ?? text(d as Row, 'name') ?? 'kiln', mbu: p.mbu ?? (p.concurrency === 1 ? utilization : undefined), f, m, model });
        }
      }
      continue;
    }
    const flat = row as Unchecked<FlatServeRow>;
    points.push({ ...serveRow(f, flat, undefined), f, m, model });
    if (typeof row.peer === 'object' && row.peer !== null && !('error' in (row.peer as Row))) {
      const peer = row.peer as Unchecked<FlatServeRow>;
      points.push({ ...serveRow(f, peer, flat), system: text(peer, 'name') ?? text(peer, 'system') ?? 'peer', f, m, model: text(peer, 'model') });
    }
  }
  return points;
}

export function servingSection(results: LoadedResult[]): string {
  const points = results.filter((x) => x.benchmark === 'serve').flatMap(servePoints);
  if (points.length === 0) return '';
  const rows = points.map((p) => `<tr data-file="${escapeXml(basename(p.f.file))}">${textCell(p.m.label, 'device')}${textCell(p.system, 'system')}${textCell(p.model, 'model')}` +
    `${cell(p.concurrency, '', { field: 'concurrency' })}${cell(p.rate, 'req/s', { field: 'requestRate' })}${cell(p.rps, 'req/s', { field: 'requestsPerSecond' })}` +
    `${cell(p.outputTps, 'tok/s', { field: 'outputTokensPerSecond' })}` +
    `${cell(latency(p.row, 'ttft', 50), 'ms', { field: 'ttftP50Ms' })}${cell(latency(p.row, 'ttft', 99), 'ms', { field: 'ttftP99Ms' })}` +
    `${cell(latency(p.row, 'tpot', 50), 'ms', { field: 'tpotP50Ms' })}${cell(latency(p.row, 'itl', 50), 'ms', { field: 'itlP50Ms' })}${cell(latency(p.row, 'itl', 99), 'ms', { field: 'itlP99Ms' })}` +
    `${cell(p.kvUsage, '%', { scale: 100, field: 'kvUsage' })}${cell(p.prefixHitRate, '%', { scale: 100, field: 'prefixCacheHitRate' })}${cell(p.mbu, '%', { scale: 100, field: 'mbu' })}</tr>`);
  const charts: string[] = [];
  for (const m of [...new Map(points.map((p) => [p.m.key, p.m])).values()]) {
    // the charts show each machine's latest serving run (the table lists them all)
    const latest = points.filter((p) => p.m.key === m.key).at(-1)!.f;
    const mine = points.filter((p) => p.m.key === m.key && p.f === latest);
    const systems = [...new Set(mine.map((p) => p.system))];
    const curves = (x: (p: ServePoint) => number | undefined, mode: 'concurrency' | 'rate'): ChartSeries[] => systems.map((s, i) => ({
      name: `${s} (${mode === 'rate' ? 'request-rate sweep' : 'concurrency'})`, color: PALETTE[i % PALETTE.length], line: true, marker: (i ? 'square' : 'circle') as ChartSeries['marker'], dash: mode === 'rate' ? '5 3' : undefined,
      points: mine.filter((p) => p.system === s && (mode === 'rate' ? p.rate !== undefined : p.rate === undefined)).sort((a, b) => (a.loadValue ?? 0) - (b.loadValue ?? 0))
        .flatMap((p) => { const xv = x(p); return xv !== undefined && p.outputTps !== undefined ? [{ x: xv, y: p.outputTps, label: `${p.load}: ${fmt(p.outputTps)} tok/s at ${fmt(xv)} ms` }] : []; }),
    })).filter((c) => c.points.length > 0);
    for (const [metric, label] of [['ttft', 'TTFT p50 (ms)'], ['itl', 'inter-token latency p50 (ms)']] as const) {
      const series = [...curves((p) => latency(p.row, metric, 50), 'concurrency'), ...curves((p) => latency(p.row, metric, 50), 'rate')];
      if (series.length) charts.push(`<figure>${lineChart({ title: `Throughput vs ${metric === 'ttft' ? 'TTFT' : 'ITL'}: ${m.label}, ${minute(latest.date) ?? ''}`, xLabel: label, yLabel: 'output tokens/s', series })}</figure>`);
    }
    for (const [metric, name] of [['ttft', 'TTFT'], ['itl', 'Inter-token latency']] as const) {
      const series: ChartSeries[] = mine.map((p, i) => ({
        name: `${p.system} ${p.load}`, color: PALETTE[(systems.indexOf(p.system) * 3 + i) % PALETTE.length], line: true, marker: (systems.indexOf(p.system) ? 'square' : 'circle') as ChartSeries['marker'],
        dash: systems.indexOf(p.system) ? '5 3' : undefined,
        points: Q.flatMap((q) => { const v = latency(p.row, metric, q); return v !== undefined ? [{ x: q, y: v, label: `p${q} ${fmt(v)} ms` }] : []; }),
      })).filter((s) => s.points.length > 0);
      if (series.length) charts.push(`<figure>${lineChart({ title: `${name} distribution: ${m.label}`, xLabel: 'percentile', yLabel: 'ms', series, xFormat: (v) => `p${v}` })}</figure>`);
    }
  }
  const head = ['device', 'system', 'model', 'concurrency', 'request rate', 'requests/s', 'output tokens/s', 'TTFT p50', 'TTFT p99', 'TPOT p50', 'ITL p50', 'ITL p99', 'KV usage', 'prefix-cache hits', 'MBU'];
  return `<section id="serving"><h2>Serving</h2><p class="note">kiln and its peers on the same prompts: output tokens/s against latency as load rises (concurrency levels solid, request-rate sweep dashed), and the latency percentiles at each load. Charts show each machine's latest serving run; the table lists every run.</p>` +
    `<div class="figures">${charts.join('')}</div><div class="scroll">${table('serving-table', head, rows)}</div></section>`;
}
