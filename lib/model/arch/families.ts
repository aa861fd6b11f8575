/**
 * The families kiln runs, each declared once: LLaMA (1, 2, 3.x), Qwen2/2.5 (q/k/v biases) and
 * Qwen3 (per-head q/k RMSNorm). They share the decoder skeleton (layout.ts) and differ in their
 * LayerFeatures and config.json fields; each refuses, naming the field, what kiln does not
 * implement (sliding-window attention, other biases, other activations).
 */
import { describe, fail } from '../../errors.js';
import type { ModelConfig } from '../config.js';
import { readRopeScaling, writeRopeScaling } from './rope_scaling.js';
import type { Architecture } from './types.js';

/** The config.json fields every family shares (HF names), read into ModelConfig's. */
function readCommon(h: Record<string, unknown>, defaults: { ropeTheta?: number; normEps?: number; headDim?: number }): Record<string, unknown> {
  if (h.hidden_act !== undefined && h.hidden_act !== 'silu') fail('ERR_CHECKPOINT', `config.json hidden_act is ${describe(h.hidden_act)}: kiln's MLP is SwiGLU (silu)`);
  if (h.mlp_bias === true) fail('ERR_CHECKPOINT', 'config.json mlp_bias is true: kiln\'s MLP has no biases');
  const heads = h.num_attention_heads as number;
  const out: Record<string, unknown> = {
    vocabSize: h.vocab_size,
    dModel: h.hidden_size,
    layers: h.num_hidden_layers,
    heads,
    kvHeads: h.num_key_value_heads ?? heads,
    headDim: h.head_dim ?? defaults.headDim ?? (h.hidden_size as number) / heads,
    ffn: h.intermediate_size,
    context: h.max_position_embeddings,
    ropeTheta: h.rope_theta ?? defaults.ropeTheta,
    normEps: h.rms_norm_eps ?? defaults.normEps,
    tiedEmbeddings: h.tie_word_embeddings,
  };
  const scaling = readRopeScaling(h.rope_scaling);
  if (scaling) out.ropeScaling = scaling;
  return out;
}

function writeCommon(c: ModelConfig, arch: Architecture): Record<string, unknown> {
  return {
    architectures: [arch.hfArchitectures[0]],
    model_type: arch.modelType,
    vocab_size: c.vocabSize,
    hidden_size: c.dModel,
    intermediate_size: c.ffn,
    num_hidden_layers: c.layers,
    num_attention_heads: c.heads,
    num_key_value_heads: c.kvHeads,
    head_dim: c.headDim,
    max_position_embeddings: c.context,
    rms_norm_eps: c.normEps,
    rope_theta: c.ropeTheta,
    ...(c.ropeScaling ? { rope_scaling: writeRopeScaling(c.ropeScaling) } : {}),
    tie_word_embeddings: c.tiedEmbeddings,
    hidden_act: 'silu',
  };
}

function refuseSlidingWindow(h: Record<string, unknown>): void {
  if (h.use_sliding_window === true) fail('ERR_CHECKPOINT', 'config.json use_sliding_window is true: kiln implements full causal attention only (set it false, or use a model without sliding windows)');
}

export const llama: Architecture = {
  modelType: 'llama',
  hfArchitectures: ['LlamaForCausalLM'],
  features: { qkvBias: false, qkNorm: false },
  gguf: 'llama',
  readConfig(h) {
    // transformers' LlamaConfig attention_bias puts biases on q, k, v and o alike: not a family kiln declares
    if (h.attention_bias === true) fail('ERR_CHECKPOINT', 'config.json attention_bias is true: kiln\'s llama has no attention biases (Qwen2\'s q/k/v biases are model_type qwen2)');
    return readCommon(h, {});
  },
  writeConfig(c, dtype) {
    return { ...writeCommon(c, llama), attention_bias: false, mlp_bias: false, torch_dtype: dtype };
  },
};

export const qwen2: Architecture = {
  modelType: 'qwen2',
  hfArchitectures: ['Qwen2ForCausalLM'],
  features: { qkvBias: true, qkNorm: false },
  readConfig(h) {
    refuseSlidingWindow(h);
    return readCommon(h, { ropeTheta: 10000, normEps: 1e-6 });
  },
  writeConfig(c, dtype) {
    return { ...writeCommon(c, qwen2), use_sliding_window: false, torch_dtype: dtype };
  },
};

export const qwen3: Architecture = {
  modelType: 'qwen3',
  hfArchitectures: ['Qwen3ForCausalLM'],
  features: { qkvBias: false, qkNorm: true },
  readConfig(h) {
    refuseSlidingWindow(h);
    if (h.attention_bias === true) fail('ERR_CHECKPOINT', 'config.json attention_bias is true: kiln\'s qwen3 has no attention biases');
    return readCommon(h, { ropeTheta: 10000, normEps: 1e-6, headDim: 128 });
  },
  writeConfig(c, dtype) {
    return { ...writeCommon(c, qwen3), attention_bias: false, use_sliding_window: false, torch_dtype: dtype };
  },
};
