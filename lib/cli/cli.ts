#!/usr/bin/env node
/** The `kiln` command line. */
import { existsSync } from 'node:fs';
import { KilnError } from '../errors.js';
import { formatInfo, info } from '../info.js';
import { selfCheck } from './selfcheck.js';
import { generate, start, train } from './train.js';
import { parseDevice } from '../device.js';
import { parseDType } from '../dtype.js';
import { modelMatmulCalls, tuneMatmul } from '../train/matmul_tuner.js';
import { preset } from '../model/config.js';
import { bundledCorpus, prepareDocuments, prepareFiles } from '../io/shards.js';
import { tokenizerByName } from '../data/tokenizer.js';
import { exportLlamaGguf } from '../io/gguf_llama.js';
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
    case 'prepare': {
      const parsed = parseCommand('prepare', rest);
      if (!parsed) return 0;
      const { values, positionals } = parsed;
      const valFraction = Number(values.val);
      if (!(valFraction > 0 && valFraction < 1)) throw new KilnError('ERR_ARG', `--val takes the share of documents held out for validation, a number in (0, 1) such as 0.01, got ${values.val}`);
      const seed = Number(values.seed);
      if (!Number.isSafeInteger(seed)) throw new KilnError('ERR_ARG', `--seed takes an integer, got ${values.seed}`);
      const tokenizer = await tokenizerByName(values.tokenizer);
      const options = { valFraction, seed, strict: values.strict };
      const started = performance.now();
      const result = positionals.length
        ? prepareFiles(positionals, values.out, tokenizer, options)
        : prepareDocuments(await bundledCorpus(), values.out, tokenizer, options);
      for (const bad of result.invalidUtf8 ?? []) {
        console.error(`warning: ${bad.file} is not valid UTF-8: ${bad.sequences} invalid sequence${bad.sequences === 1 ? '' : 's'} on ${bad.lines} line${bad.lines === 1 ? '' : 's'} (the first: line ${bad.firstLine}) became U+FFFD; --strict refuses such files`);
      }
      const skipped = result.skipped ?? [];
      if (skipped.length) {
        console.error(`note: skipped ${skipped.length} file${skipped.length === 1 ? '' : 's'} that ${skipped.length === 1 ? 'is' : 'are'} not .txt, .md or .jsonl: ${skipped.slice(0, 5).join(', ')}${skipped.length > 5 ? ', ...' : ''}`);
      }
      for (const shard of [result.train, result.val]) {
        console.log(`${shard.path}: ${shard.tokens.toLocaleString()} ${tokenizer.name} tokens (${shard.bytesPerToken} bytes each)`);
      }
      console.log(`prepared in ${((performance.now() - started) / 1000).toFixed(1)} s`);
      return 0;
    }
    case 'export': {
      const parsed = parseCommand('export', rest);
      if (!parsed) return 0;
      const { values } = parsed;
      if (values.format !== 'gguf') throw new KilnError('ERR_ARG', `--format ${values.format}: the formats kiln exports are: gguf`);
      if (!values.checkpoint || !values.out) throw new KilnError('ERR_ARG', 'export needs --checkpoint DIR and --out FILE');
      const started = performance.now();
      const result = await exportLlamaGguf(values.checkpoint, values.out, { dtype: values.dtype as 'f32', tokenizer: values.tokenizer });
      console.log(`${result.path}: ${result.tensors} ${result.dtype} tensors, ${result.tokenizer} vocabulary of ${result.vocabSize}, ${(result.bytes / 2 ** 20).toFixed(1)} MiB in ${((performance.now() - started) / 1000).toFixed(1)} s`);
      return 0;
    }
    case 'tune': {
      const parsed = parseCommand('tune', rest);
      if (!parsed) return 0;
      const { values } = parsed;
      const device = parseDevice(values.device);
      if (device === 'cpu') throw new KilnError('ERR_DEVICE', 'kiln tune measures CUDA GEMM candidates: pass --device cuda:N');
      const config = preset(values.preset!);
      const seq = values.seq === undefined ? config.context : Number(values.seq);
      const tokens = values.tokens!.split(',').map((t) => Number(t));
      if (!Number.isInteger(seq) || seq < 1 || seq > config.context) throw new KilnError('ERR_ARG', `--seq takes an integer in [1, ${config.context}]`);
      if (tokens.some((t) => !Number.isInteger(t) || t <= 0 || t % Math.min(seq, t) !== 0)) {
        throw new KilnError('ERR_ARG', `--tokens takes positive integers, each a multiple of --seq (${seq}) or below it, e.g. 8192,16384`);
      }
      const computeDType = parseDType(values.dtype, '--dtype');
      // the matmuls one training step issues at each token count, recorded from the model itself
      const calls = tokens.flatMap((t) => modelMatmulCalls(config, { device, batch: Math.max(1, t / seq), seq: Math.min(seq, t), computeDType, recompute: values.recompute }));
      const { results, file } = await tuneMatmul(calls);
      for (const r of results) {
        const gain = r.defaultMs / r.winnerMs;
        console.log(`${r.name.padEnd(48)} ${r.winner} ${r.winnerMs.toFixed(3)} ms (heuristic ${r.defaultName}: ${gain >= 1.005 ? `${((gain - 1) * 100).toFixed(1)}% slower` : 'same'})`);
      }
      console.log(`saved ${results.length} winners to ${file}`);
      return 0;
    }
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
