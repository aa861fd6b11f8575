/**
 * Issue 28, items 2, 4 and 5: kiln packed and installed into a fresh project the way a user gets
 * it (test/package/packed.ts): it installs with --engine-strict, its dependency tree allows
 * every Node its engines allow, `require('kiln')` works, and a strict TypeScript project without
 * skipLibCheck type-checks against its declarations.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, normalize } from 'node:path';
import semver from 'semver';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { kilnPackage, packedProject, root, run, text } from './packed.js';

const test = suite('package: packed, installed into a fresh project');
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');

test('the tarball ships every file its declarations import (dist/binding.d.ts among them)', async () => {
  const { files } = await packedProject();
  const shipped = new Set(files);
  assert.ok(shipped.has('dist/binding.d.ts'), 'dist/binding.d.ts is in the package');
  const missing: string[] = [];
  for (const file of files.filter((f) => f.endsWith('.d.ts'))) {
    const source = readFileSync(join((await packedProject()).dir, 'node_modules', 'kiln', file), 'utf8');
    for (const [, spec] of source.matchAll(/(?:from|import\()\s*'(\.{1,2}\/[^']+)'/g)) {
      const target = normalize(join(dirname(file), spec.replace(/\.js$/, '.d.ts')));
      if (!shipped.has(target)) missing.push(`${file} -> ${spec}`);
    }
  }
  assert.equal(missing, [], `declarations import files the package does not ship: ${missing.join(', ')}`);
});

test('installs into a fresh project with --engine-strict, and no dependency warns about engines', async () => {
  const { installLog } = await packedProject(); // packedProject() throws when the install fails
  assert.not.match(installLog, /EBADENGINE|Unsupported engine/, installLog);
});

test('every production dependency allows every Node version kiln\'s engines allow', async () => {
  const { dir } = await packedProject();
  const ls = run('npm', ['ls', '--omit=dev', '--all', '--parseable'], dir);
  assert.is(ls.status, 0, text(ls));
  const paths = ls.stdout.split('\n').filter((p) => p && p !== dir);
  assert.ok(paths.some((p) => p.endsWith(join('node_modules', 'fastify'))), 'the tree lists kiln\'s dependencies');
  const range = kilnPackage.engines.node;
  const narrower: string[] = [];
  for (const path of paths) {
    const pkg = JSON.parse(readFileSync(join(path, 'package.json'), 'utf8')) as { name: string; version: string; engines?: { node?: string } };
    const node = pkg.engines?.node;
    if (node && !semver.subset(range, node)) narrower.push(`${pkg.name}@${pkg.version} (node ${node})`);
  }
  assert.equal(narrower, [], `dependencies that refuse some Node in kiln's range ${range}: ${narrower.join(', ')}`);
});

// require() of an ES module works unflagged from Node 20.19.0 and 22.12.0 (not in 21.x, nor 22.0-22.11)
const REQUIRE_ESM = '^20.19.0 || >=22.12.0';

test('engines admit only Node versions that load ES modules from require() unflagged', () => {
  assert.ok(semver.subset(kilnPackage.engines.node, REQUIRE_ESM), `engines ${kilnPackage.engines.node} admit a Node without require(esm) (${REQUIRE_ESM} have it)`);
  assert.ok(semver.satisfies(process.version, kilnPackage.engines.node), `this Node ${process.version} is in range`);
});

test('require(\'kiln\') from CommonJS loads the package and computes', async () => {
  const { dir } = await packedProject();
  writeFileSync(join(dir, 'use.cjs'), [
    "const kiln = require('kiln');",
    "const t = kiln.tensor([1, 2, 3, 4], { shape: [4] });",
    "kiln.ops.sum(t).toArray().then((v) => process.stdout.write([typeof kiln.Engine, typeof kiln.createServer, v[0]].join(' ')));",
  ].join('\n'));
  const r = run(process.execPath, ['use.cjs'], dir);
  assert.is(r.status, 0, text(r));
  assert.is(r.stdout.trim(), 'function function 10');
});

test('the install hook found the prebuild (nothing compiled), and import and the bin work', async () => {
  const { dir, rebuildLog } = await packedProject();
  assert.match(rebuildLog, /kiln: using the prebuild prebuilds\/[\w-]+\/(cuda\/)?kiln\.napi\.node; nothing to build/, rebuildLog);
  const r = run(process.execPath, ['--input-type=module', '-e', "import { randn, ops } from 'kiln'; const a = randn([8, 8], { seed: 1 }); process.stdout.write(String((await ops.mean(a).toArray()).length));"], dir);
  assert.is(r.status, 0, text(r));
  assert.is(r.stdout.trim(), '1');
  const bin = join(dir, 'node_modules', '.bin', 'kiln');
  assert.ok(existsSync(bin));
  const info = run(bin, ['info'], dir);
  assert.is(info.status, 0, text(info));
  assert.match(info.stdout, /kiln /);
  // every command answers --help in the package too, kiln bench (whose benchmarks stay in the repository) included
  for (const command of ['train', 'serve', 'bench']) {
    const help = run(bin, [command, '--help'], dir);
    assert.is(help.status, 0, text(help));
    assert.ok(help.stdout.startsWith(`usage: kiln ${command} `), help.stdout);
  }
});

test('a strict TypeScript project without skipLibCheck type-checks against the package', async () => {
  const { dir } = await packedProject();
  writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { strict: true, module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', noEmit: true, skipLibCheck: false, types: ['node'] },
    files: ['consumer.ts'],
  }, null, 2));
  writeFileSync(join(dir, 'consumer.ts'), [
    "import { Engine, KilnError, Trainer, createServer, ops, preset, randn, type ModelConfig, type Tensor } from 'kiln';",
    "const config: ModelConfig = preset('tiny');",
    "const a: Tensor = randn([4, 4], { seed: 1 });",
    "const s: Tensor = ops.sum(ops.matmul(a, a));",
    "const values: ArrayLike<number> = await s.toArray();",
    "export const used = [config.dModel, values.length, Engine.load, Trainer, createServer, KilnError];",
  ].join('\n'));
  const r = run(process.execPath, [tsc, '-p', 'tsconfig.json'], dir);
  assert.is(r.status, 0, `tsc --noEmit (strict, no skipLibCheck) failed:\n${text(r)}`);
});

test.run();
