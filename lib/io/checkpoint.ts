/**
 * Checkpoints in the Hugging Face LLaMA layout plus kiln's training state:
 *   <dir>/config.json          LlamaConfig (transformers' LlamaForCausalLM loads the directory)
 *   <dir>/model.safetensors    f32 weights under HF names
 *   <dir>/optimizer.safetensors  optimizer state (momenta, moments) under "<param>.<state>"
 *   <dir>/trainer.json         step, data position, options
 *   <dir>/tokenizer.json, tokenizer_config.json, generation_config.json
 *                              copied from the model a run started from (`source`), where it has them
 * A checkpoint is written into "<dir>.tmp-<pid>" and renamed into place only when complete;
 * "<root>/latest" (itself written atomically) names the newest, so a killed process never
 * leaves a half-written checkpoint under a final name.
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { types } from 'node:util';
import { type DType, f16ToFloat } from '../dtype.js';
import { describe, fail } from '../errors.js';
import { atomicWriteFile } from './atomic.js';
import { type RawTensor, readSafetensors, writeSafetensors } from './safetensors.js';
import { Tensor } from '../tensor.js';
import { type ModelConfig, fromHfConfig, toHfConfig, validateConfig } from '../model/config.js';
import { LlamaModel } from '../model/llama.js';
import type { Device } from '../device.js';

async function raw(t: Tensor): Promise<RawTensor> {
  const values = await t.toArray();
  return { dtype: t.dtype === 'f64' ? 'f64' : 'f32', shape: [...t.shape], data: new Uint8Array(values.buffer, values.byteOffset, values.byteLength) };
}

export interface TrainerState {
  step: number;
  optimizerStep: number;
  loader: { seed: number; step: number };
  [key: string]: unknown;
}

function writeJson(path: string, value: unknown): void {
  atomicWriteFile(path, JSON.stringify(value, null, 2) + '\n');
}

/** The files of a model directory a checkpoint trained from it carries along (where present). */
export const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json'] as const;

export interface SaveOptions {
  /**
   * The checkpoint directory the model came from (an HF or kiln checkpoint): its TOKENIZER_FILES
   * are copied, and its config.json's fields that kiln does not model (bos_token_id, eos_token_id,
   * ...) are kept under the ones kiln writes.
   */
  source?: string;
  /** without a source: a directory whose TOKENIZER_FILES are copied (the data's, from kiln prepare --tokenizer) */
  tokenizerFiles?: string;
}

function sourceConfig(source: string): Record<string, unknown> {
  const path = join(source, 'config.json');
  try {
    const json = JSON.parse(readFileSync(path, 'utf8')) as unknown;
    if (json && typeof json === 'object' && !Array.isArray(json)) return json as Record<string, unknown>;
  } catch {
    // refused below
  }
  fail('ERR_CHECKPOINT', `${path} is not a JSON object`);
}

/** Writes a complete checkpoint to `dir` (replacing one there) and returns its path. */
export async function saveCheckpoint(
  dir: string, config: ModelConfig, weights: Map<string, Tensor>, optimizer: Map<string, Tensor> | undefined, trainer: TrainerState | undefined,
  options: SaveOptions = {},
): Promise<string> {
  if (typeof dir !== 'string' || dir.length === 0) fail('ERR_ARG', `checkpoint directory must be a non-empty string, got ${describe(dir)}`);
  config = validateConfig(config);
  const checkMap = (map: unknown, what: string) => {
    if (!types.isMap(map)) fail('ERR_ARG', `${what} must be a Map of name -> Tensor, got ${describe(map)}`);
    for (const [name, t] of map) {
      if (typeof name !== 'string') fail('ERR_ARG', `${what} keys must be strings, got ${describe(name)}`);
      if (!(t instanceof Tensor)) fail('ERR_ARG', `${what} ${name} must be a kiln Tensor, got ${describe(t)}`);
      if (t.disposed) fail('ERR_DISPOSED', `${what} ${name} was disposed`);
    }
  };
  checkMap(weights, 'weights');
  if (optimizer !== undefined) checkMap(optimizer, 'optimizer state');
  if (trainer !== undefined && (trainer === null || typeof trainer !== 'object')) fail('ERR_ARG', `trainer state must be an object, got ${describe(trainer)}`);
  mkdirSync(dirname(dir), { recursive: true });
  const temp = `${dir}.tmp-${process.pid}`;
  rmSync(temp, { recursive: true, force: true });
  mkdirSync(temp);
  const written = toHfConfig(config, 'float32');
  const base = options.source !== undefined ? sourceConfig(options.source) : {};
  // newer transformers read "dtype" before "torch_dtype": the weights here are f32
  if ('dtype' in base) base.dtype = written.torch_dtype;
  writeJson(join(temp, 'config.json'), { ...base, ...written });
  const tokenizerDir = options.source ?? options.tokenizerFiles;
  if (tokenizerDir !== undefined) for (const file of TOKENIZER_FILES) if (existsSync(join(tokenizerDir, file))) copyFileSync(join(tokenizerDir, file), join(temp, file));
  const model = new Map<string, RawTensor>();
  for (const [name, t] of weights) model.set(name, await raw(t));
  writeSafetensors(join(temp, 'model.safetensors'), model, { format: 'pt' });
  if (optimizer) {
    const state = new Map<string, RawTensor>();
    for (const [name, t] of optimizer) state.set(name, await raw(t));
    writeSafetensors(join(temp, 'optimizer.safetensors'), state);
  }
  if (trainer) writeJson(join(temp, 'trainer.json'), trainer);
  const old = `${dir}.old-${process.pid}`;
  if (existsSync(dir)) renameSync(dir, old);
  renameSync(temp, dir);
  rmSync(old, { recursive: true, force: true });
  writeJson(join(dirname(dir), 'latest'), { checkpoint: basename(dir) });
  return dir;
}

export interface LoadedCheckpoint {
  config: ModelConfig;
  weights: Map<string, { dtype: DType; shape: number[]; values: Float32Array | Float64Array }>;
  optimizer?: Map<string, Float32Array>;
  trainer?: TrainerState;
}

/** The checkpoint a "latest" pointer file names (a sibling directory of the file). */
function followPointer(file: string): string {
  let target: unknown;
  try {
    target = (JSON.parse(readFileSync(file, 'utf8')) as { checkpoint?: unknown } | null)?.checkpoint;
  } catch {
    fail('ERR_CHECKPOINT', `${file} is corrupt: a "latest" pointer holds {"checkpoint": "step-NNNNNN"}`);
  }
  if (typeof target !== 'string' || !target || target.includes('/') || target.includes('\\') || target === '.' || target === '..') {
    fail('ERR_CHECKPOINT', `${file} is corrupt: a "latest" pointer holds {"checkpoint": "step-NNNNNN"}`);
  }
  const dir = join(dirname(file), target);
  if (!existsSync(join(dir, 'config.json'))) fail('ERR_CHECKPOINT', `${file} names ${target}, which is not a checkpoint (no ${join(dir, 'config.json')})`);
  return dir;
}

/**
 * The checkpoint directory `path` stands for: a checkpoint directory itself (it holds
 * config.json: kiln's and Hugging Face's alike), a run directory (its "latest" pointer names the
 * newest checkpoint), or that "latest" pointer file. Anything else is ERR_CHECKPOINT, saying which
 * of the three to pass.
 */
export function resolveCheckpoint(path: string): string {
  if (typeof path !== 'string' || path.length === 0) fail('ERR_ARG', `checkpoint path must be a non-empty string, got ${describe(path)}`);
  const forms = 'pass a checkpoint directory (runs/tiny/step-000600), a run directory (runs/tiny) or its latest pointer (runs/tiny/latest)';
  let stats;
  try {
    stats = statSync(path);
  } catch {
    fail('ERR_CHECKPOINT', `${path} does not exist: ${forms}`);
  }
  if (stats.isFile()) return followPointer(path);
  if (existsSync(join(path, 'config.json'))) return path;
  if (existsSync(join(path, 'latest'))) return followPointer(join(path, 'latest'));
  fail('ERR_CHECKPOINT', `${path} is not a checkpoint: it has neither config.json nor a latest pointer; ${forms}`);
}

/**
 * The name a checkpoint is served under by default: its run's name when `path` is a run
 * directory or its latest pointer (runs/tiny, runs/tiny/latest: 'tiny'), else the checkpoint
 * directory's own name (runs/tiny/step-000600: 'step-000600'; a Hugging Face directory's name).
 */
export function checkpointName(path: string): string {
  const dir = resolve(resolveCheckpoint(path));
  return basename(dir === resolve(path) ? dir : dirname(dir));
}

/** The model config of a checkpoint (any form resolveCheckpoint takes), without reading its weights. */
export function checkpointConfig(path: string): ModelConfig {
  const configPath = join(resolveCheckpoint(path), 'config.json');
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(configPath, 'utf8'));
  } catch {
    fail('ERR_CHECKPOINT', `${configPath} is not valid JSON`);
  }
  return fromHfConfig(json);
}

/** A tensor's values: f32 and f64 as stored; bf16 and f16 (Hugging Face releases) widened to f32 exactly. */
function decode(t: RawTensor, name: string): Float32Array | Float64Array {
  const copy = t.data.slice().buffer;
  if (t.dtype === 'f32') return new Float32Array(copy);
  if (t.dtype === 'f64') return new Float64Array(copy);
  if (t.dtype === 'bf16') {
    const bits = new Uint16Array(copy);
    const wide = new Uint32Array(bits.length);
    for (let i = 0; i < bits.length; i++) wide[i] = bits[i] << 16;
    return new Float32Array(wide.buffer);
  }
  if (t.dtype === 'f16') return Float32Array.from(new Uint16Array(copy), f16ToFloat);
  fail('ERR_CHECKPOINT', `${name} is ${t.dtype}: checkpoint weights must be f32, f64, bf16 or f16`);
}

export function loadCheckpoint(path: string): LoadedCheckpoint {
  if (typeof path !== 'string' || path.length === 0) fail('ERR_ARG', `checkpoint path must be a non-empty string, got ${describe(path)}`);
  const dir = resolveCheckpoint(path);
  const config = checkpointConfig(dir);
  const model = readSafetensors(join(dir, 'model.safetensors'));
  const weights = new Map<string, { dtype: DType; shape: number[]; values: Float32Array | Float64Array }>();
  for (const [name, t] of model.tensors) weights.set(name, { dtype: t.dtype === 'bf16' || t.dtype === 'f16' ? 'f32' : t.dtype, shape: t.shape, values: decode(t, name) });
  const loaded: LoadedCheckpoint = { config, weights };
  if (existsSync(join(dir, 'optimizer.safetensors'))) {
    loaded.optimizer = new Map();
    for (const [name, t] of readSafetensors(join(dir, 'optimizer.safetensors')).tensors) loaded.optimizer.set(name, decode(t, name) as Float32Array);
  }
  if (existsSync(join(dir, 'trainer.json'))) {
    try {
      loaded.trainer = JSON.parse(readFileSync(join(dir, 'trainer.json'), 'utf8')) as TrainerState;
    } catch {
      fail('ERR_CHECKPOINT', `${dir}/trainer.json is not valid JSON`);
    }
    if (!loaded.trainer || typeof loaded.trainer !== 'object' || Array.isArray(loaded.trainer)) fail('ERR_CHECKPOINT', `${dir}/trainer.json is not an object`);
  }
  return loaded;
}

/** A LlamaModel on `device` holding the weights of `checkpoint` (resolved as loadCheckpoint resolves it). */
export function loadModel(checkpoint: string, device: Device = 'cpu'): LlamaModel {
  const c = loadCheckpoint(checkpoint);
  const model = new LlamaModel(c.config, { device });
  model.loadWeights(c.weights);
  return model;
}
