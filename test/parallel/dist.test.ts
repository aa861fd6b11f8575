/**
 * Data parallelism across processes: two ranks over Gloo's TCP transport on 127.0.0.1, each a
 * child process (test/parallel/worker.ts or the kiln CLI), against the single-process trainer.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { bundledCorpus, prepareDocuments } from '../../lib/io/shards.js';
import { byteTokenizer } from '../../lib/data/tokenizer.js';
import { freePort, joinRun } from '../../lib/parallel/launcher.js';
import { SyncDataParallel } from '../../lib/parallel/data_parallel.js';
import { Optimizer } from '../../lib/optim/optimizer.js';
import { Communicator, distEnvFromProcess } from '../../lib/parallel/communicator.js';
import { DiLoCo, QUANT_BLOCK, dequantizeAdd, fragmentStarts, packedBytes, quantize } from '../../lib/parallel/diloco.js';
import { loadCheckpoint } from '../../lib/io/checkpoint.js';
import { assertKilnError } from '../helpers.js';
import { glooAvailable } from '../../lib/ops/collectives.js';
import { preset } from '../../lib/model/config.js';
import { type Tensor, zeros } from '../../lib/tensor.js';
import { type TrainOptions, type TrainParallel, Trainer } from '../../lib/train/trainer.js';
import { trainDevice } from '../../lib/cli/train.js';
import { smallConfig, weightsOf } from './common.js';

const test = suite('data parallel (2 ranks, Gloo over 127.0.0.1)');
const here = dirname(fileURLToPath(import.meta.url));
const cli = join(here, '..', '..', 'lib', 'cli', 'cli.js');
const root = mkdtempSync(join(tmpdir(), 'kiln-dist-'));
const data = join(root, 'data');
const B = 4;
const base: TrainOptions = { config: smallConfig(preset('tiny')), data, steps: 3, batch: B, seqLen: 32, seed: 5, evalEvery: 0, evalBatches: 2 };

interface Child {
  pid: number;
  code: Promise<number>;
  out: () => string;
  kill: (signal?: NodeJS.Signals) => void;
}

function start(args: string[], env: NodeJS.ProcessEnv): Child {
  const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  child.stdout.on('data', (c: Buffer) => (text += c.toString()));
  child.stderr.on('data', (c: Buffer) => (text += c.toString()));
  const code = new Promise<number>((resolve) => child.on('exit', (c, signal) => resolve(c ?? (signal ? 128 : 1))));
  return { pid: child.pid!, code, out: () => text, kill: (signal: NodeJS.Signals = 'SIGKILL') => child.kill(signal) };
}

async function ranks(args: (rank: number) => string[], env: (rank: number) => NodeJS.ProcessEnv = () => ({})): Promise<Child[]> {
  const port = await freePort();
  return [0, 1].map((rank) => start(args(rank), { MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), RANK: String(rank), LOCAL_RANK: String(rank), WORLD_SIZE: '2', ...env(rank) }));
}

/** Results of both ranks of test/parallel/worker.ts for these scenarios. */
async function worker(scenarios: string[], options: TrainOptions = base): Promise<Record<string, any>[]> {
  const out = mkdtempSync(join(root, 'w-'));
  const children = await ranks(() => [join(here, 'worker.js')], () => ({ KILN_TEST_OUT: out, KILN_TEST_SCENARIOS: scenarios.join(','), KILN_TEST_OPTIONS: JSON.stringify(options) }));
  const codes = await Promise.all(children.map((c) => c.code));
  codes.forEach((c, r) => assert.is(c, 0, `rank ${r} failed:\n${children[r].out()}`));
  return [0, 1].map((r) => JSON.parse(readFileSync(join(out, `rank-${r}.json`), 'utf8')));
}

function close(a: number[], b: number[], atol: number, rtol: number, what: string): void {
  assert.is(a.length, b.length, `${what}: lengths`);
  let worst = 0;
  let at = -1;
  for (let i = 0; i < a.length; i++) {
    const excess = Math.abs(a[i] - b[i]) - (atol + rtol * Math.abs(b[i]));
    if (excess > worst) [worst, at] = [excess, i];
  }
  assert.ok(at < 0, `${what}: element ${at} is ${a[at]}, expected ${b[at]}`);
}

/** The single process on the global batch (2·B rows a step) that a two-rank step must equal; run once per accumulation. */
const singleProcessRuns = new Map<number, Promise<{ losses: number[]; weights: number[] }>>();
function singleProcess(accumulation: number): Promise<{ losses: number[]; weights: number[] }> {
  if (!singleProcessRuns.has(accumulation)) {
    singleProcessRuns.set(accumulation, (async () => {
      const single = new Trainer({ ...base, batch: 2 * B, accumulation });
      const history = await single.run();
      const weights = await weightsOf(single);
      single.close();
      return { losses: history.map((m) => m.loss), weights };
    })());
  }
  return singleProcessRuns.get(accumulation)!;
}

/** Both ranks hold the same weights, bit for bit, and equal the single process on the global batch (loss and weights). */
async function assertEqualsSingleProcess(r0: Record<string, any>, r1: Record<string, any>, name: string, accumulation: number): Promise<void> {
  const single = await singleProcess(accumulation);
  assert.equal(r0[name].weights, r1[name].weights, `${name}: ranks agree bit for bit`);
  close(r0[name].losses, single.losses, 1e-5, 1e-5, `${name} loss`);
  close(r0[name].weights, single.weights, 2e-5, 1e-4, `${name} weights`);
}

/** A rank's data shard without communication (the reference for DiLoCo's first outer step). */
function shardOnly(rank: number): TrainParallel {
  return {
    rank, worldSize: 2, optimizerOptions: () => ({}), attach: () => {}, gradientsReady: () => {}, finishGradients: (_s: Tensor[]) => {}, afterUpdate: () => {},
    stepMetrics: () => ({}), explain: async (e) => e,
  };
}

const skip = !glooAvailable();

test.before(async () => {
  prepareDocuments(await bundledCorpus(300), data, byteTokenizer, { valFraction: 0.05 });
});

test('blockwise quantization: codes round trip within half a step, every width packs exactly', () => {
  const n = 3 * QUANT_BLOCK + 37;
  const x = new Float32Array(n).map((_, i) => Math.sin(i * 1.7) * (1 + (i % 5)) * (i < QUANT_BLOCK ? 1e-3 : 1));
  for (const bits of [8, 4, 2]) {
    const packed = new Uint8Array(packedBytes(n, bits));
    const dq = new Float32Array(n);
    quantize(x, bits, packed, dq);
    const back = new Float32Array(n);
    dequantizeAdd(packed, n, bits, 1, back);
    assert.equal(Array.from(back), Array.from(dq), `${bits}-bit: the receiver reconstructs what the sender kept`);
    const levels = 2 ** (bits - 1) - 1;
    for (let b = 0; b * QUANT_BLOCK < n; b++) {
      const block = Array.from(x.subarray(b * QUANT_BLOCK, (b + 1) * QUANT_BLOCK));
      const step = Math.max(...block.map(Math.abs)) / levels;
      block.forEach((v, i) => assert.ok(Math.abs(v - dq[b * QUANT_BLOCK + i]) <= step / 2 + 1e-7, `${bits}-bit error at ${b * QUANT_BLOCK + i}`));
    }
    assert.is(packed.byteLength, Math.ceil((4 * Math.ceil(n / QUANT_BLOCK) + Math.ceil((n * bits) / 8)) / 4) * 4);
  }
});

test('torchrun variables are read and checked; a non-loopback address needs a token', async () => {
  assert.equal(distEnvFromProcess({ WORLD_SIZE: '2', RANK: '1', MASTER_PORT: '29500' }), { rank: 1, worldSize: 2, localRank: 1, masterAddr: '127.0.0.1', masterPort: 29500 });
  assert.is(distEnvFromProcess({}), undefined);
  // --device cuda means this rank's own GPU (cuda:LOCAL_RANK); an explicit index is kept; no flag is the CPU
  assert.is(trainDevice('cuda', 3), 'cuda:3');
  assert.is(trainDevice('cuda', undefined), 'cuda:0');
  assert.is(trainDevice('cuda:1', 3), 'cuda:1');
  assert.is(trainDevice(undefined, 3), 'cpu');
  await assertKilnError(() => trainDevice('gpu', 0), 'ERR_DEVICE');
  await assertKilnError(() => distEnvFromProcess({ WORLD_SIZE: '2', RANK: '2', MASTER_PORT: '1' }), 'ERR_ARG');
  await assertKilnError(() => distEnvFromProcess({ WORLD_SIZE: '2', RANK: '0' }), 'ERR_ARG');
  const env = { rank: 0, worldSize: 2, localRank: 0, masterPort: 29999, config: {} };
  for (const where of [{ masterAddr: '192.0.2.1' }, { masterAddr: '127.0.0.1', bindHost: '0.0.0.0' }, { masterAddr: '127.0.0.1', storeBindHost: '0.0.0.0' }]) {
    try {
      await Communicator.connect({ ...env, ...where });
      assert.unreachable('connected without a token');
    } catch (e) {
      assert.is((e as { code?: string }).code, 'ERR_ARG');
      assert.match((e as Error).message, /token/);
    }
  }
});

test('DiLoCo checkpoints carry the anchor and outer momentum: a resumed run continues exactly (one rank)', async () => {
  const comm = await Communicator.connect({ rank: 0, worldSize: 1, localRank: 0, masterAddr: '127.0.0.1', masterPort: 0, config: {} });
  const out = join(root, 'diloco-resume');
  const opts = { ...base, steps: 4, out };
  const straight = new Trainer({ ...opts, parallel: new DiLoCo(comm, { innerSteps: 2 }) });
  await straight.run();
  const expected = await weightsOf(straight);
  straight.close();
  const first = new Trainer({ ...opts, out: join(out, 'a'), parallel: new DiLoCo(comm, { innerSteps: 2 }) });
  await first.trainStep();
  await first.trainStep();
  const saved = await first.save();
  first.close();
  const resumed = new Trainer({ ...opts, out: join(out, 'a'), parallel: new DiLoCo(comm, { innerSteps: 2 }) });
  await resumed.resume(saved);
  await resumed.run();
  close(await weightsOf(resumed), expected, 0, 0, 'resumed DiLoCo weights');
  resumed.close();
  await comm.close();
});

test('sync steps equal the single-process step on the global batch (Muon + AdamW; with accumulation); distributed Newton–Schulz equals local; DiLoCo H=1 averages the ranks', async () => {
  if (skip) return console.log('  skipped: no Gloo in this build');
  const [r0, r1] = await worker(['sync', 'sync-accumulation', 'newton-schulz', 'diloco-h1']);
  for (const [name, accumulation] of [['sync', 1], ['sync-accumulation', 2]] as const) {
    // both ranks hold the same weights and report the global batch's loss
    await assertEqualsSingleProcess(r0, r1, name, accumulation);
    assert.ok(r0[name].buckets > 1, 'several gradient buckets');
    const m = r0[name].metrics;
    assert.ok(m.commBytes > 0 && m.commMs > 0 && m.commExposedMs >= 0 && m.algBandwidthGBs > 0 && m.busBandwidthGBs > 0, JSON.stringify(m));
  }
  for (const r of [r0, r1]) {
    assert.ok(r['newton-schulz'].maxDiff === 0, `sharded Newton–Schulz differs by ${r['newton-schulz'].maxDiff}`);
    assert.ok(r['newton-schulz'].moved > 0, 'the update moved the weights');
  }
  // DiLoCo, H = 1, outer lr 1, momentum 0: the new weights are the mean of the ranks' local steps
  const locals: number[][] = [];
  for (const rank of [0, 1]) {
    const t = new Trainer({ ...base, steps: 1, parallel: shardOnly(rank) });
    await t.run();
    locals.push(await weightsOf(t));
    t.close();
  }
  const mean = locals[0].map((v, i) => (v + locals[1][i]) / 2);
  assert.equal(r0['diloco-h1'].weights, r1['diloco-h1'].weights, 'DiLoCo ranks agree after the outer step');
  close(r0['diloco-h1'].weights, mean, 1e-6, 1e-5, 'DiLoCo H=1 weights');
  assert.is(r0['diloco-h1'].outerSteps, 1);
});

test('ZeRO-1: a step equals the single-process step and the unsharded step bit for bit (Muon + AdamW, accumulation, normuon, extrapolated); half the state per rank', async () => {
  if (skip) return console.log('  skipped: no Gloo in this build');
  const [r0, r1] = await worker(['sync', 'zero1', 'sync-accumulation', 'zero1-accumulation', 'zero1-optimizer']);
  for (const [name, accumulation] of [['zero1', 1], ['zero1-accumulation', 2]] as const) {
    await assertEqualsSingleProcess(r0, r1, name, accumulation);
    // the same arithmetic as the unsharded data-parallel step, only on another rank
    const unsharded = name.replace('zero1', 'sync');
    assert.equal(r0[name].weights, r0[unsharded].weights, `${name}: the weights of the unsharded step, bit for bit`);
    assert.equal(r0[name].losses, r0[unsharded].losses, `${name}: the losses of the unsharded step`);
    // the tiny model's matrices and AdamW elements split evenly: each rank holds exactly half
    const bytes = [r0, r1].map((r) => r[name].metrics.optimizerStateBytes as number);
    const full = r0[unsharded].metrics.optimizerStateBytes as number;
    assert.is(r1[unsharded].metrics.optimizerStateBytes, full);
    assert.is(bytes[0] + bytes[1], full, `${name}: the shares add up to the unsharded state (${bytes} vs ${full})`);
    for (const b of bytes) assert.ok(Math.abs(b / full - 0.5) < 0.05, `${name}: ${b} of ${full} state bytes on a rank`);
    assert.is(r0[name].metrics.zero1, 1);
    assert.is(r0[unsharded].metrics.zero1, 0);
  }
  // uneven matrices per shape (one shape rank 1 owns none of), AdamW split inside a parameter
  for (const variant of ['standard', 'normuon', 'extrapolated']) {
    const [a, b] = [r0['zero1-optimizer'][variant], r1['zero1-optimizer'][variant]];
    for (const r of [a, b]) {
      assert.is(r.weightDiff, 0, `${variant}: ZeRO-1 weights equal the local optimizer's`);
      assert.is(r.sharedDiff, 0, `${variant}: distributed Newton–Schulz alone too`);
      assert.is(r.stateDiff, 0, `${variant}: the gathered state equals the local state`);
      assert.equal(r.names[1], r.names[0], `${variant}: same state names in the same order`);
      assert.ok(r.names[0].length >= 13);
      assert.is(r.resumeDiff, 0, `${variant}: ZeRO-1 loaded from a full state continues like the unsharded optimizer`);
      assert.ok(r.moved > 0, 'the continued steps moved the weights');
      assert.is(r.refused, 'ERR_CHECKPOINT', `${variant}: an incomplete state is refused on every rank`);
      assert.ok(r.memory.zero1.stateBytes < r.memory.local.stateBytes, `${variant}: ${JSON.stringify(r.memory)}`);
    }
    if (variant !== 'extrapolated') assert.is(a.memory.zero1.stateBytes + b.memory.zero1.stateBytes, a.memory.local.stateBytes, `${variant}: shares add up`);
  }
});

test('ZeRO-1 checkpoints hold the unsharded state: a 2-rank --zero1 checkpoint resumes in one process and in 2 ranks without ZeRO-1, exactly like the unsharded run', async () => {
  if (skip) return console.log('  skipped: no Gloo in this build');
  const [r0, r1] = await worker(['save-zero1', 'save-sync', 'straight-sync', 'resume-sync-from-zero1', 'resume-zero1-from-sync']);
  const zero1 = r0['save-zero1'].path as string;
  const plain = r0['save-sync'].path as string;
  // rank 0 wrote the same tensors under the same names, byte for byte
  for (const file of ['optimizer.safetensors', 'model.safetensors']) {
    assert.ok(readFileSync(join(zero1, file)).equals(readFileSync(join(plain, file))), `${file} of the ZeRO-1 run equals the unsharded run's`);
  }
  const straight = r0['straight-sync'];
  for (const name of ['resume-sync-from-zero1', 'resume-zero1-from-sync']) {
    assert.equal(r0[name].steps, [3, 4], `${name}: resumed at step 2`);
    assert.equal(r0[name].weights, r1[name].weights, `${name}: ranks agree`);
    assert.equal(r0[name].weights, straight.weights, `${name}: continues exactly like the unsharded run`);
    assert.equal(r0[name].losses, straight.losses.slice(2), `${name}: losses`);
  }
  // one process: from the ZeRO-1 checkpoint exactly as from the unsharded one, and within f32 rounding of the 2-rank run
  const resumed: number[][] = [];
  for (const path of [zero1, plain]) {
    const t = new Trainer({ ...base, batch: 2 * B, steps: 4 });
    await t.resume(path);
    await t.run();
    resumed.push(await weightsOf(t));
    t.close();
  }
  assert.equal(resumed[0], resumed[1], 'one process resumes the ZeRO-1 checkpoint exactly as the unsharded one');
  close(resumed[0], straight.weights, 2e-5, 1e-4, 'one process after the ZeRO-1 checkpoint vs 2 ranks straight');
});

test('kiln train --nproc 2 --zero1 reports the state bytes and saves a checkpoint one process resumes; bad combinations are refused', async () => {
  if (skip) return console.log('  skipped: no Gloo in this build');
  const out = join(root, 'zero1-cli');
  const args = ['train', '--preset', 'tiny', '--data', data, '--batch', '2', '--seq', '32', '--eval-every', '0', '--log-every', '1', '--out', out];
  const run = start([cli, ...args, '--steps', '2', '--nproc', '2', '--zero1'], {});
  assert.is(await run.code, 0, run.out());
  const lines = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.is(lines.length, 2);
  assert.is(lines[1].zero1, 1);
  assert.ok(lines[1].optimizerStateBytes > 0 && lines[1].optimizerWorkspaceBytes > 0, JSON.stringify(lines[1]));
  const one = start([cli, ...args, '--batch', '4', '--steps', '3', '--resume', out], {});
  assert.is(await one.code, 0, one.out());
  assert.match(one.out(), /resumed from .* at step 2/);
  for (const bad of [['--sync', 'diloco'], ['--no-distributed-muon']]) {
    const refused = start([cli, ...args, '--steps', '2', '--nproc', '2', '--zero1', ...bad], {});
    assert.is.not(await refused.code, 0, `--zero1 ${bad.join(' ')} is refused`);
    assert.match(refused.out(), /ERR_ARG/);
    assert.match(refused.out(), /--zero1/);
  }
  const comm = await Communicator.connect({ rank: 0, worldSize: 1, localRank: 0, masterAddr: '127.0.0.1', masterPort: 0, config: {} });
  await assertKilnError(() => new SyncDataParallel(comm, { zero1: true, distributedMuon: false }), 'ERR_ARG', 'distributed Muon');
  await assertKilnError(() => joinRun({ rank: 0, worldSize: 2, localRank: 0, masterAddr: '127.0.0.1', masterPort: 1 }, base, { sync: 'diloco', zero1: true }), 'ERR_ARG', 'DiLoCo');
  const w = { name: 'w', value: zeros([4, 4]), grad: zeros([4, 4]) };
  await assertKilnError(() => new Optimizer([{ rule: 'muon', lr: 0.1, params: [w] }], { zero1: true }), 'ERR_ARG', 'newtonSchulzSharding');
  const sharding = { rank: 0, worldSize: 2, allGather: () => undefined, wait: () => {} };
  await assertKilnError(() => new Optimizer([{ rule: 'muon', lr: 0.1, params: [w] }], { newtonSchulzSharding: sharding, zero1: 'yes' as never }), 'ERR_ARG', 'zero1');
  await assertKilnError(() => new Optimizer([{ rule: 'muon', lr: 0.1, params: [w] }], null as never), 'ERR_ARG', 'options');
  await comm.close();
});

test('DiLoCo with 4- and 2-bit pseudo-gradients and error feedback converges like f32 DiLoCo, sending far fewer bytes; streamed in 2 fragments it converges alike with half the peak bytes', async () => {
  if (skip) return console.log('  skipped: no Gloo in this build');
  const [r0, r1] = await worker(['diloco-q0', 'diloco-q4', 'diloco-q2', 'diloco-s2'], { ...base, batch: 8 });
  const f32 = r0['diloco-q0'];
  const s2 = r0['diloco-s2'];
  const avg = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  assert.ok(avg(s2.losses.slice(-4)) < avg(s2.losses.slice(0, 4)) - 0.8, `streamed trains: ${s2.losses.map((l: number) => l.toFixed(2))}`);
  assert.ok(Math.abs(s2.valLoss - f32.valLoss) < 0.05 * f32.valLoss, `streamed val ${s2.valLoss} vs plain ${f32.valLoss}`);
  const peak = (r: { commBytes: number[] }) => Math.max(...r.commBytes);
  const ratio = peak(s2) / peak(f32);
  assert.ok(ratio > 0.4 && ratio < 0.6, `peak bytes per step: streamed ${peak(s2)} vs plain ${peak(f32)} (ratio ${ratio.toFixed(3)})`);
  assert.equal(s2.weights, r1['diloco-s2'].weights, 'streamed ranks end on the same weights');
  // 24 steps, H = 4, P = 2: fragment 0 syncs at 4..24 (6), fragment 1 at 2..22 (6) plus once more at the end
  assert.is(s2.outerSteps, 13);
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  for (const name of ['diloco-q4', 'diloco-q2']) {
    const q = r0[name];
    assert.ok(mean(q.losses.slice(-4)) < mean(q.losses.slice(0, 4)) - 0.8, `${name} trains: ${q.losses.map((l: number) => l.toFixed(2))}`);
    assert.ok(Math.abs(q.valLoss - f32.valLoss) < 0.1 * f32.valLoss, `${name} val ${q.valLoss} vs f32 ${f32.valLoss}`);
    // sync steps only (every 4th) carry bytes; 4-bit sends about 1/7 of f32's all-reduce, 2-bit about 1/14
    const bytes = (r: { commBytes: number[] }) => r.commBytes.reduce((a, b) => a + b, 0);
    assert.ok(bytes(q) < bytes(f32) / (name === 'diloco-q4' ? 6 : 11), `${name} bytes ${bytes(q)} vs ${bytes(f32)}`);
    // every step sends its 4-byte stop vote; the pseudo-gradients go on the 6 outer steps only
    assert.is(q.commBytes.filter((b: number) => b > 64).length, 6, 'pseudo-gradient bytes only on the 6 outer steps');
    // each step sends a 4-byte stop vote; a vote is counted when its all-reduce finishes, which
    // may fall in its own step or the next, so a step counts 0, 1 or 2 of them
    const votes = q.commBytes.filter((b: number) => b <= 64);
    assert.ok(votes.every((b: number) => b <= 8) && votes.reduce((a: number, b: number) => a + b, 0) >= 4 * 12, `stop votes: ${q.commBytes}`);
  }
});

test('DiLoCo streaming with P = 1, τ = 0 is plain DiLoCo exactly (4-bit, steps not a multiple of H)', async () => {
  if (skip) return console.log('  skipped: no Gloo in this build');
  const [r0, r1] = await worker(['diloco-plain', 'diloco-p1t0']);
  for (const r of [r0, r1]) assert.equal(r['diloco-p1t0'].weights, r['diloco-plain'].weights);
  assert.equal(r0['diloco-plain'].weights, r1['diloco-plain'].weights);
  assert.is(r0['diloco-plain'].outerSteps, 3);
});

test('a quantized DiLoCo run stopped at a checkpoint and resumed continues exactly: every rank gets its own error-feedback residual back', async () => {
  if (skip) return console.log('  skipped: no Gloo in this build');
  const [r0, r1] = await worker(['diloco-resume']);
  for (const r of [r0, r1]) {
    const x = r['diloco-resume'];
    assert.ok(x.residualAtSave.some((v: number) => v !== 0), 'the residual is not trivially zero');
    assert.equal(x.residualRestored, x.residualAtSave, `rank residual restored`);
    close(x.weights, x.expected, 0, 0, 'resumed weights');
  }
  assert.not.equal(r0['diloco-resume'].residualAtSave, r1['diloco-resume'].residualAtSave, 'the ranks\' residuals differ');
  const c = loadCheckpoint(r0['diloco-resume'].saved);
  assert.is(c.optimizer!.get('diloco.residual')!.length, 2 * r0['diloco-resume'].residualAtSave.length, 'the checkpoint holds [W, N] residuals');
});

test('DiLoCo residuals after a world-size change: every rank starts from the mean of the saved ranks\' residuals', async () => {
  const comm = await Communicator.connect({ rank: 0, worldSize: 1, localRank: 0, masterAddr: '127.0.0.1', masterPort: 0, config: {} });
  const parallel = new DiLoCo(comm, { innerSteps: 2, quantBits: 4 });
  const trainer = new Trainer({ ...base, parallel });
  const n = trainer.model.parameters.reduce((a, p) => a + p.value.numel, 0);
  const saved = new Float32Array(3 * n).map((_, i) => Math.sin(i) * (1 + Math.floor(i / n)));
  parallel.loadState(new Map([['diloco.residual', saved]]));
  const got = (await parallel.residualValues())!;
  const expected = new Float32Array(n).map((_, i) => (saved[i] + saved[n + i] + saved[2 * n + i]) / 3);
  close(Array.from(got), Array.from(expected), 1e-7, 1e-6, 'mean residual');
  parallel.loadState(new Map([['diloco.residual', saved.subarray(n, 2 * n)]]));
  close(Array.from((await parallel.residualValues())!), Array.from(saved.subarray(n, 2 * n)), 0, 0, 'same world size: own residual');
  await assertKilnError(() => parallel.loadState(new Map([['diloco.residual', new Float32Array(n + 1)]])), 'ERR_CHECKPOINT');
  trainer.close();
  parallel.dispose();
  await comm.close();
});

test('DiLoCo streaming options are checked', async () => {
  const comm = await Communicator.connect({ rank: 0, worldSize: 1, localRank: 0, masterAddr: '127.0.0.1', masterPort: 0, config: {} });
  await assertKilnError(() => new DiLoCo(comm, { innerSteps: 4, overlapSteps: 4 }), 'ERR_ARG');
  await assertKilnError(() => new DiLoCo(comm, { innerSteps: 4, streamFragments: 5 }), 'ERR_ARG');
  await assertKilnError(() => new DiLoCo(comm, { innerSteps: 4, streamFragments: 2, mixAlpha: 1.5 }), 'ERR_ARG');
  assert.equal(fragmentStarts([10, 10, 10, 10], 2), [0, 2]);
  assert.equal(fragmentStarts([1, 100, 1], 3), [0, 1, 2]);
  assert.equal(fragmentStarts([5], 1), [0]);
  await assertKilnError(() => fragmentStarts([5, 5], 3), 'ERR_ARG');
  await comm.close();
});

test('killing a rank stops the other with ERR_DIST naming it; the run resumes from its last checkpoint (kiln train --nproc 2)', async () => {
  if (skip) return console.log('  skipped: no Gloo in this build');
  const out = join(root, 'fault');
  const args = ['train', '--preset', 'tiny', '--data', data, '--batch', '2', '--seq', '32', '--eval-every', '0', '--log-every', '1', '--out', out, '--dist-timeout', '20'];
  const children = await ranks(() => [cli, ...args, '--steps', '400', '--checkpoint-every', '2']);
  // wait for a checkpoint and a few steps, then kill rank 1
  const deadline = Date.now() + 40_000;
  while (!(existsSync(join(out, 'latest')) && /step [4-9]\b|step \d\d/.test(children[1].out())) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  const killedAt = Date.now();
  children[1].kill();
  const code = await children[0].code;
  const waited = Date.now() - killedAt;
  assert.is.not(code, 0, 'rank 0 fails');
  assert.ok(waited < 20_000, `rank 0 stopped ${waited} ms after the kill (timeout 20 s)`);
  assert.match(children[0].out(), /ERR_DIST/);
  assert.match(children[0].out(), /rank 1 left the run/);
  const latest = JSON.parse(readFileSync(join(out, 'latest'), 'utf8')).checkpoint as string;
  const step = Number(latest.replace('step-', ''));
  assert.ok(step >= 2);
  const resume = start([cli, ...args, '--steps', String(step + 2), '--resume', out, '--nproc', '2'], {});
  assert.is(await resume.code, 0, resume.out());
  assert.match(resume.out(), new RegExp(`resumed from .* at step ${step}`));
  const lines = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const last = lines[lines.length - 1];
  assert.is(last.step, step + 2);
  assert.is(last.worldSize, 2);
});

test('a stop asked of one rank stops every rank after the same step (sync: that step; DiLoCo: the next, then a last outer step)', async () => {
  if (skip) return console.log('  skipped: no Gloo in this build');
  const [r0, r1] = await worker(['stop-sync', 'stop-diloco']);
  // rank 1 asks after its step 3: its vote travels in step 4; sync sums it with step 4's
  // gradients, DiLoCo's vote all-reduce gets one more step to arrive
  for (const [name, last] of [['stop-sync', 4], ['stop-diloco', 5]] as const) {
    for (const r of [r0, r1]) {
      assert.equal(r[name].steps, Array.from({ length: last }, (_, i) => i + 1), `${name}: rank stopped after step ${last}`);
      assert.ok(r[name].stopping, `${name}: the trainer reports the stop`);
    }
    assert.equal(r0[name].weights, r1[name].weights, `${name}: the ranks end on the same weights`);
  }
  // H = 4: the outer step at 4, and one more when the loop ends at 5
  assert.is(r0['stop-diloco'].outerSteps, 2);
});

test('DiLoCo ends on the ranks\' common anchor when the run stops between synchronizations', async () => {
  if (skip) return console.log('  skipped: no Gloo in this build');
  // 6 steps with H = 4: an outer step at 4, and one more when the loop ends at 6
  const [r0, r1] = await worker(['diloco-end']);
  assert.is(r0['diloco-end'].outerSteps, 2);
  assert.equal(r0['diloco-end'].weights, r1['diloco-end'].weights, 'identical weights after the final outer step');
});

test('Ctrl-C on kiln train --nproc 2: every rank stops after the same step and rank 0 saves a checkpoint', async () => {
  if (skip) return console.log('  skipped: no Gloo in this build');
  const out = join(root, 'sigint');
  const args = ['train', '--preset', 'tiny', '--data', data, '--batch', '2', '--seq', '32', '--eval-every', '0', '--log-every', '1', '--out', out, '--steps', '400', '--nproc', '2'];
  const run = start([cli, ...args], {});
  const deadline = Date.now() + 60_000;
  while (!/\[rank 1\] step 3\b/.test(run.out()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  run.kill('SIGINT');
  assert.is(await run.code, 0, run.out());
  const text = run.out();
  assert.match(text, /stopped early; checkpoint: /);
  const last = (rank: number) => Math.max(...[...text.matchAll(new RegExp(`\\[rank ${rank}\\] step (\\d+) `, 'g'))].map((m) => Number(m[1])));
  assert.is(last(0), last(1), 'both ranks logged the same last step');
  const latest = JSON.parse(readFileSync(join(out, 'latest'), 'utf8')).checkpoint as string;
  assert.is(Number(latest.replace('step-', '')), last(0));
  assert.ok(last(0) < 400, 'stopped early');
  // the checkpoint's trainer state names the world size, not the live data-parallel objects
  const trainerJson = JSON.parse(readFileSync(join(out, latest, 'trainer.json'), 'utf8'));
  assert.is(trainerJson.options.worldSize, 2);
  assert.is(trainerJson.options.parallel, undefined);
});

test('a rank with a different config is refused at rendezvous', async () => {
  if (skip) return console.log('  skipped: no Gloo in this build');
  const args = ['train', '--preset', 'tiny', '--data', data, '--batch', '2', '--seq', '32', '--steps', '2', '--eval-every', '0', '--out', join(root, 'mismatch')];
  const children = await ranks((rank) => [cli, ...args, '--muon-lr', rank === 0 ? '0.02' : '0.03']);
  const codes = await Promise.all(children.map((c) => c.code));
  assert.ok(codes.every((c) => c !== 0), 'both ranks stop');
  const text = children.map((c) => c.out()).join('\n');
  assert.match(text, /ERR_DIST: rank \d refused at rendezvous: rank \d's training config \(hash [0-9a-f]+\) differs from rank \d's/);
});

test.run();
