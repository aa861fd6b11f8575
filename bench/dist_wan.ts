#!/usr/bin/env node
/**
 * WAN harness for data-parallel training (needs root and iproute2):
 *
 *   node dist/bench/dist_wan.js [--rate 100mbit] [--delay-ms 0] [--queue-ms 100] [--steps 100] [--batch 8]
 *                               [--inner-steps 50] [--bits 4] [--outer-lr 0.7] [--outer-momentum 0.9] [--stream-fragments 1]
 *                               [--only local,sync,diloco] [--loopback] [--warm-start K] [--no-pin] [--out bench/results]
 *
 * Two network namespaces (kiln_wan_a, kiln_wan_b) joined by an emulated link: a relay
 * (bench/peers/wan_link.cc, compiled here with g++) holds one TUN device in each and moves
 * every packet across at --rate with --delay-ms of one-way latency and a --queue-ms sender
 * buffer (tail drop). Our kernels have tc's tbf but not netem (nor fq, nor prio), so the
 * latency cannot come from a qdisc; the relay serializes each direction at the line rate and
 * delays it, which is what a link does. One rank runs in each namespace (rank 0 hosts the store
 * on 10.231.0.1, with a token as any non-loopback address requires). Runs, all on the tiny
 * preset with one thread per rank:
 *   local   one rank alone (the tokens/s reference)
 *   sync    synchronous data parallelism over the link
 *   diloco  DiLoCo (H = --inner-steps, --bits-bit pseudo-gradients with error feedback)
 * and reports tokens/s, exposed communication, bytes per step and per token, the relay's
 * packet counters, and the final validation loss of sync and DiLoCo at equal tokens. The
 * namespaces and the relay are removed at the end.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { WanRelayCountersRow, WanRunRow, WanVerdictRow } from '../lib/monitor/results_schema.js';
import { freePort } from '../lib/parallel/launcher.js';
import { distBenchData, median, runProcess, writeResults } from './harness.js';
import { DIST_TARGETS } from './targets.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const cli = join(here, '..', 'lib', 'cli', 'cli.js');
const NS = ['kiln_wan_a', 'kiln_wan_b'];
const ADDR = ['10.231.0.1', '10.231.0.2'];
const IFNAME = 'kiln_wan0';

function sh(args: string[], quiet = false): boolean {
  try {
    execFileSync(args[0], args.slice(1), { stdio: quiet ? 'ignore' : 'pipe' });
    return true;
  } catch (e) {
    if (!quiet) throw new Error(`${args.join(' ')}: ${((e as { stderr?: Buffer }).stderr ?? '').toString().trim()}`);
    return false;
  }
}

/** '100mbit', '1gbit', '500kbit' or a number of bits per second. */
export function parseRate(rate: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(k|m|g)?(?:bit)?$/i.exec(rate.trim());
  if (!m) throw new Error(`--rate: expected e.g. 100mbit or 1gbit, got '${rate}'`);
  const unit = { k: 1e3, m: 1e6, g: 1e9 }[(m[2] ?? '').toLowerCase() as 'k' | 'm' | 'g'] ?? 1;
  return Number(m[1]) * unit;
}

let relay: ChildProcess | undefined;
let relayCounters = '';

function teardown(): void {
  relay?.stdin?.end(); // the relay prints its counters and exits; its TUN devices go with it
  for (const ns of NS) sh(['ip', 'netns', 'del', ns], true);
}

async function setup(rate: string, delayMs: number, queueMs: number): Promise<void> {
  teardown();
  const exe = join(mkdtempSync(join(tmpdir(), 'kiln-wan-link-')), 'wan_link');
  execFileSync('g++', ['-O2', '-std=c++17', join(root, 'bench', 'peers', 'wan_link.cc'), '-o', exe], { stdio: 'pipe' });
  for (const ns of NS) {
    sh(['ip', 'netns', 'add', ns]);
    sh(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
  }
  const child = spawn(exe, [NS[0], NS[1], IFNAME, String(parseRate(rate)), String(Math.round(delayMs * 1000)), String(Math.round(queueMs * 1000))], { stdio: ['pipe', 'pipe', 'pipe'] });
  relay = child;
  let out = '';
  let err = '';
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      if (out.startsWith('ready\n')) resolve();
    });
    child.on('exit', (code) => reject(new Error(`the link relay exited (${code}): ${err.trim()}`)));
  });
  child.stdout!.on('data', () => (relayCounters = out.slice('ready\n'.length).trim()));
  for (let i = 0; i < 2; i++) {
    sh(['ip', '-n', NS[i], 'addr', 'add', `${ADDR[i]}/24`, 'dev', IFNAME]);
    sh(['ip', '-n', NS[i], 'link', 'set', IFNAME, 'up']);
  }
}

async function stopRelay(): Promise<WanRelayCountersRow['counters'] | undefined> {
  const child = relay;
  if (!child) return undefined;
  const exited = new Promise((resolve) => child.on('exit', resolve));
  child.stdin!.end();
  await exited;
  relay = undefined;
  try {
    return JSON.parse(relayCounters);
  } catch {
    return relayCounters || undefined;
  }
}

function summarize(out: string, name: string, warmup: number): Omit<WanRunRow, 'loadAverage'> {
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
      rate: { type: 'string', default: '100mbit' }, 'delay-ms': { type: 'string', default: '0' }, 'queue-ms': { type: 'string', default: '100' }, steps: { type: 'string', default: '100' }, batch: { type: 'string', default: '8' },
      'inner-steps': { type: 'string', default: '50' }, bits: { type: 'string', default: '4' }, 'stream-fragments': { type: 'string', default: '1' }, out: { type: 'string', default: 'bench/results' },
      data: { type: 'string' }, only: { type: 'string', default: 'local,sync,diloco' },
      'warm-start': { type: 'string', default: '0' }, 'no-pin': { type: 'boolean', default: false }, 'outer-lr': { type: 'string' }, 'outer-momentum': { type: 'string' }, loopback: { type: 'boolean', default: false },
    },
  });
  // each 1-thread rank on a core of its own (the lone rank on core 0): unpinned, the scheduler
  // moved the processes between our two cores and the same run's median step varied by 25%
  const cores = cpus().length;
  const pinned = !values['no-pin'] && cores >= 2 && sh(['taskset', '-c', '0', 'true'], true);
  const pin = (rank: number): string[] => (pinned ? ['taskset', '-c', String(rank % cores)] : []);
  const data = await distBenchData(values.data);
  const steps = values.steps!;
  const common = ['train', '--preset', 'tiny', '--data', data, '--steps', steps, '--batch', values.batch!, '--seq', '128', '--eval-every', steps, '--log-every', '1000', '--dist-timeout', '300'];
  const delayMs = Number(values['delay-ms']);
  const queueMs = Number(values['queue-ms']);
  if (!(delayMs >= 0) || !(queueMs > 0)) throw new Error('--delay-ms must be >= 0 and --queue-ms > 0');
  // --loopback: the same runs over 127.0.0.1 with no link (what is trained does not depend on the link: for loss comparisons of long runs)
  const loopback = values.loopback!;
  if (!loopback) await setup(values.rate!, delayMs, queueMs);
  const results: (WanRunRow | WanRelayCountersRow)[] = [];
  const linkName = loopback ? 'loopback' : values.rate!;
  const note = loopback ? 'link: loopback (127.0.0.1), no emulated link: the runs measure what is trained, not the network' : `link: emulated by bench/peers/wan_link.cc between TUN devices in two network namespaces: ${values.rate} each way, ${delayMs} ms one-way delay (RTT ${2 * delayMs} ms), ${queueMs} ms sender buffer with tail drop (tc has no netem on our kernels)`;
  console.log(note);
  try {
    const only = values.only!.split(',');
    if (only.includes('local')) {
      // pinned: one lone rank on each core the ranks use (our VM's second core ran the same
      // step about 25% slower than the first, so one core's figure alone would flatter or wrong the pair)
      for (const core of pinned ? [0, 1] : [undefined]) {
        const out = mkdtempSync(join(tmpdir(), 'kiln-wan-local-'));
        const load = loadavg()[0];
        const r = await runProcess([...(core === undefined ? [] : pin(core)), process.execPath, cli, ...common, '--out', out], { KILN_NUM_THREADS: '1' });
        if (r.code !== 0) throw new Error(r.out);
        results.push({ ...summarize(out, core === undefined ? 'local (1 rank)' : `local (1 rank, core ${core})`, 3), loadAverage: load, ...(core === undefined ? {} : { core }) });
      }
    }
    const token = randomBytes(16).toString('hex');
    // --warm-start K (the DiLoCo paper's protocol: DiLoCo from a model trained synchronously):
    // the sync run checkpoints at step K and DiLoCo resumes from that checkpoint, so both end at
    // step --steps with the same tokens and the same schedule, sharing the first K steps
    const warm = Number(values['warm-start']);
    if (!Number.isSafeInteger(warm) || warm < 0 || warm >= Number(steps)) throw new Error('--warm-start must be an integer in [0, --steps)');
    if (warm > 0 && !(only.includes('sync') && only.includes('diloco'))) throw new Error('--warm-start needs both sync and diloco in --only');
    let warmCheckpoint: string | undefined;
    for (const mode of ['sync', 'diloco'].filter((m) => only.includes(m))) {
      const out = mkdtempSync(join(tmpdir(), `kiln-wan-${mode}-`));
      if (mode === 'sync' && warm > 0) warmCheckpoint = join(out, `step-${String(warm).padStart(6, '0')}`);
      const outer = [...(values['outer-lr'] ? ['--outer-lr', values['outer-lr']] : []), ...(values['outer-momentum'] ? ['--outer-momentum', values['outer-momentum']] : [])];
      const extra = mode === 'diloco'
        ? ['--sync', 'diloco', '--inner-steps', values['inner-steps']!, '--quant-bits', values.bits!, '--stream-fragments', values['stream-fragments']!, ...outer, ...(warmCheckpoint ? ['--resume', warmCheckpoint] : [])]
        : warm > 0 ? ['--checkpoint-every', String(warm)] : [];
      const load = loadavg()[0];
      const port = loopback ? await freePort() : 29650;
      const ranks = await Promise.all([0, 1].map((rank) =>
        runProcess(loopback
          ? [...pin(rank), process.execPath, cli, ...common, '--out', out, ...extra]
          : ['ip', 'netns', 'exec', NS[rank], ...pin(rank), process.execPath, cli, ...common, '--out', out, ...extra, '--dist-bind', ADDR[rank], '--dist-store-bind', ADDR[0], '--dist-token', token], {
          MASTER_ADDR: loopback ? '127.0.0.1' : ADDR[0], MASTER_PORT: String(port), RANK: String(rank), LOCAL_RANK: '0', WORLD_SIZE: '2', KILN_NUM_THREADS: '1',
        })));
      ranks.forEach((r, i) => {
        if (r.code !== 0) throw new Error(`${mode} rank ${i} failed:\n${r.out}`);
      });
      results.push({
        ...summarize(out, `${mode} over ${linkName}`, 3), loadAverage: load,
        ...(mode === 'diloco' ? { innerSteps: Number(values['inner-steps']), quantBits: Number(values.bits), outerLr: Number(values['outer-lr'] ?? 0.7), outerMomentum: Number(values['outer-momentum'] ?? 0.9), streamFragments: Number(values['stream-fragments']) } : {}),
        ...(warm > 0 ? { warmStartSteps: warm, measuredSteps: mode === 'diloco' ? Number(steps) - warm : Number(steps) } : {}),
      });
    }
  } finally {
    const counters = await stopRelay();
    if (counters) results.push({ name: 'link relay counters', counters });
    teardown();
  }
  for (const r of results) console.log(JSON.stringify(r));
  const runs = results.filter((r): r is WanRunRow => !('counters' in r));
  const sync = runs.find((r) => String(r.name).startsWith('sync'));
  const diloco = runs.find((r) => String(r.name).startsWith('diloco'));
  const verdict: WanVerdictRow = loopback ? { note, link: 'loopback', steps: Number(steps), pinnedToCores: pinned } : { note, rate: values.rate, delayMs, queueMs, steps: Number(steps), pinnedToCores: pinned };
  if (Number(values['warm-start']) > 0) verdict.warmStartSteps = Number(values['warm-start']);
  const locals = runs.filter((r) => String(r.name).startsWith('local'));
  if (locals.length > 0 && diloco) {
    // against the mean of the lone ranks (rank r of the pair runs on core r), and against each
    const perRank = diloco.tokensPerSecond / 2;
    const meanLocal = locals.reduce((a, r) => a + r.tokensPerSecond, 0) / locals.length;
    verdict.dilocoPerRankTokensPerSecondOfLocal = perRank / meanLocal;
    for (const r of locals) if (r.core !== undefined) verdict[`dilocoPerRankTokensPerSecondOfLocalCore${r.core}`] = perRank / r.tokensPerSecond;
  }
  if (sync && diloco) verdict.dilocoValLossVsSync = diloco.valLoss / sync.valLoss - 1;
  console.log(JSON.stringify(verdict));
  const { dilocoTokensOfLocal, dilocoValLossVsSync } = DIST_TARGETS;
  console.log(`wrote ${writeResults(values.out!, 'dist-wan', [...results, verdict], { dilocoTokensOfLocal, dilocoValLossVsSync })}`);
}

main().catch((e) => {
  teardown();
  console.error(e);
  process.exit(1);
});
