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
import { loadResults, pick, renderReport, writeReport } from '../../lib/monitor/report.js';
import { assertKilnError } from '../helpers.js';
import { resultFiles } from './fixtures.js';

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
});

test('the repository\'s own results render, with their figures', () => {
  const { results } = loadResults(['bench/results']);
  const html = renderReport(results);
  const rows = tableRows(html, 'training-table');
  const first = results.find((r) => r.benchmark === 'train')!.results[0];
  assert.is(Number(rows[0].tokensPerSecond.value), pick(first, 'tokensPerSecond'));
});

test.run();
