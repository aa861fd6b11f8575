/**
 * `kiln serve`: the OpenAI HTTP API over a ServingEngine (lib/serve/types.ts). No model code here:
 * handlers validate the body (JSON schema), turn it into a prompt and SamplingParams, and read the
 * engine's completion or token stream; the engine's one loop does all the work.
 *
 * Routes: POST /v1/completions, POST /v1/chat/completions (both streamed over SSE or not),
 * GET /v1/models, GET /v1/models/:model, GET /health, GET /metrics (Prometheus text).
 * Errors use OpenAI's shape { error: { message, type, param, code } }; toHttpError() is the one
 * place that turns KilnError codes and framework errors into statuses.
 */
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { KilnError, describe } from '../errors.js';
import { type ChatMessage, ChatTemplate } from './chat_template.js';
import { ServerMetrics } from './metrics.js';
import { describeValidation } from './openai_errors.js';
import type { Completion, SamplingParams, ServingEngine, StreamEnd, TokenEvent, TokenLogprob, Usage } from './types.js';

export interface ServerOptions {
  /** clients must send `Authorization: Bearer KEY` to /v1/* and /metrics when set */
  apiKey?: string;
  /** the model id clients name (default: engine.modelName) */
  modelName?: string;
  /** largest request body in bytes (default 1 MiB): larger ones get 413 */
  bodyLimit?: number;
  /** seconds a 429 (queue full) or 503 asks the client to wait (default 1) */
  retryAfterSeconds?: number;
  /** fastify's logger option (default off) */
  logger?: boolean;
  /** include prom-client's process metrics (RSS, CPU, event loop lag) in /metrics (default true) */
  processMetrics?: boolean;
}

export type ServerState = 'loading' | 'ready' | 'draining' | 'closed' | 'failed';

/** What a server adds to its fastify instance, as `server.kiln`. */
export interface ServerControl {
  readonly state: ServerState;
  /** requests being served now (streams included) */
  readonly inFlight: number;
  readonly metrics: ServerMetrics;
  /** the engine once loaded */
  readonly engine: ServingEngine | undefined;
  /**
   * Stops accepting (new requests get 503, /health turns 503, the listener closes), lets
   * in-flight requests finish for up to deadlineMs, cancels what is left, and resolves when every
   * connection is closed. Does not close the engine (the caller owns it).
   */
  shutdown(options?: { deadlineMs?: number }): Promise<{ finished: number; cancelled: number }>;
}

declare module 'fastify' {
  interface FastifyInstance {
    kiln: ServerControl;
  }
}

/** An error with an HTTP status, in OpenAI's shape. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string,
    readonly code: string | null = null,
    readonly param: string | null = null,
    readonly headers: Record<string, string> = {},
  ) {
    if (typeof status !== 'number' || !Number.isInteger(status) || status < 400 || status > 599) throw new KilnError('ERR_ARG', `an HTTP error status must be an integer 400..599, got ${describe(status)}`);
    if (typeof message !== 'string' || typeof type !== 'string') throw new KilnError('ERR_ARG', 'an HTTP error needs a string message and type');
    if ((code !== null && typeof code !== 'string') || (param !== null && typeof param !== 'string')) throw new KilnError('ERR_ARG', 'an HTTP error code and param are strings or null');
    if (!headers || typeof headers !== 'object' || Object.values(headers).some((v) => typeof v !== 'string')) throw new KilnError('ERR_ARG', 'HTTP error headers must be an object of strings');
    super(message);
  }
  body() {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** The one mapping from errors to HTTP statuses. */
export function toHttpError(error: unknown, retryAfterSeconds = 1): HttpError {
  if (error instanceof HttpError) return error;
  if (error instanceof KilnError) {
    switch (error.code) {
      case 'ERR_ARG':
      case 'ERR_SHAPE':
        return new HttpError(400, error.message, 'invalid_request_error', error.code);
      case 'ERR_BUSY':
        return new HttpError(429, error.message, 'rate_limit_error', 'rate_limit_exceeded', null, { 'retry-after': String(retryAfterSeconds) });
      case 'ERR_OOM':
      case 'ERR_DISPOSED': // the engine is closed (shutting down)
        return new HttpError(503, error.message, 'server_error', error.code, null, { 'retry-after': String(retryAfterSeconds) });
      default:
        return new HttpError(500, `${error.code}: ${error.message}`, 'server_error', error.code);
    }
  }
  const e = error as { statusCode?: number; code?: string; message?: string; validation?: { instancePath?: string; params?: Record<string, unknown> }[] };
  if (e && Array.isArray(e.validation)) {
    // one OpenAI-style error naming the field and what it accepts (lib/serve/openai_errors.ts)
    const d = describeValidation(e.validation);
    return new HttpError(400, d.message, 'invalid_request_error', d.code, d.param);
  }
  if (e && typeof e.statusCode === 'number' && Number.isInteger(e.statusCode) && e.statusCode >= 400 && e.statusCode < 500) {
    const messages: Record<string, string> = {
      FST_ERR_CTP_BODY_TOO_LARGE: 'the request body is larger than the server accepts',
      FST_ERR_CTP_INVALID_MEDIA_TYPE: 'send the body as application/json',
      FST_ERR_CTP_EMPTY_JSON_BODY: 'the request body is empty: send a JSON object',
    };
    const code = typeof e.code === 'string' ? e.code : null;
    return new HttpError(e.statusCode, (code && messages[code]) ?? (typeof e.message === 'string' ? e.message : 'bad request'), 'invalid_request_error', code);
  }
  let text: string;
  try {
    text = String(e?.message ?? error);
  } catch {
    text = typeof error; // a value that cannot be printed (a detached typed array, a null-prototype object)
  }
  return new HttpError(500, `internal error: ${text}`, 'server_error', 'ERR_INTERNAL');
}

// ---------------------------------------------------------------------------------------------
// Request bodies (JSON schema; ajv without type coercion: a string where a number belongs is a 400)

const nullable = (schema: Record<string, unknown>) => ({ anyOf: [schema, { type: 'null' }] });
const SAMPLING_PROPERTIES = {
  model: { type: 'string', maxLength: 512 },
  max_tokens: nullable({ type: 'integer', minimum: 1, maximum: 1_000_000 }),
  temperature: nullable({ type: 'number', minimum: 0, maximum: 2 }),
  top_p: nullable({ type: 'number', exclusiveMinimum: 0, maximum: 1 }),
  top_k: nullable({ type: 'integer', minimum: -1, maximum: 1_000_000 }),
  min_p: nullable({ type: 'number', minimum: 0, maximum: 1 }),
  presence_penalty: nullable({ type: 'number', minimum: -2, maximum: 2 }),
  frequency_penalty: nullable({ type: 'number', minimum: -2, maximum: 2 }),
  repetition_penalty: nullable({ type: 'number', exclusiveMinimum: 0, maximum: 10 }),
  seed: nullable({ type: 'integer', minimum: -9007199254740991, maximum: 9007199254740991 }),
  stop: nullable({
    anyOf: [{ type: 'string', minLength: 1, maxLength: 1024 }, { type: 'array', maxItems: 16, items: { type: 'string', minLength: 1, maxLength: 1024 } }],
  }),
  stop_token_ids: nullable({ type: 'array', maxItems: 64, items: { type: 'integer', minimum: 0 } }),
  ignore_eos: nullable({ type: 'boolean' }),
  n: nullable({ type: 'integer', minimum: 1, maximum: 1 }),
  stream: nullable({ type: 'boolean' }),
  stream_options: nullable({ type: 'object', properties: { include_usage: nullable({ type: 'boolean' }) } }),
  user: nullable({ type: 'string', maxLength: 512 }),
} as const;

const COMPLETION_BODY = {
  type: 'object',
  required: ['prompt'],
  properties: {
    ...SAMPLING_PROPERTIES,
    prompt: {
      anyOf: [
        { type: 'string' },
        { type: 'array', minItems: 1, items: { type: 'integer', minimum: 0 } },
        { type: 'array', minItems: 1, maxItems: 1, items: { anyOf: [{ type: 'string' }, { type: 'array', minItems: 1, items: { type: 'integer', minimum: 0 } }] } },
      ],
    },
    logprobs: nullable({ type: 'integer', minimum: 0, maximum: 20 }),
    echo: nullable({ type: 'boolean', const: false }),
    best_of: nullable({ type: 'integer', minimum: 1, maximum: 1 }),
    suffix: { type: 'null' },
  },
} as const;

const TEXT_PART = { type: 'object', required: ['type', 'text'], properties: { type: { const: 'text' }, text: { type: 'string' } } };
const CHAT_BODY = {
  type: 'object',
  required: ['messages'],
  properties: {
    ...SAMPLING_PROPERTIES,
    max_completion_tokens: nullable({ type: 'integer', minimum: 1, maximum: 1_000_000 }),
    messages: {
      type: 'array',
      minItems: 1,
      maxItems: 4096,
      items: {
        type: 'object',
        required: ['role'],
        properties: {
          role: { enum: ['system', 'developer', 'user', 'assistant', 'tool'] },
          content: { anyOf: [{ type: 'string' }, { type: 'null' }, { type: 'array', maxItems: 1024, items: TEXT_PART }] },
          name: { type: 'string', maxLength: 256 },
        },
      },
    },
    logprobs: nullable({ type: 'boolean' }),
    top_logprobs: nullable({ type: 'integer', minimum: 0, maximum: 20 }),
    tools: nullable({ type: 'array', maxItems: 0 }),
    response_format: nullable({ type: 'object', required: ['type'], properties: { type: { const: 'text' } } }),
  },
} as const;

type Nullable<T> = T | null | undefined;
interface SamplingBody {
  model?: string;
  max_tokens?: Nullable<number>;
  temperature?: Nullable<number>;
  top_p?: Nullable<number>;
  top_k?: Nullable<number>;
  min_p?: Nullable<number>;
  presence_penalty?: Nullable<number>;
  frequency_penalty?: Nullable<number>;
  repetition_penalty?: Nullable<number>;
  seed?: Nullable<number>;
  stop?: Nullable<string | string[]>;
  stop_token_ids?: Nullable<number[]>;
  ignore_eos?: Nullable<boolean>;
  stream?: Nullable<boolean>;
  stream_options?: Nullable<{ include_usage?: Nullable<boolean> }>;
}
interface CompletionBody extends SamplingBody {
  prompt: string | number[] | (string | number[])[];
  logprobs?: Nullable<number>;
}
interface ChatBody extends SamplingBody {
  max_completion_tokens?: Nullable<number>;
  messages: { role: string; content?: string | null | { type: 'text'; text: string }[]; name?: string }[];
  logprobs?: Nullable<boolean>;
  top_logprobs?: Nullable<number>;
}

// ---------------------------------------------------------------------------------------------

const SSE_HEADERS = { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' };
const utf8 = new TextDecoder('utf-8', { fatal: true });
const digest = (text: string) => createHash('sha256').update(text, 'utf8').digest();

/** Writes one chunk, waiting for the socket to drain when the client reads slowly. */
async function writeChunk(res: ServerResponse, data: string): Promise<boolean> {
  if (res.destroyed || res.writableEnded) return false;
  if (res.write(data)) return true;
  await new Promise<void>((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
  return !res.destroyed;
}

const sse = (payload: unknown) => `data: ${JSON.stringify(payload)}\n\n`;

interface Prepared {
  input: number[];
  params: SamplingParams;
  stream: boolean;
  includeUsage: boolean;
}

/**
 * Builds the server. It answers at once; /health and the API routes give 503 until `engine` (or
 * the promise of it) is ready. Call `listen({ host, port })` on the result.
 */
/** Refuses what is not a ServingEngine (before it could fail later, in a callback, as a TypeError). */
function checkEngine(e: unknown): ServingEngine {
  const engine = e as Partial<ServingEngine> | null;
  if (!engine || typeof engine !== 'object' || typeof engine.stream !== 'function' || typeof engine.generate !== 'function' || !engine.tokenizer || typeof engine.tokenizer !== 'object') {
    throw new KilnError('ERR_ARG', 'createServer needs a serving engine (an Engine, or a promise of one)');
  }
  return engine as ServingEngine;
}

function checkOptions(options: unknown): ServerOptions {
  if (options === undefined) return {};
  if (!options || typeof options !== 'object' || Array.isArray(options)) throw new KilnError('ERR_ARG', 'server options must be an object');
  const o = options as Record<string, unknown>;
  const optional = (name: string, ok: (v: unknown) => boolean, what: string) => {
    const v = o[name];
    if (v !== undefined && !ok(v)) throw new KilnError('ERR_ARG', `${name} must be ${what}`);
  };
  optional('apiKey', (v) => typeof v === 'string', 'a string');
  optional('modelName', (v) => typeof v === 'string' && v.length > 0, 'a non-empty string');
  optional('bodyLimit', (v) => typeof v === 'number' && Number.isSafeInteger(v) && v > 0, 'a positive integer');
  optional('retryAfterSeconds', (v) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0, 'a non-negative integer');
  optional('logger', (v) => typeof v === 'boolean', 'a boolean');
  optional('processMetrics', (v) => typeof v === 'boolean', 'a boolean');
  return o as ServerOptions;
}

export function createServer(engine: ServingEngine | Promise<ServingEngine>, serverOptions: ServerOptions = {}): FastifyInstance {
  const options = checkOptions(serverOptions);
  const isPromise = !!engine && typeof (engine as { then?: unknown }).then === 'function';
  if (!isPromise) checkEngine(engine);
  const bodyLimit = options.bodyLimit ?? 1 << 20;
  const retryAfter = options.retryAfterSeconds ?? 1;
  const app = Fastify({
    logger: options.logger ?? false,
    bodyLimit,
    return503OnClosing: false, // the onRequest hook answers in OpenAI's shape instead
    forceCloseConnections: 'idle',
    // a client must send its whole request within this (slow-loris); streamed responses are not limited
    requestTimeout: 30_000,
    // verbose: each error carries the value and the schema it failed, which the 400 describes
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: false, allErrors: false, verbose: true } },
  });
  const metrics = new ServerMetrics(options.modelName ?? 'kiln', { processMetrics: options.processMetrics });
  const expectedKey = options.apiKey !== undefined ? digest(options.apiKey) : undefined;
  if (options.apiKey !== undefined && options.apiKey.length === 0) throw new KilnError('ERR_ARG', 'apiKey must not be empty');

  let state: ServerState = 'loading';
  let loadError: unknown;
  let ready: ServingEngine | undefined;
  let modelName = options.modelName ?? 'kiln';
  let template: ChatTemplate | undefined;
  const created = Math.floor(Date.now() / 1000);
  const inFlight = new Set<AbortController>();

  Promise.resolve(engine).then(
    (e) => {
      if (state !== 'loading') return;
      try {
        checkEngine(e);
        modelName = options.modelName ?? e.modelName;
        const eos = safeDecode(e, [e.tokenizer.eot]);
        template = new ChatTemplate(e.chatTemplate, { bos: '', eos });
        metrics.attach(e, modelName);
      } catch (error) {
        // a promise of something that is not an engine: the server reports it as a failed load
        loadError = error;
        state = 'failed';
        return;
      }
      ready = e;
      state = 'ready';
    },
    (error) => {
      loadError = error;
      if (state === 'loading') state = 'failed';
    },
  );

  app.decorate('kiln', {
    get state() {
      return state;
    },
    get inFlight() {
      return inFlight.size;
    },
    get engine() {
      return ready;
    },
    metrics,
    shutdown,
  } satisfies ServerControl);

  // invalid UTF-8 is a 400, not a body quietly full of U+FFFD
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser(['application/json', 'text/plain']);
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, body, done) => {
    let text: string;
    try {
      text = utf8.decode(body as Buffer);
    } catch {
      done(new HttpError(400, 'the request body is not valid UTF-8', 'invalid_request_error', 'invalid_utf8'), undefined);
      return;
    }
    if (text.trim() === '') {
      done(new HttpError(400, 'the request body is empty: send a JSON object', 'invalid_request_error', 'invalid_json'), undefined);
      return;
    }
    parseJson(request, text, (error, value) => {
      if (error) done(new HttpError(400, `the request body is not valid JSON: ${error.message}`, 'invalid_request_error', 'invalid_json'), undefined);
      else done(null, value);
    });
  });

  app.addHook('onRequest', async (request, reply) => {
    const path = request.url.split('?')[0];
    if (path === '/health') return;
    if (expectedKey) {
      const header = request.headers.authorization ?? '';
      const given = header.startsWith('Bearer ') ? header.slice(7).trim() : '';
      // hashes are equal length whatever the key's, so timingSafeEqual leaks neither length nor prefix
      if (!timingSafeEqual(digest(given), expectedKey)) {
        throw new HttpError(401, given ? 'incorrect API key' : 'missing API key: send Authorization: Bearer <key>', 'invalid_request_error', 'invalid_api_key');
      }
    }
    if (path === '/metrics') return;
    if (state === 'draining' || state === 'closed') {
      reply.header('connection', 'close');
      throw new HttpError(503, 'the server is shutting down', 'server_error', 'service_unavailable', null, { 'retry-after': String(retryAfter) });
    }
    if (state !== 'ready') {
      throw new HttpError(503, state === 'failed' ? `the model failed to load: ${(loadError as Error)?.message ?? loadError}` : 'the model is still loading', 'server_error', 'service_unavailable', null, { 'retry-after': String(retryAfter) });
    }
  });

  app.addHook('onResponse', async (request, reply) => {
    metrics.httpResponses.inc({ route: request.routeOptions.url ?? 'unmatched', code: String(reply.statusCode) });
  });

  app.setErrorHandler((error, _request, reply) => {
    const http = toHttpError(error, retryAfter);
    if (http.status >= 500 && options.logger) app.log.error(error);
    reply.status(http.status).headers(http.headers).send(http.body());
  });
  app.setNotFoundHandler((request, reply) => {
    reply.status(404).send(new HttpError(404, `no route ${request.method} ${request.url.split('?')[0]}`, 'invalid_request_error', 'not_found').body());
  });

  app.get('/health', async (_request, reply) => {
    if (state === 'ready') return { status: 'ok' };
    reply.status(503).header('retry-after', String(retryAfter));
    return { status: state, ...(state === 'failed' ? { error: String((loadError as Error)?.message ?? loadError) } : {}) };
  });

  app.get('/metrics', async (_request, reply) => {
    reply.header('content-type', metrics.registry.contentType);
    return metrics.text();
  });

  const modelCard = () => ({ id: modelName, object: 'model', created, owned_by: 'kiln', max_model_len: ready!.contextLength });
  app.get('/v1/models', async () => ({ object: 'list', data: [modelCard()] }));
  app.get<{ Params: { model: string } }>('/v1/models/:model', async (request) => {
    checkModel(request.params.model);
    return modelCard();
  });

  app.post<{ Body: CompletionBody }>('/v1/completions', { schema: { body: COMPLETION_BODY } }, async (request, reply) => {
    const body = request.body;
    checkModel(body.model);
    const prompt = Array.isArray(body.prompt) && body.prompt.length === 1 && typeof body.prompt[0] !== 'number' ? body.prompt[0] : body.prompt;
    const ids = typeof prompt === 'string' ? ready!.tokenizer.encode(prompt) : (prompt as number[]);
    const prepared = prepare(body, ids, body.max_tokens ?? 16, body.logprobs ?? undefined);
    return serve(request, reply, 'text_completion', prepared);
  });

  app.post<{ Body: ChatBody }>('/v1/chat/completions', { schema: { body: CHAT_BODY } }, async (request, reply) => {
    const body = request.body;
    checkModel(body.model);
    if (body.top_logprobs != null && !body.logprobs) throw new HttpError(400, 'top_logprobs needs logprobs: true', 'invalid_request_error', 'invalid_value', 'top_logprobs');
    const messages: ChatMessage[] = body.messages.map((m) => ({
      role: m.role,
      content: typeof m.content === 'string' ? m.content : Array.isArray(m.content) ? m.content.map((p) => p.text).join('') : '',
      ...(m.name !== undefined ? { name: m.name } : {}),
    }));
    const ids = ready!.tokenizer.encode(template!.render(messages));
    const maxTokens = body.max_completion_tokens ?? body.max_tokens ?? Math.max(1, ready!.contextLength - ids.length);
    const prepared = prepare(body, ids, maxTokens, body.logprobs ? body.top_logprobs ?? 0 : undefined);
    return serve(request, reply, 'chat.completion', prepared);
  });

  app.addHook('onClose', async () => {
    metrics.detach();
    if (state !== 'failed') state = 'closed';
  });

  function checkModel(model: string | undefined): void {
    if (model !== undefined && model !== modelName) {
      throw new HttpError(404, `the model '${model}' does not exist: this server serves '${modelName}'`, 'invalid_request_error', 'model_not_found', 'model');
    }
  }

  function prepare(body: SamplingBody, ids: number[], maxTokens: number, logprobs: number | undefined): Prepared {
    const e = ready!;
    if (ids.length === 0) throw new HttpError(400, 'the prompt is empty', 'invalid_request_error', 'invalid_value', 'prompt');
    const vocab = e.tokenizer.vocabSize;
    for (const id of ids) {
      if (id >= vocab) throw new HttpError(400, `prompt token id ${id} is outside the vocabulary (0..${vocab - 1})`, 'invalid_request_error', 'invalid_value', 'prompt');
    }
    for (const id of body.stop_token_ids ?? []) {
      if (id >= vocab) throw new HttpError(400, `stop token id ${id} is outside the vocabulary (0..${vocab - 1})`, 'invalid_request_error', 'invalid_value', 'stop_token_ids');
    }
    if (ids.length + maxTokens > e.contextLength) {
      throw new HttpError(400,
        `this model's maximum context length is ${e.contextLength} tokens, but ${ids.length + maxTokens} were requested ` +
        `(${ids.length} in the prompt, ${maxTokens} to generate): shorten the prompt or lower max_tokens`,
        'invalid_request_error', 'context_length_exceeded', ids.length >= e.contextLength ? 'prompt' : 'max_tokens');
    }
    const stop = body.stop == null ? undefined : typeof body.stop === 'string' ? [body.stop] : body.stop;
    const params: SamplingParams = {
      maxTokens,
      temperature: body.temperature ?? 1,
      topP: body.top_p ?? 1,
      topK: body.top_k == null || body.top_k < 0 ? 0 : body.top_k,
      minP: body.min_p ?? 0,
      presencePenalty: body.presence_penalty ?? 0,
      frequencyPenalty: body.frequency_penalty ?? 0,
      repetitionPenalty: body.repetition_penalty ?? 1,
      ...(body.seed != null ? { seed: body.seed } : {}),
      ...(stop && stop.length ? { stopStrings: stop } : {}),
      ...(body.stop_token_ids?.length ? { stopTokenIds: body.stop_token_ids } : {}),
      ...(body.ignore_eos ? { ignoreEos: true } : {}),
      ...(logprobs !== undefined ? { logprobs } : {}),
    };
    return { input: ids, params, stream: body.stream === true, includeUsage: body.stream_options?.include_usage === true };
  }

  /** Runs one request: its abort follows the client's connection and the server's shutdown. */
  async function serve(request: FastifyRequest, reply: FastifyReply, kind: 'text_completion' | 'chat.completion', prepared: Prepared) {
    const e = ready!;
    const controller = new AbortController();
    inFlight.add(controller);
    const res = reply.raw;
    // 'close' also follows a normal finish; aborting a finished request is a no-op
    const onClose = () => {
      if (!res.writableFinished) controller.abort();
    };
    res.on('close', onClose);
    const id = `${kind === 'chat.completion' ? 'chatcmpl' : 'cmpl'}-${randomUUID().replaceAll('-', '')}`;
    const createdAt = Math.floor(Date.now() / 1000);
    try {
      if (!prepared.stream) {
        const completion = await e.generate(prepared.input, prepared.params, { signal: controller.signal });
        if (completion.finishReason === 'abort') {
          if (res.destroyed) {
            // the client left: nobody to answer
            reply.hijack();
            metrics.httpResponses.inc({ route: request.routeOptions.url ?? 'unmatched', code: '499' });
            return reply;
          }
          throw new HttpError(503, 'the request was cancelled: the server is shutting down', 'server_error', 'service_unavailable');
        }
        return kind === 'chat.completion' ? chatResponse(id, createdAt, completion) : completionResponse(id, createdAt, completion);
      }
      await streamResponse(request, reply, kind, id, createdAt, prepared, controller);
      return reply;
    } finally {
      res.off('close', onClose);
      inFlight.delete(controller);
      drained();
    }
  }

  async function streamResponse(request: FastifyRequest, reply: FastifyReply, kind: 'text_completion' | 'chat.completion', id: string, createdAt: number, prepared: Prepared, controller: AbortController) {
    const e = ready!;
    const res = reply.raw;
    const chat = kind === 'chat.completion';
    const object = chat ? 'chat.completion.chunk' : 'text_completion';
    const iterator = e.stream(prepared.input, prepared.params, { signal: controller.signal })[Symbol.asyncIterator]();
    // the first event (or the engine's refusal: queue full, bad parameters) decides the status
    let next = await iterator.next();
    reply.hijack();
    let code = 200;
    try {
      if (res.destroyed) return;
      res.writeHead(200, SSE_HEADERS);
      const usageField = prepared.includeUsage ? { usage: null } : {};
      const chunk = (choice: Record<string, unknown>) => sse({ id, object, created: createdAt, model: modelName, choices: [{ index: 0, ...choice }], ...usageField });
      // the per-token chunk without logprobs, built once around the text (the hot path: one per token per stream)
      const template = chunk(chat ? { delta: { content: '\u0000' }, logprobs: null, finish_reason: null } : { text: '\u0000', logprobs: null, finish_reason: null });
      const hole = template.indexOf('"\\u0000"');
      const textChunkHead = template.slice(0, hole);
      const textChunkTail = template.slice(hole + '"\\u0000"'.length);
      if (chat) await writeChunk(res, chunk({ delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }));
      let offset = 0;
      let end: StreamEnd | undefined;
      while (!next.done) {
        const event = next.value;
        if ('done' in event) {
          end = event;
          break;
        }
        if (event.text !== '' || event.logprob) {
          const logprobs = event.logprob ? (chat ? chatLogprobs([event.logprob]) : completionLogprobs([event.logprob], offset)) : null;
          offset += event.text.length;
          const data = logprobs
            ? (chat ? chunk({ delta: { content: event.text }, logprobs, finish_reason: null }) : chunk({ text: event.text, logprobs, finish_reason: null }))
            : textChunkHead + JSON.stringify(event.text) + textChunkTail;
          const ok = await writeChunk(res, data);
          if (!ok) controller.abort();
        }
        next = await iterator.next();
      }
      if (!end) throw new KilnError('ERR_INTERNAL', 'the engine ended a stream without its summary');
      if (res.destroyed) return;
      if (end.text !== '') await writeChunk(res, chat ? chunk({ delta: { content: end.text }, logprobs: null, finish_reason: null }) : chunk({ text: end.text, logprobs: null, finish_reason: null }));
      await writeChunk(res, chat ? chunk({ delta: {}, logprobs: null, finish_reason: end.finishReason }) : chunk({ text: '', logprobs: null, finish_reason: end.finishReason }));
      if (prepared.includeUsage) await writeChunk(res, sse({ id, object, created: createdAt, model: modelName, choices: [], usage: usage(end.usage) }));
      await writeChunk(res, 'data: [DONE]\n\n');
    } catch (error) {
      // headers are out: the error travels as an event, as OpenAI's servers do
      const http = toHttpError(error, retryAfter);
      code = http.status;
      if (!res.destroyed) {
        await writeChunk(res, sse(http.body()));
        await writeChunk(res, 'data: [DONE]\n\n');
      }
    } finally {
      if (!next.done) await iterator.return?.();
      if (!res.writableEnded) res.end();
      metrics.httpResponses.inc({ route: request.routeOptions.url ?? 'unmatched', code: String(res.destroyed && !res.writableFinished ? 499 : code) });
    }
  }

  function usage(u: Usage) {
    return { prompt_tokens: u.promptTokens, completion_tokens: u.completionTokens, total_tokens: u.totalTokens, prompt_tokens_details: { cached_tokens: u.cachedTokens } };
  }

  function completionResponse(id: string, createdAt: number, c: Completion) {
    return {
      id, object: 'text_completion', created: createdAt, model: modelName,
      choices: [{ index: 0, text: c.text, finish_reason: c.finishReason, logprobs: c.logprobs ? completionLogprobs(c.logprobs, 0) : null }],
      usage: usage(c.usage),
    };
  }

  function chatResponse(id: string, createdAt: number, c: Completion) {
    return {
      id, object: 'chat.completion', created: createdAt, model: modelName,
      choices: [{ index: 0, message: { role: 'assistant', content: c.text }, finish_reason: c.finishReason, logprobs: c.logprobs ? chatLogprobs(c.logprobs) : null }],
      usage: usage(c.usage),
    };
  }

  // shutdown: waiters resolve when the last in-flight request ends
  let drainWaiters: (() => void)[] = [];
  function drained() {
    if (inFlight.size > 0) return;
    const waiters = drainWaiters;
    drainWaiters = [];
    for (const w of waiters) w();
  }

  async function shutdown({ deadlineMs = 30_000 } = {}): Promise<{ finished: number; cancelled: number }> {
    if (state === 'closed') return { finished: 0, cancelled: 0 };
    state = 'draining';
    const before = inFlight.size;
    const closing = app.close(); // stops listening at once; resolves when every connection is gone
    let timer: NodeJS.Timeout | undefined;
    const allDone = new Promise<boolean>((resolve) => {
      if (inFlight.size === 0) resolve(true);
      else drainWaiters.push(() => resolve(true));
    });
    const inTime = await Promise.race([allDone, new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), deadlineMs)))]);
    clearTimeout(timer);
    const cancelled = inTime ? 0 : inFlight.size;
    if (!inTime) for (const c of inFlight) c.abort();
    // cancelled streams end within an engine iteration; a connection still open after a grace period is cut
    const grace = setTimeout(() => app.server.closeAllConnections(), 2_000);
    await closing;
    clearTimeout(grace);
    state = 'closed';
    return { finished: before - cancelled, cancelled };
  }

  return app;
}

function safeDecode(engine: ServingEngine, ids: number[]): string {
  try {
    return engine.tokenizer.decode(ids);
  } catch {
    return '';
  }
}

function completionLogprobs(items: TokenLogprob[], start: number) {
  const textOffset: number[] = [];
  let offset = start;
  for (const t of items) {
    textOffset.push(offset);
    offset += t.text.length;
  }
  return {
    tokens: items.map((t) => t.text),
    token_logprobs: items.map((t) => t.logprob),
    top_logprobs: items.map((t) => Object.fromEntries(t.top.map((c) => [c.text, c.logprob]))),
    text_offset: textOffset,
  };
}

function chatLogprobs(items: TokenLogprob[]) {
  const bytes = (text: string) => Array.from(Buffer.from(text, 'utf8'));
  return {
    content: items.map((t) => ({
      token: t.text,
      logprob: t.logprob,
      bytes: bytes(t.text),
      top_logprobs: t.top.map((c) => ({ token: c.text, logprob: c.logprob, bytes: bytes(c.text) })),
    })),
  };
}

export type { TokenEvent };
