/**
 * The Muon + AdamW optimizer. Each parameter group names its update
 * rule: 'muon' (momentum, then the spectral-norm LMO = Newton–Schulz, then a scaled step with
 * decoupled weight decay) for 2-D hidden matrices, 'adamw' for embeddings, the output head and
 * norms. A new rule is one more plan/step pair in Optimizer.
 *
 *   muon:  m = β·m + (1−β)·g;  u = nesterov ? (1−β)·g + β·m : m;  O = NS(u)
 *          W = W·(1 − lr·wd) − lr·s·O,  s = √max(1, rows/cols) ('spectral') or 0.2·√max(rows, cols) ('match-adamw')
 *   adamw: the decoupled-weight-decay Adam step with bias correction.
 *
 * State (momenta, second moments, step) saves and restores bit for bit (stateTensors/loadState).
 * Data parallelism: Newton–Schulz shared between ranks (newtonSchulzSharding) and, optionally,
 * ZeRO-1 (each rank keeps the state of its share only; checkpoints gather the full state).
 * CPU and CUDA (the CUDA kernels compile here and are verified by test/cuda/optimizer.test.ts on
 * a GPU).
 */
import { describe, fail } from '../errors.js';
import * as ops from '../ops/elementwise.js';
import { copyInto } from '../ops/layers.js';
import * as kernels from '../ops/optimizer.js';
import { dtypeBytes } from '../dtype.js';
import { Tensor, empty, tensor, zeros } from '../tensor.js';
import { type NewtonSchulzOptions, newtonSchulz } from '../ops/newton_schulz.js';

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
 * Distributed Muon (lib/parallel): each rank runs Newton–Schulz on its share of every shape batch
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
  /**
   * ZeRO-1 (needs newtonSchulzSharding; nothing to shard with one rank): each rank keeps
   * optimizer state for its share only, after the gradients were all-reduced. Muon: momentum
   * (and normuon's row second moments) for the matrices it orthogonalizes, the orthogonalized
   * updates all-gathered as before. AdamW: its parameters flattened into one vector of N
   * elements (padded to worldSize·c, c = ⌈N / worldSize⌉); the rank owns [rank·c, (rank+1)·c),
   * holds m and v for that range, steps it, and the updated weights are all-gathered. Every
   * rank applies every update, so the weights stay identical. The 'extrapolated' variant's
   * previous/current copies stay full on every rank (every rank's forward pass reads them).
   */
  zero1?: boolean;
}

/** What stateTensors() returns: the full state under the unsharded names; release() frees what was gathered for it. */
export interface OptimizerState {
  step: number;
  tensors: Map<string, Tensor>;
  /** frees the tensors gathered for this call (ZeRO-1); a no-op when they are the live state */
  release(): void;
}

/** Bytes the optimizer holds: state (momenta, moments, extrapolation copies) and planned workspaces. */
export interface OptimizerMemory {
  stateBytes: number;
  workspaceBytes: number;
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
  /** views of ortho, one per parameter */
  orthos: Tensor[];
  /** the matrices whose momentum this rank steps and orthogonalizes: [lo, hi) (all of them unsharded) */
  lo: number;
  hi: number;
  /** views of update, one per parameter whose momentum this rank steps (every parameter, or the ZeRO-1 share) */
  updates: Tensor[];
  /** Newton–Schulz input (a view of update) and output (a view of ortho) of this rank's share; none when it owns no matrix of this shape */
  nsIn?: Tensor;
  nsOut?: Tensor;
}

/** One parameter's part of a rank's ZeRO-1 AdamW range (views, planned once). */
interface AdamWPiece {
  weight: Tensor;
  grad: Tensor;
  m: Tensor;
  v: Tensor;
  /** the same elements in the all-gather buffer */
  gathered: Tensor;
  /** the parameter and the piece's element range inside it */
  param: OptimizedParameter;
  lo: number;
  hi: number;
}

/** ZeRO-1 AdamW: the group's parameters as one flat vector of `total` elements, this rank's range [start, end). */
interface AdamWShard {
  total: number;
  chunk: number;
  start: number;
  end: number;
  /** m and v of [start, end) (none when the range is empty) */
  m?: Tensor;
  v?: Tensor;
  pieces: AdamWPiece[];
  /** (worldSize·chunk) f32: every rank's updated range, all-gathered */
  gather: Tensor;
  /** per parameter: its elements of gather, in its shape */
  outs: Tensor[];
  /** per parameter: its first element in the flat vector */
  offsets: number[];
}

/** Planned per-group work: the lists every step hands to the multi-tensor kernels. */
interface GroupPlan {
  params: OptimizedParameter[];
  batches: MuonShapeBatch[];
  /** muon: per-parameter update scale (spectral or match-adamw) */
  scales: number[];
  /** muon: the parameters whose momentum this rank steps, in the order of the batches' `updates` */
  stepped: OptimizedParameter[];
  /** adamw under ZeRO-1 */
  shard?: AdamWShard;
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
  /** ZeRO-1 is on (options.zero1 with more than one rank) */
  private readonly zero1: boolean = false;
  /** ZeRO-1 AdamW m and v buffers (state) and views over them and the parameters (disposed with the optimizer) */
  private readonly shardState: Tensor[] = [];
  private readonly views: Tensor[] = [];

  constructor(groups: ParamGroup[], options: OptimizerOptions = {}) {
    if (!Array.isArray(groups)) fail('ERR_ARG', `parameter groups must be an array, got ${describe(groups)}`);
    if (!options || typeof options !== 'object') fail('ERR_ARG', `optimizer options must be an object, got ${describe(options)}`);
    const sh = options.newtonSchulzSharding;
    if (sh !== undefined) {
      if (!sh || typeof sh.allGather !== 'function' || typeof sh.wait !== 'function') fail('ERR_ARG', 'newtonSchulzSharding needs rank, worldSize and the functions allGather and wait');
      if (!Number.isSafeInteger(sh.worldSize) || sh.worldSize < 1 || !Number.isSafeInteger(sh.rank) || sh.rank < 0 || sh.rank >= sh.worldSize) {
        fail('ERR_ARG', `newtonSchulzSharding needs 0 <= rank < worldSize, got rank ${sh.rank} of ${sh.worldSize}`);
      }
      if (sh.worldSize > 1) this.sharding = sh;
    }
    if (options.zero1 !== undefined && typeof options.zero1 !== 'boolean') fail('ERR_ARG', `zero1 must be a boolean, got ${describe(options.zero1)}`);
    if (options.zero1 && !sh) fail('ERR_ARG', 'zero1 shards the state by the ranks of newtonSchulzSharding: give both');
    this.zero1 = options.zero1 === true && this.sharding !== undefined;
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
    const sh = this.sharding;
    const world = sh?.worldSize ?? 1;
    const byShape = new Map<string, OptimizedParameter[]>();
    for (const p of group.params) {
      const key = p.value.shape.join('x');
      if (!byShape.has(key)) byShape.set(key, []);
      byShape.get(key)!.push(p);
    }
    const batches: MuonShapeBatch[] = [];
    for (const params of byShape.values()) {
      const [rows, cols] = params[0].value.shape;
      const device = params[0].value.device;
      // bf16 halves the traffic of the Newton–Schulz input and output on CUDA, where NS computes in bf16 anyway
      const dtype = device === 'cpu' ? 'f32' : 'bf16';
      const n = params.length;
      const chunk = Math.ceil(n / world);
      // rank r orthogonalizes matrices [r·chunk, (r+1)·chunk) of the batch (the tail rank fewer, or none)
      const lo = sh ? Math.min(n, sh.rank * chunk) : 0;
      const hi = sh ? Math.min(n, lo + chunk) : n;
      // ZeRO-1: momentum steps only the owned matrices, so the Newton–Schulz input holds only those
      const update = empty([this.zero1 ? chunk : n, rows, cols], { device, dtype });
      const ortho = world > 1 ? zeros([world * chunk, rows, cols], { device, dtype }) : empty([n, rows, cols], { device, dtype });
      this.workspaces.push(update, ortho);
      const view = (t: Tensor, i: number) => t.slice(i, i + 1).reshape(rows, cols);
      const updates = Array.from({ length: this.zero1 ? hi - lo : n }, (_, i) => view(update, i));
      const orthos = params.map((_, i) => view(ortho, i));
      const batch: MuonShapeBatch = { rows, cols, params, update, ortho, chunk, orthos, lo, hi, updates };
      if (!sh) {
        batch.nsIn = update;
        batch.nsOut = ortho;
      } else if (hi > lo) {
        batch.nsIn = this.zero1 ? update.slice(0, hi - lo) : update.slice(lo, hi);
        batch.nsOut = ortho.slice(lo, hi);
      }
      batches.push(batch);
    }
    const stepped = batches.flatMap((b) => (this.zero1 ? b.params.slice(b.lo, b.hi) : b.params));
    const steps = new Set(stepped);
    // in the group's order, so that the state's names come out in the same order sharded or not
    for (const p of group.params) {
      const device = p.value.device;
      const state: Record<string, Tensor> = {};
      if (steps.has(p)) {
        state.momentum = zeros([...p.value.shape], { device });
        if (variant === 'normuon') state.rowSecondMoment = zeros([p.value.shape[0]], { device });
      }
      if (variant === 'extrapolated') {
        // every rank's forward pass reads x̃, so these stay full under ZeRO-1
        state.previous = p.value.clone();
        state.current = empty([...p.value.shape], { device }); // x_t while the weights sit at the extrapolated point
      }
      this.states.set(p.name, state);
    }
    const ordered = batches.flatMap((b) => b.params);
    return { params: ordered, batches, stepped, scales: ordered.map((p) => muonScale(group, p.value.shape[0], p.value.shape[1])) };
  }

  private planAdamW(group: AdamWGroup): GroupPlan {
    if (this.zero1) return { params: group.params, batches: [], scales: [], stepped: [], shard: this.planAdamWShard(group) };
    for (const p of group.params) {
      const device = p.value.device;
      this.states.set(p.name, { m: zeros([...p.value.shape], { device }), v: zeros([...p.value.shape], { device }) });
    }
    return { params: group.params, batches: [], scales: [], stepped: [] };
  }

  /** ZeRO-1: this rank's range of the group's flattened parameters, and every view a step needs (planned once). */
  private planAdamWShard(group: AdamWGroup): AdamWShard {
    const sh = this.sharding!;
    const offsets: number[] = [];
    let total = 0;
    for (const p of group.params) {
      offsets.push(total);
      total += p.value.numel;
    }
    const chunk = Math.max(1, Math.ceil(total / sh.worldSize));
    const start = Math.min(total, sh.rank * chunk);
    const end = Math.min(total, start + chunk);
    const device = group.params[0]?.value.device ?? 'cpu';
    const gather = zeros([sh.worldSize * chunk], { device });
    this.workspaces.push(gather);
    const keep = <T extends Tensor>(t: T): T => (this.views.push(t), t);
    const shard: AdamWShard = { total, chunk, start, end, pieces: [], gather, outs: [], offsets };
    if (end > start) {
      shard.m = zeros([end - start], { device });
      shard.v = zeros([end - start], { device });
      this.shardState.push(shard.m, shard.v);
    }
    for (const [i, p] of group.params.entries()) {
      const n = p.value.numel;
      const offset = offsets[i];
      shard.outs.push(keep(gather.slice(offset, offset + n).reshape(...p.value.shape)));
      const lo = Math.max(start, offset) - offset;
      const hi = Math.min(end, offset + n) - offset;
      if (hi <= lo) continue;
      const flat = (t: Tensor) => keep(t.reshape(n).slice(lo, hi));
      const at = offset + lo - start; // the piece's first element in m and v
      shard.pieces.push({
        param: p, lo, hi, weight: flat(p.value), grad: flat(p.grad),
        m: keep(shard.m!.slice(at, at + hi - lo)), v: keep(shard.v!.slice(at, at + hi - lo)), gathered: keep(gather.slice(offset + lo, offset + hi)),
      });
    }
    return shard;
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
    if (this.zero1) {
      // AdamW first: its all-gather runs while this rank orthogonalizes its Muon matrices
      const pending: (() => void)[] = [];
      for (const [i, g] of this.groups.entries()) if (g.rule === 'adamw' && this.plans[i].params.length > 0) pending.push(this.adamwShardStep(g, this.plans[i], lrMultiplier));
      for (const [i, g] of this.groups.entries()) if (g.rule === 'muon' && this.plans[i].params.length > 0) this.muonStep(g, this.plans[i], lrMultiplier);
      for (const finish of pending) finish();
      return;
    }
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
    const ps = plan.params;
    kernels.adamwMulti(ps.map((p) => p.value), ps.map((p) => this.state(p).m), ps.map((p) => this.state(p).v), ps.map((p) => p.grad), this.adamwParams(group, lrMultiplier));
  }

  private adamwParams(group: AdamWGroup, lrMultiplier: number) {
    const [beta1, beta2] = group.betas ?? [0.9, 0.95];
    return { lr: group.lr * lrMultiplier, beta1, beta2, eps: group.eps ?? 1e-8, weightDecay: group.weightDecay ?? 0, step: this.steps };
  }

  /**
   * ZeRO-1 AdamW: steps this rank's range, puts it in its chunk of the gather buffer and queues
   * the all-gather; the returned function queues the wait and copies every range back into the
   * weights (so the weights end identical on every rank).
   */
  private adamwShardStep(group: AdamWGroup, plan: GroupPlan, lrMultiplier: number): () => void {
    const shard = plan.shard!;
    const sh = this.sharding!;
    const pieces = shard.pieces;
    if (pieces.length > 0) {
      kernels.adamwMulti(pieces.map((x) => x.weight), pieces.map((x) => x.m), pieces.map((x) => x.v), pieces.map((x) => x.grad), this.adamwParams(group, lrMultiplier));
      for (const x of pieces) copyInto(x.gathered, x.weight);
    }
    const work = sh.allGather(shard.gather);
    return () => {
      sh.wait(work);
      for (const [i, p] of plan.params.entries()) copyInto(p.value, shard.outs[i]);
    };
  }

  private muonStep(group: MuonGroup, plan: GroupPlan, lrMultiplier: number): void {
    const variant = group.variant ?? 'standard';
    const ps = plan.params;
    if (variant === 'extrapolated') {
      // back from the extrapolated point to x_t; x_t becomes x_prev for the next step
      for (const p of ps) {
        const s = this.state(p);
        copyInto(p.value, s.current);
        copyInto(s.previous, s.current);
      }
    }
    const updates = plan.batches.flatMap((b) => b.updates);
    const orthos = plan.batches.flatMap((b) => b.orthos);
    const nesterov = variant === 'extrapolated' ? false : (group.nesterov ?? true);
    const stepped = plan.stepped;
    if (stepped.length > 0) {
      kernels.muonMomentumMulti(stepped.map((p) => this.state(p).momentum), updates, stepped.map((p) => p.grad), group.momentum ?? 0.95, nesterov);
    }
    const sh = this.sharding;
    if (!sh) {
      for (const b of plan.batches) newtonSchulz(b.nsIn!, { ...group.newtonSchulz, out: b.nsOut });
    } else {
      // each rank orthogonalizes its share; the gathers of earlier shapes overlap later shapes' work
      const works: unknown[] = [];
      for (const b of plan.batches) {
        if (b.nsIn) newtonSchulz(b.nsIn, { ...group.newtonSchulz, out: b.nsOut });
        if (this.zero1 && variant === 'normuon') {
          // the row second moments live with the owner: normalize before the gather
          for (let i = b.lo; i < b.hi; i++) {
            kernels.normuonNormalize(b.orthos[i], this.state(b.params[i]).rowSecondMoment, b.rows, b.cols, group.beta2 ?? 0.95, 1e-8);
          }
        }
        works.push(sh.allGather(b.ortho));
      }
      for (const w of works) sh.wait(w);
    }
    if (variant === 'normuon' && !this.zero1) {
      for (const [i, p] of ps.entries()) {
        const [rows, cols] = p.value.shape;
        kernels.normuonNormalize(orthos[i], this.state(p).rowSecondMoment, rows, cols, group.beta2 ?? 0.95, 1e-8);
      }
    }
    kernels.muonApplyMulti(ps.map((p) => p.value), orthos, plan.scales, group.lr * lrMultiplier, group.weightDecay ?? 0);
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
        copyInto(s.current, p.value);
        ops.scale(s.current, 1 + c, { out: p.value });
      }
      // x̃ = (1 + c)·x − c·x_prev, the subtraction as a Muon apply with lr c, scale 1, no decay
      kernels.muonApplyMulti(ps.map((p) => p.value), ps.map((p) => this.state(p).previous), ps.map(() => 1), c, 0);
    }
  }

  /** Every weight, gradient and state tensor must be live before a step touches any: a step that failed halfway would leave state and weights out of step. */
  private assertLive(): void {
    for (const plan of this.plans) {
      for (const p of plan.params) {
        if (p.value.disposed || p.grad.disposed) fail('ERR_DISPOSED', `${p.name}: its weight or gradient was disposed`);
        for (const [key, t] of Object.entries(this.states.get(p.name) ?? {})) if (t.disposed) fail('ERR_DISPOSED', `${p.name}.${key} (optimizer state) was disposed`);
      }
    }
    for (const t of [...this.workspaces, ...this.shardState]) if (t.disposed) fail('ERR_DISPOSED', 'the optimizer was disposed');
  }

  private hasExtrapolated(): boolean {
    return this.groups.some((g, i) => g.rule === 'muon' && g.variant === 'extrapolated' && this.plans[i].params.length > 0);
  }

  /** Every saved state tensor (name, size), in the order the unsharded state holds them ('current' is scratch, never saved). */
  private stateLayout(): { name: string; key: string; param: OptimizedParameter; numel: number }[] {
    const out: { name: string; key: string; param: OptimizedParameter; numel: number }[] = [];
    for (const g of this.groups) {
      const keys = g.rule === 'adamw' ? ['m', 'v'] : ['momentum', ...(g.variant === 'normuon' ? ['rowSecondMoment'] : []), ...(g.variant === 'extrapolated' ? ['previous'] : [])];
      for (const p of g.params) {
        for (const key of keys) out.push({ name: `${p.name}.${key}`, key, param: p, numel: key === 'rowSecondMoment' ? p.value.shape[0] : p.value.numel });
      }
    }
    return out;
  }

  /** Bytes this rank holds: optimizer state (with ZeRO-1, its share) and the planned workspaces. */
  memory(): OptimizerMemory {
    const bytes = (ts: Iterable<Tensor>) => {
      let n = 0;
      for (const t of ts) n += t.numel * dtypeBytes(t.dtype);
      return n;
    };
    const state = [...this.states.values()].flatMap((s) => Object.values(s));
    return { stateBytes: bytes(state) + bytes(this.shardState), workspaceBytes: bytes(this.workspaces) };
  }

  /**
   * The full state by `<param name>.<state>` (the same tensors and names sharded or not), plus
   * the step count, for checkpoints. With ZeRO-1 every rank must call it at the same point: the
   * shares are all-gathered into temporary tensors (queued; reading them waits), which
   * release() frees. Unsharded, the tensors are the live state and release() does nothing.
   */
  /** The live state tensors by `<param name>.<state>` (not for ZeRO-1, whose state is sharded: use stateTensors()). */
  localStateTensors(): Map<string, Tensor> {
    if (this.zero1) fail('ERR_ARG', 'a ZeRO-1 optimizer holds only its share of the state: use stateTensors() to gather it');
    const tensors = new Map<string, Tensor>();
    for (const [name, state] of this.states) {
      for (const [key, t] of Object.entries(state)) if (key !== 'current') tensors.set(`${name}.${key}`, t);
    }
    return tensors;
  }

  async stateTensors(): Promise<OptimizerState> {
    const tensors = new Map<string, Tensor>();
    if (!this.zero1) return { step: this.steps, tensors: this.localStateTensors(), release: () => {} };
    this.assertLive();
    const sh = this.sharding!;
    const temps: Tensor[] = [];
    const gathered = new Map<string, Tensor>();
    const works: unknown[] = [];
    const temp = (shape: number[], device: Tensor['device']) => {
      const t = zeros(shape, { device });
      temps.push(t);
      return t;
    };
    let ok = false;
    try {
      for (const [i, g] of this.groups.entries()) {
        const plan = this.plans[i];
        if (g.rule === 'muon') {
          for (const b of plan.batches) {
            const device = b.params[0].value.device;
            const keys: [string, number[]][] = [['momentum', [b.rows, b.cols]], ...(g.variant === 'normuon' ? [['rowSecondMoment', [b.rows]] as [string, number[]]] : [])];
            for (const [key, shape] of keys) {
              // the owners' matrices land in their chunks: matrix i of the batch at row i
              const all = temp([sh.worldSize * b.chunk, ...shape], device);
              const at = (j: number) => {
                const v = all.slice(j, j + 1).reshape(...shape);
                temps.push(v);
                return v;
              };
              for (let j = b.lo; j < b.hi; j++) copyInto(at(j), this.state(b.params[j])[key]);
              works.push(sh.allGather(all));
              b.params.forEach((p, j) => gathered.set(`${p.name}.${key}`, at(j)));
            }
          }
        } else if (plan.shard) {
          const shard = plan.shard;
          const device = shard.gather.device;
          for (const key of ['m', 'v'] as const) {
            const all = temp([sh.worldSize * shard.chunk], device);
            const own = shard[key];
            if (own) {
              const dst = all.slice(shard.start, shard.end);
              temps.push(dst);
              copyInto(dst, own);
            }
            works.push(sh.allGather(all));
            g.params.forEach((p, j) => {
              const v = all.slice(shard.offsets[j], shard.offsets[j] + p.value.numel).reshape(...p.value.shape);
              temps.push(v);
              gathered.set(`${p.name}.${key}`, v);
            });
          }
        }
      }
      ok = true;
    } finally {
      // every queued all-gather is waited for, even when a later one failed to queue
      for (const w of works) sh.wait(w);
      if (!ok) temps.forEach((t) => t.dispose());
    }
    for (const { name, key, param } of this.stateLayout()) tensors.set(name, gathered.get(name) ?? this.state(param)[key]);
    return { step: this.steps, tensors, release: () => temps.forEach((t) => t.dispose()) };
  }

  /**
   * Restores the full state saved by stateTensors (values are copied in; sizes must match).
   * With ZeRO-1 each rank keeps its share; every rank checks the whole state, so that the
   * ranks accept or refuse a checkpoint alike.
   */
  async loadState(step: number, values: Map<string, Float32Array>): Promise<void> {
    if (!Number.isSafeInteger(step) || step < 0) fail('ERR_CHECKPOINT', 'optimizer step must be a non-negative integer');
    if (!(values instanceof Map)) fail('ERR_CHECKPOINT', `optimizer state must be a Map of name -> Float32Array, got ${describe(values)}`);
    this.assertLive();
    for (const { name, numel } of this.stateLayout()) {
      const v = values.get(name);
      if (!(v instanceof Float32Array) || v.length !== numel) fail('ERR_CHECKPOINT', `optimizer state ${name} is missing or has the wrong size`);
    }
    const load = (dst: Tensor, src: Float32Array) => {
      using t = tensor(src, { shape: [...dst.shape] }).to(dst.device);
      copyInto(dst, t);
    };
    for (const [name, state] of this.states) {
      for (const [key, t] of Object.entries(state)) if (key !== 'current') load(t, values.get(`${name}.${key}`)!);
    }
    for (const plan of this.plans) {
      for (const x of plan.shard?.pieces ?? []) {
        load(x.m, values.get(`${x.param.name}.m`)!.slice(x.lo, x.hi));
        load(x.v, values.get(`${x.param.name}.v`)!.slice(x.lo, x.hi));
      }
    }
    this.steps = step;
  }

  dispose(): void {
    for (const state of this.states.values()) for (const t of Object.values(state)) t.dispose();
    for (const t of [...this.views, ...this.shardState, ...this.workspaces]) t.dispose();
  }
}

/**
 * Default grouping by the kinds the architecture declares (lib/model/arch): Muon for 2-D hidden
 * matrices, AdamW for embeddings, the output head and norms, and AdamW without weight decay for
 * biases (decaying a bias only pulls the layer's offset to zero); per-group overrides merge over
 * the defaults (a weightDecay override leaves the biases' at 0).
 */
export function llamaParamGroups(
  params: (OptimizedParameter & { kind: 'matrix' | 'embedding' | 'head' | 'norm' | 'bias' })[],
  overrides: { muon?: Partial<Omit<MuonGroup, 'rule' | 'params'>>; adamw?: Partial<Omit<AdamWGroup, 'rule' | 'params'>> } = {},
): ParamGroup[] {
  if (!Array.isArray(params)) fail('ERR_ARG', `params must be an array of the model's parameters, got ${describe(params)}`);
  for (const p of params) if (!p || typeof p !== 'object') fail('ERR_ARG', `params must hold { name, value, grad, kind } objects, got ${describe(p)}`);
  if (!overrides || typeof overrides !== 'object') fail('ERR_ARG', `overrides must be an object, got ${describe(overrides)}`);
  const muon: MuonGroup = { rule: 'muon', lr: 0.02, weightDecay: 0, momentum: 0.95, nesterov: true, scale: 'spectral', ...overrides.muon, params: params.filter((p) => p.kind === 'matrix') };
  const adamw: AdamWGroup = { rule: 'adamw', lr: 3e-3, weightDecay: 0, betas: [0.9, 0.95], eps: 1e-8, ...overrides.adamw, params: params.filter((p) => p.kind !== 'matrix' && p.kind !== 'bias') };
  const biases: AdamWGroup = { ...adamw, weightDecay: 0, params: params.filter((p) => p.kind === 'bias') };
  return [muon, adamw, biases].filter((g) => g.params.length > 0);
}
