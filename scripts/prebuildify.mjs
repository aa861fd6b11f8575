// `npm run prebuildify`: the release binaries, in the layout node-gyp-build and scripts/install.mjs
// load (prebuildify's names, Node-API so one binary serves every Node version >= the API level):
//   prebuilds/<platform>-<arch>/kiln.napi.node        CPU backend (loads everywhere)
//   prebuilds/<platform>-<arch>/cuda/kiln.napi.node   CUDA for the default architectures, when
//                                                     nvcc is found (install copies it into place
//                                                     on machines whose GPUs it covers)
// Each is built in its own directory under build/prebuild/ with cmake-js and stripped.
//   --cpu-only   skip the CUDA prebuild even when nvcc is present
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, renameSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defaultArchs, findNvcc } from './install-plan.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
const target = join(root, 'prebuilds', `${process.platform}-${process.arch}`);

function build(name, cudaEnv, dest) {
  const start = Date.now();
  const out = join('build', 'prebuild', name);
  const env = {
    ...process.env,
    ...cudaEnv,
    CMAKE_BUILD_PARALLEL_LEVEL: process.env.CMAKE_BUILD_PARALLEL_LEVEL ?? String(availableParallelism()),
  };
  for (const command of ['configure', 'build']) {
    const r = spawnSync(process.execPath, [cmakeJs, command, '--out', out], { cwd: root, stdio: 'inherit', env });
    if (r.status !== 0) {
      console.error(`prebuildify: the ${name} build failed`);
      process.exit(r.status ?? 1);
    }
  }
  mkdirSync(dirname(dest), { recursive: true });
  const tmp = `${dest}.tmp`;
  copyFileSync(join(root, out, 'Release', 'kiln.node'), tmp);
  if (process.platform !== 'win32') {
    const s = spawnSync('strip', ['--strip-unneeded', tmp], { stdio: 'inherit' });
    if (s.status !== 0) console.warn('prebuildify: strip failed; the prebuild keeps its symbols');
  }
  renameSync(tmp, dest);
  console.log(`prebuildify: ${relative(root, dest)} (${name}) in ${((Date.now() - start) / 1000).toFixed(0)} s`);
}

build('cpu', { KILN_CUDA: '0', KILN_CUDA_ARCHS: '' }, join(target, 'kiln.napi.node'));
if (!process.argv.includes('--cpu-only') && process.env.KILN_CUDA !== '0') {
  if (findNvcc()) {
    build('cuda', { KILN_CUDA: '1', KILN_CUDA_ARCHS: defaultArchs().join(';') }, join(target, 'cuda', 'kiln.napi.node'));
  } else {
    console.log('prebuildify: no nvcc, so no CUDA prebuild');
  }
}
