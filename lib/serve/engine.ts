/**
 * The serving engine: owns the model runner (weights, paged KV cache), the block pool and the
 * scheduler, and runs one async loop that drives them (lib/serve/types.ts is its contract).
 *
 *   const engine = await Engine.load('runs/tiny', { maxBatchTokens: 256 }); // or runs/tiny/latest, runs/tiny/step-000600
 *   const done = await engine.generate('The film was', { maxTokens: 64, temperature: 0 });
 *   for await (const e of engine.stream('Once', { maxTokens: 32 })) if (!('done' in e)) write(e.text);
 *
 * Requests only enqueue; the loop runs while there is work: schedule an iteration (decodes +
 * prefill chunks), enqueue its ops, await the logits (the wait happens on a worker thread, so
 * the Node event loop stays free), sample each finishing row, emit token events, free what
 * finished. Input is checked before any work (KilnError ERR_ARG); a full queue is ERR_BUSY; an
 * aborted signal ends the request at once and frees its blocks.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Device } from '../device.js';
import { parseDevice } from '../device.js';
import { KilnError, fail } from '../errors.js';
import { readSafetensors } from '../io/safetensors.js';
import { type ModelConfig, fromHfConfig } from '../model/config.js';
import { checkpointName, resolveCheckpoint } from '../io/checkpoint.js';
import { IncrementalDetokenizer } from './detokenizer.js';
import { KvBlockPool, kvBytesPerToken } from './kv_cache.js';
import { ModelRunner } from './model_runner.js';
import { type ResolvedSampling, SequenceSampler, resolveSampling } from './sampler.js';
import { type ScheduledChunk, Scheduler, type SequenceState } from './scheduler.js';
import { type ServingTokenizer, kilnTokenizer, loadHfTokenizer } from './tokenizer.js';
import type {
  Completion, EngineOptions, EngineStats, FinishReason, GenerateInput, RequestOptions, RequestRecord, SamplingParams, ServingEngine,
  StreamEnd, Timings, TokenEvent, TokenLogprob,
} from './types.js';

/** Options of Engine.load beyond the shared contract. */
export interface EngineLoadOptions extends EngineOptions {
  /** kiln checkpoints without tokenizer.json: 'byte' or 'gpt2' (default: byte for vocabularies up to 256 ids, else gpt2) */
  tokenizer?: string;
}

const OPTION_KEYS = new Set([
  'device', 'computeDType', 'kvCacheBytes', 'kvCacheBlocks', 'blockSize', 'maxBatchTokens', 'maxRunningSequences', 'maxQueuedRequests',
  'prefixCaching', 'modelName', 'tokenizer',
]);

interface ResolvedOptions {
  device: Device;
  computeDType: 'f32' | 'bf16';
  numBlocks: number;
  blockSize: number;
  maxBatchTokens: number;
  maxRunningSequences: number;
  maxQueuedRequests: number;
  prefixCaching: boolean;
}

function positiveInt(value: unknown, name: string, dflt: number): number {
  if (value === undefined) return dflt;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) fail('ERR_ARG', `${name} must be a positive integer, got ${String(value)}`);
  return value;
}

function resolveOptions(options: EngineLoadOptions, config: ModelConfig): ResolvedOptions {
  if (!options || typeof options !== 'object') fail('ERR_ARG', 'engine options must be an object');
  for (const key of Object.keys(options)) if (!OPTION_KEYS.has(key)) fail('ERR_ARG', `unknown engine option '${key}'`);
  const device = options.device === undefined ? 'cpu' : parseDevice(options.device);
  if (device !== 'cpu' && process.env.KILN_CUDA_SERVING !== '1') {
    // the CUDA engine runs on CUDA tensors in code but has not run on a GPU (test/cuda/serve.test.ts)
    fail('ERR_DEVICE', `CUDA serving is built but not yet verified on a GPU; asked for ${device}: serve on cpu, or set KILN_CUDA_SERVING=1 to run the unverified CUDA path`);
  }
  const computeDType = options.computeDType ?? (device === 'cpu' ? 'f32' : 'bf16');
  if (computeDType !== 'f32' && computeDType !== 'bf16') fail('ERR_ARG', `computeDType must be 'f32' or 'bf16', got ${String(computeDType)}`);
  if (device !== 'cpu' && config.headDim !== 64 && config.headDim !== 128) fail('ERR_ARG', `the CUDA attention kernels take head dims 64 and 128; the model has ${config.headDim}`);
  const blockSize = positiveInt(options.blockSize, 'blockSize', 16);
  if (blockSize > 1024) fail('ERR_ARG', `blockSize must be at most 1024, got ${blockSize}`);
  const perBlock = kvBytesPerToken(config.layers, config.kvHeads, config.headDim, computeDType === 'f32' ? 4 : 2) * blockSize;
  let numBlocks: number;
  if (options.kvCacheBlocks !== undefined) {
    numBlocks = positiveInt(options.kvCacheBlocks, 'kvCacheBlocks', 1);
  } else {
    const bytes = options.kvCacheBytes === undefined ? 256 * 2 ** 20 : options.kvCacheBytes;
    if (typeof bytes !== 'number' || !Number.isFinite(bytes) || bytes <= 0) fail('ERR_ARG', `kvCacheBytes must be a positive number, got ${String(bytes)}`);
    numBlocks = Math.floor(bytes / perBlock);
    if (numBlocks < 1) fail('ERR_ARG', `kvCacheBytes ${bytes} holds no block (one block of ${blockSize} tokens takes ${perBlock} bytes)`);
  }
  const maxBatchTokens = positiveInt(options.maxBatchTokens, 'maxBatchTokens', 512);
  if (maxBatchTokens > 65536) fail('ERR_ARG', `maxBatchTokens must be at most 65536, got ${maxBatchTokens}`);
  // every running sequence decodes one token per iteration, so they must fit the token budget
  const maxRunningSequences = Math.min(positiveInt(options.maxRunningSequences, 'maxRunningSequences', 64), maxBatchTokens);
  const maxQueuedRequests = positiveInt(options.maxQueuedRequests, 'maxQueuedRequests', 1024);
  const prefixCaching = options.prefixCaching ?? true;
  if (typeof prefixCaching !== 'boolean') fail('ERR_ARG', 'prefixCaching must be a boolean');
  return { device, computeDType, numBlocks, blockSize, maxBatchTokens, maxRunningSequences, maxQueuedRequests, prefixCaching };
}

type Listener = (record: RequestRecord) => void;

/** A request in flight: its sequence, sampler, detokenizer, and the events its reader has not taken yet. */
class Request {
  readonly events: (TokenEvent | StreamEnd)[] = [];
  wake?: () => void;
  error?: unknown;
  readonly output: number[] = [];
  readonly logprobs: TokenLogprob[] = [];
  readonly interTokenMs: number[] = [];
  firstScheduledAt?: number;
  firstTokenAt?: number;
  lastTokenAt?: number;
  finished = false;
  detachSignal?: () => void;

  constructor(
    readonly id: string,
    readonly seq: SequenceState,
    readonly params: ResolvedSampling,
    readonly sampler: SequenceSampler,
    readonly detokenizer: IncrementalDetokenizer,
    readonly arrivedAt: number,
  ) {}

  push(event: TokenEvent | StreamEnd): void {
    this.events.push(event);
    this.wake?.();
  }
}

export class Engine implements ServingEngine {
  readonly modelName: string;
  readonly contextLength: number;
  readonly tokenizer: ServingTokenizer;
  readonly chatTemplate?: string;
  readonly config: ModelConfig;
  readonly options: Readonly<ResolvedOptions>;
  private readonly runner: ModelRunner;
  private readonly pool: KvBlockPool;
  private readonly scheduler: Scheduler;
  private readonly requests = new Map<SequenceState, Request>();
  private readonly listeners = new Set<Listener>();
  private readonly scratch: Float32Array;
  private looping?: Promise<void>;
  private closing = false;
  private closed = false;
  private nextOrder = 0;
  private nextId = 0;
  private counters = { promptTokens: 0, generationTokens: 0, finished: 0, iterations: 0, modelMs: 0, samplingMs: 0, sampledRows: 0 };
  /** (time ms, tokens) per recent iteration, for tokensPerSecond */
  private readonly recent: [number, number][] = [];

  private constructor(config: ModelConfig, runner: ModelRunner, options: ResolvedOptions, tokenizer: ServingTokenizer, modelName: string, chatTemplate?: string) {
    this.config = config;
    this.contextLength = config.context;
    this.runner = runner;
    this.options = options;
    this.tokenizer = tokenizer;
    this.modelName = modelName;
    if (chatTemplate !== undefined) this.chatTemplate = chatTemplate;
    this.pool = new KvBlockPool(options.numBlocks, options.blockSize, options.prefixCaching);
    this.scheduler = new Scheduler(this.pool, options);
    this.scratch = new Float32Array(config.vocabSize);
  }

  /**
   * Loads a kiln checkpoint (a checkpoint directory, a run directory, or its "latest" pointer) or a
   * Hugging Face directory of a family kiln declares (lib/model/arch: llama, qwen2, qwen3;
   * config.json, model.safetensors, tokenizer.json). The model is named (`modelName`, what the
   * HTTP server serves) after the run when given a run or its pointer ('tiny' for runs/tiny), else
   * after the directory, unless `options.modelName` says.
   */
  static async load(checkpointDir: string, options: EngineLoadOptions = {}): Promise<Engine> {
    if (typeof checkpointDir !== 'string' || !checkpointDir) fail('ERR_ARG', 'Engine.load needs a checkpoint directory');
    const dir = resolveCheckpoint(checkpointDir);
    const configPath = join(dir, 'config.json');
    if (!existsSync(configPath)) fail('ERR_CHECKPOINT', `${dir} has no config.json: not a checkpoint`);
    let json: Record<string, unknown>;
    try {
      json = JSON.parse(readFileSync(configPath, 'utf8')) as Record<string, unknown>;
    } catch {
      fail('ERR_CHECKPOINT', `${configPath} is not valid JSON`);
    }
    // the architecture named by model_type reads the config, refusing (naming the field) what kiln does not implement
    const config = fromHfConfig(json);
    const resolved = resolveOptions(options, config);
    const hf = loadHfTokenizer(dir, json, config.vocabSize);
    const tokenizer = hf && options.tokenizer === undefined ? hf.tokenizer : await kilnTokenizer(options.tokenizer, config.vocabSize);
    const weightsPath = join(dir, 'model.safetensors');
    if (!existsSync(weightsPath)) {
      fail('ERR_CHECKPOINT', `${dir} has no model.safetensors${existsSync(join(dir, 'model.safetensors.index.json')) ? ' (sharded checkpoints are not supported)' : ''}`);
    }
    const weights = readSafetensors(weightsPath).tensors;
    const runner = new ModelRunner(config, weights, {
      device: resolved.device, computeDType: resolved.computeDType, numBlocks: resolved.numBlocks, blockSize: resolved.blockSize,
      maxTokens: resolved.maxBatchTokens, maxSampleRows: resolved.maxRunningSequences,
    });
    const modelName = options.modelName ?? checkpointName(checkpointDir);
    return new Engine(config, runner, resolved, tokenizer, modelName, hf?.chatTemplate);
  }

  // ---------- requests ----------

  private checkInput(input: GenerateInput): number[] {
    let ids: number[];
    if (typeof input === 'string') {
      if (!input.length) fail('ERR_ARG', 'the prompt is empty');
      ids = this.tokenizer.encode(input);
    } else if (Array.isArray(input)) {
      ids = input;
      const V = this.config.vocabSize;
      for (const t of ids) if (!Number.isSafeInteger(t) || t < 0 || t >= V) fail('ERR_ARG', `token id ${String(t)} is outside the vocabulary [0, ${V})`);
      ids = [...ids];
    } else {
      fail('ERR_ARG', 'the prompt must be a string or an array of token ids');
    }
    if (!ids.length) fail('ERR_ARG', 'the prompt has no tokens');
    if (ids.length >= this.contextLength) fail('ERR_ARG', `the prompt has ${ids.length} tokens; the context holds ${this.contextLength} (prompt and output together)`);
    if (Math.ceil(ids.length / this.options.blockSize) > this.options.numBlocks) {
      fail('ERR_ARG', `the prompt needs ${Math.ceil(ids.length / this.options.blockSize)} KV blocks; the cache has ${this.options.numBlocks}`);
    }
    return ids;
  }

  /** Validates and queues a request (throws KilnError before any work). */
  private submit(input: GenerateInput, params: SamplingParams | undefined, options: RequestOptions | undefined): Request {
    if (this.closing || this.closed) fail('ERR_DISPOSED', 'the engine is closed');
    const resolved = resolveSampling(params, this.config.vocabSize);
    if (options !== undefined && (options === null || typeof options !== 'object')) fail('ERR_ARG', 'request options must be an object');
    const signal = options?.signal;
    if (signal !== undefined && !(signal instanceof AbortSignal)) fail('ERR_ARG', 'signal must be an AbortSignal');
    const prompt = this.checkInput(input);
    if (this.scheduler.waiting.length >= this.options.maxQueuedRequests) {
      fail('ERR_BUSY', `${this.scheduler.waiting.length} requests are already waiting (maxQueuedRequests ${this.options.maxQueuedRequests}): retry later`);
    }
    const seq: SequenceState = {
      order: this.nextOrder++, tokens: prompt, promptLength: prompt.length, computed: 0, blocks: [], hashes: [], status: 'waiting',
      cachedTokens: 0, admittedOnce: false, preemptions: 0,
    };
    const request = new Request(`req-${this.nextId++}`, seq, resolved, new SequenceSampler(resolved, prompt), new IncrementalDetokenizer(this.tokenizer, resolved.stopStrings), performance.now());
    this.requests.set(seq, request);
    this.counters.promptTokens += prompt.length;
    this.scheduler.add(seq);
    if (signal) {
      const onAbort = () => this.finish(request, 'abort');
      if (signal.aborted) {
        queueMicrotask(onAbort);
      } else {
        signal.addEventListener('abort', onAbort, { once: true });
        request.detachSignal = () => signal.removeEventListener('abort', onAbort);
      }
    }
    this.kick();
    return request;
  }

  stream(input: GenerateInput, params?: SamplingParams, options?: RequestOptions): AsyncIterable<TokenEvent | StreamEnd> {
    const request = this.submit(input, params, options);
    return { [Symbol.asyncIterator]: () => this.reader(request) };
  }

  private reader(request: Request): AsyncIterator<TokenEvent | StreamEnd> {
    let ended = false;
    return {
      next: async () => {
        while (!ended) {
          const event = request.events.shift();
          if (event) {
            if ('done' in event) ended = true;
            return { value: event, done: false };
          }
          if (request.error) {
            ended = true;
            throw request.error;
          }
          await new Promise<void>((resolve) => (request.wake = resolve));
          request.wake = undefined;
        }
        return { value: undefined, done: true };
      },
      return: async () => {
        // the reader stopped early (break in for await): cancel the request
        if (!request.finished) this.finish(request, 'abort');
        ended = true;
        return { value: undefined, done: true };
      },
    };
  }

  async generate(input: GenerateInput, params?: SamplingParams, options?: RequestOptions): Promise<Completion> {
    const request = this.submit(input, params, options);
    let text = '';
    for await (const event of { [Symbol.asyncIterator]: () => this.reader(request) }) {
      text += event.text;
      if ('done' in event) {
        const completion: Completion = { text, tokenIds: [...request.output], finishReason: event.finishReason, usage: event.usage, timings: event.timings };
        if (request.params.logprobs >= 0) completion.logprobs = request.logprobs;
        return completion;
      }
    }
    fail('ERR_INTERNAL', 'the request ended without a summary');
  }

  onRequestFinished(listener: (record: RequestRecord) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  stats(): EngineStats {
    const now = performance.now();
    while (this.recent.length && now - this.recent[0][0] > 5000) this.recent.shift();
    let tokens = 0;
    for (const [, n] of this.recent) tokens += n;
    const span = this.recent.length ? Math.max(now - this.recent[0][0], 1000) : 1;
    const used = this.pool.used;
    return {
      running: this.scheduler.running.length,
      waiting: this.scheduler.waiting.length,
      kvBlocksTotal: this.pool.numBlocks,
      kvBlocksUsed: used,
      kvBlocksFree: this.pool.available,
      kvUsage: used / this.pool.numBlocks,
      prefixCacheQueries: this.pool.queriedTokens,
      prefixCacheHits: this.pool.hitTokens,
      prefixCacheHitRate: this.pool.queriedTokens ? this.pool.hitTokens / this.pool.queriedTokens : 0,
      promptTokensTotal: this.counters.promptTokens,
      generationTokensTotal: this.counters.generationTokens,
      requestsFinished: this.counters.finished,
      requestsPreempted: this.scheduler.preemptions,
      tokensPerSecond: this.recent.length ? (tokens * 1000) / span : 0,
      iterations: this.counters.iterations,
    };
  }

  /** Where an iteration's time goes: model (ops and the logits read) vs sampling in JS, in total ms. */
  profile(): { iterations: number; modelMs: number; samplingMs: number; sampledRows: number } {
    const c = this.counters;
    return { iterations: c.iterations, modelMs: c.modelMs, samplingMs: c.samplingMs, sampledRows: c.sampledRows };
  }

  async close(mode: 'drain' | 'cancel' = 'drain'): Promise<void> {
    if (mode !== 'drain' && mode !== 'cancel') fail('ERR_ARG', `close mode must be 'drain' or 'cancel', got ${String(mode)}`);
    this.closing = true;
    if (mode === 'cancel') for (const request of [...this.requests.values()]) this.finish(request, 'abort');
    while (this.looping) await this.looping;
    if (!this.closed) {
      this.closed = true;
      this.runner.dispose();
    }
  }

  // ---------- the loop ----------

  private kick(): void {
    if (this.looping) return;
    // start on the next turn of the event loop, so that requests submitted together share the first iteration
    this.looping = new Promise<void>((resolve) => setImmediate(resolve)).then(() => this.loop()).finally(() => {
      this.looping = undefined;
      // requests that arrived while the last iteration finished
      if (this.scheduler.hasWork && !this.closed) this.kick();
    });
  }

  private async loop(): Promise<void> {
    try {
      await this.iterate();
    } catch (error) {
      // a bug in the loop itself: fail every request rather than leave them hanging
      for (const request of [...this.requests.values()]) this.fail(request, error);
    }
  }

  private async iterate(): Promise<void> {
    const bs = this.options.blockSize;
    const V = this.config.vocabSize;
    while (this.scheduler.hasWork) {
      const plan = this.scheduler.schedule();
      for (const seq of plan.unfit) {
        const r = this.requests.get(seq);
        if (r) this.finish(r, 'length');
      }
      const chunks = plan.chunks;
      if (!chunks.length) {
        if (plan.unfit.length) continue;
        break;
      }
      let N = 0;
      let width = 1;
      for (const c of chunks) {
        N += c.count;
        width = Math.max(width, c.seq.blocks.length);
      }
      const ids = new Int32Array(N);
      const positions = new Int32Array(N);
      const tables = new Int32Array(N * width);
      const sampled: ScheduledChunk[] = [];
      const rowsOfSampled: number[] = [];
      let n = 0;
      const now = performance.now();
      for (const c of chunks) {
        const r = this.requests.get(c.seq);
        if (r && r.firstScheduledAt === undefined) r.firstScheduledAt = now;
        const table = c.seq.blocks;
        for (let t = 0; t < c.count; t++, n++) {
          const pos = c.start + t;
          ids[n] = c.seq.tokens[pos];
          positions[n] = pos;
          tables.set(table, n * width);
          // padding of the row (never read: positions stay within the sequence's blocks)
          if (table.length < width) tables.fill(table[0], n * width + table.length, (n + 1) * width);
          if (Math.floor(pos / bs) >= table.length) fail('ERR_INTERNAL', `position ${pos} has no KV block`);
        }
        if (c.sample) {
          sampled.push(c);
          rowsOfSampled.push(n - 1);
        }
      }
      const started = performance.now();
      let logits: Float32Array;
      try {
        logits = await this.runner.run({ ids, positions, tables, width, sampleRows: Int32Array.from(rowsOfSampled) });
      } catch (error) {
        // a failed iteration (out of memory, a native error): fail the requests it carried
        for (const c of chunks) {
          const r = this.requests.get(c.seq);
          if (r) this.fail(r, error);
        }
        continue;
      }
      const ran = performance.now();
      this.counters.modelMs += ran - started;
      this.scheduler.commit(chunks);
      let produced = 0;
      for (let i = 0; i < sampled.length; i++) {
        const seq = sampled[i].seq;
        const request = this.requests.get(seq);
        if (!request || request.finished || seq.status !== 'running') continue;
        const row = logits.subarray(i * V, (i + 1) * V);
        try {
          this.emitToken(request, request.sampler.sample(row, this.scratch));
          produced++;
        } catch (error) {
          // a tokenizer or listener failure ends this request, not the engine
          this.fail(request, error);
        }
      }
      const end = performance.now();
      this.counters.samplingMs += end - ran;
      this.counters.sampledRows += sampled.length;
      this.counters.iterations++;
      this.recent.push([end, produced]);
      if (this.recent.length > 4096) this.recent.shift();
      // One turn of the event loop between iterations, always: the logits' promise resolves from
      // a native completion, and when the next iteration's completion is already queued (a loaded
      // machine, a small model) it resolves in the same callback, so iterations could run back to
      // back without timers, I/O or other callbacks running in between.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }

  private emitToken(request: Request, sampled: { token: number; logprob?: number; top?: { token: number; logprob: number }[] }): void {
    const seq = request.seq;
    const p = request.params;
    const token = sampled.token;
    const now = performance.now();
    if (request.firstTokenAt === undefined) request.firstTokenAt = now;
    else request.interTokenMs.push(now - request.lastTokenAt!);
    request.lastTokenAt = now;
    seq.tokens.push(token);
    request.output.push(token);
    request.sampler.observe(token);
    this.counters.generationTokens++;
    const isStopToken = p.stopTokenIds.includes(token) || (!p.ignoreEos && token === this.tokenizer.eot);
    const text = isStopToken ? '' : request.detokenizer.push(token);
    const event: TokenEvent = { text, tokenId: token, index: request.output.length - 1 };
    if (sampled.logprob !== undefined) {
      const logprob: TokenLogprob = {
        token, text: this.tokenizer.decode([token]), logprob: sampled.logprob,
        top: (sampled.top ?? []).map((t) => ({ token: t.token, text: this.tokenizer.decode([t.token]), logprob: t.logprob })),
      };
      event.logprob = logprob;
      request.logprobs.push(logprob);
    }
    request.push(event);
    if (isStopToken || request.detokenizer.stopped) this.finish(request, 'stop');
    else if (request.output.length >= p.maxTokens || seq.tokens.length >= this.contextLength) this.finish(request, 'length');
  }

  private timings(request: Request, end: number): Timings {
    const first = request.firstTokenAt ?? end;
    const n = request.output.length;
    return {
      ttftMs: first - request.arrivedAt,
      totalMs: end - request.arrivedAt,
      queueMs: (request.firstScheduledAt ?? end) - request.arrivedAt,
      tpotMs: n > 1 ? (request.lastTokenAt! - first) / (n - 1) : 0,
    };
  }

  /** Ends a request: frees its blocks at once, releases held text, emits the summary and the record. */
  private finish(request: Request, reason: FinishReason): void {
    if (request.finished) return;
    request.finished = true;
    request.detachSignal?.();
    this.scheduler.remove(request.seq);
    this.requests.delete(request.seq);
    const end = performance.now();
    const tail = reason === 'abort' ? '' : request.detokenizer.flush();
    const usage = {
      promptTokens: request.seq.promptLength,
      completionTokens: request.output.length,
      totalTokens: request.seq.promptLength + request.output.length,
      cachedTokens: request.seq.cachedTokens,
    };
    const timings = this.timings(request, end);
    this.counters.finished++;
    request.push({ done: true, finishReason: reason, usage, timings, text: tail });
    const record: RequestRecord = {
      id: request.id, promptTokens: usage.promptTokens, completionTokens: usage.completionTokens, finishReason: reason, timings,
      interTokenMs: request.interTokenMs,
    };
    for (const listener of this.listeners) {
      try {
        listener(record);
      } catch {
        // a listener's failure is its own; the engine keeps serving
      }
    }
  }

  private fail(request: Request, error: unknown): void {
    if (request.finished) return;
    request.finished = true;
    request.detachSignal?.();
    this.scheduler.remove(request.seq);
    this.requests.delete(request.seq);
    request.error = error instanceof KilnError ? error : new KilnError('ERR_INTERNAL', `serving iteration failed: ${(error as Error)?.message ?? String(error)}`, { cause: error });
    request.wake?.();
  }
}
