/**
 * Host-side logic of the CUDA paths that needs no GPU (test/native/host_logic_test.cc): the GEMM
 * dispatcher's path decision (a forced KILN_MATMUL_PATH beats a tuned winner), the paged-cache
 * predicates and messages shared by the CPU ops and the CUDA kernels, random fills rounded
 * twice, never fused, and NCCL's run-time loading (versions, the loader against stand-in
 * libraries built from test/native/fake_nccl.c, the unique id's exchange). Compiled here with the
 * host C++ compiler (the one the addon's build needs) with FMA contraction allowed, and run.
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

test('dispatcher path decision, paged-cache checks, unfused random rounding, NCCL loader and id exchange', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-host-logic-'));
  try {
    const exe = join(dir, 'host_logic_test');
    const compiler = process.env.CXX ?? 'c++';
    const args = ['-std=c++17', '-O2', '-ffp-contract=fast', ...fmaFlags(), '-I', join(root, 'native'), join(root, 'test', 'native', 'host_logic_test.cc'),
      join(root, 'native', 'runtime', 'nccl.cc'), '-o', exe, '-ldl', '-pthread'];
    const build = spawnSync(compiler, args, { encoding: 'utf8' });
    assert.ok(!build.error, `cannot run the C++ compiler '${compiler}' (set CXX): ${build.error?.message}`);
    assert.is(build.status, 0, `compiling host_logic_test.cc failed:\n${build.stderr}`);
    // stand-in NCCL libraries: 2.19.3, 2.8.4 (old version encoding, no ncclAvg), 2.3.7 (too old), one without ncclAllGather
    const fakes = [['good', 21903, false], ['old', 2804, false], ['too-old', 2307, false], ['missing', 21903, true]] as const;
    const libs = fakes.map(([name, version, withoutAllGather]) => {
      const lib = join(dir, `libnccl-${name}.so.2`);
      const flags = ['-x', 'c', '-shared', '-fPIC', `-DFAKE_NCCL_VERSION=${version}`, ...(withoutAllGather ? ['-DFAKE_NCCL_WITHOUT_ALLGATHER'] : []),
        join(root, 'test', 'native', 'fake_nccl.c'), '-o', lib];
      const made = spawnSync(compiler, flags, { encoding: 'utf8' });
      assert.is(made.status, 0, `compiling fake_nccl.c (${name}) failed:\n${made.stderr}`);
      return lib;
    });
    const run = spawnSync(exe, libs, { encoding: 'utf8' });
    assert.is(run.status, 0, run.stdout + run.stderr);
    assert.match(run.stdout, /^ok \d+/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
