/**
 * Collective communication ops (native/runtime/communicator.h): argument checks and the binding
 * calls, for lib/parallel. Each collective is queued like any op: it starts once the ops queued
 * before it (its producers) have run and returns a Work at once; `waitWork(work)` queues the
 * point where later ops need its result, so every op queued in between overlaps the
 * communication. A failed collective (a peer gone, a timeout) surfaces as ERR_DIST at the next
 * read or synchronize.
 *
 * CUDA tensors (all-reduce, all-gather, broadcast) go through NCCL, loaded at run time when
 * libnccl.so.2 is present (native/runtime/nccl.h), else they are staged through host memory into
 * Gloo; KILN_DIST_CUDA_BACKEND=nccl|staged forces one. Both are written and compiled but
 * unverified without GPUs, so refused unless KILN_CUDA_DIST=1.
 */
import type { DistConnectOptions, DistStats, NativeCommunicator, NativeWork, NcclStatus } from '../../binding.js';
import { fail } from '../errors.js';
import { binding } from '../native.js';
import { Tensor, checkTensor } from '../tensor.js';

export type { DistStats, NcclStatus };
export type CommHandle = NativeCommunicator;
export type Work = NativeWork;

export function glooAvailable(): boolean {
  return binding().distAvailable();
}

function checkLabel(label: unknown): string {
  if (typeof label !== 'string') fail('ERR_ARG', 'label must be a string');
  return label;
}

/** Whether collectives on CUDA tensors would use NCCL (libnccl.so.2 loaded at run time), and why not. */
export function ncclStatus(): NcclStatus {
  return binding().distNcclStatus();
}

export function cudaCollectivesEnabled(): boolean {
  return process.env.KILN_CUDA_DIST === '1';
}

function hostTensor(t: Tensor, name: string, dtypes: string[] = ['f32'], staged = false): Tensor {
  checkTensor(t, name);
  if (t.device !== 'cpu' && !(staged && cudaCollectivesEnabled())) {
    fail('ERR_DEVICE', `${name} is on ${t.device}: ` + (staged
      ? 'collectives on CUDA tensors (NCCL when libnccl.so.2 loads, else staged through host memory into Gloo) are written but unverified without GPUs; set KILN_CUDA_DIST=1 to run them'
      : 'this collective takes CPU tensors'));
  }
  if (!dtypes.includes(t.dtype)) fail('ERR_DTYPE', `${name}: collectives take ${dtypes.join(' or ')}; got ${t.dtype}`);
  return t;
}

export async function connect(options: DistConnectOptions): Promise<CommHandle> {
  const { rank, worldSize, storePort, timeoutMs } = options;
  if (!Number.isSafeInteger(worldSize) || worldSize < 1) fail('ERR_ARG', `worldSize must be a positive integer, got ${worldSize}`);
  if (!Number.isSafeInteger(rank) || rank < 0 || rank >= worldSize) fail('ERR_ARG', `rank must be an integer in [0, ${worldSize}), got ${rank}`);
  if (!Number.isSafeInteger(storePort) || storePort < 0 || storePort > 65535) fail('ERR_ARG', `storePort must be a port number, got ${storePort}`);
  if (!Number.isSafeInteger(timeoutMs) || timeoutMs < 1) fail('ERR_ARG', `timeoutMs must be a positive integer, got ${timeoutMs}`);
  if (worldSize > 1 && !glooAvailable()) {
    fail('ERR_NO_GLOO', 'this kiln build has no Gloo, so it cannot run more than one rank: install it (Debian/Ubuntu: apt-get install libgloo-dev) and rebuild kiln (npm rebuild)');
  }
  return binding().distConnect(options);
}

/** Sums (average: means) f32 CPU tensors across ranks in place, packed into one message (a bucket). */
export function allReduce(comm: CommHandle, tensors: Tensor[], options: { average: boolean; bf16Wire?: boolean; label: string }): Work {
  if (!Array.isArray(tensors) || tensors.length === 0) fail('ERR_ARG', 'allReduce needs a non-empty array of tensors');
  tensors.forEach((t, i) => hostTensor(t, `tensors[${i}]`, ['f32'], true));
  if (new Set(tensors.map((t) => t.device)).size > 1) fail('ERR_DEVICE', 'allReduce: every tensor must be on one device');
  if (new Set(tensors.map((t) => t.handle)).size !== tensors.length) fail('ERR_ARG', 'allReduce: a tensor is listed twice');
  return binding().distAllReduce(comm, tensors.map((t) => t.handle), options.average === true, options.bf16Wire === true, checkLabel(options.label));
}

/** Sums (average: means; not for i32) one f32/f64/i32 CPU tensor across ranks in place. */
export function allReduceValues(comm: CommHandle, t: Tensor, options: { average: boolean; label: string }): Work {
  hostTensor(t, 'tensor', ['f32', 'f64', 'i32']);
  if (options.average && t.dtype === 'i32') fail('ERR_DTYPE', 'an i32 all-reduce cannot average');
  return binding().distAllReduceRaw(comm, t.handle, options.average === true, checkLabel(options.label));
}

/** `t` holds worldSize equal chunks along its bytes; chunk `rank` is this rank's input; every chunk ends filled. */
export function allGather(comm: CommHandle, t: Tensor, worldSize: number, label: string): Work {
  hostTensor(t, 'tensor', ['f32', 'bf16', 'f16', 'f64', 'i32'], true);
  if (t.numel % worldSize !== 0) fail('ERR_SHAPE', `allGather: ${t.numel} elements do not split into ${worldSize} equal chunks`);
  return binding().distAllGather(comm, t.handle, checkLabel(label));
}

export function broadcast(comm: CommHandle, t: Tensor, root: number, label: string): Work {
  hostTensor(t, 'tensor', ['f32', 'f64', 'i32'], true);
  if (!Number.isSafeInteger(root) || root < 0) fail('ERR_ARG', `root must be a rank, got ${root}`);
  return binding().distBroadcast(comm, t.handle, root, checkLabel(label));
}

export function barrier(comm: CommHandle, label: string): Work {
  return binding().distBarrier(comm, checkLabel(label));
}

/** Queues the point where later ops need the collective's result. */
export function waitWork(work: Work): void {
  binding().distWait(work);
}

/** Communication counters since the last call (call after a synchronize). */
export function commStats(comm: CommHandle): DistStats {
  return binding().distStats(comm);
}

export function closeComm(comm: CommHandle): void {
  binding().distClose(comm);
}
