import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { info } from '../../lib/index.js';

const test = suite('addon loading and the CLI');
const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const cli = join(root, 'dist', 'lib', 'cli', 'cli.js');

test('the addon loads and computes in a fresh child process', () => {
  const script = `
    import('${join(root, 'dist', 'lib', 'index.js')}').then(async (k) => {
      const t = k.ops.add(k.tensor([1, 2]), k.tensor([3, 4]));
      console.log(JSON.stringify(Array.from(await t.toArray())));
    });`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.is(r.status, 0, r.stderr);
  assert.is(r.stdout.trim(), '[4,6]');
});

test('a missing addon is ERR_NO_ADDON listing the paths tried and the fix', () => {
  const script = `
    import('${join(root, 'dist', 'lib', 'index.js')}').then((k) => {
      try { k.zeros([1]); } catch (e) { console.log(JSON.stringify({ code: e.code, name: e.name, message: e.message })); }
    });`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
    encoding: 'utf8',
    env: { ...process.env, KILN_ADDON_PATH: '/nonexistent/kiln.node' },
  });
  assert.is(r.status, 0, r.stderr);
  const error = JSON.parse(r.stdout.trim());
  assert.is(error.code, 'ERR_NO_ADDON');
  assert.is(error.name, 'KilnError');
  assert.ok(error.message.includes('/nonexistent/kiln.node'));
  assert.ok(error.message.includes('npm rebuild kiln'));
});

test('the process exits promptly with work still queued', () => {
  const script = `
    import('${join(root, 'dist', 'lib', 'index.js')}').then((k) => {
      for (let i = 0; i < 20; i++) k.ops.sum(k.randn([1 << 18], { seed: i }));
      console.log('issued');
    });`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 });
  assert.is(r.status, 0, r.stderr);
  assert.is(r.stdout.trim(), 'issued');
});

test('kiln info reports the build and every device with datasheet peaks', () => {
  const r = spawnSync(process.execPath, [cli, 'info', '--json'], { encoding: 'utf8' });
  assert.is(r.status, 0, r.stderr);
  const reported = JSON.parse(r.stdout);
  const direct = info();
  assert.is(reported.cudaCompiled, direct.cudaCompiled);
  assert.equal(reported.cudaArchitectures, direct.cudaArchitectures);
  assert.is(reported.devices.length, direct.devices.length);
  // The architectures are the ones the build was made for: what scripts/install.mjs planned
  // (build/kiln-install.json) when this is its build, and every default one under KILN_CUDA=1 (CI).
  for (const arch of reported.cudaArchitectures) assert.match(arch, /^\d{2,3}[af]?(-real|-virtual)?$/);
  assert.is(reported.cudaArchitectures.length > 0, direct.cudaCompiled);
  const loaded = process.env.KILN_ADDON_PATH ? undefined : (createRequire(import.meta.url)('node-gyp-build').resolve(root) as string);
  const record = join(root, 'build', 'kiln-install.json');
  if (loaded === join(root, 'build', 'Release', 'kiln.node') && existsSync(record)) {
    const planned = JSON.parse(readFileSync(record, 'utf8')) as { cuda: boolean; archs: string[] };
    assert.is(direct.cudaCompiled, planned.cuda, 'CUDA compiled in as planned at install');
    assert.equal([...reported.cudaArchitectures].sort(), [...planned.archs].sort(), 'the planned architectures');
  }
  if (process.env.KILN_CUDA === '1' && !process.env.KILN_CUDA_ARCHS) {
    assert.ok(direct.cudaCompiled, 'KILN_CUDA=1 builds CUDA');
    for (const arch of ['80-real', '86-real', '89-real', '90a-real', '90-virtual']) {
      assert.ok(reported.cudaArchitectures.includes(arch), `architectures include ${arch}`);
    }
  }
  for (const d of reported.devices) {
    assert.ok(d.name && d.computeCapability && d.multiprocessors > 0 && d.totalMemoryBytes > 0);
  }
  const text = spawnSync(process.execPath, [cli, 'info'], { encoding: 'utf8' });
  assert.is(text.status, 0);
  assert.ok(text.stdout.includes('kiln '));
  assert.ok(text.stdout.includes(direct.cudaCompiled ? 'CUDA: compiled' : 'CUDA: not compiled'));
});

test('kiln rejects unknown commands and options with a usage message', () => {
  const r = spawnSync(process.execPath, [cli, 'frobnicate'], { encoding: 'utf8' });
  assert.is(r.status, 2);
  assert.ok(r.stderr.includes('usage: kiln'));
  const o = spawnSync(process.execPath, [cli, 'info', '--bogus'], { encoding: 'utf8' });
  assert.is(o.status, 1);
  assert.ok(o.stderr.includes('bogus'));
});

test('kiln bench train measures a preset and writes its JSON', () => {
  const out = mkdtempSync(join(tmpdir(), 'kiln-bench-'));
  const r = spawnSync(process.execPath, [cli, 'bench', 'train', '--preset', 'tiny', '--batch', '2', '--seq', '32', '--steps', '3', '--warmup', '2', '--no-peer', '--out', out], { encoding: 'utf8' });
  assert.is(r.status, 0, r.stderr);
  assert.match(r.stdout, /train cpu tiny: \d+ tok\/s, step p50/);
  const files = readdirSync(out);
  assert.is(files.length, 1);
  const result = JSON.parse(readFileSync(join(out, files[0]), 'utf8'));
  const row = result.results[0];
  assert.is(result.benchmark, 'train');
  assert.ok(row.tokensPerSecond > 0 && row.p99Ms >= row.p50Ms && row.issueMs > 0 && row.tokensPerStep === 64, JSON.stringify(row));
  assert.is(row.allocationsPerStep, 0, 'a steady-state training step allocates no tensor memory');
  for (const [args, code] of [[['--batch', '0'], 'ERR_ARG'], [['--preset', 'huge'], 'ERR_ARG'], [['--device', 'gpu'], 'ERR_DEVICE']] as const) {
    const bad = spawnSync(process.execPath, [cli, 'bench', 'train', ...args], { encoding: 'utf8' });
    assert.is(bad.status, 1, args.join(' '));
    assert.ok(bad.stderr.includes(code), bad.stderr);
    assert.is(bad.stdout, '', 'nothing runs before the arguments are checked');
  }
});

test.run();
