/**
 * `kiln report`: one self-contained HTML file (inline CSS, inline SVG charts, a few lines of inline
 * script for sorting; no network, opens from disk) from bench/results JSON of any number of
 * machines: the runs, training next to its peer, kernel rooflines under each device's roofs, the
 * normalized comparison (each figure / peak FLOP/s and / peak bandwidth) and serving curves.
 *
 * Every number printed is a number from the JSON (cells carry it exactly in data-value) or a
 * ratio of two of them, with its unit; a figure a run lacks is a gap (—), never a zero.
 *
 * Shapes read: bench/harness.ts ResultFile { benchmark, date, commit, kiln: KilnInfo, results[] }.
 *   train rows: device, preset, batch, seqLen, p50Ms, p99Ms, tokensPerSecond, forwardMs, backwardMs,
 *     optimizerMs, communicationMs?, gflops, mfu?, peakMemoryBytes, peer?: { name, tokensPerSecond,
 *     p50Ms, mfu?, peakMemoryBytes? } | { error }, skipped?, error?
 *   kernel rows (matmul, attention, newton-schulz, ...): device, dtype, name, flops, medianMs, tflops,
 *     bytes? (else M, N, K give the GEMM's bytes), peer?, peerTflops?
 *   memory rows: device, op, bytes, achievedGBs (the measured bandwidth roof)
 *   serve rows: concurrency? / requestRate?, outputTokensPerSecond, requestsPerSecond, ttftP50Ms ...
 *     (or nested ttft: { p50Ms | p50 }, ttftMs: { p50, p99 }), tpot*, itl*, kvUsage, prefixCacheHitRate,
 *     system?, peer?: {...}; or `kiln bench serve`'s { drivers: [{ driver, scenarios: [...], bandwidth? }] }
 *   dist rows (bench/dist.ts): { benchmark: 'allreduce-loopback', worldSize, bytes, repeats?, rounds?, kiln: { medianMs,
 *     algBandwidthGBs, busBandwidthGBs, roundMedianMs? }, gloo?: {...}, ratioOfGloo?, loadAverage | loadAverages[], note? };
 *     { benchmark: 'scaling-tiny', batchPerRank, seqLen, steps, rounds?, one, two, twoWithoutDistributedMuon? (each an
 *     object, or one per round), scalingEfficiency, scalingEfficiencyWithoutDistributedMuon? }
 *   dist-wan rows (bench/dist_wan.ts): runs { name, steps, tokens, tokensPerSecond, medianStepMs, commExposedPerStepMs,
 *     commBytesPerStep, commBytesPerToken, valLoss, loadAverage, innerSteps?, quantBits? }, { name: 'link relay counters',
 *     counters: { aToB, bToA } }, and the verdict { note, rate, delayMs?, queueMs?, dilocoPerRankTokensPerSecondOfLocal?,
 *     dilocoValLossVsSync? }
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { describe, fail } from '../errors.js';
import { datasheetPeak } from '../info.js';
import { atomicWriteFile } from '../io/atomic.js';
import { type BarRow, type ChartSeries, PALETTE, type Roof, escapeXml, lineChart, stackedBars } from './svg.js';

type Row = Record<string, unknown>;

export interface LoadedResult {
  file: string;
  benchmark: string;
  date?: string;
  commit?: string;
  kiln?: {
    platform?: string; cpuThreads?: number; cpuIsa?: string; cudaDriverVersion?: string; cudaToolkit?: string;
    devices?: { device: string; name: string; peak?: { name: string; bf16Tflops: number; fp32Tflops: number; memoryBandwidthGBs: number } }[];
  };
  results: Row[];
}

/** Reads result files (directories: their *.json); unreadable or foreign files are skipped with a reason. */
export function loadResults(paths: string[]): { results: LoadedResult[]; skipped: { file: string; reason: string }[] } {
  const files: string[] = [];
  for (const p of paths) {
    let st;
    try {
      st = statSync(p);
    } catch {
      fail('ERR_ARG', `no such result file or directory: ${p}`);
    }
    if (st.isDirectory()) files.push(...readdirSync(p).filter((f) => f.endsWith('.json')).sort().map((f) => join(p, f)));
    else files.push(p);
  }
  const results: LoadedResult[] = [];
  const skipped: { file: string; reason: string }[] = [];
  for (const file of files) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(file, 'utf8'));
    } catch (e) {
      skipped.push({ file, reason: `not JSON (${(e as Error).message})` });
      continue;
    }
    const r = parsed as Partial<LoadedResult>;
    if (typeof r !== 'object' || r === null || typeof r.benchmark !== 'string' || !Array.isArray(r.results)) {
      skipped.push({ file, reason: 'not a kiln benchmark result (needs "benchmark" and "results")' });
      continue;
    }
    results.push({
      file, benchmark: r.benchmark, date: typeof r.date === 'string' ? r.date : undefined, commit: typeof r.commit === 'string' ? r.commit : undefined,
      kiln: typeof r.kiln === 'object' && r.kiln !== null ? r.kiln : undefined, results: r.results.filter((x): x is Row => typeof x === 'object' && x !== null),
    });
  }
  results.sort((a, b) => (a.date ?? '').localeCompare(b.date ?? '') || a.file.localeCompare(b.file));
  return { results, skipped };
}

/** The first finite number among dotted paths of a row. */
export function pick(row: unknown, ...paths: string[]): number | undefined {
  for (const path of paths) {
    let v: unknown = row;
    for (const key of path.split('.')) v = typeof v === 'object' && v !== null ? (v as Row)[key] : undefined;
    if (typeof v === 'number' && Number.isFinite(v)) return v;
  }
  return undefined;
}

function text(row: unknown, key: string): string | undefined {
  const v = typeof row === 'object' && row !== null ? (row as Row)[key] : undefined;
  return typeof v === 'string' ? v : typeof v === 'number' || typeof v === 'boolean' ? String(v) : undefined;
}

// ---- machines and their roofs -------------------------------------------------------------

export interface Machine {
  key: string;
  label: string;
  driver?: string;
  /** datasheet peaks (GPUs kiln knows) */
  datasheet?: { name: string; bf16Tflops: number; fp32Tflops: number; memoryBandwidthGBs: number };
}

/** The machine a row ran on: the GPU's name, or the CPU with its platform and thread count. */
export function machineOf(file: LoadedResult, device: string | undefined): Machine {
  const k = file.kiln ?? {};
  if (device && device.startsWith('cuda')) {
    const d = k.devices?.find((x) => x.device === device);
    const name = d?.name ?? device;
    return { key: `gpu|${name}`, label: name, driver: k.cudaDriverVersion, datasheet: d?.peak ?? (d ? datasheetPeak(d.name) : undefined) };
  }
  const threads = k.cpuThreads !== undefined ? `, ${k.cpuThreads} threads` : '';
  return { key: `cpu|${k.platform ?? '?'}|${k.cpuThreads ?? '?'}`, label: `CPU (${k.platform ?? 'unknown platform'}${threads})`, driver: undefined };
}

/** Roofs per machine: datasheet where known, else the best figures measured on it (said so). */
interface Roofs {
  computeTflops?: { value: number; source: string };
  bandwidthGBs?: { value: number; source: string };
  fp32Tflops?: number;
  measuredBandwidthGBs?: number;
}

const ELEMENT_BYTES: Record<string, number> = { f64: 8, f32: 4, tf32: 4, bf16: 2, f16: 2, fp16: 2, fp8: 1, i8: 1 };

interface KernelPoint {
  file: LoadedResult;
  row: Row;
  machine: Machine;
  family: string;
  name: string;
  dtype?: string;
  flops: number;
  bytes?: number;
  medianMs?: number;
  tflops?: number;
  peer?: string;
  peerTflops?: number;
}

function kernelPoints(results: LoadedResult[]): KernelPoint[] {
  const out: KernelPoint[] = [];
  for (const f of results) {
    if (f.benchmark === 'train' || f.benchmark === 'memory' || f.benchmark === 'serve') continue;
    for (const row of f.results) {
      const flops = pick(row, 'flops');
      if (flops === undefined) continue;
      const dtype = text(row, 'dtype');
      let bytes = pick(row, 'bytes');
      const M = pick(row, 'M'), N = pick(row, 'N'), K = pick(row, 'K');
      if (bytes === undefined && M !== undefined && N !== undefined && K !== undefined && dtype && ELEMENT_BYTES[dtype]) {
        bytes = (M * K + K * N + M * N) * ELEMENT_BYTES[dtype]; // read A and B, write C once
      }
      out.push({
        file: f, row, machine: machineOf(f, text(row, 'device')), family: text(row, 'kernel') ?? text(row, 'op') ?? f.benchmark,
        name: text(row, 'name') ?? f.benchmark, dtype, flops, bytes, medianMs: pick(row, 'medianMs'), tflops: pick(row, 'tflops'),
        peer: text(row, 'peer'), peerTflops: pick(row, 'peerTflops'),
      });
    }
  }
  return out;
}

function roofsByMachine(results: LoadedResult[], kernels: KernelPoint[]): Map<string, Roofs> {
  const roofs = new Map<string, Roofs>();
  const get = (m: Machine) => {
    let r = roofs.get(m.key);
    if (!r) {
      r = {};
      if (m.datasheet) {
        r.computeTflops = { value: m.datasheet.bf16Tflops, source: `${m.datasheet.name} datasheet, bf16 dense` };
        r.bandwidthGBs = { value: m.datasheet.memoryBandwidthGBs, source: `${m.datasheet.name} datasheet` };
        r.fp32Tflops = m.datasheet.fp32Tflops;
      }
      roofs.set(m.key, r);
    }
    return r;
  };
  for (const f of results) {
    for (const row of f.results) {
      const m = machineOf(f, text(row, 'device'));
      get(m);
      if (f.benchmark === 'memory') {
        const gbs = pick(row, 'achievedGBs');
        const r = get(m);
        if (gbs !== undefined && gbs > (r.measuredBandwidthGBs ?? 0)) r.measuredBandwidthGBs = gbs;
      }
    }
  }
  for (const [key, r] of roofs) {
    if (!r.bandwidthGBs && r.measuredBandwidthGBs !== undefined) r.bandwidthGBs = { value: r.measuredBandwidthGBs, source: 'measured: best memory-benchmark bandwidth' };
    if (!r.computeTflops) {
      const best = Math.max(...kernels.filter((k) => k.machine.key === key).flatMap((k) => [k.tflops ?? 0, k.peerTflops ?? 0]), 0);
      if (best > 0) r.computeTflops = { value: best, source: 'measured: best kernel result (no datasheet)' };
    }
  }
  return roofs;
}

// ---- cells --------------------------------------------------------------------------------

function fmt(v: number): string {
  const a = Math.abs(v);
  if (a >= 1e5) return Math.round(v).toLocaleString('en-US');
  if (a >= 100) return v.toFixed(1).replace(/\.0$/, '');
  return String(+v.toPrecision(4));
}

/** A numeric cell: the exact value in data-value, shown with its unit; a gap when absent. */
function cell(value: number | undefined, unit: string, options: { scale?: number; field?: string; cls?: string; signed?: boolean } = {}): string {
  const field = options.field ? ` data-field="${escapeXml(options.field)}"` : '';
  if (value === undefined || !Number.isFinite(value)) return `<td class="gap"${field} data-value="">—</td>`;
  const shown = value * (options.scale ?? 1);
  const sign = options.signed && shown > 0 ? '+' : '';
  return `<td class="num${options.cls ? ` ${options.cls}` : ''}"${field} data-value="${value}" data-scale="${options.scale ?? 1}">${sign}${fmt(shown)}${unit ? ` ${escapeXml(unit)}` : ''}</td>`;
}

function textCell(value: string | undefined, field?: string): string {
  const f = field ? ` data-field="${field}"` : '';
  return value === undefined || value === '' ? `<td class="gap"${f}>—</td>` : `<td${f}>${escapeXml(value)}</td>`;
}

function ratio(a: number | undefined, b: number | undefined): number | undefined {
  return a !== undefined && b !== undefined && b !== 0 ? a / b : undefined;
}

function table(id: string, head: string[], rows: string[], caption?: string): string {
  return `<table id="${id}" class="sortable">${caption ? `<caption>${caption}</caption>` : ''}<thead><tr>${head.map((h) => `<th>${h}</th>`).join('')}</tr></thead><tbody>${rows.join('')}</tbody></table>`;
}

const shortCommit = (c?: string) => (c ? c.slice(0, 12) : undefined);
const day = (d?: string) => (d ? d.slice(0, 19).replace('T', ' ') : undefined);
const minute = (d?: string) => day(d)?.slice(0, 16);

// ---- sections -----------------------------------------------------------------------------

function runsSection(results: LoadedResult[]): string {
  const rows = results.map((f) => {
    const machines = [...new Map(f.results.map((r) => { const m = machineOf(f, text(r, 'device')); return [m.key, m] as const; })).values()];
    const dtypes = [...new Set(f.results.map((r) => text(r, 'dtype') ?? text(r, 'computeDType')).filter((x): x is string => !!x))];
    const presets = [...new Set(f.results.map((r) => text(r, 'preset')).filter((x): x is string => !!x))];
    const driver = machines.some((m) => m.key.startsWith('gpu')) ? f.kiln?.cudaDriverVersion : f.kiln?.cudaDriverVersion ?? (f.kiln ? 'none (CPU)' : undefined);
    return `<tr data-file="${escapeXml(basename(f.file))}">${textCell(basename(f.file), 'file')}${textCell(f.benchmark, 'benchmark')}` +
      `${textCell(machines.map((m) => m.label).join('; ') || undefined, 'device')}${textCell(driver, 'driver')}${textCell(day(f.date), 'date')}` +
      `${textCell(shortCommit(f.commit), 'commit')}${textCell(dtypes.join(', ') || undefined, 'dtype')}${textCell(presets.join(', ') || undefined, 'preset')}` +
      `${cell(f.results.length, '', { field: 'rows' })}</tr>`;
  });
  return `<section id="runs"><h2>Runs</h2>${table('runs-table', ['file', 'benchmark', 'device', 'driver', 'date (UTC)', 'commit', 'dtype', 'preset', 'rows'], rows)}</section>`;
}

function trainingSection(results: LoadedResult[]): string {
  const train = results.filter((f) => f.benchmark === 'train').flatMap((f) => f.results.map((row) => ({ f, row, m: machineOf(f, text(row, 'device')) })));
  if (train.length === 0) return '';
  const rows: string[] = [];
  const bars: BarRow[] = [];
  for (const { f, row, m } of train) {
    const peer = (typeof row.peer === 'object' && row.peer !== null ? row.peer : {}) as Row;
    const tps = pick(row, 'tokensPerSecond');
    const peerTps = pick(peer, 'tokensPerSecond');
    const p50 = pick(row, 'p50Ms');
    const peerP50 = pick(peer, 'p50Ms');
    const mfu = pick(row, 'mfu');
    const peerMfu = pick(peer, 'mfu');
    const mem = pick(row, 'peakMemoryBytes');
    const peerMem = pick(peer, 'peakMemoryBytes');
    const notes = [text(row, 'skipped') && `skipped: ${text(row, 'skipped')}`, text(row, 'error') && `error: ${text(row, 'error')}`,
      text(peer, 'error') && `peer unavailable: ${text(peer, 'error')!.split('\n').filter(Boolean).pop()}`].filter(Boolean).join('; ');
    const short = m.key.startsWith('cpu') ? `CPU ${f.kiln?.cpuThreads ?? '?'}t` : m.label;
    const label = `${short} ${text(row, 'preset') ?? ''}${row.recompute === true ? ' (recompute)' : ''} ${day(f.date)?.slice(5, 16) ?? ''}`;
    rows.push(`<tr data-file="${escapeXml(basename(f.file))}">${textCell(m.label, 'device')}${textCell(day(f.date), 'date')}${textCell(text(row, 'preset'), 'preset')}` +
      `${textCell(row.batch !== undefined ? `${text(row, 'batch')}×${text(row, 'seqLen')}` : undefined, 'shape')}${textCell(text(row, 'recompute'), 'recompute')}` +
      `${cell(tps, 'tok/s', { field: 'tokensPerSecond' })}${cell(peerTps, 'tok/s', { field: 'peer.tokensPerSecond' })}${cell(ratio(tps, peerTps), '×', { field: 'ratio.tokensPerSecond', cls: 'ratio' })}` +
      `${cell(p50, 'ms', { field: 'p50Ms' })}${cell(peerP50, 'ms', { field: 'peer.p50Ms' })}${cell(ratio(p50, peerP50), '×', { field: 'ratio.p50Ms', cls: 'ratio' })}` +
      `${cell(pick(row, 'p99Ms'), 'ms', { field: 'p99Ms' })}` +
      `${cell(pick(row, 'forwardMs'), 'ms', { field: 'forwardMs' })}${cell(pick(row, 'backwardMs'), 'ms', { field: 'backwardMs' })}${cell(pick(row, 'optimizerMs'), 'ms', { field: 'optimizerMs' })}` +
      `${cell(pick(row, 'communicationMs'), 'ms', { field: 'communicationMs' })}` +
      `${cell(pick(row, 'gflops'), 'GFLOP/s', { field: 'gflops' })}` +
      `${cell(mfu, '%', { scale: 100, field: 'mfu' })}${cell(peerMfu, '%', { scale: 100, field: 'peer.mfu' })}${cell(ratio(mfu, peerMfu), '×', { field: 'ratio.mfu', cls: 'ratio' })}` +
      `${cell(mem, 'MiB', { scale: 2 ** -20, field: 'peakMemoryBytes' })}${cell(peerMem, 'MiB', { scale: 2 ** -20, field: 'peer.peakMemoryBytes' })}${cell(ratio(mem, peerMem), '×', { field: 'ratio.peakMemoryBytes', cls: 'ratio' })}` +
      `${textCell(notes || undefined, 'notes')}</tr>`);
    if (pick(row, 'forwardMs') !== undefined) {
      bars.push({
        label: label.trim(), note: p50 !== undefined ? `p50 step ${fmt(p50)} ms` : undefined,
        segments: [
          { name: 'forward', value: pick(row, 'forwardMs'), color: PALETTE[1] }, { name: 'backward', value: pick(row, 'backwardMs'), color: PALETTE[0] },
          { name: 'optimizer', value: pick(row, 'optimizerMs'), color: PALETTE[2] }, { name: 'communication', value: pick(row, 'communicationMs'), color: PALETTE[3] },
        ],
      });
    }
    if (peerP50 !== undefined) bars.push({ label: `  ${text(peer, 'name') ?? 'peer'}`, note: `p50 step ${fmt(peerP50)} ms`, segments: [{ name: 'peer step (p50, not split)', value: peerP50, color: PALETTE[8] }] });
  }
  const head = ['device', 'date (UTC)', 'preset', 'batch×seq', 'recompute', 'tokens/s', 'peer tokens/s', 'kiln ÷ peer', 'step p50', 'peer step p50', 'kiln ÷ peer',
    'step p99', 'forward', 'backward', 'optimizer', 'communication', 'achieved', 'MFU', 'peer MFU', 'kiln ÷ peer', 'peak memory', 'peer peak memory', 'kiln ÷ peer', 'notes'];
  return `<section id="training"><h2>Training</h2><p class="note">kiln next to its peer measured in the same run (PyTorch); ratios are kiln ÷ peer (tokens/s: higher is better for kiln; step time and memory: lower). Forward / backward / optimizer are mean device times per step; step p50 is wall time.</p>` +
    `<div class="scroll">${table('training-table', head, rows)}</div>` +
    (bars.length ? `<figure>${stackedBars('Step latency split (mean device time per step)', 'ms', bars)}</figure>` : '') + '</section>';
}

// ---- data parallelism ---------------------------------------------------------------------

/**
 * The issue's targets (benchmarks, not tests). The verdict beside each figure is worked out here
 * from the figure in the JSON; a missing figure has no verdict.
 */
export const DIST_TARGETS = {
  /** loopback all-reduce: kiln's bandwidth at least 80% of the Gloo driver's on the same buffers */
  allReduceOfGloo: 0.8,
  /** two 1-thread ranks against one: scaling efficiency at least 90% */
  scalingEfficiency: 0.9,
  /** DiLoCo over the emulated link: per-rank tokens/s at least 95% of one local rank's */
  dilocoTokensOfLocal: 0.95,
  /** DiLoCo's final validation loss at most 2% above synchronous training's at equal tokens */
  dilocoValLossVsSync: 0.02,
} as const;

/** met / missed for a figure against a bound ('min': at least, 'max': at most); a gap without the figure. */
function verdictCell(value: number | undefined, bound: number, kind: 'min' | 'max', field: string): string {
  if (value === undefined || !Number.isFinite(value)) return `<td class="gap" data-field="${field}" data-value="">—</td>`;
  const met = kind === 'min' ? value >= bound : value <= bound;
  return `<td class="verdict ${met ? 'met' : 'missed'}" data-field="${field}" data-value="${met ? 1 : 0}" data-bound="${bound}">${met ? 'met' : 'missed'}</td>`;
}

/** The benchmark's own median (bench/harness.ts: the upper middle value). */
function median(xs: number[]): number | undefined {
  if (xs.length === 0) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** A figure of one run or of one run per round (newer files): the value, or the median over rounds, with the round values. */
function roundsFigure(v: unknown, path: string): { value?: number; rounds: number[] } {
  if (Array.isArray(v)) {
    const rounds = v.map((x) => pick(x, path)).filter((x): x is number => x !== undefined);
    return { value: median(rounds), rounds };
  }
  const value = pick(v, path);
  return { value, rounds: value !== undefined ? [value] : [] };
}

/** A numeric cell for a figure over rounds: the median shown, the round values in the tooltip. */
function roundsCell(f: { value?: number; rounds: number[] }, unit: string, field: string, options: { scale?: number } = {}): string {
  const c = cell(f.value, unit, { ...options, field });
  return f.rounds.length > 1 ? c.replace('<td ', `<td title="median of ${f.rounds.length} rounds: ${f.rounds.map((x) => fmt(x * (options.scale ?? 1))).join(', ')}" `) : c;
}

/** The load averages a row recorded (one, or one per round). */
function loadAverages(row: Row): string | undefined {
  const list: unknown[] = Array.isArray(row.loadAverages) ? row.loadAverages : [row.loadAverage];
  const nums = list.filter((x): x is number => typeof x === 'number' && Number.isFinite(x));
  return nums.length ? nums.map((x) => x.toFixed(2)).join(' / ') : undefined;
}

/** file, date, commit and load average: the first cells of every data-parallel row. */
function provenance(f: LoadedResult, load: string | undefined): string {
  return `${textCell(basename(f.file), 'file')}${textCell(day(f.date), 'date')}${textCell(shortCommit(f.commit), 'commit')}${textCell(load, 'loadAverage')}`;
}

function distSection(results: LoadedResult[]): string {
  const dist = results.filter((f) => f.benchmark === 'dist');
  const wan = results.filter((f) => f.benchmark === 'dist-wan');
  if (dist.length === 0 && wan.length === 0) return '';
  const T = DIST_TARGETS;
  const pctOf = (x: number) => `${+(100 * x).toPrecision(3)}%`;
  const parts: string[] = [];

  // loopback all-reduce: kiln against the Gloo driver
  const ar: string[] = [];
  for (const f of dist) {
    for (const row of f.results.filter((r) => text(r, 'benchmark') === 'allreduce-loopback')) {
      const k = (row.kiln ?? {}) as Row;
      const g = (row.gloo ?? undefined) as Row | undefined;
      const ofGloo = pick(row, 'ratioOfGloo') ?? ratio(pick(g, 'medianMs'), pick(k, 'medianMs'));
      const kr = Array.isArray(k.roundMedianMs) ? (k.roundMedianMs as unknown[]).filter((x): x is number => typeof x === 'number') : [];
      const gr = Array.isArray(g?.roundMedianMs) ? (g!.roundMedianMs as unknown[]).filter((x): x is number => typeof x === 'number') : [];
      const repeats = pick(row, 'repeats');
      const rounds = pick(row, 'rounds');
      ar.push(`<tr data-file="${escapeXml(basename(f.file))}">${provenance(f, loadAverages(row))}${cell(pick(row, 'worldSize'), '', { field: 'worldSize' })}` +
        `${cell(pick(row, 'bytes'), 'MiB', { scale: 2 ** -20, field: 'bytes' })}` +
        `${textCell(rounds !== undefined || repeats !== undefined ? `${rounds ?? 1} × ${repeats ?? '?'}` : undefined, 'rounds')}` +
        `${roundsCell({ value: pick(k, 'medianMs'), rounds: kr }, 'ms', 'kiln.medianMs')}${cell(pick(k, 'algBandwidthGBs'), 'GB/s', { field: 'kiln.algBandwidthGBs' })}${cell(pick(k, 'busBandwidthGBs'), 'GB/s', { field: 'kiln.busBandwidthGBs' })}` +
        `${roundsCell({ value: pick(g, 'medianMs'), rounds: gr }, 'ms', 'gloo.medianMs')}${cell(pick(g, 'algBandwidthGBs'), 'GB/s', { field: 'gloo.algBandwidthGBs' })}${cell(pick(g, 'busBandwidthGBs'), 'GB/s', { field: 'gloo.busBandwidthGBs' })}` +
        `${cell(ofGloo, '%', { scale: 100, field: 'ratioOfGloo', cls: 'ratio' })}${verdictCell(ofGloo, T.allReduceOfGloo, 'min', 'target.ratioOfGloo')}` +
        `${textCell(text(row, 'note'), 'notes')}</tr>`);
    }
  }
  if (ar.length) {
    parts.push(`<h3>Loopback all-reduce: kiln and the Gloo driver</h3><div class="scroll">${table('dist-allreduce-table',
      ['file', 'date (UTC)', 'commit', 'load average', 'ranks', 'buffer', 'rounds × repeats', 'kiln median', 'kiln algbw', 'kiln busbw', 'Gloo median', 'Gloo algbw', 'Gloo busbw', 'kiln ÷ Gloo', `target ≥ ${pctOf(T.allReduceOfGloo)}`, 'notes'], ar)}</div>`);
  }

  // scaling efficiency: two ranks against one
  const sc: string[] = [];
  for (const f of dist) {
    for (const row of f.results.filter((r) => pick(r, 'scalingEfficiency') !== undefined || /^scaling/.test(text(r, 'benchmark') ?? ''))) {
      const eff = pick(row, 'scalingEfficiency');
      const plainEff = pick(row, 'scalingEfficiencyWithoutDistributedMuon');
      const loads = [row.one, row.two, row.twoWithoutDistributedMuon].flatMap((x) => (Array.isArray(x) ? x : x !== undefined ? [x] : []))
        .map((x) => pick(x, 'loadAverageBefore')).filter((x): x is number => x !== undefined);
      const load = loads.length ? `${Math.min(...loads).toFixed(2)}–${Math.max(...loads).toFixed(2)}` : loadAverages(row);
      const preset = /^scaling-(.+)$/.exec(text(row, 'benchmark') ?? '')?.[1] ?? text(row, 'preset');
      const batch = pick(row, 'batchPerRank');
      sc.push(`<tr data-file="${escapeXml(basename(f.file))}">${provenance(f, load)}${textCell(preset, 'preset')}` +
        `${textCell(batch !== undefined ? `${batch}×${pick(row, 'seqLen') ?? '?'}` : undefined, 'shape')}${cell(pick(row, 'steps'), '', { field: 'steps' })}${cell(pick(row, 'rounds'), '', { field: 'rounds' })}` +
        `${roundsCell(roundsFigure(row.one, 'tokensPerSecond'), 'tok/s', 'one.tokensPerSecond')}${roundsCell(roundsFigure(row.two, 'tokensPerSecond'), 'tok/s', 'two.tokensPerSecond')}` +
        `${roundsCell(roundsFigure(row.two, 'stepMs'), 'ms', 'two.stepMs')}${roundsCell(roundsFigure(row.two, 'commMs'), 'ms', 'two.commMs')}${roundsCell(roundsFigure(row.two, 'commExposedMs'), 'ms', 'two.commExposedMs')}` +
        `${roundsCell(roundsFigure(row.two, 'commBytes'), 'B', 'two.commBytes')}` +
        `${cell(eff, '%', { scale: 100, field: 'scalingEfficiency', cls: 'ratio' })}${verdictCell(eff, T.scalingEfficiency, 'min', 'target.scalingEfficiency')}` +
        `${roundsCell(roundsFigure(row.twoWithoutDistributedMuon, 'tokensPerSecond'), 'tok/s', 'twoWithoutDistributedMuon.tokensPerSecond')}` +
        `${cell(plainEff, '%', { scale: 100, field: 'scalingEfficiencyWithoutDistributedMuon', cls: 'ratio' })}</tr>`);
    }
  }
  if (sc.length) {
    parts.push(`<h3>Scaling efficiency: two 1-thread ranks against one</h3><div class="scroll">${table('dist-scaling-table',
      ['file', 'date (UTC)', 'commit', 'load average', 'preset', 'batch×seq per rank', 'steps', 'rounds', '1 rank', '2 ranks', '2 ranks: step', 'communication', 'exposed', 'bytes sent',
        'efficiency', `target ≥ ${pctOf(T.scalingEfficiency)}`, '2 ranks, no distributed Muon', 'efficiency, no distributed Muon'], sc)}</div>`);
  }

  // the emulated WAN link: local, synchronous and DiLoCo runs
  const wr: string[] = [];
  const links: string[] = [];
  for (const f of wan) {
    const verdict = f.results.find((r) => typeof r.note === 'string' || typeof r.rate === 'string') ?? {};
    const runs = f.results.filter((r) => pick(r, 'tokensPerSecond') !== undefined);
    const sync = runs.find((r) => (text(r, 'name') ?? '').startsWith('sync'));
    const delay = pick(verdict, 'delayMs');
    const queue = pick(verdict, 'queueMs');
    const link = [text(verdict, 'rate'), delay !== undefined ? `${fmt(delay)} ms one-way` : undefined, queue !== undefined ? `${fmt(queue)} ms buffer` : undefined].filter(Boolean).join(', ');
    for (const row of runs) {
      const name = text(row, 'name') ?? '';
      const diloco = name.startsWith('diloco');
      const ofLocal = diloco ? pick(verdict, 'dilocoPerRankTokensPerSecondOfLocal') : undefined;
      const stored = diloco ? pick(verdict, 'dilocoValLossVsSync') : undefined;
      // older files without the verdict: the same ratio from the two runs of this file
      const lossRatio = diloco && sync ? ratio(pick(row, 'valLoss'), pick(sync, 'valLoss')) : undefined;
      const vsSync = stored ?? (lossRatio !== undefined ? lossRatio - 1 : undefined);
      const bits = pick(row, 'quantBits');
      wr.push(`<tr data-file="${escapeXml(basename(f.file))}" data-run="${escapeXml(name)}">${provenance(f, loadAverages(row))}${textCell(link || undefined, 'link')}${textCell(name || undefined, 'name')}` +
        `${textCell(diloco ? `H = ${text(row, 'innerSteps') ?? '?'}, ${bits === undefined ? '?' : bits === 0 ? 'f32' : `${bits}-bit`}` : undefined, 'settings')}` +
        `${cell(pick(row, 'steps'), '', { field: 'steps' })}${cell(pick(row, 'tokens'), '', { field: 'tokens' })}${cell(pick(row, 'tokensPerSecond'), 'tok/s', { field: 'tokensPerSecond' })}` +
        `${cell(pick(row, 'medianStepMs'), 'ms', { field: 'medianStepMs' })}${cell(pick(row, 'commExposedPerStepMs'), 'ms', { field: 'commExposedPerStepMs' })}` +
        `${cell(pick(row, 'commBytesPerStep'), 'B', { field: 'commBytesPerStep' })}${cell(pick(row, 'commBytesPerToken'), 'B', { field: 'commBytesPerToken' })}` +
        `${cell(pick(row, 'valLoss'), '', { field: 'valLoss' })}` +
        `${cell(ofLocal, '%', { scale: 100, field: 'dilocoPerRankTokensPerSecondOfLocal', cls: 'ratio' })}${diloco ? verdictCell(ofLocal, T.dilocoTokensOfLocal, 'min', 'target.dilocoTokensOfLocal') : '<td class="na" data-field="target.dilocoTokensOfLocal" data-value="">n/a</td>'}` +
        `${cell(vsSync, '%', { scale: 100, field: 'dilocoValLossVsSync', cls: 'ratio', signed: true })}${diloco ? verdictCell(vsSync, T.dilocoValLossVsSync, 'max', 'target.dilocoValLossVsSync') : '<td class="na" data-field="target.dilocoValLossVsSync" data-value="">n/a</td>'}</tr>`);
    }
    const counters = f.results.find((r) => r.counters !== undefined)?.counters;
    const runLoads = runs.map((r) => pick(r, 'loadAverage')).filter((x): x is number => x !== undefined).map((x) => x.toFixed(2)).join(' / ') || undefined;
    const directions: [string, unknown][] = typeof counters === 'object' && counters !== null ? Object.entries(counters as Row) : [];
    for (const [direction, c] of directions) {
      links.push(`<tr data-file="${escapeXml(basename(f.file))}">${provenance(f, runLoads)}${textCell(link || undefined, 'link')}${textCell(direction === 'aToB' ? 'rank 0 → rank 1' : direction === 'bToA' ? 'rank 1 → rank 0' : direction, 'direction')}` +
        `${cell(pick(c, 'packets'), '', { field: 'packets' })}${cell(pick(c, 'bytes'), 'MiB', { scale: 2 ** -20, field: 'bytes' })}${cell(pick(c, 'dropped'), '', { field: 'dropped' })}` +
        `${cell(pick(c, 'droppedBytes'), 'MiB', { scale: 2 ** -20, field: 'droppedBytes' })}${cell(pick(c, 'writeErrors'), '', { field: 'writeErrors' })}</tr>`);
    }
    if (typeof counters === 'string') links.push(`<tr data-file="${escapeXml(basename(f.file))}">${provenance(f, runLoads)}${textCell(link || undefined, 'link')}<td colspan="6">${escapeXml(counters)}</td></tr>`);
  }
  if (wr.length) {
    const notes = [...new Set(wan.map((f) => text(f.results.find((r) => typeof r.note === 'string'), 'note')).filter((x): x is string => !!x))];
    parts.push(`<h3>Emulated WAN link: one rank alone, synchronous, DiLoCo</h3>${notes.map((n) => `<p class="note">${escapeXml(n)}</p>`).join('')}<div class="scroll">${table('dist-wan-table',
      ['file', 'date (UTC)', 'commit', 'load average', 'link', 'run', 'DiLoCo', 'steps', 'tokens', 'tokens/s', 'step p50', 'exposed comm / step', 'bytes / step', 'bytes / token', 'val loss',
        'per-rank tok/s ÷ local', `target ≥ ${pctOf(T.dilocoTokensOfLocal)}`, 'val loss vs sync', `target ≤ +${pctOf(T.dilocoValLossVsSync)}`], wr)}</div>`);
  }
  if (links.length) {
    parts.push(`<h3>The link relay's counters</h3><div class="scroll">${table('dist-link-table',
      ['file', 'date (UTC)', 'commit', 'load average', 'link', 'direction', 'packets', 'bytes', 'dropped', 'dropped bytes', 'write errors'], links)}</div>`);
  }
  if (parts.length === 0) return '';
  return `<section id="data-parallel"><h2>Data parallel</h2><p class="note">bench/dist.ts and bench/dist_wan.ts on this machine's shared cores (the load average beside each row says how busy it was). ` +
    `Bandwidths as nccl-tests define them (algbw: buffer bytes ÷ time; busbw: algbw · 2(n−1)/n for an all-reduce). Scaling efficiency = tokens/s of two ranks ÷ (2 × one rank's). ` +
    `Figures over several rounds are medians of the round medians (the rounds in each cell's tooltip). Targets are the issue's; met or missed is read from the figure beside it.</p>${parts.join('')}</section>`;
}

function kernelsSection(kernels: KernelPoint[], roofs: Map<string, Roofs>): string {
  if (kernels.length === 0) return '';
  const machines = [...new Map(kernels.map((k) => [k.machine.key, k.machine])).values()];
  const charts: string[] = [];
  for (const m of machines) {
    const r = roofs.get(m.key) ?? {};
    const mine = kernels.filter((k) => k.machine.key === m.key && k.bytes !== undefined);
    const families = [...new Set(mine.map((k) => k.family))];
    const series: ChartSeries[] = [];
    families.forEach((family, i) => {
      const ks = mine.filter((k) => k.family === family);
      series.push({ name: `kiln ${family}`, color: PALETTE[i % PALETTE.length], marker: 'circle',
        points: ks.filter((k) => k.tflops !== undefined).map((k) => ({ x: k.flops / k.bytes!, y: k.tflops! * 1e12, label: `${k.name} ${k.dtype ?? ''}: ${fmt(k.tflops!)} TFLOP/s at ${fmt(k.flops / k.bytes!)} FLOP/B` })) });
      const peers = ks.filter((k) => k.peerTflops !== undefined);
      if (peers.length) {
        series.push({ name: `${peers[0].peer ?? 'peer'} ${family}`, color: PALETTE[i % PALETTE.length], marker: 'square',
          points: peers.map((k) => ({ x: k.flops / k.bytes!, y: k.peerTflops! * 1e12, label: `${k.name}: ${fmt(k.peerTflops!)} TFLOP/s` })) });
      }
    });
    const roofLines: Roof[] = [];
    if (r.computeTflops && r.bandwidthGBs) roofLines.push({ name: `roof: ${fmt(r.computeTflops.value)} TFLOP/s, ${fmt(r.bandwidthGBs.value)} GB/s${m.datasheet ? ' (datasheet)' : ' (measured)'}`, color: '#212529', compute: r.computeTflops.value * 1e12, bandwidth: r.bandwidthGBs.value * 1e9 });
    if (r.fp32Tflops && r.bandwidthGBs) roofLines.push({ name: `fp32 roof: ${fmt(r.fp32Tflops)} TFLOP/s (datasheet)`, color: '#868e96', compute: r.fp32Tflops * 1e12, bandwidth: r.bandwidthGBs.value * 1e9, dash: '5 4' });
    if (r.measuredBandwidthGBs !== undefined && r.bandwidthGBs?.source.startsWith(m.datasheet?.name ?? '\u0000')) {
      roofLines.push({ name: `measured bandwidth ${fmt(r.measuredBandwidthGBs)} GB/s`, color: '#adb5bd', bandwidth: r.measuredBandwidthGBs * 1e9, compute: r.computeTflops?.value !== undefined ? r.computeTflops.value * 1e12 : undefined, dash: '2 3' });
    }
    charts.push(`<figure data-machine="${escapeXml(m.label)}">${lineChart({
      title: `Roofline: ${m.label}`, xLabel: 'arithmetic intensity (FLOP/byte)', yLabel: 'achieved FLOP/s', xLog: true, yLog: true, series, roofs: roofLines, width: 640,
    })}<figcaption>compute roof: ${escapeXml(r.computeTflops?.source ?? 'none')}; bandwidth roof: ${escapeXml(r.bandwidthGBs?.source ?? 'none')}</figcaption></figure>`);
  }
  const rows = kernels.map((k) => {
    const r = roofs.get(k.machine.key) ?? {};
    const gbs = k.bytes !== undefined && k.medianMs !== undefined ? k.bytes / (k.medianMs / 1e3) / 1e9 : undefined;
    const peakT = k.dtype === 'f32' && r.fp32Tflops !== undefined ? r.fp32Tflops : r.computeTflops?.value;
    return `<tr data-file="${escapeXml(basename(k.file.file))}">${textCell(k.machine.label, 'device')}${textCell(k.family, 'kernel')}${textCell(k.name, 'name')}${textCell(k.dtype, 'dtype')}` +
      `${cell(k.flops, 'FLOP', { field: 'flops' })}${cell(k.bytes, 'B', { field: 'bytes' })}${cell(ratio(k.flops, k.bytes), 'FLOP/B', { field: 'intensity' })}` +
      `${cell(k.medianMs, 'ms', { field: 'medianMs' })}${cell(k.tflops, 'TFLOP/s', { field: 'tflops' })}${textCell(k.peer, 'peer')}${cell(k.peerTflops, 'TFLOP/s', { field: 'peerTflops' })}` +
      `${cell(ratio(k.tflops, k.peerTflops), '×', { field: 'ratio.tflops', cls: 'ratio' })}${cell(ratio(k.tflops, peakT), '%', { scale: 100, field: 'fractionOfPeakFlops' })}` +
      `${cell(gbs, 'GB/s', { field: 'achievedGBs' })}${cell(ratio(gbs, r.bandwidthGBs?.value), '%', { scale: 100, field: 'fractionOfPeakBandwidth' })}</tr>`;
  });
  const head = ['device', 'kernel', 'name', 'dtype', 'FLOPs', 'bytes', 'intensity', 'median', 'kiln', 'peer', 'peer', 'kiln ÷ peer', '% of peak FLOP/s', 'bandwidth', '% of peak bandwidth'];
  return `<section id="kernels"><h2>Kernels</h2><p class="note">Each kernel at its arithmetic intensity (FLOPs ÷ bytes of its operands read once and its result written once) under the device's roofs: the datasheet's dense peak and bandwidth for GPUs kiln knows, else the best figures measured on that machine (named as such). Circles are kiln, squares its peer.</p>` +
    `<div class="figures">${charts.join('')}</div><div class="scroll">${table('kernels-table', head, rows)}</div></section>`;
}

function normalizedSection(results: LoadedResult[], kernels: KernelPoint[], roofs: Map<string, Roofs>): string {
  const rows: string[] = [];
  const add = (m: Machine, figure: string, value: number | undefined, unit: string, file: LoadedResult, kind: 'throughput' | 'flops' | 'bandwidth') => {
    const r = roofs.get(m.key) ?? {};
    const pf = r.computeTflops?.value;
    const pb = r.bandwidthGBs?.value;
    // tokens/s per peak TFLOP/s and per peak TB/s; FLOP/s and bytes/s as fractions of the matching peak
    const perFlops = kind === 'throughput' ? ratio(value, pf) : kind === 'flops' ? ratio(value, pf) : undefined;
    const perBandwidth = kind === 'throughput' ? ratio(value, pb !== undefined ? pb / 1e3 : undefined) : kind === 'bandwidth' ? ratio(value, pb) : kind === 'flops' ? ratio(value, pb !== undefined ? pb / 1e3 : undefined) : undefined;
    const unitF = kind === 'throughput' ? 'tok/s per TFLOP/s' : '%';
    const unitB = kind === 'throughput' ? 'tok/s per TB/s' : kind === 'bandwidth' ? '%' : 'FLOP/B';
    rows.push(`<tr data-file="${escapeXml(basename(file.file))}">${textCell(m.label, 'device')}${textCell(figure, 'figure')}${cell(value, unit, { field: 'value' })}` +
      `${cell(pf, 'TFLOP/s', { field: 'peakTflops' })}${textCell(r.computeTflops?.source, 'peakTflopsSource')}${cell(pb, 'GB/s', { field: 'peakGBs' })}${textCell(r.bandwidthGBs?.source, 'peakGBsSource')}` +
      `${kind === 'bandwidth' ? '<td class="na">n/a</td>' : cell(perFlops, unitF, { scale: unitF === '%' ? 100 : 1, field: 'perPeakFlops' })}` +
      `${cell(perBandwidth, unitB, { scale: unitB === '%' ? 100 : 1, field: 'perPeakBandwidth' })}</tr>`);
  };
  for (const f of results) {
    for (const row of f.results) {
      const m = machineOf(f, text(row, 'device'));
      if (f.benchmark === 'train') {
        const name = `train ${text(row, 'preset') ?? ''}${row.recompute === true ? ' (recompute)' : ''}, ${day(f.date)}`;
        add(m, `${name}: tokens/s`, pick(row, 'tokensPerSecond'), 'tok/s', f, 'throughput');
        const g = pick(row, 'gflops');
        add(m, `${name}: achieved FLOP/s`, g !== undefined ? g / 1e3 : undefined, 'TFLOP/s', f, 'flops');
      } else if (f.benchmark === 'memory') {
        add(m, `memory ${text(row, 'op') ?? ''}`, pick(row, 'achievedGBs'), 'GB/s', f, 'bandwidth');
      }
    }
    if (f.benchmark === 'serve') {
      for (const s of servePoints(f)) add(s.m, `serve ${s.system} ${s.load}: output tokens/s`, s.outputTps, 'tok/s', f, 'throughput');
    }
  }
  for (const k of kernels) add(k.machine, `${k.family} ${k.name} ${k.dtype ?? ''}`.trim(), k.tflops, 'TFLOP/s', k.file, 'flops');
  if (rows.length === 0) return '';
  const head = ['device', 'figure', 'value', 'peak FLOP/s', 'source', 'peak bandwidth', 'source', '÷ peak FLOP/s', '÷ peak bandwidth'];
  return `<section id="normalized"><h2>Normalized comparison</h2><p class="note">Each figure divided by its device's peak FLOP/s and by its peak memory bandwidth, so different cards (or this CPU) stand side by side: tokens/s per TFLOP/s and per TB/s of peak; achieved FLOP/s as a share of peak compute (MFU for training) and per byte/s of peak bandwidth; measured bandwidth as a share of peak bandwidth. GPUs use datasheet peaks (bf16 dense); a CPU has none, so its best measured figures stand in, as the source column says.</p>` +
    `<div class="scroll">${table('normalized-table', head, rows)}</div></section>`;
}

// ---- serving ------------------------------------------------------------------------------

const Q = [50, 90, 95, 99] as const;
function latency(row: unknown, metric: 'ttft' | 'tpot' | 'itl' | 'e2e', q: number): number | undefined {
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
  row: Row;
}

function serveRow(f: LoadedResult, row: Row, inherit: Row | undefined): ServePoint {
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
function servePoints(f: LoadedResult): (ServePoint & { f: LoadedResult; m: Machine; model?: string })[] {
  const points: (ServePoint & { f: LoadedResult; m: Machine; model?: string })[] = [];
  for (const row of f.results) {
    const m = machineOf(f, text(row, 'device'));
    const model = text(row, 'preset') ?? text(row, 'model') ?? text(row, 'checkpoint');
    if (Array.isArray(row.drivers)) {
      for (const d of row.drivers as Row[]) {
        if (typeof d !== 'object' || d === null || !Array.isArray(d.scenarios)) continue;
        const utilization = pick(d, 'bandwidth.utilization');
        for (const sc of d.scenarios as Row[]) {
          if (typeof sc !== 'object' || sc === null) continue;
          const p = serveRow(f, sc, undefined);
          points.push({ ...p, system: text(d, 'driver') ?? text(d, 'name') ?? 'kiln', mbu: p.mbu ?? (p.concurrency === 1 ? utilization : undefined), f, m, model });
        }
      }
      continue;
    }
    points.push({ ...serveRow(f, row, undefined), f, m, model });
    if (typeof row.peer === 'object' && row.peer !== null && !('error' in (row.peer as Row))) {
      const peer = row.peer as Row;
      points.push({ ...serveRow(f, peer, row), system: text(peer, 'name') ?? text(peer, 'system') ?? 'peer', f, m, model: text(peer, 'model') });
    }
  }
  return points;
}

function servingSection(results: LoadedResult[]): string {
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

// ---- the page -----------------------------------------------------------------------------

const STYLE = `
:root{--fg:#1d2330;--muted:#667085;--line:#e4e7ec;--accent:#d9480f}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--fg);background:#fafbfc}
header{padding:14px 24px;border-bottom:1px solid var(--line);background:#fff}h1{margin:0;font-size:20px}h1::before{content:"▲ ";color:var(--accent)}
header p{margin:4px 0 0;color:var(--muted)}main{padding:0 24px 40px}h2{font-size:17px;margin:26px 0 8px}
nav a{margin-right:14px;color:var(--accent);text-decoration:none}.note{color:var(--muted);max-width:1100px}
table{border-collapse:collapse;background:#fff;border:1px solid var(--line);font-variant-numeric:tabular-nums;margin:8px 0}
th,td{padding:4px 8px;border-bottom:1px solid var(--line);text-align:left;white-space:nowrap}th{background:#f2f4f7;cursor:pointer;user-select:none;font-weight:600}
td.num{text-align:right}td.gap,td.na{color:#98a2b3;text-align:center}td.ratio{font-weight:600}.scroll{overflow-x:auto}
td.verdict{font-weight:600;text-align:center}td.met{color:#137333;background:#e6f4ea}td.missed{color:#b3261e;background:#fce8e6}h3{font-size:15px;margin:18px 0 4px}
.figures{display:flex;flex-wrap:wrap;gap:12px}figcaption{font-size:12px;color:var(--muted);max-width:640px}figure{margin:8px 0;background:#fff;border:1px solid var(--line);border-radius:6px;padding:6px}
svg .title{font:600 13px system-ui,sans-serif;fill:var(--fg)}svg .tick{font:11px system-ui,sans-serif;fill:#475467}svg .axis{font:12px system-ui,sans-serif;fill:#344054}
svg .legend{font:11px system-ui,sans-serif;fill:#344054}svg .grid{stroke:#eef0f3}svg .frame{fill:none;stroke:#d0d5dd}svg .pt:hover{opacity:.6}
.skipped li{color:var(--muted)}`;

// sorts a table by the clicked column (numbers by their exact data-value)
const SCRIPT = `document.querySelectorAll('table.sortable th').forEach(function(th,i){th.addEventListener('click',function(){var t=th.closest('table'),b=t.tBodies[0],d=th.dataset.dir==='asc'?-1:1;th.dataset.dir=d>0?'asc':'desc';var key=function(r){var c=r.cells[i];if(!c)return'';var v=c.getAttribute('data-value');return v!==null&&v!==''?parseFloat(v):c.textContent};Array.from(b.rows).sort(function(x,y){var a=key(x),c=key(y);if(typeof a==='number'&&typeof c==='number')return d*(a-c);return d*String(a).localeCompare(String(c))}).forEach(function(r){b.appendChild(r)})})});`;

export interface ReportOptions {
  title?: string;
}

/** The report's HTML from loaded results. */
export function renderReport(results: LoadedResult[], skipped: { file: string; reason: string }[] = [], options: ReportOptions = {}): string {
  // the shape loadResults produces; anything else is a typed error rather than a TypeError deep inside
  const isObject = (v: unknown): v is Record<string, unknown> => !!v && typeof v === 'object' && !Array.isArray(v);
  if (!Array.isArray(results) || !results.every((r) => isObject(r) && typeof r.file === 'string' && typeof r.benchmark === 'string' && Array.isArray(r.results) && r.results.every(isObject)
    && (r.date === undefined || typeof r.date === 'string') && (r.commit === undefined || typeof r.commit === 'string'))) {
    fail('ERR_ARG', `renderReport needs loaded results ({ file, benchmark, date?, commit?: strings, results: rows[] }[], as loadResults returns), got ${describe(results)}`);
  }
  if (!Array.isArray(skipped) || !skipped.every((x) => isObject(x) && typeof x.file === 'string' && typeof x.reason === 'string')) {
    fail('ERR_ARG', `skipped must be { file, reason }[] (strings), got ${describe(skipped)}`);
  }
  checkReportOptions(options);
  const kernels = kernelPoints(results);
  const roofs = roofsByMachine(results, kernels);
  const sections = [runsSection(results), trainingSection(results), distSection(results), kernelsSection(kernels, roofs), normalizedSection(results, kernels, roofs), servingSection(results)].filter(Boolean);
  const nav = sections.map((s) => /<section id="([^"]+)"><h2>([^<]+)<\/h2>/.exec(s)!).map((m) => `<a href="#${m[1]}">${m[2]}</a>`).join('');
  const machines = new Set(results.flatMap((f) => f.results.map((r) => machineOf(f, text(r, 'device')).key)));
  const title = options.title ?? 'kiln benchmark report';
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">` +
    `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">` +
    `<title>${escapeXml(title)}</title><style>${STYLE}</style></head><body><header><h1>${escapeXml(title)}</h1>` +
    `<p>${results.length} result files from ${machines.size} machine${machines.size === 1 ? '' : 's'}, ${escapeXml(day(results[0]?.date) ?? '?')} to ${escapeXml(day(results.at(-1)?.date) ?? '?')} UTC</p><nav>${nav}</nav></header><main>` +
    sections.join('') +
    (skipped.length ? `<section id="skipped"><h2>Files skipped</h2><ul class="skipped">${skipped.map((s) => `<li>${escapeXml(basename(s.file))}: ${escapeXml(s.reason)}</li>`).join('')}</ul></section>` : '') +
    `</main><script>${SCRIPT}</script></body></html>\n`;
}

function checkReportOptions(options: unknown): void {
  if (!options || typeof options !== 'object' || Array.isArray(options)) fail('ERR_ARG', `report options must be an object, got ${describe(options)}`);
  const title = (options as ReportOptions).title;
  if (title !== undefined && typeof title !== 'string') fail('ERR_ARG', `the report title must be a string, got ${describe(title)}`);
}

/** Reads result files and writes the report atomically; returns what it read. */
export function writeReport(paths: string[], out: string, options: ReportOptions = {}): { path: string; files: number; skipped: { file: string; reason: string }[] } {
  if (!Array.isArray(paths) || !paths.every((p) => typeof p === 'string' && p.length > 0)) fail('ERR_ARG', `writeReport needs result file or directory paths (strings), got ${describe(paths)}`);
  if (typeof out !== 'string' || !out) fail('ERR_ARG', `writeReport needs an output path, got ${describe(out)}`);
  checkReportOptions(options);
  const { results, skipped } = loadResults(paths);
  if (results.length === 0) fail('ERR_ARG', `no benchmark result files in ${paths.join(', ')}${skipped.length ? ` (${skipped.length} skipped: ${skipped[0].reason})` : ''}`);
  const html = renderReport(results, skipped, options);
  try {
    atomicWriteFile(out, html);
  } catch (error) {
    fail('ERR_ARG', `cannot write the report to ${out}: ${(error as Error).message}`);
  }
  return { path: out, files: results.length, skipped };
}
