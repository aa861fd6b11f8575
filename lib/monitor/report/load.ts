/** Reading result files: a directory's *.json or single files; foreign or broken files are skipped with a reason. */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fail } from '../../errors.js';
import type { Row } from './fields.js';
import { type Targets, readTargets } from './targets.js';

export interface LoadedResult {
  file: string;
  benchmark: string;
  date?: string;
  commit?: string;
  kiln?: {
    platform?: string; cpuThreads?: number; cpuIsa?: string; cudaDriverVersion?: string; cudaToolkit?: string;
    devices?: { device: string; name: string; peak?: { name: string; bf16Tflops: number; fp32Tflops: number; memoryBandwidthGBs: number } }[];
  };
  /** the targets the file records (finite numbers only), for the verdicts */
  targets?: Targets;
  results: Row[];
}

/** Reads result files (directories: their *.json); unreadable or foreign files are skipped with a reason. */
export function loadResults(paths: string[]): { results: LoadedResult[]; skipped: { file: string; reason: string }[] } {
  const files: string[] = [];
  for (const p of paths) {
    let st;
    try {
      st = statSync(p);
    } catch {
      fail('ERR_ARG', `no such result file or directory: ${p}`);
    }
    if (st.isDirectory()) files.push(...readdirSync(p).filter((f) => f.endsWith('.json')).sort().map((f) => join(p, f)));
    else files.push(p);
  }
  const results: LoadedResult[] = [];
  const skipped: { file: string; reason: string }[] = [];
  for (const file of files) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(file, 'utf8'));
    } catch (e) {
      skipped.push({ file, reason: `not JSON (${(e as Error).message})` });
      continue;
    }
    const r = parsed as Partial<LoadedResult>;
    if (typeof r !== 'object' || r === null || typeof r.benchmark !== 'string' || !Array.isArray(r.results)) {
      skipped.push({ file, reason: 'not a kiln benchmark result (needs "benchmark" and "results")' });
      continue;
    }
    const targets = readTargets(r.targets);
    results.push({
      file, benchmark: r.benchmark, date: typeof r.date === 'string' ? r.date : undefined, commit: typeof r.commit === 'string' ? r.commit : undefined,
      kiln: typeof r.kiln === 'object' && r.kiln !== null ? r.kiln : undefined, ...(targets ? { targets } : {}),
      results: r.results.filter((x): x is Row => typeof x === 'object' && x !== null),
    });
  }
  results.sort((a, b) => (a.date ?? '').localeCompare(b.date ?? '') || a.file.localeCompare(b.file));
  return { results, skipped };
}
