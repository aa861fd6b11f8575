/**
 * Every `kiln` command and flag, with its default and description, in one table. The parser
 * (commander) and the help (`kiln help`, `kiln COMMAND --help`) are both made from it, so the
 * help cannot leave out a flag or show a default the parser does not use. Values come back in
 * node:util parseArgs' shape (`values['muon-lr']`, strings and booleans), which the commands
 * check and convert themselves. This file imports nothing heavy: `kiln help` and
 * `kiln --version` load neither the addon nor the server.
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { KilnError } from '../errors.js';

interface FlagSpec {
  type: 'string' | 'boolean';
  description: string;
  /** the value when the flag is absent, as the command receives it */
  default?: string;
  /** the default shown in the help when the command works it out itself (no `default`) */
  defaultText?: string;
  /** the value's name in the help: --steps N */
  value?: string;
  /** the value may be left out (`--dashboard` or `--dashboard 9000`) */
  optionalValue?: boolean;
  /** an environment variable the command reads when the flag is absent (shown in the help) */
  env?: string;
  /** accepted but left out of the help (an alias kept for old command lines) */
  hidden?: boolean;
}

interface CommandSpec {
  summary: string;
  /** operands, in commander's syntax: '[files...]', '<runs...>' */
  operands?: { name: string; description: string; default?: string }[];
  flags: Record<string, FlagSpec>;
  /** text after the flags in `kiln COMMAND --help` */
  after?: string;
}

const DASHBOARD_FLAGS = {
  dashboard: { type: 'string', value: 'PORT', optionalValue: true, defaultText: 'off; PORT 8788 when given without one', description: 'a live page (and /metrics for Prometheus) on http://127.0.0.1:PORT' },
  'dashboard-host': { type: 'string', value: 'HOST', default: '127.0.0.1', description: 'address of the --dashboard page; other than loopback it needs --dashboard-token' },
  'dashboard-token': { type: 'string', value: 'TOKEN', env: 'KILN_DASHBOARD_TOKEN', defaultText: 'none on loopback, else generated and printed', description: 'token the --dashboard page asks for' },
} as const satisfies Record<string, FlagSpec>;

export const COMMANDS = {
  info: {
    summary: 'the build (CUDA compiled or not, architectures) and each device with its datasheet peaks',
    flags: { json: { type: 'boolean', description: 'print JSON' } },
  },
  selfcheck: { summary: 'a short check of every device against the CPU reference', flags: {} },
  start: {
    summary: 'the main job (npm start): trains the tiny preset on the bundled corpus, saves a checkpoint, prints a sample',
    flags: {
      steps: { type: 'string', value: 'N', default: '600', description: 'training steps' },
      out: { type: 'string', value: 'DIR', defaultText: 'runs/tiny, or runs/tiny-2, runs/tiny-3, ... when it holds a run', description: 'run directory' },
      overwrite: { type: 'boolean', description: 'replace the run an explicit --out holds' },
    },
    after: 'Run again, `npm start` trains a new run beside the earlier ones (runs/tiny, then runs/tiny-2, ...):\nit never overwrites one. `kiln train --resume runs/tiny ...` continues a run.',
  },
  train: {
    summary: 'pretrain a preset, a config.json or a model (--from) on token shards from kiln prepare; SIGINT saves a checkpoint and exits',
    flags: {
      preset: { type: 'string', value: 'NAME', default: 'tiny', description: 'model preset: tiny, 125m, 350m, 760m, 1.4b' },
      config: { type: 'string', value: 'FILE', description: 'train this config.json (llama, qwen2 or qwen3, Hugging Face fields) from random weights instead of a preset' },
      from: { type: 'string', value: 'CHECKPOINT', description: 'start from a Hugging Face or kiln checkpoint: its config and weights, fresh optimizer, step 0' },
      data: { type: 'string', value: 'DIR', description: 'directory with train.bin and val.bin (kiln prepare); required' },
      steps: { type: 'string', value: 'N', default: '200', description: 'train until this step' },
      batch: { type: 'string', value: 'N', default: '16', description: 'sequences per step (per rank with --nproc)' },
      seq: { type: 'string', value: 'N', defaultText: 'the preset\'s context, at most 128', description: 'tokens per sequence' },
      device: { type: 'string', value: 'DEVICE', defaultText: 'cpu', description: 'cpu or cuda:N (cuda: each rank\'s own GPU with --nproc); CUDA training needs KILN_CUDA_TRAINING=1' },
      out: { type: 'string', value: 'DIR', defaultText: 'runs/<preset>', description: 'run directory: checkpoints (step-NNNNNN/, latest) and metrics.jsonl (default runs/model with --from or --config)' },
      resume: { type: 'string', value: 'CHECKPOINT', description: 'continue from a checkpoint, a run directory or its latest pointer' },
      overwrite: { type: 'boolean', description: 'replace the run --out holds (its checkpoints and metrics.jsonl)' },
      accumulation: { type: 'string', value: 'N', default: '1', description: 'micro-batches per step (gradient accumulation)' },
      'muon-lr': { type: 'string', value: 'LR', default: '0.02', description: 'Muon learning rate (2-D hidden matrices)' },
      'adamw-lr': { type: 'string', value: 'LR', default: '0.003', description: 'AdamW learning rate (embeddings, head, norms)' },
      'eval-every': { type: 'string', value: 'N', default: '50', description: 'validation loss every N steps (0: never)' },
      'checkpoint-every': { type: 'string', value: 'N', default: '0', description: 'a checkpoint every N steps (0: only at the end)' },
      seed: { type: 'string', value: 'N', default: '0', description: 'seed of the initial weights and the data order' },
      'log-every': { type: 'string', value: 'N', default: '10', description: 'a log line every N steps when stdout is not a terminal' },
      'grad-clip': { type: 'string', value: 'NORM', default: '1', description: 'clip the global gradient norm (0: off)' },
      recompute: { type: 'boolean', description: 'activation recomputation: less memory for one extra layer forward per layer' },
      ...DASHBOARD_FLAGS,
      nproc: { type: 'string', value: 'N', defaultText: '1', description: 'data-parallel ranks started on this machine' },
      sync: { type: 'string', value: 'MODE', default: 'sync', description: 'sync (all-reduce every step) or diloco' },
      'inner-steps': { type: 'string', value: 'H', default: '50', description: 'DiLoCo: local steps between synchronizations' },
      'outer-lr': { type: 'string', value: 'LR', default: '0.7', description: 'DiLoCo: outer Nesterov learning rate' },
      'outer-momentum': { type: 'string', value: 'M', default: '0.9', description: 'DiLoCo: outer Nesterov momentum' },
      'quant-bits': { type: 'string', value: 'B', default: '0', description: 'DiLoCo: send pseudo-gradients as 8, 4 or 2-bit codes (0: f32)' },
      'stream-fragments': { type: 'string', value: 'P', default: '1', description: 'Streaming DiLoCo: fragments synchronized in turn' },
      'overlap-steps': { type: 'string', value: 'T', defaultText: '1 with --stream-fragments > 1, else 0', description: 'Streaming DiLoCo: steps an exchange overlaps' },
      'mix-alpha': { type: 'string', value: 'A', default: '0.5', description: 'Streaming DiLoCo: weight of the local weights when merging' },
      'bucket-mb': { type: 'string', value: 'MB', default: '25', description: 'sync: gradient all-reduce bucket size' },
      'bf16-reduce': { type: 'boolean', description: 'sync: all-reduce gradients in bf16' },
      'no-distributed-muon': { type: 'boolean', description: 'every rank runs Newton-Schulz on every matrix' },
      zero1: { type: 'boolean', description: 'sync: shard the optimizer state across ranks (ZeRO-1)' },
      'dist-timeout': { type: 'string', value: 'SECONDS', default: '60', description: 'timeout of every collective' },
      'dist-token': { type: 'string', value: 'TOKEN', env: 'KILN_DIST_TOKEN', description: 'shared secret of the ranks; needed for non-loopback binds' },
      'dist-bind': { type: 'string', value: 'ADDRESS', defaultText: '127.0.0.1', description: 'address Gloo binds' },
      'dist-store-bind': { type: 'string', value: 'ADDRESS', defaultText: '127.0.0.1', description: 'rank 0: address the rendezvous store binds' },
      'baseline-tokens-per-second': { type: 'string', value: 'N', description: 'one rank\'s tokens/s, for the scaling efficiency in the metrics' },
    },
    after: 'An --out that holds a run (checkpoints, latest or metrics.jsonl) is refused unless --resume continues\nthat run or --overwrite replaces it. --from takes no --preset, --config or --resume; its checkpoints keep\nthe source\'s model_type, config.json fields and tokenizer files, and its data must come from its\ntokenizer (kiln prepare --tokenizer CHECKPOINT). --resume alone continues a --from or --config run.\nAcross machines: torchrun\'s MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE, the same command on each.',
  },
  generate: {
    summary: 'stream a completion from a kiln or Hugging Face LLaMA checkpoint and print tokens/s',
    flags: {
      checkpoint: { type: 'string', value: 'CHECKPOINT', description: 'a checkpoint directory, a run directory or its latest pointer; required' },
      prompt: { type: 'string', value: 'TEXT', description: 'the text to continue; required (--prompt \'\' starts from a single space)' },
      tokens: { type: 'string', value: 'N', default: '100', description: 'tokens to generate' },
      temperature: { type: 'string', value: 'T', default: '0.8', description: 'sampling temperature (0: greedy)' },
      'top-k': { type: 'string', value: 'K', default: '40', description: 'sample from the K most likely tokens (0: all)' },
      'top-p': { type: 'string', value: 'P', default: '1', description: 'nucleus sampling threshold' },
      seed: { type: 'string', value: 'N', default: '0', description: 'sampling seed' },
      tokenizer: { type: 'string', value: 'NAME', defaultText: 'the checkpoint\'s tokenizer.json, else byte up to 256 ids, else gpt2', description: 'byte or gpt2' },
      device: { type: 'string', value: 'DEVICE', default: 'cpu', description: 'cpu or cuda:N' },
      dtype: { type: 'string', value: 'DTYPE', defaultText: 'f32 on the CPU, bf16 on CUDA', description: 'compute dtype: f32 or bf16' },
    },
  },
  serve: {
    summary: 'OpenAI-compatible HTTP server (/v1/completions, /v1/chat/completions, /v1/models, /health, /metrics)',
    flags: {
      checkpoint: { type: 'string', value: 'CHECKPOINT', description: 'a checkpoint directory, a run directory or its latest pointer; required' },
      host: { type: 'string', value: 'HOST', default: '127.0.0.1', description: 'address to listen on; other than loopback it needs --api-key' },
      port: { type: 'string', value: 'PORT', default: '8000', description: 'port (0: any free one)' },
      device: { type: 'string', value: 'DEVICE', default: 'cpu', description: 'cpu or cuda:N' },
      'model-name': { type: 'string', value: 'NAME', defaultText: 'the run\'s name for a run or its latest pointer, else the directory\'s', description: 'the model id clients ask for' },
      'api-key': { type: 'string', value: 'KEY', env: 'KILN_API_KEY', description: 'require Authorization: Bearer KEY (at least 8 characters)' },
      'kv-cache-mb': { type: 'string', value: 'MB', defaultText: '256', description: 'KV cache size' },
      'max-running': { type: 'string', value: 'N', defaultText: '64', description: 'sequences decoded together' },
      'max-queued': { type: 'string', value: 'N', defaultText: '1024', description: 'requests waiting before 429' },
      'max-batch-tokens': { type: 'string', value: 'N', defaultText: '512', description: 'tokens per engine iteration' },
      'drain-seconds': { type: 'string', value: 'S', default: '30', description: 'on SIGTERM, how long in-flight requests may finish' },
      ...DASHBOARD_FLAGS,
    },
    after: 'SIGTERM or SIGINT drains: the listener closes, in-flight requests finish (or are cancelled after\n--drain-seconds), then kiln serve exits 0; a second signal exits at once.',
  },
  dashboard: {
    summary: 'the dashboard for finished or running runs (their metrics.jsonl, followed while they grow), overlaid',
    operands: [{ name: '[runs...]', description: 'run directories or metrics.jsonl files' }],
    flags: {
      port: { type: 'string', value: 'PORT', optionalValue: true, default: '8788', description: 'port (0: any free one)' },
      host: { type: 'string', value: 'HOST', default: '127.0.0.1', description: 'address; other than loopback it needs a token (generated when not given)' },
      token: { type: 'string', value: 'TOKEN', env: 'KILN_DASHBOARD_TOKEN', description: 'token the page asks for' },
      dashboard: { type: 'string', value: 'PORT', optionalValue: true, hidden: true, description: 'same as --port' },
      'dashboard-host': { type: 'string', value: 'HOST', hidden: true, description: 'same as --host' },
      'dashboard-token': { type: 'string', value: 'TOKEN', hidden: true, description: 'same as --token' },
    },
  },
  report: {
    summary: 'one self-contained HTML report (opens from disk) from bench/results JSON of any number of machines',
    operands: [{ name: '[results...]', description: 'result files or directories', default: 'bench/results' }],
    flags: {
      out: { type: 'string', value: 'FILE', default: 'report.html', description: 'the HTML file to write' },
      title: { type: 'string', value: 'TEXT', defaultText: 'kiln benchmark report', description: 'the page title' },
    },
  },
  prepare: {
    summary: 'tokenize .txt/.md/.jsonl files (default: the bundled corpus) into train.bin and val.bin token shards',
    operands: [{ name: '[inputs...]', description: '.txt, .md and .jsonl files, or directories of them', default: 'the bundled nlp-corpus' }],
    flags: {
      tokenizer: { type: 'string', value: 'NAME|DIR|FILE', default: 'byte', description: 'byte, gpt2, or a model\'s own: a directory holding tokenizer.json, or the file' },
      val: { type: 'string', value: 'FRACTION', default: '0.01', description: 'share of documents held out for validation, in (0, 1)' },
      out: { type: 'string', value: 'DIR', default: 'data', description: 'directory for train.bin and val.bin' },
      seed: { type: 'string', value: 'N', default: '0', description: 'seed of the train/validation split' },
      strict: { type: 'boolean', description: 'refuse input that is not valid UTF-8 (else its bytes become U+FFFD, with a warning)' },
    },
    after: 'Documents: in .txt and .md files, text separated by blank lines; in .jsonl files, the "text" field\nof each line. Files with other extensions in a directory are skipped (and counted); named on the\ncommand line, they are refused. With a tokenizer.json, EOS goes between documents and BOS where the\ntokenizer\'s post-processor puts it; the shards record the file\'s sha256, and kiln train refuses them\nfor a model with another tokenizer.',
  },
  export: {
    summary: 'write a checkpoint as a GGUF file for llama.cpp',
    flags: {
      format: { type: 'string', value: 'FORMAT', default: 'gguf', description: 'the format (gguf)' },
      checkpoint: { type: 'string', value: 'CHECKPOINT', description: 'a checkpoint directory, a run directory or its latest pointer; required' },
      out: { type: 'string', value: 'FILE', description: 'the file to write; required' },
      dtype: { type: 'string', value: 'DTYPE', default: 'f32', description: 'f32, f16 or bf16 matrices (norms stay f32)' },
      tokenizer: { type: 'string', value: 'NAME', defaultText: 'byte up to 256 ids, else gpt2', description: 'byte or gpt2' },
    },
  },
  tune: {
    summary: 'time every CUDA GEMM candidate on the matmuls of one training step and cache the winners',
    flags: {
      device: { type: 'string', value: 'DEVICE', default: 'cuda:0', description: 'the GPU' },
      preset: { type: 'string', value: 'NAME', default: '1.4b', description: 'model preset' },
      tokens: { type: 'string', value: 'N,...', default: '8192,16384', description: 'tokens per step, each a multiple of --seq' },
      seq: { type: 'string', value: 'N', defaultText: 'the preset\'s context', description: 'tokens per sequence' },
      dtype: { type: 'string', value: 'DTYPE', default: 'bf16', description: 'compute dtype' },
      recompute: { type: 'boolean', description: 'the matmuls of a step with activation recomputation' },
    },
    after: 'Winners go to KILN_CACHE_DIR (default ~/.cache/kiln), where the dispatcher reads them.',
  },
  bench: {
    summary: 'benchmarks next to their peers (PyTorch, numpy, llama.cpp), JSON into --out; from a repository checkout',
    operands: [{ name: '[benchmarks...]', description: 'train, matmul, memory, dashboard, or serve', default: 'train, matmul, memory and dashboard' }],
    flags: {
      out: { type: 'string', value: 'DIR', default: 'bench/results', description: 'directory for the JSON results' },
      only: { type: 'string', value: 'NAMES', description: 'comma-separated benchmarks (instead of operands)' },
      preset: { type: 'string', value: 'NAME', defaultText: 'train: 1.4b on a GPU, tiny on the CPU; serve: 125m', description: 'train, serve: model preset (serve: random weights)' },
      device: { type: 'string', value: 'DEVICE', defaultText: 'cpu', description: 'train: device' },
      batch: { type: 'string', value: 'N', defaultText: '8 on a GPU, 16 on the CPU', description: 'train: sequences per step' },
      seq: { type: 'string', value: 'N', defaultText: '2048 on a GPU, 128 on the CPU', description: 'train: tokens per sequence' },
      steps: { type: 'string', value: 'N', defaultText: '12 on a GPU, 40 on the CPU', description: 'train: timed steps' },
      warmup: { type: 'string', value: 'N', defaultText: '3 on a GPU, 5 on the CPU', description: 'train: untimed steps first' },
      recompute: { type: 'boolean', description: 'train: with activation recomputation' },
      'no-peer': { type: 'boolean', description: 'train: without the PyTorch peer' },
      checkpoint: { type: 'string', value: 'CHECKPOINT', description: 'serve: a checkpoint (default: the --preset with random weights)' },
      dtype: { type: 'string', value: 'DTYPE', defaultText: 'f32', description: 'serve: f32 or bf16' },
      drivers: { type: 'string', value: 'LIST', defaultText: 'kiln,llama.cpp (with --url: kiln,http)', description: 'serve: kiln, llama.cpp, http' },
      url: { type: 'string', value: 'URL', description: 'serve: an OpenAI-compatible server to measure' },
      model: { type: 'string', value: 'NAME', description: 'serve: the model name to ask --url for' },
      'api-key': { type: 'string', value: 'KEY', description: 'serve: API key for --url' },
      data: { type: 'string', value: 'DIR', description: 'serve: token shards the prompts come from' },
      'prompt-min': { type: 'string', value: 'N', defaultText: '16', description: 'serve: shortest prompt in tokens' },
      'prompt-max': { type: 'string', value: 'N', defaultText: '192', description: 'serve: longest prompt in tokens' },
      'output-tokens': { type: 'string', value: 'N', defaultText: '32', description: 'serve: tokens per response' },
      requests: { type: 'string', value: 'N', defaultText: '16', description: 'serve: requests per closed-loop scenario' },
      concurrency: { type: 'string', value: 'N,...', defaultText: '1,8,32', description: 'serve: closed-loop concurrencies' },
      rates: { type: 'string', value: 'R,...', defaultText: '0.3, 0.6 and 0.9 of the measured capacity', description: 'serve: open-loop request rates' },
      'rate-requests': { type: 'string', value: 'N', defaultText: '32', description: 'serve: requests per rate' },
      'kv-cache-mib': { type: 'string', value: 'MIB', defaultText: '1024', description: 'serve: KV cache size' },
      'peer-threads': { type: 'string', value: 'N', defaultText: 'kiln\'s thread count', description: 'serve: llama.cpp threads' },
      seed: { type: 'string', value: 'N', defaultText: '0', description: 'serve: prompt selection seed' },
      'no-bandwidth': { type: 'boolean', description: 'serve: skip the memory-bandwidth measurement' },
    },
  },
} as const satisfies Record<string, CommandSpec>;

export type CommandName = keyof typeof COMMANDS;

type FlagValue<F> = F extends { type: 'boolean' } ? boolean : F extends { default: string } ? string : string | undefined;
/** The parsed flags of a command, keyed like its flags ('muon-lr'), as node:util parseArgs gives them. */
export type Values<N extends CommandName> = { -readonly [K in keyof (typeof COMMANDS)[N]['flags']]: FlagValue<(typeof COMMANDS)[N]['flags'][K]> };

export interface Parsed<N extends CommandName> {
  values: Values<N>;
  positionals: string[];
}

/** kiln's version (package.json), read without loading the addon. */
export function kilnVersion(): string {
  for (const up of ['../../../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(up, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'kiln' && pkg.version) return pkg.version;
    } catch {
      // not at this depth (dist/lib/cli/ or lib/cli/)
    }
  }
  return 'unknown';
}

const ENVIRONMENT = `environment:
  KILN_DEVICE=cpu|cuda:N   the device jobs pick by default     KILN_NUM_THREADS=N   CPU threads per op
  KILN_CACHE_DIR=DIR       tune winners and npm start's data (default ~/.cache/kiln)
  (the README lists every KILN_* variable)`;

function flagSyntax(name: string, spec: FlagSpec): string {
  if (spec.type === 'boolean') return `--${name}`;
  const value = spec.value ?? 'VALUE';
  return `--${name} ${spec.optionalValue ? `[${value}]` : `<${value}>`}`;
}

function configure(cmd: Command): Command {
  return cmd
    .exitOverride()
    .configureOutput({ writeOut: (s) => process.stdout.write(s), writeErr: (s) => process.stderr.write(s), outputError: () => undefined })
    .configureHelp({ styleTitle: (title) => title.toLowerCase(), sortOptions: false })
    .helpOption('-h, --help', 'show this help');
}

function defineCommand(program: Command, name: CommandName): Command {
  const spec: CommandSpec = COMMANDS[name];
  const cmd = configure(program.command(name).summary(spec.summary).description(spec.summary));
  for (const operand of spec.operands ?? []) cmd.argument(operand.name, operand.default !== undefined ? `${operand.description} (default: ${operand.default})` : operand.description);
  for (const [flag, f] of Object.entries(spec.flags)) {
    const extra = [f.default === undefined && f.defaultText !== undefined ? `default: ${f.defaultText}` : '', f.env ? `env: ${f.env}` : ''].filter(Boolean);
    const option = new Option(flagSyntax(flag, f), extra.length ? `${f.description} (${extra.join('; ')})` : f.description);
    if (f.default !== undefined) option.default(f.default, f.default);
    if (f.hidden) option.hideHelp();
    cmd.addOption(option);
  }
  if (spec.after) cmd.addHelpText('after', `\n${spec.after}\n`);
  return cmd;
}

/** The whole command line: `kiln help` prints its help; each command's own help comes from it too. */
export function program(): Command {
  const kiln = configure(new Command('kiln'))
    .usage('<command> [options]')
    .description('Pretrain and serve LLaMA-style language models from Node.js. `kiln COMMAND --help` lists a command\'s options.')
    .version(kilnVersion(), '-v, --version', 'print kiln\'s version');
  for (const name of Object.keys(COMMANDS) as CommandName[]) defineCommand(kiln, name);
  kiln.helpCommand('help [command]', 'this text, or a command\'s options');
  kiln.addHelpText('after', `\n${ENVIRONMENT}`);
  return kiln;
}

/** The help text of `kiln` (no name) or of one command. */
export function helpText(name?: CommandName): string {
  const kiln = program();
  const cmd = name === undefined ? kiln : kiln.commands.find((c) => c.name() === name)!;
  let out = '';
  cmd.configureOutput({ writeOut: (s) => (out += s) });
  cmd.outputHelp();
  return out;
}

/**
 * Parses a command's arguments (what follows `kiln NAME`). `--help` prints the command's help and
 * returns undefined (the command then exits 0); an unknown flag, a missing value or a stray
 * operand is ERR_ARG naming it.
 */
export function parseCommand<N extends CommandName>(name: N, args: readonly string[]): Parsed<N> | undefined {
  const cmd = program().commands.find((c) => c.name() === name)!;
  try {
    cmd.parse([...args], { from: 'user' });
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.code === 'commander.helpDisplayed' || error.code === 'commander.help') return undefined;
      const message = error.message.replace(/^error: /, '').replace(/\s*\n\s*\(Did you mean (.*)\)/, ' (did you mean $1)').replace(/\s*\n\s*/g, ' ');
      throw new KilnError('ERR_ARG', `${message}; \`kiln ${name} --help\` lists the options`, { cause: error });
    }
    throw error;
  }
  const opts = cmd.opts();
  const values: Record<string, string | boolean | undefined> = {};
  for (const option of cmd.options) {
    const flag = option.long!.slice(2);
    const value = opts[option.attributeName()] as string | boolean | undefined;
    const spec = (COMMANDS[name].flags as Record<string, FlagSpec>)[flag];
    if (!spec) continue; // -h, --help
    if (option.negate) values[flag] = value === false;
    else if (spec.type === 'boolean') values[flag] = value === true;
    else if (value === true) values[flag] = spec.default ?? ''; // an optional value left out (--port)
    else values[flag] = value;
  }
  return { values: values as Values<N>, positionals: [...cmd.args] };
}
