/**
 * The live dashboard: an HTTP server in the training or serving process (127.0.0.1 unless told
 * otherwise; any other host needs a token) that serves one page and its assets (uPlot from npm,
 * never a CDN), pushes every step and serving sample over Server-Sent Events, and exposes
 * /metrics for Prometheus. The process publishes figures it already has; the page only draws.
 *
 *   GET /            the page          GET /assets/*   uPlot and the page's script and style
 *   GET /events      SSE: `snapshot` (everything so far), then `step`, `run`, `serve` events
 *   GET /api/state   the same snapshot as JSON          GET /metrics   Prometheus text format
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, fail } from '../errors.js';
import type { StepMetrics } from '../train/trainer.js';
import { DashboardMetrics } from './prometheus.js';
import { ServingFeed, type ServingFeedOptions, type ServingSample, type ServingSource } from './serving.js';
import { type RunStatus, type StepSource, type TrainingPoint, TrainingRun, toTrainingPoint } from './training.js';

export interface DashboardOptions {
  /** TCP port (default 8788; 0 = any free port) */
  port?: number;
  /** interface to bind (default 127.0.0.1); any other needs `token` */
  host?: string;
  /** required on every request (Authorization: Bearer TOKEN or ?token=TOKEN) when set */
  token?: string;
  /** page title */
  title?: string;
}

export const DEFAULT_DASHBOARD_PORT = 8788;

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);
/** serving samples kept (a day at one per second); older ones are dropped */
const MAX_SERVING_SAMPLES = 86_400;
/** a client that falls this far behind is dropped rather than buffered without bound */
const MAX_CLIENT_BACKLOG = 16 << 20;

function optionsObject<T>(options: unknown, what: string): Partial<T> {
  if (options === undefined) return {};
  if (!options || typeof options !== 'object' || Array.isArray(options)) fail('ERR_ARG', `${what} must be an object, got ${describe(options)}`);
  return options as Partial<T>;
}

/** Refuses what is not a ServingSource (an engine), before anything starts. */
function checkServingSource(engine: unknown): ServingSource {
  const e = engine as Partial<ServingSource> | null;
  if (!e || typeof e !== 'object' || typeof e.stats !== 'function' || typeof e.onRequestFinished !== 'function') {
    fail('ERR_ARG', `the dashboard needs a serving engine (stats and onRequestFinished), got ${describe(engine)}`);
  }
  if (e.modelName !== undefined && typeof e.modelName !== 'string') fail('ERR_ARG', `engine.modelName must be a string, got ${describe(e.modelName)}`);
  return e as ServingSource;
}

/** Refuses what is not a StepSource (a Trainer). */
function checkStepSource(trainer: unknown): StepSource {
  const t = trainer as Partial<StepSource> | null;
  if (!t || typeof t !== 'object' || typeof t.onStep !== 'function' || !t.options || typeof t.options !== 'object') {
    fail('ERR_ARG', `the dashboard needs a trainer (onStep and options.steps), got ${describe(trainer)}`);
  }
  const steps = t.options.steps;
  if (typeof steps !== 'number' || !Number.isSafeInteger(steps) || steps < 0) fail('ERR_ARG', `trainer.options.steps must be a non-negative integer, got ${describe(steps)}`);
  return t as StepSource;
}

/** lib/monitor/assets, from lib/monitor (ts-node style) or dist/lib/monitor (compiled). */
function assetsDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let depth = 0; depth < 4; depth++, dir = dirname(dir)) {
    const candidate = join(dir, 'lib', 'monitor', 'assets');
    if (existsSync(join(candidate, 'dashboard.html'))) return candidate;
  }
  return fail('ERR_INTERNAL', 'the dashboard assets (lib/monitor/assets) are missing from this installation');
}

/** uPlot's browser build and stylesheet from node_modules (bundled into the page, never fetched from a CDN). */
export function uplotAssets(): { js: string; css: string } {
  const require = createRequire(import.meta.url);
  const dist = dirname(require.resolve('uplot'));
  return { js: readFileSync(join(dist, 'uPlot.iife.min.js'), 'utf8'), css: readFileSync(join(dist, 'uPlot.min.css'), 'utf8') };
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

interface Snapshot {
  title: string;
  runs: (RunStatus & { data: TrainingPoint[] })[];
  serving?: { model?: string; samples: ServingSample[] };
}

export class Dashboard {
  readonly metrics = new DashboardMetrics();
  private readonly runs: TrainingRun[] = [];
  private readonly clients = new Set<ServerResponse>();
  private serving?: { feed: ServingFeed; model?: string; timer: NodeJS.Timeout; unsubscribe: () => void };
  private readonly assets = new Map<string, { type: string; body: Buffer }>();
  private readonly keepAlive: NodeJS.Timeout;
  private readonly tokenDigest?: Buffer;
  private closed = false;

  private constructor(
    private readonly server: Server,
    readonly host: string,
    readonly port: number,
    private readonly options: DashboardOptions,
  ) {
    if (options.token) this.tokenDigest = digest(options.token);
    const dir = assetsDir();
    const uplot = uplotAssets();
    this.assets.set('/assets/uPlot.iife.min.js', { type: 'text/javascript; charset=utf-8', body: Buffer.from(uplot.js) });
    this.assets.set('/assets/uPlot.min.css', { type: 'text/css; charset=utf-8', body: Buffer.from(uplot.css) });
    this.assets.set('/assets/dashboard.js', { type: 'text/javascript; charset=utf-8', body: readFileSync(join(dir, 'dashboard.js')) });
    this.assets.set('/assets/dashboard.css', { type: 'text/css; charset=utf-8', body: readFileSync(join(dir, 'dashboard.css')) });
    this.assets.set('/', { type: 'text/html; charset=utf-8', body: readFileSync(join(dir, 'dashboard.html')) });
    // a comment line every 15 s keeps proxies from closing idle streams
    this.keepAlive = setInterval(() => this.broadcastRaw(': keep-alive\n\n'), 15_000).unref();
    server.on('request', (req, res) => this.handle(req, res));
  }

  /** Starts the server; resolves once it listens. */
  static async start(dashboardOptions: DashboardOptions = {}): Promise<Dashboard> {
    const o = optionsObject<DashboardOptions>(dashboardOptions, 'dashboard options');
    // read each option once (a getter could answer differently the second time)
    const options: DashboardOptions = { host: o.host, port: o.port, token: o.token, title: o.title };
    if (options.host !== undefined && (typeof options.host !== 'string' || !options.host)) fail('ERR_ARG', `dashboard host must be a non-empty string, got ${describe(options.host)}`);
    if (options.token !== undefined && typeof options.token !== 'string') fail('ERR_ARG', `a dashboard token must be a string, got ${describe(options.token)}`);
    if (options.title !== undefined && typeof options.title !== 'string') fail('ERR_ARG', `a dashboard title must be a string, got ${describe(options.title)}`);
    const host = options.host ?? '127.0.0.1';
    const port = options.port ?? DEFAULT_DASHBOARD_PORT;
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 0 || port > 65535) fail('ERR_ARG', `dashboard port must be an integer 0..65535, got ${describe(port)}`);
    if (!LOOPBACK.has(host) && !options.token) {
      fail('ERR_ARG', `the dashboard listens on ${host}, beyond this machine: give it a token (--dashboard-token or KILN_DASHBOARD_TOKEN)`);
    }
    if (options.token !== undefined && options.token.length < 16) fail('ERR_ARG', 'a dashboard token must be at least 16 characters');
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) =>
        reject(e.code === 'EADDRINUSE' ? new Error(`port ${port} on ${host} is in use (pick another, or 0 for any free port)`) : e),
      );
      server.listen(port, host, () => resolve());
    }).catch((e: Error) => fail('ERR_ARG', `the dashboard cannot listen: ${e.message}`));
    const address = server.address();
    const bound = typeof address === 'object' && address ? address.port : port;
    return new Dashboard(server, host, bound, options);
  }

  /** The page's address (with the token when one is set). */
  get url(): string {
    const host = this.host.includes(':') ? `[${this.host}]` : this.host === '0.0.0.0' ? '127.0.0.1' : this.host;
    return `http://${host}:${this.port}/${this.options.token ? `?token=${encodeURIComponent(this.options.token)}` : ''}`;
  }

  // ---- training ---------------------------------------------------------------------------

  /** A new training run on the page; feed it with `addStep`. */
  addRun(name: string, runOptions: { totalSteps?: number; source?: RunStatus['source'] } = {}): TrainingRun {
    if (typeof name !== 'string') fail('ERR_ARG', `a run name must be a string, got ${describe(name)}`);
    const o = optionsObject<{ totalSteps?: number; source?: RunStatus['source'] }>(runOptions, 'run options');
    const options = { totalSteps: o.totalSteps, source: o.source };
    if (options.totalSteps !== undefined && (typeof options.totalSteps !== 'number' || !Number.isSafeInteger(options.totalSteps) || options.totalSteps < 0)) {
      fail('ERR_ARG', `totalSteps must be a non-negative integer, got ${describe(options.totalSteps)}`);
    }
    if (options.source !== undefined && options.source !== 'live' && options.source !== 'file') fail('ERR_ARG', `a run's source must be 'live' or 'file', got ${describe(options.source)}`);
    const run = new TrainingRun(this.runs.length, name, options.source ?? 'live', options.totalSteps);
    this.runs.push(run);
    this.broadcast('run', run.status());
    return run;
  }

  /** Appends one step (a StepMetrics or a metrics.jsonl record) to a run and pushes it to the page. */
  addStep(run: TrainingRun, record: StepMetrics | Record<string, unknown>, now?: number): boolean {
    this.checkRun(run);
    if (now !== undefined && (typeof now !== 'number' || !Number.isFinite(now))) fail('ERR_ARG', `now must be a finite number (ms), got ${describe(now)}`);
    const point = toTrainingPoint(record);
    if (!point) return false;
    run.add(point, now);
    const status = run.status();
    this.metrics.trainingStep(run.name, point, status);
    if (this.clients.size > 0) this.broadcast('step', { run: run.id, point, status });
    return true;
  }

  /** Sets a run's state (finished, stopped early, idle, or running again) and tells the page. */
  /** Refuses a run this dashboard did not create (addRun). */
  private checkRun(run: unknown): void {
    if (!(run instanceof TrainingRun) || this.runs[run.id] !== run) fail('ERR_ARG', `not a run of this dashboard (addRun makes one), got ${describe(run)}`);
  }

  finishRun(run: TrainingRun, state: RunStatus['state'] = 'finished'): void {
    this.checkRun(run);
    run.state = state;
    this.broadcast('run', run.status());
  }

  /** Drops a run's history (its metrics file was replaced) and tells the page. */
  resetRun(run: TrainingRun): void {
    this.checkRun(run);
    run.reset();
    this.broadcast('run', run.status());
  }

  /** Publishes every step a Trainer completes; returns the detach function. */
  attachTrainer(trainer: StepSource, name = 'train'): { run: TrainingRun; detach: () => void } {
    checkStepSource(trainer);
    if (typeof name !== 'string') fail('ERR_ARG', `a run name must be a string, got ${describe(name)}`);
    const run = this.addRun(name, { totalSteps: trainer.options.steps });
    const unsubscribe = trainer.onStep((m) => {
      this.addStep(run, m, Date.now());
      if (m.step >= trainer.options.steps) this.finishRun(run);
    });
    return {
      run,
      detach: () => {
        unsubscribe();
        if (run.state === 'running') this.finishRun(run, trainer.currentStep >= trainer.options.steps ? 'finished' : 'stopped');
      },
    };
  }

  // ---- serving ----------------------------------------------------------------------------

  /** Samples the engine every `intervalMs` (default 1000) and feeds finished requests to the latency window. */
  attachServing(engine: ServingSource, servingOptions: ServingFeedOptions & { intervalMs?: number } = {}): () => void {
    checkServingSource(engine);
    const options = optionsObject<ServingFeedOptions & { intervalMs?: number }>(servingOptions, 'serving options');
    if (this.serving) fail('ERR_ARG', 'this dashboard already shows a serving engine');
    const intervalMs = options.intervalMs ?? 1000;
    if (typeof intervalMs !== 'number' || !(intervalMs >= 50)) fail('ERR_ARG', `the serving sample interval must be at least 50 ms, got ${describe(intervalMs)}`);
    const feed = new ServingFeed(options);
    const prom = this.metrics.serving(engine);
    const unsubscribe = engine.onRequestFinished((record) => {
      feed.add(record);
      prom.record(record.timings.ttftMs, record.interTokenMs ?? []);
    });
    const tick = () => {
      const sample = feed.sample(engine.stats());
      if (feed.samples.length > MAX_SERVING_SAMPLES) feed.samples.splice(0, feed.samples.length - MAX_SERVING_SAMPLES);
      this.broadcast('serve', sample);
    };
    const timer = setInterval(tick, intervalMs).unref();
    this.serving = { feed, model: engine.modelName, timer, unsubscribe };
    tick();
    return () => {
      clearInterval(timer);
      unsubscribe();
    };
  }

  // ---- the page ---------------------------------------------------------------------------

  snapshot(): Snapshot {
    return {
      title: this.options.title ?? 'kiln dashboard',
      runs: this.runs.map((r) => ({ ...r.status(), data: r.points })),
      serving: this.serving ? { model: this.serving.model, samples: this.serving.feed.samples } : undefined,
    };
  }

  get clientCount(): number {
    return this.clients.size;
  }

  private broadcast(event: string, data: unknown): void {
    if (this.clients.size === 0) return;
    this.broadcastRaw(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  }

  private broadcastRaw(text: string): void {
    for (const res of this.clients) {
      if (res.writableLength > MAX_CLIENT_BACKLOG) {
        res.destroy();
        this.clients.delete(res);
        continue;
      }
      res.write(text);
    }
  }

  private authorized(req: IncomingMessage, url: URL): boolean {
    if (!this.tokenDigest) {
      // no token: loopback only, and only under a loopback Host name (a DNS-rebinding page cannot read it)
      const hostName = (req.headers.host ?? '').replace(/:\d+$/, '').replace(/^\[(.*)\]$/, '$1');
      return LOOPBACK.has(hostName);
    }
    // the page's own requests (assets, events) carry the token in a cookie set when the page loads
    const header = req.headers.authorization;
    const cookie = /(?:^|;\s*)kiln_dashboard=([^;]*)/.exec(req.headers.cookie ?? '')?.[1];
    const given = header?.startsWith('Bearer ') ? header.slice(7) : url.searchParams.get('token') ?? (cookie ? decodeURIComponent(cookie) : '');
    return timingSafeEqual(digest(given), this.tokenDigest);
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (!this.authorized(req, url)) {
      res.writeHead(401, { 'content-type': 'text/plain; charset=utf-8' }).end('unauthorized: this dashboard needs its token\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    const security = { 'x-content-type-options': 'nosniff', 'cache-control': 'no-store' };
    if (url.pathname === '/events') {
      res.writeHead(200, { ...security, 'content-type': 'text/event-stream; charset=utf-8', connection: 'keep-alive' });
      res.write(`retry: 1000\nevent: snapshot\ndata: ${JSON.stringify(this.snapshot())}\n\n`);
      this.clients.add(res);
      req.on('close', () => this.clients.delete(res));
      return;
    }
    if (url.pathname === '/api/state') {
      res.writeHead(200, { ...security, 'content-type': 'application/json; charset=utf-8' }).end(JSON.stringify(this.snapshot()));
      return;
    }
    if (url.pathname === '/metrics') {
      this.metrics.text().then(
        (text) => res.writeHead(200, { ...security, 'content-type': this.metrics.contentType }).end(text),
        (e: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(e.message),
      );
      return;
    }
    if (url.pathname === '/favicon.ico') {
      res.writeHead(204).end();
      return;
    }
    const asset = this.assets.get(url.pathname);
    if (!asset) {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not found\n');
      return;
    }
    const cookie = this.options.token && url.pathname === '/'
      ? { 'set-cookie': `kiln_dashboard=${encodeURIComponent(this.options.token)}; HttpOnly; SameSite=Strict; Path=/` } : {};
    res.writeHead(200, {
      ...security, ...cookie, 'content-type': asset.type,
      // the page loads its own assets only: no CDN, no inline script
      'content-security-policy': "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
    }).end(req.method === 'HEAD' ? undefined : asset.body);
  }

  /** Stops the server, ends every event stream and the serving sampler. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.keepAlive);
    if (this.serving) {
      clearInterval(this.serving.timer);
      this.serving.unsubscribe();
    }
    for (const res of this.clients) res.end();
    this.clients.clear();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections?.();
  }
}

/** Starts a dashboard (see Dashboard.start). */
export function startDashboard(options: DashboardOptions = {}): Promise<Dashboard> {
  return Dashboard.start(options);
}

/** A token for a dashboard on a non-loopback host: KILN_DASHBOARD_TOKEN, else 24 random bytes. */
export function dashboardToken(): string {
  return process.env.KILN_DASHBOARD_TOKEN ?? randomBytes(24).toString('base64url');
}

/**
 * What `kiln serve --dashboard [PORT]` calls: a dashboard showing `engine` (started here unless
 * `dashboard` is given). Close it with the returned dashboard's close() (the sampler stops too).
 */
export async function attachServingDashboard(
  engine: ServingSource,
  options: DashboardOptions & ServingFeedOptions & { intervalMs?: number; dashboard?: Dashboard } = {},
): Promise<Dashboard> {
  checkServingSource(engine);
  optionsObject(options, 'dashboard options');
  const dashboard = options.dashboard ?? (await Dashboard.start({ title: `kiln serve ${engine.modelName ?? ''}`.trim(), ...options }));
  try {
    dashboard.attachServing(engine, options);
  } catch (e) {
    if (!options.dashboard) await dashboard.close();
    throw e;
  }
  return dashboard;
}

/** What `kiln train --dashboard [PORT]` calls: a dashboard publishing every step of `trainer`. */
export async function attachTrainingDashboard(
  trainer: StepSource,
  options: DashboardOptions & { name?: string; dashboard?: Dashboard } = {},
): Promise<{ dashboard: Dashboard; detach: () => void }> {
  checkStepSource(trainer);
  optionsObject(options, 'dashboard options');
  const name = options.name;
  if (name !== undefined && typeof name !== 'string') fail('ERR_ARG', `a run name must be a string, got ${describe(name)}`);
  const dashboard = options.dashboard ?? (await Dashboard.start({ title: `kiln train ${name ?? ''}`.trim(), ...options }));
  let detach: () => void;
  try {
    ({ detach } = dashboard.attachTrainer(trainer, name));
  } catch (e) {
    if (!options.dashboard) await dashboard.close();
    throw e;
  }
  return { dashboard, detach };
}
