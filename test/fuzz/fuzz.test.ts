/**
 * The hostile-input fuzz suite, bounded for `npm test`: seeded batches over every
 * binding entry point and every public function, each batch in a child process with a watchdog
 * so a crash or hang fails the test instead of killing the runner. Long runs:
 * `npm run fuzz -- --runs 50000 --seed 1`.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as kiln from '../../lib/index.js';
import { apiTargets, bindingTargets } from './harness.js';
import { runBatchInChild } from './spawn.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

test('every binding entry point in binding.ts has a fuzz target', () => {
  const contract = readFileSync(join(root, 'binding.ts'), 'utf8');
  const section = (name: string) => {
    const start = contract.indexOf(`export interface ${name} {`);
    const end = contract.indexOf('\n}', start);
    return contract.slice(start, end);
  };
  const methods = (text: string) => [...text.matchAll(/^\s+([a-zA-Z]+)\(/gm)].map((m) => m[1]);
  const declared = [...methods(section('KilnBinding')), ...methods(section('NativeTensor')).map((m) => `NativeTensor.${m}`)];
  assert.ok(declared.length > 40, `parsed ${declared.length} entry points from binding.ts`);
  const covered = new Set(bindingTargets.map((t) => t.name));
  const missing = declared.filter((name) => !covered.has(name));
  assert.equal(missing, [], `binding entry points without a fuzz target: ${missing.join(', ')}`);
});

test('every public function and class exported from kiln has a fuzz target', () => {
  const covered = new Set(apiTargets.map((t) => t.name.replace(/\(.*\)$/, '').split('.')[0]));
  const opsCovered = new Set(apiTargets.filter((t) => t.name.startsWith('ops.')).map((t) => t.name.slice(4)));
  const missing: string[] = [];
  for (const [name, value] of Object.entries(kiln)) {
    if (name === 'ops') {
      for (const op of Object.keys(kiln.ops)) if (!opsCovered.has(op)) missing.push(`ops.${op}`);
    } else if (typeof value === 'function' && name !== 'KilnError' && !covered.has(name)) {
      missing.push(name);
    }
  }
  assert.equal(missing, [], `public functions without a fuzz target: ${missing.join(', ')}`);
});

// Two binding batches and two public-API batches, run two at a time (about 30 s in all on a
// shared 2-core machine). The seeds are fixed so a failure reproduces: the message carries the
// seed and fast-check's minimal case.
const batches: [number, 'binding' | 'api'][] = [
  [17001, 'binding'],
  [17002, 'api'],
  [17003, 'binding'],
  [17004, 'api'],
];
const RUNS = Number(process.env.KILN_FUZZ_RUNS ?? 500);

test(`fuzz: ${batches.length} batches of ${RUNS} hostile calls, each in a child process with a watchdog`, async () => {
  const outcomes = [];
  for (let i = 0; i < batches.length; i += 2) {
    outcomes.push(...(await Promise.all(batches.slice(i, i + 2).map(([seed, kind]) => runBatchInChild(seed, RUNS, kind, 60_000)))));
  }
  const problems = outcomes.flatMap((o) => o.problems);
  assert.equal(problems, [], problems.join('\n'));
  for (const o of outcomes) assert.ok(o.completedRuns >= RUNS, `batch ${o.seed} completed ${o.completedRuns} of ${RUNS} runs`);
});

test.run();
