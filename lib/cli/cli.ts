#!/usr/bin/env node
/** The `kiln` command line. */
import { existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
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

const USAGE = `usage: kiln <command> [options]

commands:
  info [--json]        the build (CUDA compiled or not, architectures) and each device with its
                       datasheet peaks
  selfcheck            run a short check of every device against the CPU reference
  start                the main job (npm start): trains the tiny preset on the bundled corpus on
                       the best device, shows progress, saves a checkpoint, prints a sample
  train --preset tiny --data DIR --steps N [--batch 16] [--seq 128] [--device cpu] [--out runs/x]
        [--accumulation 1] [--muon-lr 0.02] [--adamw-lr 0.003] [--eval-every 50] [--checkpoint-every 0]
        [--resume DIR] [--seed 0] [--grad-clip 1] [--recompute] [--dashboard [PORT]]
                       pretrain; SIGINT saves a checkpoint and exits (--recompute: activation
                       recomputation, less memory for one extra layer forward per layer;
                       --dashboard: a live page on http://127.0.0.1:PORT (default 8788) with
                       /metrics for Prometheus; --dashboard-host H needs --dashboard-token T)
  dashboard RUN_DIR... [--port 8788] [--host 127.0.0.1 --token T]
                       the dashboard for finished or running runs (their metrics.jsonl,
                       followed while they grow), several overlaid on the same charts
  report [RESULTS...] [--out report.html]
                       one self-contained HTML report (opens from disk) from bench/results JSON
                       files or directories (default bench/results) of any number of machines
  generate --checkpoint DIR --prompt TEXT [--tokens 100] [--temperature 0.8] [--top-k 40] [--top-p 1] [--seed 0]
        [--tokenizer byte|gpt2] [--device cpu] [--dtype f32|bf16]
                       streams a completion from a kiln or Hugging Face LLaMA checkpoint through
                       the serving engine (lib/serve) and prints tokens/s
  serve --checkpoint DIR [--host 127.0.0.1] [--port 8000] [--device cpu] [--model-name NAME]
        [--api-key KEY] [--kv-cache-mb N] [--max-running N] [--max-queued N] [--drain-seconds 30] [--dashboard [PORT]]
                       OpenAI-compatible HTTP server (/v1/completions, /v1/chat/completions,
                       /v1/models, /health, /metrics); hosts other than loopback need --api-key
                       (or KILN_API_KEY); SIGTERM drains in-flight requests, then exits
  prepare [--tokenizer byte|gpt2] [--val 0.01] [--out data/] [FILES_OR_DIRS...]
                       tokenize .txt/.md/.jsonl files (default: the bundled corpus) into
                       train.bin and val.bin token shards
  export --format gguf --checkpoint DIR --out model.gguf [--dtype f32|f16|bf16] [--tokenizer byte|gpt2]
                       write the checkpoint as a GGUF file for llama.cpp (llama architecture,
                       tokenizer vocabulary, Q/K rows in llama.cpp's rotary order)
  tune [--device cuda:N] [--preset 1.4b] [--tokens 8192,16384] [--seq CONTEXT] [--dtype bf16] [--recompute]
                       time every CUDA GEMM candidate on the matmuls one training step of the
                       preset issues at each token count (recorded from the model: f32 weight
                       gradients with beta 1, residual epilogues, the head) and cache the
                       winners (KILN_CACHE_DIR, default ~/.cache/kiln) for the dispatcher
  bench [train|matmul|memory|dashboard] [--out bench/results]
        train [--preset 1.4b] [--device cuda:0] [--batch 8] [--seq 2048] [--steps 12] [--warmup 3]
              [--recompute] [--no-peer]
                       benchmarks next to their peers (PyTorch, numpy), JSON into --out; from a
                       repository checkout
  bench serve [--checkpoint DIR | --preset 125m] [--dtype f32|bf16] [--url URL] [--drivers kiln,llama.cpp,http]
              [--concurrency 1,8,32] [--rates R,...] [--prompt-min 16] [--prompt-max 192] [--output-tokens 32]
              [--requests 16] [--rate-requests 32] [--peer-threads N] [--kv-cache-mib 1024]
                       serving benchmark (TTFT, TPOT, ITL, tokens/s, KV usage, prefix hits, MBU)
                       of the kiln engine next to llama.cpp and/or an OpenAI-compatible --url
  help                 this text

environment:
  KILN_DEVICE=cpu|cuda:N   device for jobs that pick one; KILN_NUM_THREADS=N   CPU threads
`;

async function main(argv: string[]): Promise<number> {
  const [command = 'help', ...rest] = argv;
  switch (command) {
    case 'info': {
      const { values } = parseArgs({ args: rest, options: { json: { type: 'boolean', default: false } }, strict: true });
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
      parseArgs({ args: rest, options: {}, strict: true });
      const results = await selfCheck();
      for (const r of results) console.log(`${r.ok ? 'ok  ' : 'FAIL'} ${r.device}: ${r.detail} (${r.milliseconds.toFixed(0)} ms)`);
      return results.every((r) => r.ok) ? 0 : 1;
    }
    case 'prepare': {
      const { values, positionals } = parseArgs({
        args: rest,
        allowPositionals: true,
        options: { tokenizer: { type: 'string', default: 'byte' }, val: { type: 'string', default: '0.01' }, out: { type: 'string', default: 'data' }, seed: { type: 'string', default: '0' } },
        strict: true,
      });
      const tokenizer = await tokenizerByName(values.tokenizer!);
      const options = { valFraction: Number(values.val), seed: Number(values.seed) };
      const started = performance.now();
      const result = positionals.length
        ? prepareFiles(positionals, values.out!, tokenizer, options)
        : prepareDocuments(await bundledCorpus(), values.out!, tokenizer, options);
      for (const shard of [result.train, result.val]) {
        console.log(`${shard.path}: ${shard.tokens.toLocaleString()} ${tokenizer.name} tokens (${shard.bytesPerToken} bytes each)`);
      }
      console.log(`prepared in ${((performance.now() - started) / 1000).toFixed(1)} s`);
      return 0;
    }
    case 'export': {
      const { values } = parseArgs({
        args: rest,
        options: { format: { type: 'string', default: 'gguf' }, checkpoint: { type: 'string' }, out: { type: 'string' }, dtype: { type: 'string', default: 'f32' }, tokenizer: { type: 'string' } },
        strict: true,
      });
      if (values.format !== 'gguf') throw new KilnError('ERR_ARG', `--format ${values.format}: the formats kiln exports are: gguf`);
      if (!values.checkpoint || !values.out) throw new KilnError('ERR_ARG', 'export needs --checkpoint DIR and --out FILE');
      const started = performance.now();
      const result = await exportLlamaGguf(values.checkpoint, values.out, { dtype: values.dtype as 'f32', tokenizer: values.tokenizer });
      console.log(`${result.path}: ${result.tensors} ${result.dtype} tensors, ${result.tokenizer} vocabulary of ${result.vocabSize}, ${(result.bytes / 2 ** 20).toFixed(1)} MiB in ${((performance.now() - started) / 1000).toFixed(1)} s`);
      return 0;
    }
    case 'tune': {
      const { values } = parseArgs({
        args: rest,
        options: {
          device: { type: 'string', default: 'cuda:0' }, preset: { type: 'string', default: '1.4b' },
          tokens: { type: 'string', default: '8192,16384' }, seq: { type: 'string' }, dtype: { type: 'string', default: 'bf16' },
          recompute: { type: 'boolean', default: false },
        },
        strict: true,
      });
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
      // the benchmarks live in the repository (bench/, with the PyTorch/numpy peers), not in the npm package
      const runner = new URL('../../bench/run.js', import.meta.url);
      if (!existsSync(runner)) throw new KilnError('ERR_ARG', 'kiln bench runs from a kiln repository checkout (bench/ is not part of the npm package)');
      const { runBench } = (await import(runner.href)) as { runBench: (args: string[]) => Promise<number> };
      return runBench(rest);
    }
    case 'help':
    case '--help':
    case '-h':
      console.log(USAGE);
      return 0;
    default:
      console.error(`kiln: unknown command '${command}'\n\n${USAGE}`);
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
    } else if (error instanceof Error && (error as { code?: string }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
      console.error(`kiln: ${error.message}`);
    } else {
      console.error(error);
    }
    process.exitCode = 1;
  },
);
