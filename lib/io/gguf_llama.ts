/**
 * A kiln checkpoint as a GGUF file for llama.cpp's "llama" architecture (`kiln export --format
 * gguf`): hyperparameters, the tokenizer as a GGUF vocabulary, and the weights under llama.cpp's
 * tensor names in f32, f16 or bf16 (norms stay f32, as llama.cpp's own converter keeps them).
 *
 * Rotary layout. kiln (like Hugging Face) rotates the pairs (i, i + D/2) of each head with
 * frequency base^(-2i/D) ("rotate_half"); llama.cpp's llama architecture rotates adjacent pairs
 * (2i, 2i + 1) with the same frequency. Reordering the output rows of W_q and W_k within each
 * head, new row 2i = old row i and new row 2i + 1 = old row i + D/2, makes llama.cpp rotate
 * exactly the pairs kiln rotates. q·k is a sum over the head dimension, so applying the same
 * reordering to q and k leaves every attention score unchanged; V and O are untouched.
 *
 * Tokenizers. Both are written as byte-level BPE ("gpt2" model, GPT-2 pre-tokenizer), whose
 * token texts are bytes spelled through GPT-2's byte-to-unicode table:
 *   - byte (256 ids): id b is the byte b, no merges, so every byte is its own token, exactly as
 *     kiln encodes; id 0 (kiln's end of text) is a control token "<|endoftext|>".
 *   - gpt2 (r50k_base, 50257 ids): the vocabulary of gpt-tokenizer and its merges, recovered
 *     from the ranks (each multi-byte token is the merge of the two parts byte-pair encoding
 *     with only lower ranks leaves it in, ordered by the token's rank).
 * A model vocabulary larger than the tokenizer's (50304 = 50257 padded) is filled with unused
 * "[PADn]" tokens so the embedding rows and the vocabulary agree.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { fail } from '../errors.js';
import { type Tokenizer, tokenizerByName } from '../data/tokenizer.js';
import type { ModelConfig } from '../model/config.js';
import { architecture, layoutParameters, modelLayout } from '../model/arch/index.js';
import { loadCheckpoint, resolveCheckpoint } from './checkpoint.js';
import { type GgufTensor, type GgufTensorDType, type GgufValue, f32ToBf16Bits, f32ToF16Bits, writeGguf } from './gguf.js';

/** llama.cpp's token types (llama_token_type). */
export const TokenType = { normal: 1, control: 3, unused: 5 } as const;

/** llama.cpp's file types (llama_ftype) for the dtypes kiln writes. */
const FILE_TYPE: Record<GgufTensorDType, number> = { f32: 0, f16: 1, bf16: 32 };

export interface GgufVocabulary {
  tokens: string[];
  tokenTypes: number[];
  merges: string[];
  bos: number;
  eos: number;
}

/** GPT-2's reversible map from bytes to printable unicode characters (byte-level BPE's token spelling). */
export function byteToUnicode(): string[] {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const table: string[] = [];
  let next = 256;
  for (let b = 0; b < 256; b++) table[b] = String.fromCodePoint(printable(b) ? b : next++);
  return table;
}

const spell = (bytes: Uint8Array | number[], table: string[]) => Array.from(bytes, (b) => table[b]).join('');

/** The tokenizer as a GGUF byte-level BPE vocabulary of exactly `vocabSize` tokens. */
export async function ggufVocabulary(tokenizer: Tokenizer, vocabSize: number): Promise<GgufVocabulary> {
  if (tokenizer.vocabSize > vocabSize) fail('ERR_ARG', `the ${tokenizer.name} tokenizer has ${tokenizer.vocabSize} ids, more than the model's vocabulary (${vocabSize})`);
  const table = byteToUnicode();
  const tokens: string[] = [];
  const tokenTypes: number[] = [];
  const merges: string[] = [];
  if (tokenizer.name === 'byte') {
    for (let b = 0; b < 256; b++) {
      tokens.push(b === tokenizer.eot ? '<|endoftext|>' : table[b]);
      tokenTypes.push(b === tokenizer.eot ? TokenType.control : TokenType.normal);
    }
  } else if (tokenizer.name === 'gpt2') {
    const ranks = (await import('gpt-tokenizer/bpeRanks/r50k_base')).default as (string | number[])[];
    if (ranks.length !== tokenizer.eot) fail('ERR_INTERNAL', `gpt-tokenizer's r50k_base has ${ranks.length} ranks, expected ${tokenizer.eot}`);
    const bytesOf = ranks.map((r) => (typeof r === 'string' ? Buffer.from(r, 'utf8') : Buffer.from(r)));
    // token bytes (as latin1 keys) -> rank
    const rankOf = new Map<string, number>();
    bytesOf.forEach((b, rank) => rankOf.set(b.toString('latin1'), rank));
    for (const [rank, bytes] of bytesOf.entries()) {
      tokens.push(spell(bytes, table));
      tokenTypes.push(TokenType.normal);
      if (bytes.length < 2) continue;
      // byte-pair encode the token with lower ranks only: the last merge joins two parts
      const parts = Array.from(bytes, (b) => String.fromCharCode(b));
      for (;;) {
        let best = -1;
        let bestRank = rank;
        for (let i = 0; i + 1 < parts.length; i++) {
          const r = rankOf.get(parts[i] + parts[i + 1]);
          if (r !== undefined && r < bestRank) {
            bestRank = r;
            best = i;
          }
        }
        if (best < 0) break;
        parts.splice(best, 2, parts[best] + parts[best + 1]);
      }
      if (parts.length !== 2) fail('ERR_INTERNAL', `gpt2 token ${rank} is not the merge of two lower-ranked tokens`);
      merges.push(parts.map((p) => spell(Buffer.from(p, 'latin1'), table)).join(' '));
    }
    tokens.push('<|endoftext|>');
    tokenTypes.push(TokenType.control);
  } else {
    fail('ERR_ARG', `no GGUF vocabulary for the '${tokenizer.name}' tokenizer (known: byte, gpt2)`);
  }
  for (let i = tokens.length; i < vocabSize; i++) {
    tokens.push(`[PAD${i}]`);
    tokenTypes.push(TokenType.unused);
  }
  return { tokens, tokenTypes, merges, bos: tokenizer.eot, eos: tokenizer.eot };
}

/**
 * Reorders the rows of a (heads * D, cols) projection within each head from rotate_half
 * pairing (i, i + D/2) to adjacent pairing (2i, 2i + 1).
 */
export function permuteForAdjacentRope(w: Float32Array, heads: number, headDim: number, cols: number): Float32Array {
  if (w.length !== heads * headDim * cols) fail('ERR_SHAPE', `projection has ${w.length} values, expected ${heads}·${headDim}·${cols}`);
  const out = new Float32Array(w.length);
  const half = headDim / 2;
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      const base = h * headDim;
      out.set(w.subarray((base + i) * cols, (base + i + 1) * cols), (base + 2 * i) * cols);
      out.set(w.subarray((base + half + i) * cols, (base + half + i + 1) * cols), (base + 2 * i + 1) * cols);
    }
  }
  return out;
}

/** The GGUF metadata of a llama model with this config and vocabulary. */
export function llamaMetadata(config: ModelConfig, vocab: GgufVocabulary, dtype: GgufTensorDType, name: string): Map<string, GgufValue> {
  const u32 = (value: number): GgufValue => ({ type: 'u32', value });
  const f32 = (value: number): GgufValue => ({ type: 'f32', value });
  return new Map<string, GgufValue>([
    ['general.architecture', { type: 'string', value: 'llama' }],
    ['general.name', { type: 'string', value: name }],
    ['general.file_type', u32(FILE_TYPE[dtype])],
    ['general.alignment', u32(32)],
    ['llama.context_length', u32(config.context)],
    ['llama.embedding_length', u32(config.dModel)],
    ['llama.block_count', u32(config.layers)],
    ['llama.feed_forward_length', u32(config.ffn)],
    ['llama.attention.head_count', u32(config.heads)],
    ['llama.attention.head_count_kv', u32(config.kvHeads)],
    ['llama.attention.key_length', u32(config.headDim)],
    ['llama.attention.value_length', u32(config.headDim)],
    ['llama.rope.dimension_count', u32(config.headDim)],
    ['llama.rope.freq_base', f32(config.ropeTheta)],
    ['llama.attention.layer_norm_rms_epsilon', f32(config.normEps)],
    ['llama.vocab_size', u32(config.vocabSize)],
    ['tokenizer.ggml.model', { type: 'string', value: 'gpt2' }],
    ['tokenizer.ggml.pre', { type: 'string', value: 'gpt-2' }],
    ['tokenizer.ggml.tokens', { type: 'array', itemType: 'string', values: vocab.tokens }],
    ['tokenizer.ggml.token_type', { type: 'array', itemType: 'i32', values: vocab.tokenTypes }],
    ['tokenizer.ggml.merges', { type: 'array', itemType: 'string', values: vocab.merges }],
    ['tokenizer.ggml.bos_token_id', u32(vocab.bos)],
    ['tokenizer.ggml.eos_token_id', u32(vocab.eos)],
    ['tokenizer.ggml.add_bos_token', { type: 'bool', value: false }],
    ['tokenizer.ggml.add_eos_token', { type: 'bool', value: false }],
  ]);
}

export interface LlamaGgufOptions {
  /** dtype of the matrices (default f32); norms stay f32 */
  dtype?: GgufTensorDType;
  /** the checkpoint's tokenizer (default: byte for vocabularies of <= 256 ids, else gpt2, as `kiln generate`) */
  tokenizer?: string;
  /** general.name (default: the checkpoint directory) */
  name?: string;
}

export interface LlamaGgufResult {
  path: string;
  bytes: number;
  tensors: number;
  dtype: GgufTensorDType;
  tokenizer: string;
  vocabSize: number;
}

const DTYPES: readonly GgufTensorDType[] = ['f32', 'f16', 'bf16'];

/** Writes the checkpoint at `checkpoint` (a checkpoint or run directory) as a llama GGUF file at `out`, atomically. */
export async function exportLlamaGguf(checkpoint: string, out: string, options: LlamaGgufOptions = {}): Promise<LlamaGgufResult> {
  const dtype = options.dtype ?? 'f32';
  if (!DTYPES.includes(dtype)) fail('ERR_DTYPE', `GGUF export dtype must be one of ${DTYPES.join(', ')}, got ${JSON.stringify(dtype)}`);
  const dir = resolveCheckpoint(checkpoint);
  const { config, weights } = loadCheckpoint(dir);
  // refuse before writing anything: a file llama.cpp would read as a different model is worse than none
  const arch = architecture(config);
  if (arch.gguf !== 'llama') fail('ERR_ARG', `GGUF export writes llama.cpp's llama architecture; this checkpoint is ${arch.modelType}, which kiln cannot export to GGUF yet`);
  if (config.ropeScaling) fail('ERR_ARG', `GGUF export does not write rope_scaling (${config.ropeScaling.type}) yet; this checkpoint needs it`);
  const tokenizer = await tokenizerByName(options.tokenizer ?? (config.vocabSize <= 256 ? 'byte' : 'gpt2'));
  const vocab = await ggufVocabulary(tokenizer, config.vocabSize);

  const used = new Set<string>();
  const take = (name: string, shape: number[]): Float32Array => {
    const w = weights.get(name);
    if (!w) fail('ERR_CHECKPOINT', `checkpoint is missing ${name}`);
    if (w.shape.length !== shape.length || w.shape.some((d, i) => d !== shape[i])) fail('ERR_CHECKPOINT', `${name} has shape [${w.shape}], the config says [${shape}]`);
    used.add(name);
    return w.values instanceof Float32Array ? w.values : Float32Array.from(w.values);
  };
  const encode = (values: Float32Array, as: GgufTensorDType): Uint8Array => {
    const typed = as === 'f32' ? values : as === 'f16' ? f32ToF16Bits(values) : f32ToBf16Bits(values);
    return new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength);
  };
  const tensors: GgufTensor[] = [];
  // each tensor is read from the checkpoint when the writer reaches it, so only one converted copy exists at a time
  const add = (name: string, shape: number[], values: () => Float32Array) => {
    const as = shape.length === 1 ? 'f32' : dtype;
    tensors.push({ name, shape, dtype: as, data: () => encode(values(), as) });
  };
  const c = config;
  // the architecture declares each tensor's GGUF name and its layout transform; check every
  // shape up front so a mismatched checkpoint fails before any file is written
  const plan: [string, string, number[], ((w: Float32Array) => Float32Array)?][] = [];
  for (const spec of layoutParameters(modelLayout(c))) {
    for (const hf of spec.hf) {
      if (!hf.gguf) fail('ERR_INTERNAL', `${hf.name} has no GGUF name in the ${arch.modelType} declaration`);
      const heads = hf.ggufRopeHeads;
      plan.push(heads ? [hf.gguf, hf.name, hf.shape, (w) => permuteForAdjacentRope(w, heads, c.headDim, c.dModel)] : [hf.gguf, hf.name, hf.shape]);
    }
  }
  for (const [, hfName, shape] of plan) take(hfName, shape);
  for (const name of weights.keys()) {
    if (!used.has(name)) fail('ERR_CHECKPOINT', `checkpoint tensor ${name} has no place in llama.cpp's llama architecture${name === 'lm_head.weight' ? ' (config says tie_word_embeddings)' : ''}`);
  }
  for (const [ggufName, hfName, shape, transform] of plan) {
    add(ggufName, shape, () => (transform ? transform(take(hfName, shape)) : take(hfName, shape)));
  }

  mkdirSync(dirname(out), { recursive: true });
  const name = options.name ?? (dir.split(/[\\/]/).filter(Boolean).at(-1) ?? 'kiln');
  const { bytes } = writeGguf(out, llamaMetadata(c, vocab, dtype, name), tensors);
  return { path: out, bytes, tensors: tensors.length, dtype, tokenizer: tokenizer.name, vocabSize: c.vocabSize };
}
