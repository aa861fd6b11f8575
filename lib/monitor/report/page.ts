/** The page: the sections in order, a navigation bar, inline style and a few lines of script for sorting; and writeReport. */
import { basename } from 'node:path';
import { describe, fail } from '../../errors.js';
import { atomicWriteFile } from '../../io/atomic.js';
import { escapeXml } from '../svg.js';
import { day } from './cells.js';
import { distSection } from './data_parallel.js';
import type { ResultRow } from '../results_schema.js';
import { rows, text } from './fields.js';
import { kernelPoints, kernelsSection } from './kernels.js';
import { type LoadedResult, loadResults } from './load.js';
import { machineOf, roofsByMachine } from './machines.js';
import { normalizedSection } from './normalized.js';
import { runsSection } from './runs.js';
import { servingSection } from './serving.js';
import { checkoutTargets, TARGET_NAMES, type Targets, isTargets } from './targets.js';
import { trainingSection } from './training.js';

const STYLE = `
:root{--fg:#1d2330;--muted:#667085;--line:#e4e7ec;--accent:#d9480f}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--fg);background:#fafbfc}
header{padding:14px 24px;border-bottom:1px solid var(--line);background:#fff}h1{margin:0;font-size:20px}h1::before{content:"▲ ";color:var(--accent)}
header p{margin:4px 0 0;color:var(--muted)}main{padding:0 24px 40px}h2{font-size:17px;margin:26px 0 8px}
nav a{margin-right:14px;color:var(--accent);text-decoration:none}.note{color:var(--muted);max-width:1100px}
table{border-collapse:collapse;background:#fff;border:1px solid var(--line);font-variant-numeric:tabular-nums;margin:8px 0}
th,td{padding:4px 8px;border-bottom:1px solid var(--line);text-align:left;white-space:nowrap}th{background:#f2f4f7;cursor:pointer;user-select:none;font-weight:600}
td.num{text-align:right}td.gap,td.na{color:#98a2b3;text-align:center}td.ratio{font-weight:600}.scroll{overflow-x:auto}
td.verdict{font-weight:600;text-align:center}td.met{color:#137333;background:#e6f4ea}td.missed{color:#b3261e;background:#fce8e6}h3{font-size:15px;margin:18px 0 4px}
.figures{display:flex;flex-wrap:wrap;gap:12px}figcaption{font-size:12px;color:var(--muted);max-width:640px}figure{margin:8px 0;background:#fff;border:1px solid var(--line);border-radius:6px;padding:6px}
svg .title{font:600 13px system-ui,sans-serif;fill:var(--fg)}svg .tick{font:11px system-ui,sans-serif;fill:#475467}svg .axis{font:12px system-ui,sans-serif;fill:#344054}
svg .legend{font:11px system-ui,sans-serif;fill:#344054}svg .grid{stroke:#eef0f3}svg .frame{fill:none;stroke:#d0d5dd}svg .pt:hover{opacity:.6}
.skipped li{color:var(--muted)}`;

// sorts a table by the clicked column (numbers by their exact data-value)
const SCRIPT = `document.querySelectorAll('table.sortable th').forEach(function(th,i){th.addEventListener('click',function(){var t=th.closest('table'),b=t.tBodies[0],d=th.dataset.dir==='asc'?-1:1;th.dataset.dir=d>0?'asc':'desc';var key=function(r){var c=r.cells[i];if(!c)return'';var v=c.getAttribute('data-value');return v!==null&&v!==''?parseFloat(v):c.textContent};Array.from(b.rows).sort(function(x,y){var a=key(x),c=key(y);if(typeof a==='number'&&typeof c==='number')return d*(a-c);return d*String(a).localeCompare(String(c))}).forEach(function(r){b.appendChild(r)})})});`;

export interface ReportOptions {
  title?: string;
  /**
   * Data-parallel targets for result files that record none (written before the benchmarks
   * recorded them): each one given replaces bench/targets.ts's, the default when the report runs
   * from a kiln checkout (an installed package has none: no verdict). A file's own targets come first.
   */
  targets?: Targets;
}

/** The report's HTML from loaded results. */
export function renderReport(results: LoadedResult[], skipped: { file: string; reason: string }[] = [], options: ReportOptions = {}): string {
  // the shape loadResults produces; anything else is a typed error rather than a TypeError deep inside
  const isObject = (v: unknown): v is Record<string, unknown> => !!v && typeof v === 'object' && !Array.isArray(v);
  if (!Array.isArray(results) || !results.every((r) => isObject(r) && typeof r.file === 'string' && typeof r.benchmark === 'string' && Array.isArray(r.results) && r.results.every(isObject)
    && (r.date === undefined || typeof r.date === 'string') && (r.commit === undefined || typeof r.commit === 'string') && (r.targets === undefined || isTargets(r.targets)))) {
    fail('ERR_ARG', `renderReport needs loaded results ({ file, benchmark, date?, commit?: strings, targets?: numbers, results: rows[] }[], as loadResults returns), got ${describe(results)}`);
  }
  if (!Array.isArray(skipped) || !skipped.every((x) => isObject(x) && typeof x.file === 'string' && typeof x.reason === 'string')) {
    fail('ERR_ARG', `skipped must be { file, reason }[] (strings), got ${describe(skipped)}`);
  }
  checkReportOptions(options);
  const kernels = kernelPoints(results);
  const roofs = roofsByMachine(results, kernels);
  const fallbackTargets = { ...checkoutTargets(), ...options.targets }; // for files that record none
  const sections = [
    runsSection(results), trainingSection(results), distSection(results, fallbackTargets), kernelsSection(kernels, roofs),
    normalizedSection(results, kernels, roofs), servingSection(results),
  ].filter(Boolean);
  const nav = sections.map((s) => /<section id="([^"]+)"><h2>([^<]+)<\/h2>/.exec(s)!).map((m) => `<a href="#${m[1]}">${m[2]}</a>`).join('');
  const machines = new Set(results.flatMap((f) => rows<ResultRow>(f).map((r) => machineOf(f, text(r, 'device')).key)));
  const title = options.title ?? 'kiln benchmark report';
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">` +
    `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">` +
    `<title>${escapeXml(title)}</title><style>${STYLE}</style></head><body><header><h1>${escapeXml(title)}</h1>` +
    `<p>${results.length} result files from ${machines.size} machine${machines.size === 1 ? '' : 's'}, ${escapeXml(day(results[0]?.date) ?? '?')} to ${escapeXml(day(results.at(-1)?.date) ?? '?')} UTC</p><nav>${nav}</nav></header><main>` +
    sections.join('') +
    (skipped.length ? `<section id="skipped"><h2>Files skipped</h2><ul class="skipped">${skipped.map((s) => `<li>${escapeXml(basename(s.file))}: ${escapeXml(s.reason)}</li>`).join('')}</ul></section>` : '') +
    `</main><script>${SCRIPT}</script></body></html>\n`;
}

function checkReportOptions(options: unknown): void {
  if (!options || typeof options !== 'object' || Array.isArray(options)) fail('ERR_ARG', `report options must be an object, got ${describe(options)}`);
  const { title, targets } = options as ReportOptions;
  if (title !== undefined && typeof title !== 'string') fail('ERR_ARG', `the report title must be a string, got ${describe(title)}`);
  if (targets !== undefined && !isTargets(targets)) fail('ERR_ARG', `the report targets must be an object of finite numbers (${TARGET_NAMES.join(', ')}), got ${describe(targets)}`);
}

/** Reads result files and writes the report atomically; returns what it read. */
export function writeReport(paths: string[], out: string, options: ReportOptions = {}): { path: string; files: number; skipped: { file: string; reason: string }[] } {
  if (!Array.isArray(paths) || !paths.every((p) => typeof p === 'string' && p.length > 0)) fail('ERR_ARG', `writeReport needs result file or directory paths (strings), got ${describe(paths)}`);
  if (typeof out !== 'string' || !out) fail('ERR_ARG', `writeReport needs an output path, got ${describe(out)}`);
  checkReportOptions(options);
  const { results, skipped } = loadResults(paths);
  if (results.length === 0) fail('ERR_ARG', `no benchmark result files in ${paths.join(', ')}${skipped.length ? ` (${skipped.length} skipped: ${skipped[0].reason})` : ''}`);
  const html = renderReport(results, skipped, options);
  try {
    atomicWriteFile(out, html);
  } catch (error) {
    fail('ERR_ARG', `cannot write the report to ${out}: ${(error as Error).message}`);
  }
  return { path: out, files: results.length, skipped };
}
