/**
 * The iteration-level scheduler on its own (lib/serve/scheduler.ts): a real KV block pool, no
 * model. What one iteration schedules under the token budget (decodes first, then prefills under
 * way, then FCFS admissions), chunked prefill, prefix-cache hits, preemption of the newest
 * sequence when the pool runs dry, and sequences that can never fit.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { KvBlockPool } from '../../lib/serve/kv_cache.js';
import { type ScheduledChunk, Scheduler, type SequenceState } from '../../lib/serve/scheduler.js';

const test = suite('serve: scheduler');

let arrivals = 0;
function sequence(prompt: number[]): SequenceState {
  return {
    order: arrivals++, tokens: [...prompt], promptLength: prompt.length, computed: 0, blocks: [], hashes: [],
    status: 'waiting', cachedTokens: 0, admittedOnce: false, preemptions: 0,
  };
}

const range = (n: number, from = 0) => Array.from({ length: n }, (_, i) => from + i);
const view = (chunks: readonly ScheduledChunk[]) => chunks.map((c) => [c.seq.order, c.start, c.count, c.sample]);

/** Runs one iteration: schedule, "compute" the chunks, commit, and append a token to each sampled sequence. */
function iterate(s: Scheduler) {
  const schedule = s.schedule();
  s.commit(schedule.chunks);
  for (const c of schedule.chunks) if (c.sample) c.seq.tokens.push(1000 + c.seq.tokens.length);
  return schedule;
}

test('admission is first come, first served under the token budget; long prompts prefill in chunks', () => {
  const pool = new KvBlockPool(16, 4, false);
  const s = new Scheduler(pool, { maxBatchTokens: 8, maxRunningSequences: 4 });
  const a = sequence(range(6));
  const b = sequence(range(5, 100));
  const c = sequence(range(3, 200));
  s.add(a); s.add(b); s.add(c);
  // iteration 1: a's whole prompt (6), then b's first 2 tokens; c waits (no budget left)
  let r = iterate(s);
  assert.equal(view(r.chunks), [[a.order, 0, 6, true], [b.order, 0, 2, false]]);
  assert.equal(s.running, [a, b]);
  assert.equal(s.waiting, [c]);
  assert.is(a.blocks.length, 2, 'blocks for its whole current length');
  // iteration 2: a decodes (1), b finishes its prefill (3), c is admitted with what is left (3 of 3)
  r = iterate(s);
  assert.equal(view(r.chunks), [[a.order, 6, 1, true], [b.order, 2, 3, true], [c.order, 0, 3, true]]);
  assert.equal(s.waiting, []);
  assert.is(r.preempted, 0);
});

test('the running-sequence limit and a pool without room stop admission without overtaking', () => {
  const pool = new KvBlockPool(3, 4, false);
  const s = new Scheduler(pool, { maxBatchTokens: 64, maxRunningSequences: 2 });
  const big = sequence(range(9)); // 3 blocks: the whole pool
  const small = sequence(range(2)); // would fit the budget, but comes later
  s.add(big); s.add(small);
  let r = iterate(s);
  assert.equal(view(r.chunks), [[big.order, 0, 9, true]]);
  assert.equal(s.waiting, [small], 'no KV blocks left: small waits although the budget has room');
  // limit of running sequences
  const pool2 = new KvBlockPool(16, 4, false);
  const s2 = new Scheduler(pool2, { maxBatchTokens: 64, maxRunningSequences: 1 });
  const x = sequence(range(2));
  const y = sequence(range(2));
  s2.add(x); s2.add(y);
  r = iterate(s2);
  assert.equal(view(r.chunks), [[x.order, 0, 2, true]]);
  assert.equal(s2.waiting, [y]);
  s2.remove(x);
  assert.is(x.status, 'done');
  assert.is(pool2.available, 16, 'a removed sequence frees its blocks at once');
  r = iterate(s2);
  assert.equal(view(r.chunks), [[y.order, 0, 2, true]]);
});

test('out of blocks while decoding: the newest sequence is preempted, requeued in arrival order and recomputed', () => {
  const pool = new KvBlockPool(4, 2, false);
  const s = new Scheduler(pool, { maxBatchTokens: 64, maxRunningSequences: 4 });
  const older = sequence(range(3)); // 2 blocks
  const newer = sequence(range(3, 50)); // 2 blocks
  s.add(older); s.add(newer);
  iterate(s); // both prefilled and sampled one token: 4 tokens each, computed 3
  assert.is(pool.available, 0);
  // both decode at position 3: it fits the second block (positions 2-3) of each
  let r = iterate(s);
  assert.equal(view(r.chunks), [[older.order, 3, 1, true], [newer.order, 3, 1, true]]);
  // position 4 needs a third block for each: the pool is dry, so the newest goes back to the queue
  r = iterate(s);
  assert.is(r.preempted, 1);
  assert.is(newer.status, 'waiting');
  assert.is(newer.preemptions, 1);
  assert.is(newer.computed, 0, 'its K/V is dropped and recomputed later');
  assert.equal(newer.tokens.length, 5, 'the tokens it generated are kept');
  assert.equal(view(r.chunks), [[older.order, 4, 1, true]]);
  assert.equal(s.waiting, [newer]);
  // once the older one finishes, the preempted one is readmitted and recomputes prompt + generated tokens
  s.remove(older);
  r = iterate(s);
  assert.equal(view(r.chunks), [[newer.order, 0, 5, true]]);
  assert.is(s.preemptions, 1);
});

test('a sequence that can never fit the KV cache is reported unfit, not retried forever', () => {
  const pool = new KvBlockPool(2, 2, false);
  const s = new Scheduler(pool, { maxBatchTokens: 64, maxRunningSequences: 4 });
  const huge = sequence(range(5)); // needs 3 blocks of 2
  const ok = sequence(range(2));
  s.add(huge); s.add(ok);
  let r = s.schedule();
  assert.equal(r.unfit, [huge]);
  assert.is(huge.status, 'done');
  assert.equal(view(r.chunks), [[ok.order, 0, 2, true]], 'the next in line is admitted in the same iteration');
  s.commit(r.chunks);
  ok.tokens.push(7);
  // alone and growing past the pool while decoding: unfit too
  const grow = new Scheduler(new KvBlockPool(1, 2, false), { maxBatchTokens: 8, maxRunningSequences: 1 });
  const g = sequence(range(1));
  grow.add(g);
  iterate(grow); // prefill 1 token, sample: 2 tokens
  iterate(grow); // decode position 1: still block 0
  r = iterate(grow); // position 2 needs block 1: none, and it is alone
  assert.equal(r.unfit, [g]);
  assert.is(grow.hasWork, false);
});

test('prefix caching: a newcomer takes the cached full blocks of its prefix and prefills the rest', () => {
  const pool = new KvBlockPool(8, 2, true);
  const s = new Scheduler(pool, { maxBatchTokens: 64, maxRunningSequences: 4 });
  const first = sequence([1, 2, 3, 4, 5]);
  s.add(first);
  iterate(s); // computes 5 tokens: blocks [1,2] and [3,4] are full and published
  const second = sequence([1, 2, 3, 4, 9, 9]);
  s.add(second);
  const r = iterate(s);
  const chunk = r.chunks.find((c) => c.seq === second)!;
  assert.is(second.cachedTokens, 4, 'two full blocks from the cache');
  assert.equal([chunk.start, chunk.count], [4, 2], 'only the tail is prefilled');
  assert.equal(second.blocks.slice(0, 2), first.blocks.slice(0, 2), 'the same physical blocks');
  // the whole prompt is never served from the cache: its last token must run to give logits
  const third = sequence([1, 2, 3, 4]);
  s.add(third);
  iterate(s);
  assert.is(third.cachedTokens, 2, 'only the first block: the last token must run');
});

test.run();
