// The GPU owner's one command: `npm run check:gpu -- <outdir>`.
// Builds the addon with CUDA, runs the whole test suite with KILN_REQUIRE_GPU=1 (CUDA tests may
// not skip), runs every benchmark, and writes the logs and JSON results (device, driver, commit,
// date) into <outdir>. Exits non-zero if any step fails; later steps still run.
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const outDir = resolve(process.argv[2] ?? join(root, 'bench', 'results'));
mkdirSync(outDir, { recursive: true });

const steps = [];
function step(name, args, env = {}) {
  const start = Date.now();
  console.log(`\n== ${name}: ${args.join(' ')}`);
  const r = spawnSync(args[0], args.slice(1), { cwd: root, env: { ...process.env, ...env }, encoding: 'utf8', maxBuffer: 1 << 30 });
  const log = (r.stdout ?? '') + (r.stderr ?? '');
  process.stdout.write(log);
  writeFileSync(join(outDir, `${name}.log`), log);
  const result = { name, status: r.status, seconds: (Date.now() - start) / 1000 };
  steps.push(result);
  return result;
}

const node = process.execPath;
const build = step('build', [node, join(root, 'scripts', 'install.mjs')], { KILN_FORCE_BUILD: '1' });
step('typescript', [node, join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json']);
const info = step('info', [node, join(root, 'dist', 'lib', 'cli', 'cli.js'), 'info', '--json']);
let cudaOk = false;
let computeCapability = '';
try {
  const parsed = JSON.parse(info.status === 0 ? spawnSync(node, [join(root, 'dist', 'lib', 'cli', 'cli.js'), 'info', '--json'], { encoding: 'utf8' }).stdout : '{}');
  cudaOk = parsed.cudaCompiled === true && parsed.devices?.length > 0;
  computeCapability = parsed.devices?.[0]?.computeCapability ?? '';
} catch {}
if (!cudaOk) console.error('check:gpu: CUDA is not compiled in or no device is visible; the CUDA tests will fail');
step('test', [node, join(root, 'scripts', 'test.mjs')], { KILN_REQUIRE_GPU: '1' });
// The standalone matmul check (every config against an f64 reference), built for the device's
// architecture: as is, and on Hopper again with KILN_MATMUL_PATH=sm90 (the sm90 configs are
// only candidates while that path is forced, see matmul_dispatch.cu).
if (cudaOk && /^\d+\.\d+$/.test(computeCapability)) {
  const sm = computeCapability.replace('.', '');
  const arch = sm === '90' ? '90a' : sm;
  const exe = join(outDir, 'matmul_check');
  const nvcc = process.env.CUDACXX ?? 'nvcc';
  const built = step('matmul-check-build', [
    nvcc, '-std=c++17', '-O3', '--expt-relaxed-constexpr', `-I${join(root, 'native')}`, '-gencode', `arch=compute_${arch},code=sm_${arch}`,
    join(root, 'bench', 'kernels', 'matmul', 'matmul_check.cu'), ...['matmul_dispatch', 'matmul_simt', 'matmul_sm80', 'matmul_sm90'].map((f) => join(root, 'native', 'ops', 'cuda', 'matmul', `${f}.cu`)),
    '-o', exe,
  ]);
  if (built.status === 0) {
    step('matmul-check', [exe], { KILN_MATMUL_PATH: '' });
    if (sm === '90') step('matmul-check-sm90', [exe], { KILN_MATMUL_PATH: 'sm90' });
  }
}
// the CUDA training step is exercised (tests and the 1.4B benchmark) until it is verified
step('bench', [node, join(root, 'dist', 'bench', 'run.js'), '--out', outDir], { KILN_CUDA_TRAINING: '1' });

const failed = steps.filter((s) => s.status !== 0);
writeFileSync(join(outDir, 'check-gpu.json'), JSON.stringify({ date: new Date().toISOString(), steps, build: build.status === 0, cudaOk }, null, 2) + '\n');
console.log(`\ncheck:gpu: ${steps.length - failed.length}/${steps.length} steps passed; results in ${outDir}`);
process.exit(failed.length ? 1 : 0);
