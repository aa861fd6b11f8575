/**
 * kiln: pretrain and serve LLaMA-style language models from Node.js on hand-written CPU and
 * CUDA kernels. Ops enqueue and return at once; await toArray() or synchronize() to wait.
 */
export { KilnError, type KilnErrorCode } from './errors.js';
export type { DType, ArrayFor } from './dtype.js';
export type { Device, DeviceLike } from './device.js';
export { Tensor, tensor, empty, zeros, ones, full, randn, rand, manualSeed, type CreateOptions, type RandomOptions } from './tensor.js';
export { synchronize, memoryStats, resetPeakMemory, emptyCache, cudaDeviceCount, defaultDevice, type MemoryStats } from './runtime.js';
export { info, formatInfo, datasheetPeak, cudaArchCoverage, type KilnInfo, type DeviceInfo, type GpuPeak } from './info.js';
export * as ops from './ops/index.js';
export { Dashboard, attachServingDashboard, attachTrainingDashboard, startDashboard, renderReport, writeReport, type DashboardOptions } from './monitor/index.js';
export { Engine, type EngineLoadOptions } from './serve/engine.js';
export type * from './serve/types.js';
export { createServer, toHttpError, HttpError, type ServerOptions, type ServerControl, type ServerState } from './serve/http/index.js';
export { ChatTemplate, DEFAULT_CHAT_TEMPLATE, type ChatMessage } from './serve/chat_template.js';
export { describe } from './errors.js';
// model, optimizer, training and checkpoints
export {
  PRESETS, preset, validateConfig, toHfConfig, fromHfConfig, matmulParameters, totalParameters, trainingFlopsPerToken,
  MAX_DIM, MAX_LAYERS, MAX_CONTEXT, MAX_PARAMETERS, parameterLayout, type ModelConfig,
} from './model/config.js';
export {
  ARCHITECTURES, type Architecture, type LayerFeatures, type ModelLayout, type ParameterKind, type ParameterSpec, type HfTensor, type RopeScaling,
} from './model/arch/index.js';
export { LlamaModel, type Parameter, type ModelOptions, type BackwardOptions } from './model/llama.js';
export {
  Optimizer, llamaParamGroups, type ParamGroup, type MuonGroup, type AdamWGroup, type OptimizedParameter,
} from './optim/optimizer.js';
export { CLASSIC, POLAR_EXPRESS, newtonSchulzFlops, type NewtonSchulzOptions } from './ops/newton_schulz.js';
export { Trainer, type TrainOptions, type StepMetrics } from './train/trainer.js';
export { lrMultiplier, type ScheduleConfig } from './train/schedule.js';
export { saveCheckpoint, loadCheckpoint, resolveCheckpoint, loadModel, type LoadedCheckpoint, type TrainerState } from './io/checkpoint.js';
