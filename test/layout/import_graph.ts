/**
 * The value-import graph of a compiled tree (dist/lib): static `import … from` / `export … from`
 * and literal dynamic `import('…')` between its .js files. Type-only imports are erased by tsc,
 * so what is left is what runs. Used by imports.test.ts to keep imports pointing down the layers.
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';

export type ImportGraph = Map<string, string[]>; // file (relative to root, '/'-separated) -> files it imports

function jsFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...jsFiles(path));
    else if (entry.name.endsWith('.js')) out.push(path);
  }
  return out;
}

const SPECIFIER = /(?:^|[;\s}])(?:import|export)\s*(?:[\w*${}\s,]+?\s*from\s*)?['"](\.{1,2}\/[^'"]+)['"]|\bimport\(\s*['"](\.{1,2}\/[^'"]+)['"]\s*\)/g;

/** Every relative import of every .js file under root that lands on another file under root. */
export function importGraph(root: string): ImportGraph {
  const absRoot = resolve(root);
  const graph: ImportGraph = new Map();
  const name = (abs: string) => relative(absRoot, abs).split(sep).join('/');
  for (const file of jsFiles(absRoot)) {
    // comments out first (tsc keeps them): block comments, and line comments that start a line
    const source = readFileSync(file, 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
    const targets = new Set<string>();
    for (const m of source.matchAll(SPECIFIER)) {
      const target = resolve(dirname(file), m[1] ?? m[2]);
      if (target.startsWith(absRoot + sep) && existsSync(target)) targets.add(name(target));
    }
    graph.set(name(file), [...targets].sort());
  }
  return graph;
}

/** Strongly connected components of more than one node, or a node importing itself (Tarjan). */
export function cycles(graph: Map<string, string[]>): string[][] {
  let counter = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string) => {
    index.set(v, counter);
    low.set(v, counter++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1 || (graph.get(v) ?? []).includes(v)) found.push(component.sort());
    }
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return found;
}

/**
 * The folder each file belongs to: its first path segment (`ops/matmul.js` → `ops`). Files at the
 * top are the core (`core`), except the public entry `index.js` (`entry`), which re-exports every
 * layer and is imported by none.
 */
export function folderOf(file: string): string {
  const slash = file.indexOf('/');
  if (slash >= 0) return file.slice(0, slash);
  return file === 'index.js' ? 'entry' : 'core';
}

/** The folder graph: an edge for every file import that crosses folders. */
export function folderGraph(graph: ImportGraph): Map<string, string[]> {
  const edges = new Map<string, Set<string>>();
  for (const [file, targets] of graph) {
    const from = folderOf(file);
    if (!edges.has(from)) edges.set(from, new Set());
    for (const target of targets) {
      const to = folderOf(target);
      if (to !== from) edges.get(from)!.add(to);
    }
  }
  return new Map([...edges].map(([k, v]) => [k, [...v].sort()]));
}

/** For a message: the imports inside a cycle, `a.js -> b.js`. */
export function cycleEdges(graph: Map<string, string[]>, component: string[]): string[] {
  const members = new Set(component);
  return component.flatMap((v) => (graph.get(v) ?? []).filter((w) => members.has(w)).map((w) => `${v} -> ${w}`));
}
