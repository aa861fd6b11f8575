/**
 * The benchmark result files: what the benchmarks write (bench/harness.ts writeResults, one
 * file per run of a benchmark, bench/results/<benchmark>-<date>.json) and what `kiln report`
 * reads (lib/monitor/report/). One type per benchmark's rows, named by the file's `benchmark`.
 *
 * The writers are typed with these; the report reads files of any machine and any version, so
 * it treats every field as untrusted and checks each one where it reads it (report/fields.ts),
 * with the field names checked against these types. Files written before a field existed lack
 * it; fields the writer itself may leave out (a peer that did not run, a figure with no value)
 * are optional here.
 */
import type { KilnInfo } from '../info.js';
import type { ModelConfig } from '../model/config.js';
import type { OptimizerMemory } from '../optim/optimizer.js';

/** One result file. */
export interface ResultFile<B extends BenchmarkName = BenchmarkName> {
  benchmark: B;
  /** ISO 8601, UTC: when the file was written */
  date: string;
  /** the git commit the benchmark ran on ('unknown' outside a checkout) */
  commit: string;
  /** the machine and build (info()) */
  kiln: KilnInfo;
  /** the thresholds this run's figures are judged against (the benchmarks' own; absent in older files) */
  targets?: Partial<DataParallelTargets>;
  results: ResultRows[B][];
}

/** The rows of each benchmark's file. */
export interface ResultRows {
  matmul: MatmulRow | MatmulSummaryRow;
  memory: MemoryRow;
  train: TrainRow;
  dashboard: DashboardRow;
  serve: ServeRow;
  dist: AllReduceRow | ScalingRow;
  'dist-wan': WanRunRow | WanRelayCountersRow | WanVerdictRow;
  'dist-zero1': Zero1MemoryRow | Zero1StepRow;
  http_overhead: HttpOverheadRow;
  'diloco-outer-step': DilocoOuterStepRow;
}

export type BenchmarkName = keyof ResultRows;

/** A row of any result file: a benchmark's above, a kernel timing of another benchmark, a flat serving row. */
export type ResultRow = ResultRows[BenchmarkName] | KernelRow | FlatServeRow;

/**
 * The data-parallel targets: met or missed is worked out in the report from the figure beside
 * each. bench/targets.ts holds the values; the files record them (`targets`).
 */
export interface DataParallelTargets {
  /** loopback all-reduce: kiln's bandwidth at least this fraction of the Gloo driver's on the same buffers */
  allReduceOfGloo: number;
  /** two 1-thread ranks against one: scaling efficiency at least this */
  scalingEfficiency: number;
  /** DiLoCo over the emulated link: per-rank tokens/s at least this fraction of one local rank's */
  dilocoTokensOfLocal: number;
  /** DiLoCo's final validation loss at most this fraction above synchronous training's at equal tokens */
  dilocoValLossVsSync: number;
}

// ---- kernels and memory -------------------------------------------------------------------

/**
 * A kernel timing: any benchmark's row with `flops` (matmul, attention, newton-schulz, ...).
 * The report places it at flops ÷ bytes under its device's roofs; without `bytes`, a GEMM's
 * M, N, K and dtype give them.
 */
export interface KernelRow {
  device: string;
  dtype?: string;
  /** the kernel family, where one file holds several (else the benchmark's name) */
  kernel?: string;
  op?: string;
  name: string;
  flops: number;
  /** operand bytes read once and result bytes written once */
  bytes?: number;
  M?: number;
  N?: number;
  K?: number;
  medianMs: number;
  tflops: number;
  /** the peer measured in the same run (a name), and its throughput */
  peer?: string;
  peerTflops?: number;
}

/** bench/matmul.ts: one GEMM shape (FLOPs = 2·M·N·K). */
export interface MatmulRow extends KernelRow {
  dtype: string;
  M: number;
  N: number;
  K: number;
  transA: boolean;
  transB: boolean;
  peer: string;
  peerMs?: number;
  /** peer time ÷ kiln time */
  speedupVsPeer?: number;
  percentOfDatasheetPeak?: number;
}

/** bench/matmul.ts: the last row per device, over its shapes. */
export interface MatmulSummaryRow {
  device: string;
  summary: true;
  peer: string;
  /** the peer script's own description (versions, threads), or why it did not run */
  peerInfo?: Record<string, unknown>;
  medianSpeedupVsPeer: number;
  medianSpeedupVsPeerPresetShapes: number;
}

/** bench/memory.ts: the bandwidth of one simple op (bytes = read + written); the measured roof. */
export interface MemoryRow {
  device: string;
  op: string;
  bytes: number;
  medianMs: number;
  p10Ms: number;
  p90Ms: number;
  repeats: number;
  achievedGBs: number;
  datasheetGBs?: number;
  percentOfDatasheet?: number;
}

// ---- training -----------------------------------------------------------------------------

/** bench/train.ts: one training configuration, next to its PyTorch peer. */
export interface TrainRow {
  device: string;
  preset: string;
  batch: number;
  seqLen: number;
  tokensPerStep: number;
  warmup: number;
  steps: number;
  recompute: boolean;
  /** why the run did not happen */
  skipped?: string;
  error?: string;
  p50Ms?: number;
  p99Ms?: number;
  p99OverP50?: number;
  tokensPerSecond?: number;
  /** mean device times per step */
  forwardMs?: number;
  backwardMs?: number;
  optimizerMs?: number;
  communicationMs?: number;
  /** host time to issue a step, and its share of the step */
  issueMs?: number;
  issueShare?: number;
  gflops?: number;
  /** model FLOPs utilization (GPUs) */
  mfu?: number;
  peakMemoryBytes?: number;
  allocationsPerStep?: number;
  /** the first and the last step's loss */
  loss?: number[];
  threads?: number;
  peer?: TrainPeer | { error: string };
  /** kiln tokens/s ÷ the peer's */
  speedupVsPeer?: number;
}

/** bench/peers/torch_train.py's figures for the same model and optimizer. */
export interface TrainPeer {
  name: string;
  tokensPerSecond: number;
  p50Ms: number;
  p99Ms?: number;
  mfu?: number;
  peakMemoryBytes?: number;
  [detail: string]: unknown;
}

/** bench/dashboard.ts: what the live dashboard costs a training step. */
export interface DashboardRow {
  device: string;
  preset: string;
  batch: number;
  seqLen: number;
  threads: number;
  warmup: number;
  phaseSteps: number;
  phases: number;
  stepsWithout: number;
  stepsWith: number;
  publishUsMedian: number;
  publishUsMax: number;
  stepMsMedian: number;
  publishShare: number;
  client: string;
  intervalMsWithout: number;
  intervalMsWith: number;
  endToEndOverhead: number;
  loadAverage1m: number[];
  /** one median per phase (without, with, without, ...); null for a phase without steps */
  phaseMedianMs: (number | null)[];
  pageRenders?: number;
  pageRenderMs?: number;
  pageRenderShare?: number;
}

// ---- serving ------------------------------------------------------------------------------

/** mean, p50 and p99 of a latency, ms */
export interface LatencyStats {
  mean: number;
  p50: number;
  p99: number;
}

/** bench/serve.ts: one scenario (a concurrency level or a Poisson request rate) of one driver, timed at the client. */
export interface ServeScenario {
  scenario: string;
  concurrency?: number;
  rate?: number;
  requests: number;
  completed: number;
  failed: number;
  errors: string[];
  durationS: number;
  promptTokens: number;
  outputTokens: number;
  requestsPerSecond: number;
  outputTokensPerSecond: number;
  totalTokensPerSecond: number;
  ttftMs: LatencyStats;
  tpotMs: LatencyStats;
  itlMs: LatencyStats;
  e2eMs: LatencyStats;
  /** decode tokens/s of one request: 1000 / TPOT p50 */
  decodeTokensPerSecond: number;
  /**
   * The KV gauge over the run's samples (one before the first request, every 20 ms, one after
   * the last): absent only for a driver without gauges. Files before the sampler fix have no
   * `samples`.
   */
  kvUsage?: { mean: number; max: number; samples?: number };
  prefixCacheHitRate?: number;
  /** 1-minute load average of the machine when the scenario ended (other processes share the cores) */
  loadAverage: number;
  serverProfile?: Record<string, number>;
}

/** bench/serve.ts: one driver's scenarios, with what the driver says about itself (kind, dtype, threads, ...). */
export interface ServeDriverResult {
  driver: string;
  scenarios: ServeScenario[];
  /** at concurrency 1: bytes read per decoded token times tokens/s over the measured copy bandwidth */
  bandwidth?: { bytesPerToken: number; weightBytes: number; kvBytes: number; readGBs: number; copyGBs: number; utilization: number };
  [description: string]: unknown;
}

/** A ratio of kiln's figure to the peer's, against its target. */
export interface ServeRatioVerdict {
  kiln: number;
  llamaCpp: number;
  ratio: number;
  target: number;
  met: boolean;
}

/** bench/serve.ts: the serving targets as measured (hits and misses both recorded). */
export interface ServeVerdicts {
  decodeC1VsLlamaCpp?: ServeRatioVerdict;
  throughputC32VsLlamaCpp?: ServeRatioVerdict;
  ttftP99OverP50UnderRateSweep?: { sweep: { rate?: number; p50: number; p99: number; ratio: number }[]; target: number; met: boolean };
  httpOverheadC32?: { tokensPerSecondShare: number; ttftP50DeltaMs: number; met: boolean };
}

/** bench/serve.ts (`kiln bench serve`): one run, every driver on the same prompts. */
export interface ServeRow {
  checkpoint: string;
  config: ModelConfig;
  dtype: 'f32' | 'bf16';
  threads: number;
  shard: string;
  prompts: { count: number; min: number; max: number; mean: number };
  outputTokens: number;
  loadAverageAtStart: number[];
  copyBandwidthGBs?: number;
  drivers: ServeDriverResult[];
  targets: ServeVerdicts;
  /** a remark added to the file by hand */
  note?: string;
}

/**
 * Serving rows in the flat shape (one row per load level, the peer beside kiln's figures), as
 * other serving benchmarks write them; the report reads them beside ServeRow. Latency
 * percentiles come under several spellings (ttftP50Ms, ttft.p50Ms, ttftMs.p50, ...).
 */
export interface FlatServeRow {
  device?: string;
  preset?: string;
  model?: string;
  checkpoint?: string;
  system?: string;
  engine?: string;
  server?: string;
  name?: string;
  concurrency?: number;
  maxConcurrency?: number;
  requestRate?: number;
  rate?: number;
  outputTokensPerSecond?: number;
  outputThroughput?: number;
  output?: { tokensPerSecond?: number };
  tokensPerSecond?: number;
  requestsPerSecond?: number;
  requestThroughput?: number;
  kvUsage?: number | { mean?: number };
  kvCacheUsage?: number;
  prefixCacheHitRate?: number;
  mbu?: number;
  bandwidthUtilization?: number;
  peer?: FlatServeRow | { error: string };
}

/** bench/http_overhead.ts: one side (in-process or over HTTP), medians over rounds. */
export interface HttpOverheadSide {
  tokensPerSecond: number;
  ttftP50Ms: number;
  ttftP99Ms: number;
  interTokenP50Ms: number;
  interTokenP99Ms: number;
  failed: number;
  mainThreadMsPerToken: number;
  iterations?: number;
  engineTtftP50Ms?: number;
  modelMsPerIteration?: number;
  rounds: { wallMs: number; outputTokens: number; tokensPerSecond: number; iterations?: number; modelMs?: number }[];
}

/** bench/http_overhead.ts: what the HTTP layer costs against engine.stream() in-process. */
export interface HttpOverheadRow {
  checkpoint: string;
  model: { layers: number; dModel: number; vocabSize: number; context: number };
  concurrency: number;
  requests: number;
  outputTokens: number;
  inProcess: HttpOverheadSide;
  http: HttpOverheadSide;
  httpTokensPerSecondRatio: number;
  httpTtftP50ExtraMs: number;
  /** main-thread busy time the HTTP layer adds per streamed token (contention-independent) */
  httpMainThreadExtraMsPerToken: number;
  loadAverage: number[];
}

// ---- data parallelism ---------------------------------------------------------------------

/** One side of the loopback all-reduce, rank 0's medians (bandwidths as nccl-tests define them). */
export interface AllReduceFigures {
  medianMs: number;
  algBandwidthGBs: number;
  busBandwidthGBs: number;
  /** every round's median (newer files) */
  roundMedianMs?: number[];
  medianRoundTripMs?: number;
}

/** bench/dist.ts: kiln's all-reduce against the Gloo driver on the same buffers. */
export interface AllReduceRow {
  benchmark: 'allreduce-loopback';
  worldSize: number;
  bytes: number;
  repeats?: number;
  rounds?: number;
  kiln: AllReduceFigures;
  /** absent when the Gloo driver could not be built (`note` says why) */
  gloo?: AllReduceFigures;
  /** Gloo's median ÷ kiln's */
  ratioOfGloo?: number;
  /** one per round (older files: `loadAverage`, one) */
  loadAverages?: number[];
  loadAverage?: number;
  note?: string;
}

/** One `kiln train` run of the scaling benchmark, medians over the steps after warm-up. */
export interface ScalingRun {
  nproc: number;
  tokensPerSecond: number;
  stepMs: number;
  optimizerMs?: number;
  commMs: number;
  commExposedMs: number;
  commBytes: number;
  loadAverageBefore: number;
  loadAverageAfter: number;
}

/** bench/dist.ts: two 1-thread ranks against one; each side one run per round (older files: one run). */
export interface ScalingRow {
  benchmark: `scaling-${string}`;
  batchPerRank: number;
  seqLen: number;
  steps: number;
  rounds?: number;
  one: ScalingRun[] | ScalingRun;
  two: ScalingRun[] | ScalingRun;
  twoWithoutDistributedMuon?: ScalingRun[];
  /** tokens/s of two ranks ÷ (2 × one rank's) */
  scalingEfficiency: number;
  scalingEfficiencyWithoutDistributedMuon?: number;
}

/** bench/dist_wan.ts: one run (local, sync or DiLoCo) over the emulated link. */
export interface WanRunRow {
  name: string;
  steps: number;
  tokens: number;
  tokensPerSecond: number;
  medianStepMs: number;
  commMsTotal: number;
  commExposedMsTotal: number;
  commExposedPerStepMs: number;
  commBytesTotal: number;
  commBytesPerStep: number;
  commBytesPerToken: number;
  valLoss: number;
  loss: number;
  loadAverage: number;
  /** the core a lone rank was pinned to */
  core?: number;
  /** DiLoCo's settings */
  innerSteps?: number;
  quantBits?: number;
  outerLr?: number;
  outerMomentum?: number;
  streamFragments?: number;
  warmStartSteps?: number;
  measuredSteps?: number;
}

/** Packets the link relay moved one way. */
export interface LinkCounters {
  packets: number;
  bytes: number;
  dropped: number;
  droppedBytes: number;
  writeErrors: number;
}

/** bench/dist_wan.ts: the relay's counters (its JSON, or its output when that was not JSON). */
export interface WanRelayCountersRow {
  name: 'link relay counters';
  counters: { aToB: LinkCounters; bToA: LinkCounters } | string;
}

/** bench/dist_wan.ts: the link and the verdicts, the last row. */
export interface WanVerdictRow {
  note: string;
  /** the emulated link's rate ('100mbit'), or `link: 'loopback'` without one */
  rate?: string;
  link?: string;
  delayMs?: number;
  queueMs?: number;
  steps?: number;
  pinnedToCores?: boolean;
  warmStartSteps?: number;
  /** DiLoCo's per-rank tokens/s ÷ the lone ranks' mean */
  dilocoPerRankTokensPerSecondOfLocal?: number;
  /** DiLoCo's final validation loss ÷ sync's − 1 */
  dilocoValLossVsSync?: number;
  /** the same ratio against each pinned lone rank */
  [perCore: `dilocoPerRankTokensPerSecondOfLocalCore${number}`]: number;
}

/** bench/dist_zero1.ts: rank 0 of 2's optimizer bytes, unsharded, with distributed Newton–Schulz, and with ZeRO-1. */
export interface Zero1MemoryRow {
  benchmark: 'zero1-memory';
  preset: string;
  worldSize: number;
  rank: number;
  parameters: number;
  plain: OptimizerMemory;
  distributedMuon: OptimizerMemory;
  zero1: OptimizerMemory;
  stateRatio: number;
}

/** bench/dist_zero1.ts: medians over rounds of one mode. */
export interface Zero1StepSummary {
  stepMs: number;
  optimizerMs: number;
  tokensPerSecond: number;
  commBytes: number;
  commExposedMs: number;
  optimizerStateBytes: number;
  optimizerWorkspaceBytes: number;
}

/** bench/dist_zero1.ts: one run of `kiln train --nproc 2` (zero1: 1 with --zero1, 0 without). */
export interface Zero1Run extends Zero1StepSummary {
  zero1: number;
  round: number;
  commMs: number;
  loadAverageBefore: number;
  loadAverageAfter: number;
}

/** bench/dist_zero1.ts: ZeRO-1 against unsharded synchronous data parallelism, alternating runs. */
export interface Zero1StepRow {
  benchmark: 'zero1-step-tiny';
  batchPerRank: number;
  seqLen: number;
  steps: number;
  rounds: number;
  plain: Zero1StepSummary;
  zero1: Zero1StepSummary;
  runs: Zero1Run[];
}

/** bench/diloco_outer.ts: DiLoCo's outer step on one rank, host loops against the native ops. */
export interface DilocoOuterStepRow {
  name: string;
  values: number;
  bits: number;
  hostLoopsMedianMs: number;
  nativeOpsMedianMs: number;
  speedup: number;
  repeats: number;
  loadAverage: number;
  /** KILN_NUM_THREADS, or 'default' */
  threads: string;
}
