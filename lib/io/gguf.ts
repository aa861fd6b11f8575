/**
 * GGUF (version 3), the single-file model format of ggml / llama.cpp, written from its
 * specification (ggml's docs/gguf.md):
 *
 *   u32 magic "GGUF" | u32 version 3 | u64 tensor count | u64 metadata count
 *   metadata:    (string key, u32 value type, value) ...
 *   tensor info: (string name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset) ...
 *   padding to `general.alignment` (default 32), then the tensor data, each tensor starting at
 *   its offset (relative to the data section, a multiple of the alignment).
 *
 * Strings are a u64 byte length and UTF-8 bytes (no terminator); arrays are a u32 element type,
 * a u64 count and the elements; everything is little-endian. ne[0] is the fastest-varying
 * dimension, so a row-major (rows, cols) matrix is written as ne = [cols, rows].
 *
 * `writeGguf` is the generic writer (atomic: temp file, fsync, rename); `readGgufHeader` reads
 * back the metadata and tensor table (tests, tools); `exportLlamaGguf` (lib/io/gguf_llama.ts)
 * maps a kiln checkpoint onto llama.cpp's "llama" architecture.
 */
import { closeSync, fstatSync, openSync, readSync, writeSync } from 'node:fs';
import { atomicWrite } from './atomic.js';
import { fail } from '../errors.js';

const MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
const VERSION = 3;
export const GGUF_ALIGNMENT = 32;

/** Metadata value types (gguf_type). */
export const GgufValueType = {
  u8: 0, i8: 1, u16: 2, i16: 3, u32: 4, i32: 5, f32: 6, bool: 7, string: 8, array: 9, u64: 10, i64: 11, f64: 12,
} as const;
export type GgufScalarType = Exclude<keyof typeof GgufValueType, 'array'>;

/** Tensor element types (ggml_type) kiln writes. */
export const GgmlType = { f32: 0, f16: 1, bf16: 30 } as const;
export type GgufTensorDType = keyof typeof GgmlType;
const TENSOR_BYTES: Record<GgufTensorDType, number> = { f32: 4, f16: 2, bf16: 2 };

export type GgufValue =
  | { type: GgufScalarType; value: number | bigint | boolean | string }
  | { type: 'array'; itemType: GgufScalarType; values: readonly (number | bigint | boolean | string)[] };

export interface GgufTensor {
  name: string;
  /** row-major shape, outermost first (as PyTorch / safetensors write it) */
  shape: number[];
  dtype: GgufTensorDType;
  /** the little-endian element bytes; called once, while the file is written (keeps memory low) */
  data: () => Uint8Array;
}

// ---------------------------------------------------------------------------------------------
// Encoding

class ByteSink {
  private chunks: Buffer[] = [];
  length = 0;
  push(b: Buffer): void {
    this.chunks.push(b);
    this.length += b.length;
  }
  u32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    this.push(b);
  }
  u64(v: number | bigint): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.push(b);
  }
  string(s: string): void {
    const bytes = Buffer.from(s, 'utf8');
    this.u64(bytes.length);
    this.push(bytes);
  }
  scalar(type: GgufScalarType, v: number | bigint | boolean | string, key: string): void {
    const bad = () => fail('ERR_ARG', `gguf metadata ${key}: ${JSON.stringify(String(v))} is not a valid ${type}`);
    if (type === 'string') {
      if (typeof v !== 'string') bad();
      return this.string(v as string);
    }
    if (type === 'bool') {
      if (typeof v !== 'boolean') bad();
      return this.push(Buffer.from([v ? 1 : 0]));
    }
    if (type === 'u64' || type === 'i64') {
      if (typeof v !== 'bigint' && !(typeof v === 'number' && Number.isSafeInteger(v))) bad();
      const b = Buffer.alloc(8);
      if (type === 'u64') b.writeBigUInt64LE(BigInt(v as number));
      else b.writeBigInt64LE(BigInt(v as number));
      return this.push(b);
    }
    if (typeof v !== 'number' || Number.isNaN(v)) bad();
    const n = v as number;
    const sizes = { u8: 1, i8: 1, u16: 2, i16: 2, u32: 4, i32: 4, f32: 4, f64: 8 } as const;
    const b = Buffer.alloc(sizes[type]);
    try {
      switch (type) {
        case 'u8': b.writeUInt8(n); break;
        case 'i8': b.writeInt8(n); break;
        case 'u16': b.writeUInt16LE(n); break;
        case 'i16': b.writeInt16LE(n); break;
        case 'u32': b.writeUInt32LE(n); break;
        case 'i32': b.writeInt32LE(n); break;
        case 'f32': b.writeFloatLE(n); break;
        case 'f64': b.writeDoubleLE(n); break;
      }
    } catch {
      bad(); // out of range for the type (Buffer throws a RangeError)
    }
    if (!['f32', 'f64'].includes(type) && !Number.isInteger(n)) bad();
    this.push(b);
  }
  toBuffer(): Buffer {
    return Buffer.concat(this.chunks, this.length);
  }
}

const alignUp = (n: number, a: number) => Math.ceil(n / a) * a;

/**
 * Writes a GGUF v3 file atomically. Metadata keys are written in insertion order; tensors in
 * the given order, each padded to the alignment.
 */
export function writeGguf(path: string, metadata: Map<string, GgufValue>, tensors: GgufTensor[]): { bytes: number } {
  const declared = metadata.get('general.alignment');
  const alignment = declared ? (declared.type === 'u32' ? Number(declared.value) : NaN) : GGUF_ALIGNMENT;
  if (!Number.isInteger(alignment) || alignment < 8 || alignment % 8 !== 0) fail('ERR_ARG', 'general.alignment must be a u32 multiple of 8');
  const names = new Set<string>();
  const head = new ByteSink();
  head.u32(MAGIC);
  head.u32(VERSION);
  head.u64(tensors.length);
  head.u64(metadata.size);
  for (const [key, v] of metadata) {
    if (!key.length) fail('ERR_ARG', 'gguf metadata keys must not be empty');
    head.string(key);
    head.u32(GgufValueType[v.type]);
    if (v.type === 'array') {
      head.u32(GgufValueType[v.itemType]);
      head.u64(v.values.length);
      for (const item of v.values) head.scalar(v.itemType, item, key);
    } else {
      head.scalar(v.type, v.value, key);
    }
  }
  let offset = 0;
  const sizes: number[] = [];
  for (const t of tensors) {
    if (names.has(t.name)) fail('ERR_ARG', `gguf tensor ${t.name} appears twice`);
    names.add(t.name);
    if (!t.shape.length || t.shape.length > 4 || t.shape.some((d) => !Number.isSafeInteger(d) || d < 1)) {
      fail('ERR_SHAPE', `gguf tensor ${t.name}: shape [${t.shape}] must have 1 to 4 positive dimensions`);
    }
    head.string(t.name);
    head.u32(t.shape.length);
    for (const d of [...t.shape].reverse()) head.u64(d); // ne[0] is the innermost dimension
    head.u32(GgmlType[t.dtype]);
    head.u64(offset);
    const size = t.shape.reduce((a, b) => a * b, 1) * TENSOR_BYTES[t.dtype];
    sizes.push(size);
    offset = alignUp(offset + size, alignment);
  }
  const header = head.toBuffer();
  const dataStart = alignUp(header.length, alignment);
  let written = 0;
  atomicWrite(path, (fd) => {
    writeAll(fd, header);
    writeAll(fd, Buffer.alloc(dataStart - header.length));
    written = dataStart;
    for (const [i, t] of tensors.entries()) {
      const bytes = t.data();
      if (bytes.byteLength !== sizes[i]) fail('ERR_INTERNAL', `gguf tensor ${t.name}: ${bytes.byteLength} bytes for shape [${t.shape}] ${t.dtype}`);
      writeAll(fd, bytes);
      written += bytes.byteLength;
      const pad = alignUp(sizes[i], alignment) - sizes[i];
      if (pad && i < tensors.length - 1) {
        writeAll(fd, Buffer.alloc(pad));
        written += pad;
      }
    }
  });
  return { bytes: written };
}

function writeAll(fd: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.byteLength) done += writeSync(fd, bytes, done, bytes.byteLength - done);
}

// ---------------------------------------------------------------------------------------------
// Reading (the header: metadata and tensor table; tensor data by offset)

export interface GgufTensorInfo {
  name: string;
  /** row-major shape, outermost first */
  shape: number[];
  ggmlType: number;
  /** absolute byte offset of the data in the file */
  fileOffset: number;
}

export interface GgufHeader {
  version: number;
  metadata: Map<string, unknown>;
  tensors: GgufTensorInfo[];
  alignment: number;
  dataOffset: number;
}

/** Reads and validates a GGUF file's metadata and tensor table (not the tensor data). */
export function readGgufHeader(path: string): GgufHeader {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (error) {
    fail('ERR_ARG', `cannot open ${path}: ${(error as Error).message}`);
  }
  try {
    const fileSize = fstatSync(fd).size;
    let pos = 0;
    const read = (n: number): Buffer => {
      if (pos + n > fileSize) fail('ERR_CHECKPOINT', `${path}: truncated GGUF header`);
      const b = Buffer.alloc(n);
      readSync(fd, b, 0, n, pos);
      pos += n;
      return b;
    };
    const u32 = () => read(4).readUInt32LE();
    const u64 = () => {
      const v = read(8).readBigUInt64LE();
      if (v > BigInt(Number.MAX_SAFE_INTEGER)) fail('ERR_CHECKPOINT', `${path}: absurd size in GGUF header`);
      return Number(v);
    };
    const string = () => read(u64()).toString('utf8');
    const scalar = (type: number): unknown => {
      switch (type) {
        case 0: return read(1).readUInt8();
        case 1: return read(1).readInt8();
        case 2: return read(2).readUInt16LE();
        case 3: return read(2).readInt16LE();
        case 4: return read(4).readUInt32LE();
        case 5: return read(4).readInt32LE();
        case 6: return read(4).readFloatLE();
        case 7: return read(1).readUInt8() !== 0;
        case 8: return string();
        case 10: return read(8).readBigUInt64LE();
        case 11: return read(8).readBigInt64LE();
        case 12: return read(8).readDoubleLE();
        default: fail('ERR_CHECKPOINT', `${path}: unknown GGUF value type ${type}`);
      }
    };
    if (u32() !== MAGIC) fail('ERR_CHECKPOINT', `${path} is not a GGUF file`);
    const version = u32();
    if (version !== 3) fail('ERR_CHECKPOINT', `${path}: GGUF version ${version} (kiln reads version 3)`);
    const tensorCount = u64();
    const metadataCount = u64();
    const metadata = new Map<string, unknown>();
    for (let i = 0; i < metadataCount; i++) {
      const key = string();
      const type = u32();
      if (type === 9) {
        const itemType = u32();
        const n = u64();
        const values: unknown[] = [];
        for (let j = 0; j < n; j++) values.push(scalar(itemType));
        metadata.set(key, values);
      } else {
        metadata.set(key, scalar(type));
      }
    }
    const alignment = typeof metadata.get('general.alignment') === 'number' ? (metadata.get('general.alignment') as number) : GGUF_ALIGNMENT;
    const infos: { name: string; shape: number[]; ggmlType: number; offset: number }[] = [];
    for (let i = 0; i < tensorCount; i++) {
      const name = string();
      const dims = u32();
      if (dims < 1 || dims > 4) fail('ERR_CHECKPOINT', `${path}: tensor ${name} has ${dims} dimensions`);
      const ne: number[] = [];
      for (let d = 0; d < dims; d++) ne.push(u64());
      infos.push({ name, shape: ne.reverse(), ggmlType: u32(), offset: u64() });
    }
    const dataOffset = alignUp(pos, alignment);
    const tensors = infos.map((t) => ({ name: t.name, shape: t.shape, ggmlType: t.ggmlType, fileOffset: dataOffset + t.offset }));
    for (const t of tensors) {
      const bytes = t.ggmlType === 0 ? 4 : t.ggmlType === 1 || t.ggmlType === 30 ? 2 : 0;
      if (bytes && t.fileOffset + t.shape.reduce((a, b) => a * b, 1) * bytes > fileSize) fail('ERR_CHECKPOINT', `${path}: tensor ${t.name} runs past the end of the file`);
    }
    return { version, metadata, tensors, alignment, dataOffset };
  } finally {
    closeSync(fd);
  }
}

/** Reads one tensor's raw bytes (as listed by readGgufHeader). */
export function readGgufTensorBytes(path: string, info: GgufTensorInfo): Buffer {
  const bytes = info.ggmlType === 0 ? 4 : info.ggmlType === 1 || info.ggmlType === 30 ? 2 : 0;
  if (!bytes) fail('ERR_DTYPE', `${info.name}: ggml type ${info.ggmlType} is not one kiln reads (f32, f16, bf16)`);
  const n = info.shape.reduce((a, b) => a * b, 1) * bytes;
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(n);
    readSync(fd, b, 0, n, info.fileOffset);
    return b;
  } finally {
    closeSync(fd);
  }
}

// ---------------------------------------------------------------------------------------------
// f32 -> half precision, round to nearest even (what a GPU or numpy cast does)

/** IEEE binary16 bits of each f32 value: round to nearest even, overflow to ±inf, NaN kept. */
export function f32ToF16Bits(values: Float32Array): Uint16Array {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < bits.length; i++) {
    const x = bits[i];
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    const mant = x & 0x7fffff;
    if (exp === 0xff) {
      out[i] = sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
      continue;
    }
    const e = exp - 127 + 15; // the f16 biased exponent
    if (e >= 0x1f) {
      out[i] = sign | 0x7c00;
      continue;
    }
    if (e <= 0) {
      // subnormal in f16 (or zero): value / 2^-24, rounded
      if (e < -10) {
        out[i] = sign;
        continue;
      }
      const m = mant | 0x800000;
      const shift = 14 - e;
      let half = m >>> shift;
      const rest = m & ((1 << shift) - 1);
      const halfway = 1 << (shift - 1);
      if (rest > halfway || (rest === halfway && half & 1)) half++;
      out[i] = sign | half;
      continue;
    }
    let half = (e << 10) | (mant >>> 13);
    const rest = mant & 0x1fff;
    if (rest > 0x1000 || (rest === 0x1000 && half & 1)) half++; // a carry into the exponent is right (up to inf)
    out[i] = sign | half;
  }
  return out;
}

/** bfloat16 bits of each f32 value: round to nearest even, NaN kept quiet. */
export function f32ToBf16Bits(values: Float32Array): Uint16Array {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < bits.length; i++) {
    const x = bits[i];
    if ((x & 0x7f800000) === 0x7f800000 && x & 0x7fffff) {
      out[i] = (x >>> 16) | 0x40;
      continue;
    }
    out[i] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
  }
  return out;
}
