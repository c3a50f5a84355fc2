/**
 * server.maxConnections: a connection beyond the bound is closed as soon as it is accepted, the
 * ones already open keep serving, and a slot freed by a close is usable again. The real server over
 * TLS, raw HTTP/2 clients.
 */
import { connect, constants as h2, type ClientHttp2Session } from 'node:http2';
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import { connect as netConnect, createServer as createNetServer, type AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { Status } from '../../../src/grpc/codes.js';
import { GrpcServer, type CallInfo, type GrpcServerOptions, type MethodCodec } from '../../../src/grpc/server.js';
import { frameMessage } from '../../../src/grpc/wire.js';
import { createLogger } from '../../../src/log/logger.js';
import { RawConnections, startCall, statusOf, unaryCall } from '../../support/raw-grpc.js';
import { localhostIdentity } from '../../support/serving-identity.js';

const codec: MethodCodec<Buffer, Buffer> = { path: '/t.T/Echo', deserialize: (b) => b, serialize: (r) => r };
let server: GrpcServer;
const shed: string[] = [];
let port: number;
let ca: string;
const connections = new RawConnections();

/** A server on a loopback port, with these options over the defaults of these tests and the routes `routes` adds (default: an echo). */
async function testServer(extra: Partial<GrpcServerOptions>, routes: (s: GrpcServer) => GrpcServer = (s) => s.unary(codec, (r) => r)): Promise<{ server: GrpcServer; port: number; ca: string }> {
  const identity = await localhostIdentity();
  const logger = createLogger('silent', new Writable({ write: (_c, _e, cb) => cb() }));
  const s = routes(new GrpcServer({ listen: '127.0.0.1:0', maxRequestBytes: 65536, shutdownGrace: 1, maxConcurrentStreams: 10, ...extra }, identity, logger));
  return { server: s, port: await s.start(), ca: identity.certChainPem };
}

/** An echo server on a loopback port, with these options over the defaults of these tests. */
const echoServer = (extra: Partial<GrpcServerOptions>): ReturnType<typeof testServer> => testServer(extra);

beforeAll(async () => {
  ({ server, port, ca } = await echoServer({ maxConnections: 2, onConnectionShed: (reason) => shed.push(reason) }));
});

afterAll(async () => {
  connections.destroyAll();
  await server?.shutdown();
});

const open = (): ClientHttp2Session => connections.open(port, ca);
const echo = async (s: ClientHttp2Session): Promise<string> => statusOf(await unaryCall(s, codec.path, frameMessage(Buffer.from('hi'))));

describe('server.maxConnections', () => {
  it('closes a connection beyond the bound at once; the open ones serve on; a freed slot is usable again', async () => {
    const a = open();
    const b = open();
    expect(await echo(a)).toBe(String(Status.OK));
    expect(await echo(b)).toBe(String(Status.OK));

    const c = open();
    const closed = new Promise<void>((resolve) => c.on('close', () => resolve()));
    expect(await echo(c)).toBe('no connection');
    await closed;
    expect(shed).toEqual(['max_connections']);
    expect(await echo(a)).toBe(String(Status.OK));

    a.close();
    await new Promise<void>((resolve) => a.on('close', () => resolve()));
    // The server sees the close a moment later; until then a new connection may still be refused.
    await vi.waitFor(async () => expect(await echo(open())).toBe(String(Status.OK)), { timeout: 5_000, interval: 50 });
  }, 15_000);
});

describe('server.maxConnections with connections that hold a slot for nothing', () => {
  const watch: MethodCodec<Buffer, Buffer> = { path: '/t.T/Watch', deserialize: (b) => b, serialize: (r) => r };

  /** An echo server with a Watch that never ends, evicting after 300 ms (pending) and 600 ms (idle). */
  async function evictingServer(extra: Partial<GrpcServerOptions>): Promise<{ server: GrpcServer; port: number; ca: string; shed: string[] }> {
    const reasons: string[] = [];
    const started = await testServer({ maxConnections: 2, evictAfterMs: { pending: 300, idle: 600 }, onConnectionShed: (r) => reasons.push(r), ...extra }, (s) =>
      s.unary(codec, (r) => r).serverStream(watch, (_r, _call, stream) => void stream.write(Buffer.from('serving'))),
    );
    return { ...started, shed: reasons };
  }

  it('gives the slot of a socket that has sent nothing to a new connection once it has waited, and that of a handshake under way only after three times as long', async () => {
    // The handshake timeout (30 s) is far off: only the eviction can free a slot.
    const { server: s, port: p, ca: pem, shed: reasons } = await evictingServer({ evictAfterMs: { pending: 500, idle: 600 } });
    // The stalled handshake is the older of the two: only its three-times grace passes it over.
    const started = netConnect(p, '127.0.0.1');
    await new Promise<void>((resolve) => started.once('connect', () => resolve()));
    const silent = netConnect(p, '127.0.0.1');
    let startedClosed = false;
    try {
      for (const raw of [silent, started]) raw.on('error', () => {});
      await new Promise<void>((resolve) => silent.once('connect', () => resolve()));
      const t0 = Date.now();
      // The start of a TLS record, then nothing: a client that stalls in its handshake.
      started.write(Buffer.from([0x16, 0x03, 0x01]));
      const silentClosed = new Promise<void>((resolve) => silent.once('close', () => resolve()));
      const startedGone = new Promise<void>((resolve) =>
        started.once('close', () => {
          startedClosed = true;
          resolve();
        }),
      );
      await new Promise((r) => setTimeout(r, 600));
      // Both have waited past 500 ms: the silent one goes, though the stalled handshake is older.
      const a = connections.open(p, pem);
      expect(await echo(a)).toBe(String(Status.OK));
      await silentClosed;
      expect(reasons).toEqual(['max_connections_idle']);
      // The close of a destroyed socket reaches its client within milliseconds.
      await new Promise((r) => setTimeout(r, 200));
      expect(startedClosed).toBe(false);
      // The stalled handshake keeps its slot for three times as long, then gives it up too.
      await new Promise((r) => setTimeout(r, Math.max(0, 1_600 - (Date.now() - t0))));
      const b = connections.open(p, pem);
      expect(await echo(b)).toBe(String(Status.OK));
      await startedGone;
      expect(reasons).toEqual(['max_connections_idle', 'max_connections_idle']);
      a.destroy();
      b.destroy();
    } finally {
      silent.destroy();
      started.destroy();
      await s.shutdown();
    }
  }, 20_000);

  it('gives the slot of an established connection with no unary call (a Watch alone) to a new one; one with a call in progress keeps it', async () => {
    // A unary call that takes 5 s: its connection holds one the whole time.
    const slow: MethodCodec<Buffer, Buffer> = { path: '/t.T/Slow', deserialize: (b) => b, serialize: (r) => r };
    // Idle after 3 s: the two handshakes and calls before the refusal below must fit in it, on a loaded host too.
    const { server: s, port: p, ca: pem, shed: reasons } = await evictingServer({ evictAfterMs: { pending: 1_500, idle: 3_000 } });
    s.unary(slow, (r) => new Promise<Buffer>((resolve) => setTimeout(() => resolve(r), 5_000)));
    try {
      // The busy connection is the older: only its call in progress keeps it from being taken.
      const busy = connections.open(p, pem);
      expect(await echo(busy)).toBe(String(Status.OK));
      const inProgress = unaryCall(busy, slow.path, frameMessage(Buffer.from('hold')));
      const parked = connections.open(p, pem);
      const w = startCall(parked, watch.path);
      w.stream.end(frameMessage(Buffer.from('')));
      // Fresh connections are not evicted: a third is refused at once.
      expect(await echo(connections.open(p, pem))).toBe('no connection');
      expect(reasons).toEqual(['max_connections']);
      await new Promise((r) => setTimeout(r, 3_100));
      // Both were opened over 3 s ago; the Watch does not count, the slow call does: the parked one goes.
      const parkedClosed = new Promise<void>((resolve) => parked.once('close', () => resolve()));
      const fresh = connections.open(p, pem);
      expect(await echo(fresh)).toBe(String(Status.OK));
      await parkedClosed;
      expect(reasons).toEqual(['max_connections', 'max_connections_idle']);
      // The call in progress was not cut off.
      const reply = await inProgress;
      expect(reply.grpcStatus).toBe(Status.OK);
      expect(reply.body.subarray(5).toString()).toBe('hold');
    } finally {
      await s.shutdown();
    }
  }, 20_000);
});

describe('server.maxConnections and a call just started on an idle connection', () => {
  it('counts the new call (its request still arriving) as activity: its connection keeps its slot', async () => {
    const reasons: string[] = [];
    const { server: s, port: p, ca: pem } = await testServer({ maxConnections: 2, evictAfterMs: { pending: 1_500, idle: 1_500 }, onConnectionShed: (r) => reasons.push(r) });
    try {
      const old = connections.open(p, pem);
      expect(await echo(old)).toBe(String(Status.OK));
      await new Promise((r) => setTimeout(r, 1_600));
      // Idle past the bound, then a call whose request has not all arrived yet.
      const upload = startCall(old, codec.path);
      upload.stream.write(Buffer.from([0, 0, 0, 0, 100, 1]));
      const other = connections.open(p, pem);
      expect(await echo(other)).toBe(String(Status.OK));
      // Neither connection is idle: a third is refused rather than either being evicted.
      expect(await echo(connections.open(p, pem))).toBe('no connection');
      expect(reasons).toEqual(['max_connections']);
    } finally {
      await s.shutdown();
    }
  }, 20_000);
});

describe('server.idleTimeout and a unary call still being handled', () => {
  it('waits for the call (a slow TokenReview, say) past the grace before closing the connection', async () => {
    const slow: MethodCodec<Buffer, Buffer> = { path: '/t.T/Slow', deserialize: (b) => b, serialize: (r) => r };
    const { server: s, port: p, ca: pem } = await testServer({ idleTimeout: 0.5 }, (g) => g.unary(slow, (r) => new Promise<Buffer>((resolve) => setTimeout(() => resolve(r), 6_500))));
    try {
      const session = connections.open(p, pem);
      const reply = await unaryCall(session, slow.path, frameMessage(Buffer.from('hi')));
      expect(reply.grpcStatus).toBe(Status.OK);
    } finally {
      await s.shutdown();
    }
  }, 20_000);
});

describe('server.idleTimeout and a connection kept by a server stream', () => {
  it('closes it: GOAWAY when idle, then, the Watch never ending, the connection after the grace', async () => {
    const watch: MethodCodec<Buffer, Buffer> = { path: '/t.T/Watch', deserialize: (b) => b, serialize: (r) => r };
    const { server: s, port: p, ca: pem } = await testServer({ idleTimeout: 0.5 }, (g) => g.serverStream(watch, (_r, _call, stream) => void stream.write(Buffer.from('serving'))));
    try {
      const session = connections.open(p, pem);
      const w = startCall(session, watch.path);
      w.stream.end(frameMessage(Buffer.from('')));
      const closed = new Promise<number>((resolve) => {
        const t0 = Date.now();
        session.once('close', () => resolve(Date.now() - t0));
      });
      // Idle timeout (0.5 s) plus the 5 s grace for the calls still open, with room for a slow machine.
      expect(await closed).toBeLessThan(12_000);
      // The Watch ends with a status a client reconnects on, not a bare reset (read as INTERNAL).
      const r = await w.reply;
      expect([r.grpcStatus, r.grpcMessage]).toEqual([Status.UNAVAILABLE, 'the server closed this connection; reconnect']);
    } finally {
      await s.shutdown();
    }
  }, 20_000);
});

describe('a client that keeps its side of a connection the server has ended', () => {
  /**
   * TLS, the HTTP/2 preface and an empty SETTINGS, then nothing: it never closes its side, not
   * even after the server's GOAWAY and FIN (allowHalfOpen), as a hostile or broken pod might.
   */
  function halfOpenClient(p: number, o: { goaway?: boolean } = {}): { socket: TLSSocket; ended: Promise<void>; closed: () => Promise<void> } {
    const options: ConnectionOptions & { allowHalfOpen: boolean } = { host: '127.0.0.1', port: p, rejectUnauthorized: false, ALPNProtocols: ['h2'], allowHalfOpen: true };
    // With `goaway`, it also ends the session itself (GOAWAY, no error), and still keeps the connection.
    const socket = tlsConnect(options, () => socket.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), EMPTY_SETTINGS, ...(o.goaway ? [GOAWAY] : [])])));
    socket.on('error', () => {});
    socket.resume();
    const gone = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    return {
      socket,
      ended: new Promise((resolve) => socket.once('end', () => resolve())),
      // The server's close reaches a client that has stopped reading (its side of the stream ended)
      // only when it writes, which the kernel answers with a reset: a PING every 100 ms until then.
      closed: async () => {
        const probe = setInterval(() => socket.write(PING), 100);
        await gone;
        clearInterval(probe);
      },
    };
  }

  it.each([
    // The server's GOAWAY and FIN come with the idle timeout; the client does not answer them.
    ['after server.idleTimeout ended the session', { idleTimeout: 0.3 }, {}],
    // No idle timeout: only the client's GOAWAY ends the session.
    ['after the client ended the session (its GOAWAY) but not the connection', {}, { goaway: true }],
  ] as const)('has it destroyed once the session has ended, %s: the socket does not stay half-open', async (_case, extra, client) => {
    const { server: s, port: p } = await testServer({ ...extra, evictAfterMs: { pending: 60_000, idle: 60_000, halfClosed: 300 } });
    const z = halfOpenClient(p, client);
    try {
      await z.ended;
      // Two checks of 300 ms after the session ended, the server closes the connection.
      await z.closed();
    } finally {
      z.socket.destroy();
      await s.shutdown();
    }
  }, 20_000);

  it("at server.maxConnections, gives such a connection's slot to a new one at once", async () => {
    const shedReasons: string[] = [];
    // The periodic check is far off: only the eviction can free the slots.
    const { server: s, port: p, ca: pem } = await testServer({ idleTimeout: 0.3, maxConnections: 2, onConnectionShed: (r) => shedReasons.push(r), evictAfterMs: { pending: 60_000, idle: 60_000, halfClosed: 60_000 } });
    const zombies = [halfOpenClient(p), halfOpenClient(p)];
    try {
      for (const z of zombies) await z.ended;
      const fresh = connections.open(p, pem);
      expect(await echo(fresh)).toBe(String(Status.OK));
      expect(shedReasons).toEqual(['max_connections_idle']);
      await Promise.race(zombies.map((z) => z.closed()));
      fresh.destroy();
    } finally {
      for (const z of zombies) z.socket.destroy();
      await s.shutdown();
    }
  }, 20_000);

  describe('that memory pressure shed (idle_memory), then evicted at server.maxConnections', () => {
    // onConnectionShed feeds a per-reason counter: a connection closed for memory and whose slot is
    // later taken (its client never closed its side) is one connection shed, counted as idle_memory
    // only; counting max_connections_idle again would report two.
    it('counts the connection once', async () => {
      const reasons: string[] = [];
      let high = false;
      const listeners: Array<(h: boolean) => void> = [];
      const memoryPressure = {
        get high(): boolean {
          return high;
        },
        onSample: (l: (h: boolean) => void): void => void listeners.push(l),
      };
      const sample = (h: boolean): void => {
        high = h;
        for (const l of listeners) l(h);
      };
      // The periodic check is far off: only the eviction can free the slot.
      const { server: s, port: p, ca: pem } = await testServer({ maxConnections: 1, memoryPressure, onConnectionShed: (r) => reasons.push(r), evictAfterMs: { pending: 60_000, idle: 60_000, halfClosed: 60_000 } });
      const z = halfOpenClient(p);
      try {
        // Accepted while memory was not short (a connection arriving under pressure is refused).
        await new Promise<void>((resolve) => z.socket.once('secureConnect', () => resolve()));
        // Memory is short; once its session has been idle for a second, the connection gets GOAWAY.
        await vi.waitFor(
          () => {
            sample(true);
            expect(reasons).toEqual(['idle_memory']);
          },
          { timeout: 10_000, interval: 100 },
        );
        // Its session has ended (the server's FIN), its client keeps the connection.
        await z.ended;
        sample(false);
        // The only slot is the zombie's: a new connection takes it...
        const fresh = connections.open(p, pem);
        expect(await echo(fresh)).toBe(String(Status.OK));
        await z.closed();
        // ...without counting a second shed for the same connection.
        expect(reasons).toEqual(['idle_memory']);
        fresh.destroy();
      } finally {
        z.socket.destroy();
        await s.shutdown();
      }
    }, 20_000);
  });
});

/** HTTP/2 frames for the raw clients above: an empty SETTINGS, a PING, and a GOAWAY (last stream 0, no error). */
const EMPTY_SETTINGS = Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]);
const GOAWAY = Buffer.from([0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
const PING = Buffer.from([0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);

describe('the call information handlers get', () => {
  it("gives the client's address with its port and alone, as the connection has it", async () => {
    const seen: CallInfo[] = [];
    const { server: s, port: p, ca: pem } = await testServer({}, (g) => g.unary(codec, (r, call) => (seen.push(call), r)));
    try {
      const session = connections.open(p, pem);
      expect(await echo(session)).toBe(String(Status.OK));
      const local = (session.socket as unknown as { localPort: number }).localPort;
      expect(seen.map((c) => [c.peer, c.peerHost])).toEqual([[`127.0.0.1:${local}`, '127.0.0.1']]);
      session.destroy();
    } finally {
      await s.shutdown();
    }
  });
});

/** Whether this host has IPv6 loopback (a container may not): the IPv6 test is skipped otherwise. */
const hasIpv6Loopback = await new Promise<boolean>((resolve) => {
  const probe = createNetServer();
  probe.once('error', () => resolve(false));
  probe.listen(0, '::1', () => probe.close(() => resolve(true)));
});

describe.skipIf(!hasIpv6Loopback)('the call information handlers get, over IPv6', () => {
  it("writes an IPv6 client's address in brackets before its port, and gives it alone without them", async () => {
    const seen: CallInfo[] = [];
    const { server: s, port: p, ca: pem } = await testServer({ listen: '[::1]:0' }, (g) => g.unary(codec, (r, call) => (seen.push(call), r)));
    const session = connect(`https://localhost:${p}`, { createConnection: () => tlsConnect({ host: '::1', port: p, ca: pem, servername: 'localhost', ALPNProtocols: ['h2'] }) });
    session.on('error', () => {});
    try {
      expect(await echo(session)).toBe(String(Status.OK));
      const local = (session.socket as unknown as { localPort: number }).localPort;
      expect(seen.map((c) => [c.peer, c.peerHost])).toEqual([[`[::1]:${local}`, '::1']]);
    } finally {
      session.destroy();
      await s.shutdown();
    }
  });
});

describe('shutdown', () => {
  it('closes, once the grace is over, a connection that never became an HTTP/2 session (a TLS handshake never finished)', async () => {
    // A handshake timeout far beyond the grace, so only the shutdown can end that connection.
    const { server: s, port: p } = await echoServer({ handshakeTimeout: 300 });
    const raw = netConnect(p, '127.0.0.1');
    raw.on('error', () => {});
    await new Promise<void>((resolve) => raw.once('connect', () => resolve()));
    const rawClosed = new Promise<void>((resolve) => raw.once('close', () => resolve()));
    let stopped = false;
    const shutdown = s.shutdown().then(() => (stopped = true));
    await rawClosed; // a shutdown that waited on the handshake timeout would hang here (test timeout)
    await shutdown;
    expect(stopped).toBe(true);
  }, 20_000);
});

describe('shutdown and an idle connection', () => {
  it('sends it GOAWAY at once, so that the shutdown does not wait out the grace for it', async () => {
    const { server: s, port: p, ca: pem } = await echoServer({ shutdownGrace: 10 });
    const session = connections.open(p, pem);
    expect(await echo(session)).toBe(String(Status.OK));
    const first = new Promise<string>((resolve) => {
      session.once('goaway', () => resolve('goaway'));
      session.once('close', () => resolve('close'));
    });
    const t0 = Date.now();
    await s.shutdown();
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(await first).toBe('goaway');
  }, 20_000);
});

describe('shutdown and a handshake that finishes after it began', () => {
  it('sends that connection GOAWAY at once, so that the shutdown does not wait out the grace for it', async () => {
    const { server: s, port: p, ca: pem } = await echoServer({ shutdownGrace: 10 });
    const raw = netConnect(p, '127.0.0.1');
    raw.on('error', () => {});
    await new Promise<void>((resolve) => raw.once('connect', () => resolve()));
    const t0 = Date.now();
    const shutdown = s.shutdown();
    // The TLS handshake and HTTP/2 preface only now, on the connection accepted before.
    const session = connect(`https://localhost:${p}`, { createConnection: () => tlsConnect({ socket: raw, ca: pem, servername: 'localhost', ALPNProtocols: ['h2'] }) });
    session.on('error', () => {});
    try {
      const first = await new Promise<string>((resolve) => {
        session.once('goaway', () => resolve('goaway'));
        session.once('close', () => resolve('close'));
      });
      expect(first).toBe('goaway');
      await shutdown;
      expect(Date.now() - t0).toBeLessThan(5_000);
    } finally {
      session.destroy();
      await shutdown;
    }
  }, 20_000);
});

describe('connections handed over by another process (handedConnections), and shutdown', () => {
  it('serves a handed connection, and closes one handed after shutdown without serving it', async () => {
    // What a cluster worker sees: the primary listens and hands each accepted socket over.
    const handed = createNetServer({ pauseOnConnect: true }, (socket) => s.acceptConnection(socket));
    const p = await new Promise<number>((resolve) => handed.listen(0, '127.0.0.1', () => resolve((handed.address() as AddressInfo).port)));
    const { server: s, ca: pem } = await testServer({ listen: '127.0.0.1:0', handedConnections: { port: p } });
    let stopped: Promise<void> | undefined;
    try {
      expect(await echo(connections.open(p, pem))).toBe(String(Status.OK));
      await (stopped = s.shutdown());
      const late = tlsConnect({ host: '127.0.0.1', port: p, ca: pem, servername: 'localhost', ALPNProtocols: ['h2'] });
      const outcome = await new Promise<string>((resolve) => {
        late.once('secureConnect', () => resolve('handshake'));
        late.once('error', () => resolve('closed'));
        late.once('close', () => resolve('closed'));
      });
      late.destroy();
      expect(outcome).toBe('closed');
    } finally {
      await (stopped ?? s.shutdown());
      handed.close();
    }
  }, 20_000);
});

describe('server.requestReadTimeout', () => {
  it('answers DEADLINE_EXCEEDED to a request that stalls halfway, and serves complete ones', async () => {
    const { server: s, port: p, ca: pem } = await echoServer({ requestReadTimeout: 0.5 });
    try {
      const session = connections.open(p, pem);
      const stalled = startCall(session, codec.path);
      stalled.stream.write(Buffer.from([0, 0, 0, 0, 100, 1, 2])); // declares 100 bytes, sends 2
      const reply = await stalled.reply;
      expect(reply.grpcStatus).toBe(Status.DEADLINE_EXCEEDED);
      expect(reply.grpcMessage).toBe('the request did not arrive within 0.5 s (server.requestReadTimeout)');
      // The connection serves on; a request that arrives in time is unaffected.
      expect(statusOf(await unaryCall(session, codec.path, frameMessage(Buffer.from('hi'))))).toBe(String(Status.OK));
      // The client's own shorter deadline still speaks first.
      const early = startCall(session, codec.path, { 'grpc-timeout': '100m' });
      early.stream.write(Buffer.from([0, 0, 0, 0, 100]));
      expect((await early.reply).grpcMessage).toBe('deadline exceeded');
    } finally {
      await s.shutdown();
    }
  }, 15_000);
});

describe('server maxUploadBytes (requests still arriving)', () => {
  it('refuses data past the bound while every upload is fresh, then drops the oldest stalled one to make room; complete requests go on', async () => {
    // The route is told of each call shed (CreateCertificate logs and counts them).
    const told: Array<[string, string]> = [];
    const waited: number[] = [];
    const { server: s, port: p, ca: pem } = await testServer({ maxUploadBytes: 30_000 }, (srv) =>
      srv.unary(codec, (r) => r, { shed: (details, call, waitedMs) => void (told.push([details, call.peer.replace(/:\d+$/, '')]), waited.push(waitedMs)) }),
    );
    const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 100));
    try {
      const session = connections.open(p, pem);
      /** A call that declares 24,000 bytes and sends 12,000 (header included, one DATA frame), then stalls. */
      const stall = async (): Promise<ReturnType<typeof startCall>> => {
        const c = startCall(session, codec.path);
        c.stream.write(Buffer.concat([Buffer.from([0, 0, 0, 0x5d, 0xc0]), Buffer.alloc(11_995)]));
        await settle(); // arrived before the next one starts
        return c;
      };
      const first = await stall();
      const second = await stall();
      // 24,000 held, both fresh: the third's 12,000 do not fit and nothing may be dropped yet.
      const third = await (await stall()).reply;
      expect(third.grpcStatus).toBe(Status.UNAVAILABLE);
      expect(third.grpcMessage).toBe('the CA is busy (too many certificate requests in flight); retry with backoff');
      // A complete request (a few bytes) still fits beside them.
      expect(statusOf(await unaryCall(session, codec.path, frameMessage(Buffer.from('hi'))))).toBe(String(Status.OK));
      // Once the first two have stalled for over a second, a new upload makes room: the oldest goes.
      await new Promise((r) => setTimeout(r, 1_200));
      const fourth = await stall();
      const dropped = await first.reply;
      expect(dropped.grpcStatus).toBe(Status.UNAVAILABLE);
      expect(dropped.grpcMessage).toBe('the request stalled while the server needed its memory for others; retry');
      // The second, stalled too, is kept while there is room...
      let secondDone = false;
      void second.reply.then(() => (secondDone = true));
      await settle();
      expect(secondDone).toBe(false);
      // ...and gives way when the fourth, still arriving, needs it; the fourth is answered.
      fourth.stream.end(Buffer.alloc(12_005));
      expect((await fourth.reply).grpcStatus).toBe(Status.OK);
      expect((await second.reply).grpcStatus).toBe(Status.UNAVAILABLE);
      const busy = 'the CA is busy (too many certificate requests in flight); retry with backoff';
      const stalled = 'the request stalled while the server needed its memory for others; retry';
      expect(told).toEqual([busy, stalled, stalled].map((d) => [d, '127.0.0.1']));
      // The stalled ones had been arriving for over a second when dropped.
      expect(waited.slice(1).every((ms) => ms > 1000)).toBe(true);
      session.destroy();
    } finally {
      await s.shutdown();
    }
  }, 20_000);

  it('refuses a shed call all the same when the route\'s Shed throws, and keeps serving', async () => {
    const { server: s, port: p, ca: pem } = await testServer({ maxUploadBytes: 30_000 }, (srv) =>
      srv.unary(codec, (r) => r, {
        shed: () => {
          throw new Error('observer broke');
        },
      }),
    );
    try {
      const session = connections.open(p, pem);
      const calls = [];
      for (let i = 0; i < 3; i++) {
        const c = startCall(session, codec.path);
        c.stream.write(Buffer.concat([Buffer.from([0, 0, 0, 0x5d, 0xc0]), Buffer.alloc(11_995)]));
        calls.push(c);
        await new Promise((r) => setTimeout(r, 100));
      }
      expect((await calls[2]!.reply).grpcStatus).toBe(Status.UNAVAILABLE);
      expect(statusOf(await unaryCall(session, codec.path, frameMessage(Buffer.from('hi'))))).toBe(String(Status.OK));
      session.destroy();
    } finally {
      await s.shutdown();
    }
  }, 20_000);

  it('drops an upload that trickles a byte at a time once it is old, but not one that frees nothing', async () => {
    const { server: s, port: p, ca: pem } = await echoServer({ maxUploadBytes: 30_000, evictAfterMs: { pending: 5000, idle: 10_000, slowUpload: 1_500 } });
    try {
      const session = connections.open(p, pem);
      const trickler = startCall(session, codec.path);
      trickler.stream.write(Buffer.concat([Buffer.from([0, 0, 0, 0x75, 0x30]), Buffer.alloc(24_995)])); // declares 30,000, sends 25,000
      const drip = setInterval(() => trickler.stream.write(Buffer.alloc(1)), 200);
      try {
        await new Promise((r) => setTimeout(r, 1_700));
        // Past the slow-upload age, still dripping: a fresh request that needs the room gets it.
        const fresh = startCall(session, codec.path);
        fresh.stream.end(Buffer.concat([Buffer.from([0, 0, 0, 0x27, 0x10]), Buffer.alloc(10_000)]));
        expect((await fresh.reply).grpcStatus).toBe(Status.OK);
        expect((await trickler.reply).grpcStatus).toBe(Status.UNAVAILABLE);
      } finally {
        clearInterval(drip);
      }
      session.destroy();
    } finally {
      await s.shutdown();
    }
  }, 20_000);
});

describe('server maxUploadBytes and a call whose request has not begun', () => {
  // Dropping an upload that holds no bytes frees nothing: the room must come from one that holds
  // some, and the empty one (headers sent, its message still to come) must not be refused for it,
  // even though it is the older and has had no data for longer.
  it('drops the stalled upload that holds bytes, not an older one that holds none', async () => {
    const told: string[] = [];
    const { server: s, port: p, ca: pem } = await testServer({ maxUploadBytes: 20_000 }, (srv) => srv.unary(codec, (r) => r, { shed: (details) => void told.push(details) }));
    try {
      const session = connections.open(p, pem);
      // HEADERS only. Both calls share the connection, so the server sees this one first (the older).
      const empty = startCall(session, codec.path);
      // Declares 24,000 bytes and sends 12,000 (header included), then stalls.
      const stalled = startCall(session, codec.path);
      stalled.stream.write(Buffer.concat([Buffer.from([0, 0, 0, 0x5d, 0xc0]), Buffer.alloc(11_995)]));
      let emptyDone = false;
      void empty.reply.then(() => (emptyDone = true));
      // Both past the second after which an upload counts as stalled, with room for a slow machine.
      await new Promise((r) => setTimeout(r, 1_500));
      // 12,005 more do not fit beside the 12,000 held: room is made.
      const fresh = startCall(session, codec.path);
      fresh.stream.end(Buffer.concat([Buffer.from([0, 0, 0, 0x2e, 0xe0]), Buffer.alloc(12_000)]));
      expect((await fresh.reply).grpcStatus).toBe(Status.OK);
      const dropped = await stalled.reply;
      expect([dropped.grpcStatus, dropped.grpcMessage]).toEqual([Status.UNAVAILABLE, 'the request stalled while the server needed its memory for others; retry']);
      expect(told).toEqual(['the request stalled while the server needed its memory for others; retry']);
      // The empty call was left alone: its request, sent now, is answered.
      expect(emptyDone).toBe(false);
      empty.stream.end(frameMessage(Buffer.from('late')));
      const reply = await empty.reply;
      expect(reply.grpcStatus).toBe(Status.OK);
      expect(reply.body.subarray(5).toString()).toBe('late');
      session.destroy();
    } finally {
      await s.shutdown();
    }
  }, 20_000);
});

describe('a client that does not read its responses', () => {
  it('without server.requestReadTimeout, leaves an unread response alone: it arrives whole once the client reads', async () => {
    const s = await echoServer({});
    const slow = connect(`https://localhost:${s.port}`, {
      settings: { initialWindowSize: 0 },
      createConnection: () => tlsConnect({ host: '127.0.0.1', port: s.port, ca: s.ca, servername: 'localhost', ALPNProtocols: ['h2'] }),
    });
    slow.on('error', () => {});
    try {
      const { stream, reply } = startCall(slow, codec.path);
      stream.end(frameMessage(Buffer.from('hi')));
      await new Promise((r) => setTimeout(r, 500));
      // The client opens its window: the response, held all along, goes out.
      slow.settings({ initialWindowSize: 65_535 });
      const r = await reply;
      expect(r.rstCode).toBe(h2.NGHTTP2_NO_ERROR);
      expect(r.trailers?.['grpc-status']).toBe('0');
      expect(r.body.subarray(5).toString()).toBe('hi');
    } finally {
      slow.destroy();
      await s.server.shutdown();
    }
  }, 15_000);

  it('has each unread response reset after server.requestReadTimeout, so its connection no longer counts calls in flight and closes when idle', async () => {
    const s = await echoServer({ requestReadTimeout: 1, idleTimeout: 1 });
    // A zero flow-control window: the response headers arrive, its DATA can never be sent.
    const stalled = connect(`https://localhost:${s.port}`, {
      settings: { initialWindowSize: 0 },
      createConnection: () => tlsConnect({ host: '127.0.0.1', port: s.port, ca: s.ca, servername: 'localhost', ALPNProtocols: ['h2'] }),
    });
    stalled.on('error', () => {});
    try {
      const resets = Array.from({ length: 10 }, () => {
        const st = stalled.request({ ':method': 'POST', ':path': codec.path, 'content-type': 'application/grpc', te: 'trailers' });
        st.on('error', () => {});
        st.end(frameMessage(Buffer.from('hi')));
        return new Promise<number>((resolve) => st.on('close', () => resolve(st.rstCode)));
      });
      expect(await Promise.all(resets)).toEqual(Array(10).fill(h2.NGHTTP2_CANCEL));
      // Nothing in flight any more: the idle timeout closes the connection.
      await new Promise<void>((resolve) => (stalled.closed || stalled.destroyed ? resolve() : stalled.on('close', () => resolve())));
    } finally {
      stalled.destroy();
      await s.server.shutdown();
    }
  }, 15_000);
});
