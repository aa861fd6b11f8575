/** The OpenAI HTTP API through the official `openai` client, against the real engine on 127.0.0.1. */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import OpenAI, { APIError } from 'openai';
import { ChatTemplate, DEFAULT_CHAT_TEMPLATE } from '../../lib/serve/chat_template.js';
import type { ServingEngine } from '../../lib/serve/types.js';
import { type Running, loadEngine, metric, raw, slowEngine, startServer, trainedCheckpoint } from './http_fixture.js';

const test = suite('serve: OpenAI API over HTTP');
let engine: ServingEngine;
let s: Running;

test.before(async () => {
  await trainedCheckpoint();
  engine = await loadEngine();
  s = await startServer(engine);
});

test.after(async () => {
  await s?.close();
  await engine?.close('cancel');
});

const PROMPT = 'The history of the ';

test('completions: text, usage that matches the tokenizer, finish reason', async () => {
  const r = await s.client.completions.create({ model: engine.modelName, prompt: PROMPT, max_tokens: 12, temperature: 0, ignore_eos: true } as OpenAI.CompletionCreateParamsNonStreaming);
  assert.is(r.object, 'text_completion');
  assert.is(r.model, engine.modelName);
  assert.is(r.choices.length, 1);
  assert.is(r.choices[0].finish_reason, 'length');
  assert.is(r.usage!.prompt_tokens, engine.tokenizer.encode(PROMPT).length);
  assert.is(r.usage!.completion_tokens, 12);
  assert.is(r.usage!.total_tokens, r.usage!.prompt_tokens + 12);
  // in-process, the engine gives the same greedy text
  const direct = await engine.generate(PROMPT, { maxTokens: 12, temperature: 0, ignoreEos: true });
  assert.is(r.choices[0].text, direct.text);
  assert.is(engine.tokenizer.encode(r.choices[0].text).length, 12, 'usage counts the tokens of the text');
});

test('completions streamed: chunks concatenate to the non-streamed text; include_usage; [DONE]', async () => {
  const body = { model: engine.modelName, prompt: PROMPT, max_tokens: 10, temperature: 0, ignore_eos: true };
  const whole = await s.client.completions.create(body as OpenAI.CompletionCreateParamsNonStreaming);
  const stream = await s.client.completions.create({ ...body, stream: true, stream_options: { include_usage: true } } as OpenAI.CompletionCreateParamsStreaming);
  let text = '';
  let finish: string | null = null;
  let usage: OpenAI.CompletionUsage | undefined | null;
  for await (const chunk of stream) {
    if (chunk.choices.length) {
      text += chunk.choices[0].text;
      finish = chunk.choices[0].finish_reason ?? finish;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  assert.is(text, whole.choices[0].text);
  assert.is(finish, 'length');
  assert.equal(usage, whole.usage);
  // on the wire: SSE events, the last one [DONE]
  const r = await raw(s.port, 'POST', '/v1/completions', JSON.stringify({ ...body, stream: true }));
  assert.is(r.status, 200);
  assert.match(String(r.headers['content-type']), /^text\/event-stream/);
  const events = r.body.split('\n\n').filter(Boolean);
  assert.is(events[events.length - 1], 'data: [DONE]');
  assert.ok(events.slice(0, -1).every((e) => e.startsWith('data: {')));
});

test('chat: rendered with the default template, streamed and not', async () => {
  assert.is(engine.chatTemplate, undefined, 'the trained checkpoint has no chat_template');
  const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Name a color.' }];
  const r = await s.client.chat.completions.create({ model: engine.modelName, messages, max_completion_tokens: 8, temperature: 0 });
  assert.is(r.object, 'chat.completion');
  assert.is(r.choices[0].message.role, 'assistant');
  const rendered = 'system: Be brief.\nuser: Name a color.\nassistant:';
  assert.is(r.usage!.prompt_tokens, engine.tokenizer.encode(rendered).length, `the default template is ${DEFAULT_CHAT_TEMPLATE}`);
  const direct = await engine.generate(rendered, { maxTokens: 8, temperature: 0 });
  assert.is(r.choices[0].message.content, direct.text);
  const stream = await s.client.chat.completions.create({ model: engine.modelName, messages, max_completion_tokens: 8, temperature: 0, stream: true });
  let text = '';
  let role: string | undefined;
  let finish: string | null = null;
  for await (const chunk of stream) {
    role ??= chunk.choices[0]?.delta.role;
    text += chunk.choices[0]?.delta.content ?? '';
    finish = chunk.choices[0]?.finish_reason ?? finish;
  }
  assert.is(role, 'assistant');
  assert.is(text, direct.text);
  assert.is(finish, r.choices[0].finish_reason);
});

test('chat: a checkpoint\'s chat_template (Jinja) renders the prompt', async () => {
  const chatml = "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
  // the real engine, seen through an object whose checkpoint carries a template
  const templated = Object.create(engine, { chatTemplate: { value: chatml } }) as ServingEngine;
  const t = await startServer(templated);
  try {
    const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: [{ type: 'text', text: 'Name ' }, { type: 'text', text: 'a color.' }] }];
    const r = await t.client.chat.completions.create({ model: engine.modelName, messages, max_completion_tokens: 5, temperature: 0 });
    const rendered = '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nName a color.<|im_end|>\n<|im_start|>assistant\n';
    assert.is(new ChatTemplate(chatml).render([{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Name a color.' }]), rendered);
    assert.is(r.usage!.prompt_tokens, engine.tokenizer.encode(rendered).length);
    assert.is(r.choices[0].message.content, (await engine.generate(rendered, { maxTokens: 5, temperature: 0 })).text);
    // a template that raises on the conversation is the client's error
    const strict = Object.create(engine, { chatTemplate: { value: "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first message must be from the user') }}{% endif %}{{ messages[0]['content'] }}" } }) as ServingEngine;
    const u = await startServer(strict);
    try {
      const e = await u.client.chat.completions.create({ model: engine.modelName, messages, max_completion_tokens: 2 }).catch((x: unknown) => x);
      assert.instance(e, OpenAI.BadRequestError);
    } finally {
      await u.close();
    }
  } finally {
    await t.close();
  }
});

test('stop strings end the text before the stop string, streamed or not', async () => {
  const plain = await s.client.completions.create({ model: engine.modelName, prompt: PROMPT, max_tokens: 24, temperature: 0, ignore_eos: true } as OpenAI.CompletionCreateParamsNonStreaming);
  const text = plain.choices[0].text;
  const stop = text.slice(6, 8); // two characters from the middle of the greedy continuation
  const first = text.indexOf(stop);
  const r = await s.client.completions.create({ model: engine.modelName, prompt: PROMPT, max_tokens: 24, temperature: 0, stop: [stop] });
  assert.is(r.choices[0].text, text.slice(0, first));
  assert.is(r.choices[0].finish_reason, 'stop');
  const stream = await s.client.completions.create({ model: engine.modelName, prompt: PROMPT, max_tokens: 24, temperature: 0, stop, stream: true });
  let streamed = '';
  for await (const chunk of stream) streamed += chunk.choices[0]?.text ?? '';
  assert.is(streamed, text.slice(0, first), 'the stop string never leaks into the stream');
});

test('a seed reproduces sampled text; another seed differs', async () => {
  const body = { model: engine.modelName, prompt: PROMPT, max_tokens: 24, temperature: 1, top_p: 0.95, ignore_eos: true };
  const a = await s.client.completions.create({ ...body, seed: 11 } as OpenAI.CompletionCreateParamsNonStreaming);
  const b = await s.client.completions.create({ ...body, seed: 11 } as OpenAI.CompletionCreateParamsNonStreaming);
  const c = await s.client.completions.create({ ...body, seed: 12 } as OpenAI.CompletionCreateParamsNonStreaming);
  assert.is(a.choices[0].text, b.choices[0].text);
  assert.is.not(a.choices[0].text, c.choices[0].text);
});

test('logprobs: completions (top-N dict per token) and chat (content list)', async () => {
  const r = await s.client.completions.create({ model: engine.modelName, prompt: PROMPT, max_tokens: 4, temperature: 0, logprobs: 3, ignore_eos: true } as OpenAI.CompletionCreateParamsNonStreaming);
  const lp = r.choices[0].logprobs!;
  assert.is(lp.tokens!.length, 4);
  assert.is(lp.token_logprobs!.length, 4);
  for (let i = 0; i < 4; i++) {
    const top = lp.top_logprobs![i];
    assert.ok(Object.keys(top).length >= 1 && Object.keys(top).length <= 3);
    assert.ok(lp.token_logprobs![i] <= 0);
    // greedy: the chosen token is the most likely one
    assert.ok(Math.abs(Math.max(...Object.values(top)) - lp.token_logprobs![i]) < 1e-5);
  }
  const c = await s.client.chat.completions.create({ model: engine.modelName, messages: [{ role: 'user', content: 'Hi' }], max_completion_tokens: 3, temperature: 0, logprobs: true, top_logprobs: 2 });
  const content = c.choices[0].logprobs!.content!;
  assert.is(content.length, c.usage!.completion_tokens);
  for (const t of content) assert.is(t.top_logprobs.length, 2);
});

test('models, health, metrics', async () => {
  const models = await s.client.models.list();
  assert.equal(models.data.map((m) => m.id), [engine.modelName]);
  assert.is((await s.client.models.retrieve(engine.modelName)).id, engine.modelName);
  const health = await raw(s.port, 'GET', '/health');
  assert.is(health.status, 200);
  const m = await raw(s.port, 'GET', '/metrics');
  assert.is(m.status, 200);
  for (const name of ['vllm:num_requests_running', 'vllm:num_requests_waiting', 'vllm:kv_cache_usage_perc', 'vllm:gpu_cache_usage_perc',
    'vllm:prompt_tokens_total', 'vllm:generation_tokens_total', 'vllm:prefix_cache_queries_total', 'vllm:prefix_cache_hits_total',
    'vllm:time_to_first_token_seconds_count', 'vllm:time_per_output_token_seconds_count', 'vllm:e2e_request_latency_seconds_count']) {
    assert.ok(Number.isFinite(metric(m.body, name)), name);
  }
  assert.ok(metric(m.body, 'vllm:generation_tokens_total') > 0);
  assert.ok(metric(m.body, 'vllm:e2e_request_latency_seconds_count') >= 8, 'every finished request is observed');
  assert.is(metric(m.body, 'vllm:num_requests_running'), 0);
});

test('errors arrive as the client\'s typed errors, in OpenAI\'s shape', async () => {
  const e1 = await s.client.completions.create({ model: engine.modelName, prompt: PROMPT, temperature: 7 }).catch((e: unknown) => e);
  assert.instance(e1, OpenAI.BadRequestError);
  assert.match((e1 as APIError).message, /temperature/);
  const e2 = await s.client.completions.create({ model: 'gpt-5', prompt: PROMPT }).catch((e: unknown) => e);
  assert.instance(e2, OpenAI.NotFoundError);
  assert.is((e2 as APIError).code, 'model_not_found');
  const long = 'x'.repeat(engine.contextLength + 5);
  const e3 = await s.client.completions.create({ model: engine.modelName, prompt: long, max_tokens: 4 }).catch((e: unknown) => e);
  assert.instance(e3, OpenAI.BadRequestError);
  assert.match((e3 as APIError).message, /context length/);
  const e4 = await s.client.completions.create({ model: engine.modelName, prompt: long, max_tokens: 4, stream: true }).catch((e: unknown) => e);
  assert.instance(e4, OpenAI.BadRequestError, 'a streamed request refused before its first token gets a status, not an event');
  const r = await raw(s.port, 'POST', '/v1/completions', JSON.stringify({ prompt: PROMPT, max_tokens: 'ten' }));
  assert.is(r.status, 400);
  const body = JSON.parse(r.body);
  assert.equal(Object.keys(body.error).sort(), ['code', 'message', 'param', 'type']);
  assert.is(body.error.param, 'max_tokens');
});

test('with an API key: 401 without it or with a wrong one, served with it; /health stays open', async () => {
  const keyed = await startServer(engine, { apiKey: 'sekrit-key' });
  try {
    const ok = await keyed.client.completions.create({ model: engine.modelName, prompt: PROMPT, max_tokens: 2 });
    assert.is(ok.choices.length, 1);
    const wrong = new OpenAI({ baseURL: `${keyed.url}/v1`, apiKey: 'sekrit-kez', maxRetries: 0 });
    const e = await wrong.completions.create({ model: engine.modelName, prompt: PROMPT, max_tokens: 2 }).catch((x: unknown) => x);
    assert.instance(e, OpenAI.AuthenticationError);
    assert.is((await raw(keyed.port, 'GET', '/v1/models')).status, 401);
    assert.is((await raw(keyed.port, 'GET', '/metrics')).status, 401);
    assert.is((await raw(keyed.port, 'GET', '/health')).status, 200);
  } finally {
    await keyed.close();
  }
});

test('a full queue is 429 with Retry-After (RateLimitError), and only that', async () => {
  const busyEngine = await loadEngine({ maxRunningSequences: 1, maxQueuedRequests: 1 });
  const busy = await startServer(busyEngine);
  try {
    const results = await Promise.allSettled(Array.from({ length: 6 }, () => busy.client.completions.create({ model: busyEngine.modelName, prompt: PROMPT, max_tokens: 24, ignore_eos: true } as OpenAI.CompletionCreateParamsNonStreaming)));
    const refused = results.filter((x) => x.status === 'rejected');
    assert.ok(refused.length >= 1, 'some requests are refused');
    assert.ok(results.some((x) => x.status === 'fulfilled'), 'some are served');
    for (const x of refused) {
      const error = (x as PromiseRejectedResult).reason;
      assert.instance(error, OpenAI.RateLimitError);
      assert.ok(Number((error as APIError).headers?.get('retry-after')) >= 1);
    }
  } finally {
    await busy.close();
    await busyEngine.close('cancel');
  }
});

test('/health is 503 while the model loads, then 200', async () => {
  let resolve!: (e: ServingEngine) => void;
  const pending = new Promise<ServingEngine>((r) => (resolve = r));
  const { createServer } = await import('../../lib/serve/http/index.js');
  const server = createServer(pending);
  await server.listen({ host: '127.0.0.1', port: 0 });
  const port = (server.server.address() as { port: number }).port;
  try {
    assert.is((await raw(port, 'GET', '/health')).status, 503);
    const early = await raw(port, 'POST', '/v1/completions', JSON.stringify({ prompt: 'a' }));
    assert.is(early.status, 503);
    assert.match(JSON.parse(early.body).error.message, /loading/);
    resolve(engine);
    await new Promise((r) => setTimeout(r, 20));
    assert.is((await raw(port, 'GET', '/health')).status, 200);
  } finally {
    await server.close();
  }
});

test('shutdown: stops accepting, lets in-flight finish, then closes', async () => {
  const x = await startServer(engine);
  const slow = slowEngine(); // the request must still be in flight when shutdown starts
  const stream = await x.client.completions.create({ model: engine.modelName, prompt: PROMPT, max_tokens: 40, temperature: 0, ignore_eos: true, stream: true } as OpenAI.CompletionCreateParamsStreaming);
  const iterator = stream[Symbol.asyncIterator]();
  const first = await iterator.next();
  assert.ok(!first.done);
  const closing = x.server.kiln.shutdown({ deadlineMs: 20_000 });
  assert.is(x.server.kiln.state, 'draining');
  await slow.stop();
  let rest = 0;
  for (let n = await iterator.next(); !n.done; n = await iterator.next()) rest += n.value.choices.length;
  assert.ok(rest > 0, 'the in-flight stream ran to its end');
  const outcome = await closing;
  assert.equal(outcome, { finished: 1, cancelled: 0 });
  assert.is(x.server.kiln.state, 'closed');
  const refused = await raw(x.port, 'GET', '/health').catch((e: Error) => e);
  assert.instance(refused, Error, 'the listener is closed');
});

test.run();
