/**
 * `kiln tune`'s command half: checks the flags, records the matmuls one training step of the
 * preset issues at each token count and times their candidates (lib/train/matmul_tuner.ts).
 */
import { parseDevice } from '../device.js';
import { parseDType } from '../dtype.js';
import { KilnError } from '../errors.js';
import { preset } from '../model/config.js';
import { modelMatmulCalls, tuneMatmul } from '../train/matmul_tuner.js';
import { parseCommand } from './commands.js';

export async function tuneCommand(rest: string[]): Promise<number> {
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
