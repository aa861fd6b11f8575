/**
 * safetensors read/write (https://huggingface.co/docs/safetensors): an 8-byte little-endian
 * header length, a JSON header { name: { dtype, shape, data_offsets: [begin, end] }, __metadata__ },
 * then the raw little-endian tensor bytes. Written atomically (temp file, fsync, rename), so a
 * killed process never leaves a half-written file under the final name. Reading validates
 * every offset against the file, so a truncated or corrupt file is ERR_CHECKPOINT, never a
 * crash or silently wrong tensor.
 */
import { closeSync, openSync, readSync, fstatSync, writeSync } from 'node:fs';
import { atomicWrite } from './atomic.js';
import type { DType } from '../dtype.js';
import { KilnError, describe, fail } from '../errors.js';

const TO_ST: Record<DType, string> = { f32: 'F32', f64: 'F64', bf16: 'BF16', f16: 'F16', i32: 'I32' };
const FROM_ST: Record<string, DType> = { F32: 'f32', F64: 'f64', BF16: 'bf16', F16: 'f16', I32: 'i32' };
const BYTES: Record<DType, number> = { f32: 4, f64: 8, bf16: 2, f16: 2, i32: 4 };

export interface RawTensor {
  dtype: DType;
  shape: number[];
  /** little-endian bytes, exactly numel * element size */
  data: Uint8Array;
}

/** Writes tensors (in the given order) and string metadata to `path` atomically. */
export function writeSafetensors(path: string, tensors: Map<string, RawTensor>, metadata: Record<string, string> = {}): void {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  let offset = 0;
  for (const [name, t] of tensors) {
    const numel = t.shape.reduce((a, b) => a * b, 1);
    if (numel * BYTES[t.dtype] !== t.data.byteLength) fail('ERR_INTERNAL', `tensor ${name}: ${t.data.byteLength} bytes for shape [${t.shape}] ${t.dtype}`);
    header[name] = { dtype: TO_ST[t.dtype], shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8); // align the data section to 8 bytes
  const jsonBytes = Buffer.from(json, 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(jsonBytes.byteLength));
  atomicWrite(path, (fd) => {
    writeAll(fd, prefix);
    writeAll(fd, jsonBytes);
    for (const t of tensors.values()) writeAll(fd, t.data);
  });
}

function writeAll(fd: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.byteLength) done += writeSync(fd, bytes, done, bytes.byteLength - done);
}

export interface SafetensorsFile {
  metadata: Record<string, string>;
  tensors: Map<string, RawTensor>;
}

/** Reads and validates a whole safetensors file. */
export function readSafetensors(path: string): SafetensorsFile {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (error) {
    throw new KilnError('ERR_CHECKPOINT', `cannot open ${path}: ${(error as Error).message}`);
  }
  const bad = (why: string): never => fail('ERR_CHECKPOINT', `${path} is not a valid safetensors file: ${why}`);
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) bad('it is not a regular file');
    const size = stat.size;
    if (size < 8) bad('shorter than its 8-byte header length');
    const prefix = Buffer.alloc(8);
    readSync(fd, prefix, 0, 8, 0);
    const headerLength = Number(prefix.readBigUInt64LE());
    if (headerLength <= 0 || headerLength > 100 * 2 ** 20 || 8 + headerLength > size) bad(`header length ${headerLength} does not fit the file (${size} bytes)`);
    const headerBytes = Buffer.alloc(headerLength);
    readSync(fd, headerBytes, 0, headerLength, 8);
    let header: Record<string, unknown>;
    try {
      header = JSON.parse(headerBytes.toString('utf8')) as Record<string, unknown>;
    } catch {
      return bad('the header is not JSON');
    }
    if (!header || typeof header !== 'object' || Array.isArray(header)) bad('the header is not an object');
    const dataStart = 8 + headerLength;
    const dataSize = size - dataStart;
    const metadata = (header.__metadata__ ?? {}) as Record<string, string>;
    const tensors = new Map<string, RawTensor>();
    const entries = Object.entries(header).filter(([k]) => k !== '__metadata__');
    for (const [name, value] of entries) if (!value || typeof value !== 'object' || Array.isArray(value)) bad(`tensor ${JSON.stringify(name)} has no {dtype, shape, data_offsets} entry`);
    entries.sort((a, b) => ((a[1] as { data_offsets: number[] }).data_offsets?.[0] ?? 0) - ((b[1] as { data_offsets: number[] }).data_offsets?.[0] ?? 0));
    let expectedOffset = 0;
    for (const [name, value] of entries) {
      const v = value as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
      const dtype = typeof v.dtype === 'string' ? FROM_ST[v.dtype] : undefined;
      if (!dtype) bad(`tensor ${name} has unsupported dtype ${describe(v.dtype)}`);
      const shape = v.shape;
      if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) bad(`tensor ${name} has an invalid shape`);
      const offsets = v.data_offsets;
      if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) bad(`tensor ${name} has invalid data_offsets`);
      const [begin, end] = offsets as number[];
      const numel = (shape as number[]).reduce((a, b) => a * b, 1);
      if (end - begin !== numel * BYTES[dtype!]) bad(`tensor ${name}: ${end - begin} bytes for shape [${shape}] ${dtype}`);
      if (begin !== expectedOffset) bad(`tensor ${name} does not start where the previous one ended (overlap or gap)`);
      if (end > dataSize) bad(`tensor ${name} ends at byte ${end} but the data section has ${dataSize} (truncated file?)`);
      expectedOffset = end;
      const data = new Uint8Array(end - begin);
      let done = 0;
      while (done < data.byteLength) {
        const n = readSync(fd, data, done, data.byteLength - done, dataStart + begin + done);
        if (n === 0) bad(`unexpected end of file in tensor ${name}`);
        done += n;
      }
      tensors.set(name, { dtype: dtype!, shape: shape as number[], data });
    }
    if (expectedOffset !== dataSize) bad(`${dataSize - expectedOffset} trailing bytes after the last tensor`);
    return { metadata, tensors };
  } catch (error) {
    // a read error (EIO, EISDIR, ...) is an unreadable checkpoint too
    if (error instanceof KilnError) throw error;
    throw new KilnError('ERR_CHECKPOINT', `cannot read ${path}: ${(error as Error)?.message ?? describe(error)}`, { cause: error });
  } finally {
    closeSync(fd);
  }
}
