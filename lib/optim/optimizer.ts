/**
 * The Muon + AdamW optimizer (REFERENCE.md, "Muon"). Each parameter group names its update
 * rule: 'muon' (momentum, then the spectral-norm LMO = Newton–Schulz, then a scaled step with
 * decoupled weight decay) for 2-D hidden matrices, 'adamw' for embeddings, the output head and
 * norms. A new variant is one more entry in UPDATE_RULES.
 *
 *   muon:  m = β·m + (1−β)·g;  u = nesterov ? (1−β)·g + β·m : m;  O = NS(u)
 *          W = W·(1 − lr·wd) − lr·s·O,  s = √max(1, rows/cols) ('spectral') or 0.2·√max(rows, cols) ('match-adamw')
 *   adamw: the decoupled-weight-decay Adam step with bias correction.
 *
 * State (momenta, second moments, step) saves and restores bit for bit (stateTensors/loadState).
 * CPU f32 today; the fused CUDA kernels are still owed (issue 5).
 */
import { fail } from '../errors.js';
import { binding } from '../native.js';
import * as ops from '../ops/elementwise.js';
import { Tensor, zeros } from '../tensor.js';
import { type NewtonSchulzOptions, newtonSchulz } from './newton_schulz.js';

export interface OptimizedParameter {
  name: string;
  value: Tensor;
  grad: Tensor;
}

export interface MuonGroup {
  rule: 'muon';
  /**
   * 'standard' (default); 'normuon': after Newton–Schulz, divide each row by the sqrt of an EMA
   * (beta2, default 0.95) of its mean square and restore the Frobenius norm; 'extrapolated':
   * the gradient is taken at x̃ = x + β/(1−β)·(x − x_prev) (call prepareGradientPoint() before
   * the forward pass), then m = β·m + (1−β)·g and x = x − lr·s·NS(m).
   */
  variant?: 'standard' | 'normuon' | 'extrapolated';
  beta2?: number;
  params: OptimizedParameter[];
  lr: number;
  weightDecay?: number;
  momentum?: number;
  nesterov?: boolean;
  scale?: 'spectral' | 'match-adamw';
  newtonSchulz?: NewtonSchulzOptions;
}

export interface AdamWGroup {
  rule: 'adamw';
  params: OptimizedParameter[];
  lr: number;
  weightDecay?: number;
  betas?: [number, number];
  eps?: number;
}

export type ParamGroup = MuonGroup | AdamWGroup;

interface UpdateRule<G extends ParamGroup> {
  /** state tensors per parameter, by suffix */
  state(p: OptimizedParameter): Record<string, Tensor>;
  step(group: G, p: OptimizedParameter, state: Record<string, Tensor>, lrMultiplier: number, step: number): void;
}

const muonRule: UpdateRule<MuonGroup> = {
  state: (p) => {
    const state: Record<string, Tensor> = { momentum: zeros([...p.value.shape], { device: p.value.device }) };
    if (p.value.ndim === 2) {
      state.rowSecondMoment = zeros([p.value.shape[0]], { device: p.value.device });
      state.previous = p.value.clone();
    }
    return state;
  },
  step(group, p, state, lrMultiplier) {
    if (p.value.ndim !== 2) fail('ERR_SHAPE', `muon updates 2-D matrices; ${p.name} is [${p.value.shape}]`);
    const [rows, cols] = p.value.shape;
    const variant = group.variant ?? 'standard';
    if (variant === 'extrapolated' && state.current) {
      // back from the extrapolated point to x_t; x_t becomes x_prev for the next step
      binding().copy(p.value.handle, state.current.handle);
      binding().copy(state.previous.handle, state.current.handle);
      state.current.dispose();
      delete state.current;
    }
    using update = zeros([rows, cols], { device: p.value.device });
    binding().muonMomentum(state.momentum.handle, update.handle, p.grad.handle, group.momentum ?? 0.95, variant === 'extrapolated' ? false : (group.nesterov ?? true));
    using ortho = newtonSchulz(update, group.newtonSchulz);
    if (variant === 'normuon') binding().normuonNormalize(ortho.handle, state.rowSecondMoment.handle, rows, cols, group.beta2 ?? 0.95, 1e-8);
    const scale = (group.scale ?? 'spectral') === 'spectral' ? Math.sqrt(Math.max(1, rows / cols)) : 0.2 * Math.sqrt(Math.max(rows, cols));
    binding().muonApply(p.value.handle, ortho.handle, group.lr * lrMultiplier, group.weightDecay ?? 0, scale);
  },
};

const adamwRule: UpdateRule<AdamWGroup> = {
  state: (p) => ({ m: zeros([...p.value.shape], { device: p.value.device }), v: zeros([...p.value.shape], { device: p.value.device }) }),
  step(group, p, state, lrMultiplier, step) {
    const [beta1, beta2] = group.betas ?? [0.9, 0.95];
    binding().adamw(p.value.handle, state.m.handle, state.v.handle, p.grad.handle, {
      lr: group.lr * lrMultiplier, beta1, beta2, eps: group.eps ?? 1e-8, weightDecay: group.weightDecay ?? 0, step,
    });
  },
};

const UPDATE_RULES: { muon: UpdateRule<MuonGroup>; adamw: UpdateRule<AdamWGroup> } = { muon: muonRule, adamw: adamwRule };

export class Optimizer {
  readonly groups: ParamGroup[];
  private steps = 0;
  private readonly states = new Map<string, Record<string, Tensor>>();

  constructor(groups: ParamGroup[]) {
    const seen = new Set<string>();
    for (const g of groups) {
      if (!(g.rule in UPDATE_RULES)) fail('ERR_ARG', `unknown update rule '${String((g as { rule: unknown }).rule)}'`);
      if (!(typeof g.lr === 'number' && g.lr >= 0 && Number.isFinite(g.lr))) fail('ERR_ARG', 'group lr must be a finite number >= 0');
      for (const p of g.params) {
        if (seen.has(p.name)) fail('ERR_ARG', `parameter ${p.name} is in two groups`);
        seen.add(p.name);
        if (p.value.dtype !== 'f32' || p.grad.dtype !== 'f32') fail('ERR_DTYPE', `${p.name}: master weights and gradients must be f32`);
        this.states.set(p.name, (UPDATE_RULES[g.rule] as UpdateRule<ParamGroup>).state(p));
      }
    }
    this.groups = groups;
  }

  get step(): number {
    return this.steps;
  }

  /** One update of every parameter with lr · lrMultiplier (the schedule). */
  update(lrMultiplier = 1): void {
    this.steps++;
    for (const g of this.groups) {
      const rule = UPDATE_RULES[g.rule] as UpdateRule<ParamGroup>;
      for (const p of g.params) rule.step(g, p, this.states.get(p.name)!, lrMultiplier, this.steps);
    }
  }

  /**
   * For groups with the 'extrapolated' variant: moves each weight to x̃ = x + β/(1−β)·(x − x_prev)
   * so that the next forward/backward computes the gradient there; update() moves it back.
   */
  prepareGradientPoint(): void {
    for (const g of this.groups) {
      if (g.rule !== 'muon' || g.variant !== 'extrapolated') continue;
      const beta = g.momentum ?? 0.95;
      const c = beta / (1 - beta);
      for (const p of g.params) {
        const state = this.states.get(p.name)!;
        state.current?.dispose();
        state.current = p.value.clone();
        using ahead = ops.scale(p.value, 1 + c);
        using back = ops.scale(state.previous, -c);
        using point = ops.add(ahead, back);
        binding().copy(p.value.handle, point.handle);
      }
    }
  }

  /** Every state tensor by `<param name>.<state>`, plus the step count (for checkpoints). */
  stateTensors(): { step: number; tensors: Map<string, Tensor> } {
    const tensors = new Map<string, Tensor>();
    for (const [name, state] of this.states) {
      for (const [key, t] of Object.entries(state)) if (key !== 'current') tensors.set(`${name}.${key}`, t);
    }
    return { step: this.steps, tensors };
  }

  /** Restores state saved by stateTensors (values are copied in; shapes must match). */
  async loadState(step: number, values: Map<string, Float32Array>): Promise<void> {
    if (!Number.isSafeInteger(step) || step < 0) fail('ERR_CHECKPOINT', 'optimizer step must be a non-negative integer');
    for (const [name, state] of this.states) {
      for (const [key, t] of Object.entries(state)) {
        if (key === 'current') continue;
        const v = values.get(`${name}.${key}`);
        if (!v || v.length !== t.numel) fail('ERR_CHECKPOINT', `optimizer state ${name}.${key} is missing or has the wrong size`);
        using src = (await import('../tensor.js')).tensor(v, { shape: [...t.shape] }).to(t.device);
        binding().copy(t.handle, src.handle);
      }
    }
    this.steps = step;
  }

  dispose(): void {
    for (const state of this.states.values()) for (const t of Object.values(state)) t.dispose();
  }
}

/**
 * Default grouping for a LLaMA model: Muon for 2-D hidden matrices, AdamW for embeddings,
 * the output head and norms; per-group overrides merge over the defaults.
 */
export function llamaParamGroups(
  params: (OptimizedParameter & { kind: 'matrix' | 'embedding' | 'head' | 'norm' })[],
  overrides: { muon?: Partial<Omit<MuonGroup, 'rule' | 'params'>>; adamw?: Partial<Omit<AdamWGroup, 'rule' | 'params'>> } = {},
): ParamGroup[] {
  const muon: MuonGroup = { rule: 'muon', lr: 0.02, weightDecay: 0, momentum: 0.95, nesterov: true, scale: 'spectral', ...overrides.muon, params: params.filter((p) => p.kind === 'matrix') };
  const adamw: AdamWGroup = { rule: 'adamw', lr: 3e-3, weightDecay: 0, betas: [0.9, 0.95], eps: 1e-8, ...overrides.adamw, params: params.filter((p) => p.kind !== 'matrix') };
  return [muon, adamw].filter((g) => g.params.length > 0);
}
