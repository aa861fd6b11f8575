/**
 * The serving benchmark's machinery (bench/serve.ts): SSE parsing and client-side timing of the
 * HTTP driver against a scripted OpenAI-style server, the vLLM-style summary, closed- and
 * open-loop scenarios, and a small end-to-end run over the kiln engine and llama.cpp.
 */
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { bundledCorpus, prepareDocuments } from '../../lib/io/shards.js';
import { byteTokenizer } from '../../lib/data/tokenizer.js';
import { type RequestTiming, type ServeDriver, SERVE_DEFAULTS, arrivalTimes, benchServe, decodeBytes, drawPrompts, httpDriver, runScenario, sseData, summarize } from '../../bench/serve.js';
import { matmulParameters, preset } from '../../lib/model/config.js';
import { assertKilnError } from '../helpers.js';

const test = suite('serving benchmark');
const root = mkdtempSync(join(tmpdir(), 'kiln-bench-serve-test-'));
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

test.after(() => rmSync(root, { recursive: true, force: true }));

async function* chunks(parts: string[]): AsyncGenerator<Uint8Array> {
  for (const p of parts) yield new TextEncoder().encode(p);
}

test('SSE events are reassembled across arbitrary chunk boundaries', async () => {
  const stream = 'data: {"a":1}\n\ndata: {"b":"é"}\r\n\r\n: comment\n\ndata: [DONE]\n\n';
  const bytes = new TextEncoder().encode(stream);
  for (const cut of [1, 3, 7, 13]) {
    // split the UTF-8 bytes (not characters) so a multi-byte character can straddle chunks
    const pieces: Uint8Array[] = [];
    for (let i = 0; i < bytes.length; i += cut) pieces.push(bytes.subarray(i, i + cut));
    const got: string[] = [];
    for await (const d of sseData((async function* () { yield* pieces; })())) got.push(d);
    assert.equal(got, ['{"a":1}', '{"b":"é"}', '[DONE]'], `cut ${cut}`);
  }
  const whole: string[] = [];
  for await (const d of sseData(chunks([stream]))) whole.push(d);
  assert.is(whole.length, 3);
});

/** An OpenAI-style completions server that streams `n` chunks: the first after `firstMs`, then one per `gapMs`. */
async function scriptedServer(firstMs: number, gapMs: number): Promise<{ server: Server; url: string; bodies: unknown[] }> {
  const bodies: unknown[] = [];
  const server = createServer(async (req, res) => {
    if (req.url === '/v1/models') {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ object: 'list', data: [{ id: 'scripted', object: 'model' }] }));
      return;
    }
    let raw = '';
    for await (const c of req) raw += c;
    const body = JSON.parse(raw) as { max_tokens: number; prompt: number[] };
    bodies.push(body);
    if (body.max_tokens > 100) {
      res.statusCode = 429;
      res.end(JSON.stringify({ error: { message: 'queue full', type: 'rate_limit' } }));
      return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    await sleep(firstMs);
    for (let i = 0; i < body.max_tokens; i++) {
      if (i) await sleep(gapMs);
      res.write(`data: ${JSON.stringify({ choices: [{ index: 0, text: `t${i}` }] })}\n\n`);
    }
    res.write(`data: ${JSON.stringify({ choices: [], usage: { prompt_tokens: body.prompt.length, completion_tokens: body.max_tokens } })}\n\n`);
    res.end('data: [DONE]\n\n');
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, bodies };
}

test('the HTTP driver times tokens where the client sees them and reports server errors', async () => {
  const { server, url, bodies } = await scriptedServer(60, 25);
  try {
    const driver = await httpDriver({ url: `${url}/v1` });
    assert.is(driver.description.model, 'scripted');
    const t = await driver.request([1, 2, 3], 6);
    assert.ok(t.ok, t.error);
    assert.is(t.outputTokens, 6);
    assert.is(t.promptTokens, 3);
    assert.is(t.tokenMs.length, 6);
    const ttft = t.tokenMs[0] - t.sentMs;
    assert.ok(ttft >= 55, `TTFT ${ttft} ms: the server waits 60 ms before the first token`);
    // The server spaces tokens 25 ms apart. A loaded event loop may deliver two at once (the first
    // read late, together with the second), so only the 4 gaps after the second token are certain,
    // less a little for timers counting from the loop's cached time. This also says the first token
    // was timed on arrival, not with the rest: no wall-clock upper bound on TTFT needed.
    const span = t.tokenMs[5] - t.tokenMs[0];
    assert.ok(span >= 4 * 25 * 0.9, `tokens 1..5 arrived over ${span.toFixed(0)} ms`);
    assert.ok(t.tokenMs.every((x, i) => i === 0 || x >= t.tokenMs[i - 1]), 'tokens timed in order');
    const body = bodies[0] as Record<string, unknown>;
    assert.equal(body.prompt, [1, 2, 3]);
    assert.is(body.stream, true);
    assert.is(body.temperature, 0);
    assert.is(body.model, 'scripted');
    const refused = await driver.request([1], 500);
    assert.not.ok(refused.ok);
    assert.ok(refused.error!.includes('429'), refused.error);
    await assertKilnError(() => httpDriver({ url: 'ftp://x' }), 'ERR_ARG', 'http');
    // a port the OS just handed out and nothing listens on any more (not a fixed port that may be taken)
    const gone = createServer().listen(0, '127.0.0.1');
    await once(gone, 'listening');
    const closedPort = (gone.address() as AddressInfo).port;
    await new Promise((resolve) => gone.close(resolve));
    await assertKilnError(() => httpDriver({ url: `http://127.0.0.1:${closedPort}` }), 'ERR_ARG', 'cannot reach');
  } finally {
    server.close();
  }
});

test('summaries follow vLLM: TTFT, TPOT over tokens after the first, pooled ITL, failures apart', () => {
  const mk = (sent: number, tokens: number[], ok = true): RequestTiming => ({ ok, promptTokens: 10, outputTokens: tokens.length, sentMs: sent, tokenMs: tokens, endMs: tokens.at(-1) ?? sent });
  const timings = [mk(0, [100, 110, 120, 130]), mk(0, [200, 230, 260, 290]), mk(0, [], false)];
  timings[2].error = 'boom';
  const s = summarize(timings, 1000);
  assert.is(s.completed, 2);
  assert.is(s.failed, 1);
  assert.equal(s.errors, ['boom']);
  assert.is(s.outputTokens, 8);
  assert.is(s.promptTokens, 20);
  assert.is(s.outputTokensPerSecond, 8);
  assert.is(s.requestsPerSecond, 2);
  assert.is(s.ttftMs.p50, 150);
  assert.is(s.tpotMs.mean, 20);
  assert.is(s.itlMs.p50, 20);
  assert.ok(Math.abs(s.itlMs.p99 - 30) < 1e-9);
  assert.is(s.decodeTokensPerSecond, 50);
});

test('closed loops keep exactly c requests in flight; open loops follow the arrival rate', async () => {
  let inFlight = 0;
  let most = 0;
  const driver: ServeDriver = {
    name: 'fake', description: {},
    async request(prompt, maxTokens) {
      inFlight++;
      most = Math.max(most, inFlight);
      const sent = performance.now();
      const tokenMs: number[] = [];
      for (let i = 0; i < maxTokens; i++) {
        await sleep(2);
        tokenMs.push(performance.now());
      }
      inFlight--;
      return { ok: true, promptTokens: prompt.length, outputTokens: maxTokens, sentMs: sent, tokenMs, endMs: performance.now() };
    },
    gauges: () => ({ kvUsage: inFlight / 10, prefixCacheQueries: 0, prefixCacheHits: 0 }),
    close: async () => {},
  };
  const prompts = Array.from({ length: 40 }, (_, i) => [i]);
  const closed = await runScenario(driver, prompts, 3, { name: 'c4', concurrency: 4, requests: 12 });
  assert.is(most, 4);
  assert.is(closed.completed, 12);
  assert.ok(closed.kvUsage, 'a completed scenario reports the KV gauge');
  assert.ok(closed.kvUsage.samples >= 2, `${closed.kvUsage.samples} KV samples`);
  assert.ok(closed.kvUsage.max <= 0.4);
  // Open loop: the seeded schedule of 40 arrivals at 200/s (mean gap 5 ms) ...
  const schedule = arrivalTimes(200, 40, 1);
  assert.is(schedule[0], 0);
  assert.ok(schedule.every((t, i) => i === 0 || t > schedule[i - 1]), 'arrivals in order');
  const meanGap = schedule[39] / 39;
  assert.ok(meanGap > 2.5 && meanGap < 10, `mean gap ${meanGap.toFixed(2)} ms at 200/s`);
  assert.equal(arrivalTimes(200, 40, 1), schedule, 'seeded');
  // ... is followed: no request is sent before its arrival time, and none waits for a response.
  // Every request is held until the last one has been sent, so only an open loop gets all 40 in
  // flight; a loop that waited on responses would stall (the breaker then releases it to fail).
  const sentAt: number[] = [];
  let release!: () => void;
  const allSent = new Promise<void>((resolve) => (release = resolve));
  const breaker = setTimeout(() => release(), 30_000);
  let openInFlight = 0;
  let openMost = 0;
  const gated: ServeDriver = {
    name: 'gated', description: {},
    async request(prompt, maxTokens) {
      sentAt[prompt[0]] = performance.now();
      openMost = Math.max(openMost, ++openInFlight);
      if (openInFlight === 40) release();
      await allSent;
      const now = performance.now();
      openInFlight--;
      return { ok: true, promptTokens: prompt.length, outputTokens: maxTokens, sentMs: sentAt[prompt[0]], tokenMs: Array(maxTokens).fill(now), endMs: now };
    },
    close: async () => {},
  };
  const t0 = performance.now();
  const open = await runScenario(gated, prompts, 2, { name: 'rate', rate: 200, requests: 40 }, 1);
  clearTimeout(breaker);
  assert.is(open.completed, 40);
  assert.is(openMost, 40, 'every request was sent before any response came back');
  for (let i = 0; i < 40; i++) {
    assert.ok(sentAt[i] - t0 >= schedule[i], `request ${i} sent ${(sentAt[i] - t0).toFixed(2)} ms in, due at ${schedule[i].toFixed(2)} ms`);
    if (i) assert.ok(sentAt[i] >= sentAt[i - 1], `request ${i} sent in order`);
  }
  await assertKilnError(() => runScenario(driver, prompts.slice(0, 2), 1, { name: 'x', concurrency: 1, requests: 3 }), 'ERR_ARG', 'prompts');
});

test('a scenario shorter than the gauge timer still samples the KV gauge at its start and at its end', async () => {
  // requests that finish without yielding to the event loop: no timer can fire during the scenario
  let sent = 0;
  let done = 0;
  const seen: { sent: number; done: number }[] = [];
  const driver: ServeDriver = {
    name: 'instant', description: {},
    async request(prompt, maxTokens) {
      sent++;
      const now = performance.now();
      done++;
      return { ok: true, promptTokens: prompt.length, outputTokens: maxTokens, sentMs: now, tokenMs: Array(maxTokens).fill(now), endMs: now };
    },
    gauges: () => (seen.push({ sent, done }), { kvUsage: 0.25 }),
    close: async () => {},
  };
  const prompts = Array.from({ length: 3 }, (_, i) => [i]);
  for (const scenario of [{ name: 'c1', concurrency: 1, requests: 3 }, { name: 'rate', rate: 1e6, requests: 3 }]) {
    sent = done = 0;
    seen.length = 0;
    const r = await runScenario(driver, prompts, 2, scenario);
    assert.is(r.completed, 3, scenario.name);
    assert.ok(r.kvUsage, `${scenario.name}: kvUsage is missing`);
    assert.ok(r.kvUsage.samples >= 2, `${scenario.name}: ${r.kvUsage.samples} samples`);
    assert.equal([r.kvUsage.mean, r.kvUsage.max], [0.25, 0.25]);
    assert.ok(seen.some((s) => s.sent === 0), `${scenario.name}: sampled before the first request`);
    assert.ok(seen.some((s) => s.done === 3), `${scenario.name}: sampled after the last request`);
    assert.is(JSON.parse(JSON.stringify(r)).kvUsage.samples, r.kvUsage.samples);
  }
});

test('prompts are seeded windows of the shard; bandwidth counts weights once and KV per context token', async () => {
  prepareDocuments(await bundledCorpus(100), join(root, 'data'), byteTokenizer, { valFraction: 0.2 });
  const a = drawPrompts(join(root, 'data', 'val.bin'), 20, 5, 9, 3, 256);
  const b = drawPrompts(join(root, 'data', 'val.bin'), 20, 5, 9, 3, 256);
  assert.equal(a, b);
  assert.ok(a.every((p) => p.length >= 5 && p.length <= 9 && p.every((t) => t >= 0 && t < 256)));
  assert.ok(new Set(a.map((p) => p.length)).size > 1, 'mixed lengths');
  await assertKilnError(() => drawPrompts(join(root, 'data', 'val.bin'), 1, 5, 9, 3, 100), 'ERR_ARG', 'vocabulary');
  const c = preset('125m');
  const bytes = decodeBytes(c, 4, 4, 100);
  assert.is(bytes.kv, 2 * 12 * 4 * 64 * 4 * 100);
  assert.ok(bytes.weights > matmulParameters(c) * 4 && bytes.weights < matmulParameters(c) * 4 * 1.01);
});

test('end to end: kiln and llama.cpp serve the same prompts; every request completes at its length', async () => {
  let llamaLoads = true;
  try {
    const { getLlama } = await import('node-llama-cpp');
    await (await getLlama({ gpu: false, build: 'never', usePrebuiltBinaries: true, skipDownload: true, progressLogs: false })).dispose();
  } catch (error) {
    llamaLoads = false;
    console.log(`end to end without llama.cpp: node-llama-cpp cannot load here (${(error as Error).message})`);
  }
  process.env.KILN_CACHE_DIR = join(root, 'cache');
  const result = await benchServe({
    ...SERVE_DEFAULTS, preset: 'tiny', data: join(root, 'data'), drivers: llamaLoads ? ['kiln', 'llama.cpp'] : ['kiln'], promptMin: 4, promptMax: 24,
    outputTokens: 6, requests: 3, concurrency: [1, 3], rates: [40], rateRequests: 3, threads: 2, peerThreads: 1, bandwidth: false,
  });
  delete process.env.KILN_CACHE_DIR;
  const drivers = result.drivers as { driver: string; scenarios: { scenario: string; completed: number; failed: number; outputTokens: number; kvUsage?: { max: number; samples: number }; ttftMs: { p50: number } }[] }[];
  assert.is(drivers.length, llamaLoads ? 2 : 1);
  for (const d of drivers) {
    assert.equal(d.scenarios.map((s) => s.scenario), ['c1', 'c3', 'rate 40']);
    for (const s of d.scenarios) {
      assert.is(s.failed, 0, `${d.driver} ${s.scenario}: ${JSON.stringify((s as { errors?: string[] }).errors)}`);
      assert.is(s.outputTokens, s.completed * 6);
      assert.ok(s.ttftMs.p50 > 0);
      // both drivers have a KV gauge: every completed scenario reports it, however short
      assert.ok(s.kvUsage, `${d.driver} ${s.scenario}: kvUsage is missing`);
      assert.ok(s.kvUsage.samples >= 2 && s.kvUsage.max >= 0 && s.kvUsage.max <= 1, `${d.driver} ${s.scenario}: ${JSON.stringify(s.kvUsage)}`);
    }
  }
  const targets = result.targets as Record<string, { met: boolean }>;
  assert.ok('ttftP99OverP50UnderRateSweep' in targets);
  if (llamaLoads) assert.ok('decodeC1VsLlamaCpp' in targets);
});

test.run();
