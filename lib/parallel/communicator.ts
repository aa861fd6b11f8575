/**
 * The communicator of a data-parallel run: rendezvous (torchrun's environment: MASTER_ADDR,
 * MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK), the config check, and the collectives as queued
 * ops (lib/ops/collectives.ts, Gloo underneath). Training code composes `allReduce`/`allGather`
 * like any op and never names a backend.
 *
 * CUDA tensors: all-reduce, all-gather and broadcast go through NCCL when libnccl.so.2 loads at
 * run time, else they are staged through host memory into Gloo (lib/ops/collectives.ts). Neither
 * can be checked without GPUs: both are refused unless KILN_CUDA_DIST=1; `stats().cudaBackend`
 * and `cudaCollectives()` say which one runs.
 */
import { createHash } from 'node:crypto';
import { KilnError, fail } from '../errors.js';
import * as coll from '../ops/collectives.js';
import type { Tensor } from '../tensor.js';
import { LOOPBACK, StoreServer, StoreSession, isLoopback } from './store.js';

export interface DistEnv {
  rank: number;
  worldSize: number;
  localRank: number;
  masterAddr: string;
  masterPort: number;
}

function envInt(env: NodeJS.ProcessEnv, name: string): number | undefined {
  const v = env[name];
  if (v === undefined || v === '') return undefined;
  if (!/^\d+$/.test(v)) fail('ERR_ARG', `${name} must be a non-negative integer, got '${v}'`);
  return Number(v);
}

/** The run's place from torchrun-style variables; undefined when WORLD_SIZE is unset. */
export function distEnvFromProcess(env: NodeJS.ProcessEnv = process.env): DistEnv | undefined {
  const worldSize = envInt(env, 'WORLD_SIZE');
  if (worldSize === undefined) return undefined;
  const rank = envInt(env, 'RANK');
  if (worldSize < 1) fail('ERR_ARG', 'WORLD_SIZE must be at least 1');
  if (rank === undefined || rank >= worldSize) fail('ERR_ARG', `RANK must be set to an integer below WORLD_SIZE (${worldSize}), got ${env.RANK}`);
  const masterPort = envInt(env, 'MASTER_PORT');
  if (worldSize > 1 && (masterPort === undefined || masterPort < 1 || masterPort > 65535)) fail('ERR_ARG', `MASTER_PORT must be a port number, got '${env.MASTER_PORT}'`);
  return { rank, worldSize, localRank: envInt(env, 'LOCAL_RANK') ?? rank, masterAddr: env.MASTER_ADDR || LOOPBACK, masterPort: masterPort ?? 0 };
}

/** sha256 of a JSON value with keys sorted at every level. */
export function configHash(value: unknown): string {
  const canonical = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(canonical);
    if (v && typeof v === 'object') return Object.keys(v).sort().map((k) => [k, canonical((v as Record<string, unknown>)[k])]);
    return v;
  };
  return createHash('sha256').update(JSON.stringify(canonical(value))).digest('hex');
}

export interface ConnectOptions extends DistEnv {
  /** hashed and compared at rendezvous: a rank with a different config is refused */
  config: unknown;
  /** per collective and for the rendezvous (default 60 s) */
  timeoutMs?: number;
  /** a shared secret, required when the store or Gloo listen on a non-loopback address */
  token?: string;
  /** the address this rank's Gloo transport listens on (default 127.0.0.1; others need a token) */
  bindHost?: string;
  /** rank 0: the address the store listens on (default 127.0.0.1; others need a token) */
  storeBindHost?: string;
}

export interface CommStepStats {
  /** time collectives ran on the communication thread */
  commMs: number;
  /** time the op queue sat waiting for a collective (not hidden under compute) */
  commExposedMs: number;
  /** bytes this rank sent (the algorithm's count, e.g. ring all-reduce 2(W−1)/W · payload) */
  commBytes: number;
  /** payload bytes of the collectives (S in nccl-tests' algbw = S / t) */
  commPayloadBytes: number;
  collectives: number;
  /** the most recent collective alone (benchmarks) */
  lastCollectiveMs: number;
  /** the path CUDA tensors took: 'nccl', 'gloo-staged', or '' while none ran */
  cudaBackend: string;
}

export class Communicator {
  readonly rank: number;
  readonly worldSize: number;
  readonly localRank: number;
  private readonly handle: coll.CommHandle;
  private readonly session?: StoreSession;
  private readonly store?: StoreServer;
  /** labels the collectives for error messages */
  step = 0;
  private closed = false;

  private constructor(env: DistEnv, handle: coll.CommHandle, session?: StoreSession, store?: StoreServer) {
    this.rank = env.rank;
    this.worldSize = env.worldSize;
    this.localRank = env.localRank;
    this.handle = handle;
    this.session = session;
    this.store = store;
  }

  /** Joins the run: rank 0 hosts the store; every rank says hello with its config hash, then Gloo connects. */
  static async connect(options: ConnectOptions): Promise<Communicator> {
    const timeoutMs = options.timeoutMs ?? 60_000;
    const bindHost = options.bindHost ?? LOOPBACK;
    const storeBindHost = options.storeBindHost ?? LOOPBACK;
    for (const [what, host] of [['MASTER_ADDR', options.masterAddr], ['the Gloo bind address', bindHost], ['the store bind address', storeBindHost]] as const) {
      if (!isLoopback(host) && !options.token) fail('ERR_ARG', `${what} ${host} is not a loopback address: a run across machines needs a shared token (--dist-token or KILN_DIST_TOKEN)`);
    }
    if (options.worldSize === 1) {
      const handle = await coll.connect({ rank: 0, worldSize: 1, storeHost: LOOPBACK, storePort: 0, token: '', prefix: '', bindHost, timeoutMs });
      return new Communicator(options, handle);
    }
    if (!coll.glooAvailable()) fail('ERR_NO_GLOO', 'this kiln build has no Gloo, so it cannot run more than one rank: install it (Debian/Ubuntu: apt-get install libgloo-dev) and rebuild kiln (npm rebuild)');
    let store: StoreServer | undefined;
    if (options.rank === 0) store = await StoreServer.listen({ host: storeBindHost, port: options.masterPort, token: options.token });
    let session: StoreSession;
    try {
      const hash = configHash(options.config);
      session = await StoreSession.join(options.masterAddr, options.masterPort, { rank: options.rank, worldSize: options.worldSize, configHash: hash }, { token: options.token, timeoutMs });
    } catch (e) {
      await store?.close();
      throw e;
    }
    try {
      const handle = await coll.connect({
        rank: options.rank, worldSize: options.worldSize, storeHost: options.masterAddr, storePort: options.masterPort, token: options.token ?? '', prefix: 'gloo/', bindHost, timeoutMs,
      });
      return new Communicator(options, handle, session, store);
    } catch (e) {
      session.close();
      await store?.close();
      throw e;
    }
  }

  private label(what: string): string {
    return `step ${this.step}: ${what}`;
  }

  /** Queued in-place sum (average: mean) of f32 tensors as one message. */
  allReduce(tensors: Tensor[], options: { average?: boolean; bf16Wire?: boolean; what?: string } = {}): coll.Work {
    return coll.allReduce(this.handle, tensors, { average: options.average ?? true, bf16Wire: options.bf16Wire, label: this.label(options.what ?? 'all-reduce') });
  }

  allReduceValues(t: Tensor, options: { average?: boolean; what?: string } = {}): coll.Work {
    return coll.allReduceValues(this.handle, t, { average: options.average ?? true, label: this.label(options.what ?? 'all-reduce') });
  }

  /** `t`: worldSize equal chunks; chunk `rank` in, all chunks out. */
  allGather(t: Tensor, what = 'all-gather'): coll.Work {
    return coll.allGather(this.handle, t, this.worldSize, this.label(what));
  }

  broadcast(t: Tensor, root = 0, what = 'broadcast'): coll.Work {
    return coll.broadcast(this.handle, t, root, this.label(what));
  }

  barrier(what = 'barrier'): coll.Work {
    return coll.barrier(this.handle, this.label(what));
  }

  /** Later ops wait for `work` (queued; the caller's thread never blocks). */
  wait(work: coll.Work): void {
    coll.waitWork(work);
  }

  stats(): CommStepStats {
    const s = coll.commStats(this.handle);
    return { commMs: s.commMs, commExposedMs: s.exposedMs, commBytes: s.wireBytes, commPayloadBytes: s.payloadBytes, collectives: s.collectives, lastCollectiveMs: s.lastMs, cudaBackend: s.cudaBackend };
  }

  /** Which path collectives on CUDA tensors take in this process, for the run's log. */
  cudaCollectives(): string {
    const gate = coll.cudaCollectivesEnabled() ? 'enabled by KILN_CUDA_DIST=1, unverified without GPUs' : 'refused unless KILN_CUDA_DIST=1 (unverified without GPUs)';
    const forced = process.env.KILN_DIST_CUDA_BACKEND;
    if (forced === 'staged') return `CUDA tensors staged through host memory into Gloo (KILN_DIST_CUDA_BACKEND=staged); ${gate}`;
    const nccl = coll.ncclStatus();
    return nccl.available
      ? `CUDA tensors through NCCL ${nccl.version} (${nccl.library}); ${gate}`
      : `CUDA tensors staged through host memory into Gloo (NCCL not used: ${nccl.reason}); ${gate}`;
  }

  /**
   * Turns an error from a step into the run's error: a failed collective becomes ERR_DIST naming
   * this rank, the step and, when the store saw it leave, the rank that left.
   */
  async explain(error: unknown): Promise<unknown> {
    if (!(error instanceof KilnError) || error.code !== 'ERR_DIST' || !this.session) return error;
    await this.session.waitForGone(2000);
    const gone = [...this.session.gone].filter((r) => r !== this.rank).sort((a, b) => a - b);
    const who = gone.length ? `rank ${gone.join(', rank ')} left the run (its connection closed)` : 'no rank is known to have left (a timeout or a network fault?)';
    return new KilnError('ERR_DIST', `rank ${this.rank} stopped at step ${this.step}: ${who}; ${error.message}`, { cause: error });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    coll.closeComm(this.handle);
    this.session?.close();
    await this.store?.close();
  }
}
