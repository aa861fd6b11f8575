/** `kiln dashboard` and `kiln report`, and the `--dashboard [PORT]` options train and serve share. */
import { parseArgs } from 'node:util';
import { fail } from '../errors.js';
import { DEFAULT_DASHBOARD_PORT, type DashboardOptions, dashboardToken, startDashboard } from '../monitor/dashboard.js';
import { openRuns } from '../monitor/runs.js';
import { writeReport } from '../monitor/report/index.js';

/**
 * `--dashboard` takes an optional port: `--dashboard`, `--dashboard 9000`, `--dashboard=9000`.
 * Rewrites the arguments so node:util parseArgs (which has no optional values) sees `--dashboard=PORT`.
 */
export function normalizeDashboardFlag(args: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--dashboard') {
      const next = args[i + 1];
      if (next !== undefined && /^\d+$/.test(next)) {
        out.push(`--dashboard=${next}`);
        i++;
      } else {
        out.push(`--dashboard=${DEFAULT_DASHBOARD_PORT}`);
      }
    } else out.push(args[i]);
  }
  return out;
}

/** parseArgs options for the dashboard flags (spread into a command's options). */
export const DASHBOARD_ARG_OPTIONS = {
  dashboard: { type: 'string' },
  'dashboard-host': { type: 'string' },
  'dashboard-token': { type: 'string' },
} as const;

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
  const { values, positionals } = parseArgs({
    args: normalizeDashboardFlag(args.map((a) => (a === '--port' ? '--dashboard' : a))),
    allowPositionals: true,
    options: { ...DASHBOARD_ARG_OPTIONS, host: { type: 'string' }, token: { type: 'string' } },
    strict: true,
  });
  const options = dashboardOptionsFrom({
    dashboard: values.dashboard, 'dashboard-host': values.host ?? values['dashboard-host'], 'dashboard-token': values.token ?? values['dashboard-token'],
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
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { out: { type: 'string', default: 'report.html' }, title: { type: 'string' } },
    strict: true,
  });
  const started = performance.now();
  const { path, files, skipped } = writeReport(positionals.length ? positionals : ['bench/results'], values.out!, { title: values.title });
  for (const s of skipped) console.error(`skipped ${s.file}: ${s.reason}`);
  console.log(`wrote ${path} from ${files} result files in ${(performance.now() - started).toFixed(0)} ms`);
  return 0;
}
