/**
 * Reading rows of result files. Files come from any machine and any version, so a row is
 * untrusted JSON: pick() and text() check every value where they read it (a number must be
 * finite, a text a string, number or boolean; anything else reads as absent). A row that claims
 * a schema type (lib/monitor/results_schema.ts) is Unchecked<T>: its field names are checked
 * against T at compile time, its values still at run time.
 */
import type { LoadedResult } from './load.js';

export type Row = Record<string, unknown>;

declare const schema: unique symbol;

/** A row that claims to be a T: any field may be missing or of another type. */
export type Unchecked<T> = Row & { readonly [schema]?: T };

/** The rows of a file, as the rows it claims to hold. */
export function rows<T>(file: LoadedResult): Unchecked<T>[] {
  return file.results as Unchecked<T>[];
}

// T's fields without its index signatures (a `[key: string]` signature would swallow the named keys)
type Known<T> = { [K in keyof T as string extends K ? never : K]: T[K] };
type Depth = [never, 0, 1, 2];
type NumberPaths<T, D extends number> = [D] extends [never] ? never
  : T extends readonly unknown[] ? never
  : T extends object ? { [K in keyof Known<T> & string]-?: FieldPaths<K, NonNullable<Known<T>[K]>, D> }[keyof Known<T> & string]
  : never;
type FieldPaths<K extends string, V, D extends number> = (V extends number ? K : never) | (V extends readonly unknown[] ? never : V extends object ? `${K}.${NumberPaths<V, Depth[D]>}` : never);
type SchemaOf<R> = NonNullable<R> extends { readonly [schema]?: infer T } ? T : unknown;

/** The dotted paths to a schema type's number fields ('tokensPerSecond', 'kiln.medianMs'); any string for a row of no schema type. */
export type NumberPath<T> = unknown extends T ? string : NumberPaths<T, 3>;
/** A schema type's field names; any string for a row of no schema type. */
export type FieldName<T> = unknown extends T ? string : T extends unknown ? keyof Known<T> & string : never;

/** The first finite number among dotted paths of a row. */
export function pick<R>(row: R, ...paths: NumberPath<SchemaOf<R>>[]): number | undefined {
  for (const path of paths as string[]) {
    let v: unknown = row;
    for (const key of path.split('.')) v = typeof v === 'object' && v !== null ? (v as Row)[key] : undefined;
    if (typeof v === 'number' && Number.isFinite(v)) return v;
  }
  return undefined;
}

/** A field as text: a string, or a number or boolean printed; else undefined. */
export function text<R>(row: R, key: FieldName<SchemaOf<R>>): string | undefined {
  const v = typeof row === 'object' && row !== null ? (row as Row)[key] : undefined;
  return typeof v === 'string' ? v : typeof v === 'number' || typeof v === 'boolean' ? String(v) : undefined;
}
