/**
 * The serving engine on a checkpoint trained here (a few seconds on the bundled corpus): greedy
 * decoding equals the recompute oracle, batching/preemption/chunking/prefix hits change no
 * token, KV blocks all return, bad input is a typed error, streams are UTF-8 safe and never
 * leak a stop string, and an abort ends a stream.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { type Completion, Engine, type EngineLoadOptions, memoryStats, type SamplingParams, type StreamEnd, type TokenEvent } from '../../lib/index.js';
import { bundledCorpus, prepareDocuments } from '../../lib/io/shards.js';
import { byteTokenizer } from '../../lib/data/tokenizer.js';
import { loadModel } from '../../lib/io/checkpoint.js';
import { generateTokens } from '../oracles/generate_reference.js';
import { type ModelConfig, preset } from '../../lib/model/config.js';
import { Trainer } from '../../lib/train/trainer.js';
import { assertKilnError } from '../helpers.js';

const test = suite('serving engine (cpu)');
const root = mkdtempSync(join(tmpdir(), 'kiln-serve-'));
const config: ModelConfig = { ...preset('tiny'), dModel: 64, layers: 2, heads: 4, kvHeads: 2, headDim: 16, ffn: 176, context: 256 };
let checkpoint = '';
const corpusText: string[] = [];

test.before(async () => {
  const docs = await bundledCorpus(400);
  for (const d of docs.slice(0, 40)) corpusText.push(d);
  prepareDocuments(docs, join(root, 'data'), byteTokenizer, { valFraction: 0.05 });
  const trainer = new Trainer({ config, data: join(root, 'data'), steps: 60, batch: 8, seqLen: 64, out: join(root, 'run'), evalEvery: 0, seed: 3 });
  await trainer.run();
  checkpoint = await trainer.save();
  trainer.close();
});

async function withEngine<T>(options: EngineLoadOptions, fn: (engine: Engine) => Promise<T>): Promise<T> {
  const engine = await Engine.load(checkpoint, options);
  try {
    return await fn(engine);
  } finally {
    await engine.close();
  }
}

function prompts(count: number): number[][] {
  // mixed lengths (2..~70 tokens), some sharing a long common prefix (prefix-cache hits)
  const shared = byteTokenizer.encode('The film was a quiet study of grief and of the people who ');
  return Array.from({ length: count }, (_, i) => {
    const text = corpusText[i % corpusText.length].slice(i * 7 % 50, (i * 7 % 50) + 2 + ((i * 13) % 60));
    const ids = byteTokenizer.encode(text.length >= 2 ? text : 'ab');
    return i % 4 === 0 ? [...shared, ...ids.slice(0, 5)] : ids;
  });
}

test('greedy decoding through the engine equals the recompute oracle for 200 tokens', async () => {
  const prompt = byteTokenizer.encode('The film was');
  const model = loadModel(checkpoint);
  const oracle = await generateTokens(model, prompt, { maxTokens: 200, temperature: 0 });
  model.dispose();
  await withEngine({}, async (engine) => {
    const out = await engine.generate(prompt, { maxTokens: 200, temperature: 0, ignoreEos: true });
    assert.is(out.finishReason, 'length');
    assert.is(out.tokenIds.length, 200);
    const firstDiff = out.tokenIds.findIndex((t, i) => t !== oracle[i]);
    assert.is(firstDiff, -1, `engine and oracle differ first at token ${firstDiff}`);
    assert.is(out.usage.completionTokens, 200);
    assert.is(out.usage.promptTokens, prompt.length);
    assert.ok(out.timings.ttftMs > 0 && out.timings.totalMs >= out.timings.ttftMs && out.timings.tpotMs > 0);
    assert.is(engine.stats().kvBlocksUsed, 0);
  });
});

/**
 * What a run gives: the tokens and the model's log-probability of each (compared exactly, so
 * a difference in the last bit of any logit, not only a changed token, fails the comparison).
 */
function outcome(c: Completion): string[] {
  return c.tokenIds.map((t, i) => `${t}:${c.logprobs![i].logprob}`);
}

/** Each prompt alone (one at a time, no prefix cache): the reference. */
async function alone(list: number[][], params: (i: number) => SamplingParams): Promise<string[][]> {
  return withEngine({ prefixCaching: false }, async (engine) => {
    const out: string[][] = [];
    for (let i = 0; i < list.length; i++) out.push(outcome(await engine.generate(list[i], params(i))));
    return out;
  });
}

/** All prompts through one engine: half at once, the rest joining while the first decode. */
async function together(engine: Engine, list: number[][], params: (i: number) => SamplingParams): Promise<string[][]> {
  const half = Math.floor(list.length / 2);
  const first = list.slice(0, half).map((p, i) => engine.generate(p, params(i)));
  // join mid-flight: once a few iterations have run
  while (engine.stats().iterations < 3) await new Promise((r) => setTimeout(r, 1));
  const second = list.slice(half).map((p, i) => engine.generate(p, params(half + i)));
  return (await Promise.all([...first, ...second])).map(outcome);
}

const greedy = (i: number): SamplingParams => ({ maxTokens: 8 + (i % 5) * 6, temperature: 0, ignoreEos: true, logprobs: 0 });
const seeded = (i: number): SamplingParams => ({ maxTokens: 8 + (i % 4) * 7, temperature: 0.9, topK: 40, topP: 0.95, seed: 1000 + i, ignoreEos: true, logprobs: 0 });

test('32 sequences batched (joining and leaving mid-flight) give exactly the tokens they give alone', async () => {
  const list = prompts(32);
  for (const params of [greedy, seeded]) {
    const reference = await alone(list, params);
    await withEngine({ maxBatchTokens: 256 }, async (engine) => {
      const batched = await together(engine, list, params);
      for (let i = 0; i < list.length; i++) assert.equal(batched[i], reference[i], `sequence ${i} (${params === greedy ? 'greedy' : 'seeded'})`);
      const s = engine.stats();
      assert.is(s.kvBlocksUsed, 0, 'every block returned');
      assert.is(s.requestsFinished, 32);
      assert.ok(s.prefixCacheHits > 0, 'the shared prefix was served from the cache');
    });
  }
});

test('preemption, chunked prefill and prefix-cache hits change no output; blocks all return', async () => {
  const list = prompts(12);
  const reference = await alone(list, greedy);
  // a KV budget far below what 12 sequences need at once: the newest are preempted and recomputed
  await withEngine({ kvCacheBlocks: 26, blockSize: 4 }, async (engine) => {
    const out = await Promise.all(list.map((p, i) => engine.generate(p, greedy(i))));
    out.forEach((c, i) => assert.equal(outcome(c), reference[i], `sequence ${i} under preemption`));
    const s = engine.stats();
    assert.ok(s.requestsPreempted > 0, 'sequences were preempted');
    assert.is(s.kvBlocksUsed, 0);
  });
  // a 5-token budget: every prompt is prefilled in chunks next to running decodes
  await withEngine({ maxBatchTokens: 5, blockSize: 4 }, async (engine) => {
    const out = await Promise.all(list.map((p, i) => engine.generate(p, greedy(i))));
    out.forEach((c, i) => assert.equal(outcome(c), reference[i], `sequence ${i} with chunked prefill`));
    assert.is(engine.stats().kvBlocksUsed, 0);
  });
  // the same prompts again, one by one: served from the prefix cache
  await withEngine({ blockSize: 4 }, async (engine) => {
    for (let i = 0; i < list.length; i++) await engine.generate(list[i], greedy(i));
    for (let i = 0; i < list.length; i++) {
      const again = await engine.generate(list[i], greedy(i));
      assert.equal(outcome(again), reference[i], `sequence ${i} from the prefix cache`);
      if (list[i].length > 4) assert.ok(again.usage.cachedTokens > 0, `sequence ${i} hit the cache`);
      assert.is(engine.stats().kvBlocksUsed, 0);
    }
    assert.ok(engine.stats().prefixCacheHitRate > 0.3);
  });
});

test('bad input is a typed error and the engine keeps serving', async () => {
  await withEngine({ maxQueuedRequests: 2 }, async (engine) => {
    await assertKilnError(() => engine.generate(''), 'ERR_ARG');
    await assertKilnError(() => engine.generate([]), 'ERR_ARG');
    await assertKilnError(() => engine.generate([1, 2, 256]), 'ERR_ARG');
    await assertKilnError(() => engine.generate([1, -1]), 'ERR_ARG');
    await assertKilnError(() => engine.generate([1, 2.5]), 'ERR_ARG');
    await assertKilnError(() => engine.generate(42 as unknown as string), 'ERR_ARG');
    await assertKilnError(() => engine.generate(new Array(256).fill(65)), 'ERR_ARG');
    for (const params of [
      { temperature: -1 }, { topP: 0 }, { topK: 1.5 }, { minP: 2 }, { maxTokens: 0 }, { logprobs: 21 }, { seed: 'x' }, { nope: 1 },
      { stopStrings: [''] }, { stopTokenIds: [999] }, { repetitionPenalty: 0 }, { temperature: Number.NaN },
    ]) {
      await assertKilnError(() => engine.generate('hi', params as SamplingParams), 'ERR_ARG');
    }
    assert.throws(() => engine.stream(''), (e: Error & { code?: string }) => e.code === 'ERR_ARG');
    // a full queue: two wait, the third is refused
    const running = [engine.generate('ab', { maxTokens: 4 }), engine.generate('cd', { maxTokens: 4 })];
    await assertKilnError(() => engine.generate('ef', { maxTokens: 4 }), 'ERR_BUSY');
    await Promise.all(running);
    const after = await engine.generate('The film', { maxTokens: 5, temperature: 0 });
    assert.is(after.tokenIds.length, 5);
    assert.is(engine.stats().kvBlocksUsed, 0);
  });
  await assertKilnError(() => Engine.load(checkpoint, { blockSize: 0 }), 'ERR_ARG');
  await assertKilnError(() => Engine.load(checkpoint, { maxBatchTokens: 1e9 }), 'ERR_ARG');
  await assertKilnError(() => Engine.load(checkpoint, { computeDType: 'f16' as 'f32' }), 'ERR_ARG');
  await assertKilnError(() => Engine.load(checkpoint, { bogus: 1 } as EngineLoadOptions), 'ERR_ARG');
  await assertKilnError(() => Engine.load(join(root, 'missing')), 'ERR_CHECKPOINT');
  await assertKilnError(() => Engine.load(checkpoint, { device: 'cuda:0' }), process.env.KILN_CUDA_SERVING === '1' ? 'ERR_NO_CUDA' : 'ERR_DEVICE');
});

async function collect(stream: AsyncIterable<TokenEvent | StreamEnd>): Promise<{ events: TokenEvent[]; end: StreamEnd }> {
  const events: TokenEvent[] = [];
  for await (const e of stream) {
    if ('done' in e) return { events, end: e };
    events.push(e);
  }
  throw new Error('stream ended without its summary');
}

test('streams: deltas add up to the completion, stop strings never leak, abort ends the stream', async () => {
  await withEngine({}, async (engine) => {
    const params = { maxTokens: 60, temperature: 0, ignoreEos: true };
    const full = await engine.generate('The film was', params);
    const { events, end } = await collect(engine.stream('The film was', params));
    assert.is(events.map((e) => e.text).join('') + end.text, full.text);
    assert.equal(events.map((e) => e.tokenId), full.tokenIds);
    assert.equal(events.map((e) => e.index), full.tokenIds.map((_, i) => i));
    assert.is(full.text, byteTokenizer.decode(full.tokenIds));
    // a stop string from the middle of the greedy text: output ends right before it
    const stop = full.text.slice(20, 23);
    const cut = full.text.indexOf(stop);
    const stopped = await collect(engine.stream('The film was', { ...params, stopStrings: [stop, 'zzzzqq'] }));
    const streamed = stopped.events.map((e) => e.text).join('') + stopped.end.text;
    assert.is(stopped.end.finishReason, 'stop');
    assert.is(streamed, full.text.slice(0, cut));
    for (const e of stopped.events) assert.not.ok(e.text.includes(stop));
    // logprobs: the chosen token is the most likely under greedy
    const lp = await engine.generate('The film was', { maxTokens: 4, temperature: 0, logprobs: 3 });
    assert.is(lp.logprobs!.length, 4);
    for (const [i, l] of lp.logprobs!.entries()) {
      assert.is(l.token, lp.tokenIds[i]);
      assert.is(l.top.length, 3);
      assert.is(l.top[0].token, l.token);
      assert.ok(l.logprob <= 0 && Math.abs(l.logprob - l.top[0].logprob) < 1e-9);
      assert.ok(l.top[0].logprob >= l.top[1].logprob && l.top[1].logprob >= l.top[2].logprob);
    }
    // abort mid-stream
    const controller = new AbortController();
    const seen: TokenEvent[] = [];
    let last: StreamEnd | undefined;
    for await (const e of engine.stream('The film was', { maxTokens: 200, ignoreEos: true }, { signal: controller.signal })) {
      if ('done' in e) last = e;
      else if (seen.push(e) === 3) controller.abort();
    }
    assert.is(last?.finishReason, 'abort');
    assert.ok(seen.length >= 3 && seen.length < 200);
    assert.is(engine.stats().kvBlocksUsed, 0, 'the aborted request freed its blocks');
    // an already-aborted signal and a reader that stops early
    const pre = await engine.generate('x', { maxTokens: 50 }, { signal: AbortSignal.abort() });
    assert.is(pre.finishReason, 'abort');
    for await (const e of engine.stream('The', { maxTokens: 100, ignoreEos: true })) if (!('done' in e) && e.index === 2) break;
    await new Promise((r) => setTimeout(r, 20));
    assert.is(engine.stats().kvBlocksUsed, 0);
    assert.is(engine.stats().running + engine.stats().waiting, 0);
  });
});

test('onRequestFinished, stats, close(drain) finishes work and close(cancel) aborts it', async () => {
  const engine = await Engine.load(checkpoint, {});
  const records: string[] = [];
  const off = engine.onRequestFinished((r) => records.push(`${r.finishReason}:${r.completionTokens}:${r.interTokenMs.length}`));
  const a = engine.generate('one', { maxTokens: 6, temperature: 0, ignoreEos: true });
  const b = engine.generate('two', { maxTokens: 6, temperature: 0, ignoreEos: true });
  await engine.close('drain');
  assert.equal((await a).tokenIds.length, 6);
  assert.equal((await b).tokenIds.length, 6);
  assert.equal(records, ['length:6:5', 'length:6:5']);
  off();
  await assertKilnError(() => engine.generate('late'), 'ERR_DISPOSED');
  const cancelled = await Engine.load(checkpoint, {});
  const pending = cancelled.generate('three', { maxTokens: 200, ignoreEos: true });
  await new Promise((r) => setTimeout(r, 5));
  await cancelled.close('cancel');
  assert.is((await pending).finishReason, 'abort');
  const s = cancelled.stats();
  assert.is(s.kvBlocksUsed, 0);
  assert.ok(s.generationTokensTotal < 200);
});

test('steady-state iterations allocate no tensor memory (planned buffers and views)', async () => {
  await withEngine({}, async (engine) => {
    await engine.generate('The film was', { maxTokens: 8, temperature: 0, ignoreEos: true });
    const before = memoryStats('cpu').allocations;
    await engine.generate('The film was', { maxTokens: 30, temperature: 0.7, ignoreEos: true, seed: 2 });
    assert.is(memoryStats('cpu').allocations - before, 0);
  });
});

test('the loop leaves the event loop free: other callbacks run between iterations', async () => {
  await withEngine({}, async (engine) => {
    let ticks = 0;
    let running = true;
    const tick = () => {
      ticks++;
      if (running) setImmediate(tick);
    };
    setImmediate(tick);
    const out = await engine.generate('The film was', { maxTokens: 40, temperature: 0, ignoreEos: true });
    running = false;
    assert.is(out.tokenIds.length, 40);
    assert.ok(ticks >= 40, `only ${ticks} event-loop turns during 40 iterations`);
  });
});

test('kiln generate streams through the engine and reports tokens/s', async () => {
  const cli = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'lib', 'cli', 'cli.js');
  const r = spawnSync(process.execPath, [cli, 'generate', '--checkpoint', join(root, 'run'), '--prompt', 'The film was', '--tokens', '40', '--temperature', '0'], { encoding: 'utf8' });
  assert.is(r.status, 0, r.stderr);
  const expected = await withEngine({}, (engine) => engine.generate('The film was', { maxTokens: 40, temperature: 0 }));
  assert.is(r.stdout, `The film was${expected.text}`);
  assert.match(r.stderr, /\d+ tokens in [\d.]+ s: [\d.]+ tokens\/s/);
  const bad = spawnSync(process.execPath, [cli, 'generate', '--checkpoint', join(root, 'run'), '--prompt', 'The', '--top-p', '2'], { encoding: 'utf8' });
  assert.is(bad.status, 1);
  assert.match(bad.stderr, /ERR_ARG/);
});

test.run();
