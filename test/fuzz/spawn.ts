/** Runs fuzz batches in child processes with a watchdog (shared by the test and scripts/fuzz.mjs). */
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';

export interface BatchOutcome {
  seed: number;
  runs: number;
  kind: string;
  /** what went wrong: a crash (signal or exit code), a hang (watchdog), or a finding; empty when clean */
  problems: string[];
  completedRuns: number;
  ms: number;
}

const child = join(dirname(fileURLToPath(import.meta.url)), 'child.js');

export function runBatchInChild(seed: number, runs: number, kind: 'binding' | 'api' | 'all', timeoutMs: number, filter?: string): Promise<BatchOutcome> {
  const started = Date.now();
  return new Promise((resolve) => {
    const args = [child, String(seed), String(runs), kind, ...(filter ? [filter] : [])];
    // a temp working directory: hostile relative paths ('cpu', 'f32') written by checkpoint and report targets land there, not in the repo
    const cwd = mkdtempSync(join(tmpdir(), 'kiln-fuzz-cwd-'));
    const proc = spawn(process.execPath, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, KILN_NUM_THREADS: process.env.KILN_NUM_THREADS ?? '1' } });
    proc.on('close', () => rmSync(cwd, { recursive: true, force: true }));
    let out = '';
    let err = '';
    proc.stdout.on('data', (d) => (out += d));
    proc.stderr.on('data', (d) => (err += d));
    let timedOut = false;
    const watchdog = setTimeout(() => {
      timedOut = true;
      proc.kill('SIGKILL');
    }, timeoutMs);
    proc.on('close', (code, signal) => {
      clearTimeout(watchdog);
      const problems: string[] = [];
      const line = out.split('\n').find((l) => l.startsWith('FUZZ-RESULT '));
      let completedRuns = 0;
      if (timedOut) problems.push(`HANG: batch (seed ${seed}) still running after ${timeoutMs} ms`);
      else if (signal || code !== 0 || !line) problems.push(`CRASH: batch (seed ${seed}) ended with ${signal ?? `exit code ${code}`}; stderr: ${err.slice(-2000)}`);
      if (line) {
        const result = JSON.parse(line.slice('FUZZ-RESULT '.length)) as { runs: number; findings: { target: string; mutations: unknown; problem: string }[] };
        completedRuns = result.runs;
        for (const f of result.findings) problems.push(`${f.target}: ${f.problem} (seed ${seed}, minimal case ${JSON.stringify(f.mutations)})`);
      }
      resolve({ seed, runs, kind, problems, completedRuns, ms: Date.now() - started });
    });
  });
}
