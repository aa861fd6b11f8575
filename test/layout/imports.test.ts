/**
 * Imports point down the layers: no value-import cycle between files or between folders of the
 * compiled library (dist/lib), and only the core and lib/ops talk to the native binding.
 * The checker is shown to catch a planted cycle of each kind, so a pass means something.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { cycleEdges, cycles, folderGraph, folderOf, importGraph } from './import_graph.js';

const test = suite('layout: imports');
const lib = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'lib'); // dist/lib

function describeCycles(graph: Map<string, string[]>): string {
  return cycles(graph).map((c) => cycleEdges(graph, c).join(', ')).join('\n');
}

test('no value-import cycle between the files of the compiled library', () => {
  const graph = importGraph(lib);
  assert.ok(graph.size > 50, `read ${graph.size} files of ${lib}`);
  assert.ok(graph.get('ops/matmul.js')!.includes('ops/matmul_tuning.js'), 'the graph sees static imports');
  assert.ok(graph.get('cli/cli.js')!.includes('cli/serve.js'), 'the graph sees dynamic imports');
  assert.equal(cycles(graph), [], describeCycles(graph));
});

test('no import cycle between the folders, and the core imports no folder', () => {
  const graph = importGraph(lib);
  const folders = folderGraph(graph);
  assert.equal(cycles(folders), [], describeCycles(folders));
  assert.equal(folders.get('core') ?? [], [], 'the core files (tensor, dtype, device, errors, validate, native, runtime, info) import no folder');
  for (const [from, to] of folders) assert.not.ok(to.includes('entry'), `${from} imports the public entry index.js`);
  for (const [from, to] of folders) if (from !== 'cli' && from !== 'entry') assert.not.ok(to.includes('cli'), `${from} imports command code from cli/`);
});

test('only the core and lib/ops call the native binding', () => {
  const graph = importGraph(lib);
  const callers = [...graph].filter(([, targets]) => targets.includes('native.js')).map(([file]) => file);
  const outside = callers.filter((f) => !['core', 'ops'].includes(folderOf(f)));
  assert.equal(outside, [], `files outside the core and ops/ that import the binding: ${outside.join(', ')}`);
});

test('the checker finds a planted file cycle and a planted folder cycle', () => {
  const root = mkdtempSync(join(tmpdir(), 'kiln-imports-'));
  try {
    const write = (path: string, source: string) => {
      mkdirSync(dirname(join(root, path)), { recursive: true });
      writeFileSync(join(root, path), source);
    };
    // files: a -> b -> c -> a (one through a dynamic import); d imports a but is outside the cycle
    write('x/a.js', "import { b } from './b.js';\nexport const a = 1;\n");
    write('x/b.js', "export { c } from './c.js';\nexport const b = 2;\n");
    write('x/c.js', "export const c = () => import('./a.js');\n");
    write('x/d.js', "import './a.js';\n");
    // folders: y/p -> z/q and z/r -> y/s, no file cycle
    write('y/p.js', "import { q } from '../z/q.js';\n");
    write('y/s.js', 'export const s = 1;\n');
    write('z/q.js', 'export const q = 1;\n');
    write('z/r.js', "import { s } from '../y/s.js';\n");
    // type-only imports are erased by tsc: a comment or string naming a module is not an import
    write('y/t.js', "// import { q } from '../z/r.js'\nexport const text = \"from '../z/r.js'\";\n");
    const graph = importGraph(root);
    assert.equal(cycles(graph), [['x/a.js', 'x/b.js', 'x/c.js']]);
    assert.equal(graph.get('y/t.js'), [], 'comments and strings are not imports');
    assert.equal(cycles(folderGraph(graph)), [['y', 'z']]);
    // and breaking the planted cycle clears it
    write('x/c.js', 'export const c = 3;\n');
    assert.equal(cycles(importGraph(root)).length, 0);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test.run();
