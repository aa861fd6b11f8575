/**
 * The targets the data-parallel verdicts judge against. The benchmarks own them
 * (bench/targets.ts) and record them in each result file they write (`targets`). A file written
 * before that is judged against the caller's `targets` option, else against bench/targets.json
 * when the report runs from a kiln checkout (beside dist/), target by target. An installed package ships no benchmarks: there such a file's figures get no verdict
 * unless the caller names targets.
 */
import { readFileSync } from 'node:fs';
import type { DataParallelTargets } from '../results_schema.js';

export type Targets = Partial<DataParallelTargets>;

export const TARGET_NAMES = ['allReduceOfGloo', 'scalingEfficiency', 'dilocoTokensOfLocal', 'dilocoValLossVsSync'] as const satisfies readonly (keyof DataParallelTargets)[];

const isObject = (v: unknown): v is Record<string, unknown> => !!v && typeof v === 'object' && !Array.isArray(v);

/** Whether a value is targets: an object whose targets, where present, are finite numbers. */
export function isTargets(value: unknown): value is Targets {
  return isObject(value) && TARGET_NAMES.every((name) => value[name] === undefined || (typeof value[name] === 'number' && Number.isFinite(value[name])));
}

/** The targets among an untrusted value's fields (finite numbers; anything else is left out); undefined when there are none. */
export function readTargets(value: unknown): Targets | undefined {
  if (!isObject(value)) return undefined;
  const out: Targets = {};
  for (const name of TARGET_NAMES) {
    const v = value[name];
    if (typeof v === 'number' && Number.isFinite(v)) out[name] = v;
  }
  return Object.keys(out).length ? out : undefined;
}

// from dist/lib/monitor/report/ (compiled) to bench/targets.json in a checkout
const CHECKOUT_TARGETS_FILE = new URL('../../../../bench/targets.json', import.meta.url);
let cachedCheckoutTargets: { targets: Targets | undefined } | undefined;

/**
 * bench/targets.json's data-parallel targets when this is a checkout (the default for files
 * that record none), read once, synchronously (no top-level await: `require('kiln')` loads the
 * library as a synchronous module graph); undefined in an installed package.
 */
export function checkoutTargets(): Targets | undefined {
  if (!cachedCheckoutTargets) {
    let targets: Targets | undefined;
    try {
      targets = readTargets((JSON.parse(readFileSync(CHECKOUT_TARGETS_FILE, 'utf8')) as { dist?: unknown }).dist);
    } catch {
      targets = undefined; // no checkout (an installed package) or an unreadable file: no default
    }
    cachedCheckoutTargets = { targets };
  }
  return cachedCheckoutTargets.targets;
}
