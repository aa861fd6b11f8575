// The one hand-written contract between lib/ (TypeScript) and the native addon (native/binding/).
// lib/ validates every argument before calling; the addon re-checks cheaply and throws errors
// with a `code` (see lib/errors.ts). Integers are JS numbers (exact up to 2^53).
// Types only. It is a .ts file (not .d.ts) so that tsc emits dist/binding.d.ts, which the
// declarations in dist/lib import as '../binding.js' and which the npm package ships.
//
// Device codes: -1 = cpu, k >= 0 = cuda:k.  DType codes: 0 f32, 1 f64, 2 bf16, 3 f16, 4 i32.

export type DeviceCode = number;
export type DTypeCode = 0 | 1 | 2 | 3 | 4;

/** An opaque handle on (part of) a block of device memory. Shapes live in lib/. */
export interface NativeTensor {
  readonly numel: number;
  readonly dtype: DTypeCode;
  /** null once disposed */
  readonly device: DeviceCode | null;
  readonly disposed: boolean;
  /** Releases this handle's reference now; memory returns once queued ops using it have run. */
  dispose(): void;
  /** A handle on elements [offset, offset + numel) of the same memory, optionally reinterpreted as a same-size dtype. */
  view(offset: number, numel: number, dtype?: DTypeCode): NativeTensor;
}

export interface MatmulParams {
  M: number;
  N: number;
  K: number;
  batch: number;
  transA: boolean;
  transB: boolean;
  lda: number;
  ldb: number;
  ldc: number;
  ldResidual: number;
  strideA: number;
  strideB: number;
  strideC: number;
  strideResidual: number;
  alpha: number;
  beta: number;
  /** 0 none, 1 residual add, 2 swiglu (b is 2N wide: [gate | up]) */
  epilogue: 0 | 1 | 2;
  /** CPU only: run the plain-loop reference */
  reference: boolean;
  /** rows of C independent of M (CPU: no skinny path); optional */
  batchInvariant?: boolean;
  /** CUDA only: run this candidate configuration (tuning); omit for the dispatcher's choice */
  config?: number;
}

export interface AttentionDims {
  B: number;
  Tq: number;
  Tk: number;
  Hq: number;
  Hkv: number;
  D: number;
  scale: number;
  causal: boolean;
  /** CPU only: the plain-loop reference */
  reference: boolean;
}

/** Opaque handle on a communicator (lib/parallel). */
export interface NativeCommunicator {
  readonly __communicator: unique symbol;
}

/** Opaque handle on one collective in flight. */
export interface NativeWork {
  readonly __work: unique symbol;
}

export interface DistConnectOptions {
  rank: number;
  worldSize: number;
  storeHost: string;
  storePort: number;
  /** sent to the store before anything else; '' for none */
  token: string;
  /** key prefix of this run in the store */
  prefix: string;
  /** the address Gloo's TCP transport listens on */
  bindHost: string;
  timeoutMs: number;
}

export interface DistStats {
  commMs: number;
  exposedMs: number;
  payloadBytes: number;
  wireBytes: number;
  collectives: number;
  /** the most recent collective alone */
  lastMs: number;
  /** the path CUDA tensors took: 'nccl', 'gloo-staged', or '' while none ran */
  cudaBackend: string;
}

/** Whether CUDA collectives would use NCCL (loaded at run time), and why not. */
export interface NcclStatus {
  available: boolean;
  /** the library dlopen was given (libnccl.so.2, or KILN_NCCL_LIBRARY) */
  library: string;
  /** e.g. '2.19.3'; '' when not loaded */
  version: string;
  /** why not available (dlerror's text, a missing entry point, a version below 2.4, no CUDA build) */
  reason: string;
}

/** Opaque benchmark timing mark. */
export interface TimerMark {
  readonly __timerMark: unique symbol;
}

export interface NativeMemoryStats {
  allocated: number;
  reserved: number;
  peakAllocated: number;
  allocations: number;
  deviceAllocations: number;
}

export interface NativeDeviceInfo {
  index: number;
  name: string;
  computeCapability: string;
  multiprocessors: number;
  totalMemory: number;
  memoryClockKhz: number;
  memoryBusWidthBits: number;
  clockKhz: number;
  l2Bytes: number;
  sharedMemoryPerBlockOptin: number;
  sharedMemoryPerMultiprocessor: number;
  /** whether this build's CUDA architectures can run on the device (SASS or PTX JIT) */
  kernelsCovered: boolean;
  /** the image that runs ("sm_86 SASS", "compute_90 PTX ...") or why none does */
  kernelsVia: string;
}

export interface NativeBuildInfo {
  cudaCompiled: boolean;
  cudaVersion: string;
  cudaArchs: string;
  cudaRuntimeVersion: number;
  cudaDriverVersion: number;
  cudaStatus: string;
  cpuThreads: number;
  /** vector ISA of the CPU kernels: avx512, avx2 or generic */
  cpuIsa: string;
  devices: NativeDeviceInfo[];
}

export interface KilnBinding {
  // ---- tensors and runtime (lib/tensor.ts, lib/runtime.ts, lib/info.ts; native/binding/tensor_binding.cc) ----
  empty(device: DeviceCode, dtype: DTypeCode, numel: number): NativeTensor;
  fromBuffer(device: DeviceCode, dtype: DTypeCode, data: ArrayBufferView): NativeTensor;
  /** Raw bytes in the tensor's dtype, after every op enqueued before. */
  read(tensor: NativeTensor): Promise<ArrayBuffer>;
  /** Overwrites the tensor with exactly its byte size of data, in queue order (the bytes are staged now). */
  write(dst: NativeTensor, data: ArrayBufferView): void;
  /** dst <- src: same dtype and numel, any devices. */
  copy(dst: NativeTensor, src: NativeTensor): void;
  fill(tensor: NativeTensor, value: number): void;
  /** kind 0: uniform [a, b); kind 1: normal(mean a, std b). Philox: identical on CPU and CUDA. */
  random(tensor: NativeTensor, kind: 0 | 1, seedHigh: number, seedLow: number, offset: number, a: number, b: number): void;
  synchronize(): Promise<void>;
  info(): NativeBuildInfo;
  /** The runtime's check whether a build for `archs` (CMake list) runs on compute capability major.minor. */
  cudaArchCoverage(major: number, minor: number, archs: string): { covered: boolean; via: string };
  memoryStats(device: DeviceCode): NativeMemoryStats;
  resetPeakMemory(device: DeviceCode): void;
  emptyCache(device: DeviceCode): void;

  // ---- benchmark timing (lib/runtime.ts; native/binding/timer_binding.cc; native/runtime/timer.h) ----
  /** A mark recorded when the queue reaches it (CUDA event on the device stream, or a CPU clock reading). */
  timerMark(device: DeviceCode): TimerMark;
  /** Device milliseconds between two recorded marks of one device. */
  timerElapsed(start: TimerMark, end: TimerMark): Promise<number>;

  // ---- elementwise (lib/ops/elementwise.ts; native/binding/elementwise_binding.cc; contract native/ops/elementwise.h) ----
  /** op 0: out = a + b; op 1: out = a * b */
  binary(op: 0 | 1, out: NativeTensor, a: NativeTensor, b: NativeTensor): void;
  scale(out: NativeTensor, a: NativeTensor, alpha: number): void;
  cast(out: NativeTensor, input: NativeTensor): void;
  /** in (rows, cols) -> out (rows): sums or means of each row */
  reduceRows(out: NativeTensor, input: NativeTensor, rows: number, cols: number, mean: boolean): void;

  // ---- matmul (lib/ops/matmul.ts, matmul_tuning.ts; native/binding/matmul_binding.cc; contract native/ops/matmul.h) ----
  /** out = epilogue(alpha · op(a) · op(b) + beta · out), batched with strides (elements). */
  matmul(out: NativeTensor, a: NativeTensor, b: NativeTensor, residual: NativeTensor | null, params: MatmulParams): void;
  /** CUDA: the candidate configurations that can run this call, and its tune-cache key. */
  matmulCandidates(
    out: NativeTensor, a: NativeTensor, b: NativeTensor, residual: NativeTensor | null, params: MatmulParams,
  ): { key: string; defaultConfig: number; candidates: { config: number; name: string }[] };
  /** Every CUDA candidate's name by global index (empty without CUDA). */
  matmulConfigNames(): string[];
  /** Records the dispatcher's winner for a tune key on a device (-1 erases). */
  matmulSetTuned(device: DeviceCode, key: string, config: number): void;

  // ---- attention (lib/ops/attention.ts; native/binding/attention_binding.cc; contract native/ops/attention.h) ----
  attentionForward(out: NativeTensor, lse: NativeTensor, q: NativeTensor, k: NativeTensor, v: NativeTensor, dims: AttentionDims): void;
  attentionBackward(
    dq: NativeTensor, dk: NativeTensor, dv: NativeTensor,
    q: NativeTensor, k: NativeTensor, v: NativeTensor, out: NativeTensor, lse: NativeTensor, dout: NativeTensor,
    dims: AttentionDims,
  ): void;
  /** y may be x (in place); invFreq (D/2) f32 replaces base^(-2j/D) (scaled RoPE). */
  rope(
    y: NativeTensor, x: NativeTensor, positions: NativeTensor, dims: { B: number; T: number; H: number; D: number; base: number; backward: boolean },
    invFreq?: NativeTensor | null,
  ): void;
  kvAppend(
    kCache: NativeTensor, vCache: NativeTensor, kNew: NativeTensor, vNew: NativeTensor, blockTable: NativeTensor, start: NativeTensor,
    dims: { B: number; Tnew: number; Hkv: number; D: number; blockSize: number; maxBlocks: number; numBlocks: number },
  ): void;
  attentionDecode(
    out: NativeTensor, lse: NativeTensor, q: NativeTensor, kCache: NativeTensor, vCache: NativeTensor, blockTable: NativeTensor, seqLens: NativeTensor,
    dims: { B: number; Hq: number; Hkv: number; D: number; blockSize: number; maxBlocks: number; numBlocks: number; scale: number; maxSeqLen: number; reference: boolean },
  ): void;

  // ---- layers (lib/ops/layers.ts; native/binding/layers_binding.cc; contract native/ops/layers.h; CPU + CUDA) ----
  embedding(out: NativeTensor, table: NativeTensor, ids: NativeTensor, N: number, V: number, D: number): void;
  /** dtable += scatter of dout rows by ids */
  embeddingBackward(dtable: NativeTensor, ids: NativeTensor, dout: NativeTensor, N: number, V: number, D: number): void;
  rmsnorm(y: NativeTensor, rstd: NativeTensor, x: NativeTensor, weight: NativeTensor, N: number, D: number, eps: number): void;
  /** dx = ... (+ dresidual); dweight += ... */
  rmsnormBackward(dx: NativeTensor, dweight: NativeTensor, dy: NativeTensor, x: NativeTensor, weight: NativeTensor, rstd: NativeTensor, dresidual: NativeTensor | null, N: number, D: number): void;
  swiglu(out: NativeTensor, input: NativeTensor, N: number, F: number): void;
  swigluBackward(din: NativeTensor, input: NativeTensor, dout: NativeTensor, N: number, F: number): void;
  /** loss (N); dlogits (may be the logits buffer) = (softmax - onehot) · gradScale */
  crossEntropy(loss: NativeTensor, dlogits: NativeTensor | null, logits: NativeTensor, targets: NativeTensor, N: number, V: number, gradScale: number): void;

  /** norm (1) f32 = global L2 norm of the tensors; scales them by min(1, maxNorm / (norm + 1e-6)) when maxNorm > 0 */
  gradNormClip(tensors: NativeTensor[], maxNorm: number, norm: NativeTensor): void;

  // ---- outer step, DiLoCo (lib/ops/outer_step.ts; native/binding/outer_step_binding.cc; contract native/ops/outer_step.h) ----
  /** packed (f32 view of packedBytes(n, bits) bytes) = quantize(anchor − current + residual); residual = Δ − dequantized (bits 0: packed = Δ in f32) */
  pseudoGradientQuantize(packed: NativeTensor, residual: NativeTensor | null, anchor: NativeTensor, current: NativeTensor, bits: number): void;
  /** mean (n) = average over worldSize packed pseudo-gradients laid end to end in gathered */
  dequantizeMean(mean: NativeTensor, gathered: NativeTensor, worldSize: number, bits: number): void;
  /** m = μm + Δ̄; anchor −= lr(nesterov ? Δ̄ + μm : m); weights = mix ? αw + (1−α)anchor : anchor */
  outerNesterov(anchor: NativeTensor, momentum: NativeTensor, weights: NativeTensor, meanDelta: NativeTensor, lr: number, momentumFactor: number, nesterov: boolean, alpha: number, mix: boolean): void;

  // ---- Newton–Schulz (lib/ops/newton_schulz.ts; native/binding/newton_schulz_binding.cc; contract native/ops/newton_schulz.h) ----
  /** CPU: f32 in/out, compute f64/f32/bf16. CUDA: f32/bf16/f16 in, f32/bf16 out, compute bf16. */
  newtonSchulz(
    out: NativeTensor, g: NativeTensor,
    params: { batch: number; rows: number; cols: number; steps: number; coefficients: number[]; normScale: number; eps: number; compute: DTypeCode; reference: boolean },
  ): void;
  newtonSchulzFlops(batch: number, rows: number, cols: number, steps: number, symmetric: boolean): number;

  // ---- optimizer (lib/ops/optimizer.ts; native/binding/optimizer_binding.cc; contract native/ops/optimizer.h) ----
  /** NorMuon: per-row second-moment EMA, row normalization, Frobenius norm restored (CPU f32; CUDA f32 or bf16 ortho) */
  normuonNormalize(ortho: NativeTensor, rowSecondMoment: NativeTensor, rows: number, cols: number, beta2: number, eps: number): void;
  // Multi-tensor updates: one native call (CPU) or one kernel launch (CUDA) per list; every tensor on one device.
  /** AdamW over the list (all f32). */
  adamwMulti(weights: NativeTensor[], m: NativeTensor[], v: NativeTensor[], grads: NativeTensor[], params: { lr: number; beta1: number; beta2: number; eps: number; weightDecay: number; step: number }): void;
  /** m_i = beta·m_i + (1-beta)·g_i; updates_i = nesterov ? (1-beta)·g_i + beta·m_i : m_i; updates f32 or bf16 (one dtype). */
  muonMomentumMulti(momenta: NativeTensor[], updates: NativeTensor[], grads: NativeTensor[], beta: number, nesterov: boolean): void;
  /** w_i = w_i·(1 - lr·wd) - lr·scales[i]·orthos_i; orthos f32 or bf16 (one dtype). */
  muonApplyMulti(weights: NativeTensor[], orthos: NativeTensor[], scales: number[], lr: number, weightDecay: number): void;

  // ---- collectives (lib/ops/collectives.ts; native/binding/collectives_binding.cc; native/runtime/communicator.h, nccl_comm.h) ----
  /** Whether this build has Gloo (more than one rank needs it). */
  distAvailable(): boolean;
  /** Joins the run through the rank-0 store; resolves once every rank connected. */
  distConnect(options: DistConnectOptions): Promise<NativeCommunicator>;
  /** Queued: sums (or averages) f32 CPU tensors across ranks in place, packed into one message. */
  distAllReduce(comm: NativeCommunicator, tensors: NativeTensor[], average: boolean, bf16Wire: boolean, label: string): NativeWork;
  /** Queued: sums (or averages) one f32/f64/i32 CPU tensor across ranks in place. */
  distAllReduceRaw(comm: NativeCommunicator, tensor: NativeTensor, average: boolean, label: string): NativeWork;
  /** Queued: the tensor is worldSize equal chunks; chunk `rank` is this rank's input. */
  distAllGather(comm: NativeCommunicator, tensor: NativeTensor, label: string): NativeWork;
  distBroadcast(comm: NativeCommunicator, tensor: NativeTensor, root: number, label: string): NativeWork;
  distBarrier(comm: NativeCommunicator, label: string): NativeWork;
  /** Queued: later ops wait for the collective; its failure becomes the queue's error. */
  distWait(work: NativeWork): void;
  /** Counters since the last call (read after synchronize). */
  distStats(comm: NativeCommunicator): DistStats;
  distClose(comm: NativeCommunicator): void;
  /** Loads NCCL once per process (libnccl.so.2 or KILN_NCCL_LIBRARY) and says whether CUDA collectives use it. */
  distNcclStatus(): NcclStatus;

}
