/**
 * Host-side logic of the CUDA paths that needs no GPU (test/native/host_logic_test.cc): the GEMM
 * dispatcher's path decision (a forced KILN_MATMUL_PATH beats a tuned winner), the paged-cache
 * predicates and messages shared by the CPU ops and the CUDA kernels, and random fills rounded
 * twice, never fused. Compiled here with the host C++ compiler (the one the addon's build needs)
 * with FMA contraction allowed, and run.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';

const test = suite('native host logic');
const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

function fmaFlags(): string[] {
  if (process.arch !== 'x64') return []; // aarch64 has FMA in its base ISA
  try {
    return /\bfma\b/.test(readFileSync('/proc/cpuinfo', 'utf8')) ? ['-mfma'] : [];
  } catch {
    return [];
  }
}

test('dispatcher path decision, paged-cache checks, unfused random rounding', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-host-logic-'));
  try {
    const exe = join(dir, 'host_logic_test');
    const compiler = process.env.CXX ?? 'c++';
    const args = ['-std=c++17', '-O2', '-ffp-contract=fast', ...fmaFlags(), '-I', join(root, 'native'), join(root, 'test', 'native', 'host_logic_test.cc'), '-o', exe];
    const build = spawnSync(compiler, args, { encoding: 'utf8' });
    assert.ok(!build.error, `cannot run the C++ compiler '${compiler}' (set CXX): ${build.error?.message}`);
    assert.is(build.status, 0, `compiling host_logic_test.cc failed:\n${build.stderr}`);
    const run = spawnSync(exe, [], { encoding: 'utf8' });
    assert.is(run.status, 0, run.stdout + run.stderr);
    assert.match(run.stdout, /^ok \d+/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
