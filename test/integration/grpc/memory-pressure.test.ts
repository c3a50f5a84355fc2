/**
 * GrpcServer under memory pressure (src/runtime/heap-pressure.ts drives it in a real server): while
 * high, a new connection is closed as soon as it is accepted and every connection without an open
 * call gets GOAWAY, while calls in flight finish; once low again, connections are accepted and the
 * shedding is reported. The real server over TLS, raw HTTP/2 clients, a scripted pressure signal.
 */
import { constants, type ClientHttp2Session } from 'node:http2';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { admitUnlessShortOfMemory } from '../../../src/authority/overload.js';
import { certificateAdmission } from '../../../src/grpc/certificate-service.js';
import { Status } from '../../../src/grpc/codes.js';
import { GrpcServer, type MemoryPressure, type MethodCodec } from '../../../src/grpc/server.js';
import { frameMessage } from '../../../src/grpc/wire.js';
import { createLogger } from '../../../src/log/logger.js';
import { RawConnections, startCall, statusOf, unaryCall } from '../../support/raw-grpc.js';
import { localhostIdentity } from '../../support/serving-identity.js';

class ScriptedPressure implements MemoryPressure {
  high = false;
  private readonly listeners: Array<(high: boolean) => void> = [];
  onSample(listener: (high: boolean) => void): void {
    this.listeners.push(listener);
  }
  /** One sample, as HeapPressure would take it. */
  sample(high: boolean): void {
    const was = this.high;
    this.high = high;
    if (high || was) for (const l of this.listeners) l(high);
  }
}

const echo: MethodCodec<Buffer, Buffer> = { path: '/t.T/Echo', deserialize: (b) => b, serialize: (r) => r };
const slow: MethodCodec<Buffer, Buffer> = { path: '/t.T/Slow', deserialize: (b) => b, serialize: (r) => r };
const admitted: MethodCodec<Buffer, Buffer> = { path: '/t.T/Admitted', deserialize: (b) => b, serialize: (r) => r };
const watchCodec: MethodCodec<Buffer, Buffer> = { path: '/t.T/Watch', deserialize: (b) => b, serialize: (r) => r };
let watchers = 0;
const pressure = new ScriptedPressure();
const shed: string[] = [];
const logLines: string[] = [];
let server: GrpcServer;
let port: number;
let ca: string;
let releaseSlow: (() => void) | undefined;
const connections = new RawConnections();

beforeAll(async () => {
  const identity = await localhostIdentity();
  ca = identity.certChainPem;
  const logger = createLogger('info', new Writable({ write: (c, _e, cb) => (logLines.push(String(c)), cb()) }));
  server = new GrpcServer({ listen: '127.0.0.1:0', maxRequestBytes: 65536, shutdownGrace: 1, maxConcurrentStreams: 10, memoryPressure: pressure, onConnectionShed: (reason) => shed.push(reason) }, identity, logger)
    .unary(echo, (r) => r)
    // The real admission chain: memory, then the in-flight bound, mapped to a status in one place.
    .unary(admitted, (r) => r, { admit: certificateAdmission({ logger }, admitUnlessShortOfMemory(pressure, () => () => undefined)) })
    .unary(slow, (r) => new Promise<Buffer>((resolve) => (releaseSlow = () => resolve(r))))
    .serverStream(watchCodec, (_r, _call, stream) => {
      watchers++;
      stream.write(Buffer.from('first'));
    });
  port = await server.start();
});

afterAll(async () => {
  connections.destroyAll();
  await server?.shutdown();
});

const open = (): ClientHttp2Session => connections.open(port, ca);
const call = async (s: ClientHttp2Session, path = echo.path): Promise<string> => statusOf(await unaryCall(s, path, frameMessage(Buffer.from('hi'))));

const closed = (s: ClientHttp2Session): Promise<void> => new Promise((resolve) => (s.closed || s.destroyed ? resolve() : s.once('close', () => resolve())));

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('memory pressure in the transport', () => {
  it('while high: refuses new connections, sends GOAWAY to connections idle for a second, lets calls in flight finish; once low, accepts again and reports', async () => {
    const idle = open();
    const busy = open();
    expect(await call(idle)).toBe(String(Status.OK));
    expect(await call(busy)).toBe(String(Status.OK));
    const inFlight = call(busy, slow.path);
    await vi.waitFor(() => expect(releaseSlow).toBeDefined(), { timeout: 10_000 }); // the slow call is open on the server
    let busyGoaway = false;
    busy.on('goaway', () => (busyGoaway = true));

    // Just answered: not idle for a second yet, so left alone.
    pressure.sample(true);
    await sleep(100);
    expect(idle.closed || idle.destroyed).toBe(false);

    await sleep(1000);
    const goaway = new Promise<void>((resolve) => idle.once('goaway', () => resolve()));
    pressure.sample(true);
    await goaway;
    await closed(idle);

    const refused = open();
    expect(await call(refused)).toBe('no connection');

    // Samples while high leave the busy connection alone as long as its call is open...
    pressure.sample(true);
    await sleep(100);
    expect(busyGoaway).toBe(false);
    releaseSlow!();
    expect(await inFlight).toBe(String(Status.OK));
    // ...and for a second after it closed; then it is idle and closed too.
    pressure.sample(true);
    await sleep(100);
    expect(busyGoaway).toBe(false);
    await sleep(1000);
    pressure.sample(true);
    await closed(busy);

    pressure.sample(false);
    expect(await call(open())).toBe(String(Status.OK));
    const report = logLines.map((l) => JSON.parse(l) as { msg: string; connections?: number; idleSessions?: number }).find((l) => l.msg.startsWith('memory was short'));
    expect(report).toMatchObject({ connections: 1, idleSessions: 2 });
    expect(shed.sort()).toEqual(['idle_memory', 'idle_memory', 'memory']);
  }, 20_000);

  it('refuses a call on an open connection with UNAVAILABLE and a message without internals while memory is short', async () => {
    const s = open();
    expect(await call(s, admitted.path)).toBe(String(Status.OK));
    pressure.high = true; // short of memory, without a sample that would close the idle connection
    try {
      const r = await unaryCall(s, admitted.path, frameMessage(Buffer.from('hi')));
      expect(r.grpcStatus).toBe(Status.UNAVAILABLE);
      expect(r.grpcMessage).toBe('the CA is short of memory; retry with backoff');
    } finally {
      pressure.high = false;
    }
    expect(await call(s, admitted.path)).toBe(String(Status.OK));
  });

  it('does not let a request that never finishes, or a server stream, keep a connection while memory is short', async () => {
    // An upload that stops halfway: its stream is refused (REFUSED_STREAM: not processed, retry)
    // and its connection gets GOAWAY.
    const stalled = open();
    const upload = startCall(stalled, echo.path);
    upload.stream.write(Buffer.from([0, 0, 0, 0, 100, 1, 2])); // declares 100 bytes, sends 2
    // A server stream that never ends.
    const watching = open();
    const watch = startCall(watching, watchCodec.path);
    watch.stream.end(frameMessage(Buffer.from('w')));
    await vi.waitFor(() => expect(watchers).toBe(1), { timeout: 10_000 });
    await sleep(1100);

    pressure.sample(true);
    expect((await upload.reply).rstCode).toBe(constants.NGHTTP2_REFUSED_STREAM);
    await closed(stalled);
    // GOAWAY, but the stream keeps the connection; destroyed once memory is still short 5 s on.
    await sleep(500);
    pressure.sample(true);
    expect(watch.stream.closed).toBe(false);
    await sleep(5000);
    pressure.sample(true);
    const ended = await watch.reply;
    // Ended with a status a client reconnects on (a bare reset would read as INTERNAL), then the connection goes.
    expect([ended.grpcStatus, ended.grpcMessage]).toEqual([Status.UNAVAILABLE, 'the server closed this connection; reconnect']);
    await closed(watching);
    pressure.sample(false);
  }, 20_000);
});
