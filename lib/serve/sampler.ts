/**
 * Per-sequence sampling on one row of logits (a Float32Array of the vocabulary), in JS.
 *
 * Order (as vLLM): penalties (repetition over prompt and output tokens, HF style: a positive
 * logit is divided by the penalty, a negative one multiplied; presence and frequency over output
 * tokens, OpenAI style: l -= frequency·count + presence·[count > 0]) → greedy argmax when
 * temperature is 0 (ties: the lowest id) → temperature → top-k → top-p → min-p → one draw from
 * the sequence's own seeded generator. The generator belongs to the request, so a seed gives the
 * same tokens whatever else shares the batch.
 *
 * Cost: one pass over the vocabulary for the max and one for exp(); top-k keeps a k-heap instead
 * of sorting the vocabulary, and top-p sorts only the tokens above a probability threshold that
 * is lowered until they hold the nucleus (exact: the nucleus is made of the most likely tokens).
 * Log-probabilities (when asked) are the model's: log-softmax of the logits before penalties and
 * temperature.
 */
import { fail } from '../errors.js';
import type { SamplingParams } from './types.js';

export interface ResolvedSampling {
  maxTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  presencePenalty: number;
  frequencyPenalty: number;
  repetitionPenalty: number;
  seed: number;
  stopTokenIds: number[];
  stopStrings: string[];
  ignoreEos: boolean;
  logprobs: number;
}

const KNOWN = new Set([
  'maxTokens', 'temperature', 'topK', 'topP', 'minP', 'presencePenalty', 'frequencyPenalty', 'repetitionPenalty', 'seed',
  'stopTokenIds', 'stopStrings', 'ignoreEos', 'logprobs',
]);

/** Checks the request's parameters (ERR_ARG naming the field) and fills in the defaults. */
export function resolveSampling(params: SamplingParams | undefined, vocabSize: number): ResolvedSampling {
  if (params === undefined || params === null) params = {};
  if (typeof params !== 'object') fail('ERR_ARG', 'sampling params must be an object');
  for (const key of Object.keys(params)) if (!KNOWN.has(key)) fail('ERR_ARG', `unknown sampling parameter '${key}'`);
  const p = params as Record<string, unknown>;
  const num = (name: string, dflt: number, ok: (v: number) => boolean, what: string): number => {
    const v = p[name];
    if (v === undefined) return dflt;
    if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v)) fail('ERR_ARG', `${name} must be ${what}, got ${String(v)}`);
    return v;
  };
  const int = (name: string, dflt: number, lo: number, hi: number): number =>
    num(name, dflt, (v) => Number.isSafeInteger(v) && v >= lo && v <= hi, `an integer in [${lo}, ${hi}]`);
  const seedValue = p.seed;
  let seed: number;
  if (seedValue === undefined) seed = (Math.random() * 2 ** 32) >>> 0;
  else if (typeof seedValue === 'number' && Number.isSafeInteger(seedValue)) seed = seedValue;
  else fail('ERR_ARG', `seed must be an integer, got ${String(seedValue)}`);
  const stopTokenIds = p.stopTokenIds ?? [];
  if (!Array.isArray(stopTokenIds) || stopTokenIds.some((t) => !Number.isSafeInteger(t) || t < 0 || t >= vocabSize)) {
    fail('ERR_ARG', `stopTokenIds must be token ids in [0, ${vocabSize})`);
  }
  const stopStrings = p.stopStrings ?? [];
  if (!Array.isArray(stopStrings) || stopStrings.some((s) => typeof s !== 'string' || s.length === 0)) fail('ERR_ARG', 'stopStrings must be non-empty strings');
  if (p.ignoreEos !== undefined && typeof p.ignoreEos !== 'boolean') fail('ERR_ARG', 'ignoreEos must be a boolean');
  const logprobs = p.logprobs === undefined ? -1 : int('logprobs', 0, 0, 20);
  return {
    maxTokens: int('maxTokens', 16, 1, 2 ** 31 - 1),
    temperature: num('temperature', 1, (v) => v >= 0 && v <= 100, 'a number in [0, 100]'),
    topK: int('topK', 0, 0, 2 ** 31 - 1),
    topP: num('topP', 1, (v) => v > 0 && v <= 1, 'a number in (0, 1]'),
    minP: num('minP', 0, (v) => v >= 0 && v <= 1, 'a number in [0, 1]'),
    presencePenalty: num('presencePenalty', 0, (v) => v >= -2 && v <= 2, 'a number in [-2, 2]'),
    frequencyPenalty: num('frequencyPenalty', 0, (v) => v >= -2 && v <= 2, 'a number in [-2, 2]'),
    repetitionPenalty: num('repetitionPenalty', 1, (v) => v > 0 && v <= 10, 'a number in (0, 10]'),
    seed,
    stopTokenIds: [...(stopTokenIds as number[])],
    stopStrings: [...(stopStrings as string[])],
    ignoreEos: (p.ignoreEos as boolean | undefined) ?? false,
    logprobs,
  };
}

const BUCKETS_PER_NAT = 32;
const NUM_BUCKETS = 48 * BUCKETS_PER_NAT; // weights below e^-48 share the last bucket
let buckets = new Uint16Array(0);
function bucketScratch(n: number): Uint16Array {
  if (buckets.length < n) buckets = new Uint16Array(n);
  return buckets;
}

/** A small fast seeded generator (mulberry32 over a 64-bit seed folded to 32): uniform in [0, 1). */
export function seededRandom(seed: number): () => number {
  let state = (Math.floor(seed / 2 ** 32) ^ seed ^ 0x6d2b79f5) >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface Sampled {
  token: number;
  /** log-probability of the token under the model (when logprobs were asked) */
  logprob?: number;
  top?: { token: number; logprob: number }[];
}

/** Indices of the k largest values of row (k < row.length), largest first (ties: lower id first). */
export function topKIndices(row: Float32Array, k: number): Int32Array {
  // a min-heap of (value, index) holding the best k so far; the root is the weakest
  const heapV = new Float64Array(k);
  const heapI = new Int32Array(k);
  let size = 0;
  const weaker = (va: number, ia: number, vb: number, ib: number) => va < vb || (va === vb && ia > ib);
  const siftDown = (i: number) => {
    for (;;) {
      const l = 2 * i + 1, r = l + 1;
      let m = i;
      if (l < size && weaker(heapV[l], heapI[l], heapV[m], heapI[m])) m = l;
      if (r < size && weaker(heapV[r], heapI[r], heapV[m], heapI[m])) m = r;
      if (m === i) return;
      const tv = heapV[i], ti = heapI[i];
      heapV[i] = heapV[m], heapI[i] = heapI[m];
      heapV[m] = tv, heapI[m] = ti;
      i = m;
    }
  };
  for (let i = 0; i < row.length; i++) {
    const v = row[i];
    if (size < k) {
      let j = size++;
      heapV[j] = v, heapI[j] = i;
      while (j > 0) {
        const parent = (j - 1) >> 1;
        if (!weaker(heapV[j], heapI[j], heapV[parent], heapI[parent])) break;
        const tv = heapV[j], ti = heapI[j];
        heapV[j] = heapV[parent], heapI[j] = heapI[parent];
        heapV[parent] = tv, heapI[parent] = ti;
        j = parent;
      }
    } else if (v > heapV[0]) {
      // (indices only grow, so an equal value never beats the root: ties keep the lower id)
      heapV[0] = v, heapI[0] = i;
      siftDown(0);
    }
  }
  const order = Array.from({ length: size }, (_, j) => j).sort((a, b) => heapV[b] - heapV[a] || heapI[a] - heapI[b]);
  return Int32Array.from(order, (j) => heapI[j]);
}

function logSumExp(row: Float32Array): number {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i] > max) max = row[i];
  if (max === -Infinity) return -Infinity;
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += Math.exp(row[i] - max);
  return max + Math.log(sum);
}

/** One sequence's sampler: its parameters, its generator and the token counts the penalties need. */
export class SequenceSampler {
  private readonly random: () => number;
  private readonly counts = new Map<number, number>();
  private readonly seen = new Set<number>();
  private readonly penalized: boolean;

  constructor(readonly params: ResolvedSampling, prompt: readonly number[]) {
    this.random = seededRandom(params.seed);
    this.penalized = params.repetitionPenalty !== 1 || params.presencePenalty !== 0 || params.frequencyPenalty !== 0;
    if (params.repetitionPenalty !== 1) for (const t of prompt) this.seen.add(t);
  }

  /** Counts an output token (penalties). */
  observe(token: number): void {
    if (!this.penalized) return;
    this.counts.set(token, (this.counts.get(token) ?? 0) + 1);
    if (this.params.repetitionPenalty !== 1) this.seen.add(token);
  }

  /** Samples from `row` (the vocabulary's logits; modified in place by the penalties). `scratch` has row's length. */
  sample(row: Float32Array, scratch: Float32Array): Sampled {
    const p = this.params;
    const V = row.length;
    let rawLse = 0;
    let top: { token: number; logprob: number }[] | undefined;
    let saved: Map<number, number> | undefined;
    if (p.logprobs >= 0) {
      rawLse = logSumExp(row);
      if (p.logprobs > 0) top = Array.from(topKIndices(row, Math.min(p.logprobs, V)), (t) => ({ token: t, logprob: row[t] - rawLse }));
      if (this.penalized) saved = new Map();
    }
    if (this.penalized) this.applyPenalties(row, saved);
    const token = p.temperature === 0 ? argmax(row) : this.draw(row, scratch);
    const result: Sampled = { token };
    if (p.logprobs >= 0) {
      result.logprob = (saved?.get(token) ?? row[token]) - rawLse;
      if (top) result.top = top;
    }
    return result;
  }

  private applyPenalties(row: Float32Array, saved: Map<number, number> | undefined): void {
    const p = this.params;
    const keep = (t: number) => {
      if (saved && !saved.has(t)) saved.set(t, row[t]);
    };
    if (p.repetitionPenalty !== 1) {
      for (const t of this.seen) {
        keep(t);
        const l = row[t];
        row[t] = l > 0 ? l / p.repetitionPenalty : l * p.repetitionPenalty;
      }
    }
    if (p.presencePenalty !== 0 || p.frequencyPenalty !== 0) {
      for (const [t, n] of this.counts) {
        keep(t);
        row[t] -= p.frequencyPenalty * n + p.presencePenalty;
      }
    }
  }

  /** Temperature, top-k, top-p, min-p, then one draw. */
  private draw(row: Float32Array, scratch: Float32Array): number {
    const p = this.params;
    const V = row.length;
    const invT = 1 / p.temperature;
    // candidates: the top-k ids (largest first) or the whole vocabulary
    const candidates = p.topK > 0 && p.topK < V ? topKIndices(row, p.topK) : undefined;
    const n = candidates ? candidates.length : V;
    const id = candidates ? (j: number) => candidates[j] : (j: number) => j;
    let max = -Infinity;
    if (candidates) max = row[candidates[0]];
    else for (let j = 0; j < n; j++) if (row[j] > max) max = row[j];
    // scratch[j]: unnormalized probability of candidate j (the most likely has weight 1)
    let total = 0;
    let kept: Int32Array | undefined; // positions j into the candidates, in drawing order
    if (p.topP < 1 && !candidates) {
      // the nucleus without sorting the vocabulary: bucket the weights by -log w (BUCKETS_PER_NAT
      // buckets per nat, disjoint ranges, larger weights in lower buckets), find the bucket where
      // the mass crosses topP, and sort only that bucket's tokens (exact, ties by id as a full sort)
      const buckets = bucketScratch(n);
      const mass = new Float64Array(NUM_BUCKETS);
      for (let j = 0; j < n; j++) {
        const z = (row[j] - max) * invT;
        const w = (scratch[j] = Math.exp(z));
        total += w;
        const b = Math.min(NUM_BUCKETS - 1, Math.floor(-z * BUCKETS_PER_NAT));
        buckets[j] = b;
        mass[b] += w;
      }
      const target = p.topP * total;
      let before = 0;
      let crossing = 0;
      while (crossing < NUM_BUCKETS - 1 && before + mass[crossing] < target) before += mass[crossing++];
      const out: number[] = [];
      const edge: number[] = [];
      for (let j = 0; j < n; j++) {
        if (buckets[j] < crossing) out.push(j);
        else if (buckets[j] === crossing) edge.push(j);
      }
      edge.sort((a, b) => scratch[b] - scratch[a] || a - b);
      let cumulative = before;
      for (let e = 0; e < edge.length && (out.length === 0 || cumulative < target); e++) {
        out.push(edge[e]);
        cumulative += scratch[edge[e]];
      }
      kept = Int32Array.from(out);
    } else {
      if (candidates) for (let j = 0; j < n; j++) total += scratch[j] = Math.exp((row[candidates[j]] - max) * invT);
      else for (let j = 0; j < n; j++) total += scratch[j] = Math.exp((row[j] - max) * invT);
      if (p.topP < 1) {
        // top-k candidates come largest first
        const target = p.topP * total;
        let cumulative = 0;
        let count = 0;
        while (count < n && (count === 0 || cumulative < target)) cumulative += scratch[count++];
        kept = Int32Array.from({ length: count }, (_, j) => j);
      }
    }
    if (p.minP > 0) {
      // relative to the most likely token (weight 1)
      const source = kept ?? Int32Array.from({ length: n }, (_, j) => j);
      kept = source.filter((j) => scratch[j] >= p.minP);
    }
    let mass = 0;
    if (kept) for (const j of kept) mass += scratch[j];
    else mass = total;
    let u = this.random() * mass;
    if (kept) {
      for (const j of kept) if ((u -= scratch[j]) < 0) return id(j);
      return id(kept[kept.length - 1]);
    }
    let j = 0;
    for (; j < n; j++) if ((u -= scratch[j]) < 0) break;
    // rounding can leave u >= 0 after the last weight: take the last token with any weight
    while (j >= n || scratch[j] === 0) j--;
    return id(j);
  }
}

export function argmax(row: Float32Array): number {
  let best = 0;
  let bestValue = row[0];
  for (let i = 1; i < row.length; i++) {
    if (row[i] > bestValue) {
      bestValue = row[i];
      best = i;
    }
  }
  return best;
}
