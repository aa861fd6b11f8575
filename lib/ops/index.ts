/** The ops namespace: `import { ops } from 'kiln'; ops.add(a, b)`. */
export { add, cast, mean, mul, scale, sum } from './elementwise.js';
export { matmul, type MatmulOptions } from './matmul.js';
export { attention, attentionBackward, attentionDecode, kvAppend, rope, type AttentionOptions, type DecodeOptions, type PagedCache, type RopeOptions } from './attention.js';
export { newtonSchulz, newtonSchulzFlops, type NewtonSchulzOptions } from './newton_schulz.js';
export { copyInto, crossEntropy, embedding, embeddingBackward, fill, gradNormClip, rmsnorm, rmsnormBackward, swiglu, swigluBackward } from './layers.js';
export { dequantizeMean, outerNesterov, pseudoGradientQuantize, type OuterNesterovOptions } from './outer_step.js';
