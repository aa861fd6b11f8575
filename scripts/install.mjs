// npm install hook: use a prebuild or an existing build when one loads, otherwise build the
// addon with cmake-js (Node-API headers from npm; CUDA when nvcc is found). Prints the time.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);

if (process.env.KILN_FORCE_BUILD !== '1') {
  try {
    require('node-gyp-build')(root);
    console.log('kiln: using the existing native build (set KILN_FORCE_BUILD=1 to rebuild)');
    process.exit(0);
  } catch {
    // no usable prebuild: build below
  }
}

const start = Date.now();
const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
const args = [cmakeJs, 'compile', '--out', 'build'];
const parallel = process.env.CMAKE_BUILD_PARALLEL_LEVEL ?? String(Math.max(1, (await import('node:os')).availableParallelism()));
console.log(`kiln: building the native addon with cmake-js (${parallel} jobs; CUDA kernels are built when nvcc is found, set KILN_CUDA=0 to skip them)`);
const result = spawnSync(process.execPath, args, {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, CMAKE_BUILD_PARALLEL_LEVEL: parallel },
});
if (result.status !== 0) {
  console.error('kiln: the native build failed. It needs cmake >= 3.18 and a C++17 compiler (and nvcc for CUDA).');
  process.exit(result.status ?? 1);
}
console.log(`kiln: native addon built in ${((Date.now() - start) / 1000).toFixed(1)} s`);
