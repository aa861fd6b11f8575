// Runs the test suite N times to find flaky tests, each run under a timeout, optionally with a
// CPU hog spinning on one core, and records every failure.
//
// Usage: npm run test:repeat -- N [--hog] [--timeout S] [--pattern REGEX] [--npm] [--no-build]
//   N            runs (default 20)
//   --hog        a child process busy-loops on one core for the whole sweep (killed at the end)
//   --timeout S  each run is stopped after S seconds (SIGTERM, SIGKILL 5 s later; default 1800)
//   --pattern R  only test files matching R (as `node scripts/test.mjs R`)
//   --npm        each run is a full `npm test` (tsc + suites); default: one tsc build, then
//                `node scripts/test.mjs` per run
//   --no-build   skip that tsc build (dist/ is current; e.g. a second sweep running next to one)
//
// Writes test-artifacts/test-repeat-<time>.json (every run: passed, exit code, timed out, failing
// tests with their first message line, the summary line, duration, load averages at start and
// end) and the output of each failed run next to it, prints one line per run and ends with
// "repeat: N runs, P passed, F failed". Exits 1 when any run failed.
import { spawn, spawnSync } from 'node:child_process';
import { createWriteStream, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const usage = 'usage: npm run test:repeat -- N [--hog] [--timeout S] [--pattern REGEX] [--npm] [--no-build]';

function parseArgs(argv) {
  const o = { runs: 20, hog: false, timeoutS: 1800, pattern: undefined, npm: false, build: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--hog') o.hog = true;
    else if (a === '--npm') o.npm = true;
    else if (a === '--no-build') o.build = false;
    else if (a === '--timeout') o.timeoutS = Number(value());
    else if (a === '--pattern') o.pattern = value();
    else if (a === '--help' || a === '-h') {
      console.log(usage);
      process.exit(0);
    } else if (/^\d+$/.test(a)) o.runs = Number(a);
    else throw new Error(`unknown argument '${a}'`);
  }
  if (!(o.runs >= 1)) throw new Error('N must be at least 1');
  if (!(o.timeoutS > 0)) throw new Error('--timeout must be a positive number of seconds');
  if (o.pattern !== undefined) new RegExp(o.pattern); // fail early on a bad regex
  return o;
}

let options;
try {
  options = parseArgs(process.argv.slice(2));
} catch (error) {
  console.error(`test:repeat: ${error.message}\n${usage}`);
  process.exit(2);
}

const stamp = new Date().toISOString().replace(/[:.]/g, '-').replace('T', '_').slice(0, 19);
const artifacts = join(root, 'test-artifacts');
const logDir = join(artifacts, `test-repeat-${stamp}`);
const summaryPath = join(artifacts, `test-repeat-${stamp}.json`);
mkdirSync(logDir, { recursive: true });

const round = (x, d = 2) => Math.round(x * 10 ** d) / 10 ** d;
const load = () => loadavg().map((x) => round(x));
const strip = (s) => s.replace(/\u001b\[[0-9;]*m/g, '');

/** The failing tests of a uvu run: each "FAIL  suite  "name"" line with the message on the next line. */
function failures(output) {
  const lines = strip(output).split('\n');
  const found = [];
  for (let i = 0; i < lines.length; i++) {
    const m = /^\s*FAIL\s+(.*?)\s*$/.exec(lines[i]);
    if (!m) continue;
    const message = (lines.slice(i + 1).find((l) => l.trim() !== '') ?? '').trim();
    found.push({ test: m[1].replace(/\s{2,}/g, '  '), message });
  }
  return found;
}

/** What a run that printed no FAIL line died of: its first error line, else its last line. */
function crashLine(plain) {
  const lines = plain.split('\n').map((l) => l.trim()).filter(Boolean);
  return lines.find((l) => /^\w*Error\b|^Error:|ERR_/.test(l)) ?? lines.at(-1) ?? '';
}

// ---- the CPU hog: one busy-looping process (one core), killed when the sweep ends
let hog;
function startHog() {
  hog = spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' });
  hog.on('exit', (code, signal) => {
    if (hog && !hog.stopping) console.error(`test:repeat: the CPU hog exited (${signal ?? code})`);
  });
}
function stopHog() {
  if (!hog) return;
  hog.stopping = true;
  hog.kill('SIGKILL');
  hog = undefined;
}

// ---- one run of the suite, in its own process group so a timeout stops every child
let current;
function runOnce(index) {
  const command = options.npm ? ['npm', ['test', ...(options.pattern ? ['--', options.pattern] : [])]] : [process.execPath, [join(root, 'scripts', 'test.mjs'), ...(options.pattern ? [options.pattern] : [])]];
  const log = createWriteStream(join(logDir, `run-${index}.log`));
  const started = performance.now();
  const loadStart = load();
  return new Promise((resolve) => {
    const child = spawn(command[0], command[1], { cwd: root, detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, FORCE_COLOR: '0' } });
    current = child;
    let output = '';
    const take = (chunk) => {
      output += chunk.toString();
      log.write(chunk);
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    let timedOut = false;
    const group = (signal) => {
      try {
        process.kill(-child.pid, signal);
      } catch {
        // already gone
      }
    };
    let killer;
    const timer = setTimeout(() => {
      timedOut = true;
      group('SIGTERM');
      killer = setTimeout(() => group('SIGKILL'), 5000);
    }, options.timeoutS * 1000);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      clearTimeout(killer);
      group('SIGKILL'); // anything the run left behind in its group
      current = undefined;
      log.end();
      const plain = strip(output);
      const summary = /^(\d+) passed, (\d+) failed(?:, (\d+) skipped)?.*$/m.exec(plain.split('\n').filter((l) => /^\d+ passed, \d+ failed/.test(l)).at(-1) ?? '');
      const failed = failures(output);
      const passed = code === 0 && !timedOut;
      resolve({
        run: index,
        passed,
        exitCode: code,
        signal: signal ?? undefined,
        timedOut,
        durationS: round((performance.now() - started) / 1000, 1),
        loadAverageStart: loadStart,
        loadAverageEnd: load(),
        summary: summary ? summary[0] : undefined,
        counts: summary ? { passed: Number(summary[1]), failed: Number(summary[2]), skipped: Number(summary[3] ?? 0) } : undefined,
        failures: failed.length || passed ? failed : [{ test: '(no FAIL line)', message: timedOut ? `timed out after ${options.timeoutS} s` : crashLine(plain) }],
        log: passed ? undefined : join('test-artifacts', `test-repeat-${stamp}`, `run-${index}.log`),
      });
    });
  });
}

function stopAll(signal) {
  if (current) {
    try {
      process.kill(-current.pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  stopHog();
  process.exit(signal === 'SIGINT' ? 130 : 143);
}
process.on('SIGINT', () => stopAll('SIGINT'));
process.on('SIGTERM', () => stopAll('SIGTERM'));

// ---- the sweep
if (!options.npm && options.build) {
  const tsc = spawnSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], { cwd: root, stdio: 'inherit' });
  if (tsc.status !== 0) {
    console.error('test:repeat: tsc failed');
    process.exit(1);
  }
}
const record = {
  started: new Date().toISOString(),
  command: options.npm ? `npm test${options.pattern ? ` -- ${options.pattern}` : ''}` : `node scripts/test.mjs${options.pattern ? ` ${options.pattern}` : ''}${options.build ? ' (after one tsc build)' : ''}`,
  runs: options.runs,
  hog: options.hog,
  timeoutS: options.timeoutS,
  pattern: options.pattern ?? null,
  cpus: cpus().length,
  node: process.version,
  results: [],
};
const save = () => writeFileSync(summaryPath, JSON.stringify(record, null, 2) + '\n');
if (options.hog) startHog();
console.log(`test:repeat: ${options.runs} runs of ${record.command}, timeout ${options.timeoutS} s${options.hog ? ', CPU hog on one core' : ''}; load ${load().join(' ')}`);
try {
  for (let i = 1; i <= options.runs; i++) {
    const r = await runOnce(i);
    record.results.push(r);
    save();
    const what = r.passed ? 'passed' : r.timedOut ? 'TIMED OUT' : 'FAILED';
    console.log(`run ${i}/${options.runs}: ${what} in ${r.durationS} s (${r.summary ?? 'no summary'}; load ${r.loadAverageStart[0]} -> ${r.loadAverageEnd[0]})`);
    for (const f of r.failures) console.log(`  FAIL ${f.test}: ${f.message}`);
  }
} finally {
  stopHog();
}
// only failed runs keep their output
const passedAll = () => record.results.every((r) => r.passed);
for (const r of record.results) if (r.passed) rmSync(join(logDir, `run-${r.run}.log`), { force: true });
if (passedAll()) rmSync(logDir, { recursive: true, force: true });
const passed = record.results.filter((r) => r.passed).length;
const failed = record.results.length - passed;
const byTest = new Map();
for (const r of record.results) for (const f of r.failures) byTest.set(f.test, (byTest.get(f.test) ?? 0) + 1);
record.ended = new Date().toISOString();
record.passed = passed;
record.failed = failed;
record.flakes = [...byTest].map(([test, runs]) => ({ test, runs }));
save();
for (const { test, runs } of record.flakes) console.log(`  ${runs}x ${test}`);
console.log(`summary: ${summaryPath}`);
console.log(`repeat: ${record.results.length} runs, ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
