/**
 * CallInfo.cancelled as a handler sees it over a real TLS connection: false while the client
 * waits, true once it reset the stream, its connection closed, or its grpc-timeout passed. The
 * certificate handler passes it to the Authority, which then signs nothing (unit-tested there).
 */
import { constants, type ClientHttp2Session } from 'node:http2';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { GrpcServer, type CallInfo, type MethodCodec } from '../../../src/grpc/server.js';
import { frameMessage } from '../../../src/grpc/wire.js';
import { createLogger } from '../../../src/log/logger.js';
import { RawConnections, startCall, unaryCall } from '../../support/raw-grpc.js';
import { localhostIdentity } from '../../support/serving-identity.js';

const held: MethodCodec<Buffer, Buffer> = { path: '/t.T/Held', deserialize: (b) => b, serialize: (r) => r };
const watch: MethodCodec<Buffer, Buffer> = { path: '/t.T/Watch', deserialize: (b) => b, serialize: (r) => r };
/** Server-stream calls, open until the client goes. */
const watching: CallInfo[] = [];
/** Calls the handler holds until the test lets them go, with their CallInfo. */
const waiting: Array<{ call: CallInfo; release: () => void }> = [];
let server: GrpcServer;
let port: number;
let ca: string;
const connections = new RawConnections();

beforeAll(async () => {
  const identity = await localhostIdentity();
  ca = identity.certChainPem;
  const logger = createLogger('info', new Writable({ write: (_c, _e, cb) => cb() }));
  server = new GrpcServer({ listen: '127.0.0.1:0', maxRequestBytes: 65536, shutdownGrace: 1, maxConcurrentStreams: 10 }, identity, logger).unary(
    held,
    (r, call) => new Promise<Buffer>((resolve) => waiting.push({ call, release: () => resolve(r) })),
  ).serverStream(watch, (_r, call, stream) => {
    watching.push(call);
    stream.write(Buffer.from('first'));
  });
  port = await server.start();
});

afterAll(async () => {
  for (const w of waiting) w.release();
  connections.destroyAll();
  await server?.shutdown();
});

const open = (): ClientHttp2Session => connections.open(port, ca);
/** Starts a held call and resolves with its CallInfo once the handler has it. */
async function hold(session: ClientHttp2Session, headers = {}): Promise<{ call: CallInfo; release: () => void; stream: ReturnType<typeof startCall>['stream']; reply: ReturnType<typeof startCall>['reply'] }> {
  const before = waiting.length;
  const { stream, reply } = startCall(session, held.path, headers);
  stream.end(frameMessage(Buffer.from('x')));
  await vi.waitFor(() => expect(waiting.length).toBe(before + 1), { timeout: 10_000 });
  return { ...waiting[before]!, stream, reply };
}

describe('CallInfo.cancelled', () => {
  it('is false while the client waits, and the answer reaches it', async () => {
    const s = open();
    const h = await hold(s);
    expect(h.call.cancelled()).toBe(false);
    h.release();
    expect((await h.reply).grpcStatus).toBe(0);
    expect(h.call.cancelled()).toBe(true); // over once answered
  });

  it('turns true when the client resets the stream', async () => {
    const s = open();
    const h = await hold(s);
    h.stream.close(constants.NGHTTP2_CANCEL);
    await vi.waitFor(() => expect(h.call.cancelled()).toBe(true), { timeout: 10_000 });
    h.release();
    // The connection serves on.
    expect((await unaryCall(s, '/t.T/Missing', frameMessage(Buffer.alloc(0)))).grpcStatus).toBe(12);
  });

  it('turns true when the connection closes', async () => {
    const s = open();
    const h = await hold(s);
    s.destroy();
    await vi.waitFor(() => expect(h.call.cancelled()).toBe(true), { timeout: 10_000 });
    h.release();
  });

  it('is false for a server stream while it is open, and true once the client has gone', async () => {
    const s = open();
    const { stream } = startCall(s, watch.path);
    stream.end(frameMessage(Buffer.from('w')));
    await vi.waitFor(() => expect(watching).toHaveLength(1), { timeout: 10_000 });
    expect(watching[0]!.cancelled()).toBe(false);
    stream.close(constants.NGHTTP2_CANCEL);
    await vi.waitFor(() => expect(watching[0]!.cancelled()).toBe(true), { timeout: 10_000 });
  });

  it("ends a server stream when its grpc-timeout passes: DEADLINE_EXCEEDED in the trailers after what it sent, and cancelled turns true", async () => {
    const s = open();
    const before = watching.length;
    const { stream, reply } = startCall(s, watch.path, { 'grpc-timeout': '150m' });
    stream.end(frameMessage(Buffer.from('w')));
    await vi.waitFor(() => expect(watching).toHaveLength(before + 1), { timeout: 10_000 });
    const r = await reply;
    expect(r.trailersOnly).toBe(false);
    expect(r.body.subarray(5).toString()).toBe('first');
    expect([r.grpcStatus, r.grpcMessage]).toEqual([4, 'deadline exceeded']);
    expect(watching[before]!.cancelled()).toBe(true);
  });

  it("turns true when the call's grpc-timeout passes (the client gets DEADLINE_EXCEEDED)", async () => {
    const s = open();
    const h = await hold(s, { 'grpc-timeout': '100m' });
    const r = await h.reply;
    expect(r.grpcStatus).toBe(4);
    expect(h.call.cancelled()).toBe(true);
    h.release();
  });

  it('turns true once the deadline has passed by the clock, though a busy event loop has not run its timer yet; the client gets DEADLINE_EXCEEDED', async () => {
    const s = open();
    // Long enough that the handshake and hold()'s polling cannot use it up on a loaded host.
    const h = await hold(s, { 'grpc-timeout': '1500m' });
    expect(h.call.cancelled()).toBe(false);
    // Busy past the deadline without yielding, as a loaded process signing other calls is.
    const until = performance.now() + 1_550;
    while (performance.now() < until);
    expect(h.call.cancelled()).toBe(true);
    const r = await h.reply;
    expect([r.grpcStatus, r.grpcMessage]).toEqual([4, 'deadline exceeded']);
    h.release();
  });

  it('leaves an answered call answered: its deadline passing before the trailers go out changes nothing', async () => {
    const s = open();
    const h = await hold(s, { 'grpc-timeout': '300m' });
    h.release();
    // The answer is on its way (written once the handler's promise settles), not yet sent whole.
    for (let i = 0; i < 5; i++) await Promise.resolve();
    const until = performance.now() + 350;
    while (performance.now() < until);
    h.call.cancelled();
    const r = await h.reply;
    expect([r.grpcStatus, r.body.subarray(5).toString()]).toEqual([0, 'x']);
  });
});
