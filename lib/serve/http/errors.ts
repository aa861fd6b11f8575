/**
 * Errors in OpenAI's shape { error: { message, type, param, code } }. toHttpError() is the one
 * place that turns KilnError codes and framework errors into statuses.
 */
import { KilnError, describe } from '../../errors.js';
import { describeValidation } from './openai_errors.js';

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
    // one OpenAI-style error naming the field and what it accepts (openai_errors.ts)
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
