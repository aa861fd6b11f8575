/** Learning-rate schedules: linear warmup, then cosine decay or warmup-stable-decay (WSD). */
import { describe, fail } from '../errors.js';

export interface ScheduleConfig {
  kind: 'cosine' | 'wsd' | 'constant';
  warmupSteps: number;
  totalSteps: number;
  /** final lr as a fraction of the peak (cosine and wsd); default 0.1 */
  minRatio?: number;
  /** wsd: share of totalSteps spent in the final linear decay; default 0.2 */
  decayFraction?: number;
}

/** Multiplier of the peak lr at `step` (0-based). */
export function lrMultiplier(s: ScheduleConfig, step: number): number {
  if (!s || typeof s !== 'object') fail('ERR_ARG', `schedule must be an object, got ${describe(s)}`);
  if (s.kind !== 'cosine' && s.kind !== 'wsd' && s.kind !== 'constant') fail('ERR_ARG', `schedule kind must be 'cosine', 'wsd' or 'constant', got ${describe(s.kind)}`);
  const integer = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v);
  if (!integer(s.totalSteps) || !(s.totalSteps > 0) || !integer(s.warmupSteps) || s.warmupSteps < 0) fail('ERR_ARG', 'schedule needs integers totalSteps > 0 and warmupSteps >= 0');
  for (const key of ['minRatio', 'decayFraction'] as const) {
    const v = s[key];
    if (v !== undefined && !(typeof v === 'number' && v >= 0 && v <= 1)) fail('ERR_ARG', `schedule ${key} must be in [0, 1], got ${describe(v)}`);
  }
  if (!integer(step) || step < 0) fail('ERR_ARG', `step must be a non-negative integer, got ${describe(step)}`);
  const minRatio = s.minRatio ?? 0.1;
  if (step < s.warmupSteps) return (step + 1) / s.warmupSteps;
  if (s.kind === 'constant') return 1;
  const t = Math.min(step, s.totalSteps - 1);
  if (s.kind === 'cosine') {
    const progress = s.totalSteps > s.warmupSteps + 1 ? (t - s.warmupSteps) / (s.totalSteps - s.warmupSteps - 1) : 1;
    return minRatio + (1 - minRatio) * 0.5 * (1 + Math.cos(Math.PI * Math.min(1, Math.max(0, progress))));
  }
  const decaySteps = Math.max(1, Math.round((s.decayFraction ?? 0.2) * s.totalSteps));
  const decayStart = s.totalSteps - decaySteps;
  if (t < decayStart) return 1;
  return 1 - (1 - minRatio) * ((t - decayStart + 1) / decaySteps);
}
