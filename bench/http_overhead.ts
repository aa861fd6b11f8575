/**
 * What the HTTP layer costs: the same engine, the same prompts and output lengths, driven
 * (a) in-process through engine.stream() and (b) over HTTP through `kiln serve`'s
 * /v1/completions with streaming (SSE parsed by the client, which runs in a worker thread with its
 * own event loop, as a separate client process would). Alternating rounds, medians.
 *
 *   node dist/bench/http_overhead.js [--checkpoint DIR | --preset tiny] [--concurrency 32]
 *        [--requests 96] [--tokens 64] [--rounds 3] [--out bench/results]
 *
 * Reports output tokens/s, TTFT p50/p99 and inter-token latency p50 for both, and the ratios
 * against their targets (bench/targets.ts: tokens/s within 5%, TTFT p50 within 5 ms).
 */
import { mkdtempSync } from 'node:fs';
import { Agent, request as httpRequest } from 'node:http';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { bundledCorpus, prepareDocuments } from '../lib/io/shards.js';
import { byteTokenizer } from '../lib/data/tokenizer.js';
import { preset } from '../lib/model/config.js';
import type { HttpOverheadRow } from '../lib/monitor/results_schema.js';
import { Engine } from '../lib/serve/engine.js';
import { createServer } from '../lib/serve/http/index.js';
import { Trainer } from '../lib/train/trainer.js';
import { writeResults } from './harness.js';
import { HTTP_OVERHEAD_TARGETS } from './targets.js';

interface Load {
  prompts: string[];
  concurrency: number;
  tokens: number;
}

interface RoundResult {
  wallMs: number;
  /** engine iterations the round took, and the model's share of their time (engine.profile()) */
  iterations?: number;
  modelMs?: number;
  /** TTFT as the engine measured it (arrival in engine.stream to first token), ms */
  engineTtftMs?: number[];
  /** busy time of the main thread (engine loop + HTTP server, or engine loop + in-process client) */
  mainThreadActiveMs?: number;
  outputTokens: number;
  tokensPerSecond: number;
  ttftMs: number[];
  interTokenMs: number[];
  failed: number;
}

const quantile = (values: number[], q: number) => {
  if (!values.length) return NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};
const median = (v: number[]) => quantile(v, 0.5);

async function drive(load: Load, one: (prompt: string) => Promise<{ ttft: number; gaps: number[]; tokens: number; ok: boolean }>): Promise<RoundResult> {
  let next = 0;
  const ttftMs: number[] = [];
  const interTokenMs: number[] = [];
  let outputTokens = 0;
  let failed = 0;
  const started = performance.now();
  await Promise.all(Array.from({ length: load.concurrency }, async () => {
    while (next < load.prompts.length) {
      const r = await one(load.prompts[next++]);
      if (!r.ok) failed++;
      ttftMs.push(r.ttft);
      interTokenMs.push(...r.gaps);
      outputTokens += r.tokens;
    }
  }));
  const wallMs = performance.now() - started;
  return { wallMs, outputTokens, tokensPerSecond: (outputTokens * 1000) / wallMs, ttftMs, interTokenMs, failed };
}

/** One streamed request over HTTP; tokens are counted from the content chunks. */
function httpOne(port: number, agent: Agent, prompt: string, tokens: number): Promise<{ ttft: number; gaps: number[]; tokens: number; ok: boolean }> {
  return new Promise((resolve) => {
    const start = performance.now();
    let last = 0;
    let first = 0;
    let count = 0;
    const gaps: number[] = [];
    let buffer = '';
    const body = JSON.stringify({ prompt, max_tokens: tokens, temperature: 0, ignore_eos: true, stream: true });
    const req = httpRequest({ host: '127.0.0.1', port, method: 'POST', path: '/v1/completions', agent, headers: { 'content-type': 'application/json' } }, (res) => {
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buffer += chunk;
        let cut: number;
        while ((cut = buffer.indexOf('\n\n')) >= 0) {
          const event = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          if (!event.startsWith('data: {')) continue;
          const data = JSON.parse(event.slice(6)) as { choices: { text: string; finish_reason: string | null }[] };
          if (!data.choices.length || data.choices[0].finish_reason !== null) continue;
          const now = performance.now();
          if (count === 0) first = now;
          else gaps.push(now - last);
          last = now;
          count++;
        }
      });
      res.on('end', () => resolve({ ttft: first - start, gaps, tokens: count, ok: res.statusCode === 200 && count === tokens }));
    });
    req.on('error', () => resolve({ ttft: NaN, gaps: [], tokens: 0, ok: false }));
    req.end(body);
  });
}

// the HTTP client, in a worker thread
if (!isMainThread) {
  const { port, load } = workerData as { port: number; load: Load };
  const agent = new Agent({ keepAlive: true, maxSockets: load.concurrency });
  parentPort!.on('message', async () => {
    const result = await drive(load, (p) => httpOne(port, agent, p, load.tokens));
    parentPort!.postMessage(result);
  });
}

async function checkpointFor(presetName: string): Promise<string> {
  const root = mkdtempSync(join(tmpdir(), 'kiln-http-bench-'));
  const data = join(root, 'data');
  prepareDocuments(await bundledCorpus(200), data, byteTokenizer, { valFraction: 0.05 });
  const config = preset(presetName);
  const trainer = new Trainer({ config, data, steps: 5, batch: 2, seqLen: Math.min(128, config.context), out: join(root, 'run'), evalEvery: 0, seed: 1 });
  await trainer.run();
  const dir = await trainer.save();
  trainer.close();
  return dir;
}

function summary(rounds: RoundResult[]) {
  return {
    tokensPerSecond: median(rounds.map((r) => r.tokensPerSecond)),
    ttftP50Ms: median(rounds.map((r) => quantile(r.ttftMs, 0.5))),
    ttftP99Ms: median(rounds.map((r) => quantile(r.ttftMs, 0.99))),
    interTokenP50Ms: median(rounds.map((r) => quantile(r.interTokenMs, 0.5))),
    interTokenP99Ms: median(rounds.map((r) => quantile(r.interTokenMs, 0.99))),
    failed: rounds.reduce((a, r) => a + r.failed, 0),
    mainThreadMsPerToken: median(rounds.map((r) => r.mainThreadActiveMs! / r.outputTokens)),
    iterations: median(rounds.map((r) => r.iterations!)),
    engineTtftP50Ms: median(rounds.map((r) => quantile(r.engineTtftMs!, 0.5))),
    modelMsPerIteration: median(rounds.map((r) => r.modelMs! / r.iterations!)),
    rounds: rounds.map((r) => ({ wallMs: r.wallMs, outputTokens: r.outputTokens, tokensPerSecond: r.tokensPerSecond, iterations: r.iterations, modelMs: r.modelMs })),
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      checkpoint: { type: 'string' }, preset: { type: 'string', default: 'tiny' }, concurrency: { type: 'string', default: '32' },
      requests: { type: 'string', default: '96' }, tokens: { type: 'string', default: '64' }, rounds: { type: 'string', default: '3' },
      out: { type: 'string', default: 'bench/results' },
    },
  });
  const checkpoint = values.checkpoint ?? (await checkpointFor(values.preset!));
  const engine = await Engine.load(checkpoint, {});
  const concurrency = Number(values.concurrency);
  const tokens = Number(values.tokens);
  const corpus = (await bundledCorpus(50)).join(' ').replace(/\s+/g, ' ');
  const maxPrompt = Math.max(8, Math.min(200, engine.contextLength - tokens - 1));
  // mixed prompt lengths, cut from the corpus at word boundaries, within the context
  const prompts: string[] = [];
  for (let i = 0, at = 0; i < Number(values.requests); i++) {
    let p = corpus.slice(at, at + 8 + ((i * 37) % (maxPrompt - 8)));
    while (engine.tokenizer.encode(p).length > maxPrompt) p = p.slice(0, -8);
    prompts.push(p);
    at = (at + 997) % (corpus.length - 300);
  }
  const load: Load = { prompts, concurrency, tokens };
  const inProcessOne = async (prompt: string) => {
    const start = performance.now();
    let first = 0;
    let last = 0;
    let count = 0;
    const gaps: number[] = [];
    for await (const e of engine.stream(prompt, { maxTokens: tokens, temperature: 0, ignoreEos: true })) {
      if ('done' in e) break;
      const now = performance.now();
      if (count === 0) first = now;
      else gaps.push(now - last);
      last = now;
      count++;
    }
    return { ttft: first - start, gaps, tokens: count, ok: count === tokens };
  };
  const server = createServer(engine, { processMetrics: false });
  await server.listen({ host: '127.0.0.1', port: 0 });
  const port = (server.server.address() as { port: number }).port;
  const worker = new Worker(fileURLToPath(import.meta.url), { workerData: { port, load } });
  const overHttp = () => new Promise<RoundResult>((resolve) => {
    worker.once('message', resolve);
    worker.postMessage('go');
  });
  // warm-up of both paths
  await drive({ ...load, prompts: prompts.slice(0, concurrency) }, inProcessOne);
  await overHttp();
  const inProcess: RoundResult[] = [];
  const http: RoundResult[] = [];
  for (let r = 0; r < Number(values.rounds); r++) {
    const measured = async (run: () => Promise<RoundResult>) => {
      const elu = performance.eventLoopUtilization();
      const before = engine.profile();
      const engineTtftMs: number[] = [];
      const unsubscribe = engine.onRequestFinished((record) => engineTtftMs.push(record.timings.ttftMs));
      const result = await run();
      unsubscribe();
      result.engineTtftMs = engineTtftMs;
      const after = engine.profile();
      result.mainThreadActiveMs = performance.eventLoopUtilization(elu).active;
      result.iterations = after.iterations - before.iterations;
      result.modelMs = after.modelMs - before.modelMs;
      return result;
    };
    inProcess.push(await measured(() => drive(load, inProcessOne)));
    http.push(await measured(overHttp));
    const line = (x: RoundResult) => `${x.tokensPerSecond.toFixed(0)} tok/s (${x.iterations} iterations, model ${((x.modelMs! / x.wallMs) * 100).toFixed(0)}% of the time)`;
    console.log(`round ${r + 1}: in-process ${line(inProcess[r])}, HTTP ${line(http[r])}`);
  }
  await worker.terminate();
  await server.close();
  await engine.close('cancel');
  const a = summary(inProcess);
  const b = summary(http);
  const result: HttpOverheadRow = {
    checkpoint, model: { layers: engine.config.layers, dModel: engine.config.dModel, vocabSize: engine.config.vocabSize, context: engine.contextLength },
    concurrency, requests: prompts.length, outputTokens: tokens,
    inProcess: a, http: b,
    httpTokensPerSecondRatio: b.tokensPerSecond / a.tokensPerSecond,
    httpTtftP50ExtraMs: b.ttftP50Ms - a.ttftP50Ms,
    httpMainThreadExtraMsPerToken: b.mainThreadMsPerToken - a.mainThreadMsPerToken,
    loadAverage: loadavg(),
  };
  console.log(`concurrency ${concurrency}, ${prompts.length} requests x ${tokens} tokens (medians of ${values.rounds} rounds)`);
  console.log(`  in-process: ${a.tokensPerSecond.toFixed(1)} tok/s, TTFT p50 ${a.ttftP50Ms.toFixed(1)} ms p99 ${a.ttftP99Ms.toFixed(1)} ms, ITL p50 ${a.interTokenP50Ms.toFixed(2)} ms`);
  console.log(`  HTTP:       ${b.tokensPerSecond.toFixed(1)} tok/s, TTFT p50 ${b.ttftP50Ms.toFixed(1)} ms p99 ${b.ttftP99Ms.toFixed(1)} ms, ITL p50 ${b.interTokenP50Ms.toFixed(2)} ms, failed ${b.failed}`);
  console.log(`  HTTP/in-process tokens/s ${(result.httpTokensPerSecondRatio * 100).toFixed(1)}% (target >= ${100 * HTTP_OVERHEAD_TARGETS.tokensPerSecondShare}%), TTFT p50 +${result.httpTtftP50ExtraMs.toFixed(1)} ms (target <= ${HTTP_OVERHEAD_TARGETS.ttftP50ExtraMs} ms)`);
  console.log(`  TTFT p50 as the engine saw it: in-process ${a.engineTtftP50Ms.toFixed(1)} ms, HTTP ${b.engineTtftP50Ms.toFixed(1)} ms`);
  console.log(`  main thread busy per output token: in-process ${(a.mainThreadMsPerToken * 1000).toFixed(0)} us, HTTP ${(b.mainThreadMsPerToken * 1000).toFixed(0)} us (+${(result.httpMainThreadExtraMsPerToken * 1000).toFixed(0)} us); load average ${loadavg().map((x) => x.toFixed(1)).join(' ')}`);
  console.log(`  -> ${writeResults(values.out!, 'http_overhead', [result])}`);
}

if (isMainThread) {
  main().catch((error) => {
    console.error(error);
    process.exitCode = 1;
  });
}
