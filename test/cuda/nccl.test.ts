/**
 * Collectives on CUDA tensors through NCCL (loaded at run time; written, unverified here):
 * two ranks, each on its own GPU, against the host-staged Gloo path and the values computed on
 * the host; one rank through NCCL on a single GPU; a collective one rank never joins fails
 * within the timeout with ERR_DIST naming the rank and the step. Each skips without a GPU
 * (failing with KILN_REQUIRE_GPU=1), and the NCCL ones without libnccl.so.2 (failing with
 * KILN_REQUIRE_NCCL=1) or, for two ranks, without a second GPU.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { glooAvailable, ncclStatus } from '../../lib/ops/collectives.js';
import { freePort } from '../../lib/parallel/launcher.js';
import { Communicator } from '../../lib/parallel/communicator.js';
import { preset } from '../../lib/model/config.js';
import { synchronize } from '../../lib/runtime.js';
import { tensor } from '../../lib/tensor.js';
import { assertClose, cudaDevices, cudaTest } from '../helpers.js';

const test = suite('collectives on cuda through nccl');
const worker = join(dirname(fileURLToPath(import.meta.url)), '..', 'parallel', 'worker.js');

/** Whether NCCL can run here; a missing NCCL fails the test when KILN_REQUIRE_NCCL=1. */
function ncclHere(): boolean {
  const status = ncclStatus();
  if (!status.available && process.env.KILN_REQUIRE_NCCL === '1') assert.unreachable(`KILN_REQUIRE_NCCL=1 but NCCL is not available: ${status.reason}`);
  return status.available;
}

async function twoRanks(scenario: string, env: Record<string, string>): Promise<{ codes: number[]; results: Record<string, unknown>[] }> {
  const out = mkdtempSync(join(tmpdir(), 'kiln-nccl-'));
  const port = await freePort();
  const options = { config: preset('tiny'), data: out, steps: 1, batch: 1, seqLen: 8 };
  const codes = await Promise.all([0, 1].map((rank) => new Promise<number>((resolve) => {
    const child = spawn(process.execPath, [worker], {
      env: {
        ...process.env, ...env, KILN_CUDA_DIST: '1', MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), RANK: String(rank), LOCAL_RANK: String(rank), WORLD_SIZE: '2',
        KILN_TEST_OUT: out, KILN_TEST_SCENARIOS: scenario, KILN_TEST_OPTIONS: JSON.stringify(options),
      },
      stdio: 'inherit',
    });
    child.on('exit', (c) => resolve(c ?? 1));
  })));
  const results = codes.every((c) => c === 0) ? [0, 1].map((r) => JSON.parse(readFileSync(join(out, `rank-${r}.json`), 'utf8'))[scenario]) : [];
  return { codes, results };
}

cudaTest(test, 'one rank through NCCL on one GPU: sums, means and the bf16 wire', async () => {
  if (!ncclHere()) return;
  const saved = { gate: process.env.KILN_CUDA_DIST, backend: process.env.KILN_DIST_CUDA_BACKEND };
  process.env.KILN_CUDA_DIST = '1';
  process.env.KILN_DIST_CUDA_BACKEND = 'nccl';
  const comm = await Communicator.connect({ rank: 0, worldSize: 1, localRank: 0, masterAddr: '127.0.0.1', masterPort: 0, config: {} });
  try {
    const values = Float32Array.from({ length: 777 }, (_, i) => Math.cos(i) * 3.3);
    const a = tensor(values, { device: 'cuda' });
    const b = tensor(values, { device: 'cuda' });
    const c = tensor(values, { device: 'cuda' });
    comm.wait(comm.allReduce([a], { average: false }));
    comm.wait(comm.allReduce([b], { average: true }));
    comm.wait(comm.allReduce([c], { average: true, bf16Wire: true }));
    await synchronize();
    assert.equal(Array.from(await a.toArray()), Array.from(values));
    assert.equal(Array.from(await b.toArray()), Array.from(values));
    const rounded = Array.from(await tensor(values, { device: 'cpu' }).cast('bf16').cast('f32').toArray());
    assert.equal(Array.from(await c.toArray()), rounded);
    const s = comm.stats();
    assert.is(s.cudaBackend, 'nccl');
    assert.is(s.collectives, 3);
    assert.ok(s.commMs > 0, 'GPU time of the NCCL collectives recorded');
  } finally {
    await comm.close();
    for (const [k, v] of [['KILN_CUDA_DIST', saved.gate], ['KILN_DIST_CUDA_BACKEND', saved.backend]] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
});

cudaTest(test, 'two ranks: NCCL equals the host-staged Gloo path and the host values', async () => {
  if (!ncclHere() || !glooAvailable() || cudaDevices.length < 2) return;
  const nccl = await twoRanks('cuda-nccl-compare', { KILN_DIST_CUDA_BACKEND: 'nccl' });
  const staged = await twoRanks('cuda-nccl-compare', { KILN_DIST_CUDA_BACKEND: 'staged' });
  assert.equal(nccl.codes, [0, 0]);
  assert.equal(staged.codes, [0, 0]);
  type R = { a: number[]; b: number[]; c: number[]; d: number[]; g: number[]; w: number[]; backend: string; collectives: number };
  for (const r of [0, 1]) {
    const n = nccl.results[r] as R;
    const s = staged.results[r] as R;
    assert.is(n.backend, 'nccl');
    assert.is(s.backend, 'gloo-staged');
    assert.is(n.collectives, 5);
    // exact where both paths sum integers or copy bytes
    assert.equal(n.a, Array.from({ length: 1000 }, (_, i) => 2 * i + 1000));
    assert.equal(n.b, Array(7).fill(3));
    assert.equal(n.g, [0.5, 0.5, 0.5, 0.5, 1.5, 1.5, 1.5, 1.5]);
    assert.equal(n.w, Array.from({ length: 64 }, (_, i) => 2 * i));
    for (const k of ['a', 'b', 'g', 'w'] as const) assert.equal(n[k], s[k], k);
    // means: f32 within one rounding, bf16 wire within bf16 roundings of the two paths
    const mean = Array.from({ length: 300 }, (_, i) => (Math.sin(i) * 1 + Math.sin(i) * 2) / 2);
    assertClose(n.d, mean, 4e-6, 1e-6);
    assertClose(n.d, s.d, 4e-6, 1e-6);
    const meanC = Array.from({ length: 513 }, (_, i) => i * 0.37 + 0.5);
    assertClose(n.c, meanC, 2e-2, 1e-2);
    assertClose(n.c, s.c, 2e-2, 1e-2);
  }
});

cudaTest(test, 'a collective one rank never joins fails within the timeout, naming the rank and the step', async () => {
  if (!ncclHere() || !glooAvailable() || cudaDevices.length < 2) return;
  const run = await twoRanks('cuda-nccl-timeout', { KILN_DIST_CUDA_BACKEND: 'nccl', KILN_TEST_TIMEOUT_MS: '3000' });
  assert.equal(run.codes, [0, 0]);
  const r0 = run.results[0] as { failed: boolean; code: string; message: string; ms: number };
  assert.ok(r0.failed, 'the unmatched collective failed');
  assert.is(r0.code, 'ERR_DIST');
  assert.match(r0.message, /rank 0: step 5: grad bucket 0 failed: did not complete within 3000 ms/);
  assert.ok(r0.ms < 3000 * 3, `reported after ${r0.ms} ms`);
});

test.run();
