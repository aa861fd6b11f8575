/**
 * Loads the addon through node-gyp-build (build/Release first, then prebuilds/) and wraps every
 * function so native errors arrive as KilnError. lib/ calls the addon only through `native`.
 */
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { KilnBinding } from '../binding.js';
import { KilnError, fromNativeError } from './errors.js';

/** The package root: dist/lib/native.js -> ../..; lib/native.ts (tests from source) -> .. */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'CMakeLists.txt'))) return dir;
    dir = dirname(dir);
  }
  return resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
}

function candidatePaths(root: string): string[] {
  const paths = [
    join(root, 'prebuilds', `${process.platform}-${process.arch}`),
    join(root, 'build', 'Release', 'kiln.node'),
    join(root, 'build', 'Debug', 'kiln.node'),
  ];
  const prebuildDir = paths[0];
  if (existsSync(prebuildDir)) {
    for (const file of readdirSync(prebuildDir)) if (file.endsWith('.node')) paths.push(join(prebuildDir, file));
  }
  return paths;
}

function load(): KilnBinding {
  const require = createRequire(import.meta.url);
  const root = packageRoot();
  const override = process.env.KILN_ADDON_PATH;
  try {
    if (override) return require(resolve(override)) as KilnBinding;
    const nodeGypBuild = require('node-gyp-build') as (dir: string) => unknown;
    return nodeGypBuild(root) as KilnBinding;
  } catch (error) {
    const tried = override ? [resolve(override)] : candidatePaths(root);
    throw new KilnError(
      'ERR_NO_ADDON',
      `kiln's native addon could not be loaded (${(error as Error).message.split('\n')[0]}).\n` +
        `Paths tried:\n${tried.map((p) => `  ${p}${existsSync(p) ? '' : ' (missing)'}`).join('\n')}\n` +
        'To fix: run `npm rebuild kiln` (or `npm run build:native` in a checkout); building needs cmake >= 3.18 ' +
        'and a C++17 compiler, and nvcc for the CUDA kernels (optional). KILN_ADDON_PATH=/path/to/kiln.node ' +
        'loads a specific build.',
      { cause: error },
    );
  }
}

function wrap(binding: KilnBinding): KilnBinding {
  const wrapped: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(binding)) {
    if (typeof value !== 'function' || name === 'NativeTensor') {
      wrapped[name] = value;
      continue;
    }
    const fn = value as (...args: unknown[]) => unknown;
    wrapped[name] = (...args: unknown[]) => {
      let result: unknown;
      try {
        result = fn(...args);
      } catch (error) {
        throw fromNativeError(error);
      }
      if (result instanceof Promise) {
        return result.catch((error: unknown) => {
          throw fromNativeError(error);
        });
      }
      return result;
    };
  }
  return wrapped as unknown as KilnBinding;
}

let cached: KilnBinding | undefined;

/** The addon, loaded on first use. */
export function binding(): KilnBinding {
  if (!cached) cached = wrap(load());
  return cached;
}
