/** Data parallel: the loopback all-reduce against Gloo, scaling efficiency, the emulated WAN runs and the link relay's counters, with verdicts. */
import { basename } from 'node:path';
import { escapeXml } from '../svg.js';
import { cell, day, fmt, ratio, shortCommit, table, textCell } from './cells.js';
import type { AllReduceFigures, AllReduceRow, LinkCounters, ScalingRow, ScalingRun, WanRelayCountersRow, WanRunRow, WanVerdictRow } from '../results_schema.js';
import { type NumberPath, type Row, type Unchecked, pick, rows, text } from './fields.js';
import type { LoadedResult } from './load.js';
import type { TARGET_NAMES, Targets } from './targets.js';

type TargetName = (typeof TARGET_NAMES)[number];

/**
 * met / missed for a figure against its target ('min': at least, 'max': at most), worked out here
 * from the figure in the JSON; a gap without the figure or without a target.
 */
function verdictCell(value: number | undefined, bound: number | undefined, kind: 'min' | 'max', field: string): string {
  if (value === undefined || !Number.isFinite(value) || bound === undefined) return `<td class="gap" data-field="${field}" data-value="">—</td>`;
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
function roundsFigure(v: unknown, path: NumberPath<ScalingRun>): { value?: number; rounds: number[] } {
  if (Array.isArray(v)) {
    const rounds = v.map((x) => pick(x as Unchecked<ScalingRun>, path)).filter((x): x is number => x !== undefined);
    return { value: median(rounds), rounds };
  }
  const value = pick(v as Unchecked<ScalingRun>, path);
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

/** `fallback`: the targets for files that record none. */
export function distSection(results: LoadedResult[], fallback: Targets | undefined): string {
  const dist = results.filter((f) => f.benchmark === 'dist');
  const wan = results.filter((f) => f.benchmark === 'dist-wan');
  if (dist.length === 0 && wan.length === 0) return '';
  const pctOf = (x: number) => `${+(100 * x).toPrecision(3)}%`;
  // a row is judged against its file's own target, else the fallback's; a table's header names the targets its rows were judged against
  const judged: Record<TargetName, Set<number>> = { allReduceOfGloo: new Set(), scalingEfficiency: new Set(), dilocoTokensOfLocal: new Set(), dilocoValLossVsSync: new Set() };
  const targetOf = (f: LoadedResult, name: TargetName) => {
    const bound = f.targets?.[name] ?? fallback?.[name];
    if (bound !== undefined) judged[name].add(bound);
    return bound;
  };
  const targetHead = (name: TargetName, sign: '≥' | '≤', show = pctOf) => (judged[name].size ? `target ${sign} ${[...judged[name]].map(show).join(' / ')}` : 'target');
  const parts: string[] = [];

  // loopback all-reduce: kiln against the Gloo driver
  const ar: string[] = [];
  for (const f of dist) {
    for (const row of rows<AllReduceRow | ScalingRow>(f).filter((r) => text(r, 'benchmark') === 'allreduce-loopback') as Unchecked<AllReduceRow>[]) {
      const k = (row.kiln ?? {}) as Unchecked<AllReduceFigures>;
      const g = (row.gloo ?? undefined) as Unchecked<AllReduceFigures> | undefined;
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
        `${cell(ofGloo, '%', { scale: 100, field: 'ratioOfGloo', cls: 'ratio' })}${verdictCell(ofGloo, targetOf(f, 'allReduceOfGloo'), 'min', 'target.ratioOfGloo')}` +
        `${textCell(text(row, 'note'), 'notes')}</tr>`);
    }
  }
  if (ar.length) {
    parts.push(`<h3>Loopback all-reduce: kiln and the Gloo driver</h3><div class="scroll">${table('dist-allreduce-table',
      ['file', 'date (UTC)', 'commit', 'load average', 'ranks', 'buffer', 'rounds × repeats', 'kiln median', 'kiln algbw', 'kiln busbw', 'Gloo median', 'Gloo algbw', 'Gloo busbw', 'kiln ÷ Gloo', targetHead('allReduceOfGloo', '≥'), 'notes'], ar)}</div>`);
  }

  // scaling efficiency: two ranks against one
  const sc: string[] = [];
  for (const f of dist) {
    for (const row of rows<AllReduceRow | ScalingRow>(f).filter((r) => pick(r, 'scalingEfficiency') !== undefined || /^scaling/.test(text(r, 'benchmark') ?? '')) as Unchecked<ScalingRow>[]) {
      const eff = pick(row, 'scalingEfficiency');
      const plainEff = pick(row, 'scalingEfficiencyWithoutDistributedMuon');
      const loads = [row.one, row.two, row.twoWithoutDistributedMuon].flatMap((x) => (Array.isArray(x) ? x : x !== undefined ? [x] : []))
        .map((x) => pick(x as Unchecked<ScalingRun>, 'loadAverageBefore')).filter((x): x is number => x !== undefined);
      const load = loads.length ? `${Math.min(...loads).toFixed(2)}–${Math.max(...loads).toFixed(2)}` : loadAverages(row);
      // a preset field: no benchmark writes one (the name says it: scaling-tiny)
      const preset = /^scaling-(.+)$/.exec(text(row, 'benchmark') ?? '')?.[1] ?? text(row as Row, 'preset');
      const batch = pick(row, 'batchPerRank');
      sc.push(`<tr data-file="${escapeXml(basename(f.file))}">${provenance(f, load)}${textCell(preset, 'preset')}` +
        `${textCell(batch !== undefined ? `${batch}×${pick(row, 'seqLen') ?? '?'}` : undefined, 'shape')}${cell(pick(row, 'steps'), '', { field: 'steps' })}${cell(pick(row, 'rounds'), '', { field: 'rounds' })}` +
        `${roundsCell(roundsFigure(row.one, 'tokensPerSecond'), 'tok/s', 'one.tokensPerSecond')}${roundsCell(roundsFigure(row.two, 'tokensPerSecond'), 'tok/s', 'two.tokensPerSecond')}` +
        `${roundsCell(roundsFigure(row.two, 'stepMs'), 'ms', 'two.stepMs')}${roundsCell(roundsFigure(row.two, 'commMs'), 'ms', 'two.commMs')}${roundsCell(roundsFigure(row.two, 'commExposedMs'), 'ms', 'two.commExposedMs')}` +
        `${roundsCell(roundsFigure(row.two, 'commBytes'), 'B', 'two.commBytes')}` +
        `${cell(eff, '%', { scale: 100, field: 'scalingEfficiency', cls: 'ratio' })}${verdictCell(eff, targetOf(f, 'scalingEfficiency'), 'min', 'target.scalingEfficiency')}` +
        `${roundsCell(roundsFigure(row.twoWithoutDistributedMuon, 'tokensPerSecond'), 'tok/s', 'twoWithoutDistributedMuon.tokensPerSecond')}` +
        `${cell(plainEff, '%', { scale: 100, field: 'scalingEfficiencyWithoutDistributedMuon', cls: 'ratio' })}</tr>`);
    }
  }
  if (sc.length) {
    parts.push(`<h3>Scaling efficiency: two 1-thread ranks against one</h3><div class="scroll">${table('dist-scaling-table',
      ['file', 'date (UTC)', 'commit', 'load average', 'preset', 'batch×seq per rank', 'steps', 'rounds', '1 rank', '2 ranks', '2 ranks: step', 'communication', 'exposed', 'bytes sent',
        'efficiency', targetHead('scalingEfficiency', '≥'), '2 ranks, no distributed Muon', 'efficiency, no distributed Muon'], sc)}</div>`);
  }

  // the emulated WAN link: local, synchronous and DiLoCo runs
  const wr: string[] = [];
  const links: string[] = [];
  for (const f of wan) {
    const wanRows = rows<WanRunRow | WanRelayCountersRow | WanVerdictRow>(f);
    const verdict = (wanRows.find((r) => typeof r.note === 'string' || typeof r.rate === 'string') ?? {}) as Unchecked<WanVerdictRow>;
    const runs = wanRows.filter((r) => pick(r, 'tokensPerSecond') !== undefined) as Unchecked<WanRunRow>[];
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
      const tokensTarget = targetOf(f, 'dilocoTokensOfLocal');
      const lossTarget = targetOf(f, 'dilocoValLossVsSync');
      wr.push(`<tr data-file="${escapeXml(basename(f.file))}" data-run="${escapeXml(name)}">${provenance(f, loadAverages(row))}${textCell(link || undefined, 'link')}${textCell(name || undefined, 'name')}` +
        `${textCell(diloco ? `H = ${text(row, 'innerSteps') ?? '?'}, ${bits === undefined ? '?' : bits === 0 ? 'f32' : `${bits}-bit`}` : undefined, 'settings')}` +
        `${cell(pick(row, 'steps'), '', { field: 'steps' })}${cell(pick(row, 'tokens'), '', { field: 'tokens' })}${cell(pick(row, 'tokensPerSecond'), 'tok/s', { field: 'tokensPerSecond' })}` +
        `${cell(pick(row, 'medianStepMs'), 'ms', { field: 'medianStepMs' })}${cell(pick(row, 'commExposedPerStepMs'), 'ms', { field: 'commExposedPerStepMs' })}` +
        `${cell(pick(row, 'commBytesPerStep'), 'B', { field: 'commBytesPerStep' })}${cell(pick(row, 'commBytesPerToken'), 'B', { field: 'commBytesPerToken' })}` +
        `${cell(pick(row, 'valLoss'), '', { field: 'valLoss' })}` +
        `${cell(ofLocal, '%', { scale: 100, field: 'dilocoPerRankTokensPerSecondOfLocal', cls: 'ratio' })}${diloco ? verdictCell(ofLocal, tokensTarget, 'min', 'target.dilocoTokensOfLocal') : '<td class="na" data-field="target.dilocoTokensOfLocal" data-value="">n/a</td>'}` +
        `${cell(vsSync, '%', { scale: 100, field: 'dilocoValLossVsSync', cls: 'ratio', signed: true })}${diloco ? verdictCell(vsSync, lossTarget, 'max', 'target.dilocoValLossVsSync') : '<td class="na" data-field="target.dilocoValLossVsSync" data-value="">n/a</td>'}</tr>`);
    }
    // the relay's counters by direction, or its output when that was not JSON
    const counters = wanRows.find((r) => r.counters !== undefined)?.counters;
    const runLoads = runs.map((r) => pick(r, 'loadAverage')).filter((x): x is number => x !== undefined).map((x) => x.toFixed(2)).join(' / ') || undefined;
    const directions = (typeof counters === 'object' && counters !== null ? Object.entries(counters) : []) as [string, Unchecked<LinkCounters>][];
    for (const [direction, c] of directions) {
      links.push(`<tr data-file="${escapeXml(basename(f.file))}">${provenance(f, runLoads)}${textCell(link || undefined, 'link')}${textCell(direction === 'aToB' ? 'rank 0 → rank 1' : direction === 'bToA' ? 'rank 1 → rank 0' : direction, 'direction')}` +
        `${cell(pick(c, 'packets'), '', { field: 'packets' })}${cell(pick(c, 'bytes'), 'MiB', { scale: 2 ** -20, field: 'bytes' })}${cell(pick(c, 'dropped'), '', { field: 'dropped' })}` +
        `${cell(pick(c, 'droppedBytes'), 'MiB', { scale: 2 ** -20, field: 'droppedBytes' })}${cell(pick(c, 'writeErrors'), '', { field: 'writeErrors' })}</tr>`);
    }
    if (typeof counters === 'string') links.push(`<tr data-file="${escapeXml(basename(f.file))}">${provenance(f, runLoads)}${textCell(link || undefined, 'link')}<td colspan="6">${escapeXml(counters)}</td></tr>`);
  }
  if (wr.length) {
    const notes = [...new Set(wan.map((f) => text(rows<WanVerdictRow>(f).find((r) => typeof r.note === 'string'), 'note')).filter((x): x is string => !!x))];
    parts.push(`<h3>Emulated WAN link: one rank alone, synchronous, DiLoCo</h3>${notes.map((n) => `<p class="note">${escapeXml(n)}</p>`).join('')}<div class="scroll">${table('dist-wan-table',
      ['file', 'date (UTC)', 'commit', 'load average', 'link', 'run', 'DiLoCo', 'steps', 'tokens', 'tokens/s', 'step p50', 'exposed comm / step', 'bytes / step', 'bytes / token', 'val loss',
        'per-rank tok/s ÷ local', targetHead('dilocoTokensOfLocal', '≥'), 'val loss vs sync', targetHead('dilocoValLossVsSync', '≤', (x) => `+${pctOf(x)}`)], wr)}</div>`);
  }
  if (links.length) {
    parts.push(`<h3>The link relay's counters</h3><div class="scroll">${table('dist-link-table',
      ['file', 'date (UTC)', 'commit', 'load average', 'link', 'direction', 'packets', 'bytes', 'dropped', 'dropped bytes', 'write errors'], links)}</div>`);
  }
  if (parts.length === 0) return '';
  return `<section id="data-parallel"><h2>Data parallel</h2><p class="note">bench/dist.ts and bench/dist_wan.ts on this machine's shared cores (the load average beside each row says how busy it was). ` +
    `Bandwidths as nccl-tests define them (algbw: buffer bytes ÷ time; busbw: algbw · 2(n−1)/n for an all-reduce). Scaling efficiency = tokens/s of two ranks ÷ (2 × one rank's). ` +
    `Figures over several rounds are medians of the round medians (the rounds in each cell's tooltip). Targets are the ones each result file records (else bench/targets.json's); met or missed is read from the figure beside it.</p>${parts.join('')}</section>`;
}
