/**
 * One rank of the data-parallel tests (test/parallel/dist.test.ts starts two of these with
 * torchrun's variables set). KILN_TEST_SCENARIOS names what to run; the results (losses,
 * weights, figures) go to KILN_TEST_OUT/rank-<r>.json.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Communicator, distEnvFromProcess } from '../../lib/parallel/communicator.js';
import { SyncDataParallel } from '../../lib/parallel/data_parallel.js';
import { DiLoCo } from '../../lib/parallel/diloco.js';
import { Optimizer, type OptimizedParameter, type OptimizerOptions, type ParamGroup } from '../../lib/optim/optimizer.js';
import { type Tensor, randn, tensor, zeros } from '../../lib/tensor.js';
import { copyInto } from '../../lib/ops/layers.js';
import { synchronize } from '../../lib/runtime.js';
import { type TrainOptions, Trainer } from '../../lib/train/trainer.js';
import { weightsOf } from './common.js';

type Variant = 'standard' | 'normuon' | 'extrapolated';

/**
 * Muon (one variant) + AdamW over matrices of uneven counts per shape (one shape rank 1 owns
 * none of) and AdamW parameters whose flattened split falls inside a parameter: `steps`
 * updates, each with fresh gradients (the same on every rank, as after the all-reduce).
 * `from`: continue from saved weights and optimizer state, at gradient step `from.step`.
 */
async function optimizerRun(variant: Variant, options: OptimizerOptions, steps: number, from?: { step: number; weights: number[]; state: Map<string, Float32Array> }) {
  const shapes = [[32, 16], [32, 16], [32, 16], [16, 48], [24, 24], [32, 16], [32, 16]];
  const vectors = [[37], [50, 3], [11]];
  const muon: OptimizedParameter[] = shapes.map((s, i) => ({ name: `w${i}`, value: randn(s, { seed: 7, offset: i }), grad: zeros(s) }));
  const adamw: OptimizedParameter[] = vectors.map((s, i) => ({ name: `a${i}`, value: randn(s, { seed: 9, offset: i }), grad: zeros(s) }));
  const all = [...muon, ...adamw];
  if (from) {
    let at = 0;
    for (const p of all) {
      p.value.write(new Float32Array(from.weights.slice(at, at + p.value.numel)));
      at += p.value.numel;
    }
  }
  const groups: ParamGroup[] = [
    { rule: 'muon', lr: 0.05, variant, weightDecay: 0.1, params: muon, newtonSchulz: { compute: 'f32' } },
    { rule: 'adamw', lr: 0.01, weightDecay: 0.1, params: adamw },
  ];
  const opt = new Optimizer(groups, options);
  if (from) await opt.loadState(from.step, from.state);
  const first = from?.step ?? 0;
  for (let step = first; step < first + steps; step++) {
    if (variant === 'extrapolated') opt.prepareGradientPoint();
    all.forEach((p, i) => {
      using g = randn([...p.grad.shape], { seed: 100 + step, offset: i });
      copyInto(p.grad, g);
    });
    opt.update(0.9);
  }
  return { opt, params: all, weights: await valuesOf(all.map((p) => p.value)) };
}

async function valuesOf(ts: Iterable<Tensor>): Promise<number[]> {
  const out: number[] = [];
  for (const t of ts) out.push(...((await t.toArray()) as Float32Array));
  return out;
}

/** Every rank waits here until every rank arrived (e.g. rank 0 finished writing a checkpoint). */
async function barrier(comm: Communicator): Promise<void> {
  using t = zeros([1]);
  comm.wait(comm.allReduce([t], { what: 'test barrier' }));
  await t.toArray();
}

async function main(): Promise<void> {
  const env = distEnvFromProcess()!;
  const dir = process.env.KILN_TEST_OUT!;
  const base = JSON.parse(process.env.KILN_TEST_OPTIONS!) as TrainOptions;
  const scenarios = process.env.KILN_TEST_SCENARIOS!.split(',');
  const comm = await Communicator.connect({ ...env, config: { test: scenarios }, timeoutMs: Number(process.env.KILN_TEST_TIMEOUT_MS ?? 30_000) });
  const results: Record<string, unknown> = {};
  for (const name of scenarios) {
    if (['sync', 'sync-accumulation', 'sync-bf16', 'zero1', 'zero1-accumulation'].includes(name)) {
      const parallel = new SyncDataParallel(comm, { bucketBytes: 64 * 1024, bf16Reduce: name === 'sync-bf16', zero1: name.startsWith('zero1') });
      const trainer = new Trainer({ ...base, accumulation: name.endsWith('-accumulation') ? 2 : 1, parallel });
      const history = await trainer.run();
      results[name] = { losses: history.map((m) => m.loss), weights: await weightsOf(trainer), buckets: parallel.bucketCount, metrics: history[history.length - 1] };
      trainer.close();
    } else if (name === 'zero1-optimizer') {
      // each variant: ZeRO-1 against the local optimizer (weights, the gathered state), and a ZeRO-1 optimizer loaded with a full state
      const newtonSchulzSharding = { rank: comm.rank, worldSize: comm.worldSize, allGather: (t: Tensor) => comm.allGather(t), wait: (w: unknown) => comm.wait(w as never) };
      const maxDiff = (a: number[], b: number[]) => (a.length !== b.length ? Infinity : a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0));
      const out: Record<string, unknown> = {};
      for (const variant of ['standard', 'normuon', 'extrapolated'] as const) {
        const local = await optimizerRun(variant, {}, 3);
        const shared = await optimizerRun(variant, { newtonSchulzSharding }, 3);
        const sharded = await optimizerRun(variant, { newtonSchulzSharding, zero1: true }, 3);
        const localState = await local.opt.stateTensors();
        const shardedState = await sharded.opt.stateTensors();
        const saved = new Map<string, Float32Array>();
        for (const [k, t] of localState.tensors) saved.set(k, (await t.toArray()) as Float32Array);
        const stateDiff = maxDiff(await valuesOf(shardedState.tensors.values()), [...saved.values()].flatMap((v) => Array.from(v)));
        const names = [[...localState.tensors.keys()], [...shardedState.tensors.keys()]];
        shardedState.release();
        // two more steps from the local run's weights and state: unsharded, and ZeRO-1 keeping its share of the full state
        const from = { step: 3, weights: local.weights, state: saved };
        const continued = await optimizerRun(variant, {}, 2, from);
        const resumed = await optimizerRun(variant, { newtonSchulzSharding, zero1: true }, 2, from);
        // a state missing one tensor (one this rank does not own, on rank 1) is refused on every rank
        const partial = new Map(saved);
        partial.delete('w4.momentum');
        const refused = await resumed.opt.loadState(3, partial).then(() => 'accepted', (e: { code?: string }) => e.code);
        out[variant] = {
          weightDiff: maxDiff(sharded.weights, local.weights), sharedDiff: maxDiff(shared.weights, local.weights), stateDiff, names,
          resumeDiff: maxDiff(resumed.weights, continued.weights), refused, moved: maxDiff(continued.weights, local.weights),
          memory: { local: local.opt.memory(), shared: shared.opt.memory(), zero1: sharded.opt.memory() },
        };
        for (const r of [local, shared, sharded, continued, resumed]) {
          r.opt.dispose();
          for (const p of r.params) [p.value, p.grad].forEach((t) => t.dispose());
        }
      }
      results[name] = out;
    } else if (name === 'save-zero1' || name === 'save-sync') {
      // 2 of 4 steps, then a checkpoint (every rank takes part, rank 0 writes)
      const parallel = new SyncDataParallel(comm, { bucketBytes: 64 * 1024, zero1: name === 'save-zero1' });
      const trainer = new Trainer({ ...base, steps: 4, out: join(dir, name), parallel });
      await trainer.trainStep();
      await trainer.trainStep();
      const path = await trainer.save();
      await barrier(comm);
      results[name] = { path };
      trainer.close();
    } else if (name === 'straight-sync' || name === 'resume-sync-from-zero1' || name === 'resume-zero1-from-sync') {
      // 4 steps straight, or steps 3 and 4 after the checkpoint of the other mode
      const parallel = new SyncDataParallel(comm, { bucketBytes: 64 * 1024, zero1: name === 'resume-zero1-from-sync' });
      const trainer = new Trainer({ ...base, steps: 4, out: join(dir, name), parallel });
      if (name !== 'straight-sync') await trainer.resume(join(dir, name === 'resume-sync-from-zero1' ? 'save-zero1' : 'save-sync'));
      const history = await trainer.run();
      results[name] = { steps: history.map((m) => m.step), losses: history.map((m) => m.loss), weights: await weightsOf(trainer) };
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
      // only rank 1 is asked to stop (after its step 3): every rank must leave after the same step (sync 4, DiLoCo 5)
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
    } else if (name === 'cuda-nccl-compare') {
      // each rank on its own GPU (NCCL refuses two ranks on one); run with KILN_DIST_CUDA_BACKEND=nccl or =staged
      const device = `cuda:${env.localRank}` as const;
      const a = tensor(new Float32Array(1000).map((_, i) => i + 1000 * comm.rank), { device });
      const b = tensor(new Float32Array(7).fill(comm.rank + 1), { device });
      comm.wait(comm.allReduce([a, b], { average: false }));
      const c = tensor(new Float32Array(513).map((_, i) => i * 0.37 + comm.rank), { device });
      comm.wait(comm.allReduce([c], { average: true, bf16Wire: true }));
      const d = tensor(new Float32Array(300).map((_, i) => Math.sin(i) * (comm.rank + 1)), { device });
      comm.wait(comm.allReduce([d], { average: true }));
      const g = tensor(new Float32Array(8).map((_, i) => (Math.floor(i / 4) === comm.rank ? comm.rank + 0.5 : -1)), { device, dtype: 'bf16' });
      comm.wait(comm.allGather(g));
      const w = tensor(new Float32Array(64).map((_, i) => (comm.rank + 1) * i), { device });
      comm.wait(comm.broadcast(w, 1));
      await synchronize();
      const stats = comm.stats();
      results[name] = {
        a: Array.from(await a.toArray()), b: Array.from(await b.toArray()), c: Array.from(await c.toArray()), d: Array.from(await d.toArray()),
        g: Array.from(await g.toArray()), w: Array.from(await w.toArray()), backend: stats.cudaBackend, collectives: stats.collectives, commMs: stats.commMs,
      };
    } else if (name === 'cuda-nccl-timeout') {
      // one collective sets NCCL up, then rank 1 skips the next: rank 0's must fail within the timeout
      const device = `cuda:${env.localRank}` as const;
      const a = tensor(new Float32Array(16).fill(1), { device });
      comm.wait(comm.allReduce([a], { average: false }));
      await a.toArray();
      comm.step = 5;
      if (comm.rank === 0) {
        const started = Date.now();
        try {
          comm.wait(comm.allReduce([a], { average: false, what: 'grad bucket 0' }));
          await a.toArray();
          results[name] = { failed: false };
        } catch (e) {
          results[name] = { failed: true, code: (e as { code?: string }).code, message: (e as Error).message, ms: Date.now() - started };
        }
      } else {
        await new Promise((r) => setTimeout(r, 3 * Number(process.env.KILN_TEST_TIMEOUT_MS)));
        results[name] = { skipped: true };
      }
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
