/**
 * Issue 28, item 9: every command takes --help and lists all its flags with their defaults, from
 * the parser's own table (lib/cli/commands.ts), so help and parser cannot drift; `kiln help`
 * lists every command; `kiln --version`; every flag the earlier node:util parser took still parses.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { COMMANDS, type CommandName, helpText, parseCommand } from '../../lib/cli/commands.js';
import { cli, kiln, output } from './fixture.js';

const test = suite('cli: help, version, flags');
const names = Object.keys(COMMANDS) as CommandName[];

function spawned(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

/** The flags (and their defaults) each command's help must show, read from the help text itself. */
function listed(help: string, flag: string): string {
  // the flag's entry runs until the next line that starts a flag
  const start = help.indexOf(`  --${flag} `) >= 0 ? help.indexOf(`  --${flag} `) : help.indexOf(`  --${flag}\n`);
  if (start < 0) return '';
  const rest = help.slice(start + 2);
  const next = rest.slice(1).search(/\n {2}-/);
  return (next < 0 ? rest : rest.slice(0, next + 1)).replace(/\s+/g, ' ');
}

test('every command answers --help (exit 0) with all its flags and their defaults', async () => {
  const results = await Promise.all(names.map((name) => spawned([name, '--help'])));
  for (const [i, name] of names.entries()) {
    const r = results[i];
    assert.is(r.status, 0, `kiln ${name} --help: ${r.stdout}${r.stderr}`);
    assert.ok(r.stdout.startsWith(`usage: kiln ${name} `), `kiln ${name} --help starts with its usage: ${r.stdout.slice(0, 80)}`);
    assert.is(r.stdout, helpText(name), `kiln ${name} --help prints the parser's help`);
    for (const [flag, spec] of Object.entries(COMMANDS[name].flags) as [string, { default?: string; defaultText?: string; hidden?: boolean }][]) {
      if (spec.hidden) continue;
      const entry = listed(r.stdout, flag);
      assert.ok(entry, `kiln ${name} --help lists --${flag}`);
      const shown = spec.default ?? spec.defaultText;
      if (shown !== undefined) assert.ok(entry.includes(`default: ${shown}`.replace(/\s+/g, ' ')), `kiln ${name} --help shows --${flag}'s default ${shown}: ${entry}`);
    }
  }
});

test('kiln train --help lists the flags the old hand-kept help left out, with the defaults', () => {
  const help = helpText('train');
  for (const flag of ['nproc', 'sync', 'zero1', 'log-every', 'dist-timeout', 'stream-fragments']) assert.ok(listed(help, flag), `--${flag}`);
  assert.match(listed(help, 'steps'), /default: 200\)/);
  assert.match(listed(help, 'out'), /default: runs\/<preset>\)/);
});

test('kiln help lists every command; kiln help COMMAND is that command\'s help', async () => {
  const r = kiln(['help']);
  assert.is(r.status, 0, output(r));
  assert.ok(r.stdout.startsWith('usage: kiln <command> [options]'));
  for (const name of names) assert.match(r.stdout, new RegExp(`\\n  ${name} `), `kiln help lists ${name}`);
  const one = kiln(['help', 'serve']);
  assert.is(one.status, 0);
  assert.is(one.stdout, helpText('serve'));
  const none = kiln(['help', 'frobnicate']);
  assert.is(none.status, 2);
  assert.match(none.stderr, /unknown command 'frobnicate'/);
});

test('kiln --version and -v print package.json\'s version', () => {
  const version = (JSON.parse(readFileSync(join(process.cwd(), 'package.json'), 'utf8')) as { version: string }).version;
  for (const flag of ['--version', '-v']) {
    const r = kiln([flag]);
    assert.is(r.status, 0, output(r));
    assert.is(r.stdout.trim(), version);
  }
});

test('an unknown flag or a stray operand is ERR_ARG naming it and pointing at --help', () => {
  const r = kiln(['train', '--stepz', '5']);
  assert.is(r.status, 1);
  assert.match(r.stderr, /kiln: ERR_ARG: unknown option '--stepz'.*`kiln train --help` lists the options/);
  assert.not.match(r.stderr, /\n\s+at /, 'no stack trace');
  const stray = kiln(['export', 'model.gguf']);
  assert.is(stray.status, 1);
  assert.match(stray.stderr, /ERR_ARG: too many arguments/);
});

// Every flag the node:util parseArgs configurations took before the switch to commander
// (lib/cli/*.ts and bench/run.ts at db54f38), so that no command line stops working.
const EARLIER_FLAGS: Record<CommandName, { strings: string[]; booleans: string[] }> = {
  info: { strings: [], booleans: ['json'] },
  selfcheck: { strings: [], booleans: [] },
  start: { strings: ['steps', 'out'], booleans: [] },
  train: {
    strings: ['dashboard', 'dashboard-host', 'dashboard-token', 'preset', 'data', 'steps', 'batch', 'seq', 'device', 'out', 'accumulation', 'muon-lr', 'adamw-lr',
      'eval-every', 'checkpoint-every', 'resume', 'seed', 'log-every', 'grad-clip', 'nproc', 'sync', 'inner-steps', 'outer-lr', 'outer-momentum', 'quant-bits',
      'stream-fragments', 'overlap-steps', 'mix-alpha', 'bucket-mb', 'dist-timeout', 'dist-token', 'dist-bind', 'dist-store-bind', 'baseline-tokens-per-second'],
    booleans: ['recompute', 'bf16-reduce', 'no-distributed-muon', 'zero1'],
  },
  generate: { strings: ['checkpoint', 'prompt', 'tokens', 'temperature', 'top-k', 'top-p', 'seed', 'tokenizer', 'device', 'dtype'], booleans: [] },
  serve: {
    strings: ['dashboard', 'dashboard-host', 'dashboard-token', 'checkpoint', 'host', 'port', 'device', 'model-name', 'api-key', 'kv-cache-mb', 'max-running',
      'max-queued', 'max-batch-tokens', 'drain-seconds'],
    booleans: [],
  },
  dashboard: { strings: ['dashboard', 'dashboard-host', 'dashboard-token', 'host', 'token'], booleans: [] },
  report: { strings: ['out', 'title'], booleans: [] },
  prepare: { strings: ['tokenizer', 'val', 'out', 'seed'], booleans: [] },
  export: { strings: ['format', 'checkpoint', 'out', 'dtype', 'tokenizer'], booleans: [] },
  tune: { strings: ['device', 'preset', 'tokens', 'seq', 'dtype'], booleans: ['recompute'] },
  bench: {
    strings: ['out', 'only', 'preset', 'device', 'batch', 'seq', 'steps', 'warmup', 'checkpoint', 'dtype', 'drivers', 'url', 'model', 'api-key', 'data',
      'prompt-min', 'prompt-max', 'output-tokens', 'requests', 'concurrency', 'rates', 'rate-requests', 'kv-cache-mib', 'peer-threads', 'seed'],
    booleans: ['recompute', 'no-peer', 'no-bandwidth'],
  },
};

test('every flag the earlier parser took parses to the same value, as --flag V and --flag=V', () => {
  for (const name of names) {
    const { strings, booleans } = EARLIER_FLAGS[name];
    for (const flag of strings) {
      for (const args of [[`--${flag}`, '7'], [`--${flag}=7`]]) {
        const parsed = parseCommand(name, args);
        assert.is((parsed?.values as Record<string, unknown>)[flag], '7', `kiln ${name} ${args.join(' ')}`);
      }
    }
    for (const flag of booleans) {
      const values = parseCommand(name, [`--${flag}`])!.values as Record<string, unknown>;
      assert.is(values[flag], true, `kiln ${name} --${flag}`);
      assert.is((parseCommand(name, [])!.values as Record<string, unknown>)[flag], false, `kiln ${name} without --${flag}`);
    }
  }
  // defaults arrive as the strings the commands convert, as before
  const train = parseCommand('train', [])!.values;
  assert.equal([train.steps, train.batch, train['muon-lr'], train.sync, train.out, train.seq], ['200', '16', '0.02', 'sync', undefined, undefined]);
});

test.run();
