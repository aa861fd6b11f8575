/** Shared setup of the HTTP tests: a small trained checkpoint, the real engine, a server on 127.0.0.1:0. */
import { mkdtempSync } from 'node:fs';
import { request as httpRequest, type Agent } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import type { FastifyInstance } from 'fastify';
import { bundledCorpus, prepareDocuments } from '../../lib/io/shards.js';
import { byteTokenizer } from '../../lib/data/tokenizer.js';
import { type ModelConfig, preset } from '../../lib/model/config.js';
import { Trainer } from '../../lib/train/trainer.js';
import { createServer, type ServerOptions } from '../../lib/serve/http/index.js';
import type { EngineOptions, ServingEngine } from '../../lib/serve/types.js';
import { Engine } from '../../lib/serve/engine.js';
import { randn } from '../../lib/tensor.js';
import { matmul } from '../../lib/ops/matmul.js';
import { synchronize } from '../../lib/runtime.js';

const small: ModelConfig = { ...preset('tiny'), dModel: 64, layers: 2, heads: 4, kvHeads: 2, headDim: 16, ffn: 176, context: 256 };

let checkpoint: string | undefined;

/** Trains a small byte-level model for a few steps (once per test file) and returns its directory. */
export async function trainedCheckpoint(): Promise<string> {
  if (checkpoint) return checkpoint;
  const root = mkdtempSync(join(tmpdir(), 'kiln-http-'));
  const data = join(root, 'data');
  prepareDocuments(await bundledCorpus(200), data, byteTokenizer, { valFraction: 0.05 });
  const trainer = new Trainer({ config: small, data, steps: 20, batch: 4, seqLen: 128, out: join(root, 'run'), evalEvery: 0, seed: 5 });
  await trainer.run();
  checkpoint = await trainer.save();
  trainer.close();
  return checkpoint;
}

/** The real engine on the trained checkpoint. */
export async function loadEngine(options: EngineOptions = {}): Promise<ServingEngine> {
  return Engine.load(await trainedCheckpoint(), { maxBatchTokens: 256, ...options });
}

export interface Running {
  server: FastifyInstance;
  engine: ServingEngine;
  url: string;
  port: number;
  client: OpenAI;
  close(): Promise<void>;
}

export async function startServer(engine: ServingEngine, options: ServerOptions = {}): Promise<Running> {
  const server = createServer(engine, options);
  await server.listen({ host: '127.0.0.1', port: 0 });
  const address = server.server.address();
  if (!address || typeof address === 'string') throw new Error('no address');
  const url = `http://127.0.0.1:${address.port}`;
  // wait until the engine promise has resolved into 'ready'
  for (let i = 0; i < 100 && server.kiln.state !== 'ready'; i++) await new Promise((r) => setTimeout(r, 10));
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: options.apiKey ?? 'none', maxRetries: 0, timeout: 60_000 });
  return {
    server, engine, url, port: address.port, client,
    async close() {
      await server.close();
    },
  };
}

export interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** One HTTP request with raw bytes (what a client library would not send). */
export function raw(port: number, method: string, path: string, body?: Buffer | string, headers: Record<string, string> = {}, agent?: Agent): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, method, path, headers: { ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers }, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (body !== undefined) req.end(body);
    else req.end();
  });
}

/** Reads one value from /metrics text (the first sample of that name). */
export function metric(text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(name + '{') || l.startsWith(name + ' '));
  if (!line) throw new Error(`no metric ${name}`);
  return Number(line.slice(line.lastIndexOf(' ') + 1));
}

export async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Slows the engine down to about one iteration per 1024^3 matmul (tens of ms) while it runs, by
 * keeping the native op queue busy: ops run in program order, so each engine iteration waits for
 * the matmul queued before it. Tests that must catch a request in flight use it; without it the
 * small model can finish a whole request on an idle machine before the test looks.
 */
export function slowEngine(): { stop(): Promise<void> } {
  let active = true;
  const a = randn([1024, 1024], { seed: 1 });
  const b = randn([1024, 1024], { seed: 2 });
  const loop = (async () => {
    while (active) {
      const c = matmul(a, b);
      await synchronize();
      c.dispose();
    }
    a.dispose();
    b.dispose();
  })();
  return {
    async stop() {
      active = false;
      await loop;
    },
  };
}
