import { Writable } from 'node:stream';
import { describe, expect, it, vi } from 'vitest';
import { CaError } from '../../../src/errors/ca-error.js';
import { keepRecord } from '../../../src/inventory/keep.js';
import type { CertificateRecord } from '../../../src/inventory/types.js';
import { issuedCertificate } from './fixtures.js';
import { createLogger } from '../../../src/log/logger.js';

const cert = issuedCertificate({ leaf: { serial: '7f01', der: Buffer.from([1, 2, 3]), notBefore: new Date(0), notAfter: new Date(1000), pem: '' } });
const ctx = { clusterId: 'Kubernetes', latencyMs: 1, peer: '127.0.0.1:1' };

describe('keepRecord (inventory.failClosed: the call waits for its record)', () => {
  it('hands the sink the certificate\u2019s record and resolves once it is stored', async () => {
    const kept: CertificateRecord[] = [];
    const keep = keepRecord({ keep: (r) => (kept.push(r), Promise.resolve()) }, createLogger('silent'));
    await keep(cert, ctx);
    expect(kept.map((r) => [r.serial, r.spiffeId, r.cluster])).toEqual([['7f01', 'spiffe://td/ns/a/sa/b', 'Kubernetes']]);
  });

  it('refuses with ISSUER_UNAVAILABLE naming the serial when the record is not stored in time or is refused; counts each, warns once per 10 s with a count', async () => {
    const lines: string[] = [];
    const logger = createLogger('info', new Writable({ write: (c, _e, cb) => (lines.push(String(c)), cb()) }));
    let clock = 0;
    let undelivered = 0;
    const never = { keep: () => new Promise<void>(() => {}) };
    const keep = keepRecord(never, logger, { timeoutMs: 20, onUndelivered: () => undelivered++, now: () => clock });
    const err = await keep(cert, ctx).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CaError);
    expect((err as CaError).code).toBe('ISSUER_UNAVAILABLE');
    expect((err as CaError).message).toBe('the certificate inventory could not record certificate 7f01 and this CA is configured to fail closed, so it is not delivered; retry shortly');
    expect(String(((err as CaError).cause as Error).message)).toMatch(/no answer within 20 ms/);
    clock = 5_000;
    await expect(keep(cert, ctx)).rejects.toBeInstanceOf(CaError);
    clock = 10_000;
    const refused = keepRecord({ keep: () => Promise.reject(new Error('certificate record discarded: constraint')) }, logger, { onUndelivered: () => undelivered++, now: () => clock });
    await expect(refused(cert, ctx)).rejects.toMatchObject({ code: 'ISSUER_UNAVAILABLE' });
    clock = 10_001;
    await expect(keep(cert, ctx)).rejects.toBeInstanceOf(CaError);
    expect(undelivered).toBe(4);
    await new Promise((r) => setTimeout(r, 300)); // the logger flushes on a timer
    const warnings = lines.join('').split('\n').filter((l) => l.includes('certificate records not stored')).map((l) => JSON.parse(l) as { undelivered: number; err: { message: string } });
    // The first keep warns at once; its second failure (5 s later) is counted into the warning at 10 s.
    expect(warnings.map((w) => w.undelivered)).toEqual([1, 1, 2]);
    expect(warnings[1]!.err.message).toBe('certificate record discarded: constraint');
  });

  it('says the count of a burst that ended within the warning window when the window ends', async () => {
    vi.useFakeTimers();
    try {
      const lines: string[] = [];
      const logger = createLogger('info', new Writable({ write: (c, _e, cb) => (lines.push(String(c)), cb()) }));
      const keep = keepRecord({ keep: () => Promise.reject(new Error('certificate record discarded: x')) }, logger);
      await expect(keep(cert, ctx)).rejects.toBeInstanceOf(CaError);
      await vi.advanceTimersByTimeAsync(1_000);
      await expect(keep(cert, ctx)).rejects.toBeInstanceOf(CaError);
      await expect(keep(cert, ctx)).rejects.toBeInstanceOf(CaError);
      await vi.advanceTimersByTimeAsync(10_000);
      const warnings = lines.join('').split('\n').filter((l) => l.includes('certificate records not stored')).map((l) => JSON.parse(l) as { undelivered: number });
      expect(warnings.map((w) => w.undelivered)).toEqual([1, 2]);
    } finally {
      vi.useRealTimers();
    }
  });
});
