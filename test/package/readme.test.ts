/**
 * Issue 28, item 3: every fenced `js` and `ts` block of README.md runs as written, against kiln
 * installed from `npm pack` (test/package/packed.ts), in a project holding a short tiny-preset
 * run at runs/tiny (what `kiln train` / `npm start` leave). `js` blocks run as .mjs files, as a
 * user pastes them; `ts` blocks are type-checked (strict, no skipLibCheck), compiled and run. A
 * block that needs something more says so in an HTML comment on the line before it:
 *   <!-- readme-test: runs against `kiln serve --checkpoint runs/tiny` on a free port (for 8000) -->
 *   <!-- readme-test: type-check only (WHY) -->     (for blocks that need a GPU)
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { packedProject, root, run, text, userEnv } from './packed.js';
import { trainRun } from '../cli/fixture.js';

const test = suite('README: every js/ts block runs');

interface Block {
  lang: 'js' | 'ts';
  line: number;
  code: string;
  marker?: string;
}

/** The fenced js/ts blocks of a Markdown text, each with the readme-test comment just before it. */
export function readmeBlocks(markdown: string): Block[] {
  const lines = markdown.split('\n');
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const fence = /^```(\w*)\s*$/.exec(lines[i]);
    if (!fence) continue;
    const end = lines.findIndex((l, j) => j > i && /^```\s*$/.test(l));
    if (end < 0) throw new Error(`README line ${i + 1}: unclosed code fence`);
    const lang = fence[1];
    if (lang === 'js' || lang === 'ts' || lang === 'javascript' || lang === 'typescript' || lang === 'mjs') {
      const before = /^<!--\s*readme-test:\s*(.*?)\s*-->\s*$/.exec(lines[i - 1] ?? '');
      blocks.push({ lang: lang.startsWith('t') ? 'ts' : 'js', line: i + 1, code: lines.slice(i + 1, end).join('\n') + '\n', ...(before ? { marker: before[1] } : {}) });
    }
    i = end;
  }
  return blocks;
}

const SERVER = /^runs against `kiln serve --checkpoint runs\/tiny` on a free port \(for (\d+)\)$/;
const TYPE_CHECK_ONLY = /^type-check only \(.+\)$/;

const blocks = readmeBlocks(readFileSync(join(root, 'README.md'), 'utf8'));
let project: Promise<string> | undefined;

/** The packed project with runs/tiny and every block written out and (ts) compiled. */
function prepared(): Promise<string> {
  project ??= (async () => {
    const { dir } = await packedProject();
    await trainRun(join(dir, 'runs', 'tiny'), 2);
    mkdirSync(join(dir, 'readme'), { recursive: true });
    for (const b of blocks) writeFileSync(join(dir, 'readme', `line-${b.line}.${b.lang === 'ts' ? 'ts' : 'mjs'}`), b.code);
    writeFileSync(join(dir, 'tsconfig.readme.json'), JSON.stringify({
      compilerOptions: {
        strict: true, module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', skipLibCheck: false, types: ['node'],
        outDir: 'readme-out', rootDir: 'readme',
      },
      include: ['readme/*.ts'],
    }, null, 2));
    return dir;
  })();
  return project;
}

test('the README has its js/ts blocks, each runnable or marked with a known reason', () => {
  assert.ok(blocks.length >= 4, `found ${blocks.length} js/ts blocks`);
  for (const b of blocks) {
    if (b.marker !== undefined) assert.ok(SERVER.test(b.marker) || TYPE_CHECK_ONLY.test(b.marker), `README line ${b.line}: unknown readme-test marker '${b.marker}'`);
    if (b.marker && TYPE_CHECK_ONLY.test(b.marker)) assert.is(b.lang, 'ts', `README line ${b.line}: only ts blocks can be type-checked instead of run`);
  }
});

test('the ts blocks type-check (strict, no skipLibCheck) and compile', async () => {
  if (!blocks.some((b) => b.lang === 'ts')) return;
  const dir = await prepared();
  const r = run(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.readme.json'], dir);
  assert.is(r.status, 0, `tsc on the README's ts blocks:\n${text(r)}`);
});

/** `kiln serve` (the installed bin) on runs/tiny, on a free port. */
async function serve(dir: string): Promise<{ port: number; child: ChildProcess }> {
  const child = spawn(join(dir, 'node_modules', '.bin', 'kiln'), ['serve', '--checkpoint', 'runs/tiny', '--port', '0'], { cwd: dir, env: userEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  const deadline = Date.now() + 60_000;
  while (!/ready/.test(out)) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`kiln serve did not get ready:\n${out}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { port: Number(/listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(out)![1]), child };
}

for (const b of blocks) {
  const typeCheckOnly = b.marker !== undefined && TYPE_CHECK_ONLY.test(b.marker);
  test(`README line ${b.line} (${b.lang}) ${typeCheckOnly ? 'type-checks' : 'runs'}`, async () => {
    const dir = await prepared();
    if (typeCheckOnly) return; // the type-check test covers it
    let file = join(dir, 'readme', `line-${b.line}.mjs`);
    if (b.lang === 'ts') {
      file = join(dir, 'readme-out', `line-${b.line}.js`);
      assert.ok(readFileSync(file, 'utf8').length > 0, 'compiled by the type-check test');
    }
    const server = b.marker !== undefined ? SERVER.exec(b.marker) : null;
    const running = server ? await serve(dir) : undefined;
    try {
      if (running) writeFileSync(file, readFileSync(file, 'utf8').replaceAll(`127.0.0.1:${server![1]}`, `127.0.0.1:${running.port}`));
      const r = run(process.execPath, [file], dir, { timeout: 120_000 });
      assert.is(r.status, 0, `README line ${b.line}:\n${b.code}\n---\n${text(r)}`);
    } finally {
      running?.child.kill('SIGKILL');
    }
  });
}

test.run();
