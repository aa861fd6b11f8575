/** The sampler on its own (lib/serve/sampler.ts): filters, penalties, seeded draws, and its cost on a 50k-vocabulary row. */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { full, ops, randn } from '../../lib/index.js';
import { SequenceSampler, resolveSampling, topKIndices } from '../../lib/serve/sampler.js';
import { assertKilnError } from '../helpers.js';

const test = suite('serve: sampler');

test('sampler: greedy, top-k, top-p, min-p, penalties and seeded reproducibility', async () => {
  const V = 8;
  const logits = () => Float32Array.from([1, 3, 2, 0.5, 3, -1, 2.5, 0]);
  const scratch = new Float32Array(V);
  const draw = (params: object, n = 400, prompt: number[] = []) => {
    const s = new SequenceSampler(resolveSampling({ seed: 7, ...params }, V), prompt);
    const counts = new Array(V).fill(0);
    for (let i = 0; i < n; i++) counts[s.sample(logits(), scratch).token]++;
    return counts;
  };
  assert.is(draw({ temperature: 0 }, 1).indexOf(1), 1, 'greedy takes the first of tied maxima');
  assert.equal(Array.from(topKIndices(logits(), 3)), [1, 4, 6]);
  const k2 = draw({ topK: 2 });
  assert.ok(k2[1] > 0 && k2[4] > 0 && k2[1] + k2[4] === 400, 'top-k 2 keeps ids 1 and 4');
  // top-p 0.5: ids 1 and 4 hold 2·e³/Σ ≈ 0.57 of the mass
  const p = draw({ topP: 0.5 });
  assert.is(p[1] + p[4], 400);
  const p2 = draw({ topP: 0.75 });
  assert.is(p2[1] + p2[4] + p2[6], 400, 'top-p 0.75 adds the next token');
  // min-p 0.5: keep p >= 0.5·p_max, i.e. logits >= 3 - ln 2 ≈ 2.31
  const m = draw({ minP: 0.5 });
  assert.is(m[1] + m[4] + m[6], 400);
  assert.ok(m[6] > 0);
  // a repetition penalty on ids 1 and 4 (seen in the prompt) hands greedy to id 6
  assert.is(draw({ temperature: 0, repetitionPenalty: 2 }, 1, [1, 4]).indexOf(1), 6);
  // presence penalty: greedy moves off each id it produced
  const s = new SequenceSampler(resolveSampling({ temperature: 0, presencePenalty: 2 }, V), []);
  const seq: number[] = [];
  for (let i = 0; i < 3; i++) {
    const t = s.sample(logits(), scratch).token;
    s.observe(t);
    seq.push(t);
  }
  assert.equal(seq, [1, 4, 6]);
  // the same seed, the same draws; another seed, other draws
  const one = draw({ temperature: 1 }, 50).join();
  assert.is(draw({ temperature: 1 }, 50).join(), one);
  assert.is.not(draw({ temperature: 1, seed: 8 }, 50).join(), one);
  // logprobs are the model's (before penalties), the top list sorted
  const lp = new SequenceSampler(resolveSampling({ temperature: 0, logprobs: 2, repetitionPenalty: 3 }, V), [1]).sample(logits(), scratch);
  const lse = Math.log(Array.from(logits()).reduce((a, l) => a + Math.exp(l), 0));
  assert.is(lp.token, 4);
  assert.ok(Math.abs(lp.logprob! - (3 - lse)) < 1e-6);
  assert.equal(lp.top!.map((t) => t.token), [1, 4]);
  await assertKilnError(() => resolveSampling({ topK: -1 }, V), 'ERR_ARG');
  await assertKilnError(() => resolveSampling({ stopTokenIds: [8] }, V), 'ERR_ARG');
});

test('sampling 50k-vocabulary rows is cheap next to the model', async () => {
  const V = 50304;
  const row = new Float32Array(V);
  for (let i = 0; i < V; i++) row[i] = Math.sin(i * 12.9898) * 8;
  const scratch = new Float32Array(V);
  const cost = (params: object) => {
    const s = new SequenceSampler(resolveSampling({ seed: 1, ...params }, V), []);
    const times: number[] = [];
    for (let i = 0; i < 25; i++) {
      const copy = row.slice();
      const started = performance.now();
      s.sample(copy, scratch);
      if (i >= 5) times.push(performance.now() - started); // after the JIT warmed up
    }
    return times.sort((a, b) => a - b)[times.length >> 1];
  };
  // The model, measured in the same run (an absolute bound in ms fails when other work shares the
  // cores): the classifier head's product of one 125m decode step, 768 x 50304, only a part of
  // what every decode step computes.
  const headMs = await (async () => {
    using x = randn([1, 768], { seed: 1 });
    using weight = full([768, V], 0.01); // the values do not change the time
    const times: number[] = [];
    for (let i = 0; i < 9; i++) {
      const started = performance.now();
      using logits = ops.matmul(x, weight);
      await logits.toArray();
      if (i >= 2) times.push(performance.now() - started); // after the first calls warmed up
    }
    return times.sort((a, b) => a - b)[times.length >> 1];
  })();
  const greedy = cost({ temperature: 0 });
  const topP = cost({ temperature: 0.8, topP: 0.9 });
  const topK = cost({ temperature: 0.8, topK: 40 });
  // the row is flat: a nucleus of thousands of tokens, a worst case
  for (const [name, ms] of [['greedy', greedy], ['top-p', topP], ['top-k', topK]] as const) {
    assert.ok(ms < headMs, `${name} sampling took ${ms.toFixed(2)} ms per row, the head's product of one decode step ${headMs.toFixed(2)} ms`);
  }
});

test.run();
