import { createHash } from 'node:crypto';
import type { IssuedCertificate } from '../../../src/authority/authority.js';
import type { CertificateRecord } from '../../../src/inventory/types.js';

export const T0 = Date.UTC(2030, 0, 1);
export const HOUR = 3_600_000;

/** A deterministic 64-hex fingerprint. */
export function fp(seed: string | number): string {
  return createHash('sha256').update(String(seed)).digest('hex');
}

/** A valid issued record; `i` makes serial and fingerprint unique. */
export function makeRecord(i: number | string, overrides: Partial<CertificateRecord> = {}): CertificateRecord {
  const ns = 'ns-a';
  const sa = 'sa-1';
  return {
    serial: fp(`serial-${i}`).slice(0, 32),
    fingerprint: fp(`cert-${i}`),
    spiffeId: `spiffe://cluster.local/ns/${ns}/sa/${sa}`,
    namespace: ns,
    serviceAccount: sa,
    cluster: 'c1',
    issuer: 'default',
    keyAlgorithm: 'ECDSA',
    keySize: 256,
    notBefore: new Date(T0),
    notAfter: new Date(T0 + 24 * HOUR),
    issuedAt: new Date(T0),
    requester: `spiffe://cluster.local/ns/${ns}/sa/${sa}`,
    policyRule: 'default',
    source: 'issued',
    ...overrides,
  };
}

/** What a store returns for a record written without subject/dnsNames. */
export function asStored(r: CertificateRecord): CertificateRecord {
  return { ...r, subject: r.subject ?? null, dnsNames: r.dnsNames ?? [] };
}

/** What the Authority hands back for an issued certificate, with the fields records are made of. */
export function issuedCertificate(overrides: Record<string, unknown> = {}): IssuedCertificate {
  return {
    caller: { method: 'jwt', identities: ['spiffe://td/ns/a/sa/b'] },
    spiffeId: 'spiffe://td/ns/a/sa/b',
    impersonated: false,
    issuer: 'default',
    key: { algorithm: 'ECDSA', size: 256, curve: 'P-256' },
    leaf: { serial: '0a', der: Buffer.from([1, 2, 3]), notBefore: new Date(0), notAfter: new Date(1000), pem: '' },
    chain: [],
    ...overrides,
  } as unknown as IssuedCertificate;
}
