/**
 * Request bodies: one JSON schema per route (fastify validates with ajv, without type coercion:
 * a string where a number belongs is a 400), the body type the handlers read beside it, and
 * prepare(), the checks a schema cannot express (the vocabulary, the context length) and the
 * translation into the engine's SamplingParams.
 */
import type { SamplingParams, ServingEngine } from '../types.js';
import { HttpError } from './errors.js';

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

/** POST /v1/completions */
export const COMPLETION_BODY = {
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

/** POST /v1/chat/completions */
export const CHAT_BODY = {
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

// The bodies as the handlers read them, once the schema has passed them. Fields the schema
// accepts but the server ignores (n, user, echo, best_of, suffix, tools, response_format: each
// allowed only at its one supported value) are left out.
type Nullable<T> = T | null | undefined;
export interface SamplingBody {
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
export interface CompletionBody extends SamplingBody {
  prompt: string | number[] | (string | number[])[];
  logprobs?: Nullable<number>;
}
export interface ChatBody extends SamplingBody {
  max_completion_tokens?: Nullable<number>;
  messages: { role: string; content?: string | null | { type: 'text'; text: string }[]; name?: string }[];
  logprobs?: Nullable<boolean>;
  top_logprobs?: Nullable<number>;
}

// every field a body type names is one its schema validates: a field missing from the schema is a compile error here
type NotInSchema<Body, Schema extends { properties: object }> = Exclude<keyof Body, keyof Schema['properties']>;
type NoneOf<Fields extends never> = Fields;
export type CompletionBodyInSchema = NoneOf<NotInSchema<CompletionBody, typeof COMPLETION_BODY>>;
export type ChatBodyInSchema = NoneOf<NotInSchema<ChatBody, typeof CHAT_BODY>>;

/** A validated request, ready for the engine. */
export interface Prepared {
  input: number[];
  params: SamplingParams;
  stream: boolean;
  includeUsage: boolean;
}

/** Checks the prompt's ids against the engine's vocabulary and context, and builds its SamplingParams. */
export function prepare(engine: ServingEngine, body: SamplingBody, ids: number[], maxTokens: number, logprobs: number | undefined): Prepared {
  if (ids.length === 0) throw new HttpError(400, 'the prompt is empty', 'invalid_request_error', 'invalid_value', 'prompt');
  const vocab = engine.tokenizer.vocabSize;
  for (const id of ids) {
    if (id >= vocab) throw new HttpError(400, `prompt token id ${id} is outside the vocabulary (0..${vocab - 1})`, 'invalid_request_error', 'invalid_value', 'prompt');
  }
  for (const id of body.stop_token_ids ?? []) {
    if (id >= vocab) throw new HttpError(400, `stop token id ${id} is outside the vocabulary (0..${vocab - 1})`, 'invalid_request_error', 'invalid_value', 'stop_token_ids');
  }
  if (ids.length + maxTokens > engine.contextLength) {
    throw new HttpError(400,
      `this model's maximum context length is ${engine.contextLength} tokens, but ${ids.length + maxTokens} were requested ` +
      `(${ids.length} in the prompt, ${maxTokens} to generate): shorten the prompt or lower max_tokens`,
      'invalid_request_error', 'context_length_exceeded', ids.length >= engine.contextLength ? 'prompt' : 'max_tokens');
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
