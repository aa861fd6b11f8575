/**
 * kiln as a user gets it: `npm pack`, then `npm install` of the tarball into a fresh project with
 * --engine-strict (dependencies from npm's cache where it has them). The native addon is not
 * compiled again: the checkout's build is placed in the installed package's prebuilds/ (the
 * layout a release ships) and `npm rebuild kiln` runs the real install hook, which must find it.
 * Built once per process and shared by test/package/*.test.ts.
 */
import { type SpawnSyncReturns, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const require = createRequire(import.meta.url);
export const kilnPackage = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
  version: string; engines: { node: string }; files: string[]; dependencies: Record<string, string>;
};

/** The environment of a user's shell: no npm_* variables of the `npm test` running us, no addon override. */
export function userEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^npm_/i.test(k) && k !== 'KILN_ADDON_PATH' && k !== 'INIT_CWD') env[k] = v;
  return { ...env, ...extra };
}

export function run(command: string, args: string[], cwd: string, options: { env?: NodeJS.ProcessEnv; timeout?: number; input?: string } = {}): SpawnSyncReturns<string> {
  return spawnSync(command, args, { cwd, env: options.env ?? userEnv(), encoding: 'utf8', timeout: options.timeout ?? 180_000, input: options.input, maxBuffer: 1 << 26 });
}

export const text = (r: SpawnSyncReturns<string>) => `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? String(r.error) : ''}`;

/** The version of a package in the checkout's node_modules (so npm finds it in its cache). */
export const localVersion = (name: string) => (require(join(root, 'node_modules', name, 'package.json')) as { version: string }).version;

export interface Packed {
  /** the consumer project: node_modules/kiln installed from the tarball */
  dir: string;
  tarball: string;
  /** files in the tarball, relative to the package root */
  files: string[];
  /** npm's output for the install (engine-strict) and the rebuild (the install hook) */
  installLog: string;
  rebuildLog: string;
}

let packed: Promise<Packed> | undefined;

function must(r: SpawnSyncReturns<string>, what: string): string {
  if (r.status !== 0) throw new Error(`${what} failed (exit ${r.status}):\n${text(r)}`);
  return text(r);
}

export function packedProject(): Promise<Packed> {
  packed ??= Promise.resolve().then(() => {
    const base = mkdtempSync(join(tmpdir(), 'kiln-packed-'));
    process.once('exit', () => rmSync(base, { recursive: true, force: true })); // about 120 MB of node_modules
    // dist/ was just built by `npm test`'s tsc, which is exactly what `prepare` runs on pack
    const pack = must(run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', base], root), 'npm pack');
    const [info] = JSON.parse(pack.slice(pack.indexOf('['))) as { filename: string; files: { path: string }[] }[];
    const tarball = join(base, info.filename);
    const dir = join(base, 'consumer');
    mkdirSync(dir);
    writeFileSync(join(dir, 'package.json'), JSON.stringify({
      name: 'kiln-consumer', version: '1.0.0', private: true, type: 'module',
      dependencies: { kiln: `file:${tarball}` },
      devDependencies: { '@types/node': localVersion('@types/node'), openai: localVersion('openai') },
    }, null, 2));
    const installLog = must(run('npm', ['install', '--engine-strict', '--ignore-scripts', '--prefer-offline', '--no-audit', '--no-fund'], dir), 'npm install --engine-strict of the packed tarball');
    // the checkout's addon as the release prebuilds (CPU, and CUDA where it has CUDA: the install hook picks)
    const addon = require('node-gyp-build').resolve(root) as string;
    const prebuilds = join(dir, 'node_modules', 'kiln', 'prebuilds', `${process.platform}-${process.arch}`);
    mkdirSync(join(prebuilds, 'cuda'), { recursive: true });
    copyFileSync(addon, join(prebuilds, 'kiln.napi.node'));
    copyFileSync(addon, join(prebuilds, 'cuda', 'kiln.napi.node'));
    const rebuildLog = must(run('npm', ['rebuild', 'kiln', '--foreground-scripts'], dir), 'npm rebuild kiln (the install hook)');
    return { dir, tarball, files: info.files.map((f) => f.path), installLog, rebuildLog };
  });
  return packed;
}
