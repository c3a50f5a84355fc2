/**
 * istiod's serving certificate (src/controllers/istiod-tls.ts) against FakeKube: a real Kubernetes
 * API server was not available here, so these tests use the loopback fake. Certificates come from
 * meshcert's own CA code (`ca init` + LocalIssuer), and are checked with node:crypto.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { istiodDnsNames } from '../../../src/config/istiod-names.js';
import { IstiodTlsController, type IstiodTlsOptions, type ServingCertIssuer } from '../../../src/controllers/istiod-tls.js';
import { localServingCertIssuer } from '../../../src/controllers/serving-issuer.js';
import { loadCaDir } from '../../../src/ca/material.js';
import { renewIntermediate } from '../../../src/ca/rotate.js';
import { LocalIssuer } from '../../../src/issuer/local.js';
import { recordProblem } from '../../../src/inventory/common.js';
import type { CertificateRecord } from '../../../src/inventory/types.js';
import { ISTIOD_TLS_REQUESTER, ownCertificateRecorder } from '../../../src/inventory/sink.js';
import { FakeKube, type FakeObject } from '../../support/fake-kube.js';
import { asLog, clientFor, makeTestCa, recordingLog, until, writesTo, type TestCa } from './support.js';

const NS = 'istio-system';
const NAME = 'istiod-tls';
const DAY = 86_400_000;

let fake: FakeKube;
let ca: TestCa;
const stops: Array<() => Promise<void> | void> = [];

beforeEach(async () => {
  fake = await FakeKube.start();
  ca = await makeTestCa();
  stops.push(() => ca.cleanup());
});

afterEach(async () => {
  for (const s of stops.splice(0).reverse()) await s();
  await fake.close();
});

function controller(extra: Partial<IstiodTlsOptions> = {}): IstiodTlsController {
  const c = new IstiodTlsController({
    kube: clientFor(fake, 'token-tls'),
    issue: ca.issue(),
    rootBundle: () => ca.rootPem,
    isLeader: () => true,
    checkIntervalMs: 200,
    retryBaseMs: 50,
    retryMaxMs: 200,
    ...extra,
  });
  stops.push(() => c.stop());
  return c;
}

interface Decoded {
  readonly type: unknown;
  readonly crt: string;
  readonly key: string;
  readonly ca: string;
  readonly leaf: X509Certificate;
  readonly chain: X509Certificate[];
  readonly roots: X509Certificate[];
  readonly obj: FakeObject;
}

const certs = (pem: string): X509Certificate[] => (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? []).map((b) => new X509Certificate(b));

function secret(): Decoded | undefined {
  const obj = fake.get('secrets', NS, NAME);
  if (!obj) return undefined;
  const data = obj.data as Record<string, string>;
  const dec = (k: string): string => Buffer.from(data[k] ?? '', 'base64').toString('utf8');
  const chain = certs(dec('tls.crt'));
  return { type: obj.type, crt: dec('tls.crt'), key: dec('tls.key'), ca: dec('ca.crt'), leaf: chain[0]!, chain, roots: certs(dec('ca.crt')), obj };
}

const sans = (c: X509Certificate): string[] =>
  (c.subjectAltName ?? '')
    .split(', ')
    .filter((s) => s.startsWith('DNS:'))
    .map((s) => s.slice(4))
    .sort();

/** Verifies leaf → intermediates → a root of the bundle, with node:crypto. */
function verifiesTo(chain: X509Certificate[], roots: X509Certificate[]): boolean {
  let cur = chain[0]!;
  for (const next of chain.slice(1)) {
    if (!cur.checkIssued(next) || !cur.verify(next.publicKey)) return false;
    cur = next;
  }
  return roots.some((r) => cur.checkIssued(r) && cur.verify(r.publicKey));
}

describe('localServingCertIssuer', () => {
  it('backdates NotBefore, puts the intermediates in the chain, and can write another CA bundle', async () => {
    const union = ca.rootPem + ca.rootPem;
    const issued = await localServingCertIssuer(() => ca.issuer, { caBundle: () => union })(['istiod.istio-system.svc'], 3600);
    const chain = certs(issued.certChainPem);
    expect(chain).toHaveLength(2);
    expect(Date.now() - new Date(chain[0]!.validFrom).getTime()).toBeGreaterThanOrEqual(110_000);
    expect(issued.caPem).toBe(union);
    expect(issued.notAfter.getTime()).toBe(new Date(chain[0]!.validTo).getTime());
    expect(verifiesTo(chain, certs(ca.rootPem))).toBe(true);
  });

  it('tells onIssued of each certificate (for the inventory): its leaf and the issuer\u2019s name, and the record made of it names istiod', async () => {
    const told: Array<[string, string]> = [];
    const issued = await localServingCertIssuer(() => ca.issuer, { onIssued: (pem, name) => void told.push([pem, name]) })(['istiod.istio-system.svc'], 3600);
    expect(told).toHaveLength(1);
    const leaf = certs(issued.certChainPem)[0]!;
    expect(new X509Certificate(told[0]![0]).fingerprint256).toBe(leaf.fingerprint256);
    expect(told[0]![1]).toBe(ca.issuer.name);

    const records: CertificateRecord[] = [];
    ownCertificateRecorder((r) => void records.push(r), ISTIOD_TLS_REQUESTER, asLog(recordingLog()))(told[0]![0], told[0]![1]);
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({
      source: 'issued',
      issuer: ca.issuer.name,
      requester: ISTIOD_TLS_REQUESTER,
      spiffeId: null,
      dnsNames: ['istiod.istio-system.svc'],
      fingerprint: leaf.fingerprint256.replaceAll(':', '').toLowerCase(),
    });
    expect(recordProblem(records[0]!)).toBeNull();
    // An inventory that refuses it (closing) is logged, not thrown into the controller.
    const log = recordingLog();
    expect(() => ownCertificateRecorder(() => { throw new Error('inventory recorder is closed'); }, ISTIOD_TLS_REQUESTER, asLog(log))(told[0]![0], told[0]![1])).not.toThrow();
    expect(log.lines.map((l) => [l.level, l.msg])).toEqual([['error', 'the inventory refused the record of a certificate meshcert issued itself']]);
  });
});

describe('IstiodTlsController', () => {
  it('creates a kubernetes.io/tls Secret whose chain, names and key are right', async () => {
    const c = controller({ revisions: ['canary'], extraDnsNames: ['istiod.mesh.example.com'] });
    c.start();
    await until(() => secret() !== undefined, 5_000, 'the Secret');
    const s = secret()!;
    expect(s.type).toBe('kubernetes.io/tls');
    expect(Object.keys(s.obj.data as object).sort()).toEqual(['ca.crt', 'tls.crt', 'tls.key']);
    expect(s.obj.metadata.labels).toEqual({ 'app.kubernetes.io/managed-by': 'meshcert' });
    // istiod's own names (pilot/pkg/bootstrap getDNSNames), the revision's and the extra one (the list: istiod-names.test.ts).
    expect(sans(s.leaf)).toEqual(istiodDnsNames('istio-system', { revisions: ['canary'], extraDnsNames: ['istiod.mesh.example.com'] }));
    expect(sans(s.leaf)).toEqual(expect.arrayContaining(['istiod.istio-system.svc', 'istiod-remote.istio-system.svc', 'istiod-canary.istio-system.svc', 'istiod.mesh.example.com']));
    expect(s.chain.length).toBe(2); // leaf + intermediate
    expect(s.ca).toBe(ca.rootPem);
    expect(verifiesTo(s.chain, s.roots)).toBe(true);
    expect(s.leaf.checkPrivateKey(createPrivateKey(s.key))).toBe(true);
    expect(s.leaf.ca).toBe(false);
    const lifetime = new Date(s.leaf.validTo).getTime() - new Date(s.leaf.validFrom).getTime();
    expect(Math.abs(lifetime - 30 * DAY)).toBeLessThan(2_000);
    expect(c.status()).toMatchObject({ issued: 1, failures: 0 });

    // Nothing to do on the next checks.
    await new Promise((r) => setTimeout(r, 500));
    expect(writesTo(fake, 'secrets')).toHaveLength(1);
  });

  it('does not rewrite the Secret in a loop when the signing CA is about to end: issuing is refused and retried with backoff', async () => {
    const caEnd = ca.issuer.notAfter.getTime();
    const clock = (): number => caEnd - 30_000; // 30 s before the intermediate ends
    await expect(ca.issue(clock)(['istiod.istio-system.svc'], 3600)).rejects.toThrow(/the signing CA ends at .*: a certificate for istiod would last only 30 s; renew or rotate the CA/);
    const c = controller({ now: clock, issue: ca.issue(clock) });
    c.start();
    await new Promise((r) => setTimeout(r, 1_500));
    expect(writesTo(fake, 'secrets')).toEqual([]);
    expect(c.status().failures).toBeGreaterThanOrEqual(1); // retried with the controller's backoff
  });

  it('renews when less than a third of the lifetime is left', async () => {
    let offset = 0;
    const clock = (): number => Date.now() + offset;
    const c = controller({ now: clock, issue: ca.issue(clock) });
    c.start();
    await until(() => secret() !== undefined, 5_000, 'the Secret');
    const first = secret()!.leaf.serialNumber;

    offset = 19 * DAY; // 11 of 30 days left: not yet
    await c.reconcileNow();
    expect(secret()!.leaf.serialNumber).toBe(first);

    offset = 21 * DAY; // 9 of 30 days left: renew
    await c.reconcileNow();
    const renewed = secret()!;
    expect(renewed.leaf.serialNumber).not.toBe(first);
    expect(new Date(renewed.leaf.validTo).getTime()).toBeGreaterThan(Date.now() + 50 * DAY);
    expect(writesTo(fake, 'secrets').map((r) => r.method)).toEqual(['POST', 'PUT']);
  });

  it('reissues when the root bundle changes, so ca.crt follows the rotation', async () => {
    const next = await makeTestCa('meshcert-next');
    stops.push(() => next.cleanup());
    let current: TestCa = ca;
    const issue: ServingCertIssuer = (names, life) => current.issue()(names, life);
    const c = controller({ issue, rootBundle: () => current.rootPem });
    c.start();
    await until(() => secret() !== undefined, 5_000, 'the Secret');
    expect(verifiesTo(secret()!.chain, certs(ca.rootPem))).toBe(true);

    current = next;
    c.onRootBundleChanged();
    await until(() => secret()?.ca === next.rootPem, 3_000, 'the new root in ca.crt');
    const s = secret()!;
    expect(verifiesTo(s.chain, s.roots)).toBe(true);
    expect(verifiesTo(s.chain, certs(ca.rootPem))).toBe(false);
  });

  it('reissues tls.crt too when only the bundle changes (a rotation\'s start: a root added, the same signer), since istiod re-reads ca.crt only with a new tls.crt', async () => {
    const next = await makeTestCa('meshcert-added-root');
    stops.push(() => next.cleanup());
    let bundle = ca.rootPem;
    // As meshcert's issuer does, the bundle it answers with is the registry's: both roots once one is added.
    const issue: ServingCertIssuer = async (names, life) => ({ ...(await ca.issue()(names, life)), caPem: bundle });
    const c = controller({ issue, rootBundle: () => bundle });
    c.start();
    await until(() => secret() !== undefined, 5_000, 'the Secret');
    const before = secret()!;
    bundle = ca.rootPem + next.rootPem;
    c.onRootBundleChanged();
    await until(() => secret()?.ca === bundle, 3_000, 'both roots in ca.crt');
    const after = secret()!;
    expect(after.leaf.serialNumber).not.toBe(before.leaf.serialNumber);
    expect(after.crt).not.toBe(before.crt);
    expect(verifiesTo(after.chain, certs(ca.rootPem))).toBe(true);
  });

  it('reissues when the signing CA changes under the same root bundle (a rotation\'s switch, a renewed intermediate)', async () => {
    let issuer = ca.issuer;
    const issue = localServingCertIssuer(() => issuer, { backdateMs: 0 });
    const c = controller({ issue, signer: () => issuer.material.signingCert });
    c.start();
    await until(() => secret() !== undefined, 5_000, 'the Secret');
    const first = secret()!;
    expect(first.leaf.checkIssued(ca.issuer.material.signingCert)).toBe(true);

    await renewIntermediate({ dir: ca.dir });
    issuer = new LocalIssuer('default', loadCaDir(ca.dir));
    expect(issuer.material.rootBundlePem).toBe(ca.rootPem); // same bundle: only the signer differs
    c.onRootBundleChanged();
    await until(() => secret()!.leaf.serialNumber !== first.leaf.serialNumber, 3_000, 'the reissue');
    const s = secret()!;
    expect(s.leaf.checkIssued(issuer.material.signingCert) && s.leaf.verify(issuer.material.signingCert.publicKey)).toBe(true);
    expect(s.ca).toBe(ca.rootPem);
  });

  it('recreates a deleted Secret and repairs an edited one (watch), keeping foreign keys', async () => {
    const c = controller({ checkIntervalMs: 60_000 }); // only the watch can be this quick
    c.start();
    await until(() => secret() !== undefined, 5_000, 'the Secret');
    await until(() => fake.watchCount('secrets') === 1, 2_000, 'the watch');

    fake.delete('secrets', NS, NAME);
    await until(() => secret() !== undefined, 3_000, 'the re-creation');

    // A certificate for other names, valid and from the same CA: still replaced.
    const wrong = await ca.issue()(['not-istiod.example'], 3600);
    const cur = fake.get('secrets', NS, NAME)!;
    const b64 = (s: string): string => Buffer.from(s).toString('base64');
    fake.put('secrets', { ...cur, data: { ...(cur.data as object), 'tls.crt': b64(wrong.certChainPem), 'tls.key': b64(wrong.keyPem), 'extra': b64('keep') } });
    await until(() => sans(secret()!.leaf).includes('istiod.istio-system.svc'), 3_000, 'the repair');
    expect(Buffer.from((secret()!.obj.data as Record<string, string>).extra!, 'base64').toString()).toBe('keep');

    // ca.crt edited: repaired too.
    const cur2 = fake.get('secrets', NS, NAME)!;
    fake.put('secrets', { ...cur2, data: { ...(cur2.data as object), 'ca.crt': b64('garbage') } });
    await until(() => secret()!.ca === ca.rootPem, 3_000, 'the ca.crt repair');
    expect(verifiesTo(secret()!.chain, secret()!.roots)).toBe(true);
  });

  it('without a watch, the periodic check recreates a deleted Secret', async () => {
    const c = controller({ watch: false, checkIntervalMs: 150 });
    c.start();
    await until(() => secret() !== undefined, 5_000, 'the Secret');
    expect(fake.watchCount('secrets')).toBe(0);
    fake.delete('secrets', NS, NAME);
    await until(() => secret() !== undefined, 3_000, 'the re-creation');
    expect(fake.requests.filter((r) => r.path.includes('/secrets') && (r.watch || r.path.endsWith('/secrets')) && r.method === 'GET')).toEqual([]);
  });

  it('a follower neither GETs nor writes the Secret', async () => {
    let leader = false;
    const c = controller({ isLeader: () => leader });
    c.start();
    await new Promise((r) => setTimeout(r, 500));
    expect(fake.requests.filter((r) => r.path === `/api/v1/namespaces/${NS}/secrets/${NAME}`)).toEqual([]);
    expect(secret()).toBeUndefined();
    leader = true;
    c.onStartedLeading();
    await until(() => secret() !== undefined, 3_000, 'the Secret after gaining leadership');
  });

  it('retries failures, writes the already issued certificate after a 409, and never logs the key', async () => {
    const log = recordingLog();
    let issues = 0;
    const base = ca.issue();
    const issue: ServingCertIssuer = (names, life) => {
      issues++;
      return base(names, life);
    };
    fake.fail({ method: 'POST', path: `/api/v1/namespaces/${NS}/secrets` }, { status: 503 }, 2);
    const c = controller({ issue, log: asLog(log) });
    c.start();
    await until(() => secret() !== undefined, 5_000, 'the Secret after two failures');
    expect(issues).toBe(1); // the failed writes reused the issued pair
    expect(c.status().failures).toBe(2);

    // A renewal whose first write conflicts: re-read, write the same new pair.
    const before = fake.requests.length;
    fake.fail({ method: 'PUT', path: `/api/v1/namespaces/${NS}/secrets/${NAME}` }, { status: 409 }, 1);
    const cur = fake.get('secrets', NS, NAME)!;
    fake.put('secrets', { ...cur, data: { ...(cur.data as object), 'tls.key': Buffer.from('broken').toString('base64') } });
    const keyMatches = (): boolean => {
      try {
        return secret()!.leaf.checkPrivateKey(createPrivateKey(secret()!.key));
      } catch {
        return false; // still the broken key
      }
    };
    await until(keyMatches, 3_000, 'the repair');
    expect(issues).toBe(2);
    const calls = fake.requests.slice(before).filter((r) => r.path === `/api/v1/namespaces/${NS}/secrets/${NAME}` && r.method !== 'GET');
    expect(calls.map((r) => `${r.method} ${r.status}`)).toEqual(['PUT 409', 'PUT 200']);

    const keyBody = secret()!.key.replace(/-----[A-Z ]+-----/g, '').replace(/\s+/g, '');
    const logged = JSON.stringify(log.lines);
    expect(logged).not.toContain(keyBody.slice(0, 40));
    expect(logged).not.toContain('PRIVATE KEY');
    expect(log.lines.some((l) => l.level === 'info' && l.msg === 'istiod serving certificate created')).toBe(true);
  });

  it('keeps the type of an existing Secret of another type (immutable) and warns once', async () => {
    fake.put('secrets', { metadata: { name: NAME, namespace: NS, labels: { owner: 'ops' } }, type: 'Opaque', data: {} });
    const log = recordingLog();
    const c = controller({ log: asLog(log) });
    c.start();
    await until(() => secret()?.crt !== '' && secret()?.crt !== undefined, 5_000, 'the Secret filled in');
    expect(secret()!.type).toBe('Opaque');
    expect(secret()!.obj.metadata.labels).toEqual({ owner: 'ops', 'app.kubernetes.io/managed-by': 'meshcert' });
    expect(log.lines.filter((l) => l.level === 'warn' && l.msg?.includes('cannot be changed'))).toHaveLength(1);
    // Once: not again at the next write.
    const cur = fake.get('secrets', NS, NAME)!;
    fake.put('secrets', { ...cur, data: { ...(cur.data as object), 'tls.key': Buffer.from('broken').toString('base64') } });
    await until(() => writesTo(fake, 'secrets').filter((r) => r.method === 'PUT' && r.status === 200).length === 2, 3_000, 'the second write');
    expect(log.lines.filter((l) => l.level === 'warn' && l.msg?.includes('cannot be changed'))).toHaveLength(1);
  });
});

describe('IstiodTlsController, found by mutation testing', () => {
  const b64 = (s: string): string => Buffer.from(s).toString('base64');
  const tlsSecret = (crt: string, key: string, caPem: string | undefined): { data: Record<string, string> } => ({
    data: { 'tls.crt': b64(crt), 'tls.key': b64(key), ...(caPem === undefined ? {} : { 'ca.crt': b64(caPem) }) },
  });
  const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
  const secretGets = (): number => fake.requests.filter((r) => r.method === 'GET' && r.path === `/api/v1/namespaces/${NS}/secrets/${NAME}`).length;

  it('refuses a lifetime that is not positive and a renewal ratio outside (0, 1)', () => {
    expect(() => controller({ lifetimeSeconds: 0 })).toThrow(/lifetime must be positive/);
    expect(() => controller({ renewBeforeRatio: 0 })).toThrow(/between 0 and 1/);
    expect(() => controller({ renewBeforeRatio: 1 })).toThrow(/between 0 and 1/);
    expect(() => controller({ lifetimeSeconds: 1, renewBeforeRatio: 0.99 })).not.toThrow();
  });

  it('check() says what is wrong with a Secret, and accepts SANs in any order and a chain that reaches a trusted intermediate', async () => {
    let t = Date.now();
    const c = controller({ now: () => t, watch: false });
    const names = [...c.dnsNames];
    const good = await ca.issue()(names, 30 * 86_400);
    const other = await ca.issue()(names, 30 * 86_400);
    const next = await makeTestCa('meshcert-check-other');
    stops.push(() => next.cleanup());
    const foreign = await next.issue()(names, 30 * 86_400);
    const reason = (s: ReturnType<typeof tlsSecret>): string | undefined => c.check(s).reason;

    expect(reason(tlsSecret(good.certChainPem, good.keyPem, ca.rootPem))).toBeUndefined();
    expect(reason(tlsSecret(good.certChainPem, good.keyPem, undefined))).toBe('missing key ca.crt');
    expect(reason(tlsSecret(good.certChainPem, good.keyPem, 'garbage'))).toBe('tls.crt or ca.crt holds no certificate');
    expect(reason(tlsSecret(good.certChainPem, other.keyPem, ca.rootPem))).toBe('tls.key does not match tls.crt');
    expect(reason(tlsSecret(foreign.certChainPem, foreign.keyPem, ca.rootPem))).toBe('tls.crt does not verify to ca.crt');
    // The same names in another order in the certificate: current.
    const reversed = await ca.issue()([...names].reverse(), 30 * 86_400);
    expect(reason(tlsSecret(reversed.certChainPem, reversed.keyPem, ca.rootPem))).toBeUndefined();
    t = good.notAfter.getTime() + 1;
    expect(reason(tlsSecret(good.certChainPem, good.keyPem, ca.rootPem))).toBe('expired');
    t = good.notAfter.getTime() - 9 * DAY;
    expect(reason(tlsSecret(good.certChainPem, good.keyPem, ca.rootPem))).toBe('due for renewal');

    // ca.crt holding the intermediate: the chain is anchored there, whatever follows it in tls.crt.
    const interPem = ca.issuer.material.signingCert.toString();
    const anchored = controller({ watch: false, rootBundle: () => interPem });
    expect(anchored.check(tlsSecret(good.certChainPem + next.rootPem, good.keyPem, interPem)).reason).toBeUndefined();
  });
  it('accepts the CA bundle the issuer writes when it differs from the root bundle, until the root bundle changes', async () => {
    const log = recordingLog();
    const next = await makeTestCa('meshcert-issuer-bundle');
    stops.push(() => next.cleanup());
    let root = ca.rootPem;
    const issuerCa = ca.rootPem + next.rootPem;
    const issue: ServingCertIssuer = async (names, life) => ({ ...(await ca.issue()(names, life)), caPem: issuerCa });
    const c = controller({ issue, rootBundle: () => root, log: asLog(log) });
    c.start();
    await until(() => secret() !== undefined, 5_000, 'the Secret');
    expect(secret()!.ca).toBe(issuerCa);
    expect(log.lines.filter((l) => l.level === 'warn' && l.msg?.includes('different from the distributed root bundle'))).toHaveLength(1);
    await sleep(600); // several periodic checks: the issuer's bundle is current, nothing rewritten
    expect(writesTo(fake, 'secrets')).toHaveLength(1);
    expect(c.status().issued).toBe(1);

    // Another root bundle: the accepted one is no longer current.
    root = next.rootPem;
    c.onRootBundleChanged();
    await until(() => c.status().issued === 2, 3_000, 'the reissue');
  });

  it('runs one more check when one is asked for during a check (a root bundle changed while issuing)', async () => {
    const next = await makeTestCa('meshcert-during');
    stops.push(() => next.cleanup());
    let bundle = ca.rootPem;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let calls = 0;
    const issue: ServingCertIssuer = async (names, life) => {
      const caPem = bundle;
      if (calls++ === 0) await gate;
      return { ...(await ca.issue()(names, life)), caPem };
    };
    const c = controller({ issue, rootBundle: () => bundle, watch: false, checkIntervalMs: 60_000 });
    c.start();
    await until(() => calls === 1, 3_000, 'the first issue');
    bundle = ca.rootPem + next.rootPem;
    c.onRootBundleChanged();
    release();
    await until(() => secret()?.ca === bundle, 3_000, 'ca.crt with both roots');
  });

  it('does nothing before start(), and a second start() is no second check', async () => {
    const c = controller({ watch: false, checkIntervalMs: 60_000 });
    c.onStartedLeading();
    c.onRootBundleChanged();
    await sleep(300);
    expect(secretGets()).toBe(0);
    c.start();
    c.start();
    await until(() => secret() !== undefined, 5_000, 'the Secret');
    await sleep(300);
    expect(secretGets()).toBe(1);
  });

  it('stop() waits for a check under way: no request follows once it resolved', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let calls = 0;
    const base = ca.issue();
    const c = controller({ watch: false, issue: async (names, life) => (calls++, await gate, base(names, life)) });
    c.start();
    await until(() => calls === 1, 3_000, 'the issue');
    const stopping = c.stop();
    release();
    await stopping;
    const n = fake.requests.length;
    await sleep(300);
    expect(fake.requests.length).toBe(n);
  });

  it('backs off exponentially up to retryMaxMs, and starts again from retryBaseMs after a success', async () => {
    const log = recordingLog();
    fake.fail({ method: 'POST', path: `/api/v1/namespaces/${NS}/secrets` }, { status: 503 }, 3);
    const c = controller({ log: asLog(log), watch: false, checkIntervalMs: 60_000, retryBaseMs: 40, retryMaxMs: 100 });
    c.start();
    await until(() => secret() !== undefined, 5_000, 'the Secret after three failures');
    const delays = (): unknown[] => log.lines.filter((l) => l.level === 'warn' && l.msg?.includes('not reconciled')).map((l) => (l.obj as { retryInMs: number }).retryInMs);
    expect(delays()).toEqual([40, 80, 100]);
    fake.fail({ method: 'GET', path: `/api/v1/namespaces/${NS}/secrets/${NAME}` }, { status: 503 }, 1);
    await c.reconcileNow();
    expect(delays()).toEqual([40, 80, 100, 40]);
  });

  it('issues anew, not the pending pair of a failed write, once the root bundle changed or too little of its lifetime is left', async () => {
    const next = await makeTestCa('meshcert-pending');
    stops.push(() => next.cleanup());
    let bundle = ca.rootPem;
    let offset = 0;
    const clock = (): number => Date.now() + offset;
    let issues = 0;
    const issue: ServingCertIssuer = async (names, life) => {
      issues++;
      return { ...(await ca.issue(clock)(names, life)), caPem: bundle };
    };
    const c = controller({ issue, now: clock, rootBundle: () => bundle, watch: false, checkIntervalMs: 60_000, retryBaseMs: 60_000, retryMaxMs: 60_000 });
    fake.fail({ method: 'POST', path: `/api/v1/namespaces/${NS}/secrets` }, { status: 503 }, 1);
    c.start();
    await until(() => c.status().failures === 1, 3_000, 'the failed write');
    bundle = ca.rootPem + next.rootPem;
    await c.reconcileNow();
    expect(issues).toBe(2);
    expect(secret()!.ca).toBe(bundle);

    // Renewal time, and the write fails: the pair issued then is 20 days old at the retry.
    offset = 21 * DAY;
    fake.fail({ method: 'PUT', path: `/api/v1/namespaces/${NS}/secrets/${NAME}` }, { status: 503 }, 1);
    await c.reconcileNow();
    expect(issues).toBe(3);
    offset = 41 * DAY;
    await c.reconcileNow();
    expect(issues).toBe(4);
    expect(new Date(secret()!.leaf.validTo).getTime()).toBeGreaterThan(Date.now() + 41 * DAY + 25 * DAY);
  });

  it('reads again and writes within the same check after a 409 or a 404 on update; a 404 on create (no namespace) is not retried there', async () => {
    const c = controller({ watch: false, checkIntervalMs: 60_000 });
    c.start();
    await until(() => secret() !== undefined, 5_000, 'the Secret');
    const breakKey = (): void => {
      const cur = fake.get('secrets', NS, NAME)!;
      fake.put('secrets', { ...cur, data: { ...(cur.data as object), 'tls.key': b64('broken') } });
    };
    for (const status of [409, 404]) {
      breakKey();
      fake.fail({ method: 'PUT', path: `/api/v1/namespaces/${NS}/secrets/${NAME}` }, { status }, 1);
      await c.reconcileNow();
      expect(c.status()).toMatchObject({ failures: 0, lastError: undefined });
      expect(secret()!.key).not.toBe('broken');
    }
    fake.delete('secrets', NS, NAME);
    const before = fake.requests.length;
    fake.fail({ method: 'POST', path: `/api/v1/namespaces/${NS}/secrets` }, { status: 404, message: 'namespaces "istio-system" not found' }, 1);
    await c.reconcileNow();
    expect(c.status().failures).toBe(1);
    expect(c.status().lastError).not.toMatch(/kept changing/);
    expect(fake.requests.slice(before).filter((r) => r.method === 'POST')).toHaveLength(1);
  });

  it('does not write when it stops being the leader while issuing', async () => {
    let leader = true;
    const base = ca.issue();
    const c = controller({ watch: false, isLeader: () => leader, issue: async (names, life) => { leader = false; return base(names, life); } });
    c.start();
    await until(() => c.status().issued === 1, 3_000, 'the issue');
    await sleep(300);
    expect(writesTo(fake, 'secrets')).toEqual([]);
  });

  it('keeps a Secret another replica wrote while this one issued (409, then current): no write over it', async () => {
    const theirs = await ca.issue()(istiodDnsNames(NS, {}), 30 * 86_400);
    fake.put('secrets', { metadata: { name: NAME, namespace: NS }, type: 'kubernetes.io/tls', data: { 'tls.key': b64('broken') } });
    const base = ca.issue();
    const issue: ServingCertIssuer = async (names, life) => {
      const cur = fake.get('secrets', NS, NAME)!;
      fake.put('secrets', { ...cur, data: { 'tls.crt': b64(theirs.certChainPem), 'tls.key': b64(theirs.keyPem), 'ca.crt': b64(theirs.caPem) } });
      return base(names, life);
    };
    const c = controller({ watch: false, checkIntervalMs: 60_000, issue });
    c.start();
    await until(() => c.status().issued === 1, 3_000, 'the issue');
    // The 409 and the read after it: done once the status reports their certificate.
    await until(() => c.status().notAfter?.getTime() === theirs.notAfter.getTime(), 5_000, 'the re-read after the conflict');
    await c.stop();
    expect(secret()!.crt).toBe(theirs.certChainPem);
    expect(writesTo(fake, 'secrets').filter((r) => r.status === 200).length).toBe(0);
    expect(c.status()).toMatchObject({ failures: 0, notAfter: theirs.notAfter });
  });

  it('status() of a replica that finds the Secret current: its NotAfter, and no error left from a failed check', async () => {
    const first = controller({ watch: false });
    first.start();
    await until(() => secret() !== undefined, 5_000, 'the Secret');
    await first.stop();
    const c = controller({ watch: false, checkIntervalMs: 60_000, retryBaseMs: 60_000 });
    fake.fail({ method: 'GET', path: `/api/v1/namespaces/${NS}/secrets/${NAME}` }, { status: 503 }, 1);
    c.start();
    await until(() => c.status().failures === 1, 3_000, 'the failed read');
    expect(c.status().lastError).toBeDefined();
    await c.reconcileNow();
    expect(c.status()).toMatchObject({ lastError: undefined, notAfter: new Date(secret()!.leaf.validTo), issued: 0 });
  });
});
