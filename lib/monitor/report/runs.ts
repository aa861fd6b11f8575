/** The runs: one row per result file (benchmark, machines, driver, date, commit, dtypes, presets). */
import { basename } from 'node:path';
import { escapeXml } from '../svg.js';
import { cell, day, shortCommit, table, textCell } from './cells.js';
import type { ResultRow } from '../results_schema.js';
import { type Row, rows as rowsOf, text } from './fields.js';
import type { LoadedResult } from './load.js';
import { machineOf } from './machines.js';

export function runsSection(results: LoadedResult[]): string {
  const rows = results.map((f) => {
    const fileRows = rowsOf<ResultRow>(f);
    const machines = [...new Map(fileRows.map((r) => { const m = machineOf(f, text(r, 'device')); return [m.key, m] as const; })).values()];
    // computeDType: no benchmark writes it at the top of a row (bench/serve.ts has it per driver)
    const dtypes = [...new Set(fileRows.map((r) => text(r, 'dtype') ?? text(r as Row, 'computeDType')).filter((x): x is string => !!x))];
    const presets = [...new Set(fileRows.map((r) => text(r, 'preset')).filter((x): x is string => !!x))];
    const driver = machines.some((m) => m.key.startsWith('gpu')) ? f.kiln?.cudaDriverVersion : f.kiln?.cudaDriverVersion ?? (f.kiln ? 'none (CPU)' : undefined);
    return `<tr data-file="${escapeXml(basename(f.file))}">${textCell(basename(f.file), 'file')}${textCell(f.benchmark, 'benchmark')}` +
      `${textCell(machines.map((m) => m.label).join('; ') || undefined, 'device')}${textCell(driver, 'driver')}${textCell(day(f.date), 'date')}` +
      `${textCell(shortCommit(f.commit), 'commit')}${textCell(dtypes.join(', ') || undefined, 'dtype')}${textCell(presets.join(', ') || undefined, 'preset')}` +
      `${cell(f.results.length, '', { field: 'rows' })}</tr>`;
  });
  return `<section id="runs"><h2>Runs</h2>${table('runs-table', ['file', 'benchmark', 'device', 'driver', 'date (UTC)', 'commit', 'dtype', 'preset', 'rows'], rows)}</section>`;
}
