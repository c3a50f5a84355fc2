/**
 * The certificates API over a real store: SQLite in a temp dir and the PostgreSQL started by
 * test/support/postgres.ts (skipped, with the reason, when there is none).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { handleCertificatesApi, QuerySlots, requestTarget } from '../../../src/admin/certificates-api.js';
import { openStore } from '../../../src/inventory/open.js';
import type { CertificateRecord, InventoryStore } from '../../../src/inventory/types.js';
import { createTestDatabase, pgSkipReason, type TestDatabase } from '../../support/postgres-control.js';
import { fp, makeRecord } from '../inventory/fixtures.js';

const HOUR = 3_600_000;
const NOW = Date.UTC(2030, 0, 10);

/** 60 records: 3 namespaces x 2 service accounts, 2 issuers, issued and discovered, some expired. */
function seed(): CertificateRecord[] {
  const out: CertificateRecord[] = [];
  for (let i = 0; i < 60; i++) {
    const ns = ['shop', 'pay', 'ops'][i % 3]!;
    const sa = ['api', 'worker'][i % 2]!;
    const discovered = i % 10 === 9;
    out.push(
      makeRecord(`api-${i}`, {
        spiffeId: `spiffe://cluster.local/ns/${ns}/sa/${sa}`,
        namespace: ns,
        serviceAccount: sa,
        issuer: i % 4 === 0 ? 'legacy' : 'default',
        // Every fifth asked for by a node agent (ztunnel), the rest by the workload itself.
        requester: i % 5 === 0 ? 'spiffe://cluster.local/ns/istio-system/sa/ztunnel' : `spiffe://cluster.local/ns/${ns}/sa/${sa}`,
        source: discovered ? `discovered:file:/certs/${i}.pem` : 'issued',
        // every 6 hours, from 2 days before NOW to 13 days after
        notBefore: new Date(NOW - 48 * HOUR + i * 6 * HOUR - 24 * HOUR),
        notAfter: new Date(NOW - 48 * HOUR + i * 6 * HOUR),
        issuedAt: new Date(NOW - 48 * HOUR + i * 6 * HOUR - 24 * HOUR),
      }),
    );
  }
  return out;
}

interface Harness {
  name: string;
  skip: () => string | null;
  open(): Promise<InventoryStore>;
  cleanup(): Promise<void>;
}

function sqlite(): Harness {
  let dir = '';
  return {
    name: 'sqlite',
    skip: () => null,
    async open() {
      dir = mkdtempSync(join(tmpdir(), 'meshcert-api-'));
      return openStore({ kind: 'sqlite', path: join(dir, 'inventory.db') });
    },
    async cleanup() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function postgres(): Harness {
  let db: TestDatabase | null = null;
  return {
    name: 'postgres',
    skip: pgSkipReason,
    async open() {
      db = await createTestDatabase('certapi');
      return openStore({ kind: 'postgres', url: db.url });
    },
    async cleanup() {
      await db?.drop();
    },
  };
}

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: unknown;
  text: string;
}

describe.each([sqlite(), postgres()])('certificates API over $name', (h) => {
  const skip = h.skip();
  let store: InventoryStore;
  let server: http.Server;
  let base = '';
  let records: CertificateRecord[];
  let storeDown = false;

  async function request(path: string, method = 'GET'): Promise<Reply> {
    const res = await fetch(`${base}${path}`, { method });
    const text = await res.text();
    let body: unknown = null;
    try {
      body = JSON.parse(text);
    } catch {
      // not JSON
    }
    return { status: res.status, headers: Object.fromEntries(res.headers) as http.IncomingHttpHeaders, body, text };
  }

  async function listAll(query: string): Promise<Array<Record<string, unknown>>> {
    const out: Array<Record<string, unknown>> = [];
    let cursor: string | null = null;
    for (let pages = 0; pages < 1000; pages++) {
      const sep = query === '' ? '?' : '&';
      const r = await request(`/api/v1/certificates?${query}${cursor !== null ? `${sep}cursor=${encodeURIComponent(cursor)}` : ''}`);
      expect(r.status).toBe(200);
      const page = r.body as { items: Array<Record<string, unknown>>; nextCursor: string | null };
      out.push(...page.items);
      cursor = page.nextCursor;
      if (cursor === null) return out;
    }
    throw new Error('pagination did not end');
  }

  beforeAll(async () => {
    if (skip) return;
    store = await h.open();
    records = seed();
    await store.insertMany(records);
    server = http.createServer((req, res) => {
      const s: InventoryStore = storeDown
        ? {
            ...store,
            kind: store.kind,
            list: async () => {
              throw new Error('connect ECONNREFUSED 127.0.0.1:5432 (secret details)');
            },
            get: async () => {
              throw new Error('connect ECONNREFUSED');
            },
          }
        : store;
      handleCertificatesApi(req, res, s, { now: () => new Date(NOW) }).then(
        (handled) => {
          if (!handled) {
            res.writeHead(418, { 'content-type': 'text/plain' });
            res.end('not mine');
          }
        },
        () => {
          res.writeHead(500);
          res.end('handler threw');
        },
      );
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    if (skip) return;
    await new Promise((resolve) => server.close(resolve));
    await store.close();
    await h.cleanup();
  });

  /** A request whose path goes out exactly as written (fetch would resolve its dot segments first). */
  const rawStatus = (path: string): Promise<number> =>
    new Promise((resolve, reject) => {
      const u = new URL(base);
      const req = http.request({ host: u.hostname, port: u.port, path }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end();
    });

  it.skipIf(skip)('takes only its own path as sent: dot segments, their percent-encoding and backslashes elsewhere do not reach it (a proxy guarding only /api/ stays in front)', async () => {
    for (const path of ['/healthz/../api/v1/certificates', '/healthz/%2e%2e/api/v1/certificates?limit=1', '/metrics\\..\\api\\v1\\certificates', '/api/v1/x/../certificates', '/api/v1/certificates/../certificates']) {
      expect(await rawStatus(path), path).not.toBe(200);
    }
    expect(await rawStatus('/healthz/../api/v1/certificates')).toBe(418); // not this API's
    expect(await rawStatus('/api/v1/certificates?limit=1')).toBe(200);
    expect(await rawStatus('/api/v1/certificates/%2e%2e')).toBe(400); // a key, and not a serial
    // The absolute form (RFC 9112 §3.2.2), as a proxy may send it: the same path.
    expect(await rawStatus(`${base}/api/v1/certificates?limit=1`)).toBe(200);
    expect(await rawStatus(`${base}/healthz/../api/v1/certificates`)).toBe(418);
    // The scheme is case-insensitive (RFC 9110 §4.2.3).
    expect(await rawStatus(`${base.replace('http:', 'HTTP:')}/api/v1/certificates?limit=1`)).toBe(200);
  });

  it.skipIf(skip)('lists certificates as JSON with ISO dates, ordered by notAfter', async () => {
    const r = await request('/api/v1/certificates?limit=3');
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toBe('application/json; charset=utf-8');
    // An inventory answer is a moment's: no cache (a proxy's, a browser's) may serve it again.
    expect(r.headers['cache-control']).toBe('no-store');
    const body = r.body as { items: Array<Record<string, unknown>>; nextCursor: string | null };
    expect(Object.keys(body).sort()).toEqual(['items', 'nextCursor']);
    expect(body.items).toHaveLength(3);
    expect(typeof body.nextCursor).toBe('string');
    const first = records[0]!;
    expect(body.items[0]).toEqual({
      serial: first.serial,
      fingerprint: first.fingerprint,
      spiffeId: first.spiffeId,
      namespace: first.namespace,
      serviceAccount: first.serviceAccount,
      cluster: first.cluster,
      issuer: first.issuer,
      subject: null,
      dnsNames: [],
      keyAlgorithm: first.keyAlgorithm,
      keySize: first.keySize,
      notBefore: first.notBefore.toISOString(),
      notAfter: first.notAfter.toISOString(),
      issuedAt: first.issuedAt.toISOString(),
      requester: first.requester,
      policyRule: first.policyRule,
      source: first.source,
    });
  });

  it.skipIf(skip)('follows nextCursor until null and sees every row exactly once', async () => {
    for (const limit of [1, 7, 60, 1000]) {
      const all = await listAll(`limit=${limit}`);
      expect(all.map((i) => i.fingerprint)).toEqual(records.map((r) => r.fingerprint));
    }
    const filtered = await listAll('namespace=shop&limit=4');
    expect(filtered.map((i) => i.fingerprint)).toEqual(records.filter((r) => r.namespace === 'shop').map((r) => r.fingerprint));
  });

  it.skipIf(skip)('ties a cursor to the filters it was returned for: other filters are refused, the page size may change', async () => {
    const first = await request('/api/v1/certificates?namespace=shop&limit=4');
    const cursor = (first.body as { nextCursor: string }).nextCursor;
    const shop = records.filter((r) => r.namespace === 'shop').map((r) => r.fingerprint);
    const c = encodeURIComponent(cursor);
    // The position alone would answer pay's certificates after shop's 4th, skipping the rest silently.
    const others = ['issuer=legacy', 'includeExpired=false', 'serviceAccount=api', 'spiffeId=spiffe%3A%2F%2Fcluster.local%2Fns%2Fshop%2Fsa%2Fapi', 'requester=x', 'source=issued', 'expiringWithin=7d'];
    for (const q of [`namespace=pay&cursor=${c}`, `cursor=${c}`, ...others.map((o) => `namespace=shop&${o}&cursor=${c}`)]) {
      const r = await request(`/api/v1/certificates?${q}`);
      expect(r.status, q).toBe(400);
      expect(r.body, q).toEqual({ error: 'this cursor was returned for other filters: send the same filters as the request that returned it (only limit may change), or start again without a cursor' });
    }
    const rest = await request(`/api/v1/certificates?limit=100&namespace=shop&cursor=${c}`);
    expect(rest.status).toBe(200);
    expect((rest.body as { items: Array<{ fingerprint: string }> }).items.map((i) => i.fingerprint)).toEqual(shop.slice(4));
    // The same criteria spelled another way are the same query.
    const week = await request('/api/v1/certificates?expiringWithin=7d&includeExpired=true&limit=2');
    const weekCursor = encodeURIComponent((week.body as { nextCursor: string }).nextCursor);
    expect((await request(`/api/v1/certificates?expiringWithin=%20168h&includeExpired=1&cursor=${weekCursor}`)).status).toBe(200);
    expect((await request(`/api/v1/certificates?expiringWithin=6d&includeExpired=1&cursor=${weekCursor}`)).status).toBe(400);
    // includeExpired=true is what its absence means.
    expect((await request(`/api/v1/certificates?expiringWithin=7d&cursor=${weekCursor}`)).status).toBe(200);
    // A cursor without its tag, or with its position altered, is not one this API returned.
    const [position, tag] = cursor.split('.') as [string, string];
    // Nor is text with a dot in it: said to be no cursor, not blamed on the filters.
    for (const bad of [position, `${position.slice(0, -2)}xx.${tag}`, `.${tag}`, 'abc.def', `${position.slice(0, -2)}xx.other`]) {
      const r = await request(`/api/v1/certificates?namespace=shop&cursor=${encodeURIComponent(bad)}`);
      expect(r.status, bad).toBe(400);
      expect((r.body as { error: string }).error, bad).toMatch(/^invalid inventory cursor/);
    }
  });

  it.skipIf(skip)('reads typed values with surrounding spaces alike (limit, expiringWithin, includeExpired)', async () => {
    const spaced = await request('/api/v1/certificates?limit=%202%20&includeExpired=%20false');
    expect(spaced.status).toBe(200);
    const plain = await request('/api/v1/certificates?limit=2&includeExpired=false');
    expect(spaced.body).toEqual(plain.body);
    expect((spaced.body as { items: unknown[] }).items).toHaveLength(2);
    expect((await request('/api/v1/certificates?expiringWithin=%207d%20')).status).toBe(200);
  });

  it.skipIf(skip)('filters by namespace, serviceAccount, issuer, spiffeId, requester and source (combined with AND)', async () => {
    const fps = (pred: (r: CertificateRecord) => boolean): string[] => records.filter(pred).map((r) => r.fingerprint);
    const got = async (q: string): Promise<string[]> => (await listAll(q)).map((i) => i.fingerprint as string);
    expect(await got('namespace=pay')).toEqual(fps((r) => r.namespace === 'pay'));
    expect(await got('namespace=pay&serviceAccount=worker')).toEqual(fps((r) => r.namespace === 'pay' && r.serviceAccount === 'worker'));
    expect(await got('issuer=legacy')).toEqual(fps((r) => r.issuer === 'legacy'));
    expect(await got(`spiffeId=${encodeURIComponent('spiffe://cluster.local/ns/ops/sa/api')}`)).toEqual(fps((r) => r.spiffeId === 'spiffe://cluster.local/ns/ops/sa/api'));
    const ztunnel = 'spiffe://cluster.local/ns/istio-system/sa/ztunnel';
    expect(await got(`requester=${encodeURIComponent(ztunnel)}`)).toEqual(fps((r) => r.requester === ztunnel));
    expect(await got(`requester=${encodeURIComponent(ztunnel)}&namespace=shop`)).toEqual(fps((r) => r.requester === ztunnel && r.namespace === 'shop'));
    expect(fps((r) => r.requester === ztunnel).length).toBe(12);
    expect(await got('source=discovered')).toEqual(fps((r) => r.source !== 'issued'));
    expect(await got('source=issued&issuer=legacy')).toEqual(fps((r) => r.source === 'issued' && r.issuer === 'legacy'));
    expect(await got(`source=${encodeURIComponent('discovered:file:/certs/19.pem')}`)).toEqual([fp('cert-api-19')]);
    expect(await got('namespace=nope')).toEqual([]);
    expect(await got('namespace=&issuer=')).toHaveLength(60); // empty parameters are ignored
  });

  it.skipIf(skip)('expiringWithin selects notAfter < now + duration; includeExpired=false drops expired ones', async () => {
    const got = async (q: string): Promise<string[]> => (await listAll(q)).map((i) => i.fingerprint as string);
    const fps = (pred: (r: CertificateRecord) => boolean): string[] => records.filter(pred).map((r) => r.fingerprint);
    expect(await got('expiringWithin=1d')).toEqual(fps((r) => r.notAfter.getTime() < NOW + 24 * HOUR));
    expect(await got('expiringWithin=24h')).toEqual(fps((r) => r.notAfter.getTime() < NOW + 24 * HOUR));
    expect(await got('expiringWithin=7d&includeExpired=false')).toEqual(fps((r) => r.notAfter.getTime() >= NOW && r.notAfter.getTime() < NOW + 7 * 24 * HOUR));
    expect(await got('includeExpired=false')).toEqual(fps((r) => r.notAfter.getTime() >= NOW));
    expect(await got('includeExpired=true')).toHaveLength(60);
    // 1 and 0 say the same as true and false.
    expect(await got('includeExpired=0')).toEqual(fps((r) => r.notAfter.getTime() >= NOW));
    expect(await got('includeExpired=1')).toHaveLength(60);
  });

  it.skipIf(skip)('gets one certificate by serial or fingerprint, and 404s otherwise', async () => {
    const r = records[5]!;
    const byFp = await request(`/api/v1/certificates/${r.fingerprint}`);
    expect(byFp.status).toBe(200);
    expect((byFp.body as Record<string, unknown>).fingerprint).toBe(r.fingerprint);
    expect((byFp.body as Record<string, unknown>).notAfter).toBe(r.notAfter.toISOString());
    const bySerial = await request(`/api/v1/certificates/${r.serial.toUpperCase()}`);
    expect((bySerial.body as Record<string, unknown>).fingerprint).toBe(r.fingerprint);
    const colons = r.fingerprint.match(/../g)!.join(':');
    expect((await request(`/api/v1/certificates/${colons}`)).status).toBe(200);
    const missing = await request(`/api/v1/certificates/${'ab'.repeat(32)}`);
    expect(missing.status).toBe(404);
    expect(missing.body).toEqual({ error: 'not found' });
    expect((await request('/api/v1/certificates/abc/def')).status).toBe(404);
  });

  it.skipIf(skip)('answers 400 with a message for a bad query', async () => {
    for (const q of [
      'expiringWithin=soon',
      'expiringWithin=-1d',
      'limit=0',
      'limit=1001',
      'limit=ten',
      'cursor=not-a-cursor',
      `cursor=${Buffer.from('{"v":2}').toString('base64url')}`,
      'source=found',
      'source=discovered:',
      'includeExpired=maybe',
      'nmespace=shop',
      'namespace=a&namespace=b',
      // PostgreSQL refuses a NUL in text; both stores answer 400, not "store unavailable".
      'namespace=%00',
      'spiffeId=spiffe%3A%2F%2Fa%00b',
      // Not percent-encoded UTF-8: refused as the lookup path refuses such a key, not read as U+FFFD or a literal %.
      'namespace=%FF',
      'namespace=%C0%AF',
      'namespace=%zz',
      'namespace=50%',
      '%FF=x',
    ]) {
      const r = await request(`/api/v1/certificates?${q}`);
      expect(r.status, q).toBe(400);
      const body = r.body as { error: string };
      expect(Object.keys(body), q).toEqual(['error']);
      expect(body.error.length, q).toBeGreaterThan(5);
      expect(r.text, q).not.toMatch(/\n\s+at /);
    }
    // A bare number would be seconds: refused, as on the command line (30 is a typo for 30d).
    const bare = await request('/api/v1/certificates?expiringWithin=30');
    expect(bare.status).toBe(400);
    expect(bare.body).toEqual({ error: 'expiringWithin 30: give a unit (30d, 30h, 30m or 30s); a bare number would be seconds' });
    expect((await request('/api/v1/certificates?expiringWithin=0')).status).toBe(200);
    expect((await request('/api/v1/certificates?namespace=%FF')).body).toEqual({ error: 'the query "namespace=%FF" is not valid percent-encoding (UTF-8)' });
    // Encoded well, a + is a space and %25 a percent sign: answered.
    expect((await request('/api/v1/certificates?namespace=a+b%25%C3%A9')).status).toBe(200);
    const notHex = await request('/api/v1/certificates/not-a-serial');
    expect(notHex.status).toBe(400);
    // A lookup takes no parameters: a filter sent with it is refused, not silently not applied.
    const filtered = await request(`/api/v1/certificates/${records[0]!.fingerprint}?namespace=other`);
    expect(filtered.status).toBe(400);
    expect(filtered.body).toEqual({ error: 'unknown query parameter "namespace": a certificate is looked up by its key alone' });
    // Past a century (and so anything beyond what a Date holds): refused here, not passed on to the store.
    const far = await request('/api/v1/certificates?expiringWithin=99999999999d');
    expect(far.status).toBe(400);
    expect(far.body).toEqual({ error: 'expiringWithin: invalid duration "99999999999d": at most 36500d' });
  });

  it.skipIf(skip)('answers HEAD as GET without a body, and 405 with Allow: GET, HEAD for other methods', async () => {
    const head = await request(`/api/v1/certificates/${records[0]!.fingerprint}`, 'HEAD');
    expect(head.status).toBe(200);
    expect(head.text).toBe('');
    expect((await request('/api/v1/certificates/00', 'HEAD')).status).toBe(404);
    for (const method of ['POST', 'PUT', 'DELETE', 'PATCH']) {
      const r = await request('/api/v1/certificates', method);
      expect(r.status, method).toBe(405);
      expect(r.headers.allow, method).toBe('GET, HEAD');
      expect((r.body as { error: string }).error).toMatch(/GET/);
    }
    expect((await request(`/api/v1/certificates/${records[0]!.fingerprint}`, 'DELETE')).status).toBe(405);
    // A path the API does not serve is 404 whatever the method.
    for (const method of ['GET', 'POST', 'DELETE']) expect((await request('/api/v1/certificates/a/b', method)).status, method).toBe(404);
  });

  it.skipIf(skip)('leaves other paths alone', async () => {
    for (const p of ['/', '/metrics', '/api/v1/certificatesx', '/api/v1/other', '/api/v2/certificates']) {
      const r = await request(p);
      expect(r.status, p).toBe(418);
    }
  });

  it.skipIf(skip)('answers 503 without details when the store fails', async () => {
    storeDown = true;
    try {
      const list = await request('/api/v1/certificates');
      expect(list.status).toBe(503);
      expect(list.body).toEqual({ error: 'inventory store unavailable' });
      const one = await request(`/api/v1/certificates/${records[0]!.fingerprint}`);
      expect(one.status).toBe(503);
      expect(one.text).not.toContain('ECONNREFUSED');
    } finally {
      storeDown = false;
    }
  });

  it.skipIf(skip)('answers 503 when the store is closed', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshcert-api-closed-'));
    const closed = await openStore({ kind: 'sqlite', path: join(dir, 'inventory.db') });
    await closed.close();
    const srv = http.createServer((req, res) => void handleCertificatesApi(req, res, closed));
    await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
    try {
      const res = await fetch(`http://127.0.0.1:${(srv.address() as AddressInfo).port}/api/v1/certificates`);
      expect(res.status).toBe(503);
      expect(await res.json()).toEqual({ error: 'inventory store unavailable' });
    } finally {
      await new Promise((resolve) => srv.close(resolve));
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('certificates API over a fake store', () => {
  async function serve(store: InventoryStore, options: Parameters<typeof handleCertificatesApi>[3]): Promise<{ url: string; close: () => Promise<void> }> {
    const srv = http.createServer((req, res) => void handleCertificatesApi(req, res, store, options));
    await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
    return { url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`, close: () => new Promise((resolve) => srv.close(() => resolve())) };
  }

  it('runs a lookup in a query slot too: one more than the slots is answered 503 with Retry-After, without asking the store', async () => {
    const waiting: Array<() => void> = [];
    let gets = 0;
    const store = {
      // The first lookup is held; any later one would be answered at once.
      get: () => (++gets === 1 ? new Promise((resolve) => waiting.push(() => resolve(null))) : Promise.resolve(null)),
    } as unknown as InventoryStore;
    const { url, close } = await serve(store, { slots: new QuerySlots(1) });
    try {
      const held = fetch(`${url}/api/v1/certificates/${'ab'.repeat(32)}`);
      await expect.poll(() => gets).toBe(1);
      const busy = await fetch(`${url}/api/v1/certificates/${'cd'.repeat(32)}`);
      expect(busy.status).toBe(503);
      expect(busy.headers.get('retry-after')).toBe('1');
      expect(gets).toBe(1);
      waiting.splice(0).forEach((r) => r());
      expect((await held).status).toBe(404);
    } finally {
      waiting.splice(0).forEach((r) => r());
      await close();
    }
  });

  it("hands the store's own error to onError (for the log), not a copy of its message", async () => {
    const failure = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
    const store = { list: () => Promise.reject(failure), get: () => Promise.reject(failure) } as unknown as InventoryStore;
    const seen: Error[] = [];
    const { url, close } = await serve(store, { onError: (e) => seen.push(e) });
    try {
      expect((await fetch(`${url}/api/v1/certificates`)).status).toBe(503);
      expect((await fetch(`${url}/api/v1/certificates/${'ab'.repeat(32)}`)).status).toBe(503);
      expect(seen).toHaveLength(2);
      for (const e of seen) expect(e).toBe(failure);
    } finally {
      await close();
    }
  });
});

describe('requestTarget', () => {
  it('reads the absolute form with no path as the root, and keeps the query', () => {
    expect(requestTarget('http://meshcert.example:9090')).toEqual({ path: '/', query: '' });
    expect(requestTarget('HTTPS://meshcert.example/api/v1/certificates?limit=1')).toEqual({ path: '/api/v1/certificates', query: 'limit=1' });
    expect(requestTarget(undefined)).toEqual({ path: '/', query: '' });
  });
});
