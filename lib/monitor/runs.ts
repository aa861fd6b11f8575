/**
 * `kiln dashboard RUN_DIR...`: runs read from their metrics.jsonl (one StepMetrics per line, as
 * the Trainer writes it) and followed while they grow, several overlaid on the same charts.
 */
import { closeSync, existsSync, openSync, readSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fail } from '../errors.js';
import type { Dashboard } from './dashboard.js';
import type { TrainingRun } from './training.js';

/** a followed file that has not grown for this long is shown as idle */
const IDLE_MS = 120_000;

/** Planned steps from the newest checkpoint's trainer.json (step-NNNNNN/), when there is one. */
export function plannedSteps(runDir: string): number | undefined {
  let dirs: string[];
  try {
    dirs = readdirSync(runDir).filter((d) => /^step-\d+$/.test(d)).sort();
  } catch {
    return undefined;
  }
  for (const d of dirs.reverse()) {
    try {
      const state = JSON.parse(readFileSync(join(runDir, d, 'trainer.json'), 'utf8')) as { options?: { steps?: unknown } };
      if (typeof state.options?.steps === 'number' && state.options.steps > 0) return state.options.steps;
    } catch {
      // an unreadable checkpoint says nothing about the plan
    }
  }
  return undefined;
}

/** Follows one metrics.jsonl: reads what is there, then what is appended (a replaced or truncated file starts over). */
export class MetricsFollower {
  private offset = 0;
  private partial = '';
  private inode?: number;
  private timer?: NodeJS.Timeout;
  /** lines that were not a step record (skipped) */
  badLines = 0;

  constructor(
    readonly file: string,
    private readonly dashboard: Dashboard,
    readonly run: TrainingRun,
  ) {}

  /** Reads whatever is new; returns the number of steps added. */
  poll(): number {
    let stat;
    try {
      stat = statSync(this.file);
    } catch {
      return 0; // not written yet
    }
    if ((this.inode !== undefined && stat.ino !== this.inode) || stat.size < this.offset) {
      this.offset = 0;
      this.partial = '';
      this.dashboard.resetRun(this.run);
    }
    this.inode = stat.ino;
    if (stat.size === this.offset) {
      if (this.run.state === 'running' && Date.now() - stat.mtimeMs > IDLE_MS) this.dashboard.finishRun(this.run, 'idle');
      return 0;
    }
    const fd = openSync(this.file, 'r');
    let added = 0;
    try {
      const chunk = Buffer.alloc(1 << 20);
      while (this.offset < stat.size) {
        const n = readSync(fd, chunk, 0, Math.min(chunk.length, stat.size - this.offset), this.offset);
        if (n <= 0) break;
        this.offset += n;
        const text = this.partial + chunk.toString('utf8', 0, n);
        const lines = text.split('\n');
        // a line without its newline yet is still being written: keep it for the next poll
        this.partial = lines.pop() ?? '';
        for (const line of lines) {
          if (!line.trim()) continue;
          let record: unknown;
          try {
            record = JSON.parse(line);
          } catch {
            this.badLines++;
            continue;
          }
          if (this.dashboard.addStep(this.run, record as Record<string, unknown>)) added++;
          else this.badLines++;
        }
      }
    } finally {
      closeSync(fd);
    }
    if (this.run.totalSteps === undefined) this.run.totalSteps = plannedSteps(dirname(this.file));
    const last = this.run.points.at(-1)?.step ?? 0;
    // a file says nothing of its writer: finished at the planned step, idle when it stopped growing
    const state = this.run.totalSteps !== undefined && last >= this.run.totalSteps ? 'finished' : Date.now() - stat.mtimeMs > IDLE_MS ? 'idle' : 'running';
    if (state !== this.run.state) this.dashboard.finishRun(this.run, state);
    return added;
  }

  follow(intervalMs = 500): void {
    this.stop();
    this.timer = setInterval(() => this.poll(), intervalMs).unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}

/** Names runs by their directory, with the parent when two share a name. */
export function runNames(dirs: string[]): string[] {
  const full = dirs.map((d) => resolve(d));
  const base = full.map((d) => basename(d));
  return full.map((d, i) => (base.filter((b) => b === base[i]).length > 1 ? `${basename(dirname(d))}/${base[i]}` : base[i]));
}

/** Adds each run directory (or metrics.jsonl file) to the dashboard and follows it. */
export function openRuns(dashboard: Dashboard, paths: string[], options: { followMs?: number } = {}): MetricsFollower[] {
  if (paths.length === 0) fail('ERR_ARG', 'give at least one run directory (the --out of kiln train, holding metrics.jsonl)');
  const dirs = paths.map((p) => {
    if (!existsSync(p)) fail('ERR_ARG', `no such run directory: ${p}`);
    return statSync(p).isDirectory() ? p : dirname(p);
  });
  const files = paths.map((p, i) => (statSync(p).isDirectory() ? join(p, 'metrics.jsonl') : p));
  const names = runNames(dirs);
  return files.map((file, i) => {
    const run = dashboard.addRun(names[i], { source: 'file', totalSteps: plannedSteps(dirs[i]) });
    const follower = new MetricsFollower(file, dashboard, run);
    follower.poll();
    follower.follow(options.followMs);
    return follower;
  });
}
