/** Waiting, memory statistics and device discovery. */
import { type Device, type DeviceLike, deviceCode, parseDevice } from './device.js';
import { binding } from './native.js';

/**
 * Resolves when every op enqueued so far has finished on every device. Rejects with the first
 * error a queued op raised since the last wait (like CUDA's sticky errors).
 */
export function synchronize(): Promise<void> {
  return binding().synchronize();
}

export interface MemoryStats {
  /** bytes held by live tensors */
  allocated: number;
  /** bytes obtained from the device: allocated plus the caching allocator's free blocks */
  reserved: number;
  /** high-water mark of allocated since the last resetPeakMemory */
  peakAllocated: number;
  /** allocation requests served */
  allocations: number;
  /** requests that reached the device allocator (cudaMalloc / aligned_alloc): cache misses */
  deviceAllocations: number;
}

export function memoryStats(device: DeviceLike = 'cpu'): MemoryStats {
  return binding().memoryStats(deviceCode(parseDevice(device)));
}

export function resetPeakMemory(device: DeviceLike = 'cpu'): void {
  binding().resetPeakMemory(deviceCode(parseDevice(device)));
}

/** Returns the caching allocator's unused blocks to the driver (after queued work finishes). */
export function emptyCache(device: DeviceLike): void {
  binding().emptyCache(deviceCode(parseDevice(device)));
}

export function cudaDeviceCount(): number {
  return binding().info().devices.length;
}

/**
 * Throws what placing memory on `device` would throw (ERR_NO_CUDA: CUDA not compiled in, no
 * driver, no such GPU, or no kernels in this build for it), so that a job checks its device
 * before anything that depends on it; returns the device when it is usable.
 */
export function checkDevice(device: DeviceLike): Device {
  const d = parseDevice(device);
  if (d !== 'cpu') binding().empty(deviceCode(d), 0, 1).dispose();
  return d;
}

let warnedUncovered = false;

/**
 * cuda:0 when a CUDA device is present (and KILN_DEVICE does not say otherwise), else cpu. A GPU
 * this build has no kernels for falls back to cpu with a warning (using it explicitly is ERR_NO_CUDA).
 */
export function defaultDevice(): Device {
  const forced = process.env.KILN_DEVICE;
  if (forced) return parseDevice(forced, 'KILN_DEVICE');
  const first = binding().info().devices[0];
  if (!first) return 'cpu';
  if (!first.kernelsCovered) {
    if (!warnedUncovered) {
      warnedUncovered = true;
      process.emitWarning(`kiln: using the CPU: cuda:0 (${first.name}) cannot run this build (${first.kernelsVia}); rebuild with \`KILN_FORCE_BUILD=1 npm rebuild kiln\``, { code: 'KILN_CUDA_ARCHS' });
    }
    return 'cpu';
  }
  return 'cuda:0';
}

/** A point in a device's queue (a CUDA event, or the CPU queue's clock when it is reached). */
export type DeviceTimeMark = ReturnType<ReturnType<typeof binding>['timerMark']>;

/**
 * Marks the point the queue of `device` has reached: the time is taken when the queued work
 * before it finishes, not when this returns (the step's forward/backward/optimizer split).
 */
export function markDeviceTime(device: DeviceLike): DeviceTimeMark {
  return binding().timerMark(deviceCode(parseDevice(device)));
}

/** Milliseconds between two marks of the same device, once both have been reached. */
export function deviceTimeBetween(start: DeviceTimeMark, end: DeviceTimeMark): Promise<number> {
  return binding().timerElapsed(start, end);
}
