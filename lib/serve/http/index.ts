/**
 * `kiln serve`: the OpenAI HTTP API over a ServingEngine (lib/serve/types.ts). No model code here:
 * handlers validate the body (JSON schema), turn it into a prompt and SamplingParams, and read the
 * engine's completion or token stream; the engine's one loop does all the work.
 *
 * Routes: POST /v1/completions, POST /v1/chat/completions (both streamed over SSE or not),
 * GET /v1/models, GET /v1/models/:model, GET /health, GET /metrics (Prometheus text).
 * Errors use OpenAI's shape { error: { message, type, param, code } }.
 *
 *   server.ts     lifecycle (loading, ready, draining, closed), API key, JSON parsing, routes
 *   schemas.ts    the request bodies' JSON schemas and types; their translation to SamplingParams
 *   responses.ts  OpenAI's response bodies, usage and logprobs
 *   sse.ts        streamed responses (Server-Sent Events)
 *   errors.ts     HttpError and the one mapping from errors to statuses
 */
export { createServer, type ServerControl, type ServerOptions, type ServerState } from './server.js';
export { HttpError, toHttpError } from './errors.js';
export type { TokenEvent } from '../types.js';
