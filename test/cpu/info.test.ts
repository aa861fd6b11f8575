import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { datasheetPeak } from '../../lib/index.js';

const test = suite('datasheet peaks');

test('known GPUs map to their datasheet figures', () => {
  const cases: [string, string, number, number][] = [
    ['NVIDIA A40', 'A40', 149.7, 696],
    ['NVIDIA A100-SXM4-80GB', 'A100 SXM 80GB', 312, 2039],
    ['NVIDIA A100-PCIE-40GB', 'A100 40GB', 312, 1555],
    ['NVIDIA L40S', 'L40S', 362, 864],
    ['NVIDIA GeForce RTX 3090', 'RTX 3090', 71, 936],
    ['NVIDIA GeForce RTX 4090', 'RTX 4090', 165.2, 1008],
    ['NVIDIA H100 80GB HBM3', 'H100 SXM', 989.4, 3350],
    ['NVIDIA H100 PCIe', 'H100 PCIe', 756, 2000],
    ['NVIDIA H200', 'H200', 989.4, 4800],
  ];
  for (const [device, name, tflops, bandwidth] of cases) {
    const peak = datasheetPeak(device);
    assert.ok(peak, device);
    assert.is(peak!.name, name);
    assert.is(peak!.bf16Tflops, tflops);
    assert.is(peak!.memoryBandwidthGBs, bandwidth);
  }
  assert.is(datasheetPeak('Tesla T4'), undefined);
});

test.run();
