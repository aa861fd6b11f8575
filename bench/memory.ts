/**
 * Memory bandwidth of the runtime's simplest ops (copy and add), per device: the ceiling the
 * memory-bound kernels (decode, optimizer, norms) are judged against. Bytes = read + written.
 */
import { type Device, info, ops, randn } from '../lib/index.js';
import type { MemoryRow } from '../lib/monitor/results_schema.js';
import { binding } from '../lib/native.js';
import { measure } from './harness.js';

export async function benchMemory(devices: Device[]): Promise<MemoryRow[]> {
  const results: MemoryRow[] = [];
  for (const device of devices) {
    const numel = device === 'cpu' ? 1 << 24 : 1 << 28; // 64 MiB / 1 GiB of f32
    using a = randn([numel], { seed: 1, device });
    using b = randn([numel], { seed: 2, device });
    using out = randn([numel], { seed: 3, device });
    const peak = info().devices.find((d) => d.device === device)?.peak;
    const cases: [string, number, () => void][] = [
      ['copy', 2 * 4 * numel, () => binding().copy(out.handle, a.handle)],
      ['add', 3 * 4 * numel, () => binding().binary(0, out.handle, a.handle, b.handle)],
    ];
    for (const [name, bytes, run] of cases) {
      const t = await measure(device, run, { repeats: device === 'cpu' ? 10 : 30 });
      const gbs = bytes / (t.medianMs / 1e3) / 1e9;
      const row: MemoryRow = {
        device,
        op: name,
        bytes,
        ...t,
        achievedGBs: gbs,
        datasheetGBs: peak?.memoryBandwidthGBs,
        percentOfDatasheet: peak ? (100 * gbs) / peak.memoryBandwidthGBs : undefined,
      };
      console.log(
        `memory ${device} ${name}: ${(bytes / 2 ** 20).toFixed(0)} MiB moved in ${t.medianMs.toFixed(3)} ms (median of ${t.repeats}) = ${gbs.toFixed(1)} GB/s` +
          (peak ? ` (${row.percentOfDatasheet!.toFixed(0)}% of ${peak.name} datasheet ${peak.memoryBandwidthGBs} GB/s)` : ''),
      );
      results.push(row);
    }
    void ops;
  }
  return results;
}
