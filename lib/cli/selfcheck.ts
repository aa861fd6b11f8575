/**
 * A short end-to-end check of the runtime on every device present: seeded random tensors, a
 * few ops, and CUDA compared with the CPU reference. `kiln selfcheck` runs it any time.
 */
import type { Device } from '../device.js';
import { info } from '../info.js';
import { add, mul, sum } from '../ops/elementwise.js';
import { randn } from '../tensor.js';

export interface SelfCheckResult {
  device: Device;
  ok: boolean;
  detail: string;
  milliseconds: number;
}

async function checkDevice(device: Device, reference?: Float32Array): Promise<{ result: SelfCheckResult; values: Float32Array }> {
  const start = performance.now();
  const n = 1 << 20;
  using a = randn([n], { seed: 7, device });
  using b = randn([n], { seed: 7, offset: 1, device });
  using product = mul(a, b);
  using total = add(product, a);
  using s = sum(total);
  const values = (await total.toArray()) as Float32Array;
  const [summed] = (await s.toArray()) as Float32Array;
  let exact = 0;
  let expected = 0;
  for (let i = 0; i < n; i++) expected += values[i];
  let detail = `sum of ${n} elements ${summed.toFixed(3)} (f64 check ${expected.toFixed(3)})`;
  let ok = Math.abs(summed - expected) <= 1e-3 * Math.sqrt(n) + 1e-5 * Math.abs(expected);
  if (reference) {
    for (let i = 0; i < n; i++) if (values[i] === reference[i]) exact++;
    detail += `; ${exact}/${n} elements bit-identical to the CPU`;
    ok = ok && exact === n;
  }
  return { result: { device, ok, detail, milliseconds: performance.now() - start }, values };
}

export async function selfCheck(): Promise<SelfCheckResult[]> {
  const results: SelfCheckResult[] = [];
  const cpu = await checkDevice('cpu');
  results.push(cpu.result);
  for (const d of info().devices) {
    results.push((await checkDevice(d.device, cpu.values)).result);
  }
  return results;
}
