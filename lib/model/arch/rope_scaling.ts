/**
 * Rotary scaling as Hugging Face's rope_scaling describes it, and the per-dimension-pair inverse
 * frequencies it gives (transformers' modeling_rope_utils):
 *   default: inv_freq_j = base^(-2j/D)
 *   linear:  inv_freq_j / factor  (positions stretched by the factor)
 *   llama3:  wavelength λ_j = 2π / inv_freq_j; with L = original_max_position_embeddings,
 *            λ_j > L / low_freq_factor  -> inv_freq_j / factor   (long wavelengths slowed)
 *            λ_j < L / high_freq_factor -> inv_freq_j            (short wavelengths kept)
 *            else, s = (L / λ_j - low_freq_factor) / (high_freq_factor - low_freq_factor):
 *                      (1 - s) · inv_freq_j / factor + s · inv_freq_j
 * Neither type scales cos and sin (attention_factor 1).
 */
import { describe, fail } from '../../errors.js';

export type RopeScaling =
  | { type: 'linear'; factor: number }
  | { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalContext: number };

export const ROPE_TYPES = ['default', 'linear', 'llama3'] as const;

const positive = (v: unknown, what: string): number => {
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) fail('ERR_ARG', `${what} must be a positive number, got ${describe(v)}`);
  return v;
};

/** Checks a ModelConfig.ropeScaling (ERR_ARG naming the field). */
export function validateRopeScaling(s: unknown): RopeScaling {
  if (!s || typeof s !== 'object') fail('ERR_ARG', `config.ropeScaling must be an object, got ${describe(s)}`);
  const o = s as Record<string, unknown>;
  if (o.type === 'linear') return { type: 'linear', factor: positive(o.factor, 'config.ropeScaling.factor') };
  if (o.type === 'llama3') {
    const scaling: RopeScaling = {
      type: 'llama3',
      factor: positive(o.factor, 'config.ropeScaling.factor'),
      lowFreqFactor: positive(o.lowFreqFactor, 'config.ropeScaling.lowFreqFactor'),
      highFreqFactor: positive(o.highFreqFactor, 'config.ropeScaling.highFreqFactor'),
      originalContext: positive(o.originalContext, 'config.ropeScaling.originalContext'),
    };
    if (!(scaling.highFreqFactor > scaling.lowFreqFactor)) fail('ERR_ARG', 'config.ropeScaling.highFreqFactor must exceed lowFreqFactor');
    return scaling;
  }
  fail('ERR_ARG', `config.ropeScaling.type must be 'linear' or 'llama3', got ${describe(o.type)}`);
}

/** config.json rope_scaling -> ModelConfig.ropeScaling (undefined for none or 'default'). */
export function readRopeScaling(json: unknown): RopeScaling | undefined {
  if (json === undefined || json === null) return undefined;
  if (typeof json !== 'object') fail('ERR_CHECKPOINT', `config.json rope_scaling must be an object, got ${describe(json)}`);
  const o = json as Record<string, unknown>;
  // transformers reads rope_type, and type in configs written before it was renamed
  const type = o.rope_type ?? o.type;
  if (type === 'default') return undefined;
  if (type === 'linear') return { type, factor: o.factor as number };
  if (type === 'llama3') {
    return { type, factor: o.factor as number, lowFreqFactor: o.low_freq_factor as number, highFreqFactor: o.high_freq_factor as number, originalContext: o.original_max_position_embeddings as number };
  }
  fail('ERR_CHECKPOINT', `config.json rope_scaling.rope_type is ${describe(type)}: kiln implements ${ROPE_TYPES.join(', ')}`);
}

/** ModelConfig.ropeScaling -> config.json rope_scaling. */
export function writeRopeScaling(s: RopeScaling): Record<string, unknown> {
  if (s.type === 'linear') return { rope_type: 'linear', factor: s.factor };
  return {
    rope_type: 'llama3', factor: s.factor, low_freq_factor: s.lowFreqFactor, high_freq_factor: s.highFreqFactor, original_max_position_embeddings: s.originalContext,
  };
}

/** The inverse frequency of each dimension pair j < headDim/2, in f64. */
export function ropeInverseFrequencies(headDim: number, base: number, scaling?: RopeScaling): Float64Array {
  const half = headDim / 2;
  const inv = new Float64Array(half);
  for (let j = 0; j < half; j++) inv[j] = Math.pow(base, (-2 * j) / headDim);
  if (!scaling) return inv;
  if (scaling.type === 'linear') return inv.map((f) => f / scaling.factor);
  const { factor, lowFreqFactor, highFreqFactor, originalContext } = scaling;
  const lowFreqWavelength = originalContext / lowFreqFactor;
  const highFreqWavelength = originalContext / highFreqFactor;
  return inv.map((f) => {
    const wavelength = (2 * Math.PI) / f;
    if (wavelength > lowFreqWavelength) return f / factor;
    if (wavelength < highFreqWavelength) return f;
    const smooth = (originalContext / wavelength - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
    return (1 - smooth) * (f / factor) + smooth * f;
  });
}
