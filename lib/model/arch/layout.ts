/**
 * The parameters of a LLaMA-style decoder (LLaMA, Qwen2, Qwen3 share the skeleton; a family's
 * LayerFeatures add the q/k/v biases or the q/k norms). Declaration order is the init order (one
 * random stream per parameter) and the optimizer-state order, so existing LLaMA checkpoints and
 * seeds keep their meaning: new parameters only appear where a feature asks for them.
 *
 * Stored layout: every parameter is one HF tensor under its own name, except gateUp, kiln's
 * (2·ffn, d) fusion of gate_proj (rows [0, ffn)) and up_proj (rows [ffn, 2·ffn)).
 */
import type { ModelConfig } from '../config.js';
import type { GlobalRole, LayerFeatures, LayerRole, ModelLayout, ParameterKind, ParameterSpec } from './types.js';

export function decoderLayout(c: ModelConfig, features: LayerFeatures): ModelLayout {
  const qDim = c.heads * c.headDim;
  const kvDim = c.kvHeads * c.headDim;
  const spec = <R extends string>(
    role: R, name: string, shape: number[], kind: ParameterKind, gguf: string | undefined, extra: Partial<ParameterSpec<R>> = {}, ropeHeads?: number,
  ): ParameterSpec<R> => {
    const init = kind === 'norm' ? 'ones' : kind === 'bias' ? 'zeros' : 'normal';
    const hf = { name, shape, ...(gguf ? { gguf } : {}), ...(ropeHeads ? { ggufRopeHeads: ropeHeads } : {}) };
    return { role, name, shape, kind, init, hf: [hf], ...extra };
  };
  const layers: ParameterSpec<LayerRole>[][] = [];
  for (let i = 0; i < c.layers; i++) {
    const p = `model.layers.${i}`;
    const b = `blk.${i}`;
    const layer: ParameterSpec<LayerRole>[] = [
      spec('inputNorm', `${p}.input_layernorm.weight`, [c.dModel], 'norm', `${b}.attn_norm.weight`),
      spec('q', `${p}.self_attn.q_proj.weight`, [qDim, c.dModel], 'matrix', `${b}.attn_q.weight`, {}, c.heads),
      spec('k', `${p}.self_attn.k_proj.weight`, [kvDim, c.dModel], 'matrix', `${b}.attn_k.weight`, {}, c.kvHeads),
      spec('v', `${p}.self_attn.v_proj.weight`, [kvDim, c.dModel], 'matrix', `${b}.attn_v.weight`),
    ];
    if (features.qkvBias) {
      layer.push(
        spec('qBias', `${p}.self_attn.q_proj.bias`, [qDim], 'bias', undefined),
        spec('kBias', `${p}.self_attn.k_proj.bias`, [kvDim], 'bias', undefined),
        spec('vBias', `${p}.self_attn.v_proj.bias`, [kvDim], 'bias', undefined),
      );
    }
    if (features.qkNorm) {
      layer.push(
        spec('qNorm', `${p}.self_attn.q_norm.weight`, [c.headDim], 'norm', undefined),
        spec('kNorm', `${p}.self_attn.k_norm.weight`, [c.headDim], 'norm', undefined),
      );
    }
    layer.push(
      spec('o', `${p}.self_attn.o_proj.weight`, [c.dModel, qDim], 'matrix', `${b}.attn_output.weight`, { residualInit: true }),
      spec('postNorm', `${p}.post_attention_layernorm.weight`, [c.dModel], 'norm', `${b}.ffn_norm.weight`),
      {
        role: 'gateUp', name: `${p}.mlp.gate_up_proj.weight`, shape: [2 * c.ffn, c.dModel], kind: 'matrix', init: 'normal',
        hf: [
          { name: `${p}.mlp.gate_proj.weight`, shape: [c.ffn, c.dModel], rows: [0, c.ffn], gguf: `${b}.ffn_gate.weight` },
          { name: `${p}.mlp.up_proj.weight`, shape: [c.ffn, c.dModel], rows: [c.ffn, 2 * c.ffn], gguf: `${b}.ffn_up.weight` },
        ],
      },
      spec('down', `${p}.mlp.down_proj.weight`, [c.dModel, c.ffn], 'matrix', `${b}.ffn_down.weight`, { residualInit: true }),
    );
    layers.push(layer);
  }
  const layout: ModelLayout = {
    embed: spec<GlobalRole>('embed', 'model.embed_tokens.weight', [c.vocabSize, c.dModel], 'embedding', 'token_embd.weight'),
    layers,
    finalNorm: spec<GlobalRole>('finalNorm', 'model.norm.weight', [c.dModel], 'norm', 'output_norm.weight'),
  };
  // tied embeddings: no lm_head tensor (llama.cpp then uses token_embd for the classifier too)
  if (!c.tiedEmbeddings) layout.head = spec<GlobalRole>('head', 'lm_head.weight', [c.vocabSize, c.dModel], 'head', 'output.weight');
  return layout;
}

/** Every parameter in declaration order: embedding, the layers, final norm, head. */
export function layoutParameters(layout: ModelLayout): ParameterSpec[] {
  return [layout.embed, ...layout.layers.flat(), layout.finalNorm, ...(layout.head ? [layout.head] : [])];
}
