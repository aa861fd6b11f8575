/**
 * Benchmark harness: device-side timing marks around the measured ops, a warm-up,
 * an L2 flush before every repeat on CUDA, medians over repeats, and JSON results that name
 * the device, driver, commit and date.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Device, type Tensor, empty, info, synchronize } from '../lib/index.js';
import { deviceCode } from '../lib/device.js';
import { atomicWriteFile } from '../lib/io/atomic.js';
import type { BenchmarkName, DataParallelTargets, ResultFile, ResultRows } from '../lib/monitor/results_schema.js';
import { bundledCorpus, prepareDocuments } from '../lib/io/shards.js';
import { byteTokenizer } from '../lib/data/tokenizer.js';
import { binding } from '../lib/native.js';

export interface Timing {
  medianMs: number;
  p10Ms: number;
  p90Ms: number;
  repeats: number;
}

export interface MeasureOptions {
  warmup?: number;
  repeats?: number;
  /** Overwrite a buffer larger than L2 before each repeat (CUDA), so data comes from DRAM. */
  flushL2?: boolean;
}

const flushBuffers = new Map<Device, Tensor>();

function flushL2(device: Device): void {
  if (device === 'cpu') return;
  let buffer = flushBuffers.get(device);
  if (!buffer) {
    const l2 = info().devices.find((d) => d.device === device)?.l2Bytes ?? 64 << 20;
    buffer = empty([Math.max(2 * l2, 128 << 20) / 4], { device });
    flushBuffers.set(device, buffer);
  }
  binding().fill(buffer.handle, 0);
}

function quantile(sorted: number[], q: number): number {
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

/** Times `enqueue` (which only enqueues ops) in device milliseconds. */
export async function measure(device: Device, enqueue: () => void, options: MeasureOptions = {}): Promise<Timing> {
  const { warmup = 3, repeats = 20, flushL2: flush = true } = options;
  for (let i = 0; i < warmup; i++) enqueue();
  await synchronize();
  const code = deviceCode(device);
  const times: number[] = [];
  for (let i = 0; i < repeats; i++) {
    if (flush) flushL2(device);
    const start = binding().timerMark(code);
    enqueue();
    const end = binding().timerMark(code);
    times.push(await binding().timerElapsed(start, end));
  }
  times.sort((a, b) => a - b);
  return { medianMs: quantile(times, 0.5), p10Ms: quantile(times, 0.1), p90Ms: quantile(times, 0.9), repeats };
}

export function gitCommit(): string {
  if (process.env.KILN_COMMIT) return process.env.KILN_COMMIT;
  try {
    const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
    return execFileSync('git', ['rev-parse', 'HEAD'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return 'unknown';
  }
}

/**
 * Writes a result file (lib/monitor/results_schema.ts) atomically (temp file, fsync, rename) and
 * returns the path; `targets` (bench/targets.ts) go with the figures they judge.
 */
export function writeResults<B extends BenchmarkName>(outDir: string, benchmark: B, results: ResultRows[B][], targets?: Partial<DataParallelTargets>): string {
  mkdirSync(outDir, { recursive: true });
  const file: ResultFile<B> = { benchmark, date: new Date().toISOString(), commit: gitCommit(), kiln: info(), targets, results };
  const stamp = file.date.slice(0, 19).replace(/[:T]/g, '-');
  const path = join(outDir, `${benchmark}-${stamp}.json`);
  atomicWriteFile(path, JSON.stringify(file, null, 2) + '\n');
  return path;
}

export function devicesToBenchmark(): Device[] {
  const only = process.env.KILN_BENCH_DEVICES;
  const all: Device[] = ['cpu', ...info().devices.map((d) => d.device)];
  return only ? all.filter((d) => only.split(',').includes(d)) : all;
}

/** Median of a sample (the upper middle for an even count). */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** Runs a process to its end with extra environment variables; resolves its exit code and combined output. */
export function runProcess(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(args[0], args.slice(1), { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    child.on('exit', (code) => resolve({ code: code ?? 1, out }));
  });
}

/** The data-parallel benchmarks' training data (bundled corpus, byte tokenizer): `dir` or a shared temp folder, prepared once. */
export async function distBenchData(dir?: string): Promise<string> {
  const data = dir ?? join(tmpdir(), 'kiln-bench-dist-data');
  if (!existsSync(join(data, 'train.bin'))) prepareDocuments(await bundledCorpus(), data, byteTokenizer);
  return data;
}
