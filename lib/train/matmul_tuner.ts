/**
 * `kiln tune`'s library half: times every CUDA GEMM candidate on the matmuls a model's training
 * step issues (recorded from the model's own calls: dtypes, layouts, beta, epilogues and sizes, so
 * every tune key the step looks up gets a winner) and records the winner per (device, key) in
 * the tuning table (ops/matmul_tuning.ts) that the matmul dispatcher loads on first use.
 * It lives above the model because it runs the model's step to record its calls.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Device } from '../device.js';
import type { DType } from '../dtype.js';
import { KilnError, fail } from '../errors.js';
import { atomicWriteFile } from '../io/atomic.js';
import { type ModelConfig, parameterLayout, preset } from '../model/config.js';
import { LlamaModel } from '../model/llama.js';
import { type MatmulCall, recordMatmulCalls } from '../ops/matmul.js';
import { type TuneTable, matmulCandidates, matmulWithConfig, readTuneTable, setTunedConfig, tuneDeviceId, tuneTableFile } from '../ops/matmul_tuning.js';
import { deviceTimeBetween, markDeviceTime } from '../runtime.js';
import { randn, zeros } from '../tensor.js';

export interface GemmShape {
  name: string;
  M: number;
  N: number;
  K: number;
  transA: boolean;
  transB: boolean;
}

const GEMM_LABELS: Partial<Record<string, string>> = { q: 'q', k: 'k', v: 'v', o: 'o', gateUp: 'gate+up', down: 'down' };

/**
 * (out, in) of each distinct weight GEMM of a layer, as the architecture declares the layer's
 * matrices (gate and up run as one fused GEMM, 2 x ffn wide); weights of equal shape share a row
 * ('q/o', 'k/v').
 */
export function layerWeights(config: ModelConfig): [string, number, number][] {
  const rows = new Map<string, [string, number, number]>();
  for (const spec of parameterLayout(config).layers[0] ?? []) {
    if (spec.kind !== 'matrix') continue;
    const [out, inner] = spec.shape;
    const key = `${out}x${inner}`;
    const label = GEMM_LABELS[spec.role] ?? spec.role;
    const row = rows.get(key);
    if (row) row[0] += `/${label}`;
    else rows.set(key, [label, out, inner]);
  }
  return [...rows.values()];
}

/**
 * The forward, input-gradient and weight-gradient GEMM shapes of one layer at `tokens` per step
 * (bench/matmul.ts's shape list, the 1.4b preset's layer by default; `kiln tune` tunes the
 * model's recorded calls instead).
 */
export function layerShapes(tokens: number, config: ModelConfig = preset('1.4b')): GemmShape[] {
  const shapes: GemmShape[] = [];
  for (const [name, out, inner] of layerWeights(config)) {
    shapes.push({ name: `${name} fwd T=${tokens}`, M: tokens, N: out, K: inner, transA: false, transB: true });
    shapes.push({ name: `${name} dgrad T=${tokens}`, M: tokens, N: inner, K: out, transA: false, transB: false });
    shapes.push({ name: `${name} wgrad T=${tokens}`, M: out, N: inner, K: tokens, transA: true, transB: false });
  }
  return shapes;
}

function writeTable(table: TuneTable): string {
  const path = tuneTableFile();
  mkdirSync(dirname(path), { recursive: true });
  atomicWriteFile(path, JSON.stringify(table, null, 2) + '\n');
  return path;
}

export interface TuneResult {
  /** e.g. "bf16->f32 tn beta1 M=2048 N=2048 K=16384" */
  name: string;
  call: MatmulCall;
  key: string;
  winner: string;
  winnerMs: number;
  defaultName: string;
  defaultMs: number;
  candidates: { name: string; medianMs: number }[];
}

/** A readable label of a GEMM call (dtypes, layout, epilogue, beta, sizes). */
export function callName(c: MatmulCall): string {
  const p = c.params;
  const epilogue = ['', ' +residual', ' swiglu'][p.epilogue];
  const batch = p.batch > 1 ? ` x${p.batch}` : '';
  return `${c.abDType}->${c.outDType} ${p.transA ? 't' : 'n'}${p.transB ? 't' : 'n'}${epilogue}${p.beta !== 0 ? ` beta${p.beta}` : ''} M=${p.M} N=${p.N} K=${p.K}${batch}`;
}

/** What decides a GEMM's tune key (matmul_cuda_tune_key): one timing per distinct value. */
function callSignature(c: MatmulCall): string {
  const p = c.params;
  return [c.device, c.abDType, c.outDType, p.transA, p.transB, p.epilogue, p.beta !== 0, p.M, p.N, p.K, p.batch].join('|');
}

/** The distinct GEMMs of a list of recorded calls, first occurrence first. */
export function distinctCalls(calls: MatmulCall[]): MatmulCall[] {
  const seen = new Map<string, MatmulCall>();
  for (const c of calls) if (!seen.has(callSignature(c))) seen.set(callSignature(c), c);
  return [...seen.values()];
}

export interface ModelCallOptions {
  device: Device;
  /** sequences and tokens per sequence of the training step */
  batch: number;
  seq: number;
  /** activations' dtype (the model's default: bf16 on CUDA) */
  computeDType?: DType;
  recompute?: boolean;
}

/**
 * The distinct matmuls of one training step (forwardBackward: forward, fused classifier,
 * backward) of a model with `config`, recorded from the model's own calls on `options.device`:
 * the projections (bf16 out), the o and down projections with the residual epilogue, the
 * input gradients (beta 0 and beta 1), the weight gradients (f32 out, beta 1) and the head.
 * The step really runs once (random weights, token ids 0), so it needs the step's memory.
 */
export function modelMatmulCalls(config: ModelConfig, options: ModelCallOptions): MatmulCall[] {
  const { device, batch, seq } = options;
  if (!Number.isInteger(batch) || batch < 1 || !Number.isInteger(seq) || seq < 1) fail('ERR_ARG', 'batch and seq must be positive integers');
  if (seq > config.context) fail('ERR_ARG', `seq ${seq} exceeds the model's context ${config.context}`);
  const model = new LlamaModel(config, { device, computeDType: options.computeDType, recompute: options.recompute ?? false });
  try {
    using ids = zeros([batch, seq], { device, dtype: 'i32' });
    using targets = zeros([batch, seq], { device, dtype: 'i32' });
    const { result: loss, calls } = recordMatmulCalls(() => model.forwardBackward(ids, targets, batch * seq));
    loss.dispose();
    return distinctCalls(calls);
  } finally {
    model.dispose();
  }
}

/** Times every candidate for each call on its device and saves the winners under the call's tune key. */
export async function tuneMatmul(calls: MatmulCall[], repeats = 10): Promise<{ results: TuneResult[]; file: string }> {
  const results: TuneResult[] = [];
  const cache = readTuneTable();
  for (const call of distinctCalls(calls)) {
    const device = call.device;
    if (device === 'cpu') fail('ERR_DEVICE', 'kiln tune measures CUDA GEMM candidates: pass a CUDA device');
    const id = tuneDeviceId(device);
    cache[id] ??= {};
    // operands of the recorded sizes and dtypes, the recorded params: the same tune key
    using a = randn([call.aNumel], { seed: 1, device, dtype: call.abDType });
    using b = randn([call.bNumel], { seed: 2, device, dtype: call.abDType });
    using out = randn([call.outNumel], { seed: 3, device, dtype: call.outDType, std: 0.01 });
    using residual = call.residualNumel === null ? null : randn([call.residualNumel], { seed: 4, device, dtype: call.outDType });
    const params = { ...call.params, reference: false };
    const { key, defaultConfig, candidates } = matmulCandidates(out, a, b, residual, params);
    const timed: { name: string; config: number; medianMs: number }[] = [];
    for (const c of candidates) {
      const run = () => matmulWithConfig(out, a, b, residual, params, c.config);
      for (let i = 0; i < 2; i++) run();
      const times: number[] = [];
      for (let i = 0; i < repeats; i++) {
        const start = markDeviceTime(device);
        run();
        const end = markDeviceTime(device);
        times.push(await deviceTimeBetween(start, end));
      }
      times.sort((x, y) => x - y);
      timed.push({ name: c.name, config: c.config, medianMs: times[Math.floor(times.length / 2)] });
    }
    const name = callName(call);
    if (!timed.length) throw new KilnError('ERR_INTERNAL', `no GEMM candidate can run ${name}`);
    timed.sort((x, y) => x.medianMs - y.medianMs);
    const best = timed[0];
    const fallback = timed.find((t) => t.config === defaultConfig) ?? best;
    setTunedConfig(device, key, best.config);
    cache[id][key] = best.name;
    results.push({
      name, call, key, winner: best.name, winnerMs: best.medianMs, defaultName: fallback.name, defaultMs: fallback.medianMs,
      candidates: timed.map(({ name: n, medianMs }) => ({ name: n, medianMs })),
    });
  }
  return { results, file: writeTable(cache) };
}
