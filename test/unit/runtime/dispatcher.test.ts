/**
 * The cluster primary's accept loop, over real loopback connections with stand-in workers: each
 * connection goes, unread, to the worker with the fewest open; a worker short of memory is passed
 * over; connections wait (bounded in number and time) while no worker serves; a failed hand-off
 * closes the client's connection, one a worker cannot take goes to another; close() stops accepting.
 */
import { connect, createServer, type Socket } from 'node:net';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ConfigError } from '../../../src/errors/ca-error.js';
import { createLogger } from '../../../src/log/logger.js';
import { ConnectionDispatcher, type DispatcherOptions, type DispatchTarget } from '../../../src/runtime/dispatcher.js';

const logger = createLogger('silent', new Writable({ write: (_c, _e, cb) => cb() }));

const cleanup: Array<() => unknown> = [];

/**
 * A stand-in worker. `mode`: 'ok' takes the socket; 'gone' cannot take it (closed channel);
 * 'broken' fails the send; 'stuck' never finishes it (queued behind an unacknowledged hand-off).
 */
class FakeWorker implements DispatchTarget {
  readonly sockets: Socket[] = [];
  /** The completion callbacks of hand-offs a 'stuck' worker never finished. */
  readonly unfinished: Array<(err: Error | null) => void> = [];
  mode: 'ok' | 'gone' | 'broken' | 'stuck' = 'ok';
  constructor(readonly id: number) {}
  hand(socket: Socket, done: (err: Error | null) => void): boolean {
    if (this.mode === 'gone') return false;
    if (this.mode === 'broken') {
      setImmediate(() => done(new Error('channel closed')));
      return true;
    }
    this.sockets.push(socket);
    cleanup.push(() => socket.destroy());
    if (this.mode === 'ok') done(null);
    else this.unfinished.push(done);
    return true;
  }
}

afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

async function started(options: DispatcherOptions = {}): Promise<{ d: ConnectionDispatcher<FakeWorker>; port: number }> {
  const d = new ConnectionDispatcher<FakeWorker>(logger, options);
  const port = await d.listen('127.0.0.1:0');
  cleanup.push(() => d.close());
  return { d, port };
}

/** A dispatcher with workers a (id 1) and b (id 2); `handed` counts what both were given. */
async function withTwoWorkers(): Promise<{ d: ConnectionDispatcher<FakeWorker>; port: number; a: FakeWorker; b: FakeWorker; handed: () => number }> {
  const { d, port } = await started();
  const a = new FakeWorker(1);
  const b = new FakeWorker(2);
  d.add(a);
  d.add(b);
  return { d, port, a, b, handed: () => a.sockets.length + b.sockets.length };
}

/** A client connection, destroyed at the end of the test. */
function client(port: number): Socket {
  const s = connect(port, '127.0.0.1');
  s.on('error', () => {});
  cleanup.push(() => s.destroy());
  return s;
}

/** Opens connections one after another, each handed out before the next opens. */
async function open(port: number, n: number, handed: () => number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const before = handed();
    client(port);
    await vi.waitFor(() => expect(handed()).toBe(before + 1));
  }
}

function closedByServer(s: Socket): Promise<void> {
  return new Promise((resolve) => (s.destroyed ? resolve() : s.once('close', () => resolve())));
}

describe('ConnectionDispatcher', () => {
  it('hands each connection to the worker with the fewest open ones, ties to the one waiting longest', async () => {
    const { d, port, a, b, handed } = await withTwoWorkers();
    await open(port, 4, handed);
    expect([a.sockets.length, b.sockets.length]).toEqual([2, 2]);
    expect(d.openCounts()).toEqual([
      { worker: 1, open: 2 },
      { worker: 2, open: 2 },
    ]);
    // Two of a's connections close: the next two both go to a (round robin would alternate).
    d.closed(a, 2);
    await open(port, 2, handed);
    expect([a.sockets.length, b.sockets.length]).toEqual([4, 2]);
    // Balanced again (2 and 2 open): alternate, starting with b (a was handed to last).
    await open(port, 2, handed);
    expect([a.sockets.length, b.sockets.length]).toEqual([5, 3]);
    expect(d.openCounts().map((c) => c.open)).toEqual([3, 3]);
  });

  it('hands the connection over unread: the worker gets every byte the client sent', async () => {
    const { d, port } = await started();
    const c = client(port);
    c.write('client hello');
    // No worker yet: the connection waits, and its bytes stay in the kernel, unread by the primary.
    await vi.waitFor(() => expect(d.waitingCount).toBe(1));
    await new Promise((r) => setTimeout(r, 200));
    const w = new FakeWorker(1);
    d.add(w);
    expect(w.sockets).toHaveLength(1);
    expect(w.sockets[0]!.bytesRead).toBe(0);
    expect(w.sockets[0]!.isPaused()).toBe(true);
    // (A worker's copy of the socket starts reading by itself; this one is the primary's.)
    const got = await new Promise<string>((resolve) => w.sockets[0]!.once('data', (b: Buffer) => resolve(b.toString())).resume());
    expect(got).toBe('client hello');
  });

  it('passes over a worker short of memory while another has room, and uses it again once it recovers', async () => {
    const { d, port, a, b, handed } = await withTwoWorkers();
    d.setShortOfMemory(a, true);
    await open(port, 3, handed);
    expect([a.sockets.length, b.sockets.length]).toEqual([0, 3]);
    // All short: the least loaded still gets it (and refuses it, counted there).
    d.setShortOfMemory(b, true);
    await open(port, 1, handed);
    expect([a.sockets.length, b.sockets.length]).toEqual([1, 3]);
    d.setShortOfMemory(a, false);
    d.setShortOfMemory(b, false);
    await open(port, 2, handed);
    expect([a.sockets.length, b.sockets.length]).toEqual([3, 3]);
  });

  it('gives a removed worker nothing more', async () => {
    const { d, port } = await started();
    const a = new FakeWorker(1);
    const b = new FakeWorker(2);
    d.add(a);
    d.add(b);
    d.remove(a);
    d.closed(a, 1); // a late report from a removed worker is ignored
    await open(port, 3, () => b.sockets.length);
    expect(a.sockets).toHaveLength(0);
    expect(d.openCounts()).toEqual([{ worker: 2, open: 3 }]);
  });

  it('holds connections while no worker serves, up to its bound, and hands them to the first that does', async () => {
    const { d, port } = await started({ maxWaiting: 2 });
    const held = [client(port), client(port)];
    // Both are waiting (unread, still open); a third is beyond the bound and closed.
    await vi.waitFor(() => expect(d.waitingCount).toBe(2));
    const third = client(port);
    await closedByServer(third);
    expect(held.every((s) => !s.destroyed)).toBe(true);
    const w = new FakeWorker(1);
    d.add(w);
    expect(w.sockets).toHaveLength(2);
    expect(d.waitingCount).toBe(0);
    expect(d.openCounts()).toEqual([{ worker: 1, open: 2 }]);
  });

  it('closes a connection that waited for a worker longer than maxWaitMs, so that its client tries elsewhere', async () => {
    const { d, port } = await started({ maxWaitMs: 100 });
    const c = client(port);
    await vi.waitFor(() => expect(d.waitingCount).toBe(1));
    await closedByServer(c);
    expect(d.waitingCount).toBe(0);
  });

  it('closes the connection when the send fails, stops counting it, and gives that worker nothing more', async () => {
    const { d, port } = await started();
    const broken = new FakeWorker(1);
    broken.mode = 'broken';
    d.add(broken);
    await closedByServer(client(port));
    expect(d.openCounts()).toEqual([]);
    const w = new FakeWorker(2);
    d.add(w);
    await open(port, 1, () => w.sockets.length);
    expect(d.openCounts()).toEqual([{ worker: 2, open: 1 }]);
  });

  it('keeps the count of a worker removed and added again (a failed hand-off on a live channel), so it is not handed every new connection', async () => {
    const { d, port, a, handed } = await withTwoWorkers();
    await open(port, 4, handed);
    d.remove(a);
    // One of a's connections closes while it is out.
    d.closed(a, 1);
    d.add(a);
    expect(d.openCounts()).toEqual([
      { worker: 2, open: 2 },
      { worker: 1, open: 1 },
    ]);
    await open(port, 3, handed);
    // a had 1 open against b's 2: a, then b (a tie, a handed to last), then a. From 0, a would have had the first two.
    expect(d.openCounts().map((c) => c.open)).toEqual([3, 3]);
  });

  it('does not drop a worker added again when a hand-off queued before its removal fails afterwards', async () => {
    const { d, port } = await started();
    const w = new FakeWorker(1);
    w.mode = 'stuck';
    d.add(w);
    client(port);
    await vi.waitFor(() => expect(w.unfinished).toHaveLength(1));
    d.remove(w);
    w.mode = 'ok';
    d.add(w);
    // The old send reports its failure only now: the worker, added again, keeps serving.
    w.unfinished[0]!(new Error('channel closed'));
    expect(d.has(w)).toBe(true);
    expect(d.openCounts()).toEqual([{ worker: 1, open: 0 }]);
  });

  it('gives a connection that a worker cannot take (its channel closed) to another worker, untouched', async () => {
    const { d, port } = await started();
    const gone = new FakeWorker(1);
    gone.mode = 'gone';
    const w = new FakeWorker(2);
    d.add(gone);
    d.add(w);
    const c = client(port);
    c.write('still here');
    await vi.waitFor(() => expect(w.sockets).toHaveLength(1));
    const got = await new Promise<string>((resolve) => w.sockets[0]!.once('data', (b: Buffer) => resolve(b.toString())).resume());
    expect(got).toBe('still here');
    expect(d.openCounts()).toEqual([{ worker: 2, open: 1 }]);
  });

  it('closes the connections still being handed to a worker when it is removed (Node drops them with the channel)', async () => {
    const { d, port } = await started();
    const w = new FakeWorker(1);
    w.mode = 'stuck';
    d.add(w);
    const c = client(port);
    await vi.waitFor(() => expect(w.sockets).toHaveLength(1));
    d.remove(w);
    await closedByServer(c);
  });

  it('stops accepting on close and closes the connections waiting for a worker', async () => {
    const { d, port } = await started();
    const waiting = client(port);
    await vi.waitFor(() => expect(d.waitingCount).toBe(1));
    d.close();
    await closedByServer(waiting);
    const refused = await new Promise<string>((resolve) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => resolve('connected'));
      s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
    });
    expect(refused).toBe('ECONNREFUSED');
  });

  it('says which setting cannot listen, and why', async () => {
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    cleanup.push(() => new Promise((r) => taken.close(r)));
    const port = (taken.address() as { port: number }).port;
    const d = new ConnectionDispatcher<FakeWorker>(logger);
    const err = await d.listen(`127.0.0.1:${port}`).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toBe(`cannot listen on server.listen 127.0.0.1:${port}: the address is already in use (another process listens on it)`);
  });
});
