// npm install hook. Decides what this machine needs (scripts/install-plan.mjs: CUDA only for the
// GPUs present, CPU only when there is none), then uses an earlier build or a prebuild that
// satisfies it, and only otherwise builds with cmake-js. Prints the decision and the time.
//   KILN_FORCE_BUILD=1   always build        KILN_CUDA=0 / 1   CPU only / every default arch
//   KILN_CUDA_ARCHS=...  exactly these archs (CMake syntax, overrides everything)
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildSatisfies, findNvcc, planBuild, probeGpus } from './install-plan.mjs';

const start = Date.now();
const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const seconds = () => ((Date.now() - start) / 1000).toFixed(1);

const nvcc = findNvcc();
const probe = probeGpus({ nvcc });
const plan = planBuild({ nvcc, computeCaps: probe.computeCaps });
if (plan.error) {
  console.error(`kiln: ${plan.error}`);
  process.exit(1);
}
console.log(`kiln: ${plan.why} [GPUs from ${probe.source}]`);

const built = join(root, 'build', 'Release', 'kiln.node');
const prebuildDir = join(root, 'prebuilds', `${process.platform}-${process.arch}`);
const cpuPrebuild = join(prebuildDir, 'kiln.napi.node');
const cudaPrebuild = join(prebuildDir, 'cuda', 'kiln.napi.node');

/** info() of the addon at `file`, or undefined when it is missing or does not load here. */
function addonInfo(file) {
  if (!existsSync(file)) return undefined;
  try {
    return require(file).info();
  } catch {
    return undefined;
  }
}

function record(source) {
  mkdirSync(join(root, 'build'), { recursive: true });
  const entry = { source, cuda: plan.cuda, archs: plan.cuda ? plan.archs : [], why: plan.why, seconds: Number(seconds()), date: new Date().toISOString() };
  writeFileSync(join(root, 'build', 'kiln-install.json'), JSON.stringify(entry, null, 2) + '\n');
}

if (process.env.KILN_FORCE_BUILD !== '1') {
  const existing = addonInfo(built);
  if (existing && buildSatisfies(plan, existing)) {
    console.log(`kiln: the existing build in build/Release fits; nothing to build (KILN_FORCE_BUILD=1 rebuilds) [${seconds()} s]`);
    process.exit(0);
  }
  const prebuild = plan.cuda ? cudaPrebuild : cpuPrebuild;
  const info = addonInfo(prebuild);
  if (info && buildSatisfies(plan, info)) {
    if (plan.cuda) {
      // node-gyp-build loads build/Release first: put the CUDA prebuild there.
      mkdirSync(dirname(built), { recursive: true });
      copyFileSync(prebuild, built);
    } else if (existsSync(built)) {
      rmSync(built); // an earlier build that does not fit would shadow the prebuild
    }
    record('prebuild');
    console.log(`kiln: using the prebuild ${relative(root, prebuild)}; nothing to build [${seconds()} s]`);
    process.exit(0);
  }
}

const parallel = process.env.CMAKE_BUILD_PARALLEL_LEVEL ?? String(Math.max(1, availableParallelism()));
const env = {
  ...process.env,
  CMAKE_BUILD_PARALLEL_LEVEL: parallel,
  KILN_CUDA: plan.cuda ? '1' : '0',
  KILN_CUDA_ARCHS: plan.cuda ? plan.archs.join(';') : '',
};
console.log(`kiln: building the native addon with cmake-js (${parallel} jobs)`);
const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
// configure every time (cheap when cached) so a changed plan reaches CMake, then build
for (const command of ['configure', 'build']) {
  const result = spawnSync(process.execPath, [cmakeJs, command, '--out', 'build'], { cwd: root, stdio: 'inherit', env });
  if (result.status !== 0) {
    console.error('kiln: the native build failed. It needs cmake >= 3.18 and a C++17 compiler (and nvcc for CUDA).');
    process.exit(result.status ?? 1);
  }
}
record('build');
console.log(`kiln: native addon built in ${seconds()} s`);
