/**
 * Streamed responses over Server-Sent Events, framed as OpenAI's servers frame them: one
 * `data: {chunk}\n\n` event per piece of text, the finish reason in a last chunk, usage in one
 * more when asked for, then `data: [DONE]`. Writes wait for the socket to drain when the client
 * reads slowly.
 */
import type { ServerResponse } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { KilnError } from '../../errors.js';
import type { ServerMetrics } from '../metrics.js';
import type { ServingEngine, StreamEnd } from '../types.js';
import { toHttpError } from './errors.js';
import { type CompletionKind, chatLogprobs, completionLogprobs, usage } from './responses.js';
import type { Prepared } from './schemas.js';

const SSE_HEADERS = { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' };

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

export interface StreamedRequest {
  engine: ServingEngine;
  request: FastifyRequest;
  reply: FastifyReply;
  kind: CompletionKind;
  id: string;
  createdAt: number;
  /** the model id the chunks name */
  model: string;
  prepared: Prepared;
  /** aborted when the client goes away (or stops reading) and on shutdown */
  controller: AbortController;
  retryAfterSeconds: number;
  /** counts the response (the reply is hijacked, so the server's onResponse hook does not see it) */
  metrics: ServerMetrics;
}

/** Streams the engine's tokens for one request; the engine's first event (or its refusal) decides the status. */
export async function streamResponse({ engine, request, reply, kind, id, createdAt, model, prepared, controller, retryAfterSeconds, metrics }: StreamedRequest): Promise<void> {
  const res = reply.raw;
  const chat = kind === 'chat.completion';
  const object = chat ? 'chat.completion.chunk' : 'text_completion';
  const iterator = engine.stream(prepared.input, prepared.params, { signal: controller.signal })[Symbol.asyncIterator]();
  // the first event (or the engine's refusal: queue full, bad parameters) decides the status
  let next = await iterator.next();
  reply.hijack();
  let code = 200;
  try {
    if (res.destroyed) return;
    res.writeHead(200, SSE_HEADERS);
    const usageField = prepared.includeUsage ? { usage: null } : {};
    const chunk = (choice: Record<string, unknown>) => sse({ id, object, created: createdAt, model, choices: [{ index: 0, ...choice }], ...usageField });
    // the per-token chunk without logprobs, built once around the text (the hot path: one per token per stream)
    const textChunk = chunk(chat ? { delta: { content: '\u0000' }, logprobs: null, finish_reason: null } : { text: '\u0000', logprobs: null, finish_reason: null });
    const hole = textChunk.indexOf('"\\u0000"');
    const textChunkHead = textChunk.slice(0, hole);
    const textChunkTail = textChunk.slice(hole + '"\\u0000"'.length);
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
    if (prepared.includeUsage) await writeChunk(res, sse({ id, object, created: createdAt, model, choices: [], usage: usage(end.usage) }));
    await writeChunk(res, 'data: [DONE]\n\n');
  } catch (error) {
    // headers are out: the error travels as an event, as OpenAI's servers do
    const http = toHttpError(error, retryAfterSeconds);
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
