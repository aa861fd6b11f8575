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
  // KILN_PYTHON, else python3 on PATH, else Debian's (a pyenv python3 on PATH may lack the
  // python3-torch / python3-numpy packages the peers use)
  const pythons = process.env.KILN_PYTHON ? [process.env.KILN_PYTHON] : [...new Set(['python3', '/usr/bin/python3'])];
  let error = '';
  for (const python of pythons) {
    const r = spawnSync(python, [join(peersDir, script)], {
      input: JSON.stringify(input),
      encoding: 'utf8',
      env: { ...process.env, ...env },
      maxBuffer: 1 << 26,
      timeout: 30 * 60 * 1000,
    });
    if (r.status !== 0) {
      error = `${script} failed under ${python} (${r.status ?? r.signal}): ${(r.stderr || r.error?.message || '').trim().slice(-400)}`;
      if (/ModuleNotFoundError|ENOENT/.test(error)) continue;
      return { error };
    }
    try {
      return { ...(JSON.parse(r.stdout) as PeerOutput), python };
    } catch {
      return { error: `${script} printed no JSON: ${r.stdout.slice(0, 200)}` };
    }
  }
  return { error };
}
