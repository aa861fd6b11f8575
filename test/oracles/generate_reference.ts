/**
 * The reference decoder the serving engine is tested against: greedy, temperature and top-k
 * sampling (seeded, its own RNG and defaults). Each new token runs the full model forward over
 * the window of the last `context` tokens, with no KV cache, so it shares no code with the
 * engine's paged-KV decode (ops.attentionDecode) and greedy outputs must agree token for token.
 */
import { describe, fail } from '../../lib/errors.js';
import { tensor } from '../../lib/tensor.js';
import { LlamaModel } from '../../lib/model/llama.js';

export interface SampleOptions {
  maxTokens?: number;
  /** 0 = greedy (default 0.8) */
  temperature?: number;
  /** keep the k most likely tokens (0 = all; default 40) */
  topK?: number;
  seed?: number;
  /** token id that ends generation */
  stopToken?: number;
}

/** The most tokens one generateTokens call produces. */
export const MAX_GENERATED_TOKENS = 2 ** 20;

export async function generateTokens(model: LlamaModel, prompt: number[], options: SampleOptions = {}): Promise<number[]> {
  if (!(model instanceof LlamaModel)) fail('ERR_ARG', `model must be a LlamaModel, got ${describe(model)}`);
  if (!Array.isArray(prompt) || !prompt.every((id) => typeof id === 'number' && Number.isSafeInteger(id) && id >= 0 && id < model.config.vocabSize)) {
    fail('ERR_ARG', 'prompt must be an array of token ids below the vocabulary size');
  }
  if (!options || typeof options !== 'object') fail('ERR_ARG', `options must be an object, got ${describe(options)}`);
  const { maxTokens = 100, temperature = 0.8, topK = 40, seed = 0 } = options;
  if (!prompt.length) fail('ERR_ARG', 'the prompt encodes to no tokens');
  if (typeof temperature !== 'number' || typeof seed !== 'number' || !Number.isFinite(seed)) fail('ERR_ARG', 'temperature and seed must be numbers');
  if (!(temperature >= 0) || !Number.isInteger(topK) || topK < 0 || !Number.isInteger(maxTokens) || maxTokens < 0) {
    fail('ERR_ARG', 'temperature must be >= 0, topK and maxTokens non-negative integers');
  }
  // one call generates at most 2^20 tokens: beyond that a typo (2 ** 31) would run for days
  if (maxTokens > MAX_GENERATED_TOKENS) fail('ERR_ARG', `maxTokens ${maxTokens} is beyond ${MAX_GENERATED_TOKENS} tokens per call`);
  let state = (seed >>> 0) || 0x9e3779b9;
  const random = () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 4294967296;
  };
  const ids = [...prompt];
  const V = model.config.vocabSize;
  for (let n = 0; n < maxTokens; n++) {
    const window = ids.slice(-model.config.context);
    using input = tensor(Int32Array.from(window), { shape: [1, window.length], device: model.device });
    using logits = model.forward(input, false);
    const all = await logits.toArray();
    const last = Array.from(all.subarray((window.length - 1) * V, window.length * V));
    let next: number;
    if (temperature === 0) {
      next = last.indexOf(Math.max(...last));
    } else {
      const order = last.map((l, i) => [l / temperature, i] as [number, number]).sort((a, b) => b[0] - a[0]);
      const kept = topK > 0 ? order.slice(0, topK) : order;
      const max = kept[0][0];
      const weights = kept.map(([l]) => Math.exp(l - max));
      let r = random() * weights.reduce((a, b) => a + b, 0);
      next = kept[kept.length - 1][1];
      for (let i = 0; i < kept.length; i++) {
        r -= weights[i];
        if (r <= 0) {
          next = kept[i][1];
          break;
        }
      }
    }
    ids.push(next);
    if (next === options.stopToken) break;
  }
  return ids.slice(prompt.length);
}
