/**
 * Issue 28, item 10: a request the schema refuses gets one OpenAI-style error naming the field
 * and what it accepts (lib/serve/http/openai_errors.ts), not ajv's text for every branch it tried
 * ("body/response_format/type must be equal to constant, body/response_format must be null, ...").
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import OpenAI, { APIError } from 'openai';
import { describeSchema, describeValidation, paramName } from '../../lib/serve/http/openai_errors.js';
import { type Running, loadEngine, raw, startServer } from './http_fixture.js';

const test = suite('serve: OpenAI-style errors for refused request fields');
let s: Running;

test.before(async () => {
  s = await startServer(await loadEngine());
});
test.after(async () => {
  await s.close();
  await s.engine.close();
});

const user = [{ role: 'user', content: 'Hello' }];

async function refused(path: '/v1/chat/completions' | '/v1/completions', body: unknown) {
  const r = await raw(s.port, 'POST', path, JSON.stringify(body));
  assert.is(r.status, 400, r.body);
  const { error } = JSON.parse(r.body) as { error: { message: string; type: string; param: string | null; code: string } };
  assert.equal(Object.keys(error).sort(), ['code', 'message', 'param', 'type']);
  assert.is(error.type, 'invalid_request_error');
  assert.not.match(error.message, /must be equal to constant|must match a schema in anyOf|body\//, `ajv's own text: ${error.message}`);
  return error;
}

test('response_format other than text: one error naming the field and the only form accepted', async () => {
  for (const format of [{ type: 'json_object' }, { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object' } } }]) {
    const e = await refused('/v1/chat/completions', { messages: user, response_format: format });
    assert.is(e.param, 'response_format');
    assert.is(e.code, 'unsupported_value');
    assert.ok(e.message.startsWith(`response_format: ${JSON.stringify(format).slice(0, 40)}`), e.message);
    assert.match(e.message, /is not supported: kiln returns plain text: only \{"type": "text"\} is accepted/);
  }
  // what is accepted still is
  const ok = await raw(s.port, 'POST', '/v1/chat/completions', JSON.stringify({ messages: user, response_format: { type: 'text' }, max_completion_tokens: 1 }));
  assert.is(ok.status, 200, ok.body);
});

test('the other fields kiln knows but does not implement say what it accepts', async () => {
  const cases: [string, '/v1/chat/completions' | '/v1/completions', Record<string, unknown>, RegExp][] = [
    ['tools', '/v1/chat/completions', { messages: user, tools: [{ type: 'function', function: { name: 'f' } }] }, /kiln does not call tools/],
    ['n', '/v1/chat/completions', { messages: user, n: 3 }, /n must be 1/],
    ['best_of', '/v1/completions', { prompt: 'a', best_of: 2 }, /best_of must be 1/],
    ['echo', '/v1/completions', { prompt: 'a', echo: true }, /echo must be false/],
    ['suffix', '/v1/completions', { prompt: 'a', suffix: 'the end' }, /suffix must be null or left out/],
  ];
  for (const [param, path, body, why] of cases) {
    const e = await refused(path, body);
    assert.is(e.param, param, e.message);
    assert.is(e.code, 'unsupported_value');
    assert.match(e.message, new RegExp(`^${param}: .* is not supported: `));
    assert.match(e.message, why);
  }
});

test('invalid values name the field, the value and the accepted range, read from the schema', async () => {
  const t = await refused('/v1/completions', { prompt: 'a', temperature: 'hot' });
  assert.equal([t.param, t.code, t.message], ['temperature', 'invalid_value', 'temperature: "hot" is not accepted: it takes a number from 0 to 2, or null']);
  const role = await refused('/v1/chat/completions', { messages: [{ role: 'robot', content: 'hi' }] });
  assert.is(role.param, 'messages[0].role');
  assert.is(role.message, 'messages[0].role: "robot" is not accepted: it takes one of "system", "developer", "user", "assistant", "tool"');
  const content = await refused('/v1/chat/completions', { messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }] });
  assert.is(content.param, 'messages[0].content');
  assert.match(content.message, /it takes a string or a list \(at most 1024\) of an object \{"type": "text", "text": a string\}, or null$/);
  const prompt = await refused('/v1/completions', { prompt: 5 });
  assert.match(prompt.message, /^prompt: 5 is not accepted: it takes a string, a list \(at least 1\) of a non-negative integer or a list \(exactly 1\) of /);
  const missing = await refused('/v1/chat/completions', { model: 'x' });
  assert.equal([missing.param, missing.code, missing.message], ['messages', 'missing_required_parameter', 'messages is required']);
  const notObject = await refused('/v1/completions', [1, 2]);
  assert.equal([notObject.param, notObject.code], [null, 'invalid_type']);
  assert.match(notObject.message, /the request body must be a JSON object, got \[1,2\]/);
});

test('the openai client sees a BadRequestError carrying the param', async () => {
  const e = await s.client.chat.completions.create({ model: s.engine.modelName, messages: [{ role: 'user', content: 'Hi' }], response_format: { type: 'json_object' } }).catch((x: unknown) => x);
  assert.instance(e, OpenAI.BadRequestError);
  assert.is((e as APIError).param, 'response_format');
});

test('the description helpers: OpenAI param names, schemas in words, junk tolerated', () => {
  assert.is(paramName('/messages/3/content/0/text'), 'messages[3].content[0].text');
  assert.is(paramName('', 'prompt'), 'prompt');
  assert.is(describeSchema({ anyOf: [{ type: 'integer', minimum: 1, maximum: 1 }, { type: 'null' }] }), 'an integer equal to 1, or null');
  assert.is(describeSchema({ type: 'number', exclusiveMinimum: 0, maximum: 1 }), 'a number above 0 and at most 1');
  assert.is(describeSchema({ type: 'array', maxItems: 0 }), 'an empty list');
  const hostile = { get instancePath(): string { throw new Error('boom'); } };
  assert.equal(describeValidation([hostile]), { message: 'invalid request', param: null, code: 'invalid_value' });
  assert.equal(describeValidation([]), { message: 'invalid request', param: null, code: 'invalid_value' });
});

test.run();
