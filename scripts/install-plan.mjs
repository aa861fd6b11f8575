// What `npm install` should build on this machine: finds nvcc, asks the driver which GPUs are
// present, and turns that (plus KILN_CUDA / KILN_CUDA_ARCHS) into a plan. The probes are quick
// and safe without a driver; the plan itself is a pure function (tested in test/cpu/install.test.ts).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** The default architecture list, read from CMakeLists.txt so there is one source of truth. */
export function defaultArchs(cmakeLists = join(root, 'CMakeLists.txt')) {
  const match = /set\(KILN_DEFAULT_CUDA_ARCHS "([^"]+)"\)/.exec(readFileSync(cmakeLists, 'utf8'));
  if (!match) throw new Error(`KILN_DEFAULT_CUDA_ARCHS not found in ${cmakeLists}`);
  return match[1].split(';');
}

function onPath(name, extraDirs = []) {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), ...extraDirs].filter(Boolean);
  for (const dir of dirs) {
    const file = join(dir, name);
    if (existsSync(file)) return file;
  }
  return undefined;
}

/** nvcc where CMake looks for it: $CUDACXX, PATH, /usr/local/cuda/bin. */
export function findNvcc(env = process.env) {
  if (env.CUDACXX && existsSync(env.CUDACXX)) return env.CUDACXX;
  return onPath('nvcc', ['/usr/local/cuda/bin']);
}

/** "8.6\n9.0\n" (nvidia-smi or the probe's output) -> ['8.6', '9.0']; anything else is ignored. */
export function parseComputeCaps(text) {
  return String(text)
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => /^\d{1,2}\.\d$/.test(line));
}

// The tiny CUDA runtime probe, for machines with a driver but no nvidia-smi.
const PROBE_SOURCE = `#include <cstdio>
#include <cuda_runtime.h>
int main() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;  // no driver or no GPU: print nothing
  for (int i = 0; i < n; ++i) {
    int major = 0, minor = 0;
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, i);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, i);
    std::printf("%d.%d\\n", major, minor);
  }
  return 0;
}
`;

/** Compiles and runs the CUDA runtime probe with nvcc; [] when it cannot tell. */
export function probeWithCudaRuntime(nvcc, timeoutMs = 180_000) {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-gpu-probe-'));
  try {
    // host code only (.cpp): nvcc just drives the host compiler and links cudart, no device passes
    writeFileSync(join(dir, 'probe.cpp'), PROBE_SOURCE);
    const exe = join(dir, 'probe');
    const built = spawnSync(nvcc, ['-o', exe, join(dir, 'probe.cpp'), '-cudart', 'static'], { encoding: 'utf8', timeout: timeoutMs });
    if (built.status !== 0) return { computeCaps: [], source: `CUDA runtime probe (did not compile: ${(built.stderr || String(built.error ?? '')).trim().split('\n')[0]})` };
    const ran = spawnSync(exe, [], { encoding: 'utf8', timeout: 20_000 });
    return { computeCaps: ran.status === 0 ? parseComputeCaps(ran.stdout) : [], source: 'CUDA runtime probe' };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Signs of an NVIDIA driver (Linux and WSL); without them there is no GPU to ask about. */
export function driverPresent() {
  if (process.platform !== 'linux') return true; // cannot tell cheaply: ask
  return existsSync('/proc/driver/nvidia/version') || existsSync('/dev/nvidiactl') || existsSync('/dev/dxg');
}

/**
 * Compute capabilities of the GPUs present: nvidia-smi when it answers, else (when a driver is
 * there) the CUDA runtime probe. Without a driver this returns at once.
 */
export function probeGpus({ nvcc, env = process.env } = {}) {
  if (env.KILN_GPU_COMPUTE_CAPS !== undefined) {
    // testing and unusual setups: "8.6,9.0" (or "" for none) instead of asking the driver
    return { computeCaps: parseComputeCaps(env.KILN_GPU_COMPUTE_CAPS.replaceAll(',', '\n')), source: 'KILN_GPU_COMPUTE_CAPS' };
  }
  const smi = onPath('nvidia-smi', ['/usr/lib/wsl/lib']);
  if (smi) {
    const r = spawnSync(smi, ['--query-gpu=compute_cap', '--format=csv,noheader'], { encoding: 'utf8', timeout: 15_000 });
    if (r.status === 0) return { computeCaps: parseComputeCaps(r.stdout), source: 'nvidia-smi' };
    // an old driver without the compute_cap field, or no driver: fall through
  }
  if (!driverPresent()) return { computeCaps: [], source: 'no NVIDIA driver' };
  if (nvcc) return probeWithCudaRuntime(nvcc);
  return { computeCaps: [], source: 'no nvidia-smi and no nvcc' };
}

/**
 * CMake architectures for the GPUs present: SASS for each (sm_90a on Hopper, where the wgmma
 * kernels need it) plus PTX for the newest, so a newer GPU can still JIT. GPUs older than 8.0
 * are left out (kiln's kernels need Ampere or newer).
 */
export function archsForComputeCaps(computeCaps) {
  const supported = [...new Set(computeCaps)]
    .map((cc) => cc.split('.').map(Number))
    .filter(([major]) => major >= 8)
    .sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  if (supported.length === 0) return [];
  const archs = supported.map(([major, minor]) => (major === 9 && minor === 0 ? '90a-real' : `${major}${minor}-real`));
  const [major, minor] = supported[supported.length - 1];
  archs.push(`${major}${minor}-virtual`);
  return archs;
}

const HOW_TO_GET_CUDA = 'KILN_CUDA=1 (every default architecture) or KILN_CUDA_ARCHS="86-real;90a-real" (chosen ones)';

/**
 * The build plan: { cuda: false } or { cuda: true, archs: [...] }, with `why` (one line for the
 * log), `match` (how an existing build or prebuild must compare: 'exact' archs for
 * KILN_CUDA_ARCHS, a 'superset' for KILN_CUDA=1, or 'covers' every GPU present) and `error`.
 */
export function planBuild({ env = process.env, nvcc, computeCaps = [], defaults = defaultArchs() }) {
  const listed = (env.KILN_CUDA_ARCHS ?? '').trim();
  if (listed) {
    const archs = listed.split(/[;,\s]+/).filter(Boolean);
    if (!nvcc) return { cuda: false, error: `KILN_CUDA_ARCHS=${listed} asks for CUDA but nvcc was not found (PATH, CUDACXX, /usr/local/cuda/bin)` };
    return { cuda: true, archs, match: 'exact', why: `CUDA for ${archs.join(', ')} (KILN_CUDA_ARCHS)` };
  }
  if (env.KILN_CUDA === '0') return { cuda: false, explicit: true, why: 'CPU backend only (KILN_CUDA=0)' };
  if (env.KILN_CUDA === '1') {
    if (!nvcc) return { cuda: false, error: 'KILN_CUDA=1 asks for CUDA but nvcc was not found (PATH, CUDACXX, /usr/local/cuda/bin)' };
    return { cuda: true, archs: defaults, match: 'superset', why: `CUDA for every default architecture, ${defaults.join(', ')} (KILN_CUDA=1)` };
  }
  const gpus = computeCaps.length ? `GPU compute capability ${[...new Set(computeCaps)].join(', ')}` : '';
  const archs = archsForComputeCaps(computeCaps);
  if (computeCaps.length && !archs.length) {
    return { cuda: false, why: `CPU backend only: the ${gpus} is older than kiln's CUDA kernels support (8.0 or newer)` };
  }
  if (!nvcc) {
    return {
      cuda: false,
      why: gpus
        ? `CPU backend only: found ${gpus} but no nvcc; install the CUDA toolkit, then KILN_FORCE_BUILD=1 npm rebuild kiln`
        : 'CPU backend only (no nvcc found)',
    };
  }
  if (!archs.length) return { cuda: false, why: `CPU backend only: nvcc found but no GPU; for CUDA set ${HOW_TO_GET_CUDA}` };
  return { cuda: true, archs, match: 'covers', why: `CUDA for the ${gpus}: ${archs.join(', ')}` };
}

/**
 * Whether an addon that reports `info` (its info() result) satisfies the plan: a CPU plan takes
 * any build (a CPU-only one when KILN_CUDA=0 asked for it); a CUDA plan needs CUDA with the
 * planned architectures (exactly, for KILN_CUDA_ARCHS), or one that covers every GPU present.
 */
export function buildSatisfies(plan, info) {
  if (!plan.cuda) return plan.explicit ? !info.cudaCompiled : true;
  if (!info.cudaCompiled) return false;
  const built = (info.cudaArchs ?? '').split(',').filter(Boolean);
  const superset = plan.archs.every((a) => built.includes(a));
  if (plan.match === 'exact') return superset && built.length === plan.archs.length;
  if (superset) return true;
  return plan.match === 'covers' && info.devices.length > 0 && info.devices.every((d) => d.kernelsCovered === true);
}
