/**
 * Training runs as the dashboard sees them: the StepMetrics a Trainer already computes (or a
 * metrics.jsonl line), plus the run's progress and ETA, worked out here in Node so the page only
 * draws what it is sent.
 */
import type { StepMetrics } from '../train/trainer.js';

/** One step as the page receives it: the trainer's own figures, nothing recomputed. */
export interface TrainingPoint {
  step: number;
  loss: number;
  valLoss?: number;
  gradNorm?: number;
  /** the schedule's learning-rate multiplier (StepMetrics.lr) */
  lr?: number;
  tokens?: number;
  tokensPerSecond?: number;
  stepMs?: number;
  forwardMs?: number;
  backwardMs?: number;
  optimizerMs?: number;
  /** time in collectives when the step has any (data-parallel runs: lib/parallel's commMs) */
  communicationMs?: number;
  issueMs?: number;
  achievedTflops?: number;
  mfu?: number;
  peakMemoryBytes?: number;
  // data parallelism (lib/parallel commMetrics), on data-parallel runs only
  /** ranks in the run */
  worldSize?: number;
  /** 'sync' (gradients all-reduced every step) or 'diloco' */
  syncMode?: string;
  /** sync mode: gradient buckets */
  buckets?: number;
  /** the part of communicationMs the step waited for (not hidden under compute) */
  commExposedMs?: number;
  /** bytes this rank sent in the step's collectives (on the wire) */
  commBytes?: number;
  /** bytes of the buffers reduced or gathered (what algorithm bandwidth counts) */
  commPayloadBytes?: number;
  commBytesPerToken?: number;
  /** GB/s as nccl-tests define them: payload bytes / time, and wire bytes / time */
  algBandwidthGBs?: number;
  busBandwidthGBs?: number;
  /** tokens/s ÷ (world size × one rank's tokens/s), when a one-rank baseline was given */
  scalingEfficiency?: number;
  /** DiLoCo: inner steps between synchronizations (H), pseudo-gradient bits (0: f32), outer steps taken */
  innerSteps?: number;
  quantBits?: number;
  outerSteps?: number;
}

export interface RunStatus {
  id: number;
  name: string;
  /** 'live': fed by a Trainer in this process; 'file': read from metrics.jsonl (and followed; 'idle' when it has not grown for 2 minutes) */
  source: 'live' | 'file';
  /** a metrics file may be replaced (a new run in the same directory): the page resets the run */
  generation: number;
  state: 'running' | 'finished' | 'stopped' | 'idle';
  step: number;
  totalSteps?: number;
  /** step / totalSteps (0..1) */
  progress?: number;
  /** seconds: wall clock since the first step (live) or the sum of step times (file) */
  elapsedS: number;
  /** seconds left at the recent pace */
  etaS?: number;
  /** when the last step arrived, ms since the epoch */
  updatedAt?: number;
  points: number;
}

const FIELDS: (keyof TrainingPoint)[] = [
  'step', 'loss', 'valLoss', 'gradNorm', 'lr', 'tokens', 'tokensPerSecond', 'stepMs', 'forwardMs', 'backwardMs', 'optimizerMs',
  'communicationMs', 'issueMs', 'achievedTflops', 'mfu', 'peakMemoryBytes',
  'worldSize', 'buckets', 'commExposedMs', 'commBytes', 'commPayloadBytes', 'commBytesPerToken', 'algBandwidthGBs', 'busBandwidthGBs',
  'scalingEfficiency', 'innerSteps', 'quantBits', 'outerSteps',
];

/** The data-parallel fields a point may carry (their presence makes the page show its Communication panel). */
export const COMMUNICATION_FIELDS: (keyof TrainingPoint)[] = [
  'worldSize', 'syncMode', 'buckets', 'commExposedMs', 'commBytes', 'commPayloadBytes', 'commBytesPerToken', 'algBandwidthGBs', 'busBandwidthGBs',
  'scalingEfficiency', 'innerSteps', 'quantBits', 'outerSteps',
];

/** The finite numeric fields of a StepMetrics-like record (and its sync mode, a short name); undefined when it has no step and loss. */
export function toTrainingPoint(record: unknown): TrainingPoint | undefined {
  if (typeof record !== 'object' || record === null) return undefined;
  const r = record as Record<string, unknown>;
  const point: Record<string, number> = {};
  for (const field of FIELDS) {
    const v = r[field];
    if (typeof v === 'number' && Number.isFinite(v)) point[field] = v;
  }
  // a data-parallel trainer may name its collective time differently; take the first present
  if (point.communicationMs === undefined) {
    for (const alias of ['commMs', 'allReduceMs']) if (typeof r[alias] === 'number' && Number.isFinite(r[alias])) point.communicationMs = r[alias] as number;
  }
  if (point.step === undefined || point.loss === undefined) return undefined;
  const out = point as unknown as TrainingPoint;
  // the one text field: a mode's name (anything else, or anything long, is not a sync mode)
  if (typeof r.syncMode === 'string' && /^[A-Za-z0-9_-]{1,32}$/.test(r.syncMode)) out.syncMode = r.syncMode;
  return out;
}

/** Steps whose wall-clock intervals the ETA averages. */
const PACE_WINDOW = 32;

/** One training run's history and progress (kept exact: every step, every field). */
export class TrainingRun {
  readonly points: TrainingPoint[] = [];
  state: RunStatus['state'] = 'running';
  generation = 0;
  private readonly arrivals: number[] = [];
  private firstArrival?: number;
  private summedStepMs = 0;

  constructor(
    readonly id: number,
    readonly name: string,
    readonly source: RunStatus['source'],
    public totalSteps?: number,
  ) {}

  /** Appends a step; `now` is the wall clock (live runs), absent for replayed files. */
  add(point: TrainingPoint, now?: number): void {
    this.points.push(point);
    this.summedStepMs += point.stepMs ?? 0;
    if (now !== undefined) {
      this.firstArrival ??= now - (point.stepMs ?? 0);
      this.arrivals.push(now);
      if (this.arrivals.length > PACE_WINDOW + 1) this.arrivals.shift();
    }
  }

  /** Drops the history (the metrics file was replaced). */
  reset(): void {
    this.points.length = 0;
    this.arrivals.length = 0;
    this.firstArrival = undefined;
    this.summedStepMs = 0;
    this.generation++;
    this.state = 'running';
  }

  status(): RunStatus {
    const last = this.points[this.points.length - 1];
    const step = last?.step ?? 0;
    const live = this.firstArrival !== undefined && this.arrivals.length > 0;
    const elapsedS = live ? (this.arrivals[this.arrivals.length - 1] - this.firstArrival!) / 1e3 : this.summedStepMs / 1e3;
    let secondsPerStep: number | undefined;
    if (this.arrivals.length >= 2) {
      secondsPerStep = (this.arrivals[this.arrivals.length - 1] - this.arrivals[0]) / 1e3 / (this.arrivals.length - 1);
    } else if (last?.stepMs !== undefined) {
      secondsPerStep = last.stepMs / 1e3;
    }
    const total = this.totalSteps;
    const remaining = total !== undefined ? Math.max(0, total - step) : undefined;
    return {
      id: this.id, name: this.name, source: this.source, generation: this.generation, state: this.state, step, totalSteps: total,
      progress: total ? Math.min(1, step / total) : undefined, elapsedS,
      etaS: remaining === undefined || this.state !== 'running' ? (remaining === 0 ? 0 : undefined) : secondsPerStep !== undefined ? remaining * secondsPerStep : undefined,
      updatedAt: live ? this.arrivals[this.arrivals.length - 1] : undefined, points: this.points.length,
    };
  }
}

/** What a Trainer-like object must offer the dashboard (Trainer does). */
export interface StepSource {
  onStep(listener: (metrics: StepMetrics) => void): () => void;
  readonly options: { steps: number };
  readonly currentStep: number;
}
