/**
 * The matmul tuning table: which GEMM configuration wins for each tune key on each device, as
 * `kiln tune` measured it (lib/train/matmul_tuner.ts writes the table; the dispatcher in
 * ops/matmul.ts reads it here on a device's first matmul). Also the primitives the tuner times:
 * a call's candidate configurations and one run with a forced configuration.
 * Winners are stored by configuration name, so a rebuild that renumbers candidates keeps them.
 */
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { MatmulParams } from '../../binding.js';
import { type Device, deviceCode } from '../device.js';
import { fail } from '../errors.js';
import { info } from '../info.js';
import { binding } from '../native.js';
import type { Tensor } from '../tensor.js';

/** device id ("NVIDIA A40 sm86") -> tune key -> configuration name */
export type TuneTable = Record<string, Record<string, string>>;

/** The table's file: KILN_CACHE_DIR, else $XDG_CACHE_HOME/kiln, else ~/.cache/kiln. */
export function tuneTableFile(): string {
  const dir = process.env.KILN_CACHE_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'kiln');
  return join(dir, 'matmul-tune.json');
}

/** The id a device's winners are kept under: its name and compute capability. */
export function tuneDeviceId(device: Device): string {
  const d = info().devices.find((x) => x.device === device);
  if (!d) fail('ERR_DEVICE', `${device} is not present`);
  return `${d.name} sm${d.computeCapability.replace('.', '')}`;
}

export function readTuneTable(): TuneTable {
  const path = tuneTableFile();
  if (!existsSync(path)) return {};
  try {
    const parsed = JSON.parse(readFileSync(path, 'utf8')) as unknown;
    return parsed && typeof parsed === 'object' ? (parsed as TuneTable) : {};
  } catch {
    return {}; // a damaged table only costs the tuned speed: the heuristic still runs
  }
}

const loaded = new Set<Device>();

/** Hands the table's winners for `device` to the dispatcher (once per process). */
export function loadTuned(device: Device): void {
  if (loaded.has(device) || device === 'cpu') return;
  loaded.add(device);
  const entries = readTuneTable()[tuneDeviceId(device)];
  if (!entries) return;
  const names = binding().matmulConfigNames();
  for (const [key, name] of Object.entries(entries)) {
    const config = names.indexOf(name);
    if (config >= 0) binding().matmulSetTuned(deviceCode(device), key, config);
  }
}

export interface MatmulCandidates {
  /** the call's tune key (matmul_cuda_tune_key) */
  key: string;
  /** the configuration the heuristic picks without a table entry */
  defaultConfig: number;
  candidates: { name: string; config: number }[];
}

/** The configurations that can run `out = a·b (+ residual)` with `params` (CUDA only). */
export function matmulCandidates(out: Tensor, a: Tensor, b: Tensor, residual: Tensor | null, params: MatmulParams): MatmulCandidates {
  return binding().matmulCandidates(out.handle, a.handle, b.handle, residual?.handle ?? null, params);
}

/** Enqueues the call with configuration `config` forced (the tuner's timed run). */
export function matmulWithConfig(out: Tensor, a: Tensor, b: Tensor, residual: Tensor | null, params: MatmulParams, config: number): void {
  binding().matmul(out.handle, a.handle, b.handle, residual?.handle ?? null, { ...params, config });
}

/** Makes `config` the dispatcher's choice for `key` on `device` for the rest of the process. */
export function setTunedConfig(device: Device, key: string, config: number): void {
  binding().matmulSetTuned(deviceCode(device), key, config);
}
