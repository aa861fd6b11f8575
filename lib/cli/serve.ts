/**
 * `kiln serve --checkpoint DIR`: loads the engine and puts it on the network (lib/serve/http.ts).
 * Listens first (GET /health is 503 while the model loads), binds 127.0.0.1 unless told otherwise
 * and refuses any other address without an API key; SIGTERM or SIGINT drains: the listener closes,
 * in-flight requests finish (or are cancelled at the deadline), then the process exits 0.
 */
import { parseDevice } from '../device.js';
import { KilnError, fail } from '../errors.js';
import { resolveCheckpoint } from '../io/checkpoint.js';
import { Engine, type EngineLoadOptions } from '../serve/engine.js';
import { createServer } from '../serve/http/index.js';
import type { ServingEngine } from '../serve/types.js';
import { attachServingDashboard } from '../monitor/dashboard.js';
import { dashboardOptionsFrom, normalizeDashboardFlag } from './monitor.js';
import { parseCommand } from './commands.js';

/** True for addresses only this machine can reach. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127(\.\d{1,3}){3}$/.test(host) || host === '::ffff:127.0.0.1';
}

function integer(value: string | undefined, name: string, min: number, max: number): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) fail('ERR_ARG', `${name} takes an integer from ${min} to ${max}, got '${value}'`);
  return n;
}

export async function serveCommand(args: string[]): Promise<number> {
  const parsed = parseCommand('serve', normalizeDashboardFlag(args));
  if (!parsed) return 0;
  const { values } = parsed;
  if (!values.checkpoint) fail('ERR_ARG', 'kiln serve needs --checkpoint DIR');
  const host = values.host!;
  const port = integer(values.port, '--port', 0, 65535)!;
  // a key on the command line shows in `ps`; KILN_API_KEY keeps it out of sight
  const apiKey = values['api-key'] ?? process.env.KILN_API_KEY;
  if (apiKey !== undefined && apiKey.length < 8) fail('ERR_ARG', 'the API key must have at least 8 characters');
  if (!isLoopback(host) && apiKey === undefined) {
    fail('ERR_ARG', `refusing to listen on ${host} without an API key: other machines could use the model. Pass --api-key KEY (or set KILN_API_KEY), or keep the default --host 127.0.0.1`);
  }
  const drainMs = integer(values['drain-seconds'], '--drain-seconds', 0, 3600)! * 1000;
  const kvMb = integer(values['kv-cache-mb'], '--kv-cache-mb', 1, 1 << 20);
  const options: EngineLoadOptions = {
    device: parseDevice(values.device!),
    ...(values['model-name'] !== undefined ? { modelName: values['model-name'] } : {}),
    ...(kvMb !== undefined ? { kvCacheBytes: kvMb * 2 ** 20 } : {}),
    ...(values['max-running'] !== undefined ? { maxRunningSequences: integer(values['max-running'], '--max-running', 1, 1 << 16) } : {}),
    ...(values['max-queued'] !== undefined ? { maxQueuedRequests: integer(values['max-queued'], '--max-queued', 1, 1 << 24) } : {}),
    ...(values['max-batch-tokens'] !== undefined ? { maxBatchTokens: integer(values['max-batch-tokens'], '--max-batch-tokens', 1, 1 << 20) } : {}),
  };

  let resolveEngine!: (engine: ServingEngine) => void;
  let rejectEngine!: (error: unknown) => void;
  const loading = new Promise<ServingEngine>((resolve, reject) => {
    resolveEngine = resolve;
    rejectEngine = reject;
  });
  loading.catch(() => undefined); // handled below
  // a path that is no checkpoint fails here, before anything listens
  const checkpoint = resolveCheckpoint(values.checkpoint);
  const server = createServer(loading, { apiKey, ...(values['model-name'] !== undefined ? { modelName: values['model-name'] } : {}) });
  try {
    await server.listen({ host, port });
  } catch (error) {
    await server.close();
    const code = (error as { code?: unknown }).code;
    if (code === 'EADDRINUSE') throw new KilnError('ERR_ARG', `port ${port} on ${host} is in use (another kiln serve?): pass --port N for another port, or --port 0 for any free one`, { cause: error });
    if (code === 'EADDRNOTAVAIL' || code === 'EACCES') throw new KilnError('ERR_ARG', `cannot listen on ${host}:${port} (${code}): pass another --host or --port`, { cause: error });
    throw error;
  }
  const address = server.server.address();
  const bound = typeof address === 'object' && address ? address.port : port;
  const shown = host.includes(':') ? `[${host}]` : host;
  console.log(`kiln serve: listening on http://${shown}:${bound} (loading ${checkpoint}${apiKey ? '; API key required' : ''})`);

  let engine: Engine;
  try {
    engine = await Engine.load(values.checkpoint!, options);
  } catch (error) {
    rejectEngine(error);
    await server.close();
    throw error;
  }
  resolveEngine(engine);
  await loading;
  console.log(`kiln serve: ready: model '${server.kiln.engine?.modelName}' (context ${engine.contextLength}, ${engine.options.numBlocks} KV blocks of ${engine.options.blockSize}) on ${values.device}`);
  // --dashboard [PORT]: the live serving panel in this process (127.0.0.1 unless --dashboard-host with a token)
  const dashboard = values.dashboard !== undefined ? await attachServingDashboard(engine, dashboardOptionsFrom(values)) : undefined;
  if (dashboard) console.log(`kiln serve: dashboard: ${dashboard.url}`);

  const signal = await new Promise<string>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  console.log(`kiln serve: ${signal}: draining (in flight: ${server.kiln.inFlight}, deadline ${drainMs / 1000} s)`);
  // a second signal stops at once
  const force = () => {
    console.error('kiln serve: second signal: exiting now');
    process.exit(1);
  };
  process.once('SIGTERM', force);
  process.once('SIGINT', force);
  const outcome = await server.kiln.shutdown({ deadlineMs: drainMs });
  await dashboard?.close();
  await engine.close('cancel');
  console.log(`kiln serve: stopped (${outcome.finished} finished, ${outcome.cancelled} cancelled at the deadline)`);
  return 0;
}

