/** Kernels: each timing at its arithmetic intensity under its device's roofs (the roofline), with its peer. */
import { basename } from 'node:path';
import { type ChartSeries, PALETTE, type Roof, escapeXml, lineChart } from '../svg.js';
import { cell, fmt, ratio, table, textCell } from './cells.js';
import type { KernelRow } from '../results_schema.js';
import { type Unchecked, pick, rows, text } from './fields.js';
import type { LoadedResult } from './load.js';
import { type Machine, type Roofs, machineOf } from './machines.js';

const ELEMENT_BYTES: Record<string, number> = { f64: 8, f32: 4, tf32: 4, bf16: 2, f16: 2, fp16: 2, fp8: 1, i8: 1 };

export interface KernelPoint {
  file: LoadedResult;
  row: Unchecked<KernelRow>;
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

/** The kernel timings of every file: its rows with `flops` (training, memory and serving rows are not kernels). */
export function kernelPoints(results: LoadedResult[]): KernelPoint[] {
  const out: KernelPoint[] = [];
  for (const f of results) {
    if (f.benchmark === 'train' || f.benchmark === 'memory' || f.benchmark === 'serve') continue;
    for (const row of rows<KernelRow>(f)) {
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

export function kernelsSection(kernels: KernelPoint[], roofs: Map<string, Roofs>): string {
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
