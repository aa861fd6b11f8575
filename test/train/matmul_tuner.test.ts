/**
 * `kiln tune`'s list of GEMMs comes from the model's own calls (lib/tune.ts modelMatmulCalls):
 * recorded on the CPU from a tiny model's training step with bf16 activations, it holds the
 * weight gradients (bf16 operands, f32 output, beta 1), the residual epilogues of the o and down
 * projections, the input gradients accumulated with beta 1, and the classifier's GEMMs: every
 * key the step looks up, not a separate shape list.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { ops, zeros } from '../../lib/index.js';
import type { ModelConfig } from '../../lib/model/config.js';
import { recordMatmulCalls } from '../../lib/ops/matmul.js';
import { callName, distinctCalls, modelMatmulCalls, tuneMatmul } from '../../lib/train/matmul_tuner.js';
import { assertKilnError } from '../helpers.js';

const test = suite('kiln tune calls');

const config: ModelConfig = {
  vocabSize: 96, dModel: 64, layers: 2, heads: 4, kvHeads: 2, headDim: 16, ffn: 160, context: 32,
  ropeTheta: 10000, normEps: 1e-5, tiedEmbeddings: false,
};

test('the recorder sees every matmul with its dtypes and the params the binding got', () => {
  using a = zeros([3, 8], { dtype: 'bf16' });
  using b = zeros([5, 8], { dtype: 'bf16' });
  using out = zeros([3, 5]);
  const { calls } = recordMatmulCalls(() => ops.matmul(a, b, { transB: true, out, beta: 1 }));
  assert.is(calls.length, 1);
  const c = calls[0];
  assert.equal([c.device, c.abDType, c.outDType, c.aNumel, c.bNumel, c.outNumel, c.residualNumel], ['cpu', 'bf16', 'f32', 24, 40, 15, null]);
  assert.equal([c.params.M, c.params.N, c.params.K, c.params.transA, c.params.transB, c.params.beta, c.params.epilogue], [3, 5, 8, false, true, 1, 0]);
  assert.throws(() => recordMatmulCalls(() => recordMatmulCalls(() => 0)), /already recording/);
});

test("one training step's distinct GEMMs, recorded from the model", () => {
  const [B, T] = [2, 16];
  const N = B * T;
  const calls = modelMatmulCalls(config, { device: 'cpu', batch: B, seq: T, computeDType: 'bf16' });
  const names = calls.map(callName);
  const has = (pred: (c: (typeof calls)[number]) => boolean, what: string) => assert.ok(calls.some(pred), `${what} missing from:\n${names.join('\n')}`);
  const d = config.dModel, q = config.heads * config.headDim, kv = config.kvHeads * config.headDim, f = config.ffn;
  // forward projections, bf16 out
  has((c) => c.abDType === 'bf16' && c.outDType === 'bf16' && c.params.transB && c.params.M === N && c.params.N === q && c.params.K === d && c.params.epilogue === 0, 'q projection');
  has((c) => c.params.transB && c.params.N === 2 * f && c.params.K === d, 'gate+up projection');
  // o and down projections fuse the residual add
  has((c) => c.params.epilogue === 1 && c.params.N === d && c.params.K === q && c.residualNumel === N * d, 'o projection + residual');
  has((c) => c.params.epilogue === 1 && c.params.N === d && c.params.K === f, 'down projection + residual');
  // weight gradients: bf16 operands into the f32 gradient, beta 1
  for (const [out, inner] of [[q, d], [kv, d], [d, q], [2 * f, d], [d, f]]) {
    has((c) => c.params.transA && c.params.beta === 1 && c.abDType === 'bf16' && c.outDType === 'f32' && c.params.M === out && c.params.N === inner && c.params.K === N, `weight gradient ${out}x${inner}`);
  }
  // input gradients, one accumulated (k and v add into q's)
  has((c) => !c.params.transA && !c.params.transB && c.params.beta === 1 && c.params.N === d && c.params.K === kv, 'k/v input gradient, beta 1');
  // the classifier: logits, dy and the head's weight gradient
  has((c) => c.params.transB && c.params.N === config.vocabSize, 'logits');
  has((c) => c.params.transA && c.params.M === config.vocabSize && c.outDType === 'f32' && c.params.beta === 1, 'head weight gradient');
  // distinct by tune key: no duplicate signature
  assert.is(distinctCalls(calls).length, calls.length);
  // the old fixed list (output dtype = input dtype, beta 0, no epilogue) covered none of these
  assert.ok(calls.filter((c) => c.outDType === 'f32' || c.params.beta !== 0 || c.params.epilogue !== 0).length >= 8);
});

test('tuning is for CUDA devices', async () => {
  const calls = modelMatmulCalls(config, { device: 'cpu', batch: 1, seq: 8 });
  await assertKilnError(() => tuneMatmul(calls.slice(0, 1)), 'ERR_DEVICE');
  await assertKilnError(() => modelMatmulCalls(config, { device: 'cpu', batch: 1, seq: 64 }), 'ERR_ARG');
});

test.run();
