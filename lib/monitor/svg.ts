/**
 * Small SVG charts for the self-contained report (no script needed to see them): lines and
 * points on linear or log axes, roofs, and stacked horizontal bars. Every value drawn comes from
 * the caller; a missing value is left out (a gap), never drawn as zero.
 */

export const PALETTE = ['#d9480f', '#1c7ed6', '#2b8a3e', '#7048e8', '#c2255c', '#0c8599', '#e67700', '#5c940d', '#495057', '#862e9c'];

export function escapeXml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

export interface ChartPoint {
  x: number;
  y: number;
  /** hover text */
  label?: string;
}

export interface ChartSeries {
  name: string;
  color: string;
  points: ChartPoint[];
  /** draw a line through the points (else points only) */
  line?: boolean;
  dash?: string;
  marker?: 'circle' | 'square' | 'triangle';
}

export interface Roof {
  name: string;
  color: string;
  /** y = min(compute, bandwidth * x) over the x range (roofline), or a flat y when bandwidth is absent */
  compute?: number;
  bandwidth?: number;
  dash?: string;
}

export interface ChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  xLog?: boolean;
  yLog?: boolean;
  width?: number;
  height?: number;
  series: ChartSeries[];
  roofs?: Roof[];
  /** formats tick values */
  xFormat?: (v: number) => string;
  yFormat?: (v: number) => string;
}

export function formatTick(v: number): string {
  const a = Math.abs(v);
  if (a === 0) return '0';
  if (a >= 1e12) return `${+(v / 1e12).toPrecision(3)}T`;
  if (a >= 1e9) return `${+(v / 1e9).toPrecision(3)}G`;
  if (a >= 1e6) return `${+(v / 1e6).toPrecision(3)}M`;
  if (a >= 1e4) return `${+(v / 1e3).toPrecision(3)}k`;
  if (a >= 1) return `${+v.toPrecision(3)}`;
  return `${+v.toPrecision(2)}`;
}

function ticks(lo: number, hi: number, log: boolean): number[] {
  if (log) {
    const out: number[] = [];
    for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
      const v = 10 ** e;
      if (v >= lo * 0.999 && v <= hi * 1.001) out.push(v);
    }
    return out;
  }
  const span = hi - lo || 1;
  const step = 10 ** Math.floor(Math.log10(span / 5));
  const nice = [1, 2, 5, 10].map((m) => m * step).find((s) => span / s <= 6) ?? step * 10;
  const out: number[] = [];
  for (let v = Math.ceil(lo / nice) * nice; v <= hi + nice * 1e-9; v += nice) out.push(+v.toPrecision(12));
  return out;
}

function extent(values: number[], log: boolean): [number, number] {
  const v = values.filter((x) => Number.isFinite(x) && (!log || x > 0));
  if (v.length === 0) return log ? [1, 10] : [0, 1];
  let lo = Math.min(...v);
  let hi = Math.max(...v);
  if (log) {
    lo = 10 ** Math.floor(Math.log10(lo));
    hi = 10 ** Math.ceil(Math.log10(hi));
    if (lo === hi) hi = lo * 10;
  } else {
    lo = Math.min(0, lo);
    if (lo === hi) hi = lo + 1;
    hi += (hi - lo) * 0.05;
  }
  return [lo, hi];
}

function marker(kind: ChartSeries['marker'], x: number, y: number, color: string): string {
  if (kind === 'square') return `<rect x="${(x - 3.5).toFixed(1)}" y="${(y - 3.5).toFixed(1)}" width="7" height="7" fill="${color}"/>`;
  if (kind === 'triangle') return `<path d="M${x.toFixed(1)},${(y - 4.5).toFixed(1)}l4.5,8h-9z" fill="${color}"/>`;
  return `<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="3.8" fill="${color}"/>`;
}

/** A line/scatter chart with optional roofs, as an <svg> element string. */
export function lineChart(o: ChartOptions): string {
  const W = o.width ?? 560;
  const H = o.height ?? 320;
  const m = { left: 62, right: 14, top: 26, bottom: 44 };
  const pts = o.series.flatMap((s) => s.points);
  const roofs = o.roofs ?? [];
  const xs = pts.map((p) => p.x);
  const ys = pts.map((p) => p.y);
  for (const r of roofs) if (r.compute !== undefined) ys.push(r.compute);
  const [x0, x1] = extent(xs, !!o.xLog);
  const [y0, y1] = extent(ys, !!o.yLog);
  const sx = (x: number) => m.left + ((o.xLog ? Math.log10(x) - Math.log10(x0) : x - x0) / (o.xLog ? Math.log10(x1) - Math.log10(x0) : x1 - x0)) * (W - m.left - m.right);
  const sy = (y: number) => H - m.bottom - ((o.yLog ? Math.log10(y) - Math.log10(y0) : y - y0) / (o.yLog ? Math.log10(y1) - Math.log10(y0) : y1 - y0)) * (H - m.top - m.bottom);
  const fx = o.xFormat ?? formatTick;
  const fy = o.yFormat ?? formatTick;
  const parts: string[] = [];
  parts.push(`<svg class="chart" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${escapeXml(o.title)}">`);
  parts.push(`<text x="${m.left}" y="16" class="title">${escapeXml(o.title)}</text>`);
  for (const t of ticks(x0, x1, !!o.xLog)) {
    parts.push(`<line x1="${sx(t).toFixed(1)}" x2="${sx(t).toFixed(1)}" y1="${m.top}" y2="${H - m.bottom}" class="grid"/>`);
    parts.push(`<text x="${sx(t).toFixed(1)}" y="${H - m.bottom + 14}" class="tick" text-anchor="middle">${escapeXml(fx(t))}</text>`);
  }
  for (const t of ticks(y0, y1, !!o.yLog)) {
    parts.push(`<line x1="${m.left}" x2="${W - m.right}" y1="${sy(t).toFixed(1)}" y2="${sy(t).toFixed(1)}" class="grid"/>`);
    parts.push(`<text x="${m.left - 6}" y="${(sy(t) + 4).toFixed(1)}" class="tick" text-anchor="end">${escapeXml(fy(t))}</text>`);
  }
  parts.push(`<rect x="${m.left}" y="${m.top}" width="${W - m.left - m.right}" height="${H - m.top - m.bottom}" class="frame"/>`);
  parts.push(`<text x="${(m.left + W - m.right) / 2}" y="${H - 8}" class="axis" text-anchor="middle">${escapeXml(o.xLabel)}</text>`);
  parts.push(`<text transform="translate(14 ${(m.top + H - m.bottom) / 2}) rotate(-90)" class="axis" text-anchor="middle">${escapeXml(o.yLabel)}</text>`);
  parts.push(`<defs><clipPath id="c${W}x${H}"><rect x="${m.left}" y="${m.top}" width="${W - m.left - m.right}" height="${H - m.top - m.bottom}"/></clipPath></defs>`);
  parts.push(`<g clip-path="url(#c${W}x${H})">`);
  for (const r of roofs) {
    const samples = 64;
    const path: string[] = [];
    for (let i = 0; i <= samples; i++) {
      const x = o.xLog ? 10 ** (Math.log10(x0) + ((Math.log10(x1) - Math.log10(x0)) * i) / samples) : x0 + ((x1 - x0) * i) / samples;
      const y = Math.min(r.compute ?? Infinity, r.bandwidth !== undefined ? r.bandwidth * x : Infinity);
      if (!Number.isFinite(y) || (o.yLog && y <= 0)) continue;
      path.push(`${path.length ? 'L' : 'M'}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`);
    }
    parts.push(`<path d="${path.join('')}" fill="none" stroke="${r.color}" stroke-width="1.6" ${r.dash ? `stroke-dasharray="${r.dash}"` : ''}><title>${escapeXml(r.name)}</title></path>`);
  }
  for (const s of o.series) {
    const visible = s.points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y) && (!o.xLog || p.x > 0) && (!o.yLog || p.y > 0));
    if (s.line && visible.length > 1) {
      const d = visible.map((p, i) => `${i ? 'L' : 'M'}${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join('');
      parts.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="1.8" ${s.dash ? `stroke-dasharray="${s.dash}"` : ''}/>`);
    }
    for (const p of visible) {
      parts.push(`<g class="pt">${marker(s.marker, sx(p.x), sy(p.y), s.color)}<title>${escapeXml(`${s.name}: ${p.label ?? `${fx(p.x)}, ${fy(p.y)}`}`)}</title></g>`);
    }
  }
  parts.push('</g>');
  // legend
  let ly = m.top + 6;
  const legend = [...roofs.map((r) => ({ name: r.name, color: r.color, line: true, dash: r.dash, marker: undefined as ChartSeries['marker'] })),
    ...o.series.map((s) => ({ name: s.name, color: s.color, line: !!s.line, dash: s.dash, marker: s.marker }))];
  for (const l of legend) {
    const x = m.left + 8;
    parts.push(l.line
      ? `<line x1="${x}" x2="${x + 16}" y1="${ly}" y2="${ly}" stroke="${l.color}" stroke-width="2" ${l.dash ? `stroke-dasharray="${l.dash}"` : ''}/>`
      : marker(l.marker, x + 8, ly, l.color));
    parts.push(`<text x="${x + 22}" y="${ly + 4}" class="legend">${escapeXml(l.name)}</text>`);
    ly += 14;
  }
  parts.push('</svg>');
  return parts.join('');
}

export interface BarRow {
  label: string;
  segments: { name: string; value: number | undefined; color: string }[];
  /** printed after the bar (e.g. the measured step time the segments split) */
  note?: string;
}

/** Horizontal stacked bars (one row per run), with a legend; missing segments are left out. */
export function stackedBars(title: string, unit: string, rows: BarRow[], width = 860): string {
  const rowH = 22;
  const m = { left: 300, right: 150, top: 40, bottom: 26 };
  const H = m.top + m.bottom + rows.length * rowH;
  const totals = rows.map((r) => r.segments.reduce((s, g) => s + (g.value ?? 0), 0));
  const max = Math.max(1e-12, ...totals);
  const scale = (v: number) => (v / max) * (width - m.left - m.right);
  const parts = [`<svg class="chart" viewBox="0 0 ${width} ${H}" width="${width}" height="${H}" role="img" aria-label="${escapeXml(title)}">`,
    `<text x="8" y="16" class="title">${escapeXml(title)}</text>`];
  const names = [...new Map(rows.flatMap((r) => r.segments.map((s) => [s.name, s.color] as const))).entries()];
  let lx = 8;
  for (const [name, color] of names) {
    parts.push(`<rect x="${lx}" y="24" width="10" height="10" fill="${color}"/><text x="${lx + 14}" y="33" class="legend">${escapeXml(name)}</text>`);
    lx += 24 + name.length * 6.5;
  }
  rows.forEach((r, i) => {
    const y = m.top + i * rowH;
    parts.push(`<text x="${m.left - 6}" y="${y + 15}" class="tick" text-anchor="end">${escapeXml(r.label)}</text>`);
    let x = m.left;
    for (const s of r.segments) {
      if (s.value === undefined || !Number.isFinite(s.value)) continue;
      const w = scale(s.value);
      parts.push(`<rect x="${x.toFixed(1)}" y="${y + 3}" width="${Math.max(0, w).toFixed(1)}" height="${rowH - 6}" fill="${s.color}"><title>${escapeXml(`${r.label} ${s.name}: ${+s.value.toPrecision(4)} ${unit}`)}</title></rect>`);
      x += w;
    }
    if (r.note) parts.push(`<text x="${(x + 4).toFixed(1)}" y="${y + 15}" class="tick">${escapeXml(r.note)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('');
}
