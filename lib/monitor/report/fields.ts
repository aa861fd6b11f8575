/** Reading rows of result files, which are untrusted JSON: every figure is checked where it is read. */

export type Row = Record<string, unknown>;

/** The first finite number among dotted paths of a row. */
export function pick(row: unknown, ...paths: string[]): number | undefined {
  for (const path of paths) {
    let v: unknown = row;
    for (const key of path.split('.')) v = typeof v === 'object' && v !== null ? (v as Row)[key] : undefined;
    if (typeof v === 'number' && Number.isFinite(v)) return v;
  }
  return undefined;
}

export function text(row: unknown, key: string): string | undefined {
  const v = typeof row === 'object' && row !== null ? (row as Row)[key] : undefined;
  return typeof v === 'string' ? v : typeof v === 'number' || typeof v === 'boolean' ? String(v) : undefined;
}
