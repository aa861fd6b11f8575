/** `kiln dashboard` and `kiln report`, and the `--dashboard [PORT]` options train and serve share. */
import { fail } from '../errors.js';
import { DEFAULT_DASHBOARD_PORT, type DashboardOptions, dashboardToken, startDashboard } from '../monitor/dashboard.js';
import { openRuns } from '../monitor/runs.js';
import { writeReport } from '../monitor/report/index.js';
import { parseCommand } from './commands.js';

/**
 * `--dashboard` takes an optional port: `--dashboard`, `--dashboard 9000`, `--dashboard=9000`.
 * Rewrites the arguments to `--dashboard=PORT`, so that only a number after the flag is taken as
 * its port (`kiln dashboard` does the same for `--port`).
 */
export function normalizeDashboardFlag(args: string[], flag = '--dashboard'): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === flag) {
      const next = args[i + 1];
      if (next !== undefined && /^\d+$/.test(next)) {
        out.push(`${flag}=${next}`);
        i++;
      } else {
        out.push(`${flag}=${DEFAULT_DASHBOARD_PORT}`);
      }
    } else out.push(args[i]);
  }
  return out;
}

/** DashboardOptions from parsed `--dashboard PORT --dashboard-host H --dashboard-token T` values. */
export function dashboardOptionsFrom(values: { dashboard?: string; 'dashboard-host'?: string; 'dashboard-token'?: string }): DashboardOptions {
  const port = Number(values.dashboard ?? DEFAULT_DASHBOARD_PORT);
  if (!Number.isInteger(port) || port < 0 || port > 65535) fail('ERR_ARG', `--dashboard takes a port 0..65535, got ${values.dashboard}`);
  const host = values['dashboard-host'] ?? '127.0.0.1';
  const loopback = host === '127.0.0.1' || host === '::1' || host === 'localhost';
  const token = values['dashboard-token'] ?? (loopback ? process.env.KILN_DASHBOARD_TOKEN : dashboardToken());
  return { port, host, token };
}

export async function dashboardCommand(args: string[]): Promise<number> {
  const parsed = parseCommand('dashboard', normalizeDashboardFlag(normalizeDashboardFlag(args, '--port')));
  if (!parsed) return 0;
  const { values, positionals } = parsed;
  const options = dashboardOptionsFrom({
    dashboard: values.dashboard ?? values.port, 'dashboard-host': values['dashboard-host'] ?? values.host,
    'dashboard-token': values['dashboard-token'] ?? values.token,
  });
  const dashboard = await startDashboard({ ...options, title: `kiln dashboard: ${positionals.join(', ')}` });
  try {
    const followers = openRuns(dashboard, positionals);
    for (const f of followers) {
      console.log(`${f.file}: ${f.run.points.length} steps${f.badLines ? ` (${f.badLines} lines skipped: not step records)` : ''}`);
    }
  } catch (e) {
    await dashboard.close();
    throw e;
  }
  console.log(`dashboard: ${dashboard.url}  (following the runs; Ctrl-C to stop)`);
  await new Promise<void>((resolve) => process.once('SIGINT', () => resolve()));
  await dashboard.close();
  return 0;
}

export async function reportCommand(args: string[]): Promise<number> {
  const parsed = parseCommand('report', args);
  if (!parsed) return 0;
  const { values, positionals } = parsed;
  const started = performance.now();
  const { path, files, skipped } = writeReport(positionals.length ? positionals : ['bench/results'], values.out!, { title: values.title });
  for (const s of skipped) console.error(`skipped ${s.file}: ${s.reason}`);
  console.log(`wrote ${path} from ${files} result files in ${(performance.now() - started).toFixed(0)} ms`);
  return 0;
}
