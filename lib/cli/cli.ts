#!/usr/bin/env node
/** The `kiln` command line. */
import { existsSync } from 'node:fs';
import { KilnError } from '../errors.js';
import { formatInfo, info } from '../info.js';
import { selfCheck } from './selfcheck.js';
import { generate, start, train } from './train.js';
import { exportCommand } from './export.js';
import { prepareCommand } from './prepare.js';
import { tuneCommand } from './tune.js';
import { dashboardCommand, reportCommand } from './monitor.js';
import { COMMANDS, type CommandName, helpText, kilnVersion, parseCommand } from './commands.js';

async function main(argv: string[]): Promise<number> {
  const [command = 'help', ...rest] = argv;
  switch (command) {
    case 'info': {
      const parsed = parseCommand('info', rest);
      if (!parsed) return 0;
      const { values } = parsed;
      console.log(values.json ? JSON.stringify(info(), null, 2) : formatInfo());
      return 0;
    }
    case 'start':
      return start(rest);
    case 'train':
      return train(rest);
    case 'generate':
      return generate(rest);
    case 'serve': {
      const { serveCommand } = await import('./serve.js');
      return serveCommand(rest);
    }
    case 'dashboard':
      return dashboardCommand(rest);
    case 'report':
      return reportCommand(rest);
    case 'selfcheck': {
      if (!parseCommand('selfcheck', rest)) return 0;
      const results = await selfCheck();
      for (const r of results) console.log(`${r.ok ? 'ok  ' : 'FAIL'} ${r.device}: ${r.detail} (${r.milliseconds.toFixed(0)} ms)`);
      return results.every((r) => r.ok) ? 0 : 1;
    }
    case 'prepare':
      return prepareCommand(rest);
    case 'export':
      return exportCommand(rest);
    case 'tune':
      return tuneCommand(rest);
    case 'bench': {
      // the flags are checked (and --help answered) here too, where bench/ is missing
      if (!parseCommand('bench', rest)) return 0;
      // the benchmarks live in the repository (bench/, with the PyTorch/numpy peers), not in the npm package
      const runner = new URL('../../bench/run.js', import.meta.url);
      if (!existsSync(runner)) throw new KilnError('ERR_ARG', 'kiln bench runs from a kiln repository checkout (bench/ is not part of the npm package)');
      const { runBench } = (await import(runner.href)) as { runBench: (args: string[]) => Promise<number> };
      return runBench(rest);
    }
    case 'help':
    case '--help':
    case '-h': {
      const [name] = rest;
      if (name !== undefined && !Object.hasOwn(COMMANDS, name)) {
        console.error(`kiln: unknown command '${name}'\n\n${helpText()}`);
        return 2;
      }
      process.stdout.write(helpText(name as CommandName | undefined));
      return 0;
    }
    case '--version':
    case '-v':
      console.log(kilnVersion());
      return 0;
    default:
      console.error(`kiln: unknown command '${command}'\n\n${helpText()}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    if (error instanceof KilnError) {
      console.error(`kiln: ${error.code}: ${error.message}`);
    } else {
      console.error(error);
    }
    process.exitCode = 1;
  },
);
