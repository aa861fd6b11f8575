/**
 * Prometheus metrics of one server (prom-client, a Registry per server so that several servers in
 * one process do not clash). Names follow vLLM's where an equivalent exists, so dashboards built
 * for vLLM read kiln unchanged; gauges and counters are read from engine.stats() at scrape time,
 * histograms are fed by engine.onRequestFinished.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { RequestRecord, ServingEngine } from './types.js';

// vLLM's bucket edges (seconds), so quantile queries written for vLLM mean the same here
const TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640, 2560];
const TPOT_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80];
const LATENCY_BUCKETS = [0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960, 1920, 7680];
const TOKEN_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000];

export class ServerMetrics {
  readonly registry = new Registry();
  private engine: ServingEngine | undefined;
  private unsubscribe: (() => void) | undefined;
  /** engine totals at the last scrape: counters advance by the difference */
  private last = { prompt: 0, generation: 0, prefixQueries: 0, prefixHits: 0, preempted: 0 };
  private readonly ttft: Histogram<'model_name'>;
  private readonly tpot: Histogram<'model_name'>;
  private readonly interToken: Histogram<'model_name'>;
  private readonly e2e: Histogram<'model_name'>;
  private readonly queue: Histogram<'model_name'>;
  private readonly promptTokens: Histogram<'model_name'>;
  private readonly generationTokens: Histogram<'model_name'>;
  private readonly success: Counter<'model_name' | 'finished_reason'>;
  readonly httpResponses: Counter<'route' | 'code'>;

  constructor(private modelName: string, options: { processMetrics?: boolean } = {}) {
    const registry = this.registry;
    const labelNames = ['model_name'] as const;
    const stat = <T>(read: (s: ReturnType<ServingEngine['stats']>) => T, fallback: T): T => (this.engine ? read(this.engine.stats()) : fallback);
    const gauge = (name: string, help: string, read: (s: ReturnType<ServingEngine['stats']>) => number) => {
      const metrics = this;
      new Gauge({
        name, help, labelNames, registers: [registry],
        collect() {
          this.set({ model_name: metrics.modelName }, stat(read, 0));
        },
      });
    };
    gauge('vllm:num_requests_running', 'Requests decoding or prefilling now.', (s) => s.running);
    gauge('vllm:num_requests_waiting', 'Requests queued for admission.', (s) => s.waiting);
    gauge('vllm:kv_cache_usage_perc', 'Fraction of KV cache blocks in use (1 = full).', (s) => s.kvUsage);
    gauge('vllm:gpu_cache_usage_perc', 'Fraction of KV cache blocks in use (1 = full; vLLM v0 name, on every device).', (s) => s.kvUsage);
    gauge('kiln:kv_cache_blocks_total', 'KV cache blocks in the pool.', (s) => s.kvBlocksTotal);
    gauge('kiln:kv_cache_blocks_used', 'KV cache blocks held by sequences or the prefix cache.', (s) => s.kvBlocksUsed);
    gauge('kiln:generation_tokens_per_second', 'Output tokens per second over the last few seconds.', (s) => s.tokensPerSecond);

    const counter = (name: string, help: string, key: keyof ServerMetrics['last'], read: (s: ReturnType<ServingEngine['stats']>) => number) => {
      const metrics = this;
      new Counter({
        name, help, labelNames, registers: [registry],
        collect() {
          if (!metrics.engine) return;
          const now = read(metrics.engine.stats());
          const delta = now - metrics.last[key];
          if (delta > 0) this.inc({ model_name: metrics.modelName }, delta);
          metrics.last[key] = Math.max(now, metrics.last[key]);
        },
      });
    };
    // prom-client appends nothing to counter names ending in _total
    counter('vllm:prompt_tokens_total', 'Prefilled prompt tokens.', 'prompt', (s) => s.promptTokensTotal);
    counter('vllm:generation_tokens_total', 'Generated tokens.', 'generation', (s) => s.generationTokensTotal);
    counter('vllm:prefix_cache_queries_total', 'Prompt tokens looked up in the prefix cache.', 'prefixQueries', (s) => s.prefixCacheQueries);
    counter('vllm:prefix_cache_hits_total', 'Prompt tokens found in the prefix cache.', 'prefixHits', (s) => s.prefixCacheHits);
    counter('vllm:num_preemptions_total', 'Sequences preempted (KV blocks freed, recomputed later).', 'preempted', (s) => s.requestsPreempted);

    this.success = new Counter({ name: 'vllm:request_success_total', help: 'Finished requests by finish reason.', labelNames: ['model_name', 'finished_reason'], registers: [registry] });
    const histogram = (name: string, help: string, buckets: number[]) => new Histogram({ name, help, labelNames, buckets, registers: [registry] });
    this.ttft = histogram('vllm:time_to_first_token_seconds', 'Arrival to first output token.', TTFT_BUCKETS);
    this.tpot = histogram('vllm:time_per_output_token_seconds', 'Mean time per output token after the first, per request.', TPOT_BUCKETS);
    this.interToken = histogram('vllm:inter_token_latency_seconds', 'Gap between consecutive output tokens.', TPOT_BUCKETS);
    this.e2e = histogram('vllm:e2e_request_latency_seconds', 'Arrival to finish.', LATENCY_BUCKETS);
    this.queue = histogram('vllm:request_queue_time_seconds', 'Time waiting before the first prefill.', LATENCY_BUCKETS);
    this.promptTokens = histogram('vllm:request_prompt_tokens', 'Prompt tokens per request.', TOKEN_BUCKETS);
    this.generationTokens = histogram('vllm:request_generation_tokens', 'Generated tokens per request.', TOKEN_BUCKETS);
    this.httpResponses = new Counter({ name: 'kiln:http_responses_total', help: 'HTTP responses by route and status code.', labelNames: ['route', 'code'], registers: [registry] });
    if (options.processMetrics !== false) collectDefaultMetrics({ register: registry });
  }

  /** Starts reading this engine (once it is loaded). */
  attach(engine: ServingEngine, modelName: string): void {
    this.detach();
    this.engine = engine;
    this.modelName = modelName;
    const s = engine.stats();
    this.last = { prompt: s.promptTokensTotal, generation: s.generationTokensTotal, prefixQueries: s.prefixCacheQueries, prefixHits: s.prefixCacheHits, preempted: s.requestsPreempted };
    this.unsubscribe = engine.onRequestFinished((record) => this.observe(record));
  }

  detach(): void {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
  }

  private observe(record: RequestRecord): void {
    const labels = { model_name: this.modelName };
    this.success.inc({ ...labels, finished_reason: record.finishReason });
    this.e2e.observe(labels, record.timings.totalMs / 1000);
    this.queue.observe(labels, record.timings.queueMs / 1000);
    this.promptTokens.observe(labels, record.promptTokens);
    this.generationTokens.observe(labels, record.completionTokens);
    if (record.completionTokens > 0) this.ttft.observe(labels, record.timings.ttftMs / 1000);
    if (record.completionTokens > 1) this.tpot.observe(labels, record.timings.tpotMs / 1000);
    for (const gap of record.interTokenMs) this.interToken.observe(labels, gap / 1000);
  }

  async text(): Promise<string> {
    return this.registry.metrics();
  }
}
