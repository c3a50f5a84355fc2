import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { Authority, CertificateRequest, IssuedCertificate } from '../../../src/authority/authority.js';
import { CaError, SigningKeyPendingError } from '../../../src/errors/ca-error.js';
import { certificateShed, createCertificateHandler } from '../../../src/grpc/certificate-service.js';
import { Status } from '../../../src/grpc/codes.js';
import type { IstioCertificateRequestMsg } from '../../../src/grpc/proto.js';
import type { CallInfo } from '../../../src/grpc/server.js';
import { createLogger } from '../../../src/log/logger.js';

describe('createCertificateHandler', () => {
  it("hands the Authority the call's cancellation, and logs a CANCELLED refusal with its reason", async () => {
    const seen: CertificateRequest[] = [];
    const authority = {
      issue: (req: CertificateRequest) => {
        seen.push(req);
        return Promise.reject(new CaError('CANCELLED', 'the call was cancelled'));
      },
    } as unknown as Authority;
    const lines: string[] = [];
    const logger = createLogger('info', new Writable({ write: (c, _e, cb) => (lines.push(String(c)), cb()) }));
    const refused: string[] = [];
    const observer = { issued: () => {}, refused: (reason: string) => void refused.push(reason) };
    const handler = createCertificateHandler({ authority, logger, observer, ready: () => true });
    const call: CallInfo = { headers: { authorization: 'Bearer t', clusterid: 'Kubernetes' }, peer: '127.0.0.1:1', peerHost: '127.0.0.1', peerCertificates: undefined, cancelled: () => true };
    await expect(handler({ csr: 'x', validityDuration: '0', metadata: null }, call)).rejects.toMatchObject({ code: Status.CANCELLED });
    expect(seen[0]!.cancelled).toBe(call.cancelled);
    expect(refused).toEqual(['CANCELLED']);
    await new Promise((r) => setTimeout(r, 300)); // the logger flushes on a timer
    expect(lines.join('')).toMatch(/"decision":"refused","code":"CANCELLED"/);
  });

  it('refuses with UNAVAILABLE before the CA is loaded and while shutting down, saying which', async () => {
    let issued = 0;
    const authority = { issue: () => (issued++, Promise.reject(new CaError('CANCELLED', 'x'))) } as unknown as Authority;
    const call: CallInfo = { headers: { authorization: 'Bearer t' }, peer: '127.0.0.1:1', peerHost: '127.0.0.1', peerCertificates: undefined, cancelled: () => false };
    for (const [stopping, message] of [[false, 'the CA is not ready yet; retry shortly'], [true, 'this meshcert process is shutting down; retry on a new connection']] as const) {
      const handler = createCertificateHandler({ authority, logger: createLogger('silent'), ready: () => false, stopping: () => stopping });
      await expect(handler({ csr: 'x', validityDuration: '0', metadata: null }, call)).rejects.toMatchObject({ code: Status.UNAVAILABLE, message });
    }
    expect(issued).toBe(0);
  });

  it("hands authentication the client's address without its port (IPv4 and IPv6), and none when it is unknown", async () => {
    const seen: CertificateRequest[] = [];
    const authority = { issue: (req: CertificateRequest) => (seen.push(req), Promise.reject(new CaError('CANCELLED', 'x'))) } as unknown as Authority;
    const handler = createCertificateHandler({ authority, logger: createLogger('silent'), observer: { issued: () => {}, refused: () => {} }, ready: () => true });
    for (const [peer, peerHost] of [['10.1.2.3:40000', '10.1.2.3'], ['[fd00::7]:443', 'fd00::7'], ['unknown:0', undefined]] as const) {
      const call: CallInfo = { headers: { authorization: 'Bearer t' }, peer, peerHost, peerCertificates: undefined, cancelled: () => false };
      await handler({ csr: 'x', validityDuration: '0', metadata: null }, call).catch(() => undefined);
    }
    expect(seen.map((r) => r.auth.peerHost)).toEqual(['10.1.2.3', 'fd00::7', undefined]);
  });

  it('hands authentication what the headers say: the bearer token (scheme in any case), the first of a repeated clusterid header, an Authorization that is not Bearer, a refused peer certificate', async () => {
    const seen: CertificateRequest[] = [];
    const authority = { issue: (req: CertificateRequest) => (seen.push(req), Promise.reject(new CaError('CANCELLED', 'x'))) } as unknown as Authority;
    const handler = createCertificateHandler({ authority, logger: createLogger('silent'), observer: { issued: () => {}, refused: () => {} }, ready: () => true });
    const calls: CallInfo[] = [
      { headers: { authorization: 'bEaReR  tok-1 ', clusterid: ['east', 'west'] }, peer: '127.0.0.1:1', peerHost: '127.0.0.1', peerCertificates: undefined, cancelled: () => false },
      { headers: { authorization: 'Basic dTpw' }, peer: '127.0.0.1:1', peerHost: '127.0.0.1', peerCertificates: undefined, peerCertificateRefused: 'certificate has expired', cancelled: () => false },
    ];
    for (const call of calls) await handler({ csr: 'x', validityDuration: '0', metadata: null }, call).catch(() => undefined);
    expect(seen.map((r) => r.auth)).toEqual([
      { bearerToken: 'tok-1', clusterId: 'east', peerHost: '127.0.0.1' },
      { authorizationNotBearer: true, peerCertificateRefused: 'certificate has expired', peerHost: '127.0.0.1' },
    ]);
  });

  it('refuses a request whose metadata cannot be read with INVALID_ARGUMENT (never retried), without asking the Authority', async () => {
    let issued = 0;
    const authority = { issue: () => (issued++, Promise.reject(new CaError('CANCELLED', 'x'))) } as unknown as Authority;
    const handler = createCertificateHandler({ authority, logger: createLogger('silent'), ready: () => true });
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    const metadata = { fields: { a: { kind: 'structValue', structValue: cyclic } } } as unknown as IstioCertificateRequestMsg['metadata'];
    const call: CallInfo = { headers: { authorization: 'Bearer t' }, peer: '127.0.0.1:1', peerHost: '127.0.0.1', peerCertificates: undefined, cancelled: () => false };
    await expect(handler({ csr: 'x', validityDuration: '0', metadata }, call)).rejects.toMatchObject({ code: Status.INVALID_ARGUMENT, message: 'malformed request' });
    expect(issued).toBe(0);
  });

  it('logs an authentication backend outage as a warning, but not a signing key that is not read yet (a forger can provoke that at will)', async () => {
    const lines: string[] = [];
    const logger = createLogger('info', new Writable({ write: (c, _e, cb) => (lines.push(String(c)), cb()) }));
    const call: CallInfo = { headers: { authorization: 'Bearer t' }, peer: '127.0.0.1:1', peerHost: '127.0.0.1', peerCertificates: undefined, cancelled: () => false };
    for (const err of [new SigningKeyPendingError('not read yet'), new CaError('AUTH_BACKEND_UNAVAILABLE', 'API server down')]) {
      const authority = { issue: () => Promise.reject(err) } as unknown as Authority;
      const handler = createCertificateHandler({ authority, logger, observer: { issued: () => {}, refused: () => {} }, ready: () => true });
      await expect(handler({ csr: 'x', validityDuration: '0', metadata: null }, call)).rejects.toMatchObject({ code: Status.UNAVAILABLE });
    }
    await new Promise((r) => setTimeout(r, 300)); // the logger flushes on a timer
    const warnings = lines.join('').split('\n').filter((l) => l.includes('"msg":"authentication backend unavailable"'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('API server down');
  });

  it('quotes the clusterid header in the refusal line only when it could name a cluster (never a token pasted there, nor 60 KB of anything)', async () => {
    const lines: string[] = [];
    const logger = createLogger('info', new Writable({ write: (c, _e, cb) => (lines.push(String(c)), cb()) }));
    const authority = { issue: () => Promise.reject(new CaError('AUTH_INVALID', 'unknown cluster in the clusterid header')) } as unknown as Authority;
    const handler = createCertificateHandler({ authority, logger, observer: { issued: () => {}, refused: () => {} }, ready: () => true });
    const token = `eyJhbGciOiJSUzI1NiJ9.${'e'.repeat(400)}.${'s'.repeat(342)}`;
    for (const clusterid of ['east-1', token, 'x'.repeat(60_000)]) {
      const call: CallInfo = { headers: { authorization: 'Bearer t', clusterid }, peer: '127.0.0.1:1', peerHost: '127.0.0.1', peerCertificates: undefined, cancelled: () => false };
      await expect(handler({ csr: 'x', validityDuration: '0', metadata: null }, call)).rejects.toMatchObject({ code: Status.UNAUTHENTICATED });
    }
    await new Promise((r) => setTimeout(r, 300)); // the logger flushes on a timer
    const refusals = lines.join('').split('\n').filter((l) => l.includes('"msg":"certificate refused"'));
    expect(refusals.map((l) => (JSON.parse(l) as { clusterId: string }).clusterId)).toEqual(['east-1', `(not a cluster name: ${token.length} characters)`, '(not a cluster name: 60000 characters)']);
    expect(lines.join('')).not.toContain('eyJhbGci');
  });
});

describe('createCertificateHandler with keep (inventory.failClosed)', () => {
  const cert = {
    caller: { identities: ['spiffe://td/ns/ztunnel/sa/ztunnel'], method: 'jwt' },
    spiffeId: 'spiffe://td/ns/a/sa/b',
    impersonated: true,
    issuer: 'default',
    key: { algorithm: 'ECDSA', size: 256 },
    leaf: { serial: '0a', notAfter: new Date(0) },
    chain: ['leaf\n', 'root\n'],
  } as unknown as IssuedCertificate;
  const call: CallInfo = { headers: { authorization: 'Bearer t' }, peer: '127.0.0.1:1', peerHost: '127.0.0.1', peerCertificates: undefined, cancelled: () => false };

  it('answers only after keep resolves, and then logs and observes the issuance', async () => {
    let release: () => void = () => {};
    const kept = new Promise<void>((r) => (release = r));
    const events: string[] = [];
    const handler = createCertificateHandler({
      authority: { issue: () => Promise.resolve(cert) } as unknown as Authority,
      logger: createLogger('silent'),
      observer: { issued: () => void events.push('issued'), refused: () => void events.push('refused') },
      ready: () => true,
      keep: (c) => (events.push(`keep ${c.leaf.serial}`), kept),
    });
    let answered = false;
    const answer = handler({ csr: 'x', validityDuration: '0', metadata: null }, call).then((r) => ((answered = true), r));
    await new Promise((r) => setTimeout(r, 20));
    expect(answered).toBe(false);
    expect(events).toEqual(['keep 0a']);
    release();
    expect(await answer).toEqual({ certChain: ['leaf\n', 'root\n'] });
    expect(events).toEqual(['keep 0a', 'issued']);
  });

  it('refuses the call (UNAVAILABLE, the refusal audited under who asked, for whom, and with the serial signed) when keep rejects: the certificate is not delivered', async () => {
    const lines: string[] = [];
    const logger = createLogger('info', new Writable({ write: (c, _e, cb) => (lines.push(String(c)), cb()) }));
    const refused: Array<[string, string | undefined, string | undefined, string | undefined]> = [];
    const handler = createCertificateHandler({
      authority: { issue: () => Promise.resolve(cert) } as unknown as Authority,
      logger,
      observer: { issued: () => void refused.push(['issued', undefined, undefined, undefined]), refused: (code, _d, c) => void refused.push([code, c.caller, c.identity, c.serial]) },
      ready: () => true,
      keep: () => Promise.reject(new CaError('ISSUER_UNAVAILABLE', 'the certificate inventory could not record this certificate; retry shortly')),
    });
    await expect(handler({ csr: 'x', validityDuration: '0', metadata: null }, call)).rejects.toMatchObject({
      code: Status.UNAVAILABLE,
      details: 'the certificate inventory could not record this certificate; retry shortly',
    });
    expect(refused).toEqual([['ISSUER_UNAVAILABLE', 'spiffe://td/ns/ztunnel/sa/ztunnel', 'spiffe://td/ns/a/sa/b', '0a']]);
    await new Promise((r) => setTimeout(r, 300)); // the logger flushes on a timer
    expect(lines.join('')).toContain('"decision":"refused","code":"ISSUER_UNAVAILABLE"');
    expect(lines.join('')).toContain('"serial":"0a"');
    expect(lines.join('')).not.toContain('certificate issued');
  });
});

describe('certificateShed', () => {
  it('logs and observes a call the transport shed while its request arrived as an OVERLOADED refusal (UNAVAILABLE), as Admission does', async () => {
    const lines: string[] = [];
    const logger = createLogger('info', new Writable({ write: (c, _e, cb) => (lines.push(String(c)), cb()) }));
    const refused: Array<[string, string, string | undefined, number]> = [];
    const observer = { issued: () => {}, refused: (reason: string, details: string, c: { clusterId?: string; latencyMs: number }) => void refused.push([reason, details, c.clusterId, c.latencyMs]) };
    const call: CallInfo = { headers: { clusterid: 'east' }, peer: '127.0.0.1:1', peerHost: '127.0.0.1', peerCertificates: undefined, cancelled: () => false };
    certificateShed({ logger, observer })('the request stalled; retry', call, 1234.5);
    // How long the upload had been arriving, not 0: the call did wait.
    expect(refused).toEqual([['OVERLOADED', 'the request stalled; retry', 'east', 1234.5]]);
    await new Promise((r) => setTimeout(r, 300)); // the logger flushes on a timer
    // What the bench counts as an UNAVAILABLE the server sent.
    expect(lines.join('')).toContain(`"decision":"refused","code":"OVERLOADED","grpcCode":${Status.UNAVAILABLE},"reason":"the request stalled; retry"`);
  });
});
