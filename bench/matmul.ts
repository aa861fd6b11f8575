/**
 * GEMM throughput on the 1.4B preset's shapes (d_model 2048, KV 1024, FFN 5632), in the three layouts of a
 * training step, plus square 4096 and 8192, next to a peer measured in the same run:
 * cuBLAS through PyTorch on CUDA, numpy/OpenBLAS on the CPU (scaled-down token counts).
 *
 * FLOPs = 2·M·N·K. Forward y = x·Wᵀ: (T x in)·(out x in)ᵀ. Input gradient dx = dy·W:
 * (T x out)·(out x in). Weight gradient dW = dyᵀ·x: (out x T)ᵀ... i.e. transA with M = out, K = T.
 */
import { type Device, type DType, info, ops, randn, zeros } from '../lib/index.js';
import type { MatmulRow, MatmulSummaryRow } from '../lib/monitor/results_schema.js';
import { type GemmShape, layerShapes } from '../lib/train/matmul_tuner.js';
import { measure } from './harness.js';
import { runPeer } from './peers.js';

type Shape = GemmShape;

export function presetShapes(tokens: number): Shape[] {
  return layerShapes(tokens);
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)] : NaN;
}

async function timeKiln(device: Device, s: Shape, dtype: DType, outDtype: DType): Promise<number> {
  using a = randn(s.transA ? [s.K, s.M] : [s.M, s.K], { seed: 1, device, dtype });
  using b = randn(s.transB ? [s.N, s.K] : [s.K, s.N], { seed: 2, device, dtype });
  using out = zeros([s.M, s.N], { device, dtype: outDtype });
  const t = await measure(device, () => void ops.matmul(a, b, { transA: s.transA, transB: s.transB, out }), {
    repeats: device === 'cpu' ? 5 : 20,
    warmup: device === 'cpu' ? 1 : 3,
  });
  return t.medianMs;
}

export async function benchMatmul(devices: Device[]): Promise<(MatmulRow | MatmulSummaryRow)[]> {
  const results: (MatmulRow | MatmulSummaryRow)[] = [];
  for (const device of devices) {
    const gpu = info().devices.find((d) => d.device === device);
    const shapes =
      device === 'cpu'
        ? [...presetShapes(512), ...[512, 1024, 2048].map((n) => ({ name: `square ${n}`, M: n, N: n, K: n, transA: false, transB: false }))]
        : [...presetShapes(8192), ...presetShapes(16384), ...[4096, 8192].map((n) => ({ name: `square ${n}`, M: n, N: n, K: n, transA: false, transB: false }))];
    const dtype: DType = device === 'cpu' ? 'f32' : 'bf16';
    const peer =
      device === 'cpu'
        ? runPeer('numpy_gemm.py', shapes.map((s) => ({ ...s, repeats: 5 })), {
            OPENBLAS_NUM_THREADS: String(info().cpuThreads),
            OMP_NUM_THREADS: String(info().cpuThreads),
          })
        : runPeer('torch_matmul.py', shapes.map((s) => ({ ...s, dtype })), { CUDA_VISIBLE_DEVICES: device.slice(5) });
    const peerName = device === 'cpu' ? 'numpy' : 'cuBLAS (torch.matmul)';
    if ('error' in peer) console.log(`matmul ${device}: peer unavailable: ${peer.error}`);
    const ratios: number[] = [];
    const presetRatios: number[] = [];
    for (const s of shapes) {
      const ms = await timeKiln(device, s, dtype, dtype);
      const flops = 2 * s.M * s.N * s.K;
      const tflops = flops / (ms / 1e3) / 1e12;
      const peerMs = 'error' in peer ? undefined : peer.results.find((r) => r.name === s.name)?.medianMs;
      const ratio = peerMs ? peerMs / ms : undefined;
      if (ratio) {
        ratios.push(ratio);
        if (!s.name.startsWith('square')) presetRatios.push(ratio);
      }
      const peak = gpu?.peak?.bf16Tflops;
      const row: MatmulRow = {
        device, dtype, ...s, flops, medianMs: ms, tflops,
        peer: peerName, peerMs, peerTflops: peerMs ? flops / (peerMs / 1e3) / 1e12 : undefined,
        speedupVsPeer: ratio, percentOfDatasheetPeak: peak ? (100 * tflops) / peak : undefined,
      };
      results.push(row);
      console.log(
        `matmul ${device} ${dtype} ${s.name.padEnd(22)} ${s.M}x${s.N}x${s.K}: ${ms.toFixed(3)} ms, ${(device === 'cpu' ? tflops * 1e3 : tflops).toFixed(1)} ${device === 'cpu' ? 'GFLOP/s' : 'TFLOP/s'}` +
          (ratio ? `, ${(100 * ratio).toFixed(0)}% of ${peerName}` : '') +
          (row.percentOfDatasheetPeak ? `, ${row.percentOfDatasheetPeak.toFixed(0)}% of datasheet peak` : ''),
      );
    }
    const peerInfo = 'error' in peer ? { error: peer.error } : Object.fromEntries(Object.entries(peer).filter(([k]) => k !== 'results'));
    const summary: MatmulSummaryRow = { device, summary: true, peer: peerName, peerInfo, medianSpeedupVsPeer: median(ratios), medianSpeedupVsPeerPresetShapes: median(presetRatios) };
    console.log(`matmul ${device}: median ${(100 * summary.medianSpeedupVsPeer).toFixed(0)}% of ${peerName} (preset shapes ${(100 * summary.medianSpeedupVsPeerPresetShapes).toFixed(0)}%)`);
    results.push(summary);
  }
  return results;
}
