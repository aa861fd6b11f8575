/**
 * What an architecture declaration says about a model family, once: its parameters (the Hugging
 * Face tensors each is stored as, shapes, optimizer kinds, init, GGUF names and layout
 * transforms), its config.json fields, and which per-layer features its block uses. Training
 * (LlamaModel), serving (ModelRunner), GGUF export, parameter counting and the optimizer's
 * parameter groups all read it (lib/model/arch/layout.ts builds the parameter list).
 */
import type { ModelConfig } from '../config.js';

/** How the optimizer treats a parameter: Muon for 'matrix', AdamW for the rest ('bias' never decays). */
export type ParameterKind = 'matrix' | 'embedding' | 'head' | 'norm' | 'bias';

/** Per-layer features of the decoder block; a family switches them on, the block reads them. */
export interface LayerFeatures {
  /** q/k/v projections carry a bias (Qwen2): q = y·Wqᵀ + b_q */
  qkvBias: boolean;
  /** RMSNorm over head_dim of every q and k head before RoPE (Qwen3) */
  qkNorm: boolean;
}

/** The parameters of one layer, by role (optional ones exist where a feature asks for them). */
export type LayerRole = 'inputNorm' | 'q' | 'k' | 'v' | 'qBias' | 'kBias' | 'vBias' | 'qNorm' | 'kNorm' | 'o' | 'postNorm' | 'gateUp' | 'down';
export type GlobalRole = 'embed' | 'finalNorm' | 'head';

/** One tensor of a Hugging Face checkpoint that (part of) a parameter is stored as. */
export interface HfTensor {
  name: string;
  shape: number[];
  /** the parameter rows this tensor holds (gate_proj and up_proj are the halves of gateUp) */
  rows?: [number, number];
  /** llama.cpp's name for it; absent where the family has no GGUF mapping */
  gguf?: string;
  /** GGUF stores q/k rows reordered per head for adjacent-pair RoPE (gguf_llama.ts): the head count */
  ggufRopeHeads?: number;
}

export interface ParameterSpec<Role extends string = string> {
  role: Role;
  /** the parameter's name (HF name, or kiln's fused mlp.gate_up_proj.weight) */
  name: string;
  shape: number[];
  kind: ParameterKind;
  init: 'normal' | 'ones' | 'zeros';
  /** output projections into the residual stream: init std scaled by 1/sqrt(2·layers) */
  residualInit?: boolean;
  /** the HF tensors the parameter is saved as and loaded from */
  hf: HfTensor[];
}

/** A model's parameters in declaration order (the order of init streams and optimizer state). */
export interface ModelLayout {
  embed: ParameterSpec<GlobalRole>;
  layers: ParameterSpec<LayerRole>[][];
  finalNorm: ParameterSpec<GlobalRole>;
  /** absent with tied embeddings (the head is the embedding table) */
  head?: ParameterSpec<GlobalRole>;
}

export interface Architecture {
  /** config.json model_type, the registry key */
  modelType: string;
  /** config.json architectures[0] written back, and the names accepted when model_type is absent */
  hfArchitectures: string[];
  features: LayerFeatures;
  /** llama.cpp architecture GGUF export writes; absent: export refuses the family */
  gguf?: 'llama';
  /** config.json fields -> the fields of ModelConfig (unvalidated: config.ts validates) */
  readConfig(json: Record<string, unknown>): Record<string, unknown>;
  /** ModelConfig -> config.json (transformers loads it as this family) */
  writeConfig(config: ModelConfig, dtype: string): Record<string, unknown>;
}
