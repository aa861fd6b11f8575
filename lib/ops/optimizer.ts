/**
 * The fused multi-tensor optimizer kernels (native/ops/optimizer.h gives the math): one call
 * updates a whole list of parameter tensors. Every update is `=` into the weights and state it
 * is given; lib/optim composes these into its update rules. The native side re-checks each list
 * (dtype, device, sizes, aliasing), so here only the lists' shape is checked.
 */
import { fail } from '../errors.js';
import { type Tensor, checkTensor } from '../tensor.js';
import { binding } from '../native.js';
import { checkFiniteNumber } from '../validate.js';

export interface AdamWParams {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** the step being taken, from 1 (bias correction) */
  step: number;
}

function handles(list: readonly Tensor[], name: string, length: number) {
  if (!Array.isArray(list) || list.length !== length) fail('ERR_ARG', `${name} must list ${length} tensors, got ${Array.isArray(list) ? list.length : typeof list}`);
  return list.map((t, i) => checkTensor(t, `${name}[${i}]`).handle);
}

/** AdamW over the list: m, v and w updated in place (f32 state, f32 master weights). */
export function adamwMulti(weights: readonly Tensor[], m: readonly Tensor[], v: readonly Tensor[], grads: readonly Tensor[], params: AdamWParams): void {
  const n = weights.length;
  binding().adamwMulti(handles(weights, 'weights', n), handles(m, 'm', n), handles(v, 'v', n), handles(grads, 'grads', n), params);
}

/**
 * Muon momentum over the list: m = β·m + (1−β)·g, and the Newton–Schulz input
 * u = nesterov ? (1−β)·g + β·m : m written to `updates` (f32 or bf16, one dtype).
 */
export function muonMomentumMulti(momenta: readonly Tensor[], updates: readonly Tensor[], grads: readonly Tensor[], beta: number, nesterov: boolean): void {
  const n = momenta.length;
  binding().muonMomentumMulti(handles(momenta, 'momenta', n), handles(updates, 'updates', n), handles(grads, 'grads', n), checkFiniteNumber(beta, 'beta'), nesterov);
}

/** w_i = w_i·(1 − lr·wd) − lr·scales[i]·orthos_i (orthos f32 or bf16, one dtype). */
export function muonApplyMulti(weights: readonly Tensor[], orthos: readonly Tensor[], scales: readonly number[], lr: number, weightDecay: number): void {
  const n = weights.length;
  if (!Array.isArray(scales) || scales.length !== n) fail('ERR_ARG', `scales must list ${n} numbers`);
  binding().muonApplyMulti(handles(weights, 'weights', n), handles(orthos, 'orthos', n), scales as number[], checkFiniteNumber(lr, 'lr'), checkFiniteNumber(weightDecay, 'weightDecay'));
}

/**
 * NorMuon: updates the per-row second moment of the orthogonalized update (rows of `ortho`,
 * shape (rows, cols)) with β2 and normalizes each row by it, in place.
 */
export function normuonNormalize(ortho: Tensor, rowSecondMoment: Tensor, rows: number, cols: number, beta2: number, eps: number): void {
  binding().normuonNormalize(checkTensor(ortho, 'ortho').handle, checkTensor(rowSecondMoment, 'rowSecondMoment').handle, rows, cols, beta2, eps);
}
