// Long fuzz runs: npm run fuzz -- --runs 50000 --seed 1 [--batch 500] [--kind binding|api|all] [--jobs 2] [--filter regex]
// Splits the runs into seeded batches (seed, seed+1, ...), each in a child process with a watchdog,
// and prints every crash, hang and finding with the seed that reproduces it. Needs `npx tsc` first.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const spawnModule = join(root, 'dist', 'test', 'fuzz', 'spawn.js');
if (!existsSync(spawnModule)) {
  console.error('dist/test/fuzz is missing: run `npx tsc -p tsconfig.json` first');
  process.exit(1);
}
const { runBatchInChild } = await import(spawnModule);

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
};
const runs = Number(option('runs', '5000'));
const seed = Number(option('seed', String(Date.now() % 1e9)));
const batch = Number(option('batch', '500'));
const jobs = Number(option('jobs', '2'));
const kind = option('kind', 'all');
const filter = option('filter', undefined);
if (![runs, seed, batch, jobs].every((n) => Number.isSafeInteger(n) && n > 0) || !['binding', 'api', 'all'].includes(kind)) {
  console.error('usage: npm run fuzz -- --runs N --seed S [--batch 500] [--kind binding|api|all] [--jobs 2] [--filter regex]');
  process.exit(2);
}

const seeds = Array.from({ length: Math.ceil(runs / batch) }, (_, i) => seed + i);
const started = Date.now();
let done = 0;
let calls = 0;
const problems = [];
const queue = [...seeds];
async function worker() {
  while (queue.length) {
    const s = queue.shift();
    const n = Math.min(batch, runs - (s - seed) * batch);
    const outcome = await runBatchInChild(s, n, kind, Math.max(120_000, n * 200), filter);
    done++;
    calls += outcome.completedRuns;
    for (const p of outcome.problems) {
      problems.push(p);
      console.log(`PROBLEM ${p}`);
    }
    process.stdout.write(`batch ${done}/${seeds.length} (seed ${s}): ${outcome.completedRuns} calls, ${outcome.problems.length} problems, ${(outcome.ms / 1000).toFixed(1)} s\n`);
  }
}
await Promise.all(Array.from({ length: jobs }, worker));
const seconds = (Date.now() - started) / 1000;
console.log(`\nfuzz: ${calls} calls in ${seeds.length} batches (seeds ${seed}..${seed + seeds.length - 1}, kind ${kind}) in ${seconds.toFixed(0)} s: ${problems.length} problems`);
process.exit(problems.length ? 1 : 0);
