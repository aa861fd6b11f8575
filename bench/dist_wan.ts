#!/usr/bin/env node
/**
 * WAN harness for data-parallel training (needs root, iproute2 and tc):
 *
 *   node dist/bench/dist_wan.js [--rate 100mbit] [--steps 100] [--batch 8] [--inner-steps 50] [--bits 4] [--stream-fragments 1] [--out bench/results]
 *
 * Two network namespaces (kiln_wan_a, kiln_wan_b) joined by a veth pair (10.231.0.1 and
 * 10.231.0.2, addresses that exist only inside them), each end rate-limited with a tbf qdisc
 * to --rate; added latency needs netem, which is probed and reported (absent on our machines).
 * One rank runs in each namespace (rank 0 hosts the store on 10.231.0.1, with a token as any
 * non-loopback address requires). Runs, all on the tiny preset with one thread per rank:
 *   local   one rank alone (the tokens/s reference)
 *   sync    synchronous data parallelism over the link
 *   diloco  DiLoCo (H = --inner-steps, --bits-bit pseudo-gradients with error feedback)
 * and reports tokens/s, exposed communication, bytes per step and per token, and the final
 * validation loss of sync and DiLoCo at equal tokens. The namespaces are removed at the end.
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { bundledCorpus, prepareDocuments } from '../lib/data/shards.js';
import { byteTokenizer } from '../lib/data/tokenizer.js';
import { median, runProcess, writeResults } from './harness.js';

const here = dirname(fileURLToPath(import.meta.url));
const cli = join(here, '..', 'lib', 'cli.js');
const NS = ['kiln_wan_a', 'kiln_wan_b'];
const ADDR = ['10.231.0.1', '10.231.0.2'];

function sh(args: string[], quiet = false): boolean {
  try {
    execFileSync(args[0], args.slice(1), { stdio: quiet ? 'ignore' : 'pipe' });
    return true;
  } catch (e) {
    if (!quiet) throw new Error(`${args.join(' ')}: ${((e as { stderr?: Buffer }).stderr ?? '').toString().trim()}`);
    return false;
  }
}

function teardown(): void {
  for (const ns of NS) sh(['ip', 'netns', 'del', ns], true);
}

function setup(rate: string): { netem: boolean } {
  teardown();
  for (const ns of NS) sh(['ip', 'netns', 'add', ns]);
  sh(['ip', 'link', 'add', 'kiln_wan_va', 'type', 'veth', 'peer', 'name', 'kiln_wan_vb']);
  const dev = ['kiln_wan_va', 'kiln_wan_vb'];
  for (let i = 0; i < 2; i++) {
    sh(['ip', 'link', 'set', dev[i], 'netns', NS[i]]);
    sh(['ip', '-n', NS[i], 'addr', 'add', `${ADDR[i]}/24`, 'dev', dev[i]]);
    sh(['ip', '-n', NS[i], 'link', 'set', dev[i], 'up']);
    sh(['ip', '-n', NS[i], 'link', 'set', 'lo', 'up']);
    // egress shaping on both ends: the link carries `rate` each way
    sh(['ip', 'netns', 'exec', NS[i], 'tc', 'qdisc', 'add', 'dev', dev[i], 'root', 'tbf', 'rate', rate, 'burst', '256kb', 'latency', '100ms']);
  }
  // latency: netem, when the kernel has it (a probe on a throwaway qdisc of the lo device)
  const netem = sh(['ip', 'netns', 'exec', NS[0], 'tc', 'qdisc', 'add', 'dev', 'lo', 'root', 'netem', 'delay', '20ms'], true);
  if (netem) sh(['ip', 'netns', 'exec', NS[0], 'tc', 'qdisc', 'del', 'dev', 'lo', 'root'], true);
  return { netem };
}

function summarize(out: string, name: string, warmup: number): Record<string, number | string> {
  const lines = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const steady = lines.slice(warmup);
  const sum = (k: string) => lines.reduce((a, m) => a + (m[k] ?? 0), 0);
  const tokens = sum('tokens');
  const seconds = sum('stepMs') / 1e3;
  const last = lines[lines.length - 1];
  return {
    name, steps: lines.length, tokens, tokensPerSecond: tokens / seconds, medianStepMs: median(steady.map((m) => m.stepMs)),
    commMsTotal: sum('commMs'), commExposedMsTotal: sum('commExposedMs'), commExposedPerStepMs: sum('commExposedMs') / lines.length,
    commBytesTotal: sum('commBytes'), commBytesPerStep: sum('commBytes') / lines.length, commBytesPerToken: sum('commBytes') / tokens,
    valLoss: last.valLoss, loss: last.loss,
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      rate: { type: 'string', default: '100mbit' }, steps: { type: 'string', default: '100' }, batch: { type: 'string', default: '8' },
      'inner-steps': { type: 'string', default: '50' }, bits: { type: 'string', default: '4' }, 'stream-fragments': { type: 'string', default: '1' }, out: { type: 'string', default: 'bench/results' },
      data: { type: 'string' }, only: { type: 'string', default: 'local,sync,diloco' },
    },
  });
  const data = values.data ?? join(tmpdir(), 'kiln-bench-dist-data');
  if (!existsSync(join(data, 'train.bin'))) prepareDocuments(await bundledCorpus(), data, byteTokenizer);
  const steps = values.steps!;
  const common = ['train', '--preset', 'tiny', '--data', data, '--steps', steps, '--batch', values.batch!, '--seq', '128', '--eval-every', steps, '--log-every', '1000', '--dist-timeout', '300'];
  const { netem } = setup(values.rate!);
  const results: Record<string, unknown>[] = [];
  const note = `link: veth between two network namespaces, tbf ${values.rate} each way; added latency: ${netem ? 'netem available (not used)' : 'none (netem is not in this kernel)'}`;
  console.log(note);
  try {
    const only = values.only!.split(',');
    if (only.includes('local')) {
      const out = mkdtempSync(join(tmpdir(), 'kiln-wan-local-'));
      const load = loadavg()[0];
      const r = await runProcess([process.execPath, cli, ...common, '--out', out], { KILN_NUM_THREADS: '1' });
      if (r.code !== 0) throw new Error(r.out);
      results.push({ ...summarize(out, 'local (1 rank)', 3), loadAverage: load });
    }
    const token = randomBytes(16).toString('hex');
    for (const mode of ['sync', 'diloco'].filter((m) => only.includes(m))) {
      const out = mkdtempSync(join(tmpdir(), `kiln-wan-${mode}-`));
      const extra = mode === 'diloco' ? ['--sync', 'diloco', '--inner-steps', values['inner-steps']!, '--quant-bits', values.bits!, '--stream-fragments', values['stream-fragments']!] : [];
      const load = loadavg()[0];
      const ranks = await Promise.all([0, 1].map((rank) =>
        runProcess(['ip', 'netns', 'exec', NS[rank], process.execPath, cli, ...common, '--out', out, ...extra, '--dist-bind', ADDR[rank], '--dist-store-bind', ADDR[0], '--dist-token', token], {
          MASTER_ADDR: ADDR[0], MASTER_PORT: '29650', RANK: String(rank), LOCAL_RANK: '0', WORLD_SIZE: '2', KILN_NUM_THREADS: '1',
        })));
      ranks.forEach((r, i) => {
        if (r.code !== 0) throw new Error(`${mode} rank ${i} failed:\n${r.out}`);
      });
      results.push({ ...summarize(out, `${mode} over ${values.rate}`, 3), loadAverage: load, ...(mode === 'diloco' ? { innerSteps: Number(values['inner-steps']), quantBits: Number(values.bits), streamFragments: Number(values['stream-fragments']) } : {}) });
    }
  } finally {
    teardown();
  }
  for (const r of results) console.log(JSON.stringify(r));
  const local = results.find((r) => String(r.name).startsWith('local'));
  const sync = results.find((r) => String(r.name).startsWith('sync'));
  const diloco = results.find((r) => String(r.name).startsWith('diloco'));
  const verdict: Record<string, unknown> = { note, rate: values.rate };
  if (local && diloco) verdict.dilocoPerRankTokensPerSecondOfLocal = (diloco.tokensPerSecond as number) / 2 / (local.tokensPerSecond as number);
  if (sync && diloco) verdict.dilocoValLossVsSync = (diloco.valLoss as number) / (sync.valLoss as number) - 1;
  console.log(JSON.stringify(verdict));
  console.log(`wrote ${writeResults(values.out!, 'dist-wan', [...results, verdict])}`);
}

main().catch((e) => {
  teardown();
  console.error(e);
  process.exit(1);
});
