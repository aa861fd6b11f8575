/**
 * The server's lifecycle and routes: it answers at once and gives 503 until the engine has
 * loaded ('loading' → 'ready', or 'failed'), checks the API key, parses JSON strictly, routes
 * each request to the engine, and drains on shutdown ('draining' → 'closed').
 */
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { KilnError } from '../../errors.js';
import { type ChatMessage, ChatTemplate } from '../chat_template.js';
import { ServerMetrics } from '../metrics.js';
import type { ServingEngine } from '../types.js';
import { HttpError, toHttpError } from './errors.js';
import { type CompletionKind, chatResponse, completionResponse } from './responses.js';
import { CHAT_BODY, COMPLETION_BODY, type ChatBody, type CompletionBody, type Prepared, prepare } from './schemas.js';
import { streamResponse } from './sse.js';

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

const utf8 = new TextDecoder('utf-8', { fatal: true });
const digest = (text: string) => createHash('sha256').update(text, 'utf8').digest();

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

/** The tokenizer's text of ids, or '' where it has none (the chat template's end-of-sequence text). */
function safeDecode(engine: ServingEngine, ids: number[]): string {
  try {
    return engine.tokenizer.decode(ids);
  } catch {
    return '';
  }
}

/**
 * Builds the server. It answers at once; /health and the API routes give 503 until `engine` (or
 * the promise of it) is ready. Call `listen({ host, port })` on the result.
 */
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
    const prepared = prepare(ready!, body, ids, body.max_tokens ?? 16, body.logprobs ?? undefined);
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
    const prepared = prepare(ready!, body, ids, maxTokens, body.logprobs ? body.top_logprobs ?? 0 : undefined);
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

  /** Runs one request: its abort follows the client's connection and the server's shutdown. */
  async function serve(request: FastifyRequest, reply: FastifyReply, kind: CompletionKind, prepared: Prepared) {
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
        return kind === 'chat.completion' ? chatResponse(id, createdAt, modelName, completion) : completionResponse(id, createdAt, modelName, completion);
      }
      await streamResponse({ engine: e, request, reply, kind, id, createdAt, model: modelName, prepared, controller, retryAfterSeconds: retryAfter, metrics });
      return reply;
    } finally {
      res.off('close', onClose);
      inFlight.delete(controller);
      drained();
    }
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
