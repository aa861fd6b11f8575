/**
 * The serving panel against the real engine (lib/serve/engine.ts, merged from branch engine): a
 * checkpoint trained for a few steps here, requests through Engine.generate, and the dashboard's
 * samples, percentiles and /metrics checked against the engine's own records.
 */
import { mkdtempSync } from 'node:fs';
import { get } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Engine } from '../../lib/serve/engine.js';
import type { RequestRecord } from '../../lib/serve/types.js';
import { attachServingDashboard } from '../../lib/monitor/dashboard.js';
import { percentile } from '../../lib/monitor/serving.js';
import { bundledCorpus, prepareDocuments } from '../../lib/io/shards.js';
import { byteTokenizer } from '../../lib/data/tokenizer.js';
import { type ModelConfig, preset } from '../../lib/model/config.js';
import { Trainer } from '../../lib/train/trainer.js';

const test = suite('monitor: serving panel on the real engine');
const root = mkdtempSync(join(tmpdir(), 'kiln-monitor-engine-'));
const config: ModelConfig = { ...preset('tiny'), dModel: 32, layers: 1, heads: 2, kvHeads: 1, headDim: 16, ffn: 64, context: 128 };

const text = (url: string) => new Promise<string>((resolve, reject) => {
  get(url, (res) => { let b = ''; res.on('data', (c) => (b += c)); res.on('end', () => resolve(b)); }).on('error', reject);
});

test('samples and percentiles follow the engine: 8 concurrent requests', async () => {
  prepareDocuments(await bundledCorpus(40), join(root, 'data'), byteTokenizer, { valFraction: 0.1 });
  const trainer = new Trainer({ config, data: join(root, 'data'), steps: 2, batch: 2, seqLen: 32, out: join(root, 'run'), evalEvery: 0 });
  await trainer.run();
  const checkpoint = await trainer.save();
  trainer.close();
  const engine = await Engine.load(checkpoint, {});
  const records: RequestRecord[] = [];
  const unsubscribe = engine.onRequestFinished((r) => records.push(r));
  const dashboard = await attachServingDashboard(engine, { port: 0, intervalMs: 100 });
  try {
    const prompts = ['The film was', 'A quiet study', 'It rained', 'Nobody knew', 'The end of', 'Once upon', 'Later that', 'In the'];
    const completions = await Promise.all(prompts.map((p, i) => engine.generate(p, { maxTokens: 6 + i, temperature: 0, ignoreEos: true })));
    assert.is(records.length, 8);
    let sample;
    for (let i = 0; i < 50; i++) {
      sample = dashboard.snapshot().serving!.samples.at(-1)!;
      if (sample.windowRequests === 8) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.is(sample!.windowRequests, 8);
    const stats = engine.stats();
    assert.is(sample!.requestsFinished, stats.requestsFinished);
    assert.is(sample!.running, 0);
    assert.is(sample!.waiting, 0);
    const ttft = records.map((r) => r.timings.ttftMs).sort((a, b) => a - b);
    assert.is(sample!.ttftP50Ms, percentile(ttft, 0.5));
    assert.is(sample!.ttftP99Ms, percentile(ttft, 0.99));
    const gaps = records.flatMap((r) => r.interTokenMs).sort((a, b) => a - b);
    assert.is(gaps.length, completions.reduce((n, c) => n + c.usage.completionTokens - 1, 0), 'one gap per token after the first');
    assert.is(sample!.itlP50Ms, percentile(gaps, 0.5));
    const metrics = await text(`${dashboard.url}metrics`);
    assert.match(metrics, 'kiln_serve_time_to_first_token_seconds_count 8');
    assert.match(metrics, `kiln_serve_inter_token_latency_seconds_count ${gaps.length}`);
    assert.match(metrics, `kiln_serve_requests_finished ${stats.requestsFinished}`);
  } finally {
    unsubscribe();
    await dashboard.close();
    await engine.close();
  }
});

test.run();
