import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { cudaArchCoverage } from '../../lib/index.js';

const test = suite('install: what to build, prebuilds, and which GPUs a build covers');
const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

interface Plan {
  cuda: boolean;
  archs?: string[];
  match?: 'exact' | 'superset' | 'covers';
  explicit?: boolean;
  why?: string;
  error?: string;
}
interface PlanModule {
  defaultArchs(): string[];
  findNvcc(env?: NodeJS.ProcessEnv): string | undefined;
  parseComputeCaps(text: string): string[];
  archsForComputeCaps(ccs: string[]): string[];
  planBuild(o: { env: Record<string, string | undefined>; nvcc?: string; computeCaps?: string[]; defaults?: string[] }): Plan;
  buildSatisfies(plan: Plan, info: { cudaCompiled: boolean; cudaArchs: string; devices: { kernelsCovered: boolean }[] }): boolean;
  probeGpus(o: { nvcc?: string; env?: NodeJS.ProcessEnv }): { computeCaps: string[]; source: string };
  probeWithCudaRuntime(nvcc: string): { computeCaps: string[]; source: string };
  driverPresent(): boolean;
}
const plans = (await import(pathToFileURL(join(root, 'scripts', 'install-plan.mjs')).href)) as PlanModule;
const DEFAULTS = ['80-real', '86-real', '89-real', '90a-real', '90-virtual'];

test('the default architecture list comes from CMakeLists.txt', () => {
  assert.equal(plans.defaultArchs(), DEFAULTS);
});

test('GPUs present: SASS for each (sm_90a on Hopper) plus PTX for the newest; older than 8.0 left out', () => {
  assert.equal(plans.parseComputeCaps('8.6\n9.0\r\ngarbage\n\n12.0\n'), ['8.6', '9.0', '12.0']);
  assert.equal(plans.archsForComputeCaps(['8.6']), ['86-real', '86-virtual']);
  assert.equal(plans.archsForComputeCaps(['9.0', '8.6', '8.6']), ['86-real', '90a-real', '90-virtual']);
  assert.equal(plans.archsForComputeCaps(['12.0', '8.9']), ['89-real', '120-real', '120-virtual']);
  assert.equal(plans.archsForComputeCaps(['7.5']), []);
  assert.equal(plans.archsForComputeCaps(['7.5', '8.0']), ['80-real', '80-virtual']);
});

test('the build plan: KILN_CUDA_ARCHS overrides, KILN_CUDA=0/1, nvcc and GPUs', () => {
  const nvcc = '/usr/local/bin/nvcc';
  const plan = (env: Record<string, string>, o: { nvcc?: string; computeCaps?: string[] } = {}) =>
    plans.planBuild({ env, defaults: DEFAULTS, ...o });
  // nvcc but no GPU: CPU only, one line on how to get CUDA
  const noGpu = plan({}, { nvcc });
  assert.is(noGpu.cuda, false);
  assert.match(noGpu.why!, /KILN_CUDA=1/);
  assert.match(noGpu.why!, /KILN_CUDA_ARCHS/);
  // the GPU present
  assert.equal(plan({}, { nvcc, computeCaps: ['8.6'] }), { cuda: true, archs: ['86-real', '86-virtual'], match: 'covers', why: plan({}, { nvcc, computeCaps: ['8.6'] }).why });
  // KILN_CUDA=1: every default architecture, GPU or not
  assert.equal(plan({ KILN_CUDA: '1' }, { nvcc }).archs, DEFAULTS);
  assert.equal(plan({ KILN_CUDA: '1' }, { nvcc, computeCaps: ['8.6'] }).archs, DEFAULTS);
  // KILN_CUDA=0 forces the CPU even with a GPU
  assert.is(plan({ KILN_CUDA: '0' }, { nvcc, computeCaps: ['9.0'] }).cuda, false);
  // KILN_CUDA_ARCHS overrides everything, KILN_CUDA=0 included
  const listed = plan({ KILN_CUDA_ARCHS: '86-real;90a-real', KILN_CUDA: '0' }, { nvcc, computeCaps: ['8.0'] });
  assert.equal([listed.cuda, listed.archs, listed.match], [true, ['86-real', '90a-real'], 'exact']);
  // asking for CUDA without nvcc is an error, not a silent CPU build
  assert.ok(plan({ KILN_CUDA: '1' }).error);
  assert.ok(plan({ KILN_CUDA_ARCHS: '86-real' }).error);
  // a GPU but no nvcc: CPU, saying how to get CUDA; a GPU too old: CPU
  assert.match(plan({}, { computeCaps: ['8.6'] }).why!, /no nvcc/);
  assert.is(plan({}, { nvcc, computeCaps: ['7.0'] }).cuda, false);
});

test('which existing build or prebuild satisfies a plan', () => {
  const nvcc = '/usr/local/bin/nvcc';
  const cpuBuild = { cudaCompiled: false, cudaArchs: '', devices: [] };
  const allBuild = { cudaCompiled: true, cudaArchs: DEFAULTS.join(','), devices: [] };
  const cpu = plans.planBuild({ env: {}, nvcc, defaults: DEFAULTS });
  assert.ok(plans.buildSatisfies(cpu, cpuBuild));
  assert.ok(plans.buildSatisfies(cpu, allBuild), 'a CUDA build also serves a machine without a GPU');
  assert.not.ok(plans.buildSatisfies(plans.planBuild({ env: { KILN_CUDA: '0' }, defaults: DEFAULTS }), allBuild), 'KILN_CUDA=0 wants a CPU build');
  const all = plans.planBuild({ env: { KILN_CUDA: '1' }, nvcc, defaults: DEFAULTS });
  assert.ok(plans.buildSatisfies(all, allBuild));
  assert.not.ok(plans.buildSatisfies(all, cpuBuild));
  assert.not.ok(plans.buildSatisfies(all, { cudaCompiled: true, cudaArchs: '86-real,86-virtual', devices: [{ kernelsCovered: true }] }));
  const gpu = plans.planBuild({ env: {}, nvcc, computeCaps: ['8.6'], defaults: DEFAULTS });
  assert.ok(plans.buildSatisfies(gpu, { ...allBuild, devices: [{ kernelsCovered: true }] }), 'the default-arch prebuild covers an 8.6 GPU');
  assert.not.ok(plans.buildSatisfies(gpu, { cudaCompiled: true, cudaArchs: '90a-real', devices: [{ kernelsCovered: false }] }));
  const exact = plans.planBuild({ env: { KILN_CUDA_ARCHS: '86-real' }, nvcc, defaults: DEFAULTS });
  assert.ok(plans.buildSatisfies(exact, { cudaCompiled: true, cudaArchs: '86-real', devices: [] }));
  assert.not.ok(plans.buildSatisfies(exact, allBuild), 'KILN_CUDA_ARCHS means exactly those');
});

test('the runtime check of a device against the built architectures (SASS, arch-specific, PTX JIT)', () => {
  const cases: [string, string[], boolean, RegExp][] = [
    ['8.0', DEFAULTS, true, /sm_80 SASS/],
    ['8.6', DEFAULTS, true, /sm_86 SASS/],
    ['8.7', DEFAULTS, true, /sm_86 SASS/], // same major, newer minor runs older SASS
    ['8.9', DEFAULTS, true, /sm_89 SASS/],
    ['9.0', DEFAULTS, true, /sm_90a SASS/],
    ['10.0', DEFAULTS, true, /compute_90 PTX/], // newer GPU: the driver JIT-compiles the PTX
    ['12.0', DEFAULTS, true, /compute_90 PTX/],
    ['7.5', DEFAULTS, false, /older than/],
    ['8.6', ['90a-real', '90-virtual'], false, /no SASS for sm_86/], // PTX never runs on an older GPU
    ['9.0', ['86-real', '86-virtual'], true, /compute_86 PTX/],
    ['10.0', ['90a-real', '90a-virtual'], false, /no SASS/], // arch-specific code is not forward compatible
    ['9.0', ['86-real'], false, /no SASS/], // SASS does not cross major versions
    ['8.9', ['86'], true, /sm_86 SASS/], // a bare number is SASS plus PTX
    ['10.3', ['100f-real'], true, /sm_100f SASS/],
    ['8.6', [], false, /no SASS/],
  ];
  for (const [cc, archs, covered, via] of cases) {
    const r = cudaArchCoverage(cc, archs);
    assert.is(r.covered, covered, `${cc} on ${archs.join(',')}: ${r.via}`);
    assert.match(r.via, via);
  }
  for (const bad of ['8', '8.x', '', 'sm_86'] as const) {
    try {
      cudaArchCoverage(bad, DEFAULTS);
      assert.unreachable(`accepted ${bad}`);
    } catch (e) {
      assert.is((e as { code?: string }).code, 'ERR_ARG');
    }
  }
});

test('without a driver the GPU probe answers at once and finds nothing', () => {
  if (plans.driverPresent()) return; // a machine with a driver: nothing to check here
  const env = { ...process.env };
  delete env.KILN_GPU_COMPUTE_CAPS;
  const r = plans.probeGpus({ nvcc: plans.findNvcc(), env });
  assert.equal(r.computeCaps, []);
  // at once: it stops at the missing driver, without compiling or running the CUDA runtime probe
  // (which takes seconds with nvcc); checked by the path it took, not by a wall-clock bound
  assert.is(r.source, 'no NVIDIA driver');
});

test('the CUDA runtime probe compiles and, without a driver, reports no GPU instead of failing', () => {
  const nvcc = plans.findNvcc();
  if (!nvcc || plans.driverPresent()) return; // needs nvcc; with a driver the answer is machine-specific
  const r = plans.probeWithCudaRuntime(nvcc);
  assert.is(r.source, 'CUDA runtime probe', 'the probe compiled');
  assert.equal(r.computeCaps, []);
});

test('an install with a matching prebuild builds nothing (and KILN_FORCE_BUILD=1 does build)', () => {
  const addon = createRequire(import.meta.url)('node-gyp-build').resolve(root) as string;
  const dir = mkdtempSync(join(tmpdir(), 'kiln-install-'));
  try {
    mkdirSync(join(dir, 'scripts'));
    for (const f of ['install.mjs', 'install-plan.mjs']) copyFileSync(join(root, 'scripts', f), join(dir, 'scripts', f));
    for (const f of ['package.json', 'CMakeLists.txt']) copyFileSync(join(root, f), join(dir, f));
    cpSync(join(root, 'native'), join(dir, 'native'), { recursive: true });
    symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'));
    const prebuild = join(dir, 'prebuilds', `${process.platform}-${process.arch}`, 'kiln.napi.node');
    mkdirSync(dirname(prebuild), { recursive: true });
    copyFileSync(addon, prebuild);
    // a cmake that records being called: the build must never reach it
    const bin = join(dir, 'fake-bin');
    const marker = join(dir, 'cmake-called');
    mkdirSync(bin);
    writeFileSync(join(bin, 'cmake'), `#!/bin/sh\necho "$@" >> '${marker}'\nexit 1\n`);
    chmodSync(join(bin, 'cmake'), 0o755);
    const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${bin}:${process.env.PATH}`, KILN_GPU_COMPUTE_CAPS: '' };
    for (const name of ['KILN_CUDA', 'KILN_CUDA_ARCHS', 'KILN_FORCE_BUILD', 'CUDACXX']) delete env[name];
    const start = Date.now();
    const r = spawnSync(process.execPath, [join(dir, 'scripts', 'install.mjs')], { cwd: dir, env, encoding: 'utf8' });
    const ms = Date.now() - start;
    assert.is(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /using the prebuild prebuilds\/[\w-]+\/kiln\.napi\.node; nothing to build/);
    assert.not.ok(existsSync(marker), 'cmake was not invoked');
    assert.not.ok(existsSync(join(dir, 'build', 'Release')), 'nothing was built');
    assert.ok(ms < 15_000, `install took ${ms} ms`);
    // the control: forcing a build does reach cmake (so the check above can fail)
    const forced = spawnSync(process.execPath, [join(dir, 'scripts', 'install.mjs')], {
      cwd: dir,
      env: { ...env, KILN_FORCE_BUILD: '1' },
      encoding: 'utf8',
    });
    assert.is.not(forced.status, 0);
    assert.ok(existsSync(marker), 'a forced build invokes cmake');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
