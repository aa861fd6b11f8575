/**
 * The benchmarks' targets: what each figure should reach on the machines the benchmarks were
 * written for (benchmarks, not tests: a miss is recorded, not a failure). The numbers live in
 * bench/targets.json, the one definition: this file gives them their types and meaning, and
 * `kiln report` reads the JSON itself (synchronously, from a checkout) to judge result files
 * written before the data-parallel writers recorded their targets in each file.
 */
import { readFileSync } from 'node:fs';
import type { DataParallelTargets } from '../lib/monitor/results_schema.js';

interface TargetsFile {
  /** bench/dist.ts and bench/dist_wan.ts (2-core CPU, tiny preset, 1-thread ranks) */
  dist: DataParallelTargets;
  /** the HTTP layer against the engine in-process, at concurrency 32 (bench/http_overhead.ts, and bench/serve.ts with an http driver) */
  httpOverhead: {
    /** HTTP tokens/s at least this share of in-process tokens/s */
    tokensPerSecondShare: number;
    /** TTFT p50 over HTTP at most this many ms above in-process */
    ttftP50ExtraMs: number;
  };
  /** bench/train.ts (recorded nowhere yet: the benchmark prints its figures, a person compares) */
  train: {
    /** tiny preset on a 2-core CPU: tokens/s at least this times PyTorch's */
    tinyCpuVsPyTorch: number;
    /** 1.4B preset on an H100: MFU at least this */
    gpuMfu: number;
    /** 1.4B preset on an H100: tokens/s at least this times PyTorch's (torch.compile) */
    gpuVsPyTorch: number;
    /** 1.4B preset on an H100: step p99 at most this times p50 */
    gpuP99OverP50: number;
  };
  /** bench/dashboard.ts (tiny preset, 2-core CPU): the dashboard adds at most this share to a step's wall time */
  dashboard: { endToEndOverhead: number };
  /** bench/serve.ts (2-core CPU, 125m preset, llama.cpp in the same dtype and thread count) */
  serve: {
    /** concurrency-1 decode tokens/s at least this times llama.cpp's */
    decodeC1VsLlamaCpp: number;
    /** concurrency-32 output tokens/s at least this times llama.cpp's */
    throughputC32VsLlamaCpp: number;
    /** TTFT p99 at most this times p50 at every rate of the request-rate sweep */
    ttftP99OverP50UnderRateSweep: number;
  };
}

// from dist/bench/targets.js (compiled) to bench/targets.json in the checkout
const file = JSON.parse(readFileSync(new URL('../../bench/targets.json', import.meta.url), 'utf8')) as TargetsFile;

export const DIST_TARGETS: Readonly<DataParallelTargets> = Object.freeze(file.dist);
export const HTTP_OVERHEAD_TARGETS: Readonly<TargetsFile['httpOverhead']> = Object.freeze(file.httpOverhead);
export const TRAIN_TARGETS: Readonly<TargetsFile['train']> = Object.freeze(file.train);
export const DASHBOARD_TARGETS: Readonly<TargetsFile['dashboard']> = Object.freeze(file.dashboard);
export const SERVE_TARGETS: Readonly<TargetsFile['serve']> = Object.freeze(file.serve);
