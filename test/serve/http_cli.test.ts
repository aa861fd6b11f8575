/** `kiln serve` as a process: loopback by default, refusal without a key elsewhere, SIGTERM drains. */
import { type ChildProcess, spawn } from 'node:child_process';
import { createServer as createNetServer } from 'node:net';
import { dirname, join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import OpenAI from 'openai';
import { raw, trainedCheckpoint, waitFor } from './http_fixture.js';

const test = suite('serve: kiln serve');
const cli = join(process.cwd(), 'dist', 'lib', 'cli', 'cli.js');

interface Proc {
  child: ChildProcess;
  out: () => string;
  exited: Promise<number | null>;
}

function run(args: string[], env: Record<string, string> = {}): Proc {
  const child = spawn(process.execPath, [cli, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, out: () => out, exited };
}

test('refuses a non-loopback host without an API key, with a clear message', async () => {
  const p = run(['serve', '--checkpoint', await trainedCheckpoint(), '--host', '0.0.0.0', '--port', '0']);
  assert.is(await p.exited, 1);
  assert.match(p.out(), /refusing to listen on 0\.0\.0\.0 without an API key/);
});

test('serves on 127.0.0.1; SIGTERM lets the in-flight stream finish, then exits 0', async () => {
  const p = run(['serve', '--checkpoint', await trainedCheckpoint(), '--port', '0', '--model-name', 'tiny-test']);
  try {
    await waitFor(() => /ready/.test(p.out()), 30_000, `the server to be ready: ${p.out()}`);
    const port = Number(/listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(p.out())![1]);
    assert.is((await raw(port, 'GET', '/health')).status, 200);
    const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'none', maxRetries: 0 });
    const stream = await client.completions.create({ model: 'tiny-test', prompt: 'Once upon a time', max_tokens: 150, temperature: 0, ignore_eos: true, stream: true } as OpenAI.CompletionCreateParamsStreaming);
    const iterator = stream[Symbol.asyncIterator]();
    await iterator.next();
    p.child.kill('SIGTERM');
    let chunks = 1;
    let finish: string | null = null;
    for (let n = await iterator.next(); !n.done; n = await iterator.next()) {
      chunks++;
      finish = n.value.choices[0]?.finish_reason ?? finish;
    }
    assert.is(finish, 'length', 'the in-flight request ran to its end');
    assert.ok(chunks > 100);
    assert.is(await p.exited, 0);
    assert.match(p.out(), /stopped \(1 finished, 0 cancelled/);
  } finally {
    p.child.kill('SIGKILL');
  }
});

test('--dashboard serves the live serving panel on 127.0.0.1 next to the API, and closes with it', async () => {
  const p = run(['serve', '--checkpoint', await trainedCheckpoint(), '--port', '0', '--dashboard', '0']);
  try {
    await waitFor(() => /dashboard: http/.test(p.out()), 30_000, `the dashboard to start: ${p.out()}`);
    const url = /dashboard: (http:\/\/127\.0\.0\.1:\d+\S*)/.exec(p.out());
    assert.ok(url, `the dashboard binds 127.0.0.1: ${p.out()}`);
    const page = await fetch(url![1]);
    assert.is(page.status, 200);
    assert.match(await page.text(), /<html/i);
    const metrics = await (await fetch(new URL('/metrics', url![1]))).text();
    assert.match(metrics, /kiln_serve_/);
    p.child.kill('SIGTERM');
    assert.is(await p.exited, 0);
  } finally {
    p.child.kill('SIGKILL');
  }
});

test('serves a run\'s latest pointer under the run\'s name (the README\'s commands)', async () => {
  const runDir = dirname(await trainedCheckpoint());
  const p = run(['serve', '--checkpoint', join(runDir, 'latest'), '--port', '0']);
  try {
    await waitFor(() => /ready/.test(p.out()), 30_000, `the server to be ready: ${p.out()}`);
    assert.match(p.out(), /ready: model 'run'/);
    const port = Number(/listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(p.out())![1]);
    const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'none', maxRetries: 0 });
    const r = await client.chat.completions.create({ model: 'run', messages: [{ role: 'user', content: 'Hello' }], max_completion_tokens: 2 });
    assert.is(r.model, 'run');
    p.child.kill('SIGTERM');
    assert.is(await p.exited, 0);
  } finally {
    p.child.kill('SIGKILL');
  }
});

test('a path that is not a checkpoint fails before anything listens', async () => {
  const p = run(['serve', '--checkpoint', join(dirname(await trainedCheckpoint()), 'nothing-here'), '--port', '0']);
  assert.is(await p.exited, 1);
  assert.match(p.out(), /kiln: ERR_CHECKPOINT: .*nothing-here does not exist/);
  assert.not.match(p.out(), /listening/);
});

test('a port in use is one line naming the port and the fix, not a stack trace', async () => {
  const blocker = createNetServer();
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', () => resolve()));
  const port = (blocker.address() as { port: number }).port;
  try {
    const p = run(['serve', '--checkpoint', await trainedCheckpoint(), '--port', String(port)]);
    assert.is(await p.exited, 1);
    assert.match(p.out(), new RegExp(`kiln: ERR_ARG: port ${port} on 127\\.0\\.0\\.1 is in use .*--port 0`));
    assert.not.match(p.out(), /EADDRINUSE|\n\s+at /);
  } finally {
    blocker.close();
  }
});

test.run();
