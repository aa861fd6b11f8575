/** The architecture registry: config.json's model_type (or its architectures name) -> the family's declaration. */
import { describe, fail } from '../../errors.js';
import type { ModelConfig } from '../config.js';
import { llama, qwen2, qwen3 } from './families.js';
import { decoderLayout } from './layout.js';
import type { Architecture, ModelLayout } from './types.js';

export const ARCHITECTURES: ReadonlyMap<string, Architecture> = new Map([llama, qwen2, qwen3].map((a) => [a.modelType, a]));

const supported = () => [...ARCHITECTURES.keys()].join(', ');

/** The family of a ModelConfig (config.arch, default llama); an unknown name is ERR_ARG. */
export function architecture(config: Pick<ModelConfig, 'arch'>): Architecture {
  const name = config.arch ?? 'llama';
  const arch = typeof name === 'string' ? ARCHITECTURES.get(name) : undefined;
  if (!arch) fail('ERR_ARG', `config.arch ${describe(name)} is not an architecture kiln implements (${supported()})`);
  return arch;
}

/** The family config.json declares, by model_type, else by architectures[0]; ERR_CHECKPOINT naming what is supported. */
export function architectureOfHfConfig(h: Record<string, unknown>): Architecture {
  if (h.model_type !== undefined) {
    const arch = typeof h.model_type === 'string' ? ARCHITECTURES.get(h.model_type) : undefined;
    if (!arch) fail('ERR_CHECKPOINT', `config.json model_type is ${describe(h.model_type)}: kiln implements ${supported()}`);
    return arch;
  }
  if (Array.isArray(h.architectures) && h.architectures.length > 0) {
    const name = h.architectures[0];
    for (const arch of ARCHITECTURES.values()) if (arch.hfArchitectures.includes(name)) return arch;
    fail('ERR_CHECKPOINT', `config.json architectures[0] is ${describe(name)}: kiln implements ${[...ARCHITECTURES.values()].map((a) => a.hfArchitectures[0]).join(', ')}`);
  }
  // kiln's own configs before model families, and hand-written ones: LLaMA
  return llama;
}

/** The parameters of a (validated) config's model. */
export function modelLayout(config: ModelConfig): ModelLayout {
  return decoderLayout(config, architecture(config).features);
}
