/**
 * What `kiln train --out DIR` may write into. A run directory holds checkpoints (step-NNNNNN/),
 * the `latest` pointer and metrics.jsonl; training into one that already holds a run would
 * overwrite its checkpoints and append a second run to its metrics. So an --out that holds a run
 * is refused unless --resume continues that very run or --overwrite replaces it.
 */
import { existsSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fail } from '../errors.js';
import { resolveCheckpoint } from '../io/checkpoint.js';

/** The run files in `dir` (checkpoints, their temporaries, latest, metrics.jsonl). */
function runFiles(dir: string): string[] {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) return [];
  return readdirSync(dir).filter((f) => f === 'latest' || f === 'metrics.jsonl' || /^step-\d+(\.(tmp|old)-\d+)?$/.test(f));
}

/** A one-line description of the run `dir` holds, or undefined when it holds none. */
export function describeRun(dir: string): string | undefined {
  const files = runFiles(dir);
  if (!files.length) return undefined;
  const checkpoints = files.filter((f) => /^step-\d+$/.test(f)).sort();
  const parts: string[] = [];
  if (checkpoints.length) parts.push(`${checkpoints.length} checkpoint${checkpoints.length > 1 ? 's' : ''}, the newest ${checkpoints[checkpoints.length - 1]}`);
  if (files.includes('metrics.jsonl')) {
    const lines = readFileSync(join(dir, 'metrics.jsonl'), 'utf8').split('\n').filter((l) => l.trim()).length;
    parts.push(`metrics.jsonl with ${lines} step${lines === 1 ? '' : 's'}`);
  }
  if (!parts.length) parts.push('a latest pointer');
  return parts.join(', ');
}

/** Whether `checkpoint` (any form resolveCheckpoint takes) is one of run directory `dir`'s checkpoints. */
function belongsTo(checkpoint: string, dir: string): boolean {
  return resolve(dirname(resolveCheckpoint(checkpoint))) === resolve(dir);
}

/**
 * Refuses an --out that holds a run, unless --resume continues that run or --overwrite is given.
 * Checks only: `clearRun` removes the old run later (after the checkpoint to resume from was
 * read). `canResume: false` for commands without --resume (kiln start).
 */
export function checkOut(out: string, options: { resume?: string; overwrite: boolean; canResume?: boolean }): void {
  const held = describeRun(out);
  if (!held || options.overwrite) return;
  if (options.resume !== undefined && belongsTo(options.resume, out)) return;
  const other = options.resume !== undefined ? ` (--resume ${options.resume} is not one of its checkpoints)` : '';
  const fixes = options.canResume === false
    ? `pass --overwrite to replace it, or another --out (\`kiln train --resume ${out}\` continues it)`
    : `pass --resume ${out} to continue it, --overwrite to replace it, or another --out`;
  fail('ERR_ARG', `--out ${out} already holds a run (${held})${other}: ${fixes}`);
}

/** Removes the run `dir` holds (its checkpoints, latest and metrics.jsonl); other files stay. */
export function clearRun(dir: string): string | undefined {
  const held = describeRun(dir);
  for (const f of runFiles(dir)) rmSync(join(dir, f), { recursive: true, force: true });
  return held;
}

/** `base` when it holds no run, else the first of base-2, base-3, ... that holds none. */
export function freshRunDir(base: string): string {
  if (!describeRun(base)) return base;
  for (let n = 2; ; n++) if (!describeRun(`${base}-${n}`)) return `${base}-${n}`;
}
