/**
 * One fuzz batch in its own process (so a crash fails the batch instead of killing the runner):
 *   node dist/test/fuzz/child.js <seed> <runs> [binding|api|all] [name regex]
 * Prints one JSON line {"runs", "findings"} and exits 0; a crash or hang shows as a missing line.
 */
import { runBatch } from './harness.js';

const [seed, runs, kind = 'all', filter] = process.argv.slice(2);
const result = await runBatch({
  seed: Number(seed),
  runs: Number(runs),
  kind: kind === 'all' ? undefined : (kind as 'binding' | 'api'),
  filter: filter ? new RegExp(filter) : undefined,
});
process.stdout.write(`\nFUZZ-RESULT ${JSON.stringify(result, (_k, v) => (typeof v === 'bigint' ? `${v}n` : v))}\n`);
process.exit(0);
