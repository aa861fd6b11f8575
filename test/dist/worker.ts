/**
 * One rank of the data-parallel tests (test/dist/dist.test.ts starts two of these with
 * torchrun's variables set). KILN_TEST_SCENARIOS names what to run; the results (losses,
 * weights, figures) go to KILN_TEST_OUT/rank-<r>.json.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Communicator, distEnvFromProcess } from '../../lib/dist/communicator.js';
import { SyncDataParallel } from '../../lib/dist/data_parallel.js';
import { DiLoCo } from '../../lib/dist/diloco.js';
import { Optimizer, type OptimizedParameter } from '../../lib/optim/optimizer.js';
import { randn, tensor } from '../../lib/tensor.js';
import { synchronize } from '../../lib/index.js';
import { type TrainOptions, Trainer } from '../../lib/train/trainer.js';
import { weightsOf } from './common.js';


async function main(): Promise<void> {
  const env = distEnvFromProcess()!;
  const dir = process.env.KILN_TEST_OUT!;
  const base = JSON.parse(process.env.KILN_TEST_OPTIONS!) as TrainOptions;
  const scenarios = process.env.KILN_TEST_SCENARIOS!.split(',');
  const comm = await Communicator.connect({ ...env, config: { test: scenarios }, timeoutMs: 30_000 });
  const results: Record<string, unknown> = {};
  for (const name of scenarios) {
    if (name === 'sync' || name === 'sync-accumulation' || name === 'sync-bf16') {
      const parallel = new SyncDataParallel(comm, { bucketBytes: 64 * 1024, bf16Reduce: name === 'sync-bf16' });
      const trainer = new Trainer({ ...base, accumulation: name === 'sync-accumulation' ? 2 : 1, parallel });
      const history = await trainer.run();
      results[name] = { losses: history.map((m) => m.loss), weights: await weightsOf(trainer), buckets: parallel.bucketCount, metrics: history[history.length - 1] };
      trainer.close();
    } else if (name === 'newton-schulz') {
      // same matrices on every rank (same seed): the sharded optimizer must match the local one
      const shapes = [[32, 16], [32, 16], [32, 16], [16, 48], [24, 24]];
      const make = () =>
        shapes.map((s, i): OptimizedParameter => ({ name: `w${i}`, value: randn(s, { seed: 7, offset: i }), grad: randn(s, { seed: 8, offset: i }) }));
      const local = make();
      const shared = make();
      const a = new Optimizer([{ rule: 'muon', lr: 0.1, params: local }]);
      const b = new Optimizer([{ rule: 'muon', lr: 0.1, params: shared }], {
        newtonSchulzSharding: { rank: comm.rank, worldSize: comm.worldSize, allGather: (t) => comm.allGather(t), wait: (w) => comm.wait(w as never) },
      });
      a.update();
      b.update();
      let maxDiff = 0;
      for (let i = 0; i < shapes.length; i++) {
        const x = (await local[i].value.toArray()) as Float32Array;
        const y = (await shared[i].value.toArray()) as Float32Array;
        for (let j = 0; j < x.length; j++) maxDiff = Math.max(maxDiff, Math.abs(x[j] - y[j]));
      }
      const moved = Math.abs(((await local[0].value.toArray()) as Float32Array)[0] - ((await randn([32, 16], { seed: 7, offset: 0 }).toArray()) as Float32Array)[0]);
      results[name] = { maxDiff, moved };
      a.dispose();
      b.dispose();
    } else if (name === 'diloco-h1') {
      const parallel = new DiLoCo(comm, { innerSteps: 1, outerLr: 1, outerMomentum: 0, nesterov: false });
      const trainer = new Trainer({ ...base, steps: 1, parallel });
      const history = await trainer.run();
      results[name] = { losses: history.map((m) => m.loss), weights: await weightsOf(trainer), outerSteps: parallel.outerSteps };
      trainer.close();
    } else if (name === 'stop-sync' || name === 'stop-diloco') {
      // only rank 1 is asked to stop (after its step 3): both ranks must leave after step 4, the step that carried the vote
      const parallel = name === 'stop-sync' ? new SyncDataParallel(comm, { bucketBytes: 64 * 1024 }) : new DiLoCo(comm, { innerSteps: 4, outerLr: 0.7 });
      const trainer = new Trainer({ ...base, steps: 20, parallel });
      if (comm.rank === 1) trainer.onStep((m, t) => m.step === 3 && t.requestStop());
      const history = await trainer.run();
      results[name] = { steps: history.map((m) => m.step), stopping: trainer.stopping, weights: await weightsOf(trainer), outerSteps: (parallel as DiLoCo).outerSteps };
      trainer.close();
    } else if (name === 'diloco-end') {
      const parallel = new DiLoCo(comm, { innerSteps: 4 });
      const trainer = new Trainer({ ...base, steps: 6, parallel });
      await trainer.run();
      results[name] = { weights: await weightsOf(trainer), outerSteps: parallel.outerSteps };
      trainer.close();
    } else if (name === 'cuda-collectives') {
      // CUDA tensors staged through host memory (KILN_CUDA_DIST=1): an f32 all-reduce of two tensors and a bf16 all-gather
      const a = tensor(new Float32Array(1000).map((_, i) => i + 1000 * comm.rank), { device: 'cuda' });
      const b = tensor(new Float32Array(7).fill(comm.rank + 1), { device: 'cuda' });
      comm.wait(comm.allReduce([a, b], { average: false }));
      const g = tensor(new Float32Array(8).map((_, i) => (Math.floor(i / 4) === comm.rank ? comm.rank + 0.5 : -1)), { device: 'cuda', dtype: 'bf16' });
      comm.wait(comm.allGather(g));
      results[name] = { a: Array.from(await a.toArray()), b: Array.from(await b.toArray()), g: Array.from(await g.toArray()) };
    } else if (name === 'diloco-plain' || name === 'diloco-p1t0') {
      // the same 4-bit DiLoCo, without and with explicit streaming options (P = 1, τ = 0)
      const stream = name === 'diloco-p1t0' ? { streamFragments: 1, overlapSteps: 0, mixAlpha: 0.5 } : {};
      const parallel = new DiLoCo(comm, { innerSteps: 3, quantBits: 4, ...stream });
      const trainer = new Trainer({ ...base, steps: 7, parallel });
      const history = await trainer.run();
      results[name] = { losses: history.map((m) => m.loss), weights: await weightsOf(trainer), outerSteps: parallel.outerSteps };
      trainer.close();
      parallel.dispose();
    } else if (name === 'diloco-resume') {
      // 4-bit DiLoCo, H = 2: uninterrupted 6 steps vs 2 steps, a checkpoint, a resume, 4 more
      const make = () => new DiLoCo(comm, { innerSteps: 2, quantBits: 4 });
      const opts = { ...base, steps: 6, out: join(dir, 'resume-run') };
      const straight = new Trainer({ ...opts, parallel: make() });
      await straight.run();
      const expected = await weightsOf(straight);
      straight.close();
      const p1 = make();
      const first = new Trainer({ ...opts, parallel: p1 });
      await first.trainStep();
      await first.trainStep();
      const residualAtSave = Array.from((await p1.residualValues())!);
      const saved = await first.save(join(dir, 'resume-ckpt'));
      first.close();
      comm.wait(comm.barrier('checkpoint written'));
      await synchronize();
      const p2 = make();
      const resumed = new Trainer({ ...opts, parallel: p2 });
      await resumed.resume(saved);
      const residualRestored = Array.from((await p2.residualValues())!);
      await resumed.run();
      results[name] = { expected, weights: await weightsOf(resumed), residualAtSave, residualRestored, saved };
      resumed.close();
    } else if (name.startsWith('diloco-s')) {
      // diloco-s<P>: as diloco-q0 (f32, H = 4) streamed in P fragments, overlap 1 step
      const parallel = new DiLoCo(comm, { innerSteps: 4, streamFragments: Number(name.slice('diloco-s'.length)) });
      const trainer = new Trainer({ ...base, steps: 24, evalEvery: 24, parallel });
      const history = await trainer.run();
      results[name] = { losses: history.map((m) => m.loss), valLoss: history[history.length - 1].valLoss, commBytes: history.map((m) => m.commBytes), weights: await weightsOf(trainer), peak: parallel.peakExchangePayloadBytes, outerSteps: parallel.outerSteps };
      trainer.close();
      parallel.dispose();
    } else if (name.startsWith('diloco-q')) {
      // diloco-q<bits>: H = 4, outer defaults, quantized pseudo-gradients with error feedback
      const bits = Number(name.slice('diloco-q'.length)) as 0 | 2 | 4 | 8;
      const parallel = new DiLoCo(comm, { innerSteps: 4, quantBits: bits });
      const trainer = new Trainer({ ...base, steps: 24, evalEvery: 24, parallel });
      const history = await trainer.run();
      results[name] = { losses: history.map((m) => m.loss), valLoss: history[history.length - 1].valLoss, commBytes: history.map((m) => m.commBytes) };
      trainer.close();
    }
  }
  writeFileSync(join(dir, `rank-${comm.rank}.json`), JSON.stringify(results));
  await comm.close();
}

main().catch((e) => {
  console.error(`rank ${process.env.RANK}: ${(e as Error).stack}`);
  process.exit(1);
});
