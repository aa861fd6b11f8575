/**
 * A plain f64 forward of the Hugging Face decoders kiln serves (LlamaForCausalLM,
 * Qwen2ForCausalLM, Qwen3ForCausalLM), written from transformers' formulas, token by token,
 * with no kiln op: the oracle the family tests compare kiln's log-probabilities with.
 *   RMSNorm(x) = x / sqrt(mean(x²) + eps) · w
 *   q = Wq·x (+ b_q), k, v likewise; Qwen3: q, k of each head RMSNorm-ed over head_dim
 *   RoPE (rotate_half): q·cos(pos·f) + rotate_half(q)·sin(pos·f), f the inverse frequencies given
 *   attention: softmax(q·kᵀ/√D) over positions ≤ the token's, KV head = head / (Hq / Hkv)
 *   h += Wo·o;  h += Wdown·(silu(Wgate·x2) ⊙ Wup·x2);  logits = Whead·RMSNorm(h)
 */

export interface ReferenceModel {
  vocab: number;
  dModel: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  ffn: number;
  eps: number;
  tied: boolean;
  /** (headDim/2) inverse frequencies, already scaled as the config asks */
  invFreq: ArrayLike<number>;
  /** read q/k/v biases (Qwen2) */
  qkvBias: boolean;
  /** per-head q/k RMSNorm (Qwen3) */
  qkNorm: boolean;
}

function rmsnorm(x: Float64Array, w: ArrayLike<number>, eps: number): Float64Array {
  let ss = 0;
  for (const v of x) ss += v * v;
  const r = 1 / Math.sqrt(ss / x.length + eps);
  return x.map((v, i) => v * r * w[i]);
}

/** y (rows) = W (rows, cols)·x (+ b) */
function linear(W: ArrayLike<number>, rows: number, cols: number, x: Float64Array, b?: ArrayLike<number>): Float64Array {
  const y = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let acc = b ? b[r] : 0;
    for (let c = 0; c < cols; c++) acc += W[r * cols + c] * x[c];
    y[r] = acc;
  }
  return y;
}

function rotate(x: Float64Array, heads: number, D: number, pos: number, invFreq: ArrayLike<number>): void {
  const half = D / 2;
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < half; j++) {
      const theta = pos * invFreq[j];
      const c = Math.cos(theta), s = Math.sin(theta);
      const a = x[h * D + j], b = x[h * D + j + half];
      x[h * D + j] = a * c - b * s;
      x[h * D + j + half] = b * c + a * s;
    }
  }
}

function headNorm(x: Float64Array, heads: number, D: number, w: ArrayLike<number>, eps: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let h = 0; h < heads; h++) out.set(rmsnorm(x.slice(h * D, (h + 1) * D), w, eps), h * D);
  return out;
}

/** Next-token log-probabilities at every position of `ids`: (T) rows of (vocab). */
export function referenceLogProbs(m: ReferenceModel, weights: Map<string, ArrayLike<number>>, ids: number[]): Float64Array[] {
  const W = (name: string) => {
    const w = weights.get(name);
    if (!w) throw new Error(`reference: no tensor ${name}`);
    return w;
  };
  const { dModel: d, heads: Hq, kvHeads: Hkv, headDim: D, ffn, eps } = m;
  const embed = W('model.embed_tokens.weight');
  let h: Float64Array[] = ids.map((id) => Float64Array.from({ length: d }, (_, i) => embed[id * d + i]));
  for (let l = 0; l < m.layers; l++) {
    const p = `model.layers.${l}`;
    const bias = (name: string) => (m.qkvBias ? W(`${p}.self_attn.${name}.bias`) : undefined);
    const keys: Float64Array[] = [];
    const values: Float64Array[] = [];
    const next: Float64Array[] = [];
    for (let t = 0; t < h.length; t++) {
      const x = rmsnorm(h[t], W(`${p}.input_layernorm.weight`), eps);
      let q = linear(W(`${p}.self_attn.q_proj.weight`), Hq * D, d, x, bias('q_proj'));
      let k = linear(W(`${p}.self_attn.k_proj.weight`), Hkv * D, d, x, bias('k_proj'));
      const v = linear(W(`${p}.self_attn.v_proj.weight`), Hkv * D, d, x, bias('v_proj'));
      if (m.qkNorm) {
        q = headNorm(q, Hq, D, W(`${p}.self_attn.q_norm.weight`), eps);
        k = headNorm(k, Hkv, D, W(`${p}.self_attn.k_norm.weight`), eps);
      }
      rotate(q, Hq, D, t, m.invFreq);
      rotate(k, Hkv, D, t, m.invFreq);
      keys.push(k);
      values.push(v);
      const o = new Float64Array(Hq * D);
      for (let hq = 0; hq < Hq; hq++) {
        const kv = Math.floor(hq / (Hq / Hkv));
        const scores = keys.map((key) => {
          let s = 0;
          for (let j = 0; j < D; j++) s += q[hq * D + j] * key[kv * D + j];
          return s / Math.sqrt(D);
        });
        const max = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - max));
        const z = e.reduce((a, b) => a + b, 0);
        for (let u = 0; u <= t; u++) for (let j = 0; j < D; j++) o[hq * D + j] += (e[u] / z) * values[u][kv * D + j];
      }
      const attnOut = linear(W(`${p}.self_attn.o_proj.weight`), d, Hq * D, o);
      const hMid = h[t].map((val, i) => val + attnOut[i]);
      const x2 = rmsnorm(hMid, W(`${p}.post_attention_layernorm.weight`), eps);
      const gate = linear(W(`${p}.mlp.gate_proj.weight`), ffn, d, x2);
      const up = linear(W(`${p}.mlp.up_proj.weight`), ffn, d, x2);
      const act = gate.map((g, i) => (g / (1 + Math.exp(-g))) * up[i]);
      const down = linear(W(`${p}.mlp.down_proj.weight`), d, ffn, act);
      next.push(hMid.map((val, i) => val + down[i]));
    }
    h = next;
  }
  const head = m.tied ? embed : W('lm_head.weight');
  return h.map((row) => {
    const logits = linear(head, m.vocab, d, rmsnorm(row, W('model.norm.weight'), eps));
    const max = Math.max(...logits);
    const lse = max + Math.log(logits.reduce((a, v) => a + Math.exp(v - max), 0));
    return logits.map((v) => v - lse);
  });
}

/** HF's inverse frequencies: base^(-2j/D), then llama3's or linear's scaling (modeling_rope_utils). */
export function hfInverseFrequencies(D: number, base: number, scaling?: Record<string, number | string>): number[] {
  const inv = Array.from({ length: D / 2 }, (_, j) => 1 / base ** ((2 * j) / D));
  if (!scaling) return inv;
  const factor = scaling.factor as number;
  // configs written before transformers renamed the key say type
  if ((scaling.rope_type ?? scaling.type) === 'linear') return inv.map((f) => f / factor);
  const old = scaling.original_max_position_embeddings as number;
  const low = scaling.low_freq_factor as number, high = scaling.high_freq_factor as number;
  return inv.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    const scaled = wavelen > old / low ? f / factor : f;
    const smooth = (old / wavelen - low) / (high - low);
    const medium = !(wavelen < old / high) && !(wavelen > old / low);
    return medium ? (1 - smooth) * (scaled / factor) + smooth * scaled : scaled;
  });
}
