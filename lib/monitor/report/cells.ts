/** Table cells: every number the JSON's (exactly, in data-value) shown with its unit; a missing figure is a gap (—). */
import { escapeXml } from '../svg.js';

export function fmt(v: number): string {
  const a = Math.abs(v);
  if (a >= 1e5) return Math.round(v).toLocaleString('en-US');
  if (a >= 100) return v.toFixed(1).replace(/\.0$/, '');
  return String(+v.toPrecision(4));
}

/** A numeric cell: the exact value in data-value, shown with its unit; a gap when absent. */
export function cell(value: number | undefined, unit: string, options: { scale?: number; field?: string; cls?: string; signed?: boolean } = {}): string {
  const field = options.field ? ` data-field="${escapeXml(options.field)}"` : '';
  if (value === undefined || !Number.isFinite(value)) return `<td class="gap"${field} data-value="">—</td>`;
  const shown = value * (options.scale ?? 1);
  const sign = options.signed && shown > 0 ? '+' : '';
  return `<td class="num${options.cls ? ` ${options.cls}` : ''}"${field} data-value="${value}" data-scale="${options.scale ?? 1}">${sign}${fmt(shown)}${unit ? ` ${escapeXml(unit)}` : ''}</td>`;
}

export function textCell(value: string | undefined, field?: string): string {
  const f = field ? ` data-field="${field}"` : '';
  return value === undefined || value === '' ? `<td class="gap"${f}>—</td>` : `<td${f}>${escapeXml(value)}</td>`;
}

export function ratio(a: number | undefined, b: number | undefined): number | undefined {
  return a !== undefined && b !== undefined && b !== 0 ? a / b : undefined;
}

export function table(id: string, head: string[], rows: string[], caption?: string): string {
  return `<table id="${id}" class="sortable">${caption ? `<caption>${caption}</caption>` : ''}<thead><tr>${head.map((h) => `<th>${h}</th>`).join('')}</tr></thead><tbody>${rows.join('')}</tbody></table>`;
}

export const shortCommit = (c?: string) => (c ? c.slice(0, 12) : undefined);
export const day = (d?: string) => (d ? d.slice(0, 19).replace('T', ' ') : undefined);
export const minute = (d?: string) => day(d)?.slice(0, 16);
