/**
 * A client certificate from an intermediate the server does not hold (another cluster's, under a
 * shared root) reaches the handler with its intermediate on every connection, a client that
 * resumes its TLS session included: a resumed session carries only the leaf, so the listener
 * offers no resumption. The real server over TLS, a node:http2 client that resumes when it can.
 */
import { X509Certificate, webcrypto } from 'node:crypto';
import { connect, type ClientHttp2Session } from 'node:http2';
import { connect as tlsConnect, type SecureVersion, type TLSSocket } from 'node:tls';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Status } from '../../../src/grpc/codes.js';
import { GrpcServer, type MethodCodec } from '../../../src/grpc/server.js';
import { frameMessage } from '../../../src/grpc/wire.js';
import { createLogger } from '../../../src/log/logger.js';
import { caCert, leafCert } from '../../support/constrained-ca.js';
import { unaryCall } from '../../support/raw-grpc.js';
import { localhostIdentity } from '../../support/serving-identity.js';

const peer: MethodCodec<Buffer, Buffer> = { path: '/t.T/Peer', deserialize: (b) => b, serialize: (r) => r };
let server: GrpcServer;
let port: number;
let serverCa: string;
let clientChainPem: string;
let clientKeyPem: string;
let expected: string[];

beforeAll(async () => {
  const root = await caCert(undefined, 'CN=shared root');
  const intermediate = await caCert(root, 'CN=other cluster');
  const keys = (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])) as CryptoKeyPair;
  const leaf = await leafCert(intermediate, { uris: ['spiffe://cluster.local/ns/default/sa/vm'] }, keys);
  clientChainPem = leaf.toString('pem') + '\n' + intermediate.cert.toString('pem') + '\n';
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  clientKeyPem = `-----BEGIN PRIVATE KEY-----\n${pkcs8.toString('base64')}\n-----END PRIVATE KEY-----\n`;
  expected = [leaf, intermediate.cert, root.cert].map((c) => new X509Certificate(Buffer.from(c.rawData)).fingerprint256);
  const identity = await localhostIdentity();
  serverCa = identity.certChainPem;
  const logger = createLogger('silent', new Writable({ write: (_c, _e, cb) => cb() }));
  // The listener trusts the root only: the intermediate comes from the client's handshake.
  server = new GrpcServer({ listen: '127.0.0.1:0', maxRequestBytes: 65536, shutdownGrace: 1, maxConcurrentStreams: 10 }, { ...identity, clientCaPem: root.cert.toString('pem') }, logger).unary(peer, (_r, call) =>
    Buffer.from(JSON.stringify((call.peerCertificates ?? []).map((der) => new X509Certificate(der).fingerprint256))),
  );
  port = await server.start();
});

afterAll(async () => {
  await server?.shutdown();
});

/** One connection with the client certificate, offering `session` to resume; its chain as the handler saw it, and the ticket it got. */
async function chainSeen(maxVersion: SecureVersion, session?: Buffer): Promise<{ chain: string[]; ticket: Buffer | undefined; resumed: boolean }> {
  let socket: TLSSocket | undefined;
  let ticket: Buffer | undefined;
  const client: ClientHttp2Session = connect(`https://localhost:${port}`, {
    createConnection: () => {
      socket = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ca: serverCa, cert: clientChainPem, key: clientKeyPem, ALPNProtocols: ['h2'], maxVersion, ...(session ? { session } : {}) });
      socket.on('session', (t: Buffer) => (ticket = t));
      return socket;
    },
  });
  client.on('error', () => {});
  try {
    const reply = await unaryCall(client, peer.path, frameMessage(Buffer.from('')));
    expect(reply.grpcStatus).toBe(Status.OK);
    // A TLS 1.3 server sends its tickets after the handshake, if it sends any: up to a second to get
    // one (long enough on a loaded host for a server that does send them; one that does not waits it out).
    for (const until = Date.now() + 1_000; ticket === undefined && Date.now() < until; ) await new Promise((r) => setTimeout(r, 20));
    return { chain: JSON.parse(reply.body.subarray(5).toString()) as string[], ticket, resumed: socket?.isSessionReused() ?? false };
  } finally {
    client.close();
  }
}

describe('client certificates and TLS session resumption', () => {
  it.each(['TLSv1.3', 'TLSv1.2'] as const)('shows the handler the intermediate on every connection (%s): no session is resumed, so none loses the chain', async (maxVersion) => {
    const first = await chainSeen(maxVersion);
    expect(first.chain).toEqual(expected);
    // With a session from the first connection offered (if the server gave one), the second is a full handshake.
    const second = await chainSeen(maxVersion, first.ticket);
    expect(second.resumed).toBe(false);
    expect(second.chain).toEqual(expected);
  });
});
