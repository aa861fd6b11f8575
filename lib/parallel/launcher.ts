/**
 * Starting a data-parallel run. `kiln train --nproc N ...` starts N local ranks of the same
 * command (children with torchrun's variables set: MASTER_ADDR=127.0.0.1, MASTER_PORT a free
 * port, RANK, LOCAL_RANK, WORLD_SIZE); the same command with those variables set joins a run
 * spanning machines (rank 0's MASTER_ADDR:MASTER_PORT hosts the store).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { fail } from '../errors.js';
import type { TrainOptions, TrainParallel } from '../train/trainer.js';
import { Communicator, type DistEnv } from './communicator.js';
import { SyncDataParallel } from './data_parallel.js';
import { DiLoCo } from './diloco.js';

export interface ParallelFlags {
  sync: 'sync' | 'diloco';
  innerSteps?: number;
  outerLr?: number;
  outerMomentum?: number;
  quantBits?: 0 | 8 | 4 | 2;
  /** Streaming DiLoCo (see DiLoCoOptions) */
  streamFragments?: number;
  overlapSteps?: number;
  mixAlpha?: number;
  bucketBytes?: number;
  bf16Reduce?: boolean;
  distributedMuon?: boolean;
  /** ZeRO-1 optimizer-state sharding (sync mode only) */
  zero1?: boolean;
  timeoutMs?: number;
  token?: string;
  bindHost?: string;
  storeBindHost?: string;
  baselineTokensPerSecond?: number;
}

/** A free TCP port on 127.0.0.1 (bound then released; the store binds it a moment later). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/**
 * Runs `argv` (a node script and its arguments) as N local ranks; resolves with the first
 * non-zero exit code (0 when all succeeded). When one rank fails, the others stop on their
 * own within the collective timeout (their collectives fail with ERR_DIST naming it).
 */
export async function launchLocal(nproc: number, argv: string[], options: { env?: NodeJS.ProcessEnv; port?: number; prefixOutput?: boolean } = {}): Promise<number> {
  if (!Number.isSafeInteger(nproc) || nproc < 1) fail('ERR_ARG', `--nproc must be a positive integer, got ${nproc}`);
  const port = options.port ?? (await freePort());
  const children: ChildProcess[] = [];
  const exits: Promise<number>[] = [];
  for (let rank = 0; rank < nproc; rank++) {
    const env = { ...process.env, ...options.env, MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), RANK: String(rank), LOCAL_RANK: String(rank), WORLD_SIZE: String(nproc) };
    const child = spawn(process.execPath, argv, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    const tag = (stream: NodeJS.WriteStream) => (chunk: Buffer) => {
      const text = chunk.toString('utf8');
      stream.write(options.prefixOutput === false ? text : text.replace(/^(?=.)/gm, `[rank ${rank}] `));
    };
    child.stdout!.on('data', tag(process.stdout));
    child.stderr!.on('data', tag(process.stderr));
    exits.push(new Promise((resolve) => child.on('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1)))));
  }
  const forward = (signal: NodeJS.Signals) => () => children.forEach((c) => c.kill(signal));
  const onInt = forward('SIGINT');
  const onTerm = forward('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  try {
    const codes = await Promise.all(exits);
    return codes.find((c) => c !== 0) ?? 0;
  } finally {
    process.removeListener('SIGINT', onInt);
    process.removeListener('SIGTERM', onTerm);
  }
}

/** ZeRO-1 shards synchronous data parallelism's optimizer state; DiLoCo's inner optimizer is each rank's own. */
export function checkZero1(flags: Pick<ParallelFlags, 'sync' | 'zero1' | 'distributedMuon'>): void {
  if (!flags.zero1) return;
  if (flags.sync !== 'sync') fail('ERR_ARG', `--zero1 shards the optimizer of synchronous data parallelism (--sync sync); DiLoCo's inner optimizer is local to each rank, got --sync ${String(flags.sync)}`);
  if (flags.distributedMuon === false) fail('ERR_ARG', '--zero1 keeps Muon momentum only for the matrices a rank orthogonalizes: it cannot run with --no-distributed-muon');
}

/** What every rank must agree on (hashed at rendezvous). */
export function runConfig(options: TrainOptions, flags: ParallelFlags, worldSize: number): unknown {
  // paths differ between machines; what is trained on them must not
  const { parallel: _p, out: _o, device: _d, data: _data, ...rest } = options;
  const { token: _t, bindHost: _b, storeBindHost: _s, baselineTokensPerSecond: _bt, timeoutMs: _tm, ...modes } = flags;
  return { train: rest, modes, worldSize };
}

/** Joins the run described by `env` and returns the trainer's parallel hooks and the communicator. */
export async function joinRun(env: DistEnv, options: TrainOptions, flags: ParallelFlags): Promise<{ parallel: TrainParallel; comm: Communicator }> {
  if (flags.sync !== 'sync' && flags.sync !== 'diloco') fail('ERR_ARG', `--sync must be sync or diloco, got ${String(flags.sync)}`);
  checkZero1(flags);
  const comm = await Communicator.connect({
    ...env, config: runConfig(options, flags, env.worldSize), timeoutMs: flags.timeoutMs, token: flags.token, bindHost: flags.bindHost, storeBindHost: flags.storeBindHost,
  });
  // the run's log says which path CUDA gradients take (NCCL or host staging into Gloo)
  if (options.device && options.device !== 'cpu' && env.rank === 0) console.log(`collectives: ${comm.cudaCollectives()}`);
  const parallel: TrainParallel =
    flags.sync === 'diloco'
      ? new DiLoCo(comm, {
        innerSteps: flags.innerSteps ?? 50, outerLr: flags.outerLr, outerMomentum: flags.outerMomentum, quantBits: flags.quantBits, baselineTokensPerSecond: flags.baselineTokensPerSecond,
        streamFragments: flags.streamFragments, overlapSteps: flags.overlapSteps, mixAlpha: flags.mixAlpha,
      })
      : new SyncDataParallel(comm, { bucketBytes: flags.bucketBytes, bf16Reduce: flags.bf16Reduce, distributedMuon: flags.distributedMuon, zero1: flags.zero1, baselineTokensPerSecond: flags.baselineTokensPerSecond });
  return { parallel, comm };
}
