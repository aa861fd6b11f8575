export { ARCHITECTURES, architecture, architectureOfHfConfig, modelLayout } from './registry.js';
export { layoutParameters } from './layout.js';
export { type RopeScaling, ropeInverseFrequencies } from './rope_scaling.js';
export type { Architecture, GlobalRole, HfTensor, LayerFeatures, LayerRole, ModelLayout, ParameterKind, ParameterSpec } from './types.js';
