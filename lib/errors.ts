/**
 * Every error kiln raises on purpose is a KilnError with a stable `code`. Codes never change
 * meaning; messages may improve.
 */
import { types } from 'node:util';

export type KilnErrorCode =
  | 'ERR_SHAPE' // shapes do not match or are not valid
  | 'ERR_DTYPE' // an unsupported or mismatched dtype
  | 'ERR_DEVICE' // tensors on different devices, or a device that does not exist
  | 'ERR_DISPOSED' // a tensor used after dispose()
  | 'ERR_OOM' // out of host or device memory
  | 'ERR_CUDA' // a CUDA runtime or kernel failure
  | 'ERR_NO_CUDA' // CUDA requested but not compiled in, no driver, or no GPU
  | 'ERR_ARG' // a bad argument: wrong type, NaN, negative or absurd size, unknown option
  | 'ERR_NO_ADDON' // the native addon could not be loaded
  | 'ERR_CHECKPOINT' // a corrupt, truncated or mismatched checkpoint
  | 'ERR_BUSY' // a queue is full: retry later
  | 'ERR_DIST' // a collective or the rendezvous failed: a peer left, timed out, or refused this rank's config
  | 'ERR_NO_GLOO' // more than one rank asked of a build without Gloo (apt-get install libgloo-dev, rebuild)
  | 'ERR_INTERNAL'; // a bug in kiln: please report it

export class KilnError extends Error {
  readonly code: KilnErrorCode;
  constructor(code: KilnErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'KilnError';
    this.code = code;
  }
}

const KNOWN_CODES = new Set<string>([
  'ERR_SHAPE', 'ERR_DTYPE', 'ERR_DEVICE', 'ERR_DISPOSED', 'ERR_OOM', 'ERR_CUDA', 'ERR_NO_CUDA', 'ERR_ARG',
  'ERR_NO_ADDON', 'ERR_CHECKPOINT', 'ERR_BUSY', 'ERR_DIST', 'ERR_NO_GLOO', 'ERR_INTERNAL',
]);

/** Turns an error thrown by the addon (an Error with a `code`) into a KilnError. */
export function fromNativeError(error: unknown): unknown {
  if (error instanceof KilnError) return error;
  if (error instanceof Error) {
    const code = (error as Error & { code?: unknown }).code;
    if (typeof code === 'string' && KNOWN_CODES.has(code)) {
      return new KilnError(code as KilnErrorCode, error.message, { cause: error });
    }
  }
  return error;
}

/**
 * A short description of any value for an error message. Never throws and runs no user code: no
 * toString/valueOf, no getters, no Proxy traps (so a BigInt, a symbol, Object.create(null) or a
 * revoked Proxy are all describable). Primitives show their value; objects only their kind.
 */
export function describe(value: unknown): string {
  try {
    switch (typeof value) {
      case 'number':
        return Object.is(value, -0) ? '-0' : String(value);
      case 'bigint':
        return `${value.toString()}n`;
      case 'string':
        return JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}...` : value);
      case 'boolean':
      case 'undefined':
        return String(value);
      case 'symbol':
        return 'a symbol';
      case 'function':
        return 'a function';
      default: {
        if (value === null) return 'null';
        if (types.isProxy(value)) return 'a Proxy';
        if (Array.isArray(value)) return 'an array';
        if (ArrayBuffer.isView(value)) return 'a typed array';
        return 'an object';
      }
    }
  } catch {
    return 'an unprintable value';
  }
}

export function fail(code: KilnErrorCode, message: string): never {
  throw new KilnError(code, message);
}
