/**
 * Tensor: a shape, a dtype and a device over native memory. Ops enqueue and return at once;
 * `await t.toArray()` waits (off the event loop) for the ops before it and reads the values.
 * Memory is freed by dispose() (or `using`); garbage collection is only a safety net.
 */
import type { NativeTensor } from '../binding.js';
import { type Device, type DeviceLike, deviceCode, deviceFromCode, parseDevice } from './device.js';
import { type ArrayFor, type DType, dtypeCode, dtypeFromCode, f16ToFloat, parseDType } from './dtype.js';
import { describe, fail } from './errors.js';
import { binding } from './native.js';
import { MAX_NUMEL, checkFiniteNumber, checkInteger, checkOptions, checkShape, numelOf } from './validate.js';

export class Tensor {
  /** Brand: `#brand in value` is true only for objects this constructor built (Object.create(Tensor.prototype) has none). */
  readonly #brand = true;
  /** Whether value is a Tensor built by kiln (a brand check: no getter, no Proxy trap runs). */
  static isTensor(value: unknown): value is Tensor {
    return typeof value === 'object' && value !== null && #brand in value && (value as Tensor).#brand;
  }
  readonly shape: readonly number[];
  readonly dtype: DType;
  readonly device: Device;
  /** @internal The native handle. Use only inside lib/. */
  readonly handle: NativeTensor;

  /** @internal Tensors come from factories (tensor, zeros, randn, ...) and ops. */
  constructor(handle: NativeTensor, shape: readonly number[]) {
    if (!isNativeHandle(handle)) fail('ERR_ARG', `a Tensor wraps a native handle (use kiln's factories), got ${describe(handle)}`);
    const dims = checkShape(shape as number[]);
    this.handle = handle;
    this.shape = Object.freeze(dims);
    this.dtype = dtypeFromCode(handle.dtype);
    this.device = deviceFromCode(handle.device ?? -1);
    if (numelOf(dims) !== handle.numel) fail('ERR_SHAPE', `shape [${dims.join(', ')}] does not match the handle's ${handle.numel} elements`);
  }

  get numel(): number {
    return this.handle.numel;
  }

  get ndim(): number {
    return this.shape.length;
  }

  get disposed(): boolean {
    return this.handle.disposed;
  }

  /** Reads the values (bf16 and f16 widen to Float32Array) after all ops enqueued before. */
  async toArray(): Promise<ArrayFor<this['dtype']>> {
    this.assertLive();
    const bytes = await binding().read(this.handle);
    switch (this.dtype) {
      case 'f32':
        return new Float32Array(bytes) as ArrayFor<this['dtype']>;
      case 'f64':
        return new Float64Array(bytes) as ArrayFor<this['dtype']>;
      case 'i32':
        return new Int32Array(bytes) as ArrayFor<this['dtype']>;
      case 'bf16': {
        const half = new Uint16Array(bytes);
        const bits = new Uint32Array(half.length);
        for (let i = 0; i < half.length; i++) bits[i] = half[i] << 16;
        return new Float32Array(bits.buffer) as ArrayFor<this['dtype']>;
      }
      case 'f16': {
        const half = new Uint16Array(bytes);
        const out = new Float32Array(half.length);
        for (let i = 0; i < half.length; i++) out[i] = f16ToFloat(half[i]);
        return out as ArrayFor<this['dtype']>;
      }
    }
  }

  /**
   * Overwrites the values in place, in queue order, reusing this tensor's memory: a
   * Float32Array for f32, Float64Array for f64, Int32Array for i32, raw bits as a Uint16Array
   * for bf16/f16; exactly numel elements. Returns this.
   */
  write(values: Float32Array | Float64Array | Int32Array | Uint16Array): this {
    this.assertLive();
    const expected = { f32: Float32Array, f64: Float64Array, i32: Int32Array, bf16: Uint16Array, f16: Uint16Array }[this.dtype];
    // ArrayBuffer.isView is false for a Proxy, whose typed-array getters would throw
    if (!ArrayBuffer.isView(values) || !(values instanceof expected)) fail('ERR_DTYPE', `a ${this.dtype} tensor is written from a ${expected.name}`);
    if (values.length !== this.numel) fail('ERR_SHAPE', `write needs ${this.numel} values, got ${values.length}`);
    binding().write(this.handle, values);
    return this;
  }

  /** A copy on another device (and optionally in another dtype). */
  to(device: DeviceLike, dtype?: DType): Tensor {
    this.assertLive();
    const target = parseDevice(device);
    const targetDType = dtype === undefined ? this.dtype : parseDType(dtype);
    if (targetDType === 'f64' && target !== 'cpu') fail('ERR_DTYPE', 'f64 tensors live on the CPU only');
    if (target === this.device) return targetDType === this.dtype ? this.clone() : this.cast(targetDType);
    // Cast on the side where the smaller dtype travels; the copy itself is byte-exact.
    const moved = new Tensor(binding().empty(deviceCode(target), dtypeCode(this.dtype === 'f64' ? targetDType : this.dtype), this.numel), this.shape);
    if (this.dtype === 'f64') {
      using cast = this.cast(targetDType);
      binding().copy(moved.handle, cast.handle);
      return moved;
    }
    binding().copy(moved.handle, this.handle);
    if (targetDType === this.dtype) return moved;
    using temp = moved;
    return temp.cast(targetDType);
  }

  /** A copy in another dtype on the same device. */
  cast(dtype: DType): Tensor {
    this.assertLive();
    const target = parseDType(dtype);
    if (target === 'f64' && this.device !== 'cpu') fail('ERR_DTYPE', 'f64 tensors live on the CPU only');
    const out = new Tensor(binding().empty(deviceCode(this.device), dtypeCode(target), this.numel), this.shape);
    binding().cast(out.handle, this.handle);
    return out;
  }

  clone(): Tensor {
    this.assertLive();
    const out = new Tensor(binding().empty(deviceCode(this.device), dtypeCode(this.dtype), this.numel), this.shape);
    binding().copy(out.handle, this.handle);
    return out;
  }

  /** A view with a new shape (one dimension may be -1). Shares memory. */
  reshape(...shape: number[] | [number[]]): Tensor {
    this.assertLive();
    const dims = (Array.isArray(shape[0]) ? shape[0] : shape) as number[];
    const inferred = dims.indexOf(-1);
    if (inferred >= 0 && dims.indexOf(-1, inferred + 1) >= 0) fail('ERR_SHAPE', 'reshape takes at most one -1');
    const known = dims.map((d) => (d === -1 ? 1 : d));
    checkShape(known, 'reshape shape');
    const product = numelOf(known);
    const resolved = [...known];
    if (inferred >= 0) {
      if (product === 0 || this.numel % product !== 0) fail('ERR_SHAPE', `cannot reshape ${this.numel} elements to [${dims.join(', ')}]`);
      resolved[inferred] = this.numel / product;
    }
    if (numelOf(resolved) !== this.numel) fail('ERR_SHAPE', `cannot reshape [${this.shape.join(', ')}] to [${dims.join(', ')}]`);
    return new Tensor(this.handle.view(0, this.numel), resolved);
  }

  /** Rows [start, end) along dimension 0, as a view sharing memory. */
  slice(start: number, end: number = this.shape[0]): Tensor {
    this.assertLive();
    if (this.ndim === 0) fail('ERR_SHAPE', 'cannot slice a 0-d tensor');
    const rows = this.shape[0];
    checkInteger(start, 'start', 0, rows);
    checkInteger(end, 'end', start, rows);
    const rowSize = rows === 0 ? 0 : this.numel / rows;
    return new Tensor(this.handle.view(start * rowSize, (end - start) * rowSize), [end - start, ...this.shape.slice(1)]);
  }

  /** Frees this tensor's memory (views keep it alive; queued ops finish first). Idempotent. */
  dispose(): void {
    this.handle.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  toString(): string {
    if (!Tensor.isTensor(this)) return 'Tensor(not a kiln tensor)';
    return `Tensor(shape=[${this.shape.join(', ')}], dtype=${this.dtype}, device=${this.device}${this.disposed ? ', disposed' : ''})`;
  }

  /** @internal */
  assertLive(): void {
    if (this.handle.disposed) fail('ERR_DISPOSED', 'tensor was disposed');
  }
}

function isNativeHandle(value: unknown): value is NativeTensor {
  try {
    const ctor = (binding() as unknown as { NativeTensor?: unknown }).NativeTensor;
    // instanceof alone accepts Object.create(NativeTensor.prototype): the native accessor throws on those
    return typeof ctor === 'function' && value instanceof ctor && typeof (value as NativeTensor).numel === 'number';
  } catch {
    return false;
  }
}

// ---- factories --------------------------------------------------------------------------------

export interface CreateOptions {
  dtype?: DType;
  device?: DeviceLike;
}

function createOptions(options: unknown, extra: readonly string[] = []): { dtype?: DType; device: Device; rest: Record<string, unknown> } {
  const o = checkOptions(options, ['dtype', 'device', ...extra], 'options');
  const device = o.device === undefined ? 'cpu' : parseDevice(o.device);
  const dtype = o.dtype === undefined ? undefined : parseDType(o.dtype);
  if (dtype === 'f64' && device !== 'cpu') fail('ERR_DTYPE', 'f64 tensors live on the CPU only');
  return { dtype, device, rest: o };
}

/** Uninitialized memory. */
export function empty(shape: number[], options?: CreateOptions): Tensor {
  const dims = checkShape(shape);
  const { dtype = 'f32', device } = createOptions(options);
  return new Tensor(binding().empty(deviceCode(device), dtypeCode(dtype), numelOf(dims)), dims);
}

export function full(shape: number[], value: number, options?: CreateOptions): Tensor {
  checkFiniteNumberOrSpecial(value, 'value');
  const out = empty(shape, options);
  binding().fill(out.handle, value);
  return out;
}

export function zeros(shape: number[], options?: CreateOptions): Tensor {
  return full(shape, 0, options);
}

export function ones(shape: number[], options?: CreateOptions): Tensor {
  return full(shape, 1, options);
}

function checkFiniteNumberOrSpecial(value: unknown, name: string): number {
  if (typeof value !== 'number') fail('ERR_ARG', `${name} must be a number, got ${typeof value}`);
  return value;
}

type NestedNumbers = number | NestedNumbers[];

/**
 * A tensor from values: a typed array (with `shape`, default 1-D) or nested arrays of numbers.
 * Float32Array -> f32, Float64Array -> f64, Int32Array -> i32, arrays -> f32 unless `dtype`
 * says otherwise; values are rounded to the dtype (nearest even) on the way in.
 */
export function tensor(
  data: NestedNumbers[] | Float32Array | Float64Array | Int32Array,
  options?: CreateOptions & { shape?: number[] },
): Tensor {
  const { dtype: requested, device, rest } = createOptions(options, ['shape']);
  let values: Float32Array | Float64Array | Int32Array;
  let inferredShape: number[];
  if (ArrayBuffer.isView(data) && (data instanceof Float32Array || data instanceof Float64Array || data instanceof Int32Array)) {
    values = data;
    inferredShape = [data.length];
  } else if (Array.isArray(data)) {
    inferredShape = nestedShape(data);
    const flat = (data as unknown[]).flat(Infinity) as unknown[];
    for (const v of flat) if (typeof v !== 'number') fail('ERR_ARG', `tensor values must be numbers, got ${typeof v}`);
    values = requested === 'f64' ? Float64Array.from(flat as number[]) : requested === 'i32' ? int32From(flat as number[]) : Float32Array.from(flat as number[]);
  } else {
    fail('ERR_ARG', 'tensor data must be a Float32Array, Float64Array, Int32Array or an array of numbers');
  }
  const shape = rest.shape === undefined ? inferredShape : checkShape(rest.shape);
  if (numelOf(shape) !== values.length) fail('ERR_SHAPE', `shape [${shape.join(', ')}] needs ${numelOf(shape)} values, got ${values.length}`);
  const sourceDType: DType = values instanceof Float64Array ? 'f64' : values instanceof Int32Array ? 'i32' : 'f32';
  const dtype = requested ?? sourceDType;
  if (dtype === 'f64' && device !== 'cpu') fail('ERR_DTYPE', 'f64 tensors live on the CPU only');
  if (sourceDType === dtype) return new Tensor(binding().fromBuffer(deviceCode(device), dtypeCode(dtype), values), shape);
  // Convert natively (one rounding rule for every path): upload as-is, then cast.
  const uploadDevice = sourceDType === 'f64' ? 'cpu' : device;
  using staged = new Tensor(binding().fromBuffer(deviceCode(uploadDevice), dtypeCode(sourceDType), values), shape);
  using cast = staged.cast(dtype);
  return uploadDevice === device ? cast.clone() : cast.to(device);
}

function int32From(values: number[]): Int32Array {
  for (const v of values) {
    if (!Number.isInteger(v) || v < -(2 ** 31) || v >= 2 ** 31) fail('ERR_ARG', `i32 tensor values must be 32-bit integers, got ${v}`);
  }
  return Int32Array.from(values);
}

function nestedShape(data: unknown[]): number[] {
  const shape = [data.length];
  let probe: unknown = data[0];
  while (Array.isArray(probe)) {
    shape.push(probe.length);
    probe = probe[0];
  }
  const check = (node: unknown, depth: number): void => {
    if (depth === shape.length) {
      if (Array.isArray(node)) fail('ERR_SHAPE', 'nested arrays are ragged');
      return;
    }
    if (!Array.isArray(node) || node.length !== shape[depth]) fail('ERR_SHAPE', 'nested arrays are ragged');
    for (const child of node) check(child, depth + 1);
  };
  check(data, 0);
  return shape;
}

// ---- random -----------------------------------------------------------------------------------

export interface RandomOptions extends CreateOptions {
  /** 64-bit seed (number or bigint). Without it, the global generator (manualSeed) is used. */
  seed?: number | bigint;
  /** Philox stream offset: different offsets give independent tensors for one seed. */
  offset?: number;
}

let globalSeed = 0n;
let globalOffset = 0;

/** Seeds the global generator used by randn/rand calls that pass no seed. */
export function manualSeed(seed: number | bigint): void {
  globalSeed = checkSeed(seed);
  globalOffset = 0;
}

function checkSeed(seed: unknown): bigint {
  if (typeof seed === 'bigint' && seed >= 0n && seed < 2n ** 64n) return seed;
  if (typeof seed === 'number' && Number.isSafeInteger(seed) && seed >= 0) return BigInt(seed);
  fail('ERR_ARG', `seed must be a non-negative integer below 2^64, got ${describe(seed)}`);
}

function randomFill(kind: 0 | 1, shape: number[], a: number, b: number, options: unknown, extra: string[]): Tensor {
  const { dtype = 'f32', device, rest } = createOptions(options, ['seed', 'offset', ...extra]);
  if (dtype === 'i32') fail('ERR_DTYPE', 'random tensors need a float dtype');
  let seed: bigint;
  let offset: number;
  if (rest.seed !== undefined) {
    seed = checkSeed(rest.seed);
    offset = rest.offset === undefined ? 0 : checkInteger(rest.offset, 'offset', 0, Number.MAX_SAFE_INTEGER);
  } else {
    seed = globalSeed;
    offset = globalOffset++;
  }
  const out = empty(shape, { dtype, device });
  binding().random(out.handle, kind, Number(seed >> 32n), Number(seed & 0xffffffffn), offset, a, b);
  return out;
}

/** Normal(mean, std) values from a counter-based generator: identical on CPU and CUDA. */
export function randn(shape: number[], options?: RandomOptions & { mean?: number; std?: number }): Tensor {
  const o = (options ?? {}) as { mean?: unknown; std?: unknown };
  const mean = o.mean === undefined ? 0 : checkFiniteNumber(o.mean, 'mean');
  const std = o.std === undefined ? 1 : checkFiniteNumber(o.std, 'std');
  if (std < 0) fail('ERR_ARG', 'std must be >= 0');
  return randomFill(1, shape, mean, std, options, ['mean', 'std']);
}

/** Uniform values in [low, high) (default [0, 1)): identical on CPU and CUDA. */
export function rand(shape: number[], options?: RandomOptions & { low?: number; high?: number }): Tensor {
  const o = (options ?? {}) as { low?: unknown; high?: unknown };
  const low = o.low === undefined ? 0 : checkFiniteNumber(o.low, 'low');
  const high = o.high === undefined ? 1 : checkFiniteNumber(o.high, 'high');
  if (!(high >= low)) fail('ERR_ARG', 'high must be >= low');
  return randomFill(0, shape, low, high, options, ['low', 'high']);
}

export { MAX_NUMEL };

/** `value` as a live kiln Tensor, else ERR_ARG (not a tensor) or ERR_DISPOSED; the argument check every op starts with. */
export function checkTensor(value: unknown, name: string): Tensor {
  if (!Tensor.isTensor(value)) fail('ERR_ARG', `${name} must be a kiln Tensor, got ${describe(value)}`);
  if (value.disposed) fail('ERR_DISPOSED', `${name} was disposed`);
  return value;
}
