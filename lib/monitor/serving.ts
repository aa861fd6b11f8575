/**
 * The serving panel's feed: the engine's own counters (ServingEngine.stats()) sampled on a timer,
 * and TTFT / inter-token / per-output-token latency percentiles over the requests that finished in
 * a sliding window (from onRequestFinished), all worked out here in Node.
 */
import { describe, fail } from '../errors.js';
import type { EngineStats, RequestRecord, ServingEngine } from '../serve/types.js';

export interface ServingSample {
  /** ms since the epoch */
  time: number;
  running: number;
  waiting: number;
  /** output tokens per second (the engine's own figure) */
  tokensPerSecond: number;
  /** 0..1 */
  kvUsage: number;
  kvBlocksUsed: number;
  kvBlocksTotal: number;
  /** 0..1 */
  prefixCacheHitRate: number;
  requestsFinished: number;
  requestsPreempted: number;
  /** requests that finished inside the window */
  windowRequests: number;
  /** percentiles over the window (absent when no request finished in it) */
  ttftP50Ms?: number;
  ttftP90Ms?: number;
  ttftP99Ms?: number;
  itlP50Ms?: number;
  itlP90Ms?: number;
  itlP99Ms?: number;
  tpotP50Ms?: number;
}

/** Nearest-rank percentile of an ascending array (q in 0..1); undefined when empty. */
export function percentile(sorted: ArrayLike<number>, q: number): number | undefined {
  if (sorted.length === 0) return undefined;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

export interface ServingFeedOptions {
  /** seconds of finished requests the percentiles cover (default 30) */
  windowS?: number;
  /** inter-token gaps kept per window at most (default 200,000; the oldest go first) */
  maxGaps?: number;
}

/** Keeps the recent finished requests and turns engine stats into samples. */
export class ServingFeed {
  private readonly records: { time: number; record: RequestRecord }[] = [];
  private gaps = 0;
  private readonly windowMs: number;
  private readonly maxGaps: number;
  readonly samples: ServingSample[] = [];

  constructor(options: ServingFeedOptions = {}) {
    const windowS = options.windowS ?? 30;
    const maxGaps = options.maxGaps ?? 200_000;
    if (typeof windowS !== 'number' || !Number.isFinite(windowS) || windowS <= 0) fail('ERR_ARG', `windowS must be a positive number of seconds, got ${describe(windowS)}`);
    if (typeof maxGaps !== 'number' || !Number.isSafeInteger(maxGaps) || maxGaps < 1) fail('ERR_ARG', `maxGaps must be a positive integer, got ${describe(maxGaps)}`);
    this.windowMs = windowS * 1e3;
    this.maxGaps = maxGaps;
  }

  /** A finished request (from ServingEngine.onRequestFinished). */
  add(record: RequestRecord, now = Date.now()): void {
    this.records.push({ time: now, record });
    this.gaps += record.interTokenMs?.length ?? 0;
    while (this.records.length > 1 && this.gaps > this.maxGaps) this.drop();
  }

  private drop(): void {
    const old = this.records.shift();
    this.gaps -= old?.record.interTokenMs?.length ?? 0;
  }

  /** One sample of the engine's stats plus the window's latency percentiles; kept in `samples`. */
  sample(stats: EngineStats, now = Date.now()): ServingSample {
    while (this.records.length > 0 && this.records[0].time < now - this.windowMs) this.drop();
    const ttft = Float64Array.from(this.records, (r) => r.record.timings.ttftMs).sort();
    const tpot = Float64Array.from(this.records.filter((r) => r.record.completionTokens > 1), (r) => r.record.timings.tpotMs).sort();
    const itl = new Float64Array(this.gaps);
    let n = 0;
    for (const r of this.records) for (const gap of r.record.interTokenMs ?? []) itl[n++] = gap;
    const gaps = itl.subarray(0, n).sort();
    const sample: ServingSample = {
      time: now, running: stats.running, waiting: stats.waiting, tokensPerSecond: stats.tokensPerSecond, kvUsage: stats.kvUsage,
      kvBlocksUsed: stats.kvBlocksUsed, kvBlocksTotal: stats.kvBlocksTotal, prefixCacheHitRate: stats.prefixCacheHitRate,
      requestsFinished: stats.requestsFinished, requestsPreempted: stats.requestsPreempted, windowRequests: this.records.length,
      ttftP50Ms: percentile(ttft, 0.5), ttftP90Ms: percentile(ttft, 0.9), ttftP99Ms: percentile(ttft, 0.99),
      itlP50Ms: percentile(gaps, 0.5), itlP90Ms: percentile(gaps, 0.9), itlP99Ms: percentile(gaps, 0.99), tpotP50Ms: percentile(tpot, 0.5),
    };
    for (const key of Object.keys(sample) as (keyof ServingSample)[]) if (sample[key] === undefined) delete sample[key];
    this.samples.push(sample);
    return sample;
  }
}

/** The engine surface the panel uses (a ServingEngine has it). */
export type ServingSource = Pick<ServingEngine, 'stats' | 'onRequestFinished'> & { readonly modelName?: string };
