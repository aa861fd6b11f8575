#!/usr/bin/env node
/**
 * Data-parallel benchmarks (lib/parallel), two local ranks over 127.0.0.1:
 *
 *   node dist/bench/dist.js [--only bandwidth,scaling] [--repeats 100] [--rounds 3] [--steps 43] [--out bench/results] [--data DIR]
 *
 * - bandwidth: kiln's all-reduce (queued op, packed on the communication thread, Gloo ring) of
 *   1 MiB and 25 MiB f32 buffers against a minimal C++ driver straight on libgloo
 *   (bench/peers/gloo_allreduce.cc, compiled here with g++; Debian ships no Gloo benchmark),
 *   same sizes, same transport. Reports algbw and busbw (nccl-tests' definitions), medians.
 * - scaling: the tiny preset, `kiln train` with one 1-thread rank against `--nproc 2` with two
 *   1-thread ranks (same per-rank batch): scaling efficiency = tokens/s(2) / (2 · tokens/s(1)),
 *   medians over the steps after warm-up, with the exposed communication per step.
 *
 * The machine's load average is recorded with every measurement (shared cores skew them).
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Communicator, distEnvFromProcess } from '../lib/parallel/communicator.js';
import { freePort } from '../lib/parallel/launcher.js';
import { synchronize, tensor } from '../lib/index.js';
import type { AllReduceFigures, AllReduceRow, ScalingRow } from '../lib/monitor/results_schema.js';
import { distBenchData, median, runProcess, writeResults } from './harness.js';
import { DIST_TARGETS } from './targets.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const cli = join(here, '..', 'lib', 'cli', 'cli.js');

/** One rank of the kiln all-reduce measurement (spawned by bandwidth()). */
async function rankBandwidth(sizes: number[], repeats: number): Promise<void> {
  const env = distEnvFromProcess()!;
  const comm = await Communicator.connect({ ...env, config: 'bandwidth', timeoutMs: 120_000 });
  const results = [];
  for (const bytes of sizes) {
    const t = tensor(new Float32Array(bytes / 4).map((_, i) => (i % 97) * 0.01 + env.rank), { shape: [bytes / 4] });
    const times: number[] = [];
    const wall: number[] = [];
    for (let r = 0; r < repeats + 2; r++) {
      // barrier then all-reduce back to back on the queue, as the Gloo driver does (no JS round trip between them to skew the ranks)
      comm.wait(comm.barrier());
      const start = performance.now();
      comm.wait(comm.allReduce([t], { average: false }));
      await synchronize();
      const w = performance.now() - start;
      // the collective's own time on the communication thread (what the Gloo driver times), and the op's round trip from JS
      if (r >= 2) {
        times.push(comm.stats().lastCollectiveMs);
        wall.push(w);
      }
    }
    const ms = median(times);
    const alg = bytes / (ms / 1e3) / 1e9;
    results.push({ bytes, medianMs: ms, algBandwidthGBs: alg, busBandwidthGBs: (alg * 2 * (env.worldSize - 1)) / env.worldSize, medianRoundTripMs: median(wall) });
    t.dispose();
  }
  console.log(JSON.stringify({ rank: env.rank, results }));
  await comm.close();
}

/** Runs the kiln ranks once: each size `repeats` times after two warm-ups; rank 0's medians. */
async function kilnRound(sizes: number[], repeats: number): Promise<{ bytes: number; medianMs: number; algBandwidthGBs: number; busBandwidthGBs: number; medianRoundTripMs: number }[]> {
  const port = await freePort();
  const ranks = await Promise.all([0, 1].map((rank) =>
    runProcess([process.execPath, join(here, 'dist.js'), 'rank-bandwidth', String(repeats), ...sizes.map(String)], {
      MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), RANK: String(rank), WORLD_SIZE: '2', KILN_NUM_THREADS: '1',
    })));
  for (const r of ranks) if (r.code !== 0) throw new Error(`kiln bandwidth rank failed:\n${r.out}`);
  return JSON.parse(ranks[0].out.trim().split('\n').pop()!).results;
}

/** Runs the Gloo driver once per size, `repeats` times after two warm-ups; rank 0's medians. */
async function glooRound(exe: string, sizes: number[], repeats: number): Promise<{ bytes: number; medianMs: number; algBandwidthGBs: number; busBandwidthGBs: number }[]> {
  const out = [];
  for (const bytes of sizes) {
    const store = mkdtempSync(join(tmpdir(), 'kiln-gloo-store-'));
    const rs = await Promise.all([0, 1].map((rank) => runProcess([exe, store, String(bytes), String(repeats)], { RANK: String(rank), WORLD_SIZE: '2' })));
    for (const r of rs) if (r.code !== 0) throw new Error(r.out);
    out.push(JSON.parse(rs[0].out.trim()));
  }
  return out;
}

/**
 * kiln against the Gloo driver in alternating rounds (kiln, Gloo, kiln, Gloo, ...), so a change
 * in the machine's state (other load, frequency) falls on both; each figure is the median of the
 * round medians, every round's median kept in the JSON. A handful of repeats is not enough: the
 * first dozen collectives of a fresh connection are several times slower (TCP windows growing).
 */
async function bandwidth(sizes: number[], repeats: number, rounds: number): Promise<AllReduceRow[]> {
  const exe = join(mkdtempSync(join(tmpdir(), 'kiln-gloo-')), 'gloo_allreduce');
  let peerNote = '';
  try {
    execFileSync('g++', ['-O2', '-std=c++17', join(root, 'bench', 'peers', 'gloo_allreduce.cc'), '-lgloo', '-pthread', '-o', exe], { stdio: 'pipe' });
  } catch (e) {
    peerNote = `the Gloo driver could not be built: ${(e as Error).message.split('\n')[0]}`;
  }
  const kilnRounds: Awaited<ReturnType<typeof kilnRound>>[] = [];
  const glooRounds: Awaited<ReturnType<typeof glooRound>>[] = [];
  const loads: number[] = [];
  for (let r = 0; r < rounds; r++) {
    loads.push(loadavg()[0]);
    kilnRounds.push(await kilnRound(sizes, repeats));
    if (!peerNote) glooRounds.push(await glooRound(exe, sizes, repeats));
  }
  const out: AllReduceRow[] = [];
  for (const [i, bytes] of sizes.entries()) {
    const kMs = median(kilnRounds.map((k) => k[i].medianMs));
    const gMs = glooRounds.length ? median(glooRounds.map((g) => g[i].medianMs)) : undefined;
    const alg = (ms: number) => bytes / (ms / 1e3) / 1e9;
    const kiln: AllReduceFigures = { medianMs: kMs, algBandwidthGBs: alg(kMs), busBandwidthGBs: alg(kMs), roundMedianMs: kilnRounds.map((k) => k[i].medianMs), medianRoundTripMs: median(kilnRounds.map((k) => k[i].medianRoundTripMs)) };
    const gloo: AllReduceFigures | undefined = gMs === undefined ? undefined : { medianMs: gMs, algBandwidthGBs: alg(gMs), busBandwidthGBs: alg(gMs), roundMedianMs: glooRounds.map((g) => g[i].medianMs) };
    // two ranks: busbw = algbw · 2(W−1)/W = algbw
    const row: AllReduceRow = { benchmark: 'allreduce-loopback', worldSize: 2, bytes, repeats, rounds, kiln, gloo, ratioOfGloo: gloo ? gMs! / kMs : undefined, loadAverages: loads, note: peerNote || undefined };
    console.log(`all-reduce ${(bytes / 2 ** 20).toFixed(0)} MiB: kiln ${kMs.toFixed(2)} ms ${kiln.algBandwidthGBs.toFixed(3)} GB/s algbw` +
      (gloo ? `, Gloo driver ${gMs!.toFixed(2)} ms ${gloo.algBandwidthGBs.toFixed(3)} GB/s: ${(100 * row.ratioOfGloo!).toFixed(0)}% (target >= ${100 * DIST_TARGETS.allReduceOfGloo}%)` : ` (${peerNote})`) +
      ` [${rounds} rounds of ${repeats}; load ${loads.map((l) => l.toFixed(1)).join('/')}]`);
    out.push(row);
  }
  return out;
}

/**
 * Scaling efficiency = tokens/s of two ranks / (2 · tokens/s of one rank), both with one thread
 * per rank and the same per-rank batch, in alternating rounds (1 rank, 2 ranks, 1 rank, ...);
 * medians over the steps after warm-up, then over rounds. Two ranks also run without
 * distributed Muon: with it each rank orthogonalizes half the matrices, so a rank's step is
 * cheaper than the lone rank's and the efficiency can pass 100%; without it the figure is the
 * communication's cost alone.
 */
async function scaling(data: string, steps: number, batch: number, rounds: number): Promise<ScalingRow[]> {
  const common = ['train', '--preset', 'tiny', '--data', data, '--steps', String(steps), '--batch', String(batch), '--seq', '128', '--eval-every', '0', '--log-every', '1000'];
  const measure = async (nproc: number, extra: string[] = []) => {
    const out = mkdtempSync(join(tmpdir(), `kiln-scaling-${nproc}-`));
    const args = [process.execPath, cli, ...common, '--out', out, ...(nproc > 1 ? ['--nproc', String(nproc)] : []), ...extra];
    const load = loadavg()[0];
    const r = await runProcess(args, { KILN_NUM_THREADS: '1' });
    if (r.code !== 0) throw new Error(`kiln train --nproc ${nproc} failed:\n${r.out}`);
    const lines = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).slice(3);
    return {
      nproc, tokensPerSecond: median(lines.map((m) => m.tokensPerSecond)), stepMs: median(lines.map((m) => m.stepMs)),
      optimizerMs: median(lines.map((m) => m.optimizerMs)),
      commMs: nproc > 1 ? median(lines.map((m) => m.commMs)) : 0, commExposedMs: nproc > 1 ? median(lines.map((m) => m.commExposedMs)) : 0,
      commBytes: nproc > 1 ? median(lines.map((m) => m.commBytes)) : 0, loadAverageBefore: load, loadAverageAfter: loadavg()[0],
    };
  };
  const ones = [];
  const twos = [];
  const plain = [];
  for (let r = 0; r < rounds; r++) {
    ones.push(await measure(1));
    twos.push(await measure(2));
    plain.push(await measure(2, ['--no-distributed-muon']));
  }
  const tps = (xs: { tokensPerSecond: number }[]) => median(xs.map((x) => x.tokensPerSecond));
  const efficiency = tps(twos) / (2 * tps(ones));
  const plainEfficiency = tps(plain) / (2 * tps(ones));
  const two = twos[twos.length - 1];
  console.log(`scaling (tiny, 1-thread ranks, batch ${batch}/rank, ${rounds} rounds): 1 rank ${tps(ones).toFixed(0)} tok/s, 2 ranks ${tps(twos).toFixed(0)} tok/s ` +
    `(comm ${two.commMs.toFixed(1)} ms, exposed ${two.commExposedMs.toFixed(1)} ms of ${two.stepMs.toFixed(0)} ms/step): efficiency ${(100 * efficiency).toFixed(0)}% (target >= ${100 * DIST_TARGETS.scalingEfficiency}%); ` +
    `without distributed Muon ${tps(plain).toFixed(0)} tok/s, ${(100 * plainEfficiency).toFixed(0)}%; load ${ones.map((o) => o.loadAverageBefore.toFixed(1)).join('/')}`);
  return [{ benchmark: 'scaling-tiny', batchPerRank: batch, seqLen: 128, steps, rounds, one: ones, two: twos, twoWithoutDistributedMuon: plain, scalingEfficiency: efficiency, scalingEfficiencyWithoutDistributedMuon: plainEfficiency }];
}

async function main(): Promise<void> {
  if (process.argv[2] === 'rank-bandwidth') return rankBandwidth(process.argv.slice(4).map(Number), Number(process.argv[3]));
  const { values } = parseArgs({
    options: { only: { type: 'string', default: 'bandwidth,scaling' }, out: { type: 'string', default: 'bench/results' }, data: { type: 'string' }, steps: { type: 'string', default: '43' }, batch: { type: 'string', default: '8' }, repeats: { type: 'string', default: '100' }, rounds: { type: 'string', default: '3' } },
  });
  const only = values.only!.split(',');
  const results: (AllReduceRow | ScalingRow)[] = [];
  if (only.includes('bandwidth')) results.push(...(await bandwidth([2 ** 20, 25 * 2 ** 20], Number(values.repeats), Number(values.rounds))));
  if (only.includes('scaling')) {
    const data = await distBenchData(values.data);
    results.push(...(await scaling(data, Number(values.steps), Number(values.batch), Number(values.rounds))));
  }
  const { allReduceOfGloo, scalingEfficiency } = DIST_TARGETS;
  console.log(`wrote ${writeResults(values.out!, 'dist', results, { allReduceOfGloo, scalingEfficiency })}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
