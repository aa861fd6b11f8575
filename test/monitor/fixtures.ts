/** Test doubles and fixtures for the monitor tests: a step source, a serving engine, result files. */
import { commMetrics } from '../../lib/parallel/data_parallel.js';
import type { Communicator } from '../../lib/parallel/communicator.js';
import type { EngineStats, RequestRecord, ServingEngine } from '../../lib/serve/types.js';
import type { StepMetrics } from '../../lib/train/trainer.js';

/** A Trainer stand-in: emits StepMetrics on demand (the dashboard only uses onStep/options/currentStep). */
export class FakeTrainer {
  private listeners = new Set<(m: StepMetrics) => void>();
  currentStep = 0;
  constructor(readonly options: { steps: number }) {}
  onStep(listener: (m: StepMetrics) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
  emit(extra: Partial<StepMetrics> = {}): StepMetrics {
    this.currentStep++;
    const m = stepMetrics(this.currentStep, extra);
    for (const l of this.listeners) l(m);
    return m;
  }
}

export function stepMetrics(step: number, extra: Partial<StepMetrics> = {}): StepMetrics {
  return {
    step, loss: 5 / Math.sqrt(step) + 0.01 * Math.sin(step), gradNorm: 1 + 1 / step, lr: Math.min(1, step / 10), tokens: 2048, stepMs: 150 + (step % 7),
    tokensPerSecond: 2048 / ((150 + (step % 7)) / 1e3), forwardMs: 40, backwardMs: 80 + (step % 5), optimizerMs: 20, issueMs: 3, achievedTflops: 0.07,
    peakMemoryBytes: 99_150_016, ...extra,
  };
}

/**
 * A data-parallel step as lib/parallel reports it (its own commMetrics over a communicator stand-in):
 * sync mode all-reduces every step; DiLoCo (H = 4 here, 4-bit) communicates every fourth step only.
 */
export function distStepMetrics(step: number, mode: 'sync' | 'diloco', baselineTokensPerSecond?: number): StepMetrics {
  const base = stepMetrics(step);
  const communicates = mode === 'sync' || step % 4 === 0;
  const stats = communicates
    ? { commMs: 20 + (step % 3), commExposedMs: 12 + (step % 2), commBytes: mode === 'sync' ? 4_690_436 : 8_546, commPayloadBytes: mode === 'sync' ? 4_690_436 : 8_546, collectives: 1, lastCollectiveMs: 20 }
    : { commMs: 0, commExposedMs: 0, commBytes: 0, commPayloadBytes: 0, collectives: 0, lastCollectiveMs: 0 };
  const comm = { worldSize: 2, stats: () => stats } as unknown as Communicator;
  const figures = commMetrics(comm, base.stepMs, base.tokens!, baselineTokensPerSecond);
  const settings = mode === 'sync' ? { syncMode: 'sync', buckets: 1 } : { syncMode: 'diloco', innerSteps: 4, quantBits: 4, outerSteps: Math.floor(step / 4) };
  return { ...base, ...settings, ...figures };
}

/** A ServingEngine double: settable stats and a way to finish requests. */
export class FakeEngine implements Pick<ServingEngine, 'stats' | 'onRequestFinished' | 'modelName'> {
  readonly modelName = 'fake-125m';
  private listeners = new Set<(r: RequestRecord) => void>();
  current: EngineStats = {
    running: 0, waiting: 0, kvBlocksTotal: 1000, kvBlocksUsed: 0, kvBlocksFree: 1000, kvUsage: 0, prefixCacheQueries: 0, prefixCacheHits: 0,
    prefixCacheHitRate: 0, promptTokensTotal: 0, generationTokensTotal: 0, requestsFinished: 0, requestsPreempted: 0, tokensPerSecond: 0, iterations: 0,
  };
  stats(): EngineStats {
    return { ...this.current };
  }
  onRequestFinished(listener: (r: RequestRecord) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
  get listenerCount(): number {
    return this.listeners.size;
  }
  finish(record: Partial<RequestRecord> & { ttftMs: number; interTokenMs: number[] }): void {
    this.current.requestsFinished++;
    const r: RequestRecord = {
      id: `r${this.current.requestsFinished}`, promptTokens: 10, completionTokens: record.interTokenMs.length + 1, finishReason: 'length',
      timings: { ttftMs: record.ttftMs, totalMs: record.ttftMs + record.interTokenMs.reduce((a, b) => a + b, 0), queueMs: 0,
        tpotMs: record.interTokenMs.length ? record.interTokenMs.reduce((a, b) => a + b, 0) / record.interTokenMs.length : 0 },
      interTokenMs: record.interTokenMs,
    };
    for (const l of this.listeners) l(r);
  }
}

const KILN_CPU = { version: '0.1.0', platform: 'linux-x64', cpuThreads: 2, cpuIsa: 'avx512', cudaCompiled: false, cudaArchitectures: [], cudaStatus: 'built without CUDA', devices: [] };
const KILN_H100 = {
  ...KILN_CPU, cudaCompiled: true, cudaDriverVersion: '13.0', cudaStatus: 'ok',
  devices: [{ device: 'cuda:0', name: 'NVIDIA H100 80GB HBM3', computeCapability: '9.0', peak: { name: 'H100 SXM', bf16Tflops: 989.4, fp32Tflops: 67, memoryBandwidthGBs: 3350 } }],
};

/** Result files of several shapes: a GPU train run with a peer, a CPU one lacking fields, kernels, memory, serving with a peer. */
export function resultFiles(): Record<string, unknown> {
  return {
    'train-gpu.json': {
      benchmark: 'train', date: '2026-12-01T10:00:00.000Z', commit: 'a'.repeat(40), kiln: KILN_H100,
      results: [{
        device: 'cuda:0', preset: '1.4b', batch: 8, seqLen: 2048, recompute: false, p50Ms: 412.5, p99Ms: 420.25, tokensPerSecond: 39718.4, forwardMs: 120.5,
        backwardMs: 240.25, optimizerMs: 45.125, communicationMs: 6.5, gflops: 412345.6, mfu: 0.4168, peakMemoryBytes: 52_345_678_912,
        peer: { name: 'PyTorch (CUDA, torch.compile)', tokensPerSecond: 33100.5, p50Ms: 495.0, mfu: 0.347, peakMemoryBytes: 60_000_000_000 }, speedupVsPeer: 1.2,
      }],
    },
    'train-cpu.json': {
      benchmark: 'train', date: '2026-12-01T11:00:00.000Z', commit: 'b'.repeat(40), kiln: KILN_CPU,
      results: [
        { device: 'cpu', preset: 'tiny', batch: 16, seqLen: 128, p50Ms: 140.25, p99Ms: 164.97, tokensPerSecond: 14602.46, forwardMs: 36.74, backwardMs: 82.89, optimizerMs: 19.42, gflops: 77.87, peakMemoryBytes: 99150016, peer: { error: 'torch missing' } },
        { device: 'cuda:0', preset: '1.4b', skipped: 'KILN_CUDA_TRAINING is not 1' },
      ],
    },
    'matmul-gpu.json': {
      benchmark: 'matmul', date: '2026-12-01T10:05:00.000Z', commit: 'a'.repeat(40), kiln: KILN_H100,
      results: [
        { device: 'cuda:0', dtype: 'bf16', name: 'q/o fwd T=16384', M: 16384, N: 2048, K: 2048, flops: 137438953472, medianMs: 0.25, tflops: 549.76, peer: 'torch', peerTflops: 600.1 },
        { device: 'cuda:0', dtype: 'bf16', name: 'square 256', M: 256, N: 256, K: 256, flops: 33554432, medianMs: 0.01, tflops: 3.36 },
      ],
    },
    'attention-gpu.json': {
      benchmark: 'attention', date: '2026-12-01T10:06:00.000Z', commit: 'a'.repeat(40), kiln: KILN_H100,
      results: [{ device: 'cuda:0', dtype: 'bf16', name: 'fwd T=2048 D=128', flops: 1.1e12, bytes: 2.1e9, medianMs: 2.5, tflops: 440 }],
    },
    'memory-cpu.json': {
      benchmark: 'memory', date: '2026-12-01T11:01:00.000Z', commit: 'b'.repeat(40), kiln: KILN_CPU,
      results: [{ device: 'cpu', op: 'copy', bytes: 134217728, medianMs: 5.17, achievedGBs: 25.95 }],
    },
    'serve-cpu.json': {
      benchmark: 'serve', date: '2026-12-01T12:00:00.000Z', commit: 'c'.repeat(40), kiln: KILN_CPU,
      results: [
        { device: 'cpu', preset: '125m', concurrency: 1, outputTokensPerSecond: 41.5, requestsPerSecond: 0.32, ttftP50Ms: 85.5, ttftP99Ms: 120.25, tpotP50Ms: 24.1, itlP50Ms: 24.0, itlP99Ms: 31.5, kvUsage: 0.05, prefixCacheHitRate: 0.25,
          peer: { name: 'llama.cpp', outputTokensPerSecond: 38.25, ttftP50Ms: 95.0, ttftP99Ms: 130.0, itlP50Ms: 26.1, itlP99Ms: 33.0 } },
        { device: 'cpu', preset: '125m', concurrency: 8, outputTokensPerSecond: 210.75, requestsPerSecond: 1.6, ttftP50Ms: 150.0, ttftP99Ms: 300.5, itlP50Ms: 37.9, itlP99Ms: 60.25, kvUsage: 0.31,
          peer: { name: 'llama.cpp', outputTokensPerSecond: 120.0, ttftP50Ms: 400.0, itlP50Ms: 64.0 } },
        { device: 'cpu', preset: '125m', requestRate: 4, outputTokensPerSecond: 180.5, ttft: { p50Ms: 130.0, p99Ms: 390.0 }, itl: { p50Ms: 35.5, p99Ms: 70.0 } },
      ],
    },
    // the shape `kiln bench serve` writes (branch gguf, in progress): drivers with scenarios
    'serve-nested.json': {
      benchmark: 'serve', date: '2026-12-01T13:00:00.000Z', commit: 'd'.repeat(40), kiln: KILN_CPU,
      results: [{
        checkpoint: 'random 125m (seeded init, untrained)', dtype: 'f32', threads: 2, outputTokens: 32, copyBandwidthGBs: 25.9,
        drivers: [
          { driver: 'kiln', scenarios: [
            { scenario: 'c1', concurrency: 1, requests: 16, completed: 16, failed: 0, requestsPerSecond: 0.5, outputTokensPerSecond: 16.25,
              ttftMs: { mean: 80, p50: 75.5, p99: 140.0 }, tpotMs: { mean: 30, p50: 29.5, p99: 40 }, itlMs: { mean: 30, p50: 29.0, p99: 45.5 }, kvUsage: { mean: 0.01, max: 0.02 }, prefixCacheHitRate: 0.125 },
            { scenario: 'rate 2', rate: 2, requests: 32, completed: 32, failed: 0, requestsPerSecond: 1.9, outputTokensPerSecond: 60.5,
              ttftMs: { mean: 200, p50: 190.25, p99: 480 }, tpotMs: { mean: 50, p50: 48, p99: 70 }, itlMs: { mean: 50, p50: 47.5, p99: 90 } },
          ], bandwidth: { bytesPerToken: 500_000_000, readGBs: 8.1, copyGBs: 25.9, utilization: 0.3127 } },
          { driver: 'llama.cpp', scenarios: [
            { scenario: 'c1', concurrency: 1, requests: 16, completed: 16, failed: 0, requestsPerSecond: 0.45, outputTokensPerSecond: 14.5,
              ttftMs: { mean: 90, p50: 88.0, p99: 150 }, tpotMs: { mean: 33, p50: 32.5, p99: 41 }, itlMs: { mean: 33, p50: 32.0, p99: 47 } },
          ] },
        ],
      }],
    },
  };
}

/**
 * Data-parallel result files (bench/dist.ts, bench/dist_wan.ts) in the shapes they have had:
 * the first ones (one load average, one run per figure, no link latency), and the current ones
 * (alternating rounds with every round's median, relay counters, delay and buffer of the link).
 */
export function distResultFiles(): Record<string, unknown> {
  const old = { date: '2026-12-02T13:57:52.360Z', commit: 'e'.repeat(40), kiln: KILN_CPU };
  const now = { date: '2026-12-02T16:16:51.064Z', commit: 'f'.repeat(40), kiln: KILN_CPU };
  const scalingRun = (nproc: number, tokensPerSecond: number, load: number) => ({
    nproc, tokensPerSecond, stepMs: 2048 / tokensPerSecond * 1e3, optimizerMs: 30, commMs: nproc > 1 ? 23.5 : 0, commExposedMs: nproc > 1 ? 15 : 0,
    commBytes: nproc > 1 ? 4690436 : 0, loadAverageBefore: load, loadAverageAfter: load + 0.1,
  });
  return {
    'dist-old.json': {
      benchmark: 'dist', ...old,
      results: [
        { benchmark: 'allreduce-loopback', worldSize: 2, bytes: 1048576, kiln: { bytes: 1048576, medianMs: 16.061956, algBandwidthGBs: 0.06528320710130199, busBandwidthGBs: 0.06528320710130199 },
          gloo: { rank: 0, bytes: 1048576, medianMs: 4.3418, algBandwidthGBs: 0.2415, busBandwidthGBs: 0.2415 }, ratioOfGloo: 0.2703238389287867, loadAverage: 23.98 },
        // the Gloo driver could not be built: no peer, no ratio, no verdict
        { benchmark: 'allreduce-loopback', worldSize: 2, bytes: 26214400, kiln: { bytes: 26214400, medianMs: 142.661405, algBandwidthGBs: 0.18375257134191272, busBandwidthGBs: 0.18375257134191272 },
          loadAverage: 23.98, note: 'the Gloo driver could not be built: g++ missing' },
        { benchmark: 'scaling-tiny', batchPerRank: 8, seqLen: 128, steps: 23, one: scalingRun(1, 1919.8596186647692, 23.7), two: scalingRun(2, 2976.2723300808234, 23.53), scalingEfficiency: 0.7751275929619198 },
      ],
    },
    'dist-now.json': {
      benchmark: 'dist', ...now,
      results: [
        { benchmark: 'allreduce-loopback', worldSize: 2, bytes: 26214400, repeats: 100, rounds: 3,
          kiln: { medianMs: 29.691377, algBandwidthGBs: 0.8828960677707874, busBandwidthGBs: 0.8828960677707874, roundMedianMs: [29.691377, 31.2, 28.9], medianRoundTripMs: 30.4 },
          gloo: { medianMs: 26.6346, algBandwidthGBs: 0.9842, busBandwidthGBs: 0.9842, roundMedianMs: [26.6346, 27.1, 25.9] }, ratioOfGloo: 0.8970697701389834, loadAverages: [1.34, 1.41, 1.29] },
        { benchmark: 'scaling-tiny', batchPerRank: 8, seqLen: 128, steps: 43, rounds: 3,
          one: [scalingRun(1, 6715.01, 1.34), scalingRun(1, 6600.5, 1.2), scalingRun(1, 6801.25, 1.3)],
          two: [scalingRun(2, 12000.5, 1.31), scalingRun(2, 12500.75, 1.4), scalingRun(2, 11800.25, 1.25)],
          twoWithoutDistributedMuon: [scalingRun(2, 11000.5, 1.3), scalingRun(2, 11200.5, 1.3), scalingRun(2, 10900.5, 1.3)],
          scalingEfficiency: 12000.5 / (2 * 6715.01), scalingEfficiencyWithoutDistributedMuon: 11000.5 / (2 * 6715.01) },
      ],
    },
    'dist-wan-old.json': {
      benchmark: 'dist-wan', ...old,
      results: [
        { name: 'sync over 100mbit', steps: 250, tokens: 512000, tokensPerSecond: 1383.917229801758, medianStepMs: 1404.4331429999984, commMsTotal: 141851.45141999994, commExposedMsTotal: 132342.126107,
          commExposedPerStepMs: 529.3685044279999, commBytesTotal: 1172609000, commBytesPerStep: 4690436, commBytesPerToken: 2290.251953125, valLoss: 1.8540898263454437, loss: 1.8143630027770996, loadAverage: 27.76 },
        { name: 'diloco over 100mbit', steps: 250, tokens: 512000, tokensPerSecond: 1735.733443559845, medianStepMs: 1115.4221639999887, commMsTotal: 2299.694023, commExposedMsTotal: 2239.0106769999998,
          commExposedPerStepMs: 8.956042707999998, commBytesTotal: 2135540, commBytesPerStep: 8542.16, commBytesPerToken: 4.1709765625, valLoss: 2.0763673186302185, loss: 2.007906675338745, loadAverage: 29.43, innerSteps: 50, quantBits: 4 },
        // the first harness wrote no verdict on the validation loss: the report works it out from the two runs
        { note: 'link: veth between two network namespaces, tbf 100mbit each way; added latency: none (netem is not in this kernel)', rate: '100mbit' },
      ],
    },
    'dist-wan-now.json': {
      benchmark: 'dist-wan', ...now,
      results: [
        { name: 'local (1 rank)', steps: 250, tokens: 256000, tokensPerSecond: 7690.853795789101, medianStepMs: 129.14, commMsTotal: 0, commExposedMsTotal: 0, commExposedPerStepMs: 0, commBytesTotal: 0,
          commBytesPerStep: 0, commBytesPerToken: 0, valLoss: 2.042431116104126, loss: 1.98, loadAverage: 0.56 },
        { name: 'sync over 100mbit', steps: 250, tokens: 512000, tokensPerSecond: 4124.886847376915, medianStepMs: 481.08, commMsTotal: 97747.56, commExposedMsTotal: 95386.11, commExposedPerStepMs: 381.54446589200023,
          commBytesTotal: 1172609000, commBytesPerStep: 4690436, commBytesPerToken: 2290.251953125, valLoss: 1.8540898263454437, loss: 1.81, loadAverage: 0.91 },
        { name: 'diloco over 100mbit', steps: 250, tokens: 512000, tokensPerSecond: 15600.5, medianStepMs: 95.31, commMsTotal: 2387.77, commExposedMsTotal: 2362.25, commExposedPerStepMs: 9.449010608000004,
          commBytesTotal: 2136540, commBytesPerStep: 8546.16, commBytesPerToken: 4.1729296875, valLoss: 1.88, loss: 1.85, loadAverage: 1.23, innerSteps: 50, quantBits: 4 },
        { name: 'link relay counters', counters: { aToB: { packets: 812345, bytes: 1190000000, dropped: 12, droppedBytes: 17000, writeErrors: 0 }, bToA: { packets: 800001, bytes: 1180000000, dropped: 0, droppedBytes: 0, writeErrors: 0 } } },
        { note: 'link: emulated by bench/peers/wan_link.cc between TUN devices in two network namespaces: 100mbit each way, 50 ms one-way delay (RTT 100 ms), 100 ms sender buffer with tail drop', rate: '100mbit',
          delayMs: 50, queueMs: 100, dilocoPerRankTokensPerSecondOfLocal: 15600.5 / 2 / 7690.853795789101, dilocoValLossVsSync: 1.88 / 1.8540898263454437 - 1 },
      ],
    },
  };
}
