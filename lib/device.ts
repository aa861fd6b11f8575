import type { DeviceCode } from '../binding.js';
import { describe, fail } from './errors.js';

/** 'cpu' or 'cuda:N'. 'cuda' alone means 'cuda:0'. */
export type Device = 'cpu' | `cuda:${number}`;
export type DeviceLike = Device | 'cuda';

export function parseDevice(value: unknown, name = 'device'): Device {
  if (value === 'cpu') return 'cpu';
  if (value === 'cuda') return 'cuda:0';
  if (typeof value === 'string') {
    const match = /^cuda:(\d{1,4})$/.exec(value);
    if (match) return `cuda:${Number(match[1])}`;
  }
  fail('ERR_DEVICE', `${name} must be 'cpu', 'cuda' or 'cuda:N', got ${describe(value)}`);
}

export function deviceCode(device: Device): DeviceCode {
  return device === 'cpu' ? -1 : Number(device.slice(5));
}

export function deviceFromCode(code: DeviceCode): Device {
  return code < 0 ? 'cpu' : `cuda:${code}`;
}
