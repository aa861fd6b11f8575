/**
 * A saved checkpoint, read by an independent implementation of transformers' LlamaForCausalLM
 * math (bench/peers/hf_llama_logits.py, PyTorch, f64), gives kiln's logits. Skipped when
 * python3 with torch is not installed (Debian: python3-torch).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import { tensor } from '../../lib/index.js';
import { LlamaModel } from '../../lib/model/llama.js';
import { preset } from '../../lib/model/config.js';
import { saveCheckpoint } from '../../lib/io/checkpoint.js';
import { assertClose } from '../helpers.js';

const test = suite('Hugging Face layout');
const python = process.env.KILN_PYTHON ?? '/usr/bin/python3';
const hasTorch = spawnSync(python, ['-c', 'import torch'], { encoding: 'utf8' }).status === 0;
const script = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bench', 'peers', 'hf_llama_logits.py');

for (const tied of [false, true]) {
  (hasTorch ? test : test.skip)(`logits match HF LlamaForCausalLM math from the saved files${tied ? ' (tied embeddings)' : ''}`, async () => {
    const config = { ...preset('tiny'), dModel: 64, layers: 2, heads: 4, kvHeads: 2, headDim: 16, ffn: 96, context: 32, tiedEmbeddings: tied, ropeTheta: 5000 };
    const model = new LlamaModel(config, { seed: 9 });
    const dir = join(mkdtempSync(join(tmpdir(), 'kiln-hf-')), 'ckpt');
    await saveCheckpoint(dir, config, model.namedWeights(), undefined, undefined);
    const ids = [Array.from({ length: 12 }, (_, i) => (i * 37) % 256), Array.from({ length: 12 }, (_, i) => (i * 11 + 5) % 256)];
    const ours = await model.forward(tensor(Int32Array.from(ids.flat()), { shape: [2, 12] }), false).toArray();
    const r = spawnSync(python, [script, dir], { input: JSON.stringify(ids), encoding: 'utf8', maxBuffer: 1 << 26 });
    if (r.status !== 0) throw new Error(r.stderr);
    const theirs = (JSON.parse(r.stdout) as number[][][]).flat(2);
    assertClose(ours, theirs, 1e-4, 1e-5, 'logits');
    model.dispose();
  });
}

test.run();
