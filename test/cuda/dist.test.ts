/**
 * Collectives on CUDA tensors (staged through host memory; written, unverified here): two
 * ranks in child processes with KILN_CUDA_DIST=1 and KILN_DIST_CUDA_BACKEND=staged (both on
 * cuda:0, which NCCL would refuse; NCCL has test/cuda/nccl.test.ts) against the sums and gathers
 * computed on the host. Skipped without a GPU (failing with KILN_REQUIRE_GPU=1).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { glooAvailable } from '../../lib/ops/collectives.js';
import { freePort } from '../../lib/parallel/launcher.js';
import { preset } from '../../lib/model/config.js';
import { tensor } from '../../lib/tensor.js';
import { Communicator } from '../../lib/parallel/communicator.js';
import { assertKilnError, cudaTest } from '../helpers.js';

const test = suite('collectives on cuda');
const worker = join(dirname(fileURLToPath(import.meta.url)), '..', 'parallel', 'worker.js');

cudaTest(test, 'CUDA collectives are refused unless KILN_CUDA_DIST=1', async () => {
  if (process.env.KILN_CUDA_DIST === '1') return;
  const comm = await Communicator.connect({ rank: 0, worldSize: 1, localRank: 0, masterAddr: '127.0.0.1', masterPort: 0, config: {} });
  await assertKilnError(() => comm.allReduce([tensor([1, 2], { device: 'cuda' })]), 'ERR_DEVICE', 'KILN_CUDA_DIST');
  await comm.close();
});

cudaTest(test, 'all-reduce and all-gather of CUDA tensors between two ranks (host staging)', async () => {
  if (!glooAvailable()) return;
  const out = mkdtempSync(join(tmpdir(), 'kiln-cuda-dist-'));
  const port = await freePort();
  const options = { config: preset('tiny'), data: out, steps: 1, batch: 1, seqLen: 8 };
  const codes = await Promise.all([0, 1].map((rank) => new Promise<number>((resolve) => {
    const child = spawn(process.execPath, [worker], {
      env: { ...process.env, KILN_CUDA_DIST: '1', KILN_DIST_CUDA_BACKEND: 'staged', MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), RANK: String(rank), WORLD_SIZE: '2', KILN_TEST_OUT: out, KILN_TEST_SCENARIOS: 'cuda-collectives', KILN_TEST_OPTIONS: JSON.stringify(options) },
      stdio: 'inherit',
    });
    child.on('exit', (c) => resolve(c ?? 1));
  })));
  assert.equal(codes, [0, 0]);
  for (const r of [0, 1]) {
    const res = JSON.parse(readFileSync(join(out, `rank-${r}.json`), 'utf8'))['cuda-collectives'];
    assert.equal(res.a, Array.from({ length: 1000 }, (_, i) => 2 * i + 1000));
    assert.equal(res.b, Array(7).fill(3));
    assert.equal(res.g, [0.5, 0.5, 0.5, 0.5, 1.5, 1.5, 1.5, 1.5]);
  }
});

test.run();
