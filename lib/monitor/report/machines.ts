/** The machine each row ran on, and its roofs: datasheet peaks where kiln knows the GPU, else the best figures measured on it. */
import { datasheetPeak } from '../../info.js';
import type { MemoryRow, ResultRow } from '../results_schema.js';
import { type Unchecked, pick, rows, text } from './fields.js';
import type { KernelPoint } from './kernels.js';
import type { LoadedResult } from './load.js';

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
export interface Roofs {
  computeTflops?: { value: number; source: string };
  bandwidthGBs?: { value: number; source: string };
  fp32Tflops?: number;
  measuredBandwidthGBs?: number;
}

export function roofsByMachine(results: LoadedResult[], kernels: KernelPoint[]): Map<string, Roofs> {
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
    for (const row of rows<ResultRow>(f)) {
      const m = machineOf(f, text(row, 'device'));
      get(m);
      if (f.benchmark === 'memory') {
        const gbs = pick(row as Unchecked<MemoryRow>, 'achievedGBs');
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
