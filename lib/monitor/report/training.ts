/** Training: kiln next to its peer (PyTorch) measured in the same run, and the step latency split. */
import { basename } from 'node:path';
import { type BarRow, PALETTE, escapeXml, stackedBars } from '../svg.js';
import { cell, day, fmt, ratio, table, textCell } from './cells.js';
import type { TrainPeer, TrainRow } from '../results_schema.js';
import { type Unchecked, pick, rows as rowsOf, text } from './fields.js';
import type { LoadedResult } from './load.js';
import { machineOf } from './machines.js';

export function trainingSection(results: LoadedResult[]): string {
  const train = results.filter((f) => f.benchmark === 'train').flatMap((f) => rowsOf<TrainRow>(f).map((row) => ({ f, row, m: machineOf(f, text(row, 'device')) })));
  if (train.length === 0) return '';
  const rows: string[] = [];
  const bars: BarRow[] = [];
  for (const { f, row, m } of train) {
    const peer = (typeof row.peer === 'object' && row.peer !== null ? row.peer : {}) as Unchecked<TrainPeer | { error: string }>;
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
