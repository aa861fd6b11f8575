/**
 * The paged KV cache's bookkeeping: a fixed pool of blocks (each holds `blockSize` tokens of K
 * and V for every layer), reference counts, and the prefix cache. The tensors themselves live
 * in the model runner ((numBlocks, blockSize, kvHeads, headDim) per layer for K and for V); this
 * file never touches them.
 *
 * Prefix caching (as in vLLM's automatic prefix caching): a block that is full is published
 * under a hash of its tokens chained with the hash of every block before it, so the same tokens
 * after a different prefix never match. A later request whose prompt starts with the same full
 * blocks takes them (reference count + 1) instead of recomputing them. A published block whose
 * last user left stays cached and evictable; when the free list is empty, the least recently
 * released cached block is evicted (its hash forgotten) and reused.
 *
 * Sizing: bytes per token = 2 (K and V) · layers · kvHeads · headDim · dtype bytes.
 */
import { createHash } from 'node:crypto';
import { fail } from '../errors.js';

export function kvBytesPerToken(layers: number, kvHeads: number, headDim: number, dtypeBytes: number): number {
  return 2 * layers * kvHeads * headDim * dtypeBytes;
}

/** Hash of a full block: its tokens chained after the previous block's hash. */
export function blockHash(previous: string, tokens: ArrayLike<number>): string {
  const h = createHash('sha256');
  h.update(previous);
  h.update(Buffer.from(Int32Array.from(tokens as ArrayLike<number>).buffer));
  return h.digest('base64');
}

export class KvBlockPool {
  readonly numBlocks: number;
  readonly blockSize: number;
  readonly prefixCaching: boolean;
  private readonly refCount: Int32Array;
  private readonly hashOf: (string | undefined)[];
  /** blocks with no user and no published content (a stack: the most recently freed is reused first) */
  private readonly free: number[];
  /** published blocks with no user, least recently released first (Map keeps insertion order) */
  private readonly evictable = new Map<number, true>();
  private readonly byHash = new Map<string, number>();
  /** prefix-cache lookups, in tokens: asked for and found */
  queriedTokens = 0;
  hitTokens = 0;

  constructor(numBlocks: number, blockSize: number, prefixCaching = true) {
    if (!Number.isSafeInteger(numBlocks) || numBlocks < 1) fail('ERR_ARG', `the KV cache needs at least one block, got ${numBlocks}`);
    if (!Number.isSafeInteger(blockSize) || blockSize < 1) fail('ERR_ARG', `blockSize must be a positive integer, got ${blockSize}`);
    this.numBlocks = numBlocks;
    this.blockSize = blockSize;
    this.prefixCaching = prefixCaching;
    this.refCount = new Int32Array(numBlocks);
    this.hashOf = new Array<string | undefined>(numBlocks).fill(undefined);
    this.free = Array.from({ length: numBlocks }, (_, i) => numBlocks - 1 - i);
  }

  /** Blocks an allocation can take now (free + evictable cached ones). */
  get available(): number {
    return this.free.length + this.evictable.size;
  }

  /** Blocks held by at least one sequence. */
  get used(): number {
    return this.numBlocks - this.available;
  }

  /** Blocks holding published prefix content (in use or evictable). */
  get cached(): number {
    return this.byHash.size;
  }

  /** One block with reference count 1, or undefined when none is left. */
  allocate(): number | undefined {
    let id = this.free.pop();
    if (id === undefined) {
      const oldest = this.evictable.keys().next();
      if (oldest.done) return undefined;
      id = oldest.value;
      this.evictable.delete(id);
      this.byHash.delete(this.hashOf[id]!);
      this.hashOf[id] = undefined;
    }
    this.refCount[id] = 1;
    return id;
  }

  /** `count` blocks, or undefined (and nothing taken) when fewer are available. */
  allocateMany(count: number): number[] | undefined {
    if (count > this.available) return undefined;
    const out: number[] = [];
    for (let i = 0; i < count; i++) out.push(this.allocate()!);
    return out;
  }

  /** Drops one reference from each block; a block nobody holds becomes free (or evictable when published). */
  release(blocks: readonly number[]): void {
    for (const id of blocks) {
      if (this.refCount[id] <= 0) fail('ERR_INTERNAL', `KV block ${id} released more often than taken`);
      if (--this.refCount[id] > 0) continue;
      if (this.hashOf[id] !== undefined) this.evictable.set(id, true);
      else this.free.push(id);
    }
  }

  /**
   * The cached blocks that hold the longest run of full blocks at the start of `tokens`
   * (at most `maxBlocks` of them), each taken (reference + 1), with their chain hashes.
   */
  acquirePrefix(tokens: readonly number[], maxBlocks: number): { blocks: number[]; hashes: string[] } {
    const blocks: number[] = [];
    const hashes: string[] = [];
    if (!this.prefixCaching) return { blocks, hashes };
    const bs = this.blockSize;
    let previous = '';
    for (let b = 0; b < maxBlocks && (b + 1) * bs <= tokens.length; b++) {
      const hash = blockHash(previous, tokens.slice(b * bs, (b + 1) * bs));
      const id = this.byHash.get(hash);
      if (id === undefined) break;
      if (this.refCount[id] === 0) this.evictable.delete(id);
      this.refCount[id]++;
      blocks.push(id);
      hashes.push(hash);
      previous = hash;
    }
    return { blocks, hashes };
  }

  /** Publishes a full block's content under its chain hash (no-op when that content is already published). */
  publish(id: number, hash: string): void {
    if (!this.prefixCaching || this.hashOf[id] !== undefined || this.byHash.has(hash)) return;
    this.hashOf[id] = hash;
    this.byHash.set(hash, id);
  }

  /** Records a prefix-cache query of `queried` prompt tokens of which `hit` were found. */
  recordQuery(queried: number, hit: number): void {
    this.queriedTokens += queried;
    this.hitTokens += hit;
  }

  /** Reference count of a block (tests). */
  references(id: number): number {
    return this.refCount[id];
  }
}
