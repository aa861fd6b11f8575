/** Runs a peer benchmark script (PyTorch, numpy) with JSON in and out; undefined if it cannot run. */
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const peersDir = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bench', 'peers');

export interface PeerOutput {
  results: { name: string; medianMs: number }[];
  [key: string]: unknown;
}

export function runPeer(script: string, input: unknown, env: Record<string, string> = {}): PeerOutput | { error: string } {
  const python = process.env.KILN_PYTHON ?? 'python3';
  const r = spawnSync(python, [join(peersDir, script)], {
    input: JSON.stringify(input),
    encoding: 'utf8',
    env: { ...process.env, ...env },
    maxBuffer: 1 << 26,
    timeout: 30 * 60 * 1000,
  });
  if (r.status !== 0) return { error: `${script} failed (${r.status ?? r.signal}): ${(r.stderr || r.error?.message || '').trim().slice(-400)}` };
  try {
    return JSON.parse(r.stdout) as PeerOutput;
  } catch {
    return { error: `${script} printed no JSON: ${r.stdout.slice(0, 200)}` };
  }
}
