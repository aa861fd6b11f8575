/**
 * kiln: pretrain and serve LLaMA-style language models from Node.js on hand-written CPU and
 * CUDA kernels. Ops enqueue and return at once; await toArray() or synchronize() to wait.
 */
export { KilnError, type KilnErrorCode } from './errors.js';
export type { DType, ArrayFor } from './dtype.js';
export type { Device, DeviceLike } from './device.js';
export { Tensor, tensor, empty, zeros, ones, full, randn, rand, manualSeed, type CreateOptions, type RandomOptions } from './tensor.js';
export { synchronize, memoryStats, resetPeakMemory, emptyCache, cudaDeviceCount, defaultDevice, type MemoryStats } from './runtime.js';
export { info, formatInfo, datasheetPeak, type KilnInfo, type DeviceInfo, type GpuPeak } from './info.js';
export * as ops from './ops/index.js';
export { Dashboard, attachServingDashboard, attachTrainingDashboard, startDashboard, renderReport, writeReport, type DashboardOptions } from './monitor/index.js';
export { Engine, type EngineLoadOptions } from './serve/engine.js';
export type * from './serve/types.js';
