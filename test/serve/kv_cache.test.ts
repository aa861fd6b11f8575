/** The KV block pool on its own (lib/serve/kv_cache.ts): allocation, reference counts, and the prefix cache's chained hashes and LRU eviction. */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { KvBlockPool, kvBytesPerToken } from '../../lib/serve/kv_cache.js';

const test = suite('serve: KV block pool');

test('KV pool: allocation, reference counts, prefix hits, LRU eviction of cached blocks', () => {
  assert.is(kvBytesPerToken(24, 8, 128, 2), 98304); // the 1.4b preset in bf16: 24 layers x 8 KV heads x 128 dims x (K and V) x 2 bytes
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

test.run();
