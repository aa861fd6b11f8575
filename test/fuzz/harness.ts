/**
 * The hostile-input fuzzer: seeded, property-based (fast-check) calls of every binding
 * entry point and every public function, each starting from a valid call that is then mutated
 * with hostile values: getters and Proxy traps that dispose tensors mid-call (and reallocate the
 * freed memory as canaries), BigInt, symbols, NaN, huge and negative sizes, SharedArrayBuffer
 * views, aliasing, disposed and fake handles, views.
 *
 * The property of every case: the call returns or throws a KilnError whose code is not
 * ERR_INTERNAL (a user's own exception from a hostile getter passes through unchanged); the queue
 * then drains (no hang, no crash: the runner runs batches in child processes with a watchdog);
 * and no canary (memory reallocated after a mid-call dispose) changed, so no op wrote freed memory.
 */
import fc from 'fast-check';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as kiln from '../../lib/index.js';
import { KilnError } from '../../lib/errors.js';
import { binding } from '../../lib/native.js';
import { generateTokens } from '../oracles/generate_reference.js';

const { Tensor } = kiln;
type Tensor = kiln.Tensor;

/** Thrown by the fuzzer's own hostile getters: kiln must let it through unchanged. */
export class HostileError extends Error {}

interface Ctx {
  /** an alias mutation put one tensor in two places */
  aliased?: boolean;
  tensors: Tensor[];
  canaries: { t: Tensor; value: number }[];
  /** run after the case, awaited (servers close asynchronously) */
  cleanups: (() => unknown)[];
}

/** A small f32 tensor (random values), or zeros of another dtype; registered for disposal. */
function T(ctx: Ctx, shape: number[], dtype: kiln.DType = 'f32'): Tensor {
  const t = dtype === 'f32' || dtype === 'f64' ? kiln.randn(shape, { seed: ctx.tensors.length + 1, dtype }) : kiln.zeros(shape, { dtype });
  ctx.tensors.push(t);
  return t;
}
function I(ctx: Ctx, values: number[]): Tensor {
  const t = kiln.tensor(Int32Array.from(values));
  ctx.tensors.push(t);
  return t;
}

export interface Target {
  name: string;
  kind: 'binding' | 'api';
  /** method targets: slot 0 is the receiver (never replaced by a non-tensor: calling a method on a non-Tensor is plain JS misuse) */
  method?: boolean;
  /** the valid call (async for targets that need a communicator, an engine or a server first) */
  make(ctx: Ctx): unknown[] | Promise<unknown[]>;
  call(args: unknown[]): unknown;
}

const b = () => binding() as unknown as Record<string, (...args: unknown[]) => unknown>;
const bind = (name: string, make: Target['make']): Target => ({ name, kind: 'binding', make, call: (args) => b()[name](...args) });
const h = (t: Tensor) => t.handle;

const matmulParams = () => ({
  M: 2, N: 3, K: 4, batch: 1, transA: false, transB: false, lda: 4, ldb: 3, ldc: 3, ldResidual: 3,
  strideA: 0, strideB: 0, strideC: 0, strideResidual: 0, alpha: 1, beta: 0, epilogue: 0, reference: false,
});
const attentionDims = () => ({ B: 1, Tq: 2, Tk: 2, Hq: 2, Hkv: 1, D: 4, scale: 0.5, causal: true, reference: false });
const kvDims = () => ({ B: 1, Tnew: 2, Hkv: 1, D: 4, blockSize: 2, maxBlocks: 2, numBlocks: 2 });
const decodeDims = () => ({ B: 1, Hq: 2, Hkv: 1, D: 4, blockSize: 2, maxBlocks: 2, numBlocks: 2, scale: 0.5, maxSeqLen: 4, reference: false });
const adamwParams = () => ({ lr: 0.01, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step: 1 });
const nsParams = () => ({ batch: 1, rows: 3, cols: 4, steps: 1, coefficients: [3.4445, -4.775, 2.0315], normScale: 1, eps: 1e-7, compute: 0, reference: false });

const connectOptions = () => ({ rank: 0, worldSize: 1, storeHost: '127.0.0.1', storePort: 0, token: '', prefix: 'fuzz', bindHost: '127.0.0.1', timeoutMs: 2000 });
/** A one-rank communicator, closed after the case (a second close is a no-op or ERR_DISPOSED). */
async function comm(ctx: Ctx): Promise<unknown> {
  const cm = await b().distConnect(connectOptions());
  ctx.cleanups.push(() => b().distClose(cm));
  return cm;
}

/** One valid call per binding entry point (binding.ts); the fuzzer mutates from there. */
export const bindingTargets: Target[] = [
  bind('empty', () => [-1, 0, 4]),
  bind('fromBuffer', () => [-1, 0, new Float32Array(4)]),
  bind('read', (c) => [h(T(c, [4]))]),
  bind('write', (c) => [h(T(c, [4])), new Float32Array(4)]),
  bind('copy', (c) => [h(T(c, [4])), h(T(c, [4]))]),
  bind('fill', (c) => [h(T(c, [4])), 1.5]),
  bind('random', (c) => [h(T(c, [4])), 1, 0, 7, 0, 0, 1]),
  bind('synchronize', () => []),
  bind('info', () => []),
  bind('memoryStats', () => [-1]),
  bind('resetPeakMemory', () => [-1]),
  bind('emptyCache', () => [-1]),
  bind('timerMark', () => [-1]),
  { name: 'timerElapsed', kind: 'binding', make: () => [b().timerMark(-1), b().timerMark(-1)], call: (a) => b().timerElapsed(...a) },
  bind('binary', (c) => [0, h(T(c, [4])), h(T(c, [4])), h(T(c, [4]))]),
  bind('scale', (c) => [h(T(c, [4])), h(T(c, [4])), 2]),
  bind('cast', (c) => [h(T(c, [4], 'bf16')), h(T(c, [4]))]),
  bind('reduceRows', (c) => [h(T(c, [2])), h(T(c, [2, 3])), 2, 3, false]),
  bind('matmul', (c) => [h(T(c, [2, 3])), h(T(c, [2, 4])), h(T(c, [4, 3])), null, matmulParams()]),
  bind('matmulCandidates', (c) => [h(T(c, [2, 3])), h(T(c, [2, 4])), h(T(c, [4, 3])), null, matmulParams()]),
  bind('matmulConfigNames', () => []),
  bind('matmulSetTuned', () => [-1, 'key', 0]),
  bind('attentionForward', (c) => [h(T(c, [16])), h(T(c, [4])), h(T(c, [16])), h(T(c, [8])), h(T(c, [8])), attentionDims()]),
  bind('attentionBackward', (c) => [
    h(T(c, [16])), h(T(c, [8])), h(T(c, [8])), h(T(c, [16])), h(T(c, [8])), h(T(c, [8])), h(T(c, [16])), h(T(c, [4])), h(T(c, [16])), attentionDims(),
  ]),
  bind('rope', (c) => [h(T(c, [16])), h(T(c, [16])), h(I(c, [0, 1])), { B: 1, T: 2, H: 2, D: 4, base: 10000, backward: false }]),
  // rope's optional fifth argument (a scaled RoPE's per-pair inverse frequencies, (D/2) f32): a tensor like the others
  { name: 'rope+invFreq', kind: 'binding', make: (c) => [h(T(c, [16])), h(T(c, [16])), h(I(c, [0, 1])), { B: 1, T: 2, H: 2, D: 4, base: 10000, backward: false }, h(T(c, [2]))], call: (args) => b().rope(...args) },
  bind('kvAppend', (c) => [h(T(c, [16])), h(T(c, [16])), h(T(c, [8])), h(T(c, [8])), h(I(c, [0, 1])), h(I(c, [0])), kvDims()]),
  bind('attentionDecode', (c) => [h(T(c, [8])), h(T(c, [2])), h(T(c, [8])), h(T(c, [16])), h(T(c, [16])), h(I(c, [0, 1])), h(I(c, [3])), decodeDims()]),
  bind('embedding', (c) => [h(T(c, [8])), h(T(c, [12])), h(I(c, [0, 2])), 2, 3, 4]),
  bind('embeddingBackward', (c) => [h(T(c, [12])), h(I(c, [0, 2])), h(T(c, [8])), 2, 3, 4]),
  bind('rmsnorm', (c) => [h(T(c, [8])), h(T(c, [2])), h(T(c, [8])), h(T(c, [4])), 2, 4, 1e-5]),
  bind('rmsnormBackward', (c) => [h(T(c, [8])), h(T(c, [4])), h(T(c, [8])), h(T(c, [8])), h(T(c, [4])), h(T(c, [2])), null, 2, 4]),
  bind('swiglu', (c) => [h(T(c, [6])), h(T(c, [12])), 2, 3]),
  bind('swigluBackward', (c) => [h(T(c, [12])), h(T(c, [12])), h(T(c, [6])), 2, 3]),
  bind('crossEntropy', (c) => [h(T(c, [2])), null, h(T(c, [10])), h(I(c, [1, 4])), 2, 5, 1]),
  bind('gradNormClip', (c) => [[h(T(c, [4])), h(T(c, [3]))], 1, h(T(c, [1]))]),
  bind('pseudoGradientQuantize', (c) => [h(T(c, [2])), h(T(c, [5])), h(T(c, [5])), h(T(c, [5])), 4]),
  bind('dequantizeMean', (c) => [h(T(c, [5])), h(T(c, [4])), 2, 4]),
  bind('outerNesterov', (c) => [h(T(c, [4])), h(T(c, [4])), h(T(c, [4])), h(T(c, [4])), 0.7, 0.9, true, 0.5, true]),
  bind('newtonSchulz', (c) => [h(T(c, [12])), h(T(c, [12])), nsParams()]),
  bind('normuonNormalize', (c) => [h(T(c, [6])), h(T(c, [2])), 2, 3, 0.9, 1e-8]),
  bind('adamwMulti', (c) => [[h(T(c, [4])), h(T(c, [2]))], [h(T(c, [4])), h(T(c, [2]))], [h(T(c, [4])), h(T(c, [2]))], [h(T(c, [4])), h(T(c, [2]))], adamwParams()]),
  bind('muonMomentumMulti', (c) => [[h(T(c, [4])), h(T(c, [2]))], [h(T(c, [4])), h(T(c, [2]))], [h(T(c, [4])), h(T(c, [2]))], 0.9, true]),
  bind('muonApplyMulti', (c) => [[h(T(c, [4])), h(T(c, [2]))], [h(T(c, [4])), h(T(c, [2]))], [1, 0.5], 0.1, 0]),
  bind('newtonSchulzFlops', () => [1, 3, 4, 5, false]),
  bind('cudaArchCoverage', () => [8, 6, '86-real,90a-real,90-virtual']),
  // collectives on a one-rank communicator (no store, no peers): every argument check runs
  bind('distAvailable', () => []),
  { name: 'distConnect', kind: 'binding', make: () => [connectOptions()], call: async (a) => b().distClose(await b().distConnect(...a)) },
  bind('distAllReduce', async (c) => [await comm(c), [h(T(c, [4])), h(T(c, [3]))], true, false, 'grads']),
  bind('distAllReduceRaw', async (c) => [await comm(c), h(T(c, [4])), false, 'loss']),
  bind('distAllGather', async (c) => [await comm(c), h(T(c, [4])), 'gather']),
  bind('distBroadcast', async (c) => [await comm(c), h(T(c, [4])), 0, 'weights']),
  bind('distBarrier', async (c) => [await comm(c), 'barrier']),
  bind('distWait', async (c) => { const cm = await comm(c); return [b().distAllReduceRaw(cm, h(T(c, [4])), true, 'wait')]; }),
  bind('distStats', async (c) => [await comm(c)]),
  bind('distClose', async (c) => [await comm(c)]),
  bind('distNcclStatus', () => []),
  // NativeTensor's own methods
  { name: 'NativeTensor.view', kind: 'binding', method: true, make: (c) => [h(T(c, [8])), 2, 4], call: ([t, ...a]) => (t as { view: (...x: unknown[]) => unknown }).view(...a) },
  { name: 'NativeTensor.dispose', kind: 'binding', method: true, make: (c) => [h(T(c, [8]))], call: ([t]) => (t as { dispose: () => void }).dispose() },
];

const tinyConfig = (): kiln.ModelConfig => ({ vocabSize: 16, dModel: 8, layers: 1, heads: 2, kvHeads: 1, headDim: 4, ffn: 8, context: 8, ropeTheta: 10000, normEps: 1e-5, tiedEmbeddings: false });
const api = (name: string, make: Target['make'], call: (args: unknown[]) => unknown, method = false): Target => ({ name, kind: 'api', make, call, method });
const fn = (name: string, f: (...a: never[]) => unknown, make: Target['make']) => api(name, make, (a) => (f as (...x: unknown[]) => unknown)(...a));
const m = (name: string, make: (ctx: Ctx) => unknown[]) =>
  api(`Tensor.${name}`, make, ([t, ...a]) => (Tensor.prototype as unknown as Record<string, (...x: unknown[]) => unknown>)[name].call(t, ...a), true);
const o = kiln.ops;
function model(ctx: Ctx): kiln.LlamaModel {
  const mdl = new kiln.LlamaModel(tinyConfig(), { seed: 1 });
  ctx.cleanups.push(() => mdl.dispose());
  return mdl;
}
function tempDir(ctx: Ctx): string {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-fuzz-'));
  ctx.cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}
function optimizer(ctx: Ctx, variant: 'standard' | 'extrapolated'): kiln.Optimizer {
  const param = (name: string, shape: number[]) => ({ name, value: T(ctx, shape), grad: T(ctx, shape) });
  const opt = new kiln.Optimizer([
    { rule: 'muon', variant, lr: 0.02, params: [param('w1', [4, 3]), param('w2', [4, 3])] },
    { rule: 'adamw', lr: 0.01, params: [param('n', [3])] },
  ]);
  ctx.cleanups.push(() => opt.dispose());
  return opt;
}

/** One valid call per public function and method (lib/index.ts); the fuzzer mutates from there. */
export const apiTargets: Target[] = [
  fn('tensor', kiln.tensor, () => [[[1, 2], [3, 4]], { dtype: 'f32' }]),
  fn('tensor(typed)', kiln.tensor, () => [new Float32Array(6), { shape: [2, 3] }]),
  fn('empty', kiln.empty, () => [[2, 3], { dtype: 'bf16' }]),
  fn('zeros', kiln.zeros, () => [[2, 3]]),
  fn('ones', kiln.ones, () => [[3], { dtype: 'i32' }]),
  fn('full', kiln.full, () => [[2], 3.5, { dtype: 'f16' }]),
  fn('randn', kiln.randn, () => [[4], { seed: 3, mean: 1, std: 2 }]),
  fn('rand', kiln.rand, () => [[4], { seed: 3n, offset: 2, low: -1, high: 1 }]),
  fn('manualSeed', kiln.manualSeed, () => [5]),
  m('toArray', (c) => [T(c, [4])]),
  m('write', (c) => [T(c, [4]), new Float32Array(4)]),
  m('to', (c) => [T(c, [4]), 'cpu', 'bf16']),
  m('cast', (c) => [T(c, [4]), 'f16']),
  m('clone', (c) => [T(c, [4])]),
  m('reshape', (c) => [T(c, [2, 3]), 3, -1]),
  m('slice', (c) => [T(c, [4, 2]), 1, 3]),
  m('dispose', (c) => [T(c, [4])]),
  m('toString', (c) => [T(c, [4])]),
  fn('ops.add', o.add, (c) => [T(c, [4]), T(c, [4])]),
  fn('ops.mul', o.mul, (c) => [T(c, [4]), T(c, [4])]),
  fn('ops.scale', o.scale, (c) => [T(c, [4]), 2, { out: T(c, [4]) }]),
  fn('ops.cast', o.cast, (c) => [T(c, [4]), 'bf16']),
  fn('ops.sum', o.sum, (c) => [T(c, [2, 3]), { dim: -1 }]),
  fn('ops.mean', o.mean, (c) => [T(c, [2, 3])]),
  fn('ops.matmul', o.matmul, (c) => [T(c, [2, 4]), T(c, [3, 4]), { transB: true, alpha: 1 }]),
  fn('ops.attention', o.attention, (c) => [T(c, [1, 2, 2, 4]), T(c, [1, 2, 1, 4]), T(c, [1, 2, 1, 4]), { causal: true }]),
  fn('ops.attentionBackward', o.attentionBackward, (c) => {
    const [q, k, v] = [T(c, [1, 2, 2, 4]), T(c, [1, 2, 1, 4]), T(c, [1, 2, 1, 4])];
    const r = o.attention(q, k, v);
    c.tensors.push(r.out, r.lse);
    return [q, k, v, r.out, r.lse, T(c, [1, 2, 2, 4])];
  }),
  fn('ops.rope', o.rope, (c) => [T(c, [1, 2, 2, 4]), I(c, [0, 1]).reshape(1, 2), { base: 10000 }]),
  fn('ops.kvAppend', o.kvAppend, (c) => [{ k: T(c, [2, 2, 1, 4]), v: T(c, [2, 2, 1, 4]), blockTable: I(c, [0, 1]).reshape(1, 2) }, T(c, [1, 2, 1, 4]), T(c, [1, 2, 1, 4]), I(c, [0])]),
  fn('ops.attentionDecode', o.attentionDecode, (c) => [T(c, [1, 2, 4]), { k: T(c, [2, 2, 1, 4]), v: T(c, [2, 2, 1, 4]), blockTable: I(c, [0, 1]).reshape(1, 2) }, I(c, [3])]),
  fn('ops.newtonSchulz', o.newtonSchulz, (c) => [T(c, [3, 4]), { coefficients: 'polar-express' }]),
  fn('ops.newtonSchulzFlops', o.newtonSchulzFlops, () => [1, 3, 4, 5, true]),
  fn('ops.embedding', o.embedding, (c) => [T(c, [3, 4]), I(c, [0, 2])]),
  fn('ops.embeddingBackward', o.embeddingBackward, (c) => [T(c, [3, 4]), I(c, [0, 2]), T(c, [2, 4])]),
  fn('ops.rmsnorm', o.rmsnorm, (c) => [T(c, [2, 4]), T(c, [4]), { eps: 1e-5 }]),
  fn('ops.rmsnormBackward', o.rmsnormBackward, (c) => [T(c, [2, 4]), T(c, [2, 4]), T(c, [4]), T(c, [2]), { dweight: T(c, [4]) }]),
  fn('ops.swiglu', o.swiglu, (c) => [T(c, [2, 6])]),
  fn('ops.swigluBackward', o.swigluBackward, (c) => [T(c, [2, 6]), T(c, [2, 3])]),
  fn('ops.crossEntropy', o.crossEntropy, (c) => [T(c, [2, 5]), I(c, [1, 4]), { gradScale: 0.5 }]),
  fn('ops.fill', o.fill, (c) => [T(c, [4]), 2]),
  fn('ops.copyInto', o.copyInto, (c) => [T(c, [4]), T(c, [4])]),
  fn('ops.gradNormClip', o.gradNormClip, (c) => [[T(c, [4]), T(c, [2, 2])], 1]),
  fn('ops.pseudoGradientQuantize', o.pseudoGradientQuantize, (c) => [T(c, [2]), T(c, [5]), T(c, [5]), T(c, [5]), 4]),
  fn('ops.dequantizeMean', o.dequantizeMean, (c) => [T(c, [5]), T(c, [4]), 2, 4]),
  fn('ops.outerNesterov', o.outerNesterov, (c) => [T(c, [4]), T(c, [4]), T(c, [4]), T(c, [4]), { lr: 0.7, momentum: 0.9, mixAlpha: 0.5 }]),
  fn('synchronize', kiln.synchronize, () => []),
  fn('memoryStats', kiln.memoryStats, () => ['cpu']),
  fn('resetPeakMemory', kiln.resetPeakMemory, () => ['cpu']),
  fn('emptyCache', kiln.emptyCache, () => ['cpu']),
  fn('cudaDeviceCount', kiln.cudaDeviceCount, () => []),
  fn('defaultDevice', kiln.defaultDevice, () => []),
  fn('info', kiln.info, () => []),
  fn('formatInfo', kiln.formatInfo, () => [kiln.info()]),
  fn('datasheetPeak', kiln.datasheetPeak, () => ['NVIDIA A40']),
  fn('describe', kiln.describe, () => [{}]),
  fn('preset', kiln.preset, () => ['tiny']),
  fn('validateConfig', kiln.validateConfig, () => [tinyConfig()]),
  fn('toHfConfig', kiln.toHfConfig, () => [tinyConfig()]),
  fn('fromHfConfig', kiln.fromHfConfig, () => [kiln.toHfConfig(tinyConfig())]),
  fn('matmulParameters', kiln.matmulParameters, () => [tinyConfig()]),
  fn('totalParameters', kiln.totalParameters, () => [tinyConfig()]),
  fn('parameterLayout', kiln.parameterLayout, () => [tinyConfig()]),
  fn('trainingFlopsPerToken', kiln.trainingFlopsPerToken, () => [tinyConfig(), 8]),
  fn('newtonSchulzFlops', kiln.newtonSchulzFlops, () => [1, 3, 4]),
  fn('lrMultiplier', kiln.lrMultiplier, () => [{ kind: 'cosine', warmupSteps: 2, totalSteps: 10 }, 3]),
  api('LlamaModel', () => [tinyConfig(), { seed: 1 }], ([config, options]) => new kiln.LlamaModel(config as kiln.ModelConfig, options as kiln.ModelOptions).dispose()),
  api('LlamaModel.forward', (c) => [model(c), I(c, [1, 2, 3, 4]).reshape(1, 4), false], ([mdl, ...a]) => (mdl as kiln.LlamaModel).forward(...(a as [Tensor, boolean])), true),
  api('LlamaModel.forwardBackward', (c) => [model(c), I(c, [1, 2, 3, 4]).reshape(1, 4), I(c, [2, 3, 4, 5]).reshape(1, 4), 4], ([mdl, ...a]) => (mdl as kiln.LlamaModel).forwardBackward(...(a as [Tensor, Tensor, number])), true),
  api('LlamaModel.loadWeights', (c) => { const mdl = model(c); return [mdl, new Map([['model.norm.weight', { shape: [8], values: new Float32Array(8) }]])]; }, ([mdl, w]) => (mdl as kiln.LlamaModel).loadWeights(w as never), true),
  fn('llamaParamGroups', kiln.llamaParamGroups, (c) => [model(c).parameters, { muon: { lr: 0.01 } }]),
  api('Optimizer', (c) => [[{ rule: 'adamw', lr: 0.01, params: [{ name: 'a', value: T(c, [4]), grad: T(c, [4]) }] }]], ([groups]) => new kiln.Optimizer(groups as kiln.ParamGroup[]).dispose()),
  api('Optimizer.update', (c) => [optimizer(c, 'standard'), 0.5], ([opt, lr]) => (opt as kiln.Optimizer).update(lr as number), true),
  api('Optimizer.extrapolated', (c) => [optimizer(c, 'extrapolated'), 1], ([opt, lr]) => { (opt as kiln.Optimizer).prepareGradientPoint(); (opt as kiln.Optimizer).update(lr as number); }, true),
  api('Trainer', (c) => [{ config: tinyConfig(), data: join(tempDir(c), 'missing'), steps: 1, batch: 1, seqLen: 4 }], ([options]) => new kiln.Trainer(options as kiln.TrainOptions)),
  fn('loadCheckpoint', kiln.loadCheckpoint, (c) => [tempDir(c)]),
  fn('resolveCheckpoint', kiln.resolveCheckpoint, (c) => [tempDir(c)]),
  fn('saveCheckpoint', kiln.saveCheckpoint, (c) => [join(tempDir(c), 'ckpt'), tinyConfig(), new Map([['w', T(c, [2])]]), undefined, undefined]),
  fn('loadModel', kiln.loadModel, (c) => [tempDir(c)]),
  fn('generateTokens', generateTokens, (c) => [model(c), [1, 2], { maxTokens: 2, seed: 1 }]),
  fn('cudaArchCoverage', kiln.cudaArchCoverage, () => ['8.6', ['86-real', '90a-real', '90-virtual']]),
  // serving: one engine per process on a random-weight byte-vocabulary checkpoint
  api('Engine', async () => [await checkpointDir(), { device: 'cpu', kvCacheBlocks: 8, blockSize: 4, maxBatchTokens: 16 }], async ([dir, options]) => {
    await (await kiln.Engine.load(dir as string, options as kiln.EngineLoadOptions)).close();
  }),
  api('Engine.generate', async () => [await engine(), 'ab', { maxTokens: 2, temperature: 0.5, topK: 4, seed: 1, stopStrings: ['z'], logprobs: 2 }, {}],
    ([e, ...a]) => (e as kiln.Engine).generate(...(a as [string])), true),
  api('Engine.stream', async () => [await engine(), [97, 98], { maxTokens: 2, seed: 2 }, { signal: new AbortController().signal }], async ([e, ...a]) => {
    for await (const _ of (e as kiln.Engine).stream(...(a as [string]))) { /* drain */ }
  }, true),
  api('ChatTemplate', () => [undefined, { bos: '<s>', eos: '</s>' }], ([source, special]) => new kiln.ChatTemplate(source as string, special as never)),
  api('ChatTemplate.render', () => [new kiln.ChatTemplate(undefined), [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hi' }]],
    ([t, messages]) => (t as kiln.ChatTemplate).render(messages as kiln.ChatMessage[]), true),
  api('HttpError', () => [429, 'slow down', 'rate_limit_error', 'rate_limit_exceeded', null, { 'retry-after': '1' }],
    (a) => new (kiln.HttpError as unknown as new (...x: unknown[]) => kiln.HttpError)(...a).body()),
  fn('toHttpError', kiln.toHttpError, () => [new KilnError('ERR_BUSY', 'queue full'), 2]),
  api('createServer', async () => [await engine(), { apiKey: 'k', modelName: 'fuzz', bodyLimit: 4096, retryAfterSeconds: 1, logger: false, processMetrics: false }],
    async ([e, options]) => {
      const app = kiln.createServer(e as kiln.Engine, options as kiln.ServerOptions);
      try {
        await app.listen({ host: '127.0.0.1', port: 0 });
        await app.inject({ method: 'GET', url: '/health' });
      } finally {
        await app.close();
      }
    }),
  // monitoring: every dashboard binds 127.0.0.1 port 0 and is closed after the case
  api('Dashboard', () => [{ port: 0, host: '127.0.0.1', title: 'fuzz' }], async ([options]) => (await kiln.Dashboard.start(options as kiln.DashboardOptions)).close()),
  fn('startDashboard', async (options: kiln.DashboardOptions) => (await kiln.startDashboard(options)).close(), () => [{ port: 0, host: '127.0.0.1', token: 't' }]),
  api('Dashboard.addStep', async (c) => {
    const d = await dashboard(c);
    return [d, d.addRun('fuzz', { totalSteps: 10 }), { step: 1, loss: 2.5, lr: 0.01, tokens: 64, tokensPerSecond: 1000, gradNorm: 1 }, 5];
  }, ([d, run, record, now]) => (d as kiln.Dashboard).addStep(run as never, record as never, now as number), true),
  api('Dashboard.addRun', async (c) => [await dashboard(c), 'fuzz', { totalSteps: 10, source: 'live' }], ([d, ...a]) => (d as kiln.Dashboard).addRun(...(a as [string])), true),
  api('attachServingDashboard', async () => [await engine(), { port: 0, host: '127.0.0.1', intervalMs: 50 }],
    async ([e, options]) => (await kiln.attachServingDashboard(e as kiln.Engine, options as never)).close()),
  api('attachTrainingDashboard', () => [stepSource(), { port: 0, host: '127.0.0.1', name: 'fuzz' }], async ([source, options]) => {
    const { dashboard: d, detach } = await kiln.attachTrainingDashboard(source as never, options as never);
    detach();
    await d.close();
  }),
  fn('renderReport', kiln.renderReport, () => [[loadedResult()], [{ file: 'x.json', reason: 'foreign' }], { title: 'fuzz' }]),
  fn('writeReport', kiln.writeReport, (c) => {
    const dir = tempDir(c);
    writeFileSync(join(dir, 'r.json'), JSON.stringify(loadedResult()));
    return [[dir], join(dir, 'report.html'), { title: 'fuzz' }];
  }),
];

let checkpointPromise: Promise<string> | undefined;
/** A random-weight checkpoint with a byte vocabulary, made once per process (removed at exit). */
function checkpointDir(): Promise<string> {
  checkpointPromise ??= (async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kiln-fuzz-ckpt-'));
    process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
    const config = { ...tinyConfig(), vocabSize: 256, context: 32 };
    const mdl = new kiln.LlamaModel(config, { seed: 1 });
    try {
      return await kiln.saveCheckpoint(join(dir, 'ckpt'), config, mdl.namedWeights(), undefined, undefined);
    } finally {
      mdl.dispose();
    }
  })();
  return checkpointPromise;
}
let enginePromise: Promise<kiln.Engine> | undefined;
/** One engine per process: hostile cases share it (a case that could close it would be a finding). */
async function engine(): Promise<kiln.Engine> {
  enginePromise ??= kiln.Engine.load(await checkpointDir(), { device: 'cpu', kvCacheBlocks: 16, blockSize: 4, maxBatchTokens: 32 });
  return enginePromise;
}
async function dashboard(ctx: Ctx): Promise<kiln.Dashboard> {
  const d = await kiln.startDashboard({ port: 0, host: '127.0.0.1' });
  ctx.cleanups.push(() => d.close());
  return d;
}
function stepSource() {
  return { onStep: () => () => undefined, options: { steps: 10 }, currentStep: 0 };
}
function loadedResult() {
  return {
    file: 'matmul.json', benchmark: 'matmul', date: '2026-12-02T00:00:00Z', commit: 'abc',
    kiln: { platform: 'linux', cpuThreads: 2, devices: [{ device: 'cpu', name: 'cpu' }] },
    results: [{ device: 'cpu', dtype: 'f32', M: 64, N: 64, K: 64, medianMs: 0.1, tflops: 0.005 }],
  };
}

// ---- hostile values ---------------------------------------------------------------------------

function victimOf(ctx: Ctx, index: number): Tensor | undefined {
  return ctx.tensors.length ? ctx.tensors[index % ctx.tensors.length] : undefined;
}

/** Disposes the victim and reallocates its freed bytes as canaries that no op may touch. */
function strike(ctx: Ctx, victimIndex: number, realloc: boolean): void {
  const victim = victimOf(ctx, victimIndex);
  if (!victim || victim.disposed) return;
  const numel = Math.max(1, victim.numel);
  victim.dispose();
  if (!realloc) return;
  for (let i = 0; i < 2; i++) {
    const canary = kiln.full([numel * (victim.dtype === 'f64' ? 2 : 1)], 7.25);
    ctx.canaries.push({ t: canary, value: 7.25 });
  }
}

function revokedProxy(): object {
  const { proxy, revoke } = Proxy.revocable({}, {});
  revoke();
  return proxy;
}

function sharedFloat32(n: number): Float32Array {
  return new Float32Array(new SharedArrayBuffer(4 * n));
}

function detachedFloat32(): Float32Array {
  const buffer = new ArrayBuffer(16);
  const view = new Float32Array(buffer);
  structuredClone(buffer, { transfer: [buffer] });
  return view;
}

/** The pool of hostile values; `kind` picks one. Tensor-ish values suit the target's kind. */
function hostile(ctx: Ctx, kind: number, target: Target, victim: number): unknown {
  const apiKind = target.kind === 'api';
  const tensorish = (t: Tensor) => (apiKind ? t : t.handle);
  const pool: (() => unknown)[] = [
    () => undefined, () => null, () => NaN, () => -1, () => -0, () => 0.5, () => 2 ** 31, () => 2 ** 53, () => 2 ** 64, () => 1e308,
    () => Infinity, () => -Infinity, () => 1n, () => -(2n ** 70n), () => Symbol('hostile'), () => '', () => 'cpu', () => 'f32', () => 'cuda:0', () => true,
    () => ({}), () => [], () => [1, -2, 3.5], () => Object.create(null), () => new Proxy({}, {}), () => revokedProxy(), () => () => 1,
    () => { const t = T(ctx, [4]); t.dispose(); return tensorish(t); },
    () => (apiKind ? Object.create(Tensor.prototype) : Object.create(Object.getPrototypeOf(T(ctx, [1]).handle))),
    () => tensorish(T(ctx, [4], 'i32')),
    () => tensorish(T(ctx, [4], 'bf16')),
    () => tensorish(T(ctx, [1000])),
    () => tensorish(T(ctx, [0])),
    () => tensorish(T(ctx, [8]).slice(2, 6)),
    () => { const view = T(ctx, [8]).slice(0, 4); view.dispose(); return tensorish(view); }, // a disposed view
    () => { const parent = T(ctx, [8]); const view = parent.slice(4, 8); ctx.tensors.push(view); parent.dispose(); return tensorish(view); }, // a view outliving its parent
    () => (apiKind ? new Proxy(T(ctx, [4]), {}) : new Proxy(T(ctx, [4]).handle, {})),
    () => tensorish(victimOf(ctx, victim) ?? T(ctx, [4])),
    () => sharedFloat32(4),
    () => new Float64Array(4),
    () => new DataView(new ArrayBuffer(16)),
    () => detachedFloat32(),
    () => ({ valueOf: () => { strike(ctx, victim, true); return 1; } }),
    () => ({ get M() { throw new HostileError('getter'); }, get B() { throw new HostileError('getter'); } }),
    () => new Proxy({}, { get: () => { throw new HostileError('trap'); }, has: () => { throw new HostileError('trap'); }, ownKeys: () => { throw new HostileError('trap'); } }),
    () => [new Proxy([], {})],
    () => new Array(2 ** 20),
  ];
  return pool[kind % pool.length]();
}

// ---- mutations ----------------------------------------------------------------------------------

export type Mutation =
  | { kind: 'arg'; slot: number; value: number; victim: number }
  | { kind: 'field'; slot: number; key: number; value: number; victim: number }
  | { kind: 'disposeGetter'; slot: number; key: number; victim: number; realloc: boolean }
  | { kind: 'proxy'; slot: number; victim: number; realloc: boolean }
  | { kind: 'elementGetter'; slot: number; index: number; victim: number; realloc: boolean }
  | { kind: 'alias'; from: number; to: number }
  | { kind: 'disposeBefore'; victim: number };

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  !!v && typeof v === 'object' && !Array.isArray(v) && !ArrayBuffer.isView(v) && !(v instanceof Tensor) && !(v instanceof Map) && Object.getPrototypeOf(v) === Object.prototype;
const isTensorish = (v: unknown) => v instanceof Tensor || (!!v && typeof v === 'object' && 'numel' in (v as object) && 'view' in (v as object));

function apply(mutation: Mutation, args: unknown[], ctx: Ctx, target: Target): void {
  const n = args.length;
  const firstSlot = target.method ? 1 : 0;
  const slotOf = (s: number) => (n - firstSlot > 0 ? firstSlot + (s % (n - firstSlot)) : -1);
  switch (mutation.kind) {
    case 'arg': {
      const slot = n > 0 ? mutation.slot % (n + 1) : 0; // n: one past the end (an extra argument)
      if (target.method && slot === 0) return;
      args[slot] = hostile(ctx, mutation.value, target, mutation.victim);
      return;
    }
    case 'field': {
      const slot = slotOf(mutation.slot);
      const obj = args[slot];
      if (!isPlainObject(obj)) return;
      const keys = Object.keys(obj);
      const copy = { ...obj };
      copy[keys.length ? keys[mutation.key % keys.length] : 'x'] = hostile(ctx, mutation.value, target, mutation.victim);
      args[slot] = copy;
      return;
    }
    case 'disposeGetter': {
      const slot = slotOf(mutation.slot);
      const obj = args[slot];
      if (!isPlainObject(obj)) return;
      const keys = Object.keys(obj);
      if (!keys.length) return;
      const key = keys[mutation.key % keys.length];
      const value = obj[key];
      const copy = { ...obj };
      Object.defineProperty(copy, key, { enumerable: true, configurable: true, get: () => { strike(ctx, mutation.victim, mutation.realloc); return value; } });
      args[slot] = copy;
      return;
    }
    case 'proxy': {
      const slot = slotOf(mutation.slot);
      const obj = args[slot];
      if (!obj || typeof obj !== 'object' || isTensorish(obj)) return;
      args[slot] = new Proxy(obj, {
        get: (t, k, r) => { strike(ctx, mutation.victim, mutation.realloc); return Reflect.get(t, k, r); },
        has: (t, k) => { strike(ctx, mutation.victim, mutation.realloc); return Reflect.has(t, k); },
      });
      return;
    }
    case 'elementGetter': {
      const slot = slotOf(mutation.slot);
      const array = args[slot];
      if (!Array.isArray(array) || array.length === 0) return;
      const copy = [...array];
      const index = mutation.index % copy.length;
      const value = copy[index];
      Object.defineProperty(copy, index, { enumerable: true, configurable: true, get: () => { strike(ctx, mutation.victim, mutation.realloc); return value; } });
      args[slot] = copy;
      return;
    }
    case 'alias': {
      // the same tensor in two places (top-level slots, or inside two lists)
      const flat: { get: () => unknown; set: (v: unknown) => void }[] = [];
      for (let i = 0; i < n; i++) {
        const v = args[i];
        if (isTensorish(v) && !(target.method && i === 0)) flat.push({ get: () => args[i], set: (x) => { args[i] = x; } });
        if (Array.isArray(v)) {
          const copy = [...v];
          args[i] = copy;
          for (let j = 0; j < copy.length; j++) if (isTensorish(copy[j])) flat.push({ get: () => copy[j], set: (x) => { copy[j] = x; } });
        }
      }
      if (flat.length < 2) return;
      const from = flat[mutation.from % flat.length];
      const to = flat[mutation.to % flat.length];
      if (from.get() !== to.get()) ctx.aliased = true;
      to.set(from.get());
      return;
    }
    case 'disposeBefore':
      strike(ctx, mutation.victim, false);
      return;
  }
}

const nat = fc.nat({ max: 1000 });
export const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('arg' as const), slot: nat, value: nat, victim: nat }),
  fc.record({ kind: fc.constant('field' as const), slot: nat, key: nat, value: nat, victim: nat }),
  fc.record({ kind: fc.constant('disposeGetter' as const), slot: nat, key: nat, victim: nat, realloc: fc.boolean() }),
  fc.record({ kind: fc.constant('proxy' as const), slot: nat, victim: nat, realloc: fc.boolean() }),
  fc.record({ kind: fc.constant('elementGetter' as const), slot: nat, index: nat, victim: nat, realloc: fc.boolean() }),
  fc.record({ kind: fc.constant('alias' as const), from: nat, to: nat }),
  fc.record({ kind: fc.constant('disposeBefore' as const), victim: nat }),
);

// ---- one case -----------------------------------------------------------------------------------

export interface Finding {
  target: string;
  mutations: Mutation[];
  problem: string;
}

async function settle<T>(value: T | Promise<T>, ms: number, what: string): Promise<T> {
  if (!(value instanceof Promise)) return value;
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([value, new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`HANG: ${what} did not settle in ${ms} ms`)), ms); })]);
  } finally {
    clearTimeout(timer);
  }
}

/** Why an error is unacceptable, or undefined when it is (a KilnError that is not a kiln bug, or the user's own exception). */
export function judgeError(error: unknown): string | undefined {
  if (error instanceof KilnError) return error.code === 'ERR_INTERNAL' ? `ERR_INTERNAL: ${error.message}` : undefined;
  if (error instanceof HostileError) return undefined;
  // NativeTensor's own methods (view, dispose) are not wrapped by lib/native.ts: their errors are native coded errors
  const code = (error as { code?: unknown } | null)?.code;
  if (error instanceof Error && typeof code === 'string' && /^ERR_[A-Z_]+$/.test(code)) return code === 'ERR_INTERNAL' ? `ERR_INTERNAL: ${error.message}` : undefined;
  if (error instanceof TypeError && /revoked/.test(error.message)) return undefined; // the user's revoked Proxy, touched
  const text = error instanceof Error ? `${error.constructor.name}: ${error.message}` : `non-Error thrown: ${typeof error}`;
  return `not a KilnError: ${text}`;
}

/** Entry points that must refuse one tensor in two places: they update every tensor of their lists. */
const MUST_REFUSE_ALIAS = new Set(['gradNormClip', 'adamwMulti', 'muonMomentumMulti', 'muonApplyMulti', 'ops.gradNormClip']);

export async function runCase(target: Target, mutations: Mutation[]): Promise<string | undefined> {
  const ctx: Ctx = { tensors: [], canaries: [], cleanups: [] };
  try {
    let args: unknown[];
    try {
      args = await target.make(ctx);
    } catch (error) {
      return `the valid call could not be built: ${String(error)}`;
    }
    for (const mutation of mutations) {
      try {
        apply(mutation, args, ctx, target);
      } catch {
        // the mutation itself touched a hostile value (e.g. spreading a throwing getter): skip it
      }
    }
    try {
      await settle(target.call(args), 20000, target.name);
      if (ctx.aliased && MUST_REFUSE_ALIAS.has(target.name) && mutations.every((m) => m.kind === 'alias')) {
        return 'accepted the same tensor twice in a list it updates (a silent wrong answer)';
      }
    } catch (error) {
      if (error instanceof Error && error.message.startsWith('HANG')) return error.message;
      const problem = judgeError(error);
      if (problem) return problem;
    }
    try {
      await settle(kiln.synchronize(), 20000, 'synchronize after the call');
    } catch (error) {
      if (error instanceof Error && error.message.startsWith('HANG')) return error.message;
      const problem = judgeError(error);
      if (problem) return `queued op failed: ${problem}`;
    }
    for (const canary of ctx.canaries) {
      const values = await canary.t.toArray();
      if (values.some((v) => v !== canary.value)) return 'memory reallocated after a mid-call dispose was written by the call (use after free)';
    }
    return undefined;
  } finally {
    for (const t of ctx.tensors) t.dispose();
    for (const c of ctx.canaries) c.t.dispose();
    for (const cleanup of ctx.cleanups) {
      try {
        await settle(cleanup(), 20000, 'cleanup');
      } catch {
        // a model or optimizer whose tensors the case disposed
      }
    }
  }
}

export const allTargets = (): Target[] => [...bindingTargets, ...apiTargets];

/**
 * Runs `runs` seeded cases over the targets whose kind matches; fast-check shrinks a failing
 * case to a minimal one. Returns the findings (at most one: fast-check stops at the first).
 */
export async function runBatch(options: { seed: number; runs: number; kind?: 'binding' | 'api'; filter?: RegExp }): Promise<{ runs: number; findings: Finding[] }> {
  const targets = allTargets().filter((t) => (!options.kind || t.kind === options.kind) && (!options.filter || options.filter.test(t.name)));
  const findings: Finding[] = [];
  let runs = 0;
  const caseArb = fc.record({ target: fc.nat({ max: targets.length - 1 }), mutations: fc.array(mutationArb, { minLength: 0, maxLength: 3 }) });
  const result = await fc.check(
    fc.asyncProperty(caseArb, async (c) => {
      runs++;
      const problem = await runCase(targets[c.target], c.mutations);
      if (problem) throw new Error(problem);
    }),
    { seed: options.seed, numRuns: options.runs, endOnFailure: false, maxSkipsPerRun: 0 },
  );
  if (result.failed && result.counterexample) {
    const [c] = result.counterexample;
    findings.push({ target: targets[c.target].name, mutations: c.mutations, problem: result.errorInstance instanceof Error ? result.errorInstance.message : String(result.error) });
  }
  return { runs, findings };
}

/** For reproducing a finding: what hostile value `kind` is (described, as kiln's messages would). */
export function describeHostile(kind: number, targetName: string): string {
  const target = allTargets().find((t) => t.name === targetName) ?? bindingTargets[0];
  const ctx: Ctx = { tensors: [], canaries: [], cleanups: [] };
  try {
    return kiln.describe(hostile(ctx, kind, target, 0));
  } finally {
    for (const t of ctx.tensors) t.dispose();
  }
}
