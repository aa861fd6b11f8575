/**
 * The Muon + AdamW optimizer (REFERENCE.md, "Muon"). Each parameter group names its update
 * rule: 'muon' (momentum, then the spectral-norm LMO = Newton–Schulz, then a scaled step with
 * decoupled weight decay) for 2-D hidden matrices, 'adamw' for embeddings, the output head and
 * norms. A new rule is one more plan/step pair in Optimizer.
 *
 *   muon:  m = β·m + (1−β)·g;  u = nesterov ? (1−β)·g + β·m : m;  O = NS(u)
 *          W = W·(1 − lr·wd) − lr·s·O,  s = √max(1, rows/cols) ('spectral') or 0.2·√max(rows, cols) ('match-adamw')
 *   adamw: the decoupled-weight-decay Adam step with bias correction.
 *
 * State (momenta, second moments, step) saves and restores bit for bit (stateTensors/loadState).
 * CPU and CUDA (the CUDA kernels compile here and are verified by test/cuda/optimizer.test.ts on
 * a GPU).
 */
import { describe, fail } from '../errors.js';
import { binding } from '../native.js';
import * as ops from '../ops/elementwise.js';
import { Tensor, empty, tensor, zeros } from '../tensor.js';
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

/**
 * Distributed Muon (lib/dist): each rank runs Newton–Schulz on its share of every shape batch
 * (matrices [rank·c, (rank+1)·c), c = ⌈n / worldSize⌉) and the results are all-gathered, so
 * the optimizer's dominant cost shrinks with the world size. `allGather` queues an all-gather of
 * a tensor made of worldSize equal chunks; `wait` queues the point where later ops need it.
 */
export interface NewtonSchulzSharding {
  rank: number;
  worldSize: number;
  allGather(t: Tensor): unknown;
  wait(work: unknown): void;
}

export interface OptimizerOptions {
  newtonSchulzSharding?: NewtonSchulzSharding;
}

/** Same-shape Muon matrices of one group, stacked so Newton–Schulz runs once per shape. */
interface MuonShapeBatch {
  rows: number;
  cols: number;
  params: OptimizedParameter[];
  /** (batch, rows, cols): the momentum step writes each matrix's Newton–Schulz input here */
  update: Tensor;
  /** (batch, rows, cols): Newton–Schulz output (sharded: worldSize·⌈batch/worldSize⌉ matrices, the tail padding) */
  ortho: Tensor;
  /** sharded: matrices per rank */
  chunk: number;
  /** views of update/ortho, one per parameter */
  updates: Tensor[];
  orthos: Tensor[];
}

/** Planned per-group work: the lists every step hands to the multi-tensor kernels. */
interface GroupPlan {
  params: OptimizedParameter[];
  batches: MuonShapeBatch[];
  /** muon: per-parameter update scale (spectral or match-adamw) */
  scales: number[];
}

function muonScale(group: MuonGroup, rows: number, cols: number): number {
  return (group.scale ?? 'spectral') === 'spectral' ? Math.sqrt(Math.max(1, rows / cols)) : 0.2 * Math.sqrt(Math.max(rows, cols));
}

/**
 * Muon + AdamW over parameter groups. Each step is a handful of native calls per group, not
 * one per parameter: Muon momentum for the whole group (one multi-tensor call), Newton–Schulz
 * once per distinct matrix shape over the stacked updates, the scaled weight update for the
 * whole group; AdamW for the whole group. Every workspace is allocated at construction, so
 * update() and prepareGradientPoint() allocate no tensor memory. On CUDA the Newton–Schulz
 * input and output are bf16 (the compute dtype there); on the CPU they are f32.
 */
export class Optimizer {
  readonly groups: ParamGroup[];
  private steps = 0;
  /** 'extrapolated' groups: whether the weights sit at the extrapolated point (prepareGradientPoint ran since the last update) */
  private atGradientPoint = false;
  private readonly states = new Map<string, Record<string, Tensor>>();
  private readonly plans: GroupPlan[] = [];
  private readonly workspaces: Tensor[] = [];
  private readonly sharding?: NewtonSchulzSharding;

  constructor(groups: ParamGroup[], options: OptimizerOptions = {}) {
    if (!Array.isArray(groups)) fail('ERR_ARG', `parameter groups must be an array, got ${describe(groups)}`);
    const sh = options.newtonSchulzSharding;
    if (sh !== undefined) {
      if (!Number.isSafeInteger(sh.worldSize) || sh.worldSize < 1 || !Number.isSafeInteger(sh.rank) || sh.rank < 0 || sh.rank >= sh.worldSize) {
        fail('ERR_ARG', `newtonSchulzSharding needs 0 <= rank < worldSize, got rank ${sh.rank} of ${sh.worldSize}`);
      }
      if (sh.worldSize > 1) this.sharding = sh;
    }
    const seen = new Set<string>();
    // Each tensor may appear once across every group, as a weight or as a gradient: the same
    // tensor twice would be updated twice per step (the kernels re-check memory overlap natively).
    const tensorsSeen = new Set<unknown>();
    let device: string | undefined;
    for (const g of groups) {
      if (!g || !['muon', 'adamw'].includes((g as { rule: unknown }).rule as string)) fail('ERR_ARG', `unknown update rule ${describe((g as { rule: unknown } | undefined)?.rule)}`);
      if (!(typeof g.lr === 'number' && g.lr >= 0 && Number.isFinite(g.lr))) fail('ERR_ARG', 'group lr must be a finite number >= 0');
      if (!Array.isArray(g.params)) fail('ERR_ARG', 'group params must be an array');
      if (g.rule === 'muon' && g.variant !== undefined && !['standard', 'normuon', 'extrapolated'].includes(g.variant)) fail('ERR_ARG', `unknown muon variant ${describe(g.variant)}`);
      for (const p of g.params) {
        if (!p || typeof p !== 'object') fail('ERR_ARG', `group params must be { name, value, grad } objects, got ${describe(p)}`);
        if (typeof p.name !== 'string') fail('ERR_ARG', `parameter names must be strings, got ${describe(p.name)}`);
        if (seen.has(p.name)) fail('ERR_ARG', `parameter ${p.name} is in two groups`);
        seen.add(p.name);
        for (const [what, t] of [['value', p.value], ['grad', p.grad]] as const) {
          if (!(t instanceof Tensor)) fail('ERR_ARG', `${p.name}.${what} must be a kiln Tensor, got ${describe(t)}`);
          if (t.disposed) fail('ERR_DISPOSED', `${p.name}.${what} was disposed`);
          if (tensorsSeen.has(t) || tensorsSeen.has(t.handle)) fail('ERR_ARG', `${p.name}.${what} is a tensor already given to the optimizer (each weight and gradient must be a distinct tensor)`);
          tensorsSeen.add(t).add(t.handle);
        }

        if (p.value.dtype !== 'f32' || p.grad.dtype !== 'f32') fail('ERR_DTYPE', `${p.name}: master weights and gradients must be f32`);
        if (p.grad.device !== p.value.device || (device !== undefined && p.value.device !== device)) fail('ERR_DEVICE', `${p.name}: every parameter and gradient must be on one device`);
        device = p.value.device;
        if (g.rule === 'muon' && p.value.ndim !== 2) fail('ERR_SHAPE', `muon updates 2-D matrices; ${p.name} is [${p.value.shape}] (put it in an adamw group)`);
      }
    }
    this.groups = groups;
    for (const g of groups) this.plans.push(g.rule === 'muon' ? this.planMuon(g) : this.planAdamW(g));
  }

  private planMuon(group: MuonGroup): GroupPlan {
    const variant = group.variant ?? 'standard';
    const byShape = new Map<string, OptimizedParameter[]>();
    for (const p of group.params) {
      const key = p.value.shape.join('x');
      if (!byShape.has(key)) byShape.set(key, []);
      byShape.get(key)!.push(p);
      const device = p.value.device;
      const state: Record<string, Tensor> = { momentum: zeros([...p.value.shape], { device }) };
      if (variant === 'normuon') state.rowSecondMoment = zeros([p.value.shape[0]], { device });
      if (variant === 'extrapolated') {
        state.previous = p.value.clone();
        state.current = empty([...p.value.shape], { device }); // x_t while the weights sit at the extrapolated point
      }
      this.states.set(p.name, state);
    }
    const batches: MuonShapeBatch[] = [];
    for (const params of byShape.values()) {
      const [rows, cols] = params[0].value.shape;
      const device = params[0].value.device;
      // bf16 halves the traffic of the Newton–Schulz input and output on CUDA, where NS computes in bf16 anyway
      const dtype = device === 'cpu' ? 'f32' : 'bf16';
      const world = this.sharding?.worldSize ?? 1;
      const chunk = Math.ceil(params.length / world);
      const update = empty([params.length, rows, cols], { device, dtype });
      const ortho = world > 1 ? zeros([world * chunk, rows, cols], { device, dtype }) : empty([params.length, rows, cols], { device, dtype });
      this.workspaces.push(update, ortho);
      const views = (t: Tensor) => params.map((_, i) => t.slice(i, i + 1).reshape(rows, cols));
      batches.push({ rows, cols, params, update, ortho, chunk, updates: views(update), orthos: views(ortho) });
    }
    const ordered = batches.flatMap((b) => b.params);
    return { params: ordered, batches, scales: ordered.map((p) => muonScale(group, p.value.shape[0], p.value.shape[1])) };
  }

  private planAdamW(group: AdamWGroup): GroupPlan {
    for (const p of group.params) {
      const device = p.value.device;
      this.states.set(p.name, { m: zeros([...p.value.shape], { device }), v: zeros([...p.value.shape], { device }) });
    }
    return { params: group.params, batches: [], scales: [] };
  }

  get step(): number {
    return this.steps;
  }

  /** One update of every parameter with lr · lrMultiplier (the schedule). */
  update(lrMultiplier = 1): void {
    if (typeof lrMultiplier !== 'number' || !Number.isFinite(lrMultiplier) || lrMultiplier < 0) fail('ERR_ARG', 'lrMultiplier must be a finite number >= 0');
    if (this.hasExtrapolated() && !this.atGradientPoint) {
      // the step moves the weights back from x̃ to x_t, which prepareGradientPoint() saved: without it there is nothing to move back to
      fail('ERR_ARG', "an 'extrapolated' Muon group needs prepareGradientPoint() before the forward pass of every step, then update()");
    }
    this.assertLive();
    this.atGradientPoint = false;
    this.steps++;
    for (const [i, g] of this.groups.entries()) {
      const plan = this.plans[i];
      if (plan.params.length === 0) continue;
      if (g.rule === 'adamw') this.adamwStep(g, plan, lrMultiplier);
      else this.muonStep(g, plan, lrMultiplier);
    }
  }

  private state(p: OptimizedParameter): Record<string, Tensor> {
    return this.states.get(p.name)!;
  }

  private adamwStep(group: AdamWGroup, plan: GroupPlan, lrMultiplier: number): void {
    const [beta1, beta2] = group.betas ?? [0.9, 0.95];
    const ps = plan.params;
    binding().adamwMulti(ps.map((p) => p.value.handle), ps.map((p) => this.state(p).m.handle), ps.map((p) => this.state(p).v.handle), ps.map((p) => p.grad.handle), {
      lr: group.lr * lrMultiplier, beta1, beta2, eps: group.eps ?? 1e-8, weightDecay: group.weightDecay ?? 0, step: this.steps,
    });
  }

  private muonStep(group: MuonGroup, plan: GroupPlan, lrMultiplier: number): void {
    const variant = group.variant ?? 'standard';
    const ps = plan.params;
    if (variant === 'extrapolated') {
      // back from the extrapolated point to x_t; x_t becomes x_prev for the next step
      for (const p of ps) {
        const s = this.state(p);
        binding().copy(p.value.handle, s.current.handle);
        binding().copy(s.previous.handle, s.current.handle);
      }
    }
    const updates = plan.batches.flatMap((b) => b.updates);
    const orthos = plan.batches.flatMap((b) => b.orthos);
    const nesterov = variant === 'extrapolated' ? false : (group.nesterov ?? true);
    binding().muonMomentumMulti(ps.map((p) => this.state(p).momentum.handle), updates.map((t) => t.handle), ps.map((p) => p.grad.handle), group.momentum ?? 0.95, nesterov);
    const sh = this.sharding;
    if (!sh) {
      for (const b of plan.batches) newtonSchulz(b.update, { ...group.newtonSchulz, out: b.ortho });
    } else {
      // each rank orthogonalizes its share; the gathers of earlier shapes overlap later shapes' work
      const works: unknown[] = [];
      for (const b of plan.batches) {
        const lo = Math.min(b.params.length, sh.rank * b.chunk);
        const hi = Math.min(b.params.length, lo + b.chunk);
        if (hi > lo) newtonSchulz(b.update.slice(lo, hi), { ...group.newtonSchulz, out: b.ortho.slice(lo, hi) });
        works.push(sh.allGather(b.ortho));
      }
      for (const w of works) sh.wait(w);
    }
    if (variant === 'normuon') {
      for (const [i, p] of ps.entries()) {
        const [rows, cols] = p.value.shape;
        binding().normuonNormalize(orthos[i].handle, this.state(p).rowSecondMoment.handle, rows, cols, group.beta2 ?? 0.95, 1e-8);
      }
    }
    binding().muonApplyMulti(ps.map((p) => p.value.handle), orthos.map((t) => t.handle), plan.scales, group.lr * lrMultiplier, group.weightDecay ?? 0);
  }

  /**
   * For groups with the 'extrapolated' variant: moves each weight to x̃ = x + β/(1−β)·(x − x_prev)
   * so that the next forward/backward computes the gradient there; update() moves it back.
   */
  prepareGradientPoint(): void {
    if (this.atGradientPoint) return; // already at x̃ for this step: moving again would lose x_t
    this.assertLive();
    this.atGradientPoint = this.hasExtrapolated();
    for (const [i, g] of this.groups.entries()) {
      if (g.rule !== 'muon' || g.variant !== 'extrapolated') continue;
      const c = (g.momentum ?? 0.95) / (1 - (g.momentum ?? 0.95));
      const ps = this.plans[i].params;
      if (ps.length === 0) continue;
      for (const p of ps) {
        const s = this.state(p);
        binding().copy(s.current.handle, p.value.handle);
        ops.scale(s.current, 1 + c, { out: p.value });
      }
      // x̃ = (1 + c)·x − c·x_prev, the subtraction as a Muon apply with lr c, scale 1, no decay
      binding().muonApplyMulti(ps.map((p) => p.value.handle), ps.map((p) => this.state(p).previous.handle), ps.map(() => 1), c, 0);
    }
  }

  /** Every weight, gradient and state tensor must be live before a step touches any: a step that failed halfway would leave state and weights out of step. */
  private assertLive(): void {
    for (const plan of this.plans) {
      for (const p of plan.params) {
        if (p.value.disposed || p.grad.disposed) fail('ERR_DISPOSED', `${p.name}: its weight or gradient was disposed`);
        for (const [key, t] of Object.entries(this.state(p))) if (t.disposed) fail('ERR_DISPOSED', `${p.name}.${key} (optimizer state) was disposed`);
      }
    }
    for (const t of this.workspaces) if (t.disposed) fail('ERR_DISPOSED', 'the optimizer was disposed');
  }

  private hasExtrapolated(): boolean {
    return this.groups.some((g, i) => g.rule === 'muon' && g.variant === 'extrapolated' && this.plans[i].params.length > 0);
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
        using src = tensor(v, { shape: [...t.shape] }).to(t.device);
        binding().copy(t.handle, src.handle);
      }
    }
    this.steps = step;
  }

  dispose(): void {
    for (const state of this.states.values()) for (const t of Object.values(state)) t.dispose();
    for (const t of this.workspaces) t.dispose();
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
  if (!Array.isArray(params)) fail('ERR_ARG', `params must be an array of the model's parameters, got ${describe(params)}`);
  for (const p of params) if (!p || typeof p !== 'object') fail('ERR_ARG', `params must hold { name, value, grad, kind } objects, got ${describe(p)}`);
  if (!overrides || typeof overrides !== 'object') fail('ERR_ARG', `overrides must be an object, got ${describe(overrides)}`);
  const muon: MuonGroup = { rule: 'muon', lr: 0.02, weightDecay: 0, momentum: 0.95, nesterov: true, scale: 'spectral', ...overrides.muon, params: params.filter((p) => p.kind === 'matrix') };
  const adamw: AdamWGroup = { rule: 'adamw', lr: 3e-3, weightDecay: 0, betas: [0.9, 0.95], eps: 1e-8, ...overrides.adamw, params: params.filter((p) => p.kind !== 'matrix') };
  return [muon, adamw].filter((g) => g.params.length > 0);
}
