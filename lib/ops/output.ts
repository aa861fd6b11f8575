/**
 * Output tensors of ops: a new tensor, or one the caller planned (the `out` options), checked
 * for device, dtype and shape. Planned outputs let a training step reuse the same memory every
 * step instead of allocating.
 */
import { type Device, deviceCode } from '../device.js';
import { type DType, dtypeCode } from '../dtype.js';
import { fail } from '../errors.js';
import { binding } from '../native.js';
import { Tensor, checkTensor } from '../tensor.js';
import { numelOf, sameShape } from '../validate.js';

export function output(value: unknown, name: string, device: Device, dtype: DType, shape: readonly number[]): Tensor {
  if (value === undefined) return new Tensor(binding().empty(deviceCode(device), dtypeCode(dtype), numelOf(shape)), shape);
  const t = checkTensor(value, name);
  if (t.device !== device) fail('ERR_DEVICE', `${name} is on ${t.device}, the result is on ${device}`);
  if (t.dtype !== dtype) fail('ERR_DTYPE', `${name} is ${t.dtype}, the result is ${dtype}`);
  if (!sameShape(t.shape, shape)) fail('ERR_SHAPE', `${name} has shape [${t.shape.join(', ')}], the result is [${shape.join(', ')}]`);
  return t;
}

/** Planned outputs must not be the op's inputs (the kernels read inputs while writing outputs). */
export function checkNoAlias(outputs: Record<string, Tensor>, inputs: Record<string, Tensor | null | undefined>): void {
  for (const [outName, o] of Object.entries(outputs)) {
    for (const [inName, i] of Object.entries(inputs)) {
      if (i && (o === i || o.handle === i.handle)) fail('ERR_ARG', `${outName} must not be the input ${inName}`);
    }
  }
}
