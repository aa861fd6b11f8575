/**
 * The serving benchmark (`kiln bench serve`), in the style of vLLM's benchmark_serving: prompts
 * drawn from a validation shard (mixed lengths), a fixed output length (end of text ignored),
 * greedy decoding, run at concurrency 1, 8 and 32 and under a Poisson request-rate sweep.
 * Per scenario: output tokens/s, requests/s, TTFT, TPOT (time per output token after the first)
 * and ITL (gaps between streamed tokens) p50/p99, KV cache usage and prefix-cache hit rate
 * where the server exposes them; at concurrency 1 also memory-bandwidth utilization: bytes read
 * per decoded token (weights + KV) times tokens/s over the machine's measured copy bandwidth
 * (bench/memory.ts).
 *
 * Drivers, one interface (all timings are taken where the client sees the tokens):
 *   kiln       the in-process Engine (lib/serve/engine.ts) through engine.stream()
 *   http       any OpenAI-compatible server: POST /v1/completions with stream: true, SSE parsed
 *              here (kiln serve, vLLM, llama-server ...)
 *   llama.cpp  node-llama-cpp's prebuilt CPU llama.cpp on the GGUF kiln exports, same dtype,
 *              same thread count, one context with a sequence per concurrent request (its own
 *              batching across sequences)
 *
 * Targets (bench/targets.ts; 2-core CPU, 125m preset): concurrency-1 decode >= 1.0x llama.cpp
 * tokens/s in the same dtype; concurrency-32 output tokens/s >= 2x llama.cpp; TTFT p99 <= 3x p50
 * under the rate sweep; HTTP overhead at concurrency 32 within 5% tokens/s and 5 ms TTFT p50.
 */
import { closeSync, existsSync, fstatSync, mkdtempSync, openSync, readSync, rmSync } from 'node:fs';
import { homedir, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { info } from '../lib/index.js';
import { fail } from '../lib/errors.js';
import { bundledCorpus, prepareDocuments, readShardInfo } from '../lib/io/shards.js';
import { byteTokenizer, gpt2Tokenizer } from '../lib/data/tokenizer.js';
import { exportLlamaGguf } from '../lib/io/gguf_llama.js';
import { type ModelConfig, matmulParameters, preset } from '../lib/model/config.js';
import { LlamaModel } from '../lib/model/llama.js';
import { loadCheckpoint, resolveCheckpoint, saveCheckpoint } from '../lib/io/checkpoint.js';
import type { ServeDriverResult, ServeRow, ServeScenario, ServeVerdicts } from '../lib/monitor/results_schema.js';
import type { ServingEngine } from '../lib/serve/types.js';
import { benchMemory } from './memory.js';
import { HTTP_OVERHEAD_TARGETS, SERVE_TARGETS } from './targets.js';

// ---------------------------------------------------------------------------------------------
// What one request looks like from the client

export interface RequestTiming {
  ok: boolean;
  error?: string;
  promptTokens: number;
  outputTokens: number;
  /** performance.now() when the request was sent, when each token (or streamed chunk) arrived, when it ended */
  sentMs: number;
  tokenMs: number[];
  endMs: number;
}

export interface DriverGauges {
  /** fraction of the KV cache in use, 0..1 */
  kvUsage: number;
  /** cumulative prefix-cache lookups and hits, in tokens (absent where the server has no prefix cache) */
  prefixCacheQueries?: number;
  prefixCacheHits?: number;
}

export interface ServeDriver {
  readonly name: string;
  /** what the results should say about this driver (dtype, threads, url, ...) */
  readonly description: Record<string, unknown>;
  /** one greedy request of exactly `maxTokens` output tokens (end of text ignored), streamed */
  request(prompt: number[], maxTokens: number): Promise<RequestTiming>;
  gauges?(): DriverGauges;
  /** where the server's time went since the last call, when it can tell */
  profile?(): Record<string, number> | undefined;
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Drivers

/** The in-process kiln engine (or anything implementing ServingEngine). */
export function engineDriver(engine: ServingEngine, description: Record<string, unknown> = {}): ServeDriver {
  const profiled = engine as ServingEngine & { profile?: () => { iterations: number; modelMs: number; samplingMs: number; sampledRows: number } };
  let last = profiled.profile?.();
  return {
    name: 'kiln',
    description: { kind: 'in-process Engine', ...description },
    async request(prompt, maxTokens) {
      const timing: RequestTiming = { ok: false, promptTokens: prompt.length, outputTokens: 0, sentMs: performance.now(), tokenMs: [], endMs: 0 };
      try {
        for await (const event of engine.stream(prompt, { maxTokens, temperature: 0, ignoreEos: true })) {
          if ('done' in event) {
            timing.ok = event.finishReason === 'length';
            if (!timing.ok) timing.error = `finished with '${event.finishReason}'`;
          } else {
            timing.tokenMs.push(performance.now());
            timing.outputTokens++;
          }
        }
      } catch (error) {
        timing.error = (error as Error).message;
      }
      timing.endMs = performance.now();
      return timing;
    },
    gauges() {
      const s = engine.stats();
      return { kvUsage: s.kvUsage, prefixCacheQueries: s.prefixCacheQueries, prefixCacheHits: s.prefixCacheHits };
    },
    profile() {
      const now = profiled.profile?.();
      if (!now || !last) return undefined;
      const d = { iterations: now.iterations - last.iterations, modelMs: now.modelMs - last.modelMs, samplingMs: now.samplingMs - last.samplingMs, sampledRows: now.sampledRows - last.sampledRows };
      last = now;
      return d;
    },
    close: () => engine.close('cancel'),
  };
}

/** Splits a Server-Sent Events byte stream into the data payloads of its events. */
export async function* sseData(body: AsyncIterable<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buffer = '';
  for await (const chunk of body) {
    buffer += decoder.decode(chunk, { stream: true });
    for (;;) {
      const end = buffer.search(/\r?\n\r?\n/);
      if (end < 0) break;
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + (buffer[end] === '\r' ? 4 : 2));
      const data = block.split(/\r?\n/).filter((l) => l.startsWith('data:')).map((l) => l.slice(5).replace(/^ /, ''));
      if (data.length) yield data.join('\n');
    }
  }
}

export interface HttpDriverOptions {
  /** base URL, e.g. http://127.0.0.1:8000 (with or without /v1) */
  url: string;
  /** model id (default: the first of GET /v1/models) */
  model?: string;
  apiKey?: string;
  /** send prompts as token ids (default, exact) or as text decoded by `decode` */
  decode?: (ids: number[]) => string;
}

/** Any OpenAI-compatible completions endpoint, streamed, timed at the client. */
export async function httpDriver(options: HttpDriverOptions): Promise<ServeDriver> {
  const base = options.url.replace(/\/+$/, '').replace(/\/v1$/, '');
  if (!/^https?:\/\//.test(base)) fail('ERR_ARG', `--url must be an http(s) URL, got ${options.url}`);
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (options.apiKey) headers.authorization = `Bearer ${options.apiKey}`;
  let model = options.model;
  if (!model) {
    let response: Response;
    try {
      response = await fetch(`${base}/v1/models`, { headers });
    } catch (error) {
      fail('ERR_ARG', `cannot reach ${base}/v1/models: ${(error as Error).message}`);
    }
    if (!response.ok) fail('ERR_ARG', `${base}/v1/models answered ${response.status}`);
    const list = (await response.json()) as { data?: { id: string }[] };
    model = list.data?.[0]?.id;
    if (!model) fail('ERR_ARG', `${base}/v1/models lists no model`);
  }
  return {
    name: 'http',
    description: { kind: 'OpenAI-compatible HTTP (streamed completions)', url: base, model, prompts: options.decode ? 'text' : 'token ids' },
    async request(prompt, maxTokens) {
      const timing: RequestTiming = { ok: false, promptTokens: prompt.length, outputTokens: 0, sentMs: performance.now(), tokenMs: [], endMs: 0 };
      try {
        const body = {
          model, prompt: options.decode ? options.decode(prompt) : prompt, max_tokens: maxTokens, temperature: 0, stream: true,
          stream_options: { include_usage: true }, ignore_eos: true, // ignore_eos: vLLM's (and kiln's) extension for fixed output lengths
        };
        const response = await fetch(`${base}/v1/completions`, { method: 'POST', headers, body: JSON.stringify(body) });
        if (!response.ok || !response.body) {
          timing.error = `HTTP ${response.status}: ${(await response.text()).slice(0, 200)}`;
        } else {
          let usageTokens: number | undefined;
          let done = false;
          for await (const data of sseData(response.body)) {
            if (data === '[DONE]') {
              done = true;
              break;
            }
            const chunk = JSON.parse(data) as { choices?: { text?: string }[]; usage?: { completion_tokens?: number; prompt_tokens?: number }; error?: { message?: string } };
            if (chunk.error) throw new Error(chunk.error.message ?? 'error event');
            if (chunk.choices?.length) timing.tokenMs.push(performance.now());
            if (chunk.usage?.completion_tokens !== undefined) usageTokens = chunk.usage.completion_tokens;
            if (chunk.usage?.prompt_tokens !== undefined) timing.promptTokens = chunk.usage.prompt_tokens;
          }
          timing.outputTokens = usageTokens ?? timing.tokenMs.length;
          timing.ok = done && timing.outputTokens === maxTokens;
          if (!timing.ok) timing.error = done ? `${timing.outputTokens} of ${maxTokens} tokens` : 'the stream ended without [DONE]';
        }
      } catch (error) {
        timing.error = (error as Error).message;
      }
      timing.endMs = performance.now();
      return timing;
    },
    close: async () => {},
  };
}

export interface LlamaCppDriverOptions {
  gguf: string;
  /** sequences in the context: the most requests it decodes at once (others wait for a free one, FCFS) */
  sequences: number;
  /** KV cells per sequence (prompt + output) */
  contextPerSequence: number;
  threads: number;
  /** KV cache element type (F32 for f32 weights, F16 / BF16 for half) */
  kvType: 'F32' | 'F16' | 'BF16';
  /** tokens per llama_decode batch (default 512) */
  batchSize?: number;
}

/** llama.cpp (node-llama-cpp's prebuilt CPU build; never a download or a source build) on a GGUF file. */
export async function llamaCppDriver(o: LlamaCppDriverOptions): Promise<ServeDriver> {
  let nlc: typeof import('node-llama-cpp');
  try {
    nlc = await import('node-llama-cpp');
  } catch (error) {
    fail('ERR_ARG', `the llama.cpp peer needs the node-llama-cpp devDependency (npm install in a kiln checkout): ${(error as Error).message}`);
  }
  const llama = await nlc.getLlama({ gpu: false, build: 'never', usePrebuiltBinaries: true, skipDownload: true, progressLogs: false, logLevel: nlc.LlamaLogLevel.error, maxThreads: o.threads });
  const model = await llama.loadModel({ modelPath: o.gguf, gpuLayers: 0 });
  const context = await model.createContext({
    contextSize: o.contextPerSequence, sequences: o.sequences, threads: { ideal: o.threads, min: o.threads }, batchSize: o.batchSize ?? 512,
    flashAttention: false, experimentalKvCacheKeyType: o.kvType, experimentalKvCacheValueType: o.kvType,
  });
  const free = Array.from({ length: o.sequences }, () => context.getSequence());
  const waiting: ((s: (typeof free)[number]) => void)[] = [];
  const acquire = () => (free.length ? Promise.resolve(free.pop()!) : new Promise<(typeof free)[number]>((resolve) => waiting.push(resolve)));
  const release = (s: (typeof free)[number]) => {
    const next = waiting.shift();
    if (next) next(s);
    else free.push(s);
  };
  let busyCells = 0;
  return {
    name: 'llama.cpp',
    description: {
      kind: 'node-llama-cpp (llama.cpp CPU prebuilt)', llamaCpp: llama.llamaCppRelease, gguf: o.gguf, sequences: o.sequences,
      contextPerSequence: context.contextSize, threads: o.threads, kvType: o.kvType, batchSize: context.batchSize, flashAttention: false,
    },
    async request(prompt, maxTokens) {
      const timing: RequestTiming = { ok: false, promptTokens: prompt.length, outputTokens: 0, sentMs: performance.now(), tokenMs: [], endMs: 0 };
      const sequence = await acquire();
      let cells = 0;
      try {
        await sequence.clearHistory();
        busyCells += prompt.length;
        cells += prompt.length;
        // greedy (temperature 0); llama.cpp keeps generating past end of text until we stop reading
        for await (const token of sequence.evaluate(prompt as never, { temperature: 0, yieldEogToken: true })) {
          void token;
          timing.tokenMs.push(performance.now());
          timing.outputTokens++;
          busyCells++;
          cells++;
          if (timing.outputTokens >= maxTokens) break;
        }
        timing.ok = timing.outputTokens === maxTokens;
        if (!timing.ok) timing.error = `${timing.outputTokens} of ${maxTokens} tokens`;
      } catch (error) {
        timing.error = (error as Error).message;
      } finally {
        busyCells -= cells;
        release(sequence);
      }
      timing.endMs = performance.now();
      return timing;
    },
    // KV cells holding live tokens over all cells (llama.cpp keeps no prefix cache across sequences)
    gauges: () => ({ kvUsage: busyCells / (context.contextSize * o.sequences) }),
    async close() {
      await context.dispose();
      await model.dispose();
      await llama.dispose();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Prompts and scenarios

/** xorshift32 in [0, 1), seeded */
function rng(seed: number): () => number {
  let state = (seed >>> 0) || 0x9e3779b9;
  return () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 4294967296;
  };
}

/** `count` windows of the token shard at seeded random offsets, lengths uniform in [minLength, maxLength]. */
export function drawPrompts(shardPath: string, count: number, minLength: number, maxLength: number, seed: number, vocabSize: number): number[][] {
  const shard = readShardInfo(shardPath);
  if (shard.vocabSize > vocabSize) fail('ERR_ARG', `${shardPath} holds ${shard.tokenizer} tokens (${shard.vocabSize} ids), more than the model's vocabulary (${vocabSize})`);
  if (shard.tokens < maxLength + 1) fail('ERR_ARG', `${shardPath} has ${shard.tokens} tokens, fewer than the longest prompt (${maxLength})`);
  const fd = openSync(shardPath, 'r');
  const bytes = Buffer.alloc(fstatSync(fd).size - 64);
  readSync(fd, bytes, 0, bytes.length, 64);
  closeSync(fd);
  const at = (i: number) => (shard.bytesPerToken === 2 ? bytes.readUInt16LE(2 * i) : bytes.readUInt32LE(4 * i));
  const random = rng(seed);
  const prompts: number[][] = [];
  for (let i = 0; i < count; i++) {
    const length = minLength + Math.floor(random() * (maxLength - minLength + 1));
    const start = Math.floor(random() * (shard.tokens - length));
    prompts.push(Array.from({ length }, (_, j) => at(start + j)));
  }
  return prompts;
}

export interface Scenario {
  name: string;
  /** closed loop: this many requests in flight at all times */
  concurrency?: number;
  /** open loop: Poisson arrivals at this many requests per second */
  rate?: number;
  requests: number;
}

function quantile(values: number[], q: number): number {
  if (!values.length) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}
const mean = (v: number[]) => (v.length ? v.reduce((a, b) => a + b, 0) / v.length : NaN);

/**
 * One scenario's figures, as the result file holds them. This writer always counts the gauge's
 * samples (older files in the schema may lack the count).
 */
export type ScenarioResult = Omit<ServeScenario, 'kvUsage'> & { kvUsage?: { mean: number; max: number; samples: number } };

/** Summarizes client-side timings the way vLLM's benchmark does. */
export function summarize(timings: RequestTiming[], durationMs: number): Omit<ScenarioResult, 'scenario' | 'requests' | 'loadAverage'> {
  const ok = timings.filter((t) => t.ok);
  const ttft = ok.map((t) => t.tokenMs[0] - t.sentMs);
  const e2e = ok.map((t) => t.endMs - t.sentMs);
  // TPOT: (last token - first token) / (output tokens - 1), per request
  const tpot = ok.filter((t) => t.outputTokens > 1).map((t) => (t.tokenMs[t.tokenMs.length - 1] - t.tokenMs[0]) / (t.outputTokens - 1));
  const itl = ok.flatMap((t) => t.tokenMs.slice(1).map((x, i) => x - t.tokenMs[i]));
  const promptTokens = ok.reduce((a, t) => a + t.promptTokens, 0);
  const outputTokens = ok.reduce((a, t) => a + t.outputTokens, 0);
  const s = durationMs / 1000;
  const stats = (v: number[]) => ({ mean: mean(v), p50: quantile(v, 0.5), p99: quantile(v, 0.99) });
  return {
    completed: ok.length, failed: timings.length - ok.length, errors: [...new Set(timings.filter((t) => !t.ok).map((t) => t.error ?? 'unknown'))].slice(0, 5),
    durationS: s, promptTokens, outputTokens, requestsPerSecond: ok.length / s, outputTokensPerSecond: outputTokens / s,
    totalTokensPerSecond: (promptTokens + outputTokens) / s, ttftMs: stats(ttft), tpotMs: stats(tpot), itlMs: stats(itl), e2eMs: stats(e2e),
    decodeTokensPerSecond: 1000 / quantile(tpot, 0.5),
  };
}

/** When each request of an open-loop scenario arrives, in ms from its start: a seeded Poisson process (exponential gaps) of `rate` per second, the first at 0. */
export function arrivalTimes(rate: number, requests: number, seed = 0): number[] {
  const random = rng(seed + 17);
  const arrivals: number[] = [];
  let arrival = 0;
  for (let i = 0; i < requests; i++) {
    if (i > 0) arrival += (-Math.log(1 - random()) / rate) * 1000;
    arrivals.push(arrival);
  }
  return arrivals;
}

/** Runs one scenario: closed loop at a concurrency, or open loop at a Poisson rate. */
export async function runScenario(driver: ServeDriver, prompts: number[][], outputTokens: number, scenario: Scenario, seed = 0): Promise<ScenarioResult> {
  if (prompts.length < scenario.requests) fail('ERR_ARG', `scenario ${scenario.name} needs ${scenario.requests} prompts, got ${prompts.length}`);
  const timings: RequestTiming[] = [];
  const kv: number[] = [];
  const before = driver.gauges?.();
  driver.profile?.();
  // The KV gauge is sampled at the start, every 20 ms, and at the end: a scenario shorter than the
  // timer's period still records two samples, so a completed run always reports kvUsage.
  const sample = driver.gauges ? () => void kv.push(driver.gauges!().kvUsage) : undefined;
  sample?.();
  const sampler = sample ? setInterval(sample, 20) : undefined;
  const started = performance.now();
  const pick = (i: number) => prompts[i];
  try {
    if (scenario.concurrency !== undefined) {
      let next = 0;
      const worker = async () => {
        while (next < scenario.requests) {
          const i = next++;
          timings.push(await driver.request(pick(i), outputTokens));
        }
      };
      await Promise.all(Array.from({ length: Math.min(scenario.concurrency, scenario.requests) }, worker));
    } else if (scenario.rate !== undefined) {
      const arrivals = arrivalTimes(scenario.rate, scenario.requests, seed);
      const inFlight: Promise<void>[] = [];
      for (let i = 0; i < scenario.requests; i++) {
        // a timer may fire up to a few ms early by performance.now() (it counts from the event
        // loop's cached time), so wait again until the arrival is due: never sent early
        for (let wait = started + arrivals[i] - performance.now(); wait > 0; wait = started + arrivals[i] - performance.now()) {
          await new Promise((resolve) => setTimeout(resolve, wait));
        }
        inFlight.push(driver.request(pick(i), outputTokens).then((t) => void timings.push(t)));
      }
      await Promise.all(inFlight);
    } else {
      fail('ERR_ARG', `scenario ${scenario.name} has neither a concurrency nor a rate`);
    }
  } finally {
    if (sampler) clearInterval(sampler);
  }
  const duration = performance.now() - started;
  sample?.();
  const after = driver.gauges?.();
  const result: ScenarioResult = { scenario: scenario.name, concurrency: scenario.concurrency, rate: scenario.rate, requests: scenario.requests, ...summarize(timings, duration), loadAverage: loadavg()[0] };
  if (kv.length) result.kvUsage = { mean: mean(kv), max: Math.max(...kv), samples: kv.length };
  if (before?.prefixCacheQueries !== undefined && after?.prefixCacheQueries !== undefined) {
    const queries = after.prefixCacheQueries - before.prefixCacheQueries;
    result.prefixCacheHitRate = queries > 0 ? (after.prefixCacheHits! - before.prefixCacheHits!) / queries : 0;
  }
  const profile = driver.profile?.();
  if (profile) result.serverProfile = profile;
  return result;
}

// ---------------------------------------------------------------------------------------------
// The benchmark

export interface ServeBenchOptions {
  /** a kiln checkpoint; default: a random-weight checkpoint of `preset` (cached) */
  checkpoint?: string;
  preset: string;
  dtype: 'f32' | 'bf16';
  /** drivers to run, in order: 'kiln', 'llama.cpp', 'http' (http needs url) */
  drivers: string[];
  url?: string;
  model?: string;
  apiKey?: string;
  /** directory with val.bin; default: the bundled corpus with the model's tokenizer (cached) */
  data?: string;
  promptMin: number;
  promptMax: number;
  outputTokens: number;
  /** requests per closed-loop scenario: concurrency c runs max(requests, c) */
  requests: number;
  concurrency: number[];
  /** Poisson rates (requests/s); empty = fractions of the first driver's measured concurrency-32 capacity */
  rates: number[];
  rateFractions: number[];
  rateRequests: number;
  threads: number;
  /** llama.cpp's threads (default: the same as kiln's) */
  peerThreads?: number;
  kvCacheMiB: number;
  seed: number;
  /** measure the copy bandwidth for MBU (bench/memory.ts) */
  bandwidth: boolean;
}

export const SERVE_DEFAULTS: Omit<ServeBenchOptions, 'threads'> = {
  preset: '125m', dtype: 'f32', drivers: ['kiln', 'llama.cpp'], promptMin: 16, promptMax: 192, outputTokens: 32, requests: 16,
  concurrency: [1, 8, 32], rates: [], rateFractions: [0.3, 0.6, 0.9], rateRequests: 32, kvCacheMiB: 1024, seed: 0, bandwidth: true,
};

function cacheDir(): string {
  return process.env.KILN_CACHE_DIR ?? join(homedir(), '.cache', 'kiln');
}

/**
 * A checkpoint of the preset with kiln's seeded random initialization (throughput does not
 * depend on the weights' values). The classifier rows of ids the tokenizer does not have (GPT-2's
 * 50257 padded to 50304) are zeroed, as training leaves them far below real tokens, so greedy
 * decoding never picks an id that has no text.
 */
async function randomCheckpoint(name: string): Promise<string> {
  const dir = join(cacheDir(), `serve-${name}-random`);
  if (existsSync(join(dir, 'model.safetensors'))) return dir;
  const config = preset(name);
  const model = new LlamaModel(config, { seed: 1 });
  const weights = model.namedWeights();
  const tokenizerVocab = config.vocabSize <= 256 ? 256 : (await gpt2Tokenizer()).vocabSize;
  if (config.vocabSize > tokenizerVocab) {
    const head = weights.get('lm_head.weight') ?? weights.get('model.embed_tokens.weight')!;
    const values = (await head.toArray()) as Float32Array;
    values.fill(0, tokenizerVocab * config.dModel);
    head.write(values);
  }
  await saveCheckpoint(dir, config, weights, undefined, undefined);
  model.dispose();
  return dir;
}

async function validationShard(vocabSize: number, data?: string): Promise<string> {
  if (data) return join(data, 'val.bin');
  const byte = vocabSize <= 256;
  const dir = join(cacheDir(), byte ? 'data-byte' : 'data-gpt2');
  if (!existsSync(join(dir, 'val.bin'))) prepareDocuments(await bundledCorpus(), dir, byte ? byteTokenizer : await gpt2Tokenizer());
  return join(dir, 'val.bin');
}

/** Bytes a decode step reads per sequence: every weight but the embedding table (one row of it), plus the KV of the context. */
export function decodeBytes(config: ModelConfig, weightBytes: number, kvBytes: number, contextTokens: number): { weights: number; kv: number } {
  const norms = (2 * config.layers + 1) * config.dModel * 4;
  return {
    weights: matmulParameters(config) * weightBytes + norms + config.dModel * weightBytes,
    kv: 2 * config.layers * config.kvHeads * config.headDim * kvBytes * contextTokens,
  };
}

function fmt(r: ScenarioResult): string {
  const f = (x: number, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : '-');
  return `${r.scenario.padEnd(10)} ${f(r.outputTokensPerSecond).padStart(7)} tok/s ${f(r.requestsPerSecond, 2).padStart(6)} req/s  TTFT p50 ${f(r.ttftMs.p50, 0)} p99 ${f(r.ttftMs.p99, 0)} ms  TPOT p50 ${f(r.tpotMs.p50)} p99 ${f(r.tpotMs.p99)} ms  ITL p50 ${f(r.itlMs.p50)} p99 ${f(r.itlMs.p99)} ms` +
    (r.kvUsage ? `  KV ${(100 * r.kvUsage.mean).toFixed(0)}%/${(100 * r.kvUsage.max).toFixed(0)}%` : '') +
    (r.prefixCacheHitRate !== undefined ? `  prefix hits ${(100 * r.prefixCacheHitRate).toFixed(1)}%` : '') +
    (r.failed ? `  FAILED ${r.failed}: ${r.errors.join('; ')}` : '') + `  (load ${r.loadAverage.toFixed(1)})`;
}

export async function benchServe(o: ServeBenchOptions): Promise<ServeRow> {
  for (const d of o.drivers) if (!['kiln', 'llama.cpp', 'http'].includes(d)) fail('ERR_ARG', `unknown serving driver '${d}' (known: kiln, llama.cpp, http)`);
  if (o.drivers.includes('http') && !o.url) fail('ERR_ARG', 'the http driver needs --url');
  if (!(o.promptMin >= 1 && o.promptMax >= o.promptMin)) fail('ERR_ARG', '--prompt-min and --prompt-max must satisfy 1 <= min <= max');
  const checkpoint = o.checkpoint ? resolveCheckpoint(o.checkpoint) : await randomCheckpoint(o.preset);
  const { config } = loadCheckpoint(checkpoint);
  if (o.promptMax + o.outputTokens > config.context) fail('ERR_ARG', `prompts of up to ${o.promptMax} tokens plus ${o.outputTokens} output tokens exceed the context (${config.context})`);
  const shard = await validationShard(config.vocabSize, o.data);
  // every scenario gets prompts of its own (the same ones for every driver), so the prefix cache
  // hits only what requests genuinely share, never a replay of an earlier scenario
  const closedLoop = o.concurrency.map((c) => Math.max(o.requests, c));
  const rateCount = o.rates.length || o.rateFractions.length;
  const prompts = drawPrompts(shard, 1 + closedLoop.reduce((a, b) => a + b, 0) + rateCount * o.rateRequests, o.promptMin, o.promptMax, o.seed, config.vocabSize);
  const slices: number[][][] = [];
  let taken = 1; // prompts[0] warms up
  for (const n of [...closedLoop, ...Array<number>(rateCount).fill(o.rateRequests)]) {
    slices.push(prompts.slice(taken, taken + n));
    taken += n;
  }
  const weightBytes = o.dtype === 'f32' ? 4 : 2;
  const run = {
    checkpoint: o.checkpoint ?? `random ${o.preset} (seeded init, untrained)`, config, dtype: o.dtype, threads: o.threads, shard,
    prompts: { count: prompts.length, min: o.promptMin, max: o.promptMax, mean: mean(prompts.map((p) => p.length)) }, outputTokens: o.outputTokens,
    loadAverageAtStart: loadavg(),
  };
  console.log(`serve: ${run.checkpoint}, ${o.dtype}, ${o.threads} threads, prompts ${o.promptMin}-${o.promptMax} tokens (mean ${run.prompts.mean.toFixed(0)}), ${o.outputTokens} output tokens; load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);

  let copyGBs: number | undefined;
  if (o.bandwidth) {
    const memory = await benchMemory(['cpu']);
    copyGBs = memory.find((m) => m.op === 'copy')?.achievedGBs;
  }

  let rates = o.rates;
  const perDriver: ServeDriverResult[] = [];
  let temp: string | undefined;
  for (const name of o.drivers) {
    let driver: ServeDriver;
    if (name === 'kiln') {
      const { Engine } = await import('../lib/serve/engine.js');
      const engine = await Engine.load(checkpoint, { computeDType: o.dtype, kvCacheBytes: o.kvCacheMiB * 2 ** 20, maxRunningSequences: Math.max(64, ...o.concurrency) });
      driver = engineDriver(engine, { computeDType: o.dtype, kvCacheMiB: o.kvCacheMiB, threads: info().cpuThreads, options: engine.options });
    } else if (name === 'http') {
      driver = await httpDriver({ url: o.url!, model: o.model, apiKey: o.apiKey });
    } else {
      temp ??= mkdtempSync(join(tmpdir(), 'kiln-bench-serve-'));
      const gguf = join(temp, `model-${o.dtype}.gguf`);
      await exportLlamaGguf(checkpoint, gguf, { dtype: o.dtype });
      driver = await llamaCppDriver({
        gguf, sequences: Math.max(...o.concurrency), contextPerSequence: o.promptMax + o.outputTokens, threads: o.peerThreads ?? o.threads, kvType: o.dtype === 'f32' ? 'F32' : 'BF16',
      });
    }
    console.log(`${driver.name}: ${JSON.stringify(driver.description)}`);
    const scenarios: ScenarioResult[] = [];
    try {
      // warm-up: one short request (first-use allocations, lazy weight conversion, page faults)
      await driver.request(prompts[0].slice(0, 8), 2);
      for (const [i, c] of o.concurrency.entries()) {
        const r = await runScenario(driver, slices[i], o.outputTokens, { name: `c${c}`, concurrency: c, requests: closedLoop[i] }, o.seed);
        console.log(`  ${driver.name.padEnd(9)} ${fmt(r)}`);
        scenarios.push(r);
      }
      if (!rates.length) {
        const capacity = scenarios.find((s) => s.concurrency === Math.max(...o.concurrency))?.requestsPerSecond ?? 1;
        rates = o.rateFractions.map((f) => Number((f * capacity).toPrecision(3)));
      }
      for (const [i, rate] of rates.entries()) {
        const r = await runScenario(driver, slices[o.concurrency.length + i], o.outputTokens, { name: `rate ${rate}`, rate, requests: o.rateRequests }, o.seed);
        console.log(`  ${driver.name.padEnd(9)} ${fmt(r)}`);
        scenarios.push(r);
      }
    } finally {
      await driver.close();
    }
    const entry: ServeDriverResult = { ...driver.description, driver: driver.name, scenarios };
    const single = scenarios.find((s) => s.concurrency === 1);
    if (single && copyGBs && name !== 'http') {
      // mean context while decoding: the prompt plus half the output
      const context = single.promptTokens / single.completed + o.outputTokens / 2;
      const bytes = decodeBytes(config, weightBytes, weightBytes, context);
      const readGBs = ((bytes.weights + bytes.kv) * single.decodeTokensPerSecond) / 1e9;
      entry.bandwidth = { bytesPerToken: bytes.weights + bytes.kv, weightBytes: bytes.weights, kvBytes: bytes.kv, readGBs, copyGBs, utilization: readGBs / copyGBs };
      console.log(`  ${driver.name.padEnd(9)} c1 decode ${single.decodeTokensPerSecond.toFixed(1)} tok/s reads ${((bytes.weights + bytes.kv) / 2 ** 20).toFixed(0)} MiB/token = ${readGBs.toFixed(1)} GB/s, ${((100 * readGBs) / copyGBs).toFixed(0)}% of measured copy bandwidth ${copyGBs.toFixed(1)} GB/s`);
    }
    perDriver.push(entry);
  }
  if (temp) rmSync(temp, { recursive: true, force: true });
  const row: ServeRow = { ...run, ...(o.bandwidth ? { copyBandwidthGBs: copyGBs } : {}), drivers: perDriver, targets: targets(perDriver) };
  for (const [k, v] of Object.entries(row.targets)) console.log(`target ${k}: ${JSON.stringify(v)}`);
  return row;
}

/** The targets (bench/targets.ts), as measured (hits and misses both recorded). */
export function targets(drivers: ServeDriverResult[]): ServeVerdicts {
  const find = (name: string) => drivers.find((d) => d.driver === name);
  const kiln = find('kiln');
  const peer = find('llama.cpp');
  const http = find('http');
  const out: ServeVerdicts = {};
  const at = (d: ServeDriverResult | undefined, c: number) => d?.scenarios.find((s) => s.concurrency === c);
  if (kiln && peer) {
    const k1 = at(kiln, 1);
    const p1 = at(peer, 1);
    if (k1 && p1) {
      const ratio = k1.decodeTokensPerSecond / p1.decodeTokensPerSecond;
      out.decodeC1VsLlamaCpp = { kiln: k1.decodeTokensPerSecond, llamaCpp: p1.decodeTokensPerSecond, ratio, target: SERVE_TARGETS.decodeC1VsLlamaCpp, met: ratio >= SERVE_TARGETS.decodeC1VsLlamaCpp };
    }
    const k32 = at(kiln, 32);
    const p32 = at(peer, 32);
    if (k32 && p32) {
      const ratio = k32.outputTokensPerSecond / p32.outputTokensPerSecond;
      out.throughputC32VsLlamaCpp = { kiln: k32.outputTokensPerSecond, llamaCpp: p32.outputTokensPerSecond, ratio, target: SERVE_TARGETS.throughputC32VsLlamaCpp, met: ratio >= SERVE_TARGETS.throughputC32VsLlamaCpp };
    }
  }
  if (kiln) {
    const sweep = kiln.scenarios.filter((s) => s.rate !== undefined).map((s) => ({ rate: s.rate, p50: s.ttftMs.p50, p99: s.ttftMs.p99, ratio: s.ttftMs.p99 / s.ttftMs.p50 }));
    if (sweep.length) out.ttftP99OverP50UnderRateSweep = { sweep, target: SERVE_TARGETS.ttftP99OverP50UnderRateSweep, met: sweep.every((s) => s.ratio <= SERVE_TARGETS.ttftP99OverP50UnderRateSweep) };
  }
  if (kiln && http) {
    const k = at(kiln, 32);
    const h = at(http, 32);
    if (k && h) {
      const share = h.outputTokensPerSecond / k.outputTokensPerSecond;
      out.httpOverheadC32 = { tokensPerSecondShare: share, ttftP50DeltaMs: h.ttftMs.p50 - k.ttftMs.p50, met: share >= HTTP_OVERHEAD_TARGETS.tokensPerSecondShare && h.ttftMs.p50 - k.ttftMs.p50 <= HTTP_OVERHEAD_TARGETS.ttftP50ExtraMs };
    }
  }
  return out;
}

