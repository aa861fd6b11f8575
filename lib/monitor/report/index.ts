/**
 * `kiln report`: one self-contained HTML file (inline CSS, inline SVG charts, a few lines of inline
 * script for sorting; no network, opens from disk) from bench/results JSON of any number of
 * machines: the runs, training next to its peer, kernel rooflines under each device's roofs, the
 * normalized comparison (each figure / peak FLOP/s and / peak bandwidth) and serving curves.
 *
 * Every number printed is a number from the JSON (cells carry it exactly in data-value) or a
 * ratio of two of them, with its unit; a figure a run lacks is a gap (—), never a zero.
 *
 * The files' shapes: lib/monitor/results_schema.ts. One file per section, in page order:
 *   runs.ts           the result files
 *   training.ts       training next to its peer, the step latency split
 *   data_parallel.ts  all-reduce against Gloo, scaling efficiency, the WAN runs, the link's counters
 *   kernels.ts        rooflines and the kernel table
 *   normalized.ts     each figure over its device's peaks
 *   serving.ts        throughput against latency, latency percentiles
 * and page.ts (the page around them, writeReport), load.ts (reading files), fields.ts (reading
 * rows), cells.ts (table cells), machines.ts (machines and their roofs), targets.ts (what the
 * verdicts judge against).
 */
export { type LoadedResult, loadResults } from './load.js';
export { pick } from './fields.js';
export { type Machine, machineOf } from './machines.js';
export { type ReportOptions, renderReport, writeReport } from './page.js';
export type { Targets } from './targets.js';
