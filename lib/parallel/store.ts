/**
 * The rendezvous store: a small key-value server that rank 0's process hosts (Gloo's own TCP
 * store is not in Debian's Gloo), the address torchrun's MASTER_ADDR:MASTER_PORT names.
 *
 * Wire protocol (the native client in native/runtime/communicator.cc speaks it too),
 * little-endian frames:
 *   request:  u8 op, u32 key length, key, u32 value length, value
 *     'A' auth     key = token (must come first when the store has a token)
 *     'S' set      key, value
 *     'G' get      key; value = timeout in ms as decimal text; answered when the key exists
 *     'H' hello    value = JSON {rank, worldSize, configHash}; answered once every rank said
 *                  hello with the same config hash and world size (or at once with an error);
 *                  the connection then stays open as the rank's liveness channel
 *   response: u8 status (0 ok, 1 error, 2 event), u32 length, value / error text / event JSON
 * Events (status 2) go to every hello connection: {"gone": r} when rank r's connection closed.
 *
 * Binds 127.0.0.1 unless told otherwise; any other address needs a token (checked in
 * lib/parallel/launcher.ts before this is reached and again here).
 */
import { createServer, connect as netConnect, type Server, type Socket } from 'node:net';
import { fail } from '../errors.js';

export const LOOPBACK = '127.0.0.1';

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

function frame(status: number, payload: Buffer | string): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  const head = Buffer.alloc(5);
  head.writeUInt8(status, 0);
  head.writeUInt32LE(body.length, 1);
  return Buffer.concat([head, body]);
}

function request(op: string, key: string, value: Buffer | string): Buffer {
  const k = Buffer.from(key, 'utf8');
  const v = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
  const out = Buffer.alloc(1 + 4 + k.length + 4 + v.length);
  out.write(op, 0, 'latin1');
  out.writeUInt32LE(k.length, 1);
  k.copy(out, 5);
  out.writeUInt32LE(v.length, 5 + k.length);
  v.copy(out, 9 + k.length);
  return out;
}

/** Splits a byte stream into frames of (u8, u32 len, ...) shape; `keyed` for request frames. */
class FrameReader {
  private buffer: Buffer = Buffer.alloc(0);
  push(chunk: Buffer): void {
    this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
  }
  nextRequest(): { op: string; key: string; value: Buffer } | undefined {
    const b = this.buffer;
    if (b.length < 5) return undefined;
    const kl = b.readUInt32LE(1);
    if (b.length < 9 + kl) return undefined;
    const vl = b.readUInt32LE(5 + kl);
    if (b.length < 9 + kl + vl) return undefined;
    const out = { op: String.fromCharCode(b[0]), key: b.subarray(5, 5 + kl).toString('utf8'), value: Buffer.from(b.subarray(9 + kl, 9 + kl + vl)) };
    this.buffer = b.subarray(9 + kl + vl);
    return out;
  }
  nextResponse(): { status: number; value: Buffer } | undefined {
    const b = this.buffer;
    if (b.length < 5) return undefined;
    const len = b.readUInt32LE(1);
    if (b.length < 5 + len) return undefined;
    const out = { status: b[0], value: Buffer.from(b.subarray(5, 5 + len)) };
    this.buffer = b.subarray(5 + len);
    return out;
  }
}

export interface Hello {
  rank: number;
  worldSize: number;
  configHash: string;
}

export interface StoreServerOptions {
  host?: string;
  port: number;
  /** required when host is not a loopback address */
  token?: string;
}

/** The store server (rank 0). */
export class StoreServer {
  private server: Server;
  private readonly values = new Map<string, Buffer>();
  private readonly waiters = new Map<string, { socket: Socket; timer: NodeJS.Timeout }[]>();
  private readonly hellos = new Map<number, { socket: Socket; hello: Hello }>();
  private rendezvousDone = false;
  private refusal?: string;
  private readonly sockets = new Set<Socket>();
  readonly host: string;
  port = 0;

  private constructor(options: StoreServerOptions) {
    this.host = options.host ?? LOOPBACK;
    const token = options.token ?? '';
    this.server = createServer((socket) => this.accept(socket, token));
  }

  static async listen(options: StoreServerOptions): Promise<StoreServer> {
    const host = options.host ?? LOOPBACK;
    if (!isLoopback(host) && !options.token) fail('ERR_ARG', `the rendezvous store binds ${host}, not a loopback address: that needs a token (--dist-token)`);
    const s = new StoreServer(options);
    await new Promise<void>((resolve, reject) => {
      s.server.once('error', (e: NodeJS.ErrnoException) => reject(new Error(`the rendezvous store cannot listen on ${host}:${options.port}: ${e.message}`)));
      s.server.listen(options.port, host, () => resolve());
    }).catch((e: Error) => fail('ERR_DIST', e.message));
    s.port = (s.server.address() as { port: number }).port;
    return s;
  }

  private accept(socket: Socket, token: string): void {
    this.sockets.add(socket);
    socket.setNoDelay(true);
    const reader = new FrameReader();
    let authed = token === '';
    let helloRank: number | undefined;
    socket.on('data', (chunk) => {
      reader.push(chunk);
      for (let r = reader.nextRequest(); r; r = reader.nextRequest()) {
        if (!authed) {
          if (r.op === 'A' && r.key === token) {
            authed = true;
            socket.write(frame(0, ''));
            continue;
          }
          socket.end(frame(1, 'the store needs the run token first'));
          return;
        }
        if (r.op === 'A') socket.write(frame(0, ''));
        else if (r.op === 'S') this.set(r.key, r.value);
        else if (r.op === 'G') this.get(socket, r.key, Number(r.value.toString('utf8')) || 30000);
        else if (r.op === 'H') helloRank = this.hello(socket, r.value);
        else socket.end(frame(1, `unknown store op '${r.op}'`));
        if (r.op === 'S') socket.write(frame(0, ''));
      }
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      this.sockets.delete(socket);
      if (helloRank !== undefined && this.hellos.get(helloRank)?.socket === socket) {
        this.hellos.delete(helloRank);
        if (this.rendezvousDone) for (const { socket: other } of this.hellos.values()) other.write(frame(2, JSON.stringify({ gone: helloRank })));
      }
    });
  }

  private set(key: string, value: Buffer): void {
    this.values.set(key, value);
    const waiting = this.waiters.get(key);
    if (!waiting) return;
    this.waiters.delete(key);
    for (const w of waiting) {
      clearTimeout(w.timer);
      w.socket.write(frame(0, value));
    }
  }

  private get(socket: Socket, key: string, timeoutMs: number): void {
    const v = this.values.get(key);
    if (v) return void socket.write(frame(0, v));
    const timer = setTimeout(() => {
      const list = this.waiters.get(key) ?? [];
      this.waiters.set(key, list.filter((w) => w.socket !== socket));
      socket.write(frame(1, `key '${key}' did not appear within ${timeoutMs} ms (a rank did not join)`));
    }, timeoutMs);
    if (!this.waiters.has(key)) this.waiters.set(key, []);
    this.waiters.get(key)!.push({ socket, timer });
  }

  private hello(socket: Socket, value: Buffer): number | undefined {
    let h: Hello;
    try {
      h = JSON.parse(value.toString('utf8')) as Hello;
    } catch {
      socket.write(frame(1, 'malformed hello'));
      return undefined;
    }
    const refuse = (why: string) => {
      this.refusal = why;
      socket.write(frame(1, why));
      // the run cannot start: tell the ranks already waiting too
      for (const { socket: other } of this.hellos.values()) other.write(frame(1, why));
    };
    if (this.refusal) return void refuse(this.refusal);
    if (this.rendezvousDone) return void socket.write(frame(1, `rank ${h.rank} arrived after the run started (world size ${[...this.hellos.values()][0]?.hello.worldSize})`));
    if (this.hellos.has(h.rank)) return void refuse(`two processes claim rank ${h.rank}`);
    for (const { hello: other } of this.hellos.values()) {
      if (other.worldSize !== h.worldSize) return void refuse(`rank ${h.rank} says the world size is ${h.worldSize}, rank ${other.rank} says ${other.worldSize}`);
      if (other.configHash !== h.configHash) {
        return void refuse(`rank ${h.rank}'s training config (hash ${h.configHash.slice(0, 12)}) differs from rank ${other.rank}'s (hash ${other.configHash.slice(0, 12)}): every rank must run the same config`);
      }
    }
    this.hellos.set(h.rank, { socket, hello: h });
    if (this.hellos.size === h.worldSize) {
      this.rendezvousDone = true;
      for (const { socket: s } of this.hellos.values()) s.write(frame(0, ''));
    }
    return h.rank;
  }

  async close(): Promise<void> {
    for (const list of this.waiters.values()) for (const w of list) clearTimeout(w.timer);
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/**
 * A rank's liveness channel and rendezvous: connects (retrying until the deadline, rank 0 may
 * still be starting), authenticates, says hello, waits for every rank; afterwards records which
 * ranks left.
 */
export class StoreSession {
  readonly gone = new Set<number>();
  private socket?: Socket;
  private closedByUs = false;
  storeLost = false;
  private onGone: (() => void)[] = [];

  static async join(host: string, port: number, hello: Hello, options: { token?: string; timeoutMs: number }): Promise<StoreSession> {
    const s = new StoreSession();
    const deadline = Date.now() + options.timeoutMs;
    let socket: Socket | undefined;
    let lastError = '';
    while (!socket) {
      try {
        socket = await new Promise<Socket>((resolve, reject) => {
          const c = netConnect({ host, port }, () => resolve(c));
          c.once('error', reject);
        });
      } catch (e) {
        lastError = (e as Error).message;
        if (Date.now() > deadline) fail('ERR_DIST', `rank ${hello.rank}: cannot reach the rendezvous store at ${host}:${port} within ${options.timeoutMs} ms (${lastError}); is rank 0 running?`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    socket.setNoDelay(true);
    s.socket = socket;
    const reader = new FrameReader();
    const responses: { status: number; value: Buffer }[] = [];
    let wake: (() => void) | undefined;
    socket.on('data', (chunk) => {
      reader.push(chunk);
      for (let r = reader.nextResponse(); r; r = reader.nextResponse()) {
        if (r.status === 2) {
          const event = JSON.parse(r.value.toString('utf8')) as { gone?: number };
          if (typeof event.gone === 'number') s.gone.add(event.gone);
          for (const f of s.onGone) f();
        } else {
          responses.push(r);
          wake?.();
        }
      }
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      if (!s.closedByUs) {
        s.storeLost = true;
        s.gone.add(0); // the store lives in rank 0's process
        for (const f of s.onGone) f();
      }
      wake?.();
    });
    const reply = async (): Promise<{ status: number; value: Buffer }> => {
      const timer = setTimeout(() => wake?.(), Math.max(0, deadline - Date.now()));
      try {
        while (responses.length === 0) {
          if (s.storeLost) fail('ERR_DIST', `rank ${hello.rank}: the rendezvous store closed the connection during rendezvous`);
          if (Date.now() > deadline) fail('ERR_DIST', `rank ${hello.rank}: rendezvous timed out after ${options.timeoutMs} ms (not every rank of ${hello.worldSize} joined)`);
          await new Promise<void>((r) => (wake = r));
        }
      } finally {
        clearTimeout(timer);
      }
      return responses.shift()!;
    };
    if (options.token) {
      socket.write(request('A', options.token, ''));
      const r = await reply();
      if (r.status !== 0) fail('ERR_DIST', `rank ${hello.rank}: the store refused the token: ${r.value.toString('utf8')}`);
    }
    socket.write(request('H', '', JSON.stringify(hello)));
    const r = await reply();
    if (r.status !== 0) {
      s.close();
      fail('ERR_DIST', `rank ${hello.rank} refused at rendezvous: ${r.value.toString('utf8')}`);
    }
    return s;
  }

  /** Resolves when a rank leaves, or after ms (used to name the rank behind a failed collective). */
  async waitForGone(ms: number): Promise<void> {
    if (this.gone.size > 0) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.onGone.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  close(): void {
    this.closedByUs = true;
    this.socket?.destroy();
  }
}
