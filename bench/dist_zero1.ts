#!/usr/bin/env node
/**
 * ZeRO-1 against unsharded synchronous data parallelism (lib/parallel):
 *
 *   node dist/bench/dist_zero1.js [--rounds 3] [--steps 23] [--batch 8] [--presets tiny,125m] [--out bench/results]
 *
 * - step: the tiny preset, `kiln train --nproc 2` with two 1-thread ranks, with and without
 *   --zero1, same per-rank batch: step and optimizer time (medians over the steps after
 *   warm-up), bytes sent per step, and the optimizer's state and workspace bytes per rank
 *   (from metrics.jsonl). The runs alternate (off, on, off, on, ...) so that a changing machine
 *   load hits both modes alike; the load average is recorded with every run.
 * - memory: for each preset, the optimizer of rank 0 of 2 built over the model's parameters
 *   (unsharded, distributed Newton–Schulz alone, ZeRO-1) and its allocated state and workspace
 *   bytes read back (Optimizer.memory(): what the optimizer allocated, no step is taken).
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { preset } from '../lib/model/config.js';
import { LlamaModel } from '../lib/model/llama.js';
import type { Zero1MemoryRow, Zero1Run, Zero1StepRow, Zero1StepSummary } from '../lib/monitor/results_schema.js';
import { Optimizer, type OptimizerMemory, type OptimizerOptions, llamaParamGroups } from '../lib/optim/optimizer.js';
import { distBenchData, median, runProcess, writeResults } from './harness.js';

const here = dirname(fileURLToPath(import.meta.url));
const cli = join(here, '..', 'lib', 'cli', 'cli.js');

async function stepTimes(data: string, rounds: number, steps: number, batch: number): Promise<Zero1StepRow[]> {
  const common = ['train', '--preset', 'tiny', '--data', data, '--steps', String(steps), '--batch', String(batch), '--seq', '128', '--eval-every', '0', '--log-every', '1000', '--nproc', '2'];
  const runs: Zero1Run[] = [];
  for (let round = 0; round < rounds; round++) {
    for (const zero1 of [false, true]) {
      const out = mkdtempSync(join(tmpdir(), `kiln-zero1-${zero1 ? 'on' : 'off'}-`));
      const loadAverageBefore = loadavg()[0];
      const r = await runProcess([process.execPath, cli, ...common, '--out', out, ...(zero1 ? ['--zero1'] : [])], { KILN_NUM_THREADS: '1' });
      if (r.code !== 0) throw new Error(`kiln train --nproc 2${zero1 ? ' --zero1' : ''} failed:\n${r.out}`);
      const lines = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).slice(3);
      const m = (key: string) => median(lines.map((l) => l[key] as number));
      const run: Zero1Run = {
        zero1: zero1 ? 1 : 0, round, stepMs: m('stepMs'), optimizerMs: m('optimizerMs'), tokensPerSecond: m('tokensPerSecond'), commMs: m('commMs'),
        commExposedMs: m('commExposedMs'), commBytes: m('commBytes'), optimizerStateBytes: m('optimizerStateBytes'), optimizerWorkspaceBytes: m('optimizerWorkspaceBytes'),
        loadAverageBefore, loadAverageAfter: loadavg()[0],
      };
      console.log(`round ${round} ${zero1 ? 'zero1' : 'plain'}: step ${run.stepMs.toFixed(0)} ms (optimizer ${run.optimizerMs.toFixed(1)} ms), ${(run.commBytes / 1e6).toFixed(2)} MB sent, ` +
        `state ${(run.optimizerStateBytes / 2 ** 20).toFixed(2)} MiB, workspace ${(run.optimizerWorkspaceBytes / 2 ** 20).toFixed(2)} MiB per rank; load ${loadAverageBefore.toFixed(1)} -> ${run.loadAverageAfter.toFixed(1)}`);
      runs.push(run);
    }
  }
  const summary = (zero1: number): Zero1StepSummary => {
    const rs = runs.filter((r) => r.zero1 === zero1);
    const keys = ['stepMs', 'optimizerMs', 'tokensPerSecond', 'commBytes', 'commExposedMs', 'optimizerStateBytes', 'optimizerWorkspaceBytes'] as const;
    return Object.fromEntries(keys.map((k) => [k, median(rs.map((r) => r[k]))])) as Record<(typeof keys)[number], number>;
  };
  const plain = summary(0);
  const zero1 = summary(1);
  console.log(`tiny, 2 one-thread ranks, batch ${batch}/rank, medians of ${rounds} runs: step ${plain.stepMs.toFixed(0)} -> ${zero1.stepMs.toFixed(0)} ms, optimizer ${plain.optimizerMs.toFixed(1)} -> ${zero1.optimizerMs.toFixed(1)} ms, ` +
    `state ${plain.optimizerStateBytes} -> ${zero1.optimizerStateBytes} bytes per rank`);
  return [{ benchmark: 'zero1-step-tiny', batchPerRank: batch, seqLen: 128, steps, rounds, plain, zero1, runs }];
}

function memory(presets: string[]): Zero1MemoryRow[] {
  const out: Zero1MemoryRow[] = [];
  for (const name of presets) {
    const config = preset(name);
    const model = new LlamaModel(config, { device: 'cpu', seed: 0 });
    const sharding = { rank: 0, worldSize: 2, allGather: () => undefined, wait: () => {} };
    const bytes = {} as Record<'plain' | 'distributedMuon' | 'zero1', OptimizerMemory>;
    for (const [mode, options] of [['plain', {}], ['distributedMuon', { newtonSchulzSharding: sharding }], ['zero1', { newtonSchulzSharding: sharding, zero1: true }]] as [keyof typeof bytes, OptimizerOptions][]) {
      const opt = new Optimizer(llamaParamGroups(model.parameters), options);
      bytes[mode] = opt.memory();
      opt.dispose();
    }
    const row: Zero1MemoryRow = {
      benchmark: 'zero1-memory', preset: name, worldSize: 2, rank: 0, parameters: model.parameters.reduce((n, p) => n + p.value.numel, 0),
      plain: bytes.plain, distributedMuon: bytes.distributedMuon, zero1: bytes.zero1, stateRatio: bytes.zero1.stateBytes / bytes.plain.stateBytes,
    };
    console.log(`${name} (${row.parameters} parameters), rank 0 of 2: ${JSON.stringify({ plain: row.plain, distributedMuon: row.distributedMuon, zero1: row.zero1 })}; state ratio ${row.stateRatio.toFixed(3)}`);
    model.dispose();
    out.push(row);
  }
  return out;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      only: { type: 'string', default: 'memory,step' }, out: { type: 'string', default: 'bench/results' }, data: { type: 'string' }, rounds: { type: 'string', default: '3' },
      steps: { type: 'string', default: '23' }, batch: { type: 'string', default: '8' }, presets: { type: 'string', default: 'tiny,125m' },
    },
  });
  const only = values.only!.split(',');
  const results: (Zero1MemoryRow | Zero1StepRow)[] = [];
  if (only.includes('memory')) results.push(...memory(values.presets!.split(',')));
  if (only.includes('step')) {
    const data = await distBenchData(values.data);
    results.push(...(await stepTimes(data, Number(values.rounds), Number(values.steps), Number(values.batch))));
  }
  console.log(`wrote ${writeResults(values.out!, 'dist-zero1', results)}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
