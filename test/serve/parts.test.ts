/**
 * The engine's parts on their own: the KV block pool and its prefix cache, the sampler's
 * filters and seeded draws, the incremental detokenizer (UTF-8 and stop strings), and the
 * batch-invariant matmul the model runner relies on.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { full, ops, randn } from '../../lib/index.js';
import { byteTokenizer } from '../../lib/data/tokenizer.js';
import { IncrementalDetokenizer } from '../../lib/serve/detokenizer.js';
import { KvBlockPool, kvBytesPerToken } from '../../lib/serve/kv_cache.js';
import { SequenceSampler, resolveSampling, topKIndices } from '../../lib/serve/sampler.js';
import { assertKilnError } from '../helpers.js';

const test = suite('serving parts');

test('KV pool: allocation, reference counts, prefix hits, LRU eviction of cached blocks', () => {
  assert.is(kvBytesPerToken(24, 8, 128, 2), 98304); // the 1.4b preset in bf16 (REFERENCE.md)
  const pool = new KvBlockPool(4, 2);
  const a = pool.allocateMany(3)!;
  assert.is(pool.available, 1);
  assert.is(pool.allocateMany(2), undefined, 'all or nothing');
  const b = pool.allocate()!;
  assert.is(pool.allocate(), undefined, 'empty');
  pool.release([b]);
  assert.is(pool.allocate(), b, 'a freed block is reused');
  pool.release([b]);
  pool.release(a);
  assert.is(pool.available, 4);
  assertKilnErrorSync(() => pool.release([a[0]]), 'ERR_INTERNAL');
});

function assertKilnErrorSync(fn: () => unknown, code: string): void {
  try {
    fn();
  } catch (e) {
    assert.is((e as { code?: string }).code, code);
    return;
  }
  assert.unreachable(`expected ${code}`);
}

test('prefix cache: full blocks chained by prefix are shared, evicted least recently used', async () => {
  const { blockHash } = await import('../../lib/serve/kv_cache.js');
  const pool = new KvBlockPool(3, 2);
  const seqA = pool.allocateMany(2)!; // tokens 1 2 | 3 4
  const hA0 = blockHash('', [1, 2]);
  const hA1 = blockHash(hA0, [3, 4]);
  pool.publish(seqA[0], hA0);
  pool.publish(seqA[1], hA1);
  assert.is(pool.cached, 2);
  // the same two tokens after a different prefix do not match
  assert.is.not(blockHash(blockHash('', [9, 9]), [3, 4]), hA1);
  const hit = pool.acquirePrefix([1, 2, 3, 4, 7], 2);
  assert.equal(hit.blocks, seqA);
  assert.equal(hit.hashes, [hA0, hA1]);
  assert.is(pool.references(seqA[0]), 2);
  const partial = pool.acquirePrefix([1, 2, 8, 8], 2);
  assert.equal(partial.blocks, [seqA[0]]);
  pool.release(partial.blocks);
  pool.release(hit.blocks);
  pool.release(seqA);
  assert.is(pool.used, 0);
  assert.is(pool.available, 3, 'cached blocks with no user are available');
  // evictable in release order: block seqA[0] was released last among the cached? both at once: [0] then [1]
  const fresh = pool.allocateMany(2)!; // the free block first, then the least recently released cached one
  assert.ok(fresh.includes(seqA[0]) !== fresh.includes(seqA[1]) || fresh.includes(seqA[0]));
  assert.is(pool.cached, 1, 'one cached block was evicted');
  pool.release(fresh);
  const noCache = new KvBlockPool(2, 2, false);
  const b = noCache.allocateMany(1)!;
  noCache.publish(b[0], hA0);
  assert.is(noCache.acquirePrefix([1, 2, 3], 1).blocks.length, 0);
  assertKilnErrorSync(() => new KvBlockPool(0, 16), 'ERR_ARG');
});

test('sampler: greedy, top-k, top-p, min-p, penalties and seeded reproducibility', async () => {
  const V = 8;
  const logits = () => Float32Array.from([1, 3, 2, 0.5, 3, -1, 2.5, 0]);
  const scratch = new Float32Array(V);
  const draw = (params: object, n = 400, prompt: number[] = []) => {
    const s = new SequenceSampler(resolveSampling({ seed: 7, ...params }, V), prompt);
    const counts = new Array(V).fill(0);
    for (let i = 0; i < n; i++) counts[s.sample(logits(), scratch).token]++;
    return counts;
  };
  assert.is(draw({ temperature: 0 }, 1).indexOf(1), 1, 'greedy takes the first of tied maxima');
  assert.equal(Array.from(topKIndices(logits(), 3)), [1, 4, 6]);
  const k2 = draw({ topK: 2 });
  assert.ok(k2[1] > 0 && k2[4] > 0 && k2[1] + k2[4] === 400, 'top-k 2 keeps ids 1 and 4');
  // top-p 0.5: ids 1 and 4 hold 2·e³/Σ ≈ 0.57 of the mass
  const p = draw({ topP: 0.5 });
  assert.is(p[1] + p[4], 400);
  const p2 = draw({ topP: 0.75 });
  assert.is(p2[1] + p2[4] + p2[6], 400, 'top-p 0.75 adds the next token');
  // min-p 0.5: keep p >= 0.5·p_max, i.e. logits >= 3 - ln 2 ≈ 2.31
  const m = draw({ minP: 0.5 });
  assert.is(m[1] + m[4] + m[6], 400);
  assert.ok(m[6] > 0);
  // a repetition penalty on ids 1 and 4 (seen in the prompt) hands greedy to id 6
  assert.is(draw({ temperature: 0, repetitionPenalty: 2 }, 1, [1, 4]).indexOf(1), 6);
  // presence penalty: greedy moves off each id it produced
  const s = new SequenceSampler(resolveSampling({ temperature: 0, presencePenalty: 2 }, V), []);
  const seq: number[] = [];
  for (let i = 0; i < 3; i++) {
    const t = s.sample(logits(), scratch).token;
    s.observe(t);
    seq.push(t);
  }
  assert.equal(seq, [1, 4, 6]);
  // the same seed, the same draws; another seed, other draws
  const one = draw({ temperature: 1 }, 50).join();
  assert.is(draw({ temperature: 1 }, 50).join(), one);
  assert.is.not(draw({ temperature: 1, seed: 8 }, 50).join(), one);
  // logprobs are the model's (before penalties), the top list sorted
  const lp = new SequenceSampler(resolveSampling({ temperature: 0, logprobs: 2, repetitionPenalty: 3 }, V), [1]).sample(logits(), scratch);
  const lse = Math.log(Array.from(logits()).reduce((a, l) => a + Math.exp(l), 0));
  assert.is(lp.token, 4);
  assert.ok(Math.abs(lp.logprob! - (3 - lse)) < 1e-6);
  assert.equal(lp.top!.map((t) => t.token), [1, 4]);
  await assertKilnError(() => resolveSampling({ topK: -1 }, V), 'ERR_ARG');
  await assertKilnError(() => resolveSampling({ stopTokenIds: [8] }, V), 'ERR_ARG');
});

test('sampling 50k-vocabulary rows is cheap next to the model', async () => {
  const V = 50304;
  const row = new Float32Array(V);
  for (let i = 0; i < V; i++) row[i] = Math.sin(i * 12.9898) * 8;
  const scratch = new Float32Array(V);
  const cost = (params: object) => {
    const s = new SequenceSampler(resolveSampling({ seed: 1, ...params }, V), []);
    const times: number[] = [];
    for (let i = 0; i < 25; i++) {
      const copy = row.slice();
      const started = performance.now();
      s.sample(copy, scratch);
      if (i >= 5) times.push(performance.now() - started); // after the JIT warmed up
    }
    return times.sort((a, b) => a - b)[times.length >> 1];
  };
  // The model, measured in the same run (an absolute bound in ms fails when other work shares the
  // cores): the classifier head's product of one 125m decode step, 768 x 50304, only a part of
  // what every decode step computes.
  const headMs = await (async () => {
    using x = randn([1, 768], { seed: 1 });
    using weight = full([768, V], 0.01); // the values do not change the time
    const times: number[] = [];
    for (let i = 0; i < 9; i++) {
      const started = performance.now();
      using logits = ops.matmul(x, weight);
      await logits.toArray();
      if (i >= 2) times.push(performance.now() - started); // after the first calls warmed up
    }
    return times.sort((a, b) => a - b)[times.length >> 1];
  })();
  const greedy = cost({ temperature: 0 });
  const topP = cost({ temperature: 0.8, topP: 0.9 });
  const topK = cost({ temperature: 0.8, topK: 40 });
  // the row is flat: a nucleus of thousands of tokens, a worst case
  for (const [name, ms] of [['greedy', greedy], ['top-p', topP], ['top-k', topK]] as const) {
    assert.ok(ms < headMs, `${name} sampling took ${ms.toFixed(2)} ms per row, the head's product of one decode step ${headMs.toFixed(2)} ms`);
  }
});

test('detokenizer: multi-byte characters split over byte tokens come out whole', () => {
  const text = 'héllo wörld — 漢字 🎉!';
  const d = new IncrementalDetokenizer(byteTokenizer, []);
  const deltas: string[] = [];
  for (const b of byteTokenizer.encode(text)) deltas.push(d.push(b));
  deltas.push(d.flush());
  for (const delta of deltas) assert.not.ok(delta.includes('\uFFFD'), `delta ${JSON.stringify(delta)}`);
  assert.is(deltas.join(''), text);
  assert.ok(deltas.filter((x) => x === '').length >= 6, 'partial characters were held');
  // a byte that never completes a character is released (as U+FFFD) after 4 tokens, not held forever
  const bad = new IncrementalDetokenizer(byteTokenizer, []);
  const out = [0xe6, 0x41, 0x42, 0x43, 0x44].map((b) => bad.push(b)).join('') + bad.flush();
  assert.is(out, Buffer.from([0xe6, 0x41, 0x42, 0x43, 0x44]).toString('utf8'));
});

test('detokenizer: stop strings are held back across tokens and never released', () => {
  const run = (text: string, stops: string[]) => {
    const d = new IncrementalDetokenizer(byteTokenizer, stops);
    const deltas: string[] = [];
    for (const b of byteTokenizer.encode(text)) {
      deltas.push(d.push(b));
      if (d.stopped) break;
    }
    if (!d.stopped) deltas.push(d.flush());
    return { deltas, stopped: d.stopped, text: deltas.join('') };
  };
  const r = run('one two ###END### three', ['###END###']);
  assert.ok(r.stopped);
  assert.is(r.text, 'one two ');
  for (const delta of r.deltas) assert.not.ok(delta.includes('#'), 'no part of the stop string leaked');
  // a false start is released once it can no longer become the stop string
  const f = run('a ##b ###END', ['###END']);
  assert.is(f.text, 'a ##b ');
  // the earliest of several stop strings wins; text without one is released whole at the end
  assert.is(run('xx STOP yy END', ['END', 'STOP']).text, 'xx ');
  assert.is(run('plain text', ['zz']).text, 'plain text');
  // a stop string made of multi-byte characters
  assert.is(run('café☕ and more', ['☕']).text, 'café');
});

test('batch-invariant matmul: each row is bit-identical whatever M is', async () => {
  const N = 70;
  for (const K of [96, 100, 7]) {
    // K = 100 and 7: a masked tail after the 16-wide steps
    const w = randn([N, K], { seed: 3 });
    const x = randn([40, K], { seed: 4 });
    const all = await ops.matmul(x, w, { transB: true, batchInvariant: true }).toArray();
    for (const M of [1, 2, 3, 5, 7, 8, 9, 17, 33]) {
      const part = await ops.matmul(x.slice(0, M), w, { transB: true, batchInvariant: true }).toArray();
      for (let i = 0; i < part.length; i++) if (part[i] !== all[i]) assert.unreachable(`K=${K} M=${M}: element ${i} differs (${part[i]} vs ${all[i]})`);
    }
    // and it is a correct matmul
    const ref = await ops.matmul(x, w, { transB: true, reference: true }).toArray();
    for (let i = 0; i < ref.length; i++) assert.ok(Math.abs(all[i] - ref[i]) <= 1e-4 * (1 + Math.abs(ref[i])), `K=${K} element ${i}: ${all[i]} vs ${ref[i]}`);
  }
  const K = 96;
  const w = randn([N, K], { seed: 3 });
  const x = randn([40, K], { seed: 4 });
  // the residual epilogue and bf16 inputs keep the property
  const xb = x.cast('bf16'), wb = w.cast('bf16');
  const res = randn([40, N], { seed: 5 }).cast('bf16');
  const allB = await ops.matmul(xb, wb, { transB: true, batchInvariant: true, epilogue: 'residual', residual: res, out: randn([40, N], { seed: 6 }).cast('bf16') }).toArray();
  const oneB = await ops.matmul(xb.slice(0, 1), wb, { transB: true, batchInvariant: true, epilogue: 'residual', residual: res.slice(0, 1), out: randn([1, N], { seed: 6 }).cast('bf16') }).toArray();
  for (let i = 0; i < N; i++) assert.is(oneB[i], allB[i]);
});

test.run();
