/**
 * `kiln tune`: times every CUDA GEMM candidate on the shapes a model will run and records the
 * winner per (device, shape) in a cache file that the matmul dispatcher loads on first use.
 * Winners are stored by configuration name, so a rebuild that renumbers candidates keeps them.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import type { MatmulParams } from '../binding.js';
import { type Device, deviceCode } from './device.js';
import type { DType } from './dtype.js';
import { KilnError, fail } from './errors.js';
import { info } from './info.js';
import { atomicWriteFile } from './io/atomic.js';
import { binding } from './native.js';
import { randn, zeros } from './tensor.js';

export interface GemmShape {
  name: string;
  M: number;
  N: number;
  K: number;
  transA: boolean;
  transB: boolean;
}

// (out, in) of each weight of a layer; gate and up run as one fused GEMM (2 x ffn wide).
export function layerWeights(dModel: number, kvDim: number, ffn: number): [string, number, number][] {
  return [
    ['q/o', dModel, dModel],
    ['k/v', kvDim, dModel],
    ['gate+up', 2 * ffn, dModel],
    ['down', dModel, ffn],
  ];
}

/** The forward, input-gradient and weight-gradient GEMMs of one layer at `tokens` per step. */
export function layerShapes(tokens: number, dModel = 2048, kvDim = 1024, ffn = 5632): GemmShape[] {
  const shapes: GemmShape[] = [];
  for (const [name, out, inner] of layerWeights(dModel, kvDim, ffn)) {
    shapes.push({ name: `${name} fwd T=${tokens}`, M: tokens, N: out, K: inner, transA: false, transB: true });
    shapes.push({ name: `${name} dgrad T=${tokens}`, M: tokens, N: inner, K: out, transA: false, transB: false });
    shapes.push({ name: `${name} wgrad T=${tokens}`, M: out, N: inner, K: tokens, transA: true, transB: false });
  }
  return shapes;
}

function cacheFile(): string {
  const dir = process.env.KILN_CACHE_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'kiln');
  return join(dir, 'matmul-tune.json');
}

type TuneCache = Record<string, Record<string, string>>; // device id -> tune key -> config name

function deviceId(device: Device): string {
  const d = info().devices.find((x) => x.device === device);
  if (!d) fail('ERR_DEVICE', `${device} is not present`);
  return `${d.name} sm${d.computeCapability.replace('.', '')}`;
}

function readCache(): TuneCache {
  const path = cacheFile();
  if (!existsSync(path)) return {};
  try {
    const parsed = JSON.parse(readFileSync(path, 'utf8')) as unknown;
    return parsed && typeof parsed === 'object' ? (parsed as TuneCache) : {};
  } catch {
    return {}; // a damaged cache only costs the tuned speed: the heuristic still runs
  }
}

function writeCache(cache: TuneCache): string {
  const path = cacheFile();
  mkdirSync(dirname(path), { recursive: true });
  atomicWriteFile(path, JSON.stringify(cache, null, 2) + '\n');
  return path;
}

const loaded = new Set<Device>();

/** Hands the cached winners of `device` to the dispatcher (once per process). */
export function loadTuned(device: Device): void {
  if (loaded.has(device) || device === 'cpu') return;
  loaded.add(device);
  const entries = readCache()[deviceId(device)];
  if (!entries) return;
  const names = binding().matmulConfigNames();
  for (const [key, name] of Object.entries(entries)) {
    const config = names.indexOf(name);
    if (config >= 0) binding().matmulSetTuned(deviceCode(device), key, config);
  }
}

export interface TuneResult {
  shape: GemmShape;
  key: string;
  winner: string;
  winnerMs: number;
  defaultName: string;
  defaultMs: number;
  candidates: { name: string; medianMs: number }[];
}

function paramsFor(s: GemmShape): MatmulParams {
  return {
    M: s.M, N: s.N, K: s.K, batch: 1, transA: s.transA, transB: s.transB,
    lda: s.transA ? s.M : s.K, ldb: s.transB ? s.K : s.N, ldc: s.N, ldResidual: s.N,
    strideA: 0, strideB: 0, strideC: 0, strideResidual: 0, alpha: 1, beta: 0, epilogue: 0, reference: false,
  };
}

/** Times every candidate for each shape on `device` and saves the winners. */
export async function tuneMatmul(device: Device, shapes: GemmShape[], dtype: DType = 'bf16', repeats = 10): Promise<{ results: TuneResult[]; file: string }> {
  if (device === 'cpu') fail('ERR_DEVICE', 'kiln tune measures CUDA GEMM candidates: pass a CUDA device');
  const code = deviceCode(device);
  const results: TuneResult[] = [];
  const cache = readCache();
  const id = deviceId(device);
  cache[id] ??= {};
  for (const s of shapes) {
    using a = randn(s.transA ? [s.K, s.M] : [s.M, s.K], { seed: 1, device, dtype });
    using b = randn(s.transB ? [s.N, s.K] : [s.K, s.N], { seed: 2, device, dtype });
    using out = zeros([s.M, s.N], { device, dtype });
    const params = paramsFor(s);
    const { key, defaultConfig, candidates } = binding().matmulCandidates(out.handle, a.handle, b.handle, null, params);
    const timed: { name: string; config: number; medianMs: number }[] = [];
    for (const c of candidates) {
      const run = () => binding().matmul(out.handle, a.handle, b.handle, null, { ...params, config: c.config });
      for (let i = 0; i < 2; i++) run();
      const times: number[] = [];
      for (let i = 0; i < repeats; i++) {
        const start = binding().timerMark(code);
        run();
        const end = binding().timerMark(code);
        times.push(await binding().timerElapsed(start, end));
      }
      times.sort((x, y) => x - y);
      timed.push({ name: c.name, config: c.config, medianMs: times[Math.floor(times.length / 2)] });
    }
    if (!timed.length) throw new KilnError('ERR_INTERNAL', `no GEMM candidate can run ${s.name}`);
    timed.sort((x, y) => x.medianMs - y.medianMs);
    const best = timed[0];
    const fallback = timed.find((t) => t.config === defaultConfig) ?? best;
    binding().matmulSetTuned(code, key, best.config);
    cache[id][key] = best.name;
    results.push({
      shape: s, key, winner: best.name, winnerMs: best.medianMs, defaultName: fallback.name, defaultMs: fallback.medianMs,
      candidates: timed.map(({ name, medianMs }) => ({ name, medianMs })),
    });
  }
  return { results, file: writeCache(cache) };
}
