// Runs the uvu suites compiled to dist/test and ends with one line "N passed, N failed, N skipped".
// Usage: node scripts/test.mjs [pattern]   (pattern: a regex on test file paths)
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const uvu = join(root, 'node_modules', 'uvu', 'bin.js');
const testDir = join(root, 'dist', 'test');
if (!existsSync(testDir)) {
  console.error('dist/test is missing: run `npx tsc -p tsconfig.json` first (npm test does)');
  process.exit(1);
}
const pattern = process.argv[2] ?? '\\.test\\.js$';

const child = spawn(process.execPath, [uvu, testDir, pattern], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] });
let output = '';
child.stdout.on('data', (chunk) => {
  process.stdout.write(chunk);
  output += chunk.toString();
});
child.on('close', (code) => {
  // uvu's summary: "Total: N", "Passed: N", "Skipped: N" (with ANSI colors off or on)
  const plain = output.replace(/\u001b\[[0-9;]*m/g, '');
  const read = (label) => {
    const m = new RegExp(`${label}:\\s+(\\d+)`).exec(plain);
    return m ? Number(m[1]) : NaN;
  };
  const total = read('Total');
  const passed = read('Passed');
  const skipped = read('Skipped');
  if (Number.isNaN(total) || Number.isNaN(passed)) {
    console.log('\n0 passed, 1 failed (the test runner printed no summary: it crashed)');
    process.exit(1);
  }
  const failed = total - passed; // uvu counts skipped tests outside Total
  console.log(`\n${passed} passed, ${failed} failed, ${Number.isNaN(skipped) ? 0 : skipped} skipped`);
  process.exit(failed > 0 || code !== 0 ? 1 : 0);
});
