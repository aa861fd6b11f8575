/**
 * NCCL's run-time loading as the addon does it (native/runtime/nccl.cc through distNcclStatus),
 * on machines without a GPU: the real libnccl.so.2 (absent here: dlerror's reason), stand-in
 * libraries named by KILN_NCCL_LIBRARY (built from test/native/fake_nccl.c) in child processes,
 * since the library is loaded once per process; and what `kiln info`, comm.stats() and the run's
 * log report.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Communicator } from '../../lib/parallel/communicator.js';
import { formatInfo, info } from '../../lib/info.js';
import { glooAvailable, ncclStatus } from '../../lib/ops/collectives.js';
import { synchronize } from '../../lib/runtime.js';
import { tensor } from '../../lib/tensor.js';

const test = suite('nccl status');
const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..', '..');
const collectivesJs = join(here, '..', '..', 'lib', 'ops', 'collectives.js');
const infoJs = join(here, '..', '..', 'lib', 'info.js');

function fakeNccl(dir: string, version: number): string {
  const lib = join(dir, `libnccl-${version}.so.2`);
  const made = spawnSync(process.env.CC ?? 'cc', ['-shared', '-fPIC', `-DFAKE_NCCL_VERSION=${version}`, join(root, 'test', 'native', 'fake_nccl.c'), '-o', lib], { encoding: 'utf8' });
  assert.is(made.status, 0, `compiling fake_nccl.c failed: ${made.stderr ?? made.error}`);
  return lib;
}

function statusIn(library: string): { status: { available: boolean; library: string; version: string; reason: string }; info: string } {
  const script = `const c = await import(${JSON.stringify(collectivesJs)}); const i = await import(${JSON.stringify(infoJs)});` +
    'console.log(JSON.stringify({ status: c.ncclStatus(), info: i.formatInfo() }));';
  const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env: { ...process.env, KILN_NCCL_LIBRARY: library } });
  assert.is(run.status, 0, run.stderr);
  return JSON.parse(run.stdout.trim().split('\n').pop()!);
}

test('without libnccl.so.2 the reason is dlerror\'s, and kiln info says CUDA tensors are staged', () => {
  const s = ncclStatus();
  assert.is(s.library, process.env.KILN_NCCL_LIBRARY || 'libnccl.so.2');
  const present = ['/usr/lib/x86_64-linux-gnu/libnccl.so.2', '/usr/lib/aarch64-linux-gnu/libnccl.so.2', '/usr/local/cuda/lib64/libnccl.so.2'].some(existsSync);
  if (!present && !process.env.KILN_NCCL_LIBRARY) {
    assert.is(s.available, false);
    assert.is(s.version, '');
    assert.match(s.reason, /^cannot load libnccl\.so\.2: .*libnccl\.so\.2/);
  }
  const text = formatInfo();
  assert.match(text, /\ncollectives: /);
  assert.match(text, /need KILN_CUDA_DIST=1/);
  assert.ok(text.includes(glooAvailable() ? 'collectives: Gloo;' : 'no Gloo (one rank only)'), text);
  assert.ok(text.includes(s.available ? `through NCCL ${s.version}` : `(NCCL not used: ${s.reason})`), text);
  assert.equal(info().collectives?.nccl, s);
});

test('KILN_NCCL_LIBRARY: a stand-in NCCL 2.19.3 loads (used only by a CUDA build), 2.3.7 is refused', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-nccl-status-'));
  try {
    const good = statusIn(fakeNccl(dir, 21903));
    const cuda = info().cudaCompiled;
    assert.is(good.status.version, '2.19.3');
    assert.is(good.status.available, cuda);
    assert.is(good.status.reason, cuda ? '' : 'this kiln build has no CUDA');
    assert.ok(good.info.includes(cuda ? 'CUDA tensors through NCCL 2.19.3' : 'NCCL not used: this kiln build has no CUDA'), good.info);

    const old = statusIn(fakeNccl(dir, 2307));
    assert.is(old.status.available, false);
    assert.is(old.status.version, '');
    assert.match(old.status.reason, /is NCCL 2\.3\.7; kiln needs NCCL 2\.4 or later/);

    const missing = statusIn(join(dir, 'nothing-here.so'));
    assert.is(missing.status.available, false);
    assert.match(missing.status.reason, /^cannot load .*nothing-here\.so: /);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('comm.stats() reports no CUDA backend for CPU collectives; the log line names the path and the gate', async () => {
  const comm = await Communicator.connect({ rank: 0, worldSize: 1, localRank: 0, masterAddr: '127.0.0.1', masterPort: 0, config: {} });
  try {
    const t = tensor([1, 2, 3]);
    comm.wait(comm.allReduce([t]));
    await synchronize();
    const s = comm.stats();
    assert.is(s.cudaBackend, '');
    assert.is(s.collectives, 1);
    const line = comm.cudaCollectives();
    const nccl = ncclStatus();
    assert.ok(line.includes(nccl.available ? `through NCCL ${nccl.version}` : 'staged through host memory into Gloo'), line);
    assert.ok(line.includes(process.env.KILN_CUDA_DIST === '1' ? 'enabled by KILN_CUDA_DIST=1' : 'refused unless KILN_CUDA_DIST=1'), line);
  } finally {
    await comm.close();
  }
});

test.run();
