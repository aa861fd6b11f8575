/** A naive f64 attention in JS: the oracle the native CPU and CUDA attention are checked against. */

export interface AttnShape {
  B: number;
  Tq: number;
  Tk: number;
  Hq: number;
  Hkv: number;
  D: number;
}

/** out (B, Tq, Hq, D) and lse (B, Hq, Tq) from q (B, Tq, Hq, D), k, v (B, Tk, Hkv, D). */
export function naiveAttention(
  q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, s: AttnShape, causal: boolean, scale: number,
  roundScores?: (x: number) => number,
): { out: Float64Array; lse: Float64Array } {
  const { B, Tq, Tk, Hq, Hkv, D } = s;
  const out = new Float64Array(B * Tq * Hq * D);
  const lse = new Float64Array(B * Hq * Tq);
  const group = Hq / Hkv;
  const scores = new Float64Array(Tk);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < Hq; h++) {
      const hk = Math.floor(h / group);
      for (let i = 0; i < Tq; i++) {
        const limit = causal ? Math.min(Tk, i + (Tk - Tq) + 1) : Tk;
        let max = -Infinity;
        for (let j = 0; j < limit; j++) {
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[((b * Tq + i) * Hq + h) * D + d] * k[((b * Tk + j) * Hkv + hk) * D + d];
          scores[j] = dot * scale;
          if (scores[j] > max) max = scores[j];
        }
        let sum = 0;
        for (let j = 0; j < limit; j++) {
          scores[j] = Math.exp(scores[j] - max);
          sum += scores[j];
        }
        lse[(b * Hq + h) * Tq + i] = limit > 0 ? max + Math.log(sum) : -Infinity;
        for (let j = 0; j < limit; j++) {
          const p = roundScores ? roundScores(scores[j] / sum) : scores[j] / sum;
          for (let d = 0; d < D; d++) out[((b * Tq + i) * Hq + h) * D + d] += p * v[((b * Tk + j) * Hkv + hk) * D + d];
        }
      }
    }
  }
  return { out, lse };
}
