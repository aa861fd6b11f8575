/**
 * The serving engine's public contract, fixed first so that the engine (lib/serve/engine.ts),
 * the HTTP server (lib/serve/http/), the dashboard (lib/monitor/) and the serving benchmark
 * (bench/serve.ts) can be written against it at the same time. The engine implements
 * `ServingEngine`; everything else only uses this interface.
 */
import type { Device } from '../device.js';

export interface EngineOptions {
  /** 'cpu' (default) or 'cuda:N' (gated until verified on a GPU: KILN_CUDA_SERVING=1) */
  device?: Device;
  /** activations and weights: f32 (CPU default) or bf16 */
  computeDType?: 'f32' | 'bf16';
  /** KV cache budget: bytes (default 256 MiB) or an explicit block count (wins when given) */
  kvCacheBytes?: number;
  kvCacheBlocks?: number;
  /** tokens per KV block (default 16) */
  blockSize?: number;
  /** tokens one iteration may process: decodes + prefill chunks (default 512) */
  maxBatchTokens?: number;
  /** sequences decoding at once (default 64) */
  maxRunningSequences?: number;
  /** requests waiting beyond this are refused with ERR_BUSY (default 1024) */
  maxQueuedRequests?: number;
  /** share full KV blocks between requests with the same prefix (default true) */
  prefixCaching?: boolean;
  /** name reported by the OpenAI server's /v1/models (default: the checkpoint directory's name) */
  modelName?: string;
}

export interface SamplingParams {
  /** tokens to generate at most (default 16) */
  maxTokens?: number;
  /** 0 = greedy (default 1) */
  temperature?: number;
  /** 0 = off */
  topK?: number;
  /** 1 = off */
  topP?: number;
  /** 0 = off */
  minP?: number;
  presencePenalty?: number;
  frequencyPenalty?: number;
  /** 1 = off; > 1 discourages tokens already in prompt or output */
  repetitionPenalty?: number;
  /** per-request seed: the same tokens whatever else shares the batch */
  seed?: number;
  stopTokenIds?: number[];
  stopStrings?: string[];
  /** do not stop at the tokenizer's end-of-text token */
  ignoreEos?: boolean;
  /** return the top-N log-probabilities of each generated token (0..20; undefined = none) */
  logprobs?: number;
}

export type GenerateInput = string | number[];

export interface RequestOptions {
  signal?: AbortSignal;
}

export type FinishReason = 'stop' | 'length' | 'abort';

export interface TokenLogprob {
  token: number;
  text: string;
  logprob: number;
  top: { token: number; text: string; logprob: number }[];
}

export interface TokenEvent {
  /** the text this token adds (UTF-8 safe; held back while it may start a stop string) */
  text: string;
  tokenId: number;
  index: number;
  logprob?: TokenLogprob;
}

export interface Usage {
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
  /** prompt tokens served from the prefix cache */
  cachedTokens: number;
}

export interface Timings {
  /** request arrival to its first output token, ms */
  ttftMs: number;
  /** arrival to finish, ms */
  totalMs: number;
  /** time in the queue before the first prefill, ms */
  queueMs: number;
  /** mean time per output token after the first, ms */
  tpotMs: number;
}

export interface Completion {
  text: string;
  tokenIds: number[];
  finishReason: FinishReason;
  usage: Usage;
  timings: Timings;
  logprobs?: TokenLogprob[];
}

/** The last event of a stream carries the whole completion's summary. */
export interface StreamEnd {
  done: true;
  finishReason: FinishReason;
  usage: Usage;
  timings: Timings;
  /** text withheld while it could have begun a stop string and then released (may be '') */
  text: string;
}

export interface EngineStats {
  running: number;
  waiting: number;
  kvBlocksTotal: number;
  kvBlocksUsed: number;
  kvBlocksFree: number;
  /** fraction 0..1 of KV blocks in use */
  kvUsage: number;
  prefixCacheQueries: number;
  prefixCacheHits: number;
  /** hits / queries in tokens (0 when none) */
  prefixCacheHitRate: number;
  promptTokensTotal: number;
  generationTokensTotal: number;
  requestsFinished: number;
  requestsPreempted: number;
  /** output tokens per second over the last few seconds */
  tokensPerSecond: number;
  iterations: number;
}

/** Emitted for each finished request (the server's histograms and the dashboard feed on it). */
export interface RequestRecord {
  id: string;
  promptTokens: number;
  completionTokens: number;
  finishReason: FinishReason;
  timings: Timings;
  /** gaps between consecutive output tokens, ms */
  interTokenMs: number[];
}

export interface ServingEngine {
  readonly modelName: string;
  /** model context length (prompt + output) */
  readonly contextLength: number;
  readonly tokenizer: { encode(text: string): number[]; decode(ids: number[]): string; readonly eot: number; readonly vocabSize: number };
  /** the tokenizer config's chat_template when the checkpoint has one */
  readonly chatTemplate?: string;
  generate(input: GenerateInput, params?: SamplingParams, options?: RequestOptions): Promise<Completion>;
  /** token events, then one StreamEnd; aborting the signal ends it with finishReason 'abort' */
  stream(input: GenerateInput, params?: SamplingParams, options?: RequestOptions): AsyncIterable<TokenEvent | StreamEnd>;
  stats(): EngineStats;
  /** subscribe to finished requests; returns the unsubscribe function */
  onRequestFinished(listener: (record: RequestRecord) => void): () => void;
  /** 'drain' (default) lets running and queued requests finish; 'cancel' aborts them */
  close(mode?: 'drain' | 'cancel'): Promise<void>;
}
