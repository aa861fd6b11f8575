/**
 * Token shards: `kiln prepare` turns text files and JSONL into a train and a validation shard,
 * each a small header then the tokens (uint16 when the vocabulary fits, else uint32).
 * Documents are split whole between train and validation by a seeded hash, separated by the
 * tokenizer's end-of-text id. The loader reads random windows by seed with positioned reads
 * (the shard is never loaded whole) and records its position, so a resumed run continues the
 * exact same stream.
 *
 * Header (64 bytes, little-endian): magic "KILNTOK1" | u32 version (1) | u32 bytes per token
 * (2|4) | u32 vocab size | u32 eot | u64 token count | tokenizer name (16 bytes, NUL padded) |
 * the first 16 bytes of the sha256 of the tokenizer.json that made it (all zero for byte and gpt2,
 * which their name identifies, and in shards written before tokenizer.json was read).
 */
import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync, readdirSync, statSync, writeSync, mkdirSync } from 'node:fs';
import { isUtf8 } from 'node:buffer';
import { extname, join } from 'node:path';
import { KilnError, fail } from '../errors.js';
import { atomicWrite } from './atomic.js';
import type { Tokenizer } from '../data/tokenizer.js';

const MAGIC = 'KILNTOK1';
const HEADER_BYTES = 64;

export interface ShardInfo {
  path: string;
  tokens: number;
  bytesPerToken: 2 | 4;
  vocabSize: number;
  eot: number;
  tokenizer: string;
  /** shards made from a tokenizer.json: the first 16 bytes (32 hex digits) of its sha256 */
  tokenizerHash?: string;
}

/** The 32 hex digits of a tokenizer's sha256 a shard records (compare with this). */
export const shardHashOf = (sha256: string) => sha256.slice(0, 32);

/** How a message names a shard's or a model's tokenizer: 'byte', 'gpt2', 'tokenizer.json sha256 0123abcd…'. */
export function describeTokenizer(name: string, hash?: string): string {
  return hash ? `${name === 'hf' ? 'the' : name} tokenizer.json with sha256 ${hash.slice(0, 16)}…` : `the ${name} tokenizer`;
}

function writeShard(path: string, tokens: number[], tokenizer: Tokenizer): ShardInfo {
  const bytesPerToken: 2 | 4 = tokenizer.vocabSize <= 65536 ? 2 : 4;
  const header = Buffer.alloc(HEADER_BYTES);
  header.write(MAGIC, 0, 'latin1');
  header.writeUInt32LE(1, 8);
  header.writeUInt32LE(bytesPerToken, 12);
  header.writeUInt32LE(tokenizer.vocabSize, 16);
  header.writeUInt32LE(tokenizer.eot, 20);
  header.writeBigUInt64LE(BigInt(tokens.length), 24);
  header.write(tokenizer.name.slice(0, 16), 32, 'latin1');
  if (tokenizer.sha256) header.write(shardHashOf(tokenizer.sha256), 48, 'hex');
  const body = bytesPerToken === 2 ? Buffer.from(Uint16Array.from(tokens).buffer) : Buffer.from(Uint32Array.from(tokens).buffer);
  atomicWrite(path, (fd) => {
    writeSync(fd, header);
    let done = 0;
    while (done < body.byteLength) done += writeSync(fd, body, done, body.byteLength - done);
  });
  return {
    path, tokens: tokens.length, bytesPerToken, vocabSize: tokenizer.vocabSize, eot: tokenizer.eot, tokenizer: tokenizer.name,
    ...(tokenizer.sha256 ? { tokenizerHash: shardHashOf(tokenizer.sha256) } : {}),
  };
}

export function readShardInfo(path: string): ShardInfo {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (error) {
    throw new KilnError('ERR_ARG', `cannot open token shard ${path}: ${(error as Error).message}`);
  }
  try {
    const size = fstatSync(fd).size;
    const header = Buffer.alloc(HEADER_BYTES);
    if (size < HEADER_BYTES || readSync(fd, header, 0, HEADER_BYTES, 0) !== HEADER_BYTES || header.toString('latin1', 0, 8) !== MAGIC) {
      fail('ERR_ARG', `${path} is not a kiln token shard (run kiln prepare)`);
    }
    const bytesPerToken = header.readUInt32LE(12);
    const tokens = Number(header.readBigUInt64LE(24));
    if ((bytesPerToken !== 2 && bytesPerToken !== 4) || HEADER_BYTES + tokens * bytesPerToken !== size) {
      fail('ERR_ARG', `token shard ${path} is truncated or corrupt (${size} bytes for ${tokens} tokens)`);
    }
    const hash = header.subarray(48, 64);
    return {
      path, tokens, bytesPerToken: bytesPerToken as 2 | 4, vocabSize: header.readUInt32LE(16), eot: header.readUInt32LE(20),
      tokenizer: header.toString('latin1', 32, 48).replace(/\0+$/, ''),
      ...(hash.some((b) => b !== 0) ? { tokenizerHash: hash.toString('hex') } : {}),
    };
  } finally {
    closeSync(fd);
  }
}

/** The extensions `kiln prepare` reads; documents are split as documentsOf says. */
export const INPUT_EXTENSIONS = ['.txt', '.md', '.jsonl'] as const;
const DOCUMENTS_RULE = 'in .txt and .md files, blank lines separate documents; in .jsonl files, each line\'s "text" is one';

const hasInputExtension = (path: string) => (INPUT_EXTENSIONS as readonly string[]).includes(extname(path).toLowerCase());

/** Invalid UTF-8 found in one input file: sequences replaced by U+FFFD, on how many lines, the first. */
export interface InvalidUtf8 {
  file: string;
  sequences: number;
  lines: number;
  firstLine: number;
}

const countOf = (text: string, piece: string) => text.split(piece).length - 1;

/**
 * A file's text, decoded as UTF-8. Invalid sequences become U+FFFD (as before) and are counted
 * (U+FFFD written validly in the file is not counted); `strict` refuses them instead.
 */
function readText(path: string, strict: boolean): { text: string; invalid?: InvalidUtf8 } {
  const bytes = readFileSync(path);
  const text = bytes.toString('utf8');
  if (isUtf8(bytes)) return { text };
  let sequences = 0;
  let lines = 0;
  let firstLine = 0;
  let start = 0;
  for (let line = 1; start <= bytes.length; line++) {
    let end = bytes.indexOf(0x0a, start);
    if (end < 0) end = bytes.length;
    const piece = bytes.subarray(start, end);
    if (!isUtf8(piece)) {
      const bad = countOf(piece.toString('utf8'), '\ufffd') - countOf(piece.toString('latin1'), '\xef\xbf\xbd');
      sequences += Math.max(1, bad);
      lines++;
      firstLine ||= line;
    }
    start = end + 1;
  }
  if (strict) fail('ERR_ARG', `${path} is not valid UTF-8: ${sequences} invalid sequence${sequences === 1 ? '' : 's'} on ${lines} line${lines === 1 ? '' : 's'}, the first on line ${firstLine} (without --strict they become U+FFFD)`);
  return { text, invalid: { file: path, sequences, lines, firstLine } };
}

/** Text documents of a file: .jsonl (a "text" field per line), otherwise the whole file split on blank lines. */
function documentsOf(path: string, strict: boolean): { documents: string[]; invalid?: InvalidUtf8 } {
  const { text: content, invalid } = readText(path, strict);
  if (extname(path).toLowerCase() === '.jsonl') {
    const documents = content.split('\n').filter((l) => l.trim()).map((line, i) => {
      let parsed: unknown;
      try {
        parsed = JSON.parse(line);
      } catch {
        fail('ERR_ARG', `${path}:${i + 1} is not JSON`);
      }
      const text = (parsed as { text?: unknown }).text;
      if (typeof text !== 'string') fail('ERR_ARG', `${path}:${i + 1} has no string "text" field`);
      return text;
    });
    return { documents, ...(invalid ? { invalid } : {}) };
  }
  return { documents: content.split(/\n\s*\n/).filter((d) => d.trim()), ...(invalid ? { invalid } : {}) };
}

/**
 * The files to read: named files (each must have one of INPUT_EXTENSIONS) and, of directories,
 * the files with those extensions; `skipped` lists a directory's other files.
 */
function inputFiles(inputs: string[]): { files: string[]; skipped: string[] } {
  const files: string[] = [];
  const skipped: string[] = [];
  for (const input of inputs) {
    if (!existsSync(input)) fail('ERR_ARG', `input ${input} does not exist`);
    if (statSync(input).isDirectory()) {
      for (const f of readdirSync(input).sort()) {
        const path = join(input, f);
        if (!statSync(path).isFile()) continue;
        (hasInputExtension(f) ? files : skipped).push(path);
      }
    } else if (hasInputExtension(input)) {
      files.push(input);
    } else {
      fail('ERR_ARG', `${input}: kiln prepare reads ${INPUT_EXTENSIONS.join(', ')} files (${DOCUMENTS_RULE})`);
    }
  }
  if (!files.length) fail('ERR_ARG', `no ${INPUT_EXTENSIONS.join(', ')} input files in ${inputs.join(', ')}${skipped.length ? ` (${skipped.length} other files skipped)` : ''}`);
  return { files, skipped };
}

function hash32(text: string, seed: number): number {
  let h = 2166136261 ^ seed;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 16777619);
  return h >>> 0;
}

export interface PrepareOptions {
  /** share of documents held out for validation (default 0.01, at least one document) */
  valFraction?: number;
  seed?: number;
  /** prepareFiles: refuse input that is not valid UTF-8 (default: its bytes become U+FFFD and are reported in `invalidUtf8`) */
  strict?: boolean;
}

export interface PreparedShards {
  train: ShardInfo;
  val: ShardInfo;
  /** prepareFiles: the files whose invalid UTF-8 became U+FFFD */
  invalidUtf8?: InvalidUtf8[];
  /** prepareFiles: files in the input directories without a .txt, .md or .jsonl extension, not read */
  skipped?: string[];
}

/** Tokenizes documents into <outDir>/train.bin and <outDir>/val.bin. */
export function prepareDocuments(documents: string[], outDir: string, tokenizer: Tokenizer, options: PrepareOptions = {}): PreparedShards {
  const valFraction = options.valFraction ?? 0.01;
  if (!(valFraction > 0 && valFraction < 1)) fail('ERR_ARG', `valFraction must be in (0, 1), got ${valFraction}`);
  if (documents.length < 2) fail('ERR_ARG', `need at least two documents (one is held out for validation), got ${documents.length}`);
  const seed = options.seed ?? 0;
  const train: number[] = [];
  const val: number[] = [];
  const threshold = Math.floor(valFraction * 2 ** 32);
  let valDocs = 0;
  documents.forEach((doc, i) => {
    const toVal = hash32(doc, seed) < threshold || (i === documents.length - 1 && valDocs === 0);
    const target = toVal ? val : train;
    if (toVal) valDocs++;
    for (const id of tokenizer.encode(doc)) target.push(id);
    target.push(tokenizer.eot);
  });
  mkdirSync(outDir, { recursive: true });
  return { train: writeShard(join(outDir, 'train.bin'), train, tokenizer), val: writeShard(join(outDir, 'val.bin'), val, tokenizer) };
}

export function prepareFiles(inputs: string[], outDir: string, tokenizer: Tokenizer, options: PrepareOptions = {}): PreparedShards {
  const { files, skipped } = inputFiles(inputs);
  const documents: string[] = [];
  const invalidUtf8: InvalidUtf8[] = [];
  for (const file of files) {
    const read = documentsOf(file, options.strict ?? false);
    for (const d of read.documents) documents.push(d);
    if (read.invalid) invalidUtf8.push(read.invalid);
  }
  if (documents.length < 2) {
    fail('ERR_ARG', `need at least two documents (one is held out for validation); ${files.join(', ')} hold${files.length === 1 ? 's' : ''} ${documents.length}: ${DOCUMENTS_RULE}`);
  }
  return { ...prepareDocuments(documents, outDir, tokenizer, options), invalidUtf8, skipped };
}

/** Position of a loader in its stream: what a checkpoint saves to resume exactly. */
export interface LoaderState {
  seed: number;
  step: number;
}

/**
 * Samples (B, T+1) windows uniformly from a shard: window i of step s comes from a hash of
 * (seed, s, i), so the stream depends only on the state, not on history.
 */
export class TokenLoader {
  readonly info: ShardInfo;
  readonly batch: number;
  readonly seqLen: number;
  private state: LoaderState;
  private fd: number;

  constructor(path: string, batch: number, seqLen: number, state: LoaderState = { seed: 0, step: 0 }) {
    this.info = readShardInfo(path);
    if (this.info.tokens < seqLen + 2) fail('ERR_ARG', `shard ${path} has ${this.info.tokens} tokens, too few for windows of ${seqLen + 1}`);
    this.batch = batch;
    this.seqLen = seqLen;
    this.state = { ...state };
    this.fd = openSync(path, 'r');
  }

  get position(): LoaderState {
    return { ...this.state };
  }

  /**
   * ids and targets (B·T each, i32), targets shifted by one token. `rows` reads only rows
   * [first, first + count) of the batch (a data-parallel rank's share); the position advances
   * by one global batch either way.
   */
  next(rows?: { first: number; count: number }): { ids: Int32Array; targets: Int32Array } {
    const T = this.seqLen;
    const first = rows?.first ?? 0;
    const B = rows?.count ?? this.batch;
    if (!Number.isSafeInteger(first) || !Number.isSafeInteger(B) || first < 0 || B < 1 || first + B > this.batch) {
      fail('ERR_ARG', `rows [${first}, ${first + B}) are not inside the batch of ${this.batch}`);
    }
    const ids = new Int32Array(B * T);
    const targets = new Int32Array(B * T);
    const span = this.info.tokens - (T + 1);
    const window = Buffer.alloc((T + 1) * this.info.bytesPerToken);
    for (let b = 0; b < B; b++) {
      const r = splitmix(this.state.seed, this.state.step, first + b);
      const start = Math.floor(r * (span + 1));
      readSync(this.fd, window, 0, window.byteLength, HEADER_BYTES + start * this.info.bytesPerToken);
      for (let t = 0; t <= T; t++) {
        const id = this.info.bytesPerToken === 2 ? window.readUInt16LE(2 * t) : window.readUInt32LE(4 * t);
        if (t < T) ids[b * T + t] = id;
        if (t > 0) targets[b * T + t - 1] = id;
      }
    }
    this.state.step++;
    return { ids, targets };
  }

  close(): void {
    closeSync(this.fd);
  }
}

/** A uniform double in [0, 1) from (seed, step, index): splitmix64 over the three. */
function splitmix(seed: number, step: number, index: number): number {
  let x = (BigInt(seed) * 0x9e3779b97f4a7c15n + BigInt(step) * 0xbf58476d1ce4e5b9n + BigInt(index) * 0x94d049bb133111ebn) & 0xffffffffffffffffn;
  x = ((x ^ (x >> 30n)) * 0xbf58476d1ce4e5b9n) & 0xffffffffffffffffn;
  x = ((x ^ (x >> 27n)) * 0x94d049bb133111ebn) & 0xffffffffffffffffn;
  x ^= x >> 31n;
  return Number(x >> 11n) / 2 ** 53;
}

/** The corpus that installs with kiln (nlp-corpus: ~9 MB of English sentences, MIT). */
export async function bundledCorpus(maxDocuments = Infinity): Promise<string[]> {
  const all = (await import('nlp-corpus')).default.all();
  // group sentences into documents of ~20 sentences so the split and EOT boundaries are meaningful
  const docs: string[] = [];
  for (let i = 0; i < all.length && docs.length < maxDocuments; i += 20) docs.push(all.slice(i, i + 20).join(' '));
  return docs;
}
