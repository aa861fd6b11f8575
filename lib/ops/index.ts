/** The ops namespace: `import { ops } from 'kiln'; ops.add(a, b)`. */
export { add, cast, mean, mul, scale, sum } from './elementwise.js';
