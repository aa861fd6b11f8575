/** What kiln was built with and which devices it sees, with datasheet peaks for known GPUs. */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { binding } from './native.js';
import { KilnError, describe, fail } from './errors.js';

/** Dense (not sparse) datasheet figures from each vendor's spec sheet. Leads, not measurements: benchmarks measure. */
export interface GpuPeak {
  name: string;
  bf16Tflops: number;
  fp32Tflops: number;
  memoryBandwidthGBs: number;
}

// Order matters: the first pattern that matches the device name wins.
const PEAKS: { pattern: RegExp; peak: GpuPeak }[] = [
  { pattern: /H200/i, peak: { name: 'H200', bf16Tflops: 989.4, fp32Tflops: 67, memoryBandwidthGBs: 4800 } },
  { pattern: /H100.*PCIe/i, peak: { name: 'H100 PCIe', bf16Tflops: 756, fp32Tflops: 51, memoryBandwidthGBs: 2000 } },
  { pattern: /H100/i, peak: { name: 'H100 SXM', bf16Tflops: 989.4, fp32Tflops: 67, memoryBandwidthGBs: 3350 } },
  { pattern: /A100.*(40GB|PCIE-40)/i, peak: { name: 'A100 40GB', bf16Tflops: 312, fp32Tflops: 19.5, memoryBandwidthGBs: 1555 } },
  { pattern: /A100/i, peak: { name: 'A100 SXM 80GB', bf16Tflops: 312, fp32Tflops: 19.5, memoryBandwidthGBs: 2039 } },
  { pattern: /L40S/i, peak: { name: 'L40S', bf16Tflops: 362, fp32Tflops: 91.6, memoryBandwidthGBs: 864 } },
  { pattern: /A40/i, peak: { name: 'A40', bf16Tflops: 149.7, fp32Tflops: 37.4, memoryBandwidthGBs: 696 } },
  { pattern: /RTX 3090/i, peak: { name: 'RTX 3090', bf16Tflops: 71, fp32Tflops: 35.6, memoryBandwidthGBs: 936 } },
  { pattern: /RTX 4090/i, peak: { name: 'RTX 4090', bf16Tflops: 165.2, fp32Tflops: 82.6, memoryBandwidthGBs: 1008 } },
];

/** Datasheet peak for a device name as CUDA reports it, or undefined for an unknown GPU. */
export function datasheetPeak(deviceName: string): GpuPeak | undefined {
  if (typeof deviceName !== 'string') fail('ERR_ARG', `deviceName must be a string, got ${describe(deviceName)}`);
  return PEAKS.find((p) => p.pattern.test(deviceName))?.peak;
}

export interface DeviceInfo {
  device: `cuda:${number}`;
  name: string;
  computeCapability: string;
  multiprocessors: number;
  totalMemoryBytes: number;
  l2Bytes: number;
  sharedMemoryPerBlockOptinBytes: number;
  /** From the memory clock and bus width (2 transfers per clock), when the driver reports them. */
  theoreticalBandwidthGBs?: number;
  peak?: GpuPeak;
  /** Whether this build's CUDA architectures run on the device, and through which image (or why not). */
  kernels: { covered: boolean; via: string };
}

export interface KilnInfo {
  version: string;
  node: string;
  platform: string;
  cpuThreads: number;
  /** vector instruction set of the CPU kernels (avx512, avx2, generic) */
  cpuIsa: string;
  cudaCompiled: boolean;
  cudaToolkit?: string;
  cudaArchitectures: string[];
  cudaDriverVersion?: string;
  /** Why no CUDA device is usable, when none is. */
  cudaStatus: string;
  devices: DeviceInfo[];
  /** multi-process collectives: Gloo compiled in (CPU tensors, and CUDA tensors staged through host memory); NCCL loaded at run time for CUDA tensors */
  collectives?: { gloo: boolean; nccl: { available: boolean; library: string; version: string; reason: string } };
}

function versionString(v: number): string {
  return `${Math.floor(v / 1000)}.${Math.floor((v % 1000) / 10)}`;
}

export function info(): KilnInfo {
  const raw = binding().info();
  return {
    version: PACKAGE_VERSION,
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    cpuThreads: raw.cpuThreads,
    cpuIsa: raw.cpuIsa,
    cudaCompiled: raw.cudaCompiled,
    cudaToolkit: raw.cudaCompiled ? raw.cudaVersion : undefined,
    cudaArchitectures: raw.cudaArchs ? raw.cudaArchs.split(',') : [],
    cudaDriverVersion: raw.cudaDriverVersion > 0 ? versionString(raw.cudaDriverVersion) : undefined,
    cudaStatus: !raw.cudaCompiled
      ? 'built without CUDA'
      : raw.cudaDriverVersion === 0
        ? 'no NVIDIA driver found'
        : raw.cudaStatus,
    devices: raw.devices.map((d) => ({
      device: `cuda:${d.index}` as const,
      name: d.name,
      computeCapability: d.computeCapability,
      multiprocessors: d.multiprocessors,
      totalMemoryBytes: d.totalMemory,
      l2Bytes: d.l2Bytes,
      sharedMemoryPerBlockOptinBytes: d.sharedMemoryPerBlockOptin,
      theoreticalBandwidthGBs:
        d.memoryClockKhz > 0 && d.memoryBusWidthBits > 0 ? (2 * d.memoryClockKhz * 1e3 * (d.memoryBusWidthBits / 8)) / 1e9 : undefined,
      peak: datasheetPeak(d.name),
      kernels: { covered: d.kernelsCovered, via: d.kernelsVia },
    })),
    collectives: { gloo: binding().distAvailable(), nccl: binding().distNcclStatus() },
  };
}

/** The command that rebuilds the addon for the GPUs present (what `kiln info` suggests). */
export const REBUILD_FOR_GPU = 'KILN_FORCE_BUILD=1 npm rebuild kiln';

/**
 * Whether a build for `architectures` (CMake tokens, e.g. ['86-real', '90a-real', '90-virtual'])
 * can run on a GPU of `computeCapability` ('8.6'): the check the runtime applies to every device
 * before it puts work there. `via` names the SASS or PTX image that runs, or says why none does.
 */
export function cudaArchCoverage(computeCapability: string, architectures: readonly string[]): { covered: boolean; via: string } {
  const match = typeof computeCapability === 'string' ? /^(\d{1,2})\.(\d)$/.exec(computeCapability) : null;
  if (!match) fail('ERR_ARG', `computeCapability must look like '8.6', got ${describe(computeCapability)}`);
  if (!Array.isArray(architectures) || architectures.some((a) => typeof a !== 'string' || !/^[\w-]+$/.test(a))) {
    fail('ERR_ARG', `architectures must be CMake architecture names like '86-real', got ${describe(architectures)}`);
  }
  return binding().cudaArchCoverage(Number(match[1]), Number(match[2]), architectures.join(','));
}

/** Human-readable report printed by `kiln info`. */
export function formatInfo(i: KilnInfo = info()): string {
  if (!i || typeof i !== 'object') fail('ERR_ARG', `formatInfo takes the object info() returns, got ${describe(i)}`);
  try {
    return formatInfoUnchecked(i);
  } catch (error) {
    if (error instanceof KilnError) throw error;
    fail('ERR_ARG', `formatInfo takes the object info() returns; this one could not be formatted (${describe(error)})`);
  }
}

function formatInfoUnchecked(i: KilnInfo): string {
  const gib = (b: number) => `${(b / 2 ** 30).toFixed(1)} GiB`;
  const lines = [
    `kiln ${i.version} on Node ${i.node} (${i.platform}), ${i.cpuThreads} CPU threads, ${i.cpuIsa} kernels`,
    i.cudaCompiled
      ? `CUDA: compiled with toolkit ${i.cudaToolkit} for ${i.cudaArchitectures.join(', ')}; driver ${i.cudaDriverVersion ?? 'none'}`
      : 'CUDA: not compiled in (no nvcc or no GPU at install time); CPU backend only. For CUDA: ' +
        `KILN_CUDA=1 ${REBUILD_FOR_GPU} (or KILN_CUDA_ARCHS="86-real;90a-real" for chosen architectures)`,
  ];
  if (i.devices.length === 0) {
    lines.push(`devices: cpu only${i.cudaCompiled ? ` (${i.cudaStatus})` : ''}`);
  }
  for (const d of i.devices) {
    lines.push(`${d.device}: ${d.name}, compute capability ${d.computeCapability}, ${d.multiprocessors} SMs, ${gib(d.totalMemoryBytes)}, L2 ${(d.l2Bytes / 2 ** 20).toFixed(0)} MiB`);
    if (d.peak) {
      lines.push(`  datasheet (${d.peak.name}): ${d.peak.bf16Tflops} TFLOP/s bf16 dense, ${d.peak.fp32Tflops} TFLOP/s fp32, ${d.peak.memoryBandwidthGBs} GB/s`);
    } else {
      lines.push('  datasheet: unknown GPU (no peak figures; benchmarks still measure)');
    }
    lines.push(
      !d.kernels.covered
        ? `  kernels: NOT BUILT for this GPU (${d.kernels.via}); rebuild for it: ${REBUILD_FOR_GPU}`
        : / PTX /.test(d.kernels.via)
          ? `  kernels: ${d.kernels.via}; this GPU is not among the built architectures, for its own SASS: ${REBUILD_FOR_GPU}`
          : `  kernels: ${d.kernels.via}`,
    );
  }
  if (i.collectives) {
    const { gloo, nccl } = i.collectives;
    const cuda = nccl.available
      ? `CUDA tensors through NCCL ${nccl.version} (${nccl.library})`
      : `CUDA tensors staged through host memory${gloo ? ' into Gloo' : ''} (NCCL not used: ${nccl.reason})`;
    lines.push(`collectives: ${gloo ? 'Gloo' : 'no Gloo (one rank only)'}; ${cuda}; CUDA collectives are unverified without GPUs and need KILN_CUDA_DIST=1`);
  }
  return lines.join('\n');
}

function readVersion(): string {
  // dist/lib/info.js sits two levels below the package root, lib/info.ts one.
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let depth = 0; depth < 3; depth++, dir = dirname(dir)) {
    const file = join(dir, 'package.json');
    if (existsSync(file)) return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version;
  }
  return 'unknown';
}

const PACKAGE_VERSION = readVersion();
