/** The HTTP server under load and abuse: concurrency, disconnects, hostile bodies, a bounded soak. */
import { Agent, request as httpRequest } from 'node:http';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import OpenAI from 'openai';
import type { ServingEngine } from '../../lib/serve/types.js';
import { type Running, loadEngine, metric, raw, slowEngine, startServer, trainedCheckpoint, waitFor } from './http_fixture.js';

const test = suite('serve: HTTP under load');
let engine: ServingEngine;
let s: Running;

test.before(async () => {
  await trainedCheckpoint();
  engine = await loadEngine({ kvCacheBlocks: 512, maxRunningSequences: 64 });
  s = await startServer(engine);
});

test.after(async () => {
  await s?.close();
  await engine?.close('cancel');
});

const TEXT = 'It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light';
const promptOf = (i: number) => TEXT.slice(i % 37, (i % 37) + 5 + ((i * 7) % 60));

async function streamText(client: OpenAI, prompt: string, maxTokens: number): Promise<string> {
  const stream = await client.completions.create({ model: engine.modelName, prompt, max_tokens: maxTokens, temperature: 0, ignore_eos: true, stream: true } as OpenAI.CompletionCreateParamsStreaming);
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0]?.text ?? '';
  return text;
}

test('64 concurrent streaming clients each get exactly the text they get alone (greedy)', async () => {
  const prompts = Array.from({ length: 64 }, (_, i) => promptOf(i));
  const lengths = prompts.map((_, i) => 8 + (i % 9));
  const alone: string[] = [];
  for (let i = 0; i < 64; i++) alone.push(await streamText(s.client, prompts[i], lengths[i]));
  // separate clients, as 64 processes would be
  const together = await Promise.all(prompts.map((p, i) => streamText(new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'none', maxRetries: 0 }), p, lengths[i])));
  for (let i = 0; i < 64; i++) assert.is(together[i], alone[i], `client ${i}`);
  assert.ok(alone.every((t, i) => engine.tokenizer.encode(t).length === lengths[i]));
});

test('a client that disconnects mid-stream is cancelled: running and KV usage return to idle', async () => {
  await waitFor(() => engine.stats().running === 0, 5000, 'idle');
  const idle = engine.stats();
  const metricsIdle = (await raw(s.port, 'GET', '/metrics')).body;
  for (const streamed of [true, false]) {
    const slow = slowEngine();
    const generatedBefore = engine.stats().generationTokensTotal;
    const controller = new AbortController();
    const request = s.client.completions.create({ model: engine.modelName, prompt: TEXT.slice(0, 60), max_tokens: 180, ignore_eos: true, temperature: 0, stream: streamed } as OpenAI.CompletionCreateParamsStreaming, { signal: controller.signal });
    if (streamed) {
      const stream = await request;
      const iterator = stream[Symbol.asyncIterator]();
      await iterator.next();
      await iterator.next();
    } else {
      request.catch(() => undefined);
      await waitFor(() => engine.stats().generationTokensTotal > generatedBefore, 5000, 'generation to start');
    }
    assert.is(engine.stats().running, 1);
    assert.ok(engine.stats().kvBlocksUsed > idle.kvBlocksUsed, 'the request holds KV blocks');
    const abortedAt = engine.stats().generationTokensTotal;
    controller.abort();
    await slow.stop();
    await waitFor(() => engine.stats().running === 0 && s.server.kiln.inFlight === 0, 3000, 'cancellation');
    assert.ok(engine.stats().generationTokensTotal - abortedAt < 60, 'cancelled well before its 180 tokens');
    assert.is(engine.stats().kvBlocksUsed, idle.kvBlocksUsed, 'KV blocks freed');
    const after = (await raw(s.port, 'GET', '/metrics')).body;
    assert.is(metric(after, 'vllm:num_requests_running'), 0);
    assert.is(metric(after, 'vllm:kv_cache_usage_perc'), metric(metricsIdle, 'vllm:kv_cache_usage_perc'));
  }
});

test('malformed JSON, wrong types, huge bodies, invalid UTF-8, absurd parameters: each a 4xx with a clear message', async () => {
  const post = (path: string, body: Buffer | string, headers: Record<string, string> = {}) => raw(s.port, 'POST', path, body, headers);
  const json = (v: unknown) => JSON.stringify(v);
  const cases: [string, Promise<Awaited<ReturnType<typeof raw>>>, number, RegExp][] = [
    ['malformed JSON', post('/v1/completions', '{"prompt": "abc", '), 400, /not valid JSON/],
    ['empty body', post('/v1/completions', ''), 400, /empty/],
    ['a JSON array', post('/v1/completions', '[1,2]'), 400, /object/],
    ['prompt of the wrong type', post('/v1/completions', json({ prompt: 5 })), 400, /prompt/],
    ['number as a string', post('/v1/completions', json({ prompt: 'a', temperature: '0.5' })), 400, /temperature/],
    ['stream as a string', post('/v1/completions', json({ prompt: 'a', stream: 'yes' })), 400, /stream/],
    ['messages not a list', post('/v1/chat/completions', json({ messages: 'hi' })), 400, /messages/],
    ['no messages', post('/v1/chat/completions', json({ messages: [] })), 400, /messages/],
    ['unknown role', post('/v1/chat/completions', json({ messages: [{ role: 'wizard', content: 'x' }] })), 400, /role/],
    ['no prompt', post('/v1/completions', json({ max_tokens: 3 })), 400, /prompt/],
    ['empty prompt', post('/v1/completions', json({ prompt: '' })), 400, /empty|prompt/],
    ['huge body', post('/v1/completions', json({ prompt: 'x'.repeat(3 << 20) })), 413, /larger than/],
    ['invalid UTF-8', post('/v1/completions', Buffer.concat([Buffer.from('{"prompt": "ab'), Buffer.from([0xff, 0xfe]), Buffer.from('"}')])), 400, /UTF-8/],
    ['text/plain', post('/v1/completions', 'hello', { 'content-type': 'text/plain' }), 415, /application\/json/],
    ['max_tokens a billion', post('/v1/completions', json({ prompt: 'a', max_tokens: 1e9 })), 400, /max_tokens/],
    ['max_tokens negative', post('/v1/completions', json({ prompt: 'a', max_tokens: -1 })), 400, /max_tokens/],
    ['max_tokens past the context', post('/v1/completions', json({ prompt: 'a', max_tokens: 100_000 })), 400, /context length/],
    ['temperature NaN-ish', post('/v1/completions', '{"prompt": "a", "temperature": 1e999}'), 400, /temperature/],
    ['top_p 0', post('/v1/completions', json({ prompt: 'a', top_p: 0 })), 400, /top_p/],
    ['logprobs 1000', post('/v1/completions', json({ prompt: 'a', logprobs: 1000 })), 400, /logprobs/],
    ['top_logprobs without logprobs', post('/v1/chat/completions', json({ messages: [{ role: 'user', content: 'a' }], top_logprobs: 3 })), 400, /logprobs/],
    ['n = 5', post('/v1/completions', json({ prompt: 'a', n: 5 })), 400, /\bn\b/],
    ['a seed past 2^53', post('/v1/completions', json({ prompt: 'a', seed: 1e300 })), 400, /seed/],
    ['token ids outside the vocabulary', post('/v1/completions', json({ prompt: [1, 2, 1e9] })), 400, /vocabulary/],
    ['100 stop strings', post('/v1/completions', json({ prompt: 'a', stop: Array.from({ length: 100 }, (_, i) => `s${i}`) })), 400, /stop/],
    ['a deeply nested body', post('/v1/completions', '{"prompt": ' + '['.repeat(100_000) + ']'.repeat(100_000) + '}'), 400, /prompt|JSON/],
    ['echo', post('/v1/completions', json({ prompt: 'a', echo: true })), 400, /echo/],
  ];
  for (const [name, pending, status, message] of cases) {
    const r = await pending;
    assert.is(r.status, status, `${name}: ${r.body.slice(0, 300)}`);
    const body = JSON.parse(r.body);
    assert.type(body.error?.message, 'string', name);
    assert.match(body.error.message, message, `${name}: ${body.error.message}`);
  }
  assert.is((await raw(s.port, 'GET', '/v1/nothing')).status, 404);
  assert.is((await raw(s.port, 'DELETE', '/v1/completions')).status, 404);
  // still serving
  const ok = await s.client.completions.create({ model: engine.modelName, prompt: 'ok', max_tokens: 3 });
  assert.is(ok.choices.length, 1);
  assert.is((await raw(s.port, 'GET', '/health')).status, 200);
});

test('soak: 520 requests (mixed lengths, streamed or not, 15% cancelled) leak no KV block, request, socket or memory', async () => {
  let seed = 12345;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
  const agent = new Agent({ keepAlive: true, maxSockets: 16 });
  await waitFor(() => engine.stats().running === 0, 5000, 'idle');
  const idleKv = engine.stats().kvBlocksUsed;
  const connections = () => new Promise<number>((resolve) => s.server.server.getConnections((_e, n) => resolve(n)));
  // keep-alive sockets of the earlier tests' clients (fetch's pool) may still be open: none may be added
  const connectionsBefore = await connections();
  const warm = async (n: number) => {
    for (let i = 0; i < n; i++) await raw(s.port, 'POST', '/v1/completions', JSON.stringify({ prompt: promptOf(i), max_tokens: 8 }), {}, agent);
  };
  await warm(20);
  const rssBefore = process.memoryUsage().rss;
  const total = 520;
  const outcome = { ok: 0, cancelled: 0, failed: [] as string[] };
  let next = 0;
  const one = (i: number) => new Promise<void>((resolve) => {
    let answered = false;
    const stream = random() < 0.5;
    const cancelAfterMs = random() < 0.15 ? 1 + random() * 40 : undefined;
    const body = JSON.stringify({ prompt: TEXT.slice(0, 1 + Math.floor(random() * 150)), max_tokens: 1 + Math.floor(random() * 40), temperature: random() < 0.5 ? 0 : 0.8, seed: i, stream });
    const req = httpRequest({ host: '127.0.0.1', port: s.port, method: 'POST', path: '/v1/completions', agent, headers: { 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => {
        answered = true;
        if (res.statusCode !== 200) outcome.failed.push(`${res.statusCode} ${text.slice(0, 200)}`);
        else if (stream && !text.endsWith('data: [DONE]\n\n')) outcome.failed.push(`stream without [DONE]: ${text.slice(-200)}`);
        else if (!stream && !JSON.parse(text).choices) outcome.failed.push(`no choices: ${text.slice(0, 200)}`);
        else outcome.ok++;
        resolve();
      });
      res.on('error', () => resolve());
    });
    req.on('error', () => {
      if (cancelAfterMs === undefined) outcome.failed.push(`request ${i} failed`);
      resolve();
    });
    req.on('close', () => resolve());
    if (cancelAfterMs !== undefined) {
      setTimeout(() => {
        if (!answered) {
          outcome.cancelled++;
          req.destroy();
        }
      }, cancelAfterMs);
    }
    req.end(body);
  });
  const started = Date.now();
  // every request is sent, however long the machine takes (each one settles on its response,
  // an error or its socket closing; a stuck one fails the run by its timeout, not by a clock here)
  await Promise.all(Array.from({ length: 16 }, async () => {
    while (next < total) await one(next++);
  }));
  const peakConnections = await connections();
  assert.is(next, total, `all ${total} requests sent`);
  assert.equal(outcome.failed, [], 'no request failed');
  assert.ok(outcome.ok + outcome.cancelled >= total, `${outcome.ok} ok + ${outcome.cancelled} cancelled`);
  await waitFor(() => engine.stats().running === 0 && engine.stats().waiting === 0 && s.server.kiln.inFlight === 0, 5000, 'the engine to go idle');
  assert.is(engine.stats().kvBlocksUsed, idleKv, 'no KV block leaked');
  agent.destroy();
  await waitFor(async () => (await connections()) <= connectionsBefore, 5000, 'every socket of the soak to close');
  assert.ok(peakConnections <= connectionsBefore + 16, `at most one socket per client connection (${peakConnections})`);
  const rssAfter = process.memoryUsage().rss;
  assert.ok(rssAfter - rssBefore < 96 * 2 ** 20, `RSS ${(rssBefore / 2 ** 20).toFixed(0)} -> ${(rssAfter / 2 ** 20).toFixed(0)} MiB`);
  console.log(`  soak: ${outcome.ok} ok, ${outcome.cancelled} cancelled in ${((Date.now() - started) / 1000).toFixed(1)} s; RSS ${(rssBefore / 2 ** 20).toFixed(0)} -> ${(rssAfter / 2 ** 20).toFixed(0)} MiB`);
});

test.run();
