/**
 * /metrics in Prometheus text format (prom-client, one Registry per dashboard so two dashboards
 * in one process never share or clash): the training figures per run, and the serving engine's
 * state read at scrape time with TTFT / inter-token latency histograms.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { ServingSource } from './serving.js';
import type { RunStatus, TrainingPoint } from './training.js';

const LATENCY_BUCKETS_S = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80];

export class DashboardMetrics {
  readonly registry = new Registry();
  private readonly train: {
    step: Gauge; loss: Gauge; valLoss: Gauge; tokensPerSecond: Gauge; mfu: Gauge; stepSeconds: Gauge; gradNorm: Gauge; lr: Gauge;
    peakMemory: Gauge; progress: Gauge; eta: Gauge; tokens: Counter;
    worldSize: Gauge; commBytes: Gauge; commBytesPerToken: Gauge; commBandwidth: Gauge; scalingEfficiency: Gauge;
  };
  private serve?: { ttft: Histogram; itl: Histogram };

  constructor() {
    const r = [this.registry];
    const gauge = (name: string, help: string, labelNames = ['run']) => new Gauge({ name, help, labelNames, registers: r });
    this.train = {
      step: gauge('kiln_train_step', 'optimizer steps completed'),
      loss: gauge('kiln_train_loss', 'training loss of the last step'),
      valLoss: gauge('kiln_train_val_loss', 'the last validation loss'),
      tokensPerSecond: gauge('kiln_train_tokens_per_second', 'training tokens per second of the last step'),
      mfu: gauge('kiln_train_mfu_ratio', 'model FLOPs utilization of the last step (0..1; GPUs with a datasheet peak)'),
      stepSeconds: gauge('kiln_train_step_seconds', 'time of the last step by phase (device time for forward/backward/optimizer)', ['run', 'phase']),
      gradNorm: gauge('kiln_train_grad_norm', 'global gradient norm before clipping'),
      lr: gauge('kiln_train_lr_multiplier', 'learning-rate schedule multiplier'),
      peakMemory: gauge('kiln_train_peak_memory_bytes', 'peak device memory of the last step'),
      progress: gauge('kiln_train_progress_ratio', 'steps done / steps planned'),
      eta: gauge('kiln_train_eta_seconds', 'estimated seconds to the last step'),
      tokens: new Counter({ name: 'kiln_train_tokens_total', help: 'tokens trained on', labelNames: ['run'], registers: r }),
      // data-parallel runs only (a single-process run never sets them)
      worldSize: gauge('kiln_train_world_size', 'ranks of a data-parallel run'),
      commBytes: gauge('kiln_train_comm_bytes', 'bytes of the last step\'s collectives: sent on the wire, or the payload reduced', ['run', 'kind']),
      commBytesPerToken: gauge('kiln_train_comm_bytes_per_token', 'wire bytes of the last step per token trained'),
      commBandwidth: gauge('kiln_train_comm_bandwidth_bytes_per_second', 'effective bandwidth of the last step\'s collectives (nccl-tests: algorithm, bus)', ['run', 'kind']),
      scalingEfficiency: gauge('kiln_train_scaling_efficiency_ratio', 'tokens/s over world size times one rank\'s tokens/s (when a baseline was given)'),
    };
  }

  /** Updates the training figures of one run (a few label lookups: microseconds). */
  trainingStep(run: string, p: TrainingPoint, status: RunStatus): void {
    const t = this.train;
    const labels = { run };
    t.step.set(labels, p.step);
    t.loss.set(labels, p.loss);
    if (p.valLoss !== undefined) t.valLoss.set(labels, p.valLoss);
    if (p.tokensPerSecond !== undefined) t.tokensPerSecond.set(labels, p.tokensPerSecond);
    if (p.mfu !== undefined) t.mfu.set(labels, p.mfu);
    const phases: [string, number | undefined][] = [
      ['total', p.stepMs], ['forward', p.forwardMs], ['backward', p.backwardMs], ['optimizer', p.optimizerMs], ['communication', p.communicationMs],
      ['communication_exposed', p.commExposedMs],
    ];
    for (const [phase, ms] of phases) if (ms !== undefined) t.stepSeconds.set({ run, phase }, ms / 1e3);
    if (p.gradNorm !== undefined) t.gradNorm.set(labels, p.gradNorm);
    if (p.lr !== undefined) t.lr.set(labels, p.lr);
    if (p.peakMemoryBytes !== undefined) t.peakMemory.set(labels, p.peakMemoryBytes);
    if (status.progress !== undefined) t.progress.set(labels, status.progress);
    if (status.etaS !== undefined) t.eta.set(labels, status.etaS);
    if (p.tokens !== undefined) t.tokens.inc(labels, p.tokens);
    if (p.worldSize !== undefined) t.worldSize.set(labels, p.worldSize);
    if (p.commBytes !== undefined) t.commBytes.set({ run, kind: 'wire' }, p.commBytes);
    if (p.commPayloadBytes !== undefined) t.commBytes.set({ run, kind: 'payload' }, p.commPayloadBytes);
    if (p.commBytesPerToken !== undefined) t.commBytesPerToken.set(labels, p.commBytesPerToken);
    if (p.algBandwidthGBs !== undefined) t.commBandwidth.set({ run, kind: 'algorithm' }, p.algBandwidthGBs * 1e9);
    if (p.busBandwidthGBs !== undefined) t.commBandwidth.set({ run, kind: 'bus' }, p.busBandwidthGBs * 1e9);
    if (p.scalingEfficiency !== undefined) t.scalingEfficiency.set(labels, p.scalingEfficiency);
  }

  /** Serving gauges read from the engine at scrape time, histograms fed by finished requests. */
  serving(engine: ServingSource): { record: (ttftMs: number, interTokenMs: number[]) => void } {
    const r = [this.registry];
    const read = (name: string, help: string, value: (s: ReturnType<ServingSource['stats']>) => number) =>
      new Gauge({ name, help, registers: r, collect() { this.set(value(engine.stats())); } });
    read('kiln_serve_requests_running', 'requests decoding now', (s) => s.running);
    read('kiln_serve_requests_waiting', 'requests queued', (s) => s.waiting);
    read('kiln_serve_kv_cache_usage_ratio', 'fraction of KV blocks in use (0..1)', (s) => s.kvUsage);
    read('kiln_serve_prefix_cache_hit_rate', 'prefix-cache hits / queries in tokens (0..1)', (s) => s.prefixCacheHitRate);
    read('kiln_serve_output_tokens_per_second', 'output tokens per second over the last few seconds', (s) => s.tokensPerSecond);
    read('kiln_serve_requests_finished', 'requests finished since start', (s) => s.requestsFinished);
    this.serve ??= {
      ttft: new Histogram({ name: 'kiln_serve_time_to_first_token_seconds', help: 'request arrival to first output token', buckets: LATENCY_BUCKETS_S, registers: r }),
      itl: new Histogram({ name: 'kiln_serve_inter_token_latency_seconds', help: 'gap between consecutive output tokens', buckets: LATENCY_BUCKETS_S, registers: r }),
    };
    const { ttft, itl } = this.serve;
    return {
      record(ttftMs, interTokenMs) {
        ttft.observe(ttftMs / 1e3);
        for (const gap of interTokenMs) itl.observe(gap / 1e3);
      },
    };
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
