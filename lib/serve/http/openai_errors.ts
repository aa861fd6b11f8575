/**
 * A request body that fails the JSON schema (lib/serve/http.ts) becomes one OpenAI-style error:
 * the field (`param`, as OpenAI writes it: `response_format`, `messages[0].role`), what was sent
 * and what is accepted, in one sentence, instead of ajv's text for every branch it tried
 * ("body/response_format/type must be equal to constant, body/response_format must be null, ...").
 * The accepted values are read from the schema itself (ajv's `verbose` errors carry it); fields
 * kiln knows but does not implement say so.
 */

/** What an ajv error (with `verbose: true`) carries; anything else is tolerated. */
interface SchemaError {
  instancePath?: unknown;
  keyword?: unknown;
  params?: unknown;
  data?: unknown;
  parentSchema?: unknown;
}

export interface RequestErrorFields {
  message: string;
  /** the field, as OpenAI names it (null: the body as a whole) */
  param: string | null;
  /** OpenAI's codes: 'unsupported_value', 'missing_required_parameter', 'invalid_type', 'invalid_value' */
  code: string;
}

type Schema = Record<string, unknown>;

/**
 * Request fields that kiln recognizes but only accepts in one form today, and why. (A later
 * issue will accept structured output; until then, and for what it does not cover, this says so.)
 */
const UNSUPPORTED: Record<string, string> = {
  response_format: 'kiln returns plain text: only {"type": "text"} is accepted (structured output is not implemented yet); leave response_format out or send {"type": "text"}',
  tools: 'kiln does not call tools: leave tools out (or send an empty list)',
  n: 'kiln returns one choice per request: n must be 1 (send several requests for more)',
  best_of: 'kiln returns one choice per request: best_of must be 1',
  echo: 'kiln does not echo the prompt: echo must be false',
  suffix: 'kiln does not complete around a suffix: suffix must be null or left out',
};

/** '/messages/0/role' -> 'messages[0].role' */
export function paramName(instancePath: string, extra?: string): string | null {
  const parts = instancePath.split('/').slice(1).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
  if (extra !== undefined) parts.push(extra);
  let out = '';
  for (const p of parts) out += /^\d+$/.test(p) ? `[${p}]` : `${out ? '.' : ''}${p}`;
  return out || null;
}

/** A short, JSON-like rendering of a value that was sent. */
function shown(value: unknown): string {
  if (value === undefined) return 'nothing';
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = typeof value;
  }
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

const plural = (n: number, one: string) => `${n} ${one}${n === 1 ? '' : 's'}`;

/** Words for what a JSON schema accepts: 'a number from 0 to 2, or null'. */
export function describeSchema(schema: unknown, depth = 0): string {
  if (!schema || typeof schema !== 'object' || depth > 4) return 'a valid value';
  const s = schema as Schema;
  if (Array.isArray(s.anyOf)) {
    const options = (s.anyOf as unknown[]).map((o) => describeSchema(o, depth + 1));
    const nonNull = options.filter((o) => o !== 'null');
    const list = nonNull.length > 1 ? `${nonNull.slice(0, -1).join(', ')} or ${nonNull[nonNull.length - 1]}` : nonNull[0] ?? 'null';
    return nonNull.length < options.length ? `${list}, or null` : list;
  }
  if ('const' in s) return JSON.stringify(s.const);
  if (Array.isArray(s.enum)) return `one of ${(s.enum as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
  const range = (noun: string) => {
    const min = typeof s.minimum === 'number' ? s.minimum : undefined;
    const max = typeof s.maximum === 'number' ? s.maximum : undefined;
    const above = typeof s.exclusiveMinimum === 'number' ? s.exclusiveMinimum : undefined;
    if (min !== undefined && max !== undefined) return min === max ? `${noun} equal to ${min}` : `${noun} from ${min} to ${max}`;
    if (above !== undefined && max !== undefined) return `${noun} above ${above} and at most ${max}`;
    if (min !== undefined) return `${noun} of at least ${min}`;
    if (max !== undefined) return `${noun} of at most ${max}`;
    return noun;
  };
  switch (s.type) {
    case 'null':
      return 'null';
    case 'boolean':
      return 'true or false';
    case 'integer':
      if (s.minimum === 0 && s.maximum === undefined) return 'a non-negative integer';
      if (s.minimum === 1 && s.maximum === undefined) return 'a positive integer';
      return range('an integer');
    case 'number':
      return range('a number');
    case 'string': {
      const limits = [typeof s.minLength === 'number' && s.minLength > 0 ? 'non-empty' : '', typeof s.maxLength === 'number' ? `at most ${plural(s.maxLength, 'character')}` : ''];
      return `a ${limits[0] ? 'non-empty ' : ''}string${limits[1] ? ` of ${limits[1]}` : ''}`;
    }
    case 'array': {
      const max = typeof s.maxItems === 'number' ? s.maxItems : undefined;
      if (max === 0) return 'an empty list';
      const min = typeof s.minItems === 'number' && s.minItems > 0 ? s.minItems : undefined;
      const size = min !== undefined && max !== undefined ? (min === max ? `exactly ${min}` : `${min} to ${max}`) : min !== undefined ? `at least ${min}` : max !== undefined ? `at most ${max}` : '';
      return `a list${size ? ` (${size})` : ''}${s.items ? ` of ${describeSchema(s.items, depth + 1)}` : ''}`;
    }
    case 'object': {
      const properties = s.properties && typeof s.properties === 'object' ? (s.properties as Record<string, unknown>) : {};
      const required = Array.isArray(s.required) ? (s.required as string[]) : [];
      const fields = required.map((k) => `"${k}": ${describeSchema(properties[k], depth + 1)}`);
      return fields.length ? `an object {${fields.join(', ')}}` : 'an object';
    }
    default:
      return 'a valid value';
  }
}

const asString = (v: unknown) => (typeof v === 'string' ? v : '');

/**
 * One OpenAI-style error for a body that failed the schema: the errors ajv reported for one
 * request (fastify's `error.validation`, compiled with `verbose: true`).
 */
export function describeValidation(validation: readonly unknown[]): RequestErrorFields {
  try {
    const errors = validation.filter((e): e is SchemaError => !!e && typeof e === 'object');
    if (!errors.length) return { message: 'invalid request', param: null, code: 'invalid_value' };
    const first = errors[0];
    const firstPath = asString(first.instancePath);
    const top = firstPath.split('/')[1];

    // a missing field
    const missing = errors.find((e) => e.keyword === 'required');
    if (missing && errors.every((e) => e.keyword === 'required' || asString(e.instancePath) === asString(missing.instancePath))) {
      const property = asString((missing.params as { missingProperty?: unknown } | undefined)?.missingProperty);
      const param = paramName(asString(missing.instancePath), property);
      return { message: `${param ?? 'a field'} is required`, param, code: 'missing_required_parameter' };
    }
    // the body is not an object at all
    if (firstPath === '' && first.keyword === 'type') {
      return { message: `the request body must be a JSON object, got ${shown(first.data)}`, param: null, code: 'invalid_type' };
    }
    // the outermost alternative that failed as a whole (nullable fields are an anyOf with null), where it
    // names every accepted form; else the deepest error ajv reported
    const depthOf = (e: SchemaError) => asString(e.instancePath).split('/').length;
    const alternatives = errors.filter((e) => e.keyword === 'anyOf');
    const chosen = alternatives.length
      ? alternatives.reduce((a, b) => (depthOf(b) < depthOf(a) ? b : a))
      : errors.reduce((a, b) => (depthOf(b) > depthOf(a) ? b : a));
    const path = asString(chosen.instancePath);
    const param = paramName(path);
    const name = param ?? 'the request';
    if (top !== undefined && Object.hasOwn(UNSUPPORTED, top)) {
      return { message: `${name}: ${shown(chosen.data)} is not supported: ${UNSUPPORTED[top]}`, param: top, code: 'unsupported_value' };
    }
    const accepted = describeSchema(chosen.parentSchema);
    return { message: `${name}: ${shown(chosen.data)} is not accepted: it takes ${accepted}`, param, code: 'invalid_value' };
  } catch {
    // entries that cannot be read (a hostile object passed to toHttpError): a plain message
    return { message: 'invalid request', param: null, code: 'invalid_value' };
  }
}
