/**
 * Iteration-level scheduling (Orca / vLLM style continuous batching).
 *
 * Each iteration, under a budget of `maxBatchTokens` tokens:
 *   1. every running sequence that is decoding gets its one token (oldest first); when its next
 *      token needs a new KV block and none is left, the newest running sequence is preempted
 *      (its blocks freed, it goes back to the queue in arrival order and is recomputed later from
 *      its prompt and the tokens it already generated: nothing is lost);
 *   2. running sequences still prefilling get their next chunk;
 *   3. queued sequences are admitted first come, first served while there is budget, a free
 *      running slot and KV blocks for their whole current length; the first that does not fit
 *      stops admission (no overtaking). A newcomer first takes the full blocks of its prefix
 *      that the prefix cache holds, and prefills only the rest, in chunks of the budget left.
 * A sequence's tokens are its prompt plus the tokens generated so far; `computed` of them have
 * K/V in its blocks. It samples when an iteration processes its last token.
 */
import type { KvBlockPool } from './kv_cache.js';
import { blockHash } from './kv_cache.js';

export interface SequenceState {
  /** arrival order (FCFS; preempted sequences return to the queue at their place) */
  order: number;
  tokens: number[];
  promptLength: number;
  /** tokens whose K/V is in the cache */
  computed: number;
  /** physical KV block of each logical block */
  blocks: number[];
  /** chain hash of each full block whose hash is known (published or taken from the cache) */
  hashes: string[];
  status: 'waiting' | 'running' | 'done';
  /** prompt tokens served from the prefix cache at the first admission */
  cachedTokens: number;
  admittedOnce: boolean;
  preemptions: number;
}

export interface ScheduledChunk {
  seq: SequenceState;
  start: number;
  count: number;
  /** the chunk ends at the sequence's last token: its logits are sampled */
  sample: boolean;
}

export interface SchedulerOptions {
  maxBatchTokens: number;
  maxRunningSequences: number;
}

export interface Schedule {
  chunks: ScheduledChunk[];
  /** sequences that can never fit the KV cache again (finish them with 'length') */
  unfit: SequenceState[];
  preempted: number;
}

export class Scheduler {
  readonly waiting: SequenceState[] = [];
  readonly running: SequenceState[] = [];
  preemptions = 0;

  constructor(private readonly pool: KvBlockPool, private readonly options: SchedulerOptions) {}

  get hasWork(): boolean {
    return this.waiting.length > 0 || this.running.length > 0;
  }

  add(seq: SequenceState): void {
    seq.status = 'waiting';
    this.insertWaiting(seq);
  }

  private insertWaiting(seq: SequenceState): void {
    let i = this.waiting.length;
    while (i > 0 && this.waiting[i - 1].order > seq.order) i--;
    this.waiting.splice(i, 0, seq);
  }

  /** Takes a sequence out (finished or cancelled) and frees its blocks at once. */
  remove(seq: SequenceState): void {
    if (seq.status === 'done') return;
    const list = seq.status === 'waiting' ? this.waiting : this.running;
    const at = list.indexOf(seq);
    if (at >= 0) list.splice(at, 1);
    this.pool.release(seq.blocks);
    seq.blocks = [];
    seq.hashes = [];
    seq.computed = 0;
    seq.status = 'done';
  }

  private preempt(seq: SequenceState): void {
    const at = this.running.indexOf(seq);
    if (at >= 0) this.running.splice(at, 1);
    this.pool.release(seq.blocks);
    seq.blocks = [];
    seq.hashes = [];
    seq.computed = 0;
    seq.preemptions++;
    this.preemptions++;
    seq.status = 'waiting';
    this.insertWaiting(seq);
  }

  schedule(): Schedule {
    const bs = this.pool.blockSize;
    const chunks: ScheduledChunk[] = [];
    const unfit: SequenceState[] = [];
    let budget = this.options.maxBatchTokens;
    let preempted = 0;
    // 1. decodes, oldest first
    for (let i = 0; i < this.running.length && budget > 0; i++) {
      const seq = this.running[i];
      if (seq.tokens.length - seq.computed !== 1) continue;
      let fits = true;
      while (Math.floor(seq.computed / bs) >= seq.blocks.length) {
        const block = this.pool.allocate();
        if (block !== undefined) {
          seq.blocks.push(block);
          break;
        }
        const victim = this.running[this.running.length - 1];
        if (victim === seq && this.running.length === 1) {
          // alone and still out of blocks: this sequence alone outgrew the cache
          this.remove(seq);
          unfit.push(seq);
          fits = false;
          break;
        }
        this.preempt(victim);
        preempted++;
        if (victim === seq) {
          fits = false;
          break;
        }
      }
      if (!fits) {
        i--; // the list shrank at i
        continue;
      }
      chunks.push({ seq, start: seq.computed, count: 1, sample: true });
      budget--;
    }
    // 2. prefills already under way
    for (const seq of this.running) {
      if (budget <= 0) break;
      const remaining = seq.tokens.length - seq.computed;
      if (remaining <= 1) continue;
      const count = Math.min(remaining, budget);
      chunks.push({ seq, start: seq.computed, count, sample: seq.computed + count === seq.tokens.length });
      budget -= count;
    }
    // 3. admissions, first come first served
    while (this.waiting.length && budget > 0 && this.running.length < this.options.maxRunningSequences) {
      const seq = this.waiting[0];
      const needed = Math.ceil(seq.tokens.length / bs);
      if (needed > this.pool.numBlocks) {
        this.waiting.shift();
        seq.status = 'running'; // so remove() finds nothing to unlink
        this.running.push(seq);
        this.remove(seq);
        unfit.push(seq);
        continue;
      }
      // never the whole sequence from the cache: its last token must run to give logits
      const prefix = this.pool.acquirePrefix(seq.tokens, Math.floor((seq.tokens.length - 1) / bs));
      const fresh = this.pool.allocateMany(needed - prefix.blocks.length);
      if (!fresh) {
        this.pool.release(prefix.blocks);
        break;
      }
      this.waiting.shift();
      seq.blocks = [...prefix.blocks, ...fresh];
      seq.hashes = prefix.hashes;
      seq.computed = prefix.blocks.length * bs;
      if (!seq.admittedOnce) {
        seq.admittedOnce = true;
        seq.cachedTokens = seq.computed;
        this.pool.recordQuery(seq.promptLength, seq.computed);
      }
      seq.status = 'running';
      this.running.push(seq);
      const count = Math.min(seq.tokens.length - seq.computed, budget);
      chunks.push({ seq, start: seq.computed, count, sample: seq.computed + count === seq.tokens.length });
      budget -= count;
    }
    return { chunks, unfit, preempted };
  }

  /** After an iteration ran: the chunks' K/V is in the cache; publish the blocks that became full. */
  commit(chunks: readonly ScheduledChunk[]): void {
    const bs = this.pool.blockSize;
    for (const { seq, start, count } of chunks) {
      if (seq.status !== 'running' || seq.computed !== start) continue; // cancelled or preempted meanwhile
      seq.computed = start + count;
      if (!this.pool.prefixCaching) continue;
      const full = Math.floor(seq.computed / bs);
      for (let b = seq.hashes.length; b < full; b++) {
        const hash = blockHash(b === 0 ? '' : seq.hashes[b - 1], seq.tokens.slice(b * bs, (b + 1) * bs));
        seq.hashes.push(hash);
        this.pool.publish(seq.blocks[b], hash);
      }
    }
  }
}
