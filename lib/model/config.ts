/**
 * LLaMA-style model configuration and the presets (tiny, 125m, 350m, 760m, 1.4b). config.json is
 * read and written by the model's architecture declaration (lib/model/arch), so checkpoints load
 * in transformers unchanged.
 */
import { describe, fail } from '../errors.js';
import { type RopeScaling, validateRopeScaling } from './arch/rope_scaling.js';
import { type ModelLayout, architecture, architectureOfHfConfig, layoutParameters, modelLayout } from './arch/index.js';

export interface ModelConfig {
  vocabSize: number;
  dModel: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  ffn: number;
  context: number;
  ropeTheta: number;
  normEps: number;
  tiedEmbeddings: boolean;
  /** the architecture family, config.json's model_type (lib/model/arch; absent: llama) */
  arch?: string;
  /** rotary scaling (config.json rope_scaling; absent: plain RoPE) */
  ropeScaling?: RopeScaling;
}

const BASE = { ropeTheta: 10000, normEps: 1e-5, tiedEmbeddings: false };

export const PRESETS: Record<string, ModelConfig> = {
  // trains on a 2-core CPU in minutes: byte-level vocabulary, 4 layers, GQA 4/2
  tiny: { ...BASE, vocabSize: 256, dModel: 128, layers: 4, heads: 4, kvHeads: 2, headDim: 32, ffn: 352, context: 128 },
  '125m': { ...BASE, vocabSize: 50304, dModel: 768, layers: 12, heads: 12, kvHeads: 4, headDim: 64, ffn: 2048, context: 2048 },
  '350m': { ...BASE, vocabSize: 50304, dModel: 1024, layers: 24, heads: 16, kvHeads: 8, headDim: 64, ffn: 2816, context: 2048 },
  '760m': { ...BASE, vocabSize: 50304, dModel: 1536, layers: 24, heads: 12, kvHeads: 4, headDim: 128, ffn: 4096, context: 2048 },
  '1.4b': { ...BASE, vocabSize: 50304, dModel: 2048, layers: 24, heads: 16, kvHeads: 8, headDim: 128, ffn: 5632, context: 2048 },
};

export function preset(name: string): ModelConfig {
  const config = typeof name === 'string' && Object.hasOwn(PRESETS, name) ? PRESETS[name] : undefined;
  if (!config) fail('ERR_ARG', `unknown preset ${describe(name)} (known: ${Object.keys(PRESETS).join(', ')})`);
  return { ...config };
}

/** Checks a (possibly user-written) config; every failure is ERR_ARG naming the field. */
export function validateConfig(c: unknown): ModelConfig {
  if (!c || typeof c !== 'object') fail('ERR_ARG', 'model config must be an object');
  const o = c as Record<string, unknown>;
  const positive = (name: keyof ModelConfig) => {
    const v = o[name];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) fail('ERR_ARG', `config.${name} must be a positive integer, got ${describe(v)}`);
    return v;
  };
  const config: ModelConfig = {
    vocabSize: positive('vocabSize'),
    dModel: positive('dModel'),
    layers: positive('layers'),
    heads: positive('heads'),
    kvHeads: positive('kvHeads'),
    headDim: positive('headDim'),
    ffn: positive('ffn'),
    context: positive('context'),
    ropeTheta: typeof o.ropeTheta === 'number' ? o.ropeTheta : BASE.ropeTheta,
    normEps: typeof o.normEps === 'number' ? o.normEps : BASE.normEps,
    tiedEmbeddings: typeof o.tiedEmbeddings === 'boolean' ? o.tiedEmbeddings : false,
  };
  // the optional fields appear only when given, so a plain LLaMA config stays the object it was
  if (o.arch !== undefined && o.arch !== 'llama') config.arch = architecture({ arch: o.arch as string }).modelType;
  if (o.ropeScaling !== undefined) config.ropeScaling = validateRopeScaling(o.ropeScaling);
  // Sizes a model can have: beyond these a constructor would allocate for hours (or forever)
  // before failing, so they are refused here, for configs and checkpoints alike.
  for (const name of ['dModel', 'heads', 'kvHeads', 'headDim', 'ffn'] as const) {
    if (config[name] > MAX_DIM) fail('ERR_ARG', `config.${name} = ${config[name]} is beyond ${MAX_DIM}`);
  }
  if (config.layers > MAX_LAYERS) fail('ERR_ARG', `config.layers = ${config.layers} is beyond ${MAX_LAYERS}`);
  if (config.context > MAX_CONTEXT) fail('ERR_ARG', `config.context = ${config.context} is beyond ${MAX_CONTEXT}`);
  if (!Number.isFinite(config.ropeTheta)) fail('ERR_ARG', 'config.ropeTheta must be finite');
  if (config.heads % config.kvHeads !== 0) fail('ERR_ARG', `config.kvHeads (${config.kvHeads}) must divide config.heads (${config.heads})`);
  if (config.headDim % 2 !== 0) fail('ERR_ARG', 'config.headDim must be even (rotary embedding)');
  if (config.vocabSize > 2 ** 31 - 1) fail('ERR_ARG', 'config.vocabSize must fit in i32');
  if (!(config.ropeTheta > 1)) fail('ERR_ARG', 'config.ropeTheta must be > 1');
  if (!(config.normEps > 0 && config.normEps < 1)) fail('ERR_ARG', 'config.normEps must be in (0, 1)');
  const total = totalParametersOf(config);
  if (!(total <= MAX_PARAMETERS)) fail('ERR_ARG', `the config has ${total} parameters, more than kiln allows (2^40)`);
  return config;
}

/** Bounds validateConfig enforces (far above any model kiln targets, far below a hang). */
export const MAX_DIM = 2 ** 20;
export const MAX_LAYERS = 4096;
export const MAX_CONTEXT = 2 ** 24;
export const MAX_PARAMETERS = 2 ** 40;

/** Parameters used in matmuls (all but the input embedding; the head counts unless tied). */
export function matmulParameters(config: ModelConfig): number {
  return matmulParametersOf(validateConfig(config));
}

function matmulParametersOf(c: ModelConfig): number {
  let n = c.vocabSize * c.dModel; // the head (the embedding table when tied)
  for (const layer of modelLayout(c).layers) for (const p of layer) if (p.kind === 'matrix') n += numel(p.shape);
  return n;
}

export function totalParameters(config: ModelConfig): number {
  return totalParametersOf(validateConfig(config));
}

function totalParametersOf(c: ModelConfig): number {
  return layoutParameters(modelLayout(c)).reduce((n, p) => n + numel(p.shape), 0);
}

const numel = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/** The parameters of a model with this config, as its architecture declares them (names, shapes, kinds, HF and GGUF tensors). */
export function parameterLayout(config: ModelConfig): ModelLayout {
  return modelLayout(validateConfig(config));
}

/** Training FLOPs per token: 6·N + 12·L·H·Q·T (PaLM appendix B; attention counted dense). */
export function trainingFlopsPerToken(config: ModelConfig, seqLen: number): number {
  const c = validateConfig(config);
  if (typeof seqLen !== 'number' || !Number.isSafeInteger(seqLen) || seqLen < 0) fail('ERR_ARG', `seqLen must be a non-negative integer, got ${describe(seqLen)}`);
  return 6 * matmulParametersOf(c) + 12 * c.layers * c.heads * c.headDim * seqLen;
}


/** The Hugging Face config.json of this model, as its architecture writes it. */
export function toHfConfig(config: ModelConfig, dtype = 'float32'): Record<string, unknown> {
  const c = validateConfig(config);
  if (typeof dtype !== 'string') fail('ERR_ARG', `dtype must be a string, got ${describe(dtype)}`);
  return architecture(c).writeConfig(c, dtype);
}

/** A config.json read by the architecture it names (model_type; ERR_CHECKPOINT naming the field it refuses). */
export function fromHfConfig(json: unknown): ModelConfig {
  if (!json || typeof json !== 'object') fail('ERR_CHECKPOINT', 'config.json is not an object');
  const h = json as Record<string, unknown>;
  const arch = architectureOfHfConfig(h);
  const fields = arch.readConfig(h);
  try {
    return validateConfig(arch.modelType === 'llama' ? fields : { ...fields, arch: arch.modelType });
  } catch (error) {
    fail('ERR_CHECKPOINT', `config.json: ${(error as Error).message}`);
  }
}
