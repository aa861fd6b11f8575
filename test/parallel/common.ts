import type { ModelConfig } from '../../lib/model/config.js';
import type { Trainer } from '../../lib/train/trainer.js';

/** A model small enough that two ranks and their single-process references run in seconds. */
export const smallConfig = (base: ModelConfig): ModelConfig => ({ ...base, dModel: 64, layers: 2, heads: 4, kvHeads: 2, headDim: 16, ffn: 176, context: 64 });

/** Every parameter's values, in declaration order. */
export async function weightsOf(trainer: Trainer): Promise<number[]> {
  const out: number[] = [];
  for (const p of trainer.model.parameters) out.push(...((await p.value.toArray()) as Float32Array));
  return out;
}
