/**
 * The cluster primary's accept loop, over real loopback connections with stand-in workers: each
 * connection goes, unread, to the worker with the fewest open; a worker short of memory is passed
 * over; connections wait (boundedly) while no worker serves; a failed hand-off closes the client's
 * connection; close() stops accepting.
 */
import { connect, createServer, type Socket } from 'node:net';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ConfigError } from '../../../src/errors/ca-error.js';
import { createLogger } from '../../../src/log/logger.js';
import { ConnectionDispatcher, type DispatchTarget } from '../../../src/runtime/dispatcher.js';

const logger = createLogger('silent', new Writable({ write: (_c, _e, cb) => cb() }));

const cleanup: Array<() => unknown> = [];

/** A stand-in worker: keeps what it is handed; `fail` makes the next hand-off fail as a closed IPC channel does. */
class FakeWorker implements DispatchTarget {
  readonly sockets: Socket[] = [];
  fail = false;
  constructor(readonly id: number) {}
  hand(socket: Socket, done: (err: Error | null) => void): void {
    if (this.fail) return done(new Error('channel closed'));
    this.sockets.push(socket);
    cleanup.push(() => socket.destroy());
    done(null);
  }
}

afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

async function started(maxWaiting?: number): Promise<{ d: ConnectionDispatcher<FakeWorker>; port: number }> {
  const d = new ConnectionDispatcher<FakeWorker>(logger, maxWaiting);
  const port = await d.listen('127.0.0.1:0');
  cleanup.push(() => d.close());
  return { d, port };
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
    const { d, port } = await started();
    const a = new FakeWorker(1);
    const b = new FakeWorker(2);
    d.add(a);
    d.add(b);
    const handed = (): number => a.sockets.length + b.sockets.length;
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
    const w = new FakeWorker(1);
    d.add(w);
    const c = client(port);
    c.write('client hello');
    await vi.waitFor(() => expect(w.sockets).toHaveLength(1));
    // Accepted paused (pauseOnConnect); a worker's copy of the socket starts reading by itself.
    const got = await new Promise<string>((resolve) => w.sockets[0]!.once('data', (b: Buffer) => resolve(b.toString())).resume());
    expect(got).toBe('client hello');
  });

  it('passes over a worker short of memory while another has room, and uses it again once it recovers', async () => {
    const { d, port } = await started();
    const a = new FakeWorker(1);
    const b = new FakeWorker(2);
    d.add(a);
    d.add(b);
    const handed = (): number => a.sockets.length + b.sockets.length;
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
    const { d, port } = await started(2);
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

  it('closes the connection when the hand-off fails, and does not count it', async () => {
    const { d, port } = await started();
    const w = new FakeWorker(1);
    w.fail = true;
    d.add(w);
    await closedByServer(client(port));
    expect(d.openCounts()).toEqual([{ worker: 1, open: 0 }]);
  });

  it('stops accepting on close and closes the connections waiting for a worker', async () => {
    const { d, port } = await started();
    const waiting = client(port);
    await vi.waitFor(() => expect(d.waitingCount).toBe(1));
    await d.close();
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
