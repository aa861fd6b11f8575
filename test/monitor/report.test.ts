/**
 * The benchmark report in Node: every number in its tables is the JSON's number (exactly, in
 * data-value) or a ratio of two of them; a figure a run lacks is a gap, never a zero; foreign
 * files are skipped with a reason; the page references nothing outside itself.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { loadResults, pick, renderReport, writeReport } from '../../lib/monitor/report/index.js';
import { DIST_TARGETS } from '../../bench/targets.js';
import { assertKilnError } from '../helpers.js';
import { distResultFiles, resultFiles } from './fixtures.js';

const test = suite('monitor: report');
const dir = mkdtempSync(join(tmpdir(), 'kiln-report-'));
const files = resultFiles();
for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, name), JSON.stringify(content));

/** Rows of a table as { field: { value, text } } maps. */
export function tableRows(html: string, id: string): Record<string, { value?: string; text: string }>[] {
  const table = new RegExp(`<table id="${id}"[^>]*>([\\s\\S]*?)</table>`).exec(html);
  assert.ok(table, `table ${id} is in the report`);
  const body = /<tbody>([\s\S]*)<\/tbody>/.exec(table![1])![1];
  return [...body.matchAll(/<tr[^>]*>([\s\S]*?)<\/tr>/g)].map((row) => {
    const cells: Record<string, { value?: string; text: string }> = {};
    for (const c of row[1].matchAll(/<td([^>]*)>([\s\S]*?)<\/td>/g)) {
      const field = /data-field="([^"]*)"/.exec(c[1])?.[1];
      if (!field) continue;
      cells[field] = { value: /data-value="([^"]*)"/.exec(c[1])?.[1], text: c[2].replace(/<[^>]+>/g, '') };
    }
    return cells;
  });
}

test('tables hold the JSON numbers; ratios are ratios of them; missing figures are gaps', () => {
  const { results, skipped } = loadResults([dir]);
  assert.is(skipped.length, 0);
  const html = renderReport(results);
  const gpu = (files['train-gpu.json'] as any).results[0];
  const cpu = (files['train-cpu.json'] as any).results[0];
  const training = tableRows(html, 'training-table');
  assert.is(training.length, 3, 'two runs and a skipped one');
  const [g, c, skippedRow] = [training[0], training[1], training[2]];
  for (const field of ['tokensPerSecond', 'p50Ms', 'p99Ms', 'forwardMs', 'backwardMs', 'optimizerMs', 'communicationMs', 'gflops', 'mfu', 'peakMemoryBytes']) {
    assert.is(Number(g[field].value), gpu[field], field);
  }
  assert.is(Number(g['peer.tokensPerSecond'].value), gpu.peer.tokensPerSecond);
  assert.is(Number(g['ratio.tokensPerSecond'].value), gpu.tokensPerSecond / gpu.peer.tokensPerSecond);
  assert.is(Number(g['ratio.mfu'].value), gpu.mfu / gpu.peer.mfu);
  assert.is(g.mfu.text, '41.68 %', 'MFU shown as a percentage with its unit');
  assert.is(g.tokensPerSecond.text, '39718.4 tok/s');
  assert.is(g.peakMemoryBytes.text, `${+(gpu.peakMemoryBytes / 2 ** 20).toFixed(1)} MiB`.replace('.0 ', ' '));
  // the CPU run has no MFU, no communication time and a failed peer: gaps, not zeros
  for (const field of ['mfu', 'communicationMs', 'peer.tokensPerSecond', 'ratio.tokensPerSecond', 'peer.mfu']) {
    assert.is(c[field].value, '', `${field} is a gap`);
    assert.is(c[field].text, '—');
  }
  assert.is(Number(c.tokensPerSecond.value), cpu.tokensPerSecond);
  assert.match(c.notes.text, 'peer unavailable: torch missing');
  assert.match(skippedRow.notes.text, 'skipped: KILN_CUDA_TRAINING is not 1');
  assert.is(skippedRow.tokensPerSecond.text, '—');

  const runs = tableRows(html, 'runs-table');
  assert.is(runs.length, Object.keys(files).length);
  const gpuRun = runs.find((r) => r.file.text === 'train-gpu.json')!;
  assert.is(gpuRun.device.text, 'NVIDIA H100 80GB HBM3');
  assert.is(gpuRun.driver.text, '13.0');
  assert.is(gpuRun.date.text, '2026-12-01 10:00:00');
  assert.is(gpuRun.commit.text, 'a'.repeat(12));
  assert.is(gpuRun.preset.text, '1.4b');
  assert.is(gpuRun.dtype.text, '—', 'the train result names no dtype: a gap');
  assert.is(runs.find((r) => r.file.text === 'matmul-gpu.json')!.dtype.text, 'bf16');

  const kernels = tableRows(html, 'kernels-table');
  const mm = (files['matmul-gpu.json'] as any).results[0];
  const k0 = kernels.find((k) => k.name.text === mm.name)!;
  assert.is(Number(k0.flops.value), mm.flops);
  assert.is(Number(k0.tflops.value), mm.tflops);
  assert.is(Number(k0.bytes.value), (mm.M * mm.K + mm.K * mm.N + mm.M * mm.N) * 2, 'bf16 GEMM bytes: A, B read and C written once');
  assert.is(Number(k0.fractionOfPeakFlops.value), mm.tflops / 989.4, 'against the H100 datasheet bf16 peak');
  const att = kernels.find((k) => k.kernel.text === 'attention')!;
  assert.is(Number(att.bytes.value), 2.1e9);
  assert.is(Number(att.intensity.value), 1.1e12 / 2.1e9);
  assert.is(att.peerTflops.text, '—');

  const serving = tableRows(html, 'serving-table');
  const serve = (files['serve-cpu.json'] as any).results;
  assert.is(serving.length, 8, 'flat: three kiln rows and two peer rows; nested: three');
  assert.is(Number(serving[0].ttftP50Ms.value), serve[0].ttftP50Ms);
  assert.is(serving[1].system.text, 'llama.cpp');
  assert.is(Number(serving[1].outputTokensPerSecond.value), serve[0].peer.outputTokensPerSecond);
  assert.is(serving[1].tpotP50Ms.text, '—', 'the peer has no TPOT: a gap');
  const rate = serving.find((r) => r.requestRate.value === '4')!;
  assert.is(Number(rate.ttftP99Ms.value), 390, 'nested { ttft: { p99Ms } } is read too');
  assert.is(Number(rate.itlP50Ms.value), 35.5);

  // `kiln bench serve`'s nested shape: one row per driver and scenario
  const nested = serving.filter((r) => r.model.text === 'random 125m (seeded init, untrained)');
  assert.equal(nested.map((r) => r.system.text), ['kiln', 'kiln', 'llama.cpp']);
  assert.is(Number(nested[0].ttftP50Ms.value), 75.5);
  assert.is(Number(nested[0].itlP99Ms.value), 45.5);
  assert.is(Number(nested[0].tpotP50Ms.value), 29.5);
  assert.is(Number(nested[0].kvUsage.value), 0.01, 'KV usage: the mean over the scenario');
  assert.is(Number(nested[0].mbu.value), 0.3127, 'bandwidth utilization belongs to concurrency 1');
  assert.is(nested[1].mbu.text, '—');
  assert.is(Number(nested[1].requestRate.value), 2);
  assert.is(Number(nested[2].outputTokensPerSecond.value), 14.5);
  assert.is(nested[2].prefixCacheHitRate.text, '—');

  const normalized = tableRows(html, 'normalized-table');
  const tps = normalized.find((r) => r.figure.text.includes('1.4b') && r.figure.text.endsWith('tokens/s'))!;
  assert.is(Number(tps.perPeakFlops.value), gpu.tokensPerSecond / 989.4);
  assert.is(Number(tps.perPeakBandwidth.value), gpu.tokensPerSecond / 3.35);
  const copy = normalized.find((r) => r.figure.text === 'memory copy')!;
  assert.is(Number(copy.perPeakBandwidth.value), 1, 'the CPU has no datasheet: its best measured bandwidth is its roof');

  for (const id of ['roofline', 'Roofline: NVIDIA H100 80GB HBM3', 'Step latency split', 'Throughput vs TTFT', 'TTFT distribution']) assert.match(html, id === 'roofline' ? /Roofline/ : id);
  assert.not.match(html, /(src|href)="https?:/, 'nothing is fetched from the network');
  assert.not.match(html, /https?:\/\//);
  assert.not.match(html, /<td class="num[^"]*"[^>]*data-value=""/, 'no numeric cell without a value');
});

test('foreign and broken files are skipped with a reason; no result at all is an error', async () => {
  const bad = mkdtempSync(join(tmpdir(), 'kiln-report-bad-'));
  writeFileSync(join(bad, 'broken.json'), '{"benchmark": ');
  writeFileSync(join(bad, 'other.json'), '{"hello": 1}');
  const { results, skipped } = loadResults([bad]);
  assert.is(results.length, 0);
  assert.equal(skipped.map((s) => s.reason.split(' ')[0]).sort(), ['not', 'not']);
  await assertKilnError(() => writeReport([bad], join(bad, 'r.html')), 'ERR_ARG');
  await assertKilnError(() => writeReport([join(bad, 'missing')], join(bad, 'r.html')), 'ERR_ARG');
  writeFileSync(join(bad, 'good.json'), JSON.stringify(files['memory-cpu.json']));
  const out = writeReport([bad], join(bad, 'r.html'));
  assert.is(out.files, 1);
  assert.is(out.skipped.length, 2);
  assert.match(readFileSync(join(bad, 'r.html'), 'utf8'), 'Files skipped');
  // a date or commit that is not a string is refused, not a TypeError deep inside
  await assertKilnError(() => renderReport([{ file: 'x.json', benchmark: 'dist', date: [] as never, results: [] }]), 'ERR_ARG');
  await assertKilnError(() => renderReport([{ file: 'x.json', benchmark: 'dist', commit: 5 as never, results: [] }]), 'ERR_ARG');
});

test('data parallel: all-reduce, scaling and WAN tables hold the JSON figures; met / missed follow the numbers; older shapes render', () => {
  const distDir = mkdtempSync(join(tmpdir(), 'kiln-report-dist-'));
  const dist = distResultFiles() as Record<string, any>;
  for (const [name, content] of Object.entries(dist)) writeFileSync(join(distDir, name), JSON.stringify(content));
  const html = renderReport(loadResults([distDir]).results);
  assert.match(html, '<a href="#data-parallel">Data parallel</a>');

  const ar = tableRows(html, 'dist-allreduce-table');
  assert.is(ar.length, 3);
  const [oldSmall, oldLarge, now] = ar;
  const oldJson = dist['dist-old.json'].results;
  const nowJson = dist['dist-now.json'].results;
  for (const [row, json] of [[oldSmall, oldJson[0]], [now, nowJson[0]]] as const) {
    assert.is(Number(row['kiln.algBandwidthGBs'].value), json.kiln.algBandwidthGBs);
    assert.is(Number(row['kiln.busBandwidthGBs'].value), json.kiln.busBandwidthGBs);
    assert.is(Number(row['gloo.algBandwidthGBs'].value), json.gloo.algBandwidthGBs);
    assert.is(Number(row['kiln.medianMs'].value), json.kiln.medianMs);
    assert.is(Number(row.ratioOfGloo.value), json.ratioOfGloo);
    assert.is(Number(row.bytes.value), json.bytes);
  }
  assert.is(oldSmall.file.text, 'dist-old.json');
  assert.is(oldSmall.date.text, '2026-12-02 13:57:52');
  assert.is(oldSmall.commit.text, 'e'.repeat(12));
  assert.is(oldSmall.loadAverage.text, '23.98');
  assert.is(now.loadAverage.text, '1.34 / 1.41 / 1.29', 'one load average per round');
  assert.is(now.rounds.text, '3 × 100');
  // 27% of Gloo misses the 80% target, 89.7% meets it
  assert.is(oldSmall['target.ratioOfGloo'].text, 'missed');
  assert.is(now['target.ratioOfGloo'].text, 'met');
  assert.ok(oldJson[0].ratioOfGloo < DIST_TARGETS.allReduceOfGloo && nowJson[0].ratioOfGloo >= DIST_TARGETS.allReduceOfGloo);
  // no Gloo figures: gaps, no verdict, the reason in the notes
  for (const field of ['gloo.medianMs', 'gloo.algBandwidthGBs', 'ratioOfGloo', 'target.ratioOfGloo']) assert.is(oldLarge[field].text, '—', field);
  assert.match(oldLarge.notes.text, 'could not be built');
  assert.match(html, /title="median of 3 rounds: 29\.69, 31\.2, 28\.9"/, 'round medians in the tooltip');

  const sc = tableRows(html, 'dist-scaling-table');
  assert.is(sc.length, 2);
  const [scOld, scNow] = sc;
  assert.is(Number(scOld['one.tokensPerSecond'].value), oldJson[2].one.tokensPerSecond);
  assert.is(Number(scOld['two.commExposedMs'].value), oldJson[2].two.commExposedMs);
  assert.is(Number(scOld.scalingEfficiency.value), oldJson[2].scalingEfficiency);
  assert.is(scOld['target.scalingEfficiency'].text, 'missed', '77.5% < 90%');
  assert.is(scOld['scalingEfficiencyWithoutDistributedMuon'].text, '—', 'older files measured no run without distributed Muon');
  assert.is(scOld.preset.text, 'tiny');
  // rounds: the benchmark's median of the round figures (the upper middle one), exactly
  assert.is(Number(scNow['one.tokensPerSecond'].value), 6715.01);
  assert.is(Number(scNow['two.tokensPerSecond'].value), 12000.5);
  assert.is(Number(scNow['twoWithoutDistributedMuon.tokensPerSecond'].value), 11000.5);
  assert.is(Number(scNow.scalingEfficiency.value), nowJson[1].scalingEfficiency);
  assert.is(Number(scNow.scalingEfficiencyWithoutDistributedMuon.value), nowJson[1].scalingEfficiencyWithoutDistributedMuon);
  assert.is(scNow['target.scalingEfficiency'].text, nowJson[1].scalingEfficiency >= 0.9 ? 'met' : 'missed');
  assert.is(scNow.loadAverage.text, '1.20–1.40', 'the range of the load averages over every round');

  const wan = tableRows(html, 'dist-wan-table');
  assert.equal(wan.map((r) => `${r.file.text} ${r.name.text}`), [
    'dist-wan-old.json sync over 100mbit', 'dist-wan-old.json diloco over 100mbit',
    'dist-wan-now.json local (1 rank)', 'dist-wan-now.json sync over 100mbit', 'dist-wan-now.json diloco over 100mbit',
  ]);
  const wanNow = dist['dist-wan-now.json'].results;
  const [, oldDiloco, local, sync, diloco] = wan;
  for (const [row, json] of [[sync, wanNow[1]], [diloco, wanNow[2]], [local, wanNow[0]]] as const) {
    for (const field of ['tokensPerSecond', 'commExposedPerStepMs', 'commBytesPerStep', 'commBytesPerToken', 'valLoss', 'medianStepMs', 'tokens', 'steps']) {
      assert.is(Number(row[field].value), json[field], `${json.name} ${field}`);
    }
    assert.is(row.loadAverage.text, json.loadAverage.toFixed(2));
  }
  assert.is(diloco.link.text, '100mbit, 50 ms one-way, 100 ms buffer');
  assert.is(diloco.settings.text, 'H = 50, 4-bit');
  assert.is(Number(diloco.dilocoPerRankTokensPerSecondOfLocal.value), wanNow[4].dilocoPerRankTokensPerSecondOfLocal);
  assert.is(diloco['target.dilocoTokensOfLocal'].text, 'met');
  assert.is(Number(diloco.dilocoValLossVsSync.value), wanNow[4].dilocoValLossVsSync);
  assert.is(diloco['target.dilocoValLossVsSync'].text, 'met', '+1.4% is within 2%');
  assert.is(sync['target.dilocoTokensOfLocal'].text, 'n/a', 'the DiLoCo targets concern the DiLoCo run');
  // the older file: no link latency, no local run (no tokens verdict), no stored loss verdict (the ratio of its two runs)
  const wanOld = dist['dist-wan-old.json'].results;
  assert.is(oldDiloco.link.text, '100mbit');
  assert.is(oldDiloco.dilocoPerRankTokensPerSecondOfLocal.text, '—');
  assert.is(oldDiloco['target.dilocoTokensOfLocal'].text, '—');
  assert.is(Number(oldDiloco.dilocoValLossVsSync.value), wanOld[1].valLoss / wanOld[0].valLoss - 1);
  assert.is(oldDiloco['target.dilocoValLossVsSync'].text, 'missed', '+12% is not within 2%');
  assert.is(oldDiloco.dilocoValLossVsSync.text, `+${+(100 * (wanOld[1].valLoss / wanOld[0].valLoss - 1)).toPrecision(4)} %`);

  const link = tableRows(html, 'dist-link-table');
  assert.equal(link.map((r) => r.direction.text), ['rank 0 → rank 1', 'rank 1 → rank 0']);
  assert.is(Number(link[0].packets.value), wanNow[3].counters.aToB.packets);
  assert.is(Number(link[0].dropped.value), 12);
  assert.is(Number(link[1].bytes.value), wanNow[3].counters.bToA.bytes);
  assert.is(link[0].loadAverage.text, '0.56 / 0.91 / 1.23');
  assert.match(html, 'one-way delay (RTT 100 ms)', 'the link note is shown');
  assert.not.match(html, /<td class="num[^"]*"[^>]*data-value=""/, 'no numeric cell without a value');

  // a report with no data-parallel files has no such section
  assert.not.match(renderReport(loadResults([dir]).results), 'id="data-parallel"');
});

test('the repository\'s own results render, with their figures', () => {
  const { results } = loadResults(['bench/results']);
  const html = renderReport(results);
  const rows = tableRows(html, 'training-table');
  const first = results.find((r) => r.benchmark === 'train')!.results[0];
  assert.is(Number(rows[0].tokensPerSecond.value), pick(first, 'tokensPerSecond'));
  // every loopback all-reduce the repository recorded: kiln's and Gloo's algbw and the ratio, as the JSON says
  const allReduce = results.filter((r) => r.benchmark === 'dist').flatMap((f) => f.results.filter((r) => r.benchmark === 'allreduce-loopback'));
  const arRows = tableRows(html, 'dist-allreduce-table');
  assert.is(arRows.length, allReduce.length);
  arRows.forEach((r, i) => {
    assert.is(Number(r['kiln.algBandwidthGBs'].value), pick(allReduce[i], 'kiln.algBandwidthGBs'));
    assert.is(r.ratioOfGloo.value === '' ? undefined : Number(r.ratioOfGloo.value), pick(allReduce[i], 'ratioOfGloo'));
    const ratioOfGloo = pick(allReduce[i], 'ratioOfGloo');
    if (ratioOfGloo !== undefined) assert.is(r['target.ratioOfGloo'].text, ratioOfGloo >= 0.8 ? 'met' : 'missed');
  });
  const wanRuns = results.filter((r) => r.benchmark === 'dist-wan').flatMap((f) => f.results.filter((r) => pick(r, 'tokensPerSecond') !== undefined));
  assert.equal(tableRows(html, 'dist-wan-table').map((r) => Number(r.tokensPerSecond.value)), wanRuns.map((r) => pick(r, 'tokensPerSecond')));
});

test.run();
