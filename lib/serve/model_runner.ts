/**
 * The LLaMA forward for serving: one call runs a ragged batch of N tokens (one decode token for
 * each running sequence plus prefill chunks) over the paged KV cache, and returns the logits of
 * the rows that sample. Composes kiln ops; owns the weights (in the compute dtype), the K/V
 * block tensors of every layer and the per-iteration buffers, allocated once for the largest
 * batch (maxBatchTokens) and used through views, so a steady-state iteration allocates only the
 * logits it hands to JS.
 *
 * Per layer (token n of sequence s at position p_n; h the residual stream, (N, d)), the block
 * training runs too (lib/model/block.ts: the family's biases, q/k norms and scaled RoPE), with the
 * paged cache as its attention backend:
 *   y = rmsnorm(h)·w_in;  q, k, v = y·Wqᵀ, y·Wkᵀ, y·Wvᵀ;  q, k = rope(q, k; p_n)
 *   K/V cache[s, p_n] = k_n, v_n                                  (ops.kvAppend, row n -> s's blocks)
 *   o_n = softmax(q_n·K[s, 0..p_n]ᵀ / √D)·V[s, 0..p_n]            (ops.attentionDecode, row n: s's
 *                                                                   block table, length p_n + 1)
 *   h' = h + o·Woᵀ;  y2 = rmsnorm(h')·w_post;  h'' = h' + swiglu(y2·[Wgate | Wup]ᵀ)·Wdownᵀ
 * Tokens of one prefill chunk attend causally to each other and to the cached prefix because
 * each row reads the cache up to its own position after the whole chunk was appended.
 *
 * Batch invariance: every op here computes a row from that row alone (matmuls with
 * batchInvariant, so the CPU GEMM takes the same path for 1 row as for 512), so a sequence's
 * tokens are bit-identical whatever shares the batch, and chunking, preemption (recompute) and
 * prefix-cache hits change nothing.
 */
import type { Device } from '../device.js';
import type { DType } from '../dtype.js';
import { fail } from '../errors.js';
import type { RawTensor } from '../io/safetensors.js';
import type { ModelConfig } from '../model/config.js';
import { type LayerFeatures, type ParameterSpec, architecture, modelLayout, ropeInverseFrequencies } from '../model/arch/index.js';
import { type BlockBackend, type BlockBuffers, type BlockWeights, blockForward } from '../model/block.js';
import * as ops from '../ops/index.js';
import { Tensor, empty, tensor } from '../tensor.js';

export interface RunnerOptions {
  device: Device;
  computeDType: 'f32' | 'bf16';
  numBlocks: number;
  blockSize: number;
  /** tokens per iteration at most */
  maxTokens: number;
  /** rows that sample per iteration at most */
  maxSampleRows: number;
}

/** One iteration's input: N tokens (row n belongs to a sequence whose block table is row n of `tables`). */
export interface RunnerBatch {
  ids: Int32Array; // (N)
  positions: Int32Array; // (N)
  /** (N, width) block tables, row n = the table of token n's sequence (padded with any valid block id) */
  tables: Int32Array;
  width: number;
  /** rows of the batch whose logits are wanted (S) */
  sampleRows: Int32Array;
}

const BYTES: Record<string, number> = { f32: 4, f64: 8, bf16: 2, f16: 2, i32: 4 };

/** A tensor on `device` in `dtype` from a safetensors entry (f32, f64, bf16, f16). */
export function tensorFromRaw(raw: RawTensor, name: string, device: Device, dtype: DType): Tensor {
  const bytes = raw.data.slice().buffer; // aligned copy
  let host: Tensor;
  switch (raw.dtype) {
    case 'f32': host = tensor(new Float32Array(bytes), { shape: raw.shape }); break;
    case 'f64': host = tensor(new Float64Array(bytes), { shape: raw.shape }); break;
    case 'bf16':
    case 'f16': host = empty(raw.shape, { dtype: raw.dtype }).write(new Uint16Array(bytes)); break;
    default: fail('ERR_CHECKPOINT', `${name} is ${raw.dtype}: model weights must be f32, f64, bf16 or f16`);
  }
  if (host.device === device && host.dtype === dtype) return host;
  using temp = host;
  return temp.to(device, dtype);
}

export class ModelRunner {
  readonly config: ModelConfig;
  readonly device: Device;
  readonly dtype: 'f32' | 'bf16';
  readonly numBlocks: number;
  readonly blockSize: number;
  readonly maxTokens: number;
  readonly maxSampleRows: number;
  /** blocks a sequence can hold at most (its context) */
  readonly maxBlocksPerSequence: number;
  private readonly embed: Tensor;
  private readonly head: Tensor;
  private readonly finalNorm: Tensor;
  private readonly layers: BlockWeights[] = [];
  private readonly features: LayerFeatures;
  /** (D/2) f32 inverse frequencies of a scaled RoPE */
  private readonly invFreq?: Tensor;
  private readonly kCache: Tensor[] = [];
  private readonly vCache: Tensor[] = [];
  private readonly owned: Tensor[] = [];
  // per-iteration buffers, (maxTokens, ...) or (maxSampleRows, ...)
  private readonly buffers: Record<string, Tensor> = {};
  private readonly views = new Map<string, Tensor>();

  constructor(config: ModelConfig, weights: Map<string, RawTensor>, options: RunnerOptions) {
    const c = (this.config = config);
    this.device = options.device;
    this.dtype = options.computeDType;
    this.numBlocks = options.numBlocks;
    this.blockSize = options.blockSize;
    this.maxTokens = options.maxTokens;
    this.maxSampleRows = options.maxSampleRows;
    this.maxBlocksPerSequence = Math.ceil(c.context / this.blockSize);
    const used = new Set<string>();
    const load = (name: string, shape: number[]): Tensor => {
      const raw = weights.get(name);
      if (!raw) fail('ERR_CHECKPOINT', `the checkpoint is missing ${name}`);
      if (raw.shape.length !== shape.length || raw.shape.some((d, i) => d !== shape[i])) {
        fail('ERR_CHECKPOINT', `${name} has shape [${raw.shape}] in the checkpoint, [${shape}] in the model`);
      }
      used.add(name);
      const t = tensorFromRaw(raw, name, this.device, this.dtype);
      this.owned.push(t);
      return t;
    };
    this.features = architecture(c).features;
    try {
      const qDim = c.heads * c.headDim;
      const kvDim = c.kvHeads * c.headDim;
      // the parameters the architecture declares, each from its HF tensors (gateUp from gate_proj and up_proj)
      const layout = modelLayout(c);
      const parameter = (spec: ParameterSpec): Tensor => {
        if (spec.hf.length === 1 && !spec.hf[0].rows) return load(spec.hf[0].name, spec.hf[0].shape);
        const whole = this.make(spec.shape);
        for (const hf of spec.hf) {
          const part = load(hf.name, hf.shape);
          ops.copyInto(whole.slice(hf.rows![0], hf.rows![1]), part);
          part.dispose();
        }
        return whole;
      };
      this.embed = parameter(layout.embed);
      for (const specs of layout.layers) this.layers.push(Object.fromEntries(specs.map((spec) => [spec.role, parameter(spec)])) as unknown as BlockWeights);
      this.finalNorm = parameter(layout.finalNorm);
      this.head = layout.head ? parameter(layout.head) : c.tiedEmbeddings && weights.has('lm_head.weight') ? load('lm_head.weight', [c.vocabSize, c.dModel]) : this.embed;
      for (const name of weights.keys()) {
        // HF checkpoints may carry rotary inverse-frequency buffers; anything else is a different model
        if (!used.has(name) && !name.endsWith('rotary_emb.inv_freq')) fail('ERR_CHECKPOINT', `checkpoint tensor ${name} does not belong to a ${architecture(c).modelType} model of this config`);
      }
      if (c.ropeScaling) {
        const host = tensor(Float32Array.from(ropeInverseFrequencies(c.headDim, c.ropeTheta, c.ropeScaling)), { shape: [c.headDim / 2] });
        this.invFreq = host.device === this.device ? host : host.to(this.device);
        if (this.invFreq !== host) host.dispose();
        this.owned.push(this.invFreq);
      }
      const cacheShape = [this.numBlocks, this.blockSize, c.kvHeads, c.headDim];
      for (let i = 0; i < c.layers; i++) {
        this.kCache.push(this.make(cacheShape));
        this.vCache.push(this.make(cacheShape));
      }
      const T = this.maxTokens, S = this.maxSampleRows;
      const b = this.buffers;
      b.ids = this.make([T], 'i32');
      b.positions = this.make([T], 'i32');
      b.seqLens = this.make([T], 'i32');
      b.tables = this.make([T * this.maxBlocksPerSequence], 'i32');
      b.sampleRows = this.make([S], 'i32');
      b.hA = this.make([T, c.dModel]);
      b.hB = this.make([T, c.dModel]);
      b.y = this.make([T, c.dModel]);
      b.rstd = this.make([T], 'f32');
      b.q = this.make([T, qDim]);
      b.k = this.make([T, kvDim]);
      b.v = this.make([T, kvDim]);
      b.attn = this.make([T, qDim]);
      b.lse = this.make([T, c.heads], 'f32');
      if (this.features.qkNorm) {
        b.qRaw = this.make([T, qDim]);
        b.kRaw = this.make([T, kvDim]);
        b.qRstd = this.make([T * c.heads], 'f32');
        b.kRstd = this.make([T * c.kvHeads], 'f32');
      }
      if (this.features.qkvBias) b.biasRows = this.make([T], 'i32').write(new Int32Array(T));
      b.gu = this.make([T, 2 * c.ffn]);
      b.s = this.make([T, c.ffn]);
      b.last = this.make([S, c.dModel]);
      b.lastY = this.make([S, c.dModel]);
      b.lastRstd = this.make([S], 'f32');
      b.logits = this.make([S, c.vocabSize], 'f32');
    } catch (error) {
      this.dispose();
      throw error;
    }
  }

  private make(shape: number[], dtype: DType = this.dtype): Tensor {
    const t = empty(shape, { device: this.device, dtype });
    this.owned.push(t);
    return t;
  }

  /** Bytes of one cache block over all layers (K and V). */
  get blockBytes(): number {
    const c = this.config;
    return 2 * c.layers * this.blockSize * c.kvHeads * c.headDim * BYTES[this.dtype];
  }

  /** A view of the first rows of a buffer, reshaped; views are cached per shape. */
  private view(name: string, shape: number[]): Tensor {
    const key = `${name}:${shape.join('x')}`;
    let v = this.views.get(key);
    if (!v) {
      const numel = shape.reduce((p, q) => p * q, 1);
      const buffer = this.buffers[name];
      v = buffer.reshape(buffer.numel).slice(0, numel).reshape(shape);
      if (this.views.size > 4096) this.views.clear();
      this.views.set(key, v);
    }
    return v;
  }

  /** Runs one iteration and returns the logits (S, V) f32 of the sampled rows. */
  async run(batch: RunnerBatch): Promise<Float32Array> {
    const c = this.config;
    const N = batch.ids.length;
    const S = batch.sampleRows.length;
    const W = batch.width;
    if (N < 1 || N > this.maxTokens || S > this.maxSampleRows || W < 1 || W > this.maxBlocksPerSequence || batch.tables.length !== N * W || batch.positions.length !== N) {
      fail('ERR_INTERNAL', `bad serving batch: ${N} tokens, ${S} sampled rows, table width ${W}`);
    }
    const seqLens = new Int32Array(N);
    let maxLen = 1;
    for (let n = 0; n < N; n++) maxLen = Math.max(maxLen, (seqLens[n] = batch.positions[n] + 1));
    const ids = this.view('ids', [N]).write(batch.ids);
    const positions = this.view('positions', [1, N]).write(batch.positions);
    const lens = this.view('seqLens', [N]).write(seqLens);
    const table = this.view('tables', [N, W]).write(batch.tables);
    const flatPositions = this.view('positions', [N]);
    const hA = this.view('hA', [N, c.dModel]);
    const hB = this.view('hB', [N, c.dModel]);
    const y = this.view('y', [N, c.dModel]);
    const rstd = this.view('rstd', [N]);
    const q = this.view('q', [N, c.heads * c.headDim]);
    const k = this.view('k', [N, c.kvHeads * c.headDim]);
    const v = this.view('v', [N, c.kvHeads * c.headDim]);
    const q4 = this.view('q', [1, N, c.heads, c.headDim]);
    const k4 = this.view('k', [1, N, c.kvHeads, c.headDim]);
    const kNew = this.view('k', [N, 1, c.kvHeads, c.headDim]);
    const vNew = this.view('v', [N, 1, c.kvHeads, c.headDim]);
    const q3 = this.view('q', [N, c.heads, c.headDim]);
    const attn3 = this.view('attn', [N, c.heads, c.headDim]);
    const attn = this.view('attn', [N, c.heads * c.headDim]);
    const lse = this.view('lse', [N, c.heads]);
    const gu = this.view('gu', [N, 2 * c.ffn]);
    const s = this.view('s', [N, c.ffn]);
    const buffers: BlockBuffers = {
      h: hA, y1: y, rstd1: rstd, q, k, v, qHeads: q4, kHeads: k4, vHeads: this.view('v', [1, N, c.kvHeads, c.headDim]),
      ...(this.features.qkNorm
        ? { qRaw: this.view('qRaw', [N, c.heads * c.headDim]), kRaw: this.view('kRaw', [N, c.kvHeads * c.headDim]), qRstd: this.view('qRstd', [N * c.heads]), kRstd: this.view('kRstd', [N * c.kvHeads]) }
        : {}),
      ...(this.features.qkvBias ? { biasRows: this.view('biasRows', [N]) } : {}),
      attn, attnHeads: this.view('attn', [1, N, c.heads, c.headDim]), hMid: hB, y2: y, rstd2: rstd, gu, s, out: hA,
    };
    ops.embedding(this.embed, ids, { out: hA });
    for (let i = 0; i < c.layers; i++) {
      const cache = { k: this.kCache[i], v: this.vCache[i], blockTable: table };
      const backend: BlockBackend = {
        positions,
        ...(this.invFreq ? { invFreq: this.invFreq } : {}),
        matmul: (x, w, out, residual, accumulate) =>
          void ops.matmul(x, w, residual ? { transB: true, out, epilogue: 'residual', residual, batchInvariant: true } : { transB: true, out, batchInvariant: true, ...(accumulate ? { beta: 1 } : {}) }),
        // this step's k/v into the cache, then each row attends to its sequence up to its own position
        attention: () => {
          ops.kvAppend(cache, kNew, vNew, flatPositions);
          ops.attentionDecode(q3, cache, lens, { out: attn3, lse, maxSeqLen: maxLen });
        },
      };
      blockForward(c, this.features, this.layers[i], buffers, backend);
    }
    if (S === 0) {
      await ids.toArray(); // waits for the iteration (the K/V it wrote) without reading logits
      return new Float32Array(0);
    }
    const rows = this.view('sampleRows', [S]).write(batch.sampleRows);
    const last = this.view('last', [S, c.dModel]);
    const lastY = this.view('lastY', [S, c.dModel]);
    ops.embedding(hA, rows, { out: last }); // gathers the sampled rows of the residual stream
    ops.rmsnorm(last, this.finalNorm, { eps: c.normEps, y: lastY, rstd: this.view('lastRstd', [S]) });
    const logits = this.view('logits', [S, c.vocabSize]);
    ops.matmul(lastY, this.head, { transB: true, out: logits, batchInvariant: true });
    return (await logits.toArray()) as Float32Array;
  }

  dispose(): void {
    this.views.clear();
    for (const t of this.owned) t.dispose();
    this.owned.length = 0;
  }
}
