/** `kiln train`, `kiln generate` and `kiln start` (the main job). */
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import cliProgress from 'cli-progress';
import { type Device, parseDevice } from '../device.js';
import { fail } from '../errors.js';
import { formatInfo } from '../info.js';
import { defaultDevice } from '../runtime.js';
import { type ModelConfig, PRESETS, fromHfConfig, preset } from '../model/config.js';
import { type ShardInfo, bundledCorpus, describeTokenizer, prepareDocuments, readShardInfo, shardHashOf } from '../io/shards.js';
import { tokenizerHash } from '../data/hf_tokenizer.js';
import { byteTokenizer } from '../data/tokenizer.js';
import { Engine } from '../serve/engine.js';
import type { StreamEnd } from '../serve/types.js';
import { type StepMetrics, Trainer, type TrainOptions, checkTrainingDevice, configDifferences } from '../train/trainer.js';
import { checkpointConfig, resolveCheckpoint } from '../io/checkpoint.js';
import { attachTrainingDashboard } from '../monitor/dashboard.js';
import { dashboardOptionsFrom, normalizeDashboardFlag } from './monitor.js';
import { parseCommand } from './commands.js';
import { checkOut, clearRun, freshRunDir } from './run_dir.js';
import { distEnvFromProcess } from '../parallel/communicator.js';
import { type ParallelFlags, checkZero1, joinRun, launchLocal } from '../parallel/launcher.js';

function int(value: string | undefined, name: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0) fail('ERR_ARG', `--${name} must be a non-negative integer, got ${value}`);
  return n;
}

function num(value: string | undefined, name: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) fail('ERR_ARG', `--${name} must be a non-negative number, got ${value}`);
  return n;
}

function format(m: StepMetrics): string {
  return (
    `step ${m.step} loss ${m.loss.toFixed(4)}${m.valLoss !== undefined ? ` val ${m.valLoss.toFixed(4)}` : ''} |g| ${m.gradNorm.toFixed(3)} lr×${m.lr.toFixed(3)} ` +
    `${Math.round(m.tokensPerSecond)} tok/s ${m.stepMs.toFixed(0)} ms (fwd ${m.forwardMs.toFixed(0)} / bwd ${m.backwardMs.toFixed(0)} / opt ${m.optimizerMs.toFixed(0)}) ` +
    `${(m.achievedTflops * 1e3).toFixed(1)} GFLOP/s${m.mfu !== undefined ? ` MFU ${(100 * m.mfu).toFixed(1)}%` : ''} peak ${(m.peakMemoryBytes / 2 ** 20).toFixed(0)} MiB`
  );
}

/** Runs a trainer with a progress bar on a TTY (a log line every `every` steps otherwise) and SIGINT = save and exit. */
async function runWithProgress(trainer: Trainer, every: number): Promise<StepMetrics[]> {
  const total = trainer.options.steps;
  const tty = process.stdout.isTTY;
  const bar = tty
    ? new cliProgress.SingleBar({ format: 'train |{bar}| {value}/{total} loss {loss} {tps} tok/s', hideCursor: true }, cliProgress.Presets.shades_classic)
    : undefined;
  bar?.start(total, trainer.currentStep, { loss: '-', tps: '-' });
  const onSigint = () => {
    trainer.requestStop();
    process.stderr.write('\nkiln: SIGINT: finishing this step, saving a checkpoint, then exiting\n');
  };
  process.once('SIGINT', onSigint);
  try {
    return await trainer.run((m) => {
      bar?.update(m.step, { loss: m.loss.toFixed(3), tps: Math.round(m.tokensPerSecond) });
      if (!tty && (m.step % every === 0 || m.step === total || m.valLoss !== undefined)) console.log(format(m));
      else if (tty && m.valLoss !== undefined) bar?.update(m.step, { loss: `${m.loss.toFixed(3)} (val ${m.valLoss.toFixed(3)})` });
    });
  } finally {
    bar?.stop();
    process.removeListener('SIGINT', onSigint);
  }
}

/**
 * `--device cuda` in a data-parallel run means this rank's own GPU: cuda:LOCAL_RANK (torchrun's
 * convention, one rank per GPU on each machine); an explicit cuda:N is kept as given.
 */
export function trainDevice(flag: string | undefined, localRank?: number): Device {
  if (!flag) return 'cpu';
  if (flag === 'cuda' && localRank !== undefined) return parseDevice(`cuda:${localRank}`);
  return parseDevice(flag);
}

/** --config FILE: an HF-style config.json of a registry family. */
function configFile(path: string): ModelConfig {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (error) {
    fail('ERR_ARG', `--config ${path}: ${existsSync(path) ? 'not valid JSON' : 'no such file'} (${(error as Error).message})`);
  }
  return fromHfConfig(json);
}

/**
 * The data must come from the model's own tokenizer: with a tokenizer.json in the checkpoint the
 * model comes from (--from, --resume), the shards' recorded sha256 must be its; a model from a
 * checkpoint without one (kiln's byte and gpt2 models) refuses shards made from a tokenizer.json.
 * Shards without a record (byte, gpt2, written before tokenizer.json was read) keep the vocabulary rule.
 */
function checkDataTokenizer(shard: ShardInfo, data: string, source: { flag: string; dir: string } | undefined): void {
  if (!source) return;
  const file = join(source.dir, 'tokenizer.json');
  const model = existsSync(file) ? shardHashOf(tokenizerHash(file)) : undefined;
  const theData = describeTokenizer(shard.tokenizer, shard.tokenizerHash);
  if (model !== undefined && shard.tokenizerHash !== model) {
    fail('ERR_ARG', `--data ${data} was made with ${theData}, but the model (${source.flag}) uses its tokenizer.json with sha256 ${model.slice(0, 16)}…: run kiln prepare --tokenizer ${source.dir}`);
  }
  if (model === undefined && shard.tokenizerHash !== undefined) {
    fail('ERR_ARG', `--data ${data} was made with ${theData}, but the model (${source.flag}) has no tokenizer.json (a byte or gpt2 model): prepare the data with its tokenizer`);
  }
}

export async function train(args: string[]): Promise<number> {
  const parsed = parseCommand('train', normalizeDashboardFlag(args));
  if (!parsed) return 0;
  const { values } = parsed;
  if (!values.data) fail('ERR_ARG', '--data DIR (from kiln prepare) is required');
  const explicitPreset = args.some((a) => a === '--preset' || a.startsWith('--preset='));
  if (values.from !== undefined && explicitPreset) fail('ERR_ARG', '--from and --preset both name the model: --from trains the checkpoint\'s own config (drop --preset)');
  if (values.from !== undefined && values.config !== undefined) fail('ERR_ARG', '--from and --config both name the model: --from trains the checkpoint\'s own config (drop --config)');
  if (values.from !== undefined && values.resume !== undefined) {
    fail('ERR_ARG', '--from starts a new run from a model\'s weights (fresh optimizer, step 0); --resume continues a run: pass one (to continue a --from run, --resume its checkpoint)');
  }
  if (values.config !== undefined && explicitPreset) fail('ERR_ARG', '--config and --preset both name the model: pass one');
  const resumed = values.resume !== undefined ? checkpointConfig(values.resume) : undefined;
  // --resume alone of a model that is no preset (a --from or --config run): the checkpoint's own config
  const ownConfig = resumed !== undefined && !explicitPreset && values.config === undefined &&
    !Object.values(PRESETS).some((p) => configDifferences(resumed, p).length === 0);
  const config = values.from !== undefined ? checkpointConfig(values.from)
    : values.config !== undefined ? configFile(values.config)
    : ownConfig ? resumed! : preset(values.preset);
  const modelName = values.from !== undefined ? `--from ${values.from}` : values.config !== undefined ? `--config ${values.config}` : ownConfig ? `--resume ${values.resume}` : `the ${values.preset} preset`;
  if (values.resume !== undefined && values.config !== undefined) {
    const differs = configDifferences(resumed!, config, ['checkpoint', `--config ${values.config}`]);
    if (differs.length) fail('ERR_CHECKPOINT', `--resume ${values.resume} holds another model than --config ${values.config} (${differs.join('; ')}): resume it with the config it was trained with`);
  } else if (values.resume !== undefined && !ownConfig) {
    // the config is checked here, before any model is built, and named field by field
    const trained = resumed!;
    const differs = configDifferences(trained, config, ['checkpoint', `--preset ${values.preset}`]);
    if (differs.length) {
      const match = Object.keys(PRESETS).find((name) => configDifferences(trained, PRESETS[name]).length === 0);
      fail('ERR_CHECKPOINT', `--resume ${values.resume} holds another model than --preset ${values.preset} (${differs.join('; ')}): ${match ? `it is the ${match} preset: pass --preset ${match}` : 'resume it with the config it was trained with'}`);
    }
  }
  // before starting ranks: each would refuse it
  checkZero1({ sync: values.sync as ParallelFlags['sync'], zero1: values.zero1, distributedMuon: !values['no-distributed-muon'] });
  const env = distEnvFromProcess();
  const out = values.out ?? join('runs', values.from !== undefined || values.config !== undefined || ownConfig ? 'model' : values.preset);
  // before anything starts: an --out holding a run is refused unless resumed or overwritten (rank 0 writes)
  const writer = (env?.rank ?? 0) === 0;
  if (writer) checkOut(out, { resume: values.resume, overwrite: values.overwrite });
  if (values.nproc !== undefined && !env && int(values.nproc, 'nproc') > 1) {
    // start N local ranks of this same command, each with torchrun's variables set
    const i = args.indexOf('--nproc');
    const rest = i >= 0 ? [...args.slice(0, i), ...args.slice(i + 2)] : args.filter((a) => !a.startsWith('--nproc='));
    return launchLocal(int(values.nproc, 'nproc'), [process.argv[1], 'train', ...rest]);
  }
  const quantBits = int(values['quant-bits'], 'quant-bits');
  if (![0, 2, 4, 8].includes(quantBits)) fail('ERR_ARG', `--quant-bits must be 0, 8, 4 or 2, got ${quantBits}`);
  const flags: ParallelFlags = {
    sync: values.sync as ParallelFlags['sync'], innerSteps: int(values['inner-steps'], 'inner-steps'), outerLr: num(values['outer-lr'], 'outer-lr'),
    outerMomentum: num(values['outer-momentum'], 'outer-momentum'), streamFragments: int(values['stream-fragments'], 'stream-fragments'),
    overlapSteps: values['overlap-steps'] !== undefined ? int(values['overlap-steps'], 'overlap-steps') : undefined, mixAlpha: num(values['mix-alpha'], 'mix-alpha'),
    quantBits: quantBits as ParallelFlags['quantBits'], bucketBytes: Math.round(num(values['bucket-mb'], 'bucket-mb') * 2 ** 20),
    bf16Reduce: values['bf16-reduce'], distributedMuon: !values['no-distributed-muon'], zero1: values.zero1, timeoutMs: Math.round(num(values['dist-timeout'], 'dist-timeout') * 1000),
    token: values['dist-token'] ?? process.env.KILN_DIST_TOKEN, bindHost: values['dist-bind'], storeBindHost: values['dist-store-bind'],
    baselineTokensPerSecond: values['baseline-tokens-per-second'] !== undefined ? num(values['baseline-tokens-per-second'], 'baseline-tokens-per-second') : undefined,
  };
  const shard = readShardInfo(join(values.data, 'train.bin'));
  const source = values.from !== undefined ? { flag: `--from ${values.from}`, dir: resolveCheckpoint(values.from) }
    : values.resume !== undefined ? { flag: `--resume ${values.resume}`, dir: resolveCheckpoint(values.resume) } : undefined;
  checkDataTokenizer(shard, values.data, source);
  if (shard.vocabSize > config.vocabSize) {
    fail('ERR_ARG', `the data uses ${describeTokenizer(shard.tokenizer, shard.tokenizerHash)} (${shard.vocabSize} ids): too many for ${modelName === `the ${values.preset} preset` ? `the ${values.preset} preset's` : `the model's (${modelName})`} vocabulary (${config.vocabSize})`);
  }
  const options: TrainOptions = {
    config, data: values.data, steps: int(values.steps, 'steps'), batch: int(values.batch, 'batch'),
    seqLen: values.seq ? int(values.seq, 'seq') : Math.min(config.context, 128),
    device: trainDevice(values.device, env?.localRank), accumulation: int(values.accumulation, 'accumulation'),
    muonLr: num(values['muon-lr'], 'muon-lr'), adamwLr: num(values['adamw-lr'], 'adamw-lr'), evalEvery: int(values['eval-every'], 'eval-every'),
    checkpointEvery: int(values['checkpoint-every'], 'checkpoint-every'), seed: int(values.seed, 'seed'), out,
    gradClip: num(values['grad-clip'], 'grad-clip'), recompute: values.recompute, ...(values.from !== undefined ? { from: values.from } : {}),
  };
  // a preset or --config on shards of a tokenizer.json: the checkpoints carry the one kiln prepare left beside them
  const dataTokenizer = join(values.data, 'tokenizer.json');
  if (!source && shard.tokenizerHash !== undefined && existsSync(dataTokenizer) && shardHashOf(tokenizerHash(dataTokenizer)) === shard.tokenizerHash) {
    options.tokenizerFiles = values.data;
  }
  checkTrainingDevice(options.device ?? 'cpu'); // before the rendezvous and the model's checks, which would name the wrong problem
  const dist = env ? await joinRun(env, options, flags) : undefined;
  if (values.zero1 && (dist?.comm.worldSize ?? 1) === 1) console.log('note: --zero1 shards the optimizer state across ranks; this run has one, so its state is whole');
  if (dist) options.parallel = dist.parallel;
  try {
    const trainer = new Trainer(options);
    if (values.resume) {
      await trainer.resume(values.resume);
      console.log(`resumed from ${values.resume} at step ${trainer.currentStep}`);
    }
    if (values.overwrite && writer) {
      const removed = clearRun(out);
      if (removed) console.log(`--overwrite: removed the run ${out} held (${removed})`);
    }
    // --dashboard [PORT]: a live page in this process (the writing rank's), fed by the trainer's step metrics
    const live = values.dashboard !== undefined && trainer.isWriter
      ? await attachTrainingDashboard(trainer, { ...dashboardOptionsFrom(values), name: options.out ?? values.preset })
      : undefined;
    if (live) console.log(`dashboard: ${live.dashboard.url}`);
    try {
      await runWithProgress(trainer, int(values['log-every'], 'log-every') || 10);
    } finally {
      live?.detach();
      await live?.dashboard.close();
      if (live) console.log(`dashboard closed; \`kiln dashboard ${options.out}\` opens this run again`);
    }
    // every rank takes part (parallel state may be gathered); rank 0 writes
    const saved = await trainer.save();
    if (trainer.isWriter) console.log(`${trainer.stopping ? 'stopped early; ' : ''}checkpoint: ${saved}`);
    trainer.close();
  } finally {
    await dist?.comm.close();
  }
  return 0;
}

export async function generate(args: string[]): Promise<number> {
  const parsed = parseCommand('generate', args);
  if (!parsed) return 0;
  const { values } = parsed;
  if (!values.checkpoint) fail('ERR_ARG', '--checkpoint DIR is required');
  // no prompt used to mean an empty one, silently
  if (values.prompt === undefined) fail('ERR_ARG', '--prompt TEXT is required: the text to continue (--prompt \'\' starts from a single space)');
  const dtype = values.dtype;
  if (dtype !== undefined && dtype !== 'f32' && dtype !== 'bf16') fail('ERR_ARG', `--dtype must be f32 or bf16, got ${dtype}`);
  const engine = await Engine.load(values.checkpoint, {
    device: parseDevice(values.device) as Device, tokenizer: values.tokenizer, computeDType: dtype as 'f32' | 'bf16' | undefined,
  });
  try {
    const prompt = values.prompt.length ? values.prompt : ' ';
    if (!values.prompt.length) process.stderr.write('note: --prompt is empty: generating from a single space\n');
    process.stdout.write(values.prompt);
    const started = performance.now();
    let end: StreamEnd | undefined;
    for await (const event of engine.stream(prompt, {
      maxTokens: int(values.tokens, 'tokens') || 1, temperature: num(values.temperature, 'temperature'), topK: int(values['top-k'], 'top-k'),
      topP: num(values['top-p'], 'top-p'), seed: int(values.seed, 'seed'),
    })) {
      process.stdout.write(event.text);
      if ('done' in event) end = event;
    }
    const seconds = (performance.now() - started) / 1000;
    if (end) {
      const decodeSeconds = (end.timings.totalMs - end.timings.ttftMs) / 1000;
      const decodeRate = end.usage.completionTokens > 1 && decodeSeconds > 0 ? ` (decode ${((end.usage.completionTokens - 1) / decodeSeconds).toFixed(1)} tokens/s)` : '';
      process.stderr.write(
        `\n${end.usage.completionTokens} tokens in ${seconds.toFixed(2)} s: ${(end.usage.completionTokens / seconds).toFixed(1)} tokens/s${decodeRate}, ` +
          `first token after ${end.timings.ttftMs.toFixed(0)} ms (${end.finishReason})\n`,
      );
    } else {
      process.stdout.write('\n');
    }
  } finally {
    await engine.close();
  }
  return 0;
}

/** npm start: train the tiny preset on the bundled corpus, save, and print a sample. */
export async function start(args: string[]): Promise<number> {
  const parsed = parseCommand('start', args);
  if (!parsed) return 0;
  const { values } = parsed;
  // the default directory is never overwritten: a second `npm start` trains into runs/tiny-2, and so on
  const out = values.out ?? freshRunDir(join('runs', 'tiny'));
  if (values.out !== undefined) checkOut(out, { overwrite: values.overwrite, canResume: false });
  console.log(formatInfo() + '\n');
  if (values.out === undefined && out !== join('runs', 'tiny')) console.log(`runs/tiny holds an earlier run: this one trains into ${out}\n`);
  const dataDir = join(process.env.KILN_CACHE_DIR ?? join(homedir(), '.cache', 'kiln'), 'data-byte');
  if (!existsSync(join(dataDir, 'train.bin'))) {
    console.log(`preparing the bundled corpus (nlp-corpus, byte tokenizer) into ${dataDir}`);
    prepareDocuments(await bundledCorpus(), dataDir, byteTokenizer);
  }
  const device = defaultDevice();
  if (device !== 'cpu') console.log(`note: CUDA training is not yet verified on a GPU (KILN_CUDA_TRAINING=1 enables it for kiln train); the main job trains tiny on cpu`);
  const trainer = new Trainer({
    config: preset('tiny'), data: dataDir, steps: int(values.steps, 'steps'), batch: 16, seqLen: 128, device: 'cpu', evalEvery: 100, out,
  });
  if (values.overwrite) {
    const removed = clearRun(out);
    if (removed) console.log(`--overwrite: removed the run ${out} held (${removed})`);
  }
  console.log(`training the tiny preset (${trainer.model.parameters.reduce((n, p) => n + p.value.numel, 0).toLocaleString()} parameters) for ${trainer.options.steps} steps of ${16 * 128} tokens on cpu`);
  const started = performance.now();
  const history = await runWithProgress(trainer, 50);
  const last = history[history.length - 1];
  const saved = await trainer.save();
  console.log(`\ntrained ${history.length} steps in ${((performance.now() - started) / 1000).toFixed(0)} s: loss ${history[0]?.loss.toFixed(3)} -> ${last?.loss.toFixed(3)}` +
    (last?.valLoss !== undefined ? `, validation ${last.valLoss.toFixed(3)}` : ''));
  console.log(`checkpoint (Hugging Face layout): ${saved}`);
  trainer.close();
  const prompt = 'The film was';
  const engine = await Engine.load(saved, { tokenizer: 'byte' });
  const sample = await engine.generate(prompt, { maxTokens: 120, temperature: 0.8, topK: 40, seed: 1, ignoreEos: true });
  await engine.close();
  console.log(`\nsample: ${prompt}${sample.text}`);
  return 0;
}
