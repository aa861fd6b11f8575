/** The normalized comparison: each figure divided by its device's peak FLOP/s and peak memory bandwidth. */
import { basename } from 'node:path';
import { escapeXml } from '../svg.js';
import { cell, day, ratio, table, textCell } from './cells.js';
import type { MemoryRow, ResultRow, TrainRow } from '../results_schema.js';
import { type Unchecked, pick, rows as rowsOf, text } from './fields.js';
import type { KernelPoint } from './kernels.js';
import type { LoadedResult } from './load.js';
import { type Machine, type Roofs, machineOf } from './machines.js';
import { servePoints } from './serving.js';

export function normalizedSection(results: LoadedResult[], kernels: KernelPoint[], roofs: Map<string, Roofs>): string {
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
    for (const r of rowsOf<ResultRow>(f)) {
      const m = machineOf(f, text(r, 'device'));
      if (f.benchmark === 'train') {
        const row = r as Unchecked<TrainRow>;
        const name = `train ${text(row, 'preset') ?? ''}${row.recompute === true ? ' (recompute)' : ''}, ${day(f.date)}`;
        add(m, `${name}: tokens/s`, pick(row, 'tokensPerSecond'), 'tok/s', f, 'throughput');
        const g = pick(row, 'gflops');
        add(m, `${name}: achieved FLOP/s`, g !== undefined ? g / 1e3 : undefined, 'TFLOP/s', f, 'flops');
      } else if (f.benchmark === 'memory') {
        const row = r as Unchecked<MemoryRow>;
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
