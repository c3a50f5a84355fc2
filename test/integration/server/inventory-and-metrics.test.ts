import Database from 'better-sqlite3';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CaClient } from '../../../src/client/ca-client.js';
import { parseConfig } from '../../../src/config/load.js';
import type { ConfigInput } from '../../../src/config/schema.js';
import { openStore } from '../../../src/inventory/open.js';
import { createLogger } from '../../../src/log/logger.js';
import { SERVING_CERT_REQUESTER } from '../../../src/inventory/sink.js';
import { runServer, type RunningServer } from '../../../src/runtime/serve.js';
import { makeCsr } from '../../fixtures/csr.js';
import { connectTls, unaryCall } from '../../support/raw-grpc.js';
import { mintToken, TEST_ISSUER, writeTestJwks } from '../../support/harness.js';
import { createTestDatabase, dedicatedClusterSkipReason, destroyDedicatedCluster, startDedicatedCluster, startPostgres, stopPostgres, type PgCluster } from '../../support/postgres-control.js';

const ID = (ns: string, sa: string) => `spiffe://cluster.local/ns/${ns}/sa/${sa}`;

async function start(dir: string, extra: ConfigInput = {}): Promise<{ server: RunningServer; client: CaClient; logs: () => string }> {
  await writeTestJwks(join(dir, 'jwks.json'));
  const config = parseConfig(
    {
      dataDir: dir,
      server: { listen: '127.0.0.1:0', workers: 1, shutdownGrace: '5s' },
      admin: { listen: '127.0.0.1:0' },
      ca: { autoInit: true },
      auth: { clusters: [{ name: 'Kubernetes', jwt: [{ issuer: TEST_ISSUER, jwksFile: join(dir, 'jwks.json') }] }] },
      ...extra,
    },
    {},
    'test',
    dir,
  );
  let text = '';
  const sink = new Writable({ write: (c, _e, cb) => ((text += c.toString()), cb()) });
  const server = await runServer(config, createLogger('info', sink));
  const client = new CaClient({ address: `127.0.0.1:${server.port}`, rootPem: readFileSync(join(dir, 'ca/root-cert.pem'), 'utf8') });
  return { server, client, logs: () => text };
}

async function get(port: number, path: string): Promise<{ status: number; body: string }> {
  const r = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: r.status, body: await r.text() };
}

function metricValue(text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  return line ? Number(line.split(' ').pop()) : NaN;
}

describe('the server records every certificate and exposes metrics (SQLite, the embedded default)', () => {
  let dir: string;
  let s: Awaited<ReturnType<typeof start>>;
  const issuedSerials: string[] = [];
  /** As OpenSSL and X509Certificate print them: whole octets, so a leading zero digit. */
  const printedSerials: string[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshcert-inv-'));
    s = await start(dir);
  });
  afterAll(async () => {
    s?.client.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('counts a known sequence of successes and refusals exactly, with Citadel names', async () => {
    const token = await mintToken({ ns: 'shop', sa: 'cart' });
    for (let i = 0; i < 3; i++) {
      const chain = await s.client.createCertificate({ csrPem: (await makeCsr({ uris: [ID('shop', 'cart')] })).pem, token });
      printedSerials.push(new X509Certificate(chain[0]!).serialNumber);
      issuedSerials.push(printedSerials[i]!.toLowerCase().replace(/^0+/, ''));
    }
    const refuse = (p: Promise<unknown>) => p.then(() => expect.fail('should be refused'), () => undefined);
    await refuse(s.client.createCertificate({ csrPem: (await makeCsr()).pem, token: 'garbage' })); // authentication failure
    await refuse(s.client.createCertificate({ csrPem: 'not a csr', token })); // CSR parsing error
    await refuse(s.client.createCertificate({ csrPem: (await makeCsr({ uris: [ID('kube-system', 'admin')] })).pem, token })); // identity mismatch
    // Refused by the transport, before any handler: counted with the refusals clients got.
    const session = connectTls(s.server.port, readFileSync(join(dir, 'ca/root-cert.pem'), 'utf8'));
    try {
      expect((await unaryCall(session, '/istio.v1.auth.IstioCertificateService/NoSuchMethod', new Uint8Array())).grpcStatus).toBe(12);
    } finally {
      session.destroy();
    }

    const m = (await get(s.server.adminPort!, '/metrics')).body;
    expect(metricValue(m, 'citadel_server_csr_count')).toBe(6);
    expect(metricValue(m, 'citadel_server_success_cert_issuance_count')).toBe(3);
    expect(metricValue(m, 'citadel_server_authentication_failure_count')).toBe(1);
    expect(metricValue(m, 'citadel_server_csr_parsing_err_count')).toBe(1);
    expect(metricValue(m, 'citadel_server_id_extraction_err_count')).toBe(1);
    expect(m).toMatch(/meshcert_refusals_total\{code="AUTH_INVALID"\} 1/);
    // Every status other than OK that clients got, whatever sent it (what a load test reads).
    const errorStatuses = Object.fromEntries([...m.matchAll(/^meshcert_grpc_error_statuses_total\{code="(\w+)"\} (\d+)$/gm)].filter((x) => x[2] !== '0').map((x) => [x[1], Number(x[2])]));
    expect(errorStatuses).toEqual({ UNAUTHENTICATED: 1, INVALID_ARGUMENT: 1, PERMISSION_DENIED: 1, UNIMPLEMENTED: 1 });
    expect(m).toMatch(/meshcert_request_duration_seconds_count\{code="OK"\} 3/);
    expect(metricValue(m, 'citadel_server_root_cert_expiry_timestamp')).toBeGreaterThan(Date.now() / 1000 + 9 * 365 * 86400);
    expect(metricValue(m, 'citadel_server_cert_chain_expiry_timestamp')).toBeGreaterThan(Date.now() / 1000 + 300 * 86400);
    expect(m).toMatch(/meshcert_inventory_backlog /);
    // Not short of memory in a test process: exposed, and 0.
    expect(metricValue(m, 'meshcert_memory_pressure')).toBe(0);
  });

  it('answers /healthz and /readyz, and serves the inventory API', async () => {
    expect((await get(s.server.adminPort!, '/healthz')).status).toBe(200);
    const ready = await get(s.server.adminPort!, '/readyz');
    expect(ready.status).toBe(200);
    expect(JSON.parse(ready.body)).toMatchObject({ ready: true });
    // Records reach the store off the request path; wait for the write-behind flush.
    await expect.poll(async () => JSON.parse((await get(s.server.adminPort!, '/api/v1/certificates?namespace=shop')).body).items.length, { timeout: 5000 }).toBe(3);
    const one = JSON.parse((await get(s.server.adminPort!, `/api/v1/certificates/${issuedSerials[0]}`)).body);
    expect(one).toMatchObject({ spiffeId: ID('shop', 'cart'), namespace: 'shop', serviceAccount: 'cart', issuer: 'default', source: 'issued', requester: ID('shop', 'cart'), cluster: 'Kubernetes', keyAlgorithm: 'ECDSA', keySize: 256 });
    // The serial as `openssl x509 -serial` prints it (a serial that starts with the time begins with 0x01) finds it too.
    expect(printedSerials[0]).toMatch(/^01/);
    const printed = JSON.parse((await get(s.server.adminPort!, `/api/v1/certificates/${printedSerials[0]}`)).body);
    expect(printed.fingerprint).toBe(one.fingerprint);
  });

  it('records the serving certificate it issued itself, as the certificate its gRPC port presents', async () => {
    const presented = await new Promise<Buffer>((resolve, reject) => {
      const sock = tlsConnect({ host: '127.0.0.1', port: s.server.port, servername: 'localhost', ALPNProtocols: ['h2'], rejectUnauthorized: false }, () => {
        resolve(sock.getPeerCertificate().raw);
        sock.destroy();
      });
      sock.on('error', reject);
    });
    const fingerprint = createHash('sha256').update(presented).digest('hex');
    const row = (): unknown => {
      const db = new Database(join(dir, 'inventory.db'), { readonly: true });
      try {
        return db.prepare('SELECT source, issuer, requester, spiffe_id FROM inventory_certificates WHERE fingerprint = ?').get(fingerprint);
      } finally {
        db.close();
      }
    };
    // Written within the write-behind interval of the start.
    await expect.poll(row, { timeout: 5_000 }).toEqual({ source: 'issued', issuer: 'default', requester: SERVING_CERT_REQUESTER, spiffe_id: null });
  });

  it('loses nothing on a clean shutdown with a non-empty buffer, and audits refusals without secrets', async () => {
    const token = await mintToken({ ns: 'burst', sa: 'job' });
    const csr = await makeCsr({ uris: [ID('burst', 'job')] });
    const chains = await Promise.all(Array.from({ length: 150 }, () => s.client.createCertificate({ csrPem: csr.pem, token })));
    await s.server.close(); // immediately: records are still buffered
    const store = await openStore({ kind: 'sqlite', path: join(dir, 'inventory.db') });
    for (const c of chains) {
      const serial = new X509Certificate(c[0]!).serialNumber.toLowerCase().replace(/^0+/, '');
      expect(await store.get(serial), serial).not.toBeNull();
    }
    // 153 issued through CreateCertificate in this file, and the serving certificate meshcert issued itself.
    expect(await store.count()).toBe(154);
    await store.close();
    const db = new Database(join(dir, 'inventory.db'), { readonly: true });
    const audit = db.prepare('SELECT * FROM inventory_audit_events').all() as Array<Record<string, unknown>>;
    db.close();
    // Issuances are audited by their certificate records (counted above); refusals have audit rows.
    expect(audit.filter((a) => a.decision === 'issued')).toHaveLength(0);
    const refused = audit.filter((a) => a.decision === 'refused');
    expect(refused.map((a) => a.code).sort()).toEqual(['AUTH_INVALID', 'CSR_MALFORMED', 'IDENTITY_MISMATCH']);
    expect(refused.find((a) => a.code === 'IDENTITY_MISMATCH')).toMatchObject({ requester: ID('shop', 'cart') });
    expect(JSON.stringify(audit)).not.toMatch(/eyJ[A-Za-z0-9_-]{10}|-----BEGIN [A-Z ]+-----\\n[A-Za-z0-9+/]|PRIVATE KEY/);
  });
});

describe('a server without an inventory store (inventory.store: none, as the base manifests run)', () => {
  it('exposes no store series (no false "store down", no check that never ran) and keeps the CA expiry gauges', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshcert-nostore-'));
    const s = await start(dir, { inventory: { store: 'none' } });
    try {
      const m = (await get(s.server.adminPort!, '/metrics')).body;
      const series = m.split('\n').filter((l) => l !== '' && !l.startsWith('#'));
      expect(series.filter((l) => /^meshcert_(inventory_|stale_identities|discovered_certs_expiring)/.test(l))).toEqual([]);
      expect(metricValue(m, 'meshcert_ca_certs_in_warning_window')).toBe(0);
      expect(series).toContain('meshcert_connections_shed_total{reason="memory"} 0'); // at 0 before any, for increase()
      expect(series).toContain(`meshcert_jwks_refresh_failures_total{issuer="${TEST_ISSUER}"} 0`);
      expect(m).toContain('meshcert_ca_cert_expiry_timestamp_seconds{issuer="default",role="root"');
      expect((await get(s.server.adminPort!, '/readyz')).status).toBe(200);
    } finally {
      s.client.close();
      await s.server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('PostgreSQL outage during issuance', () => {
  const skip = dedicatedClusterSkipReason();
  let cluster: PgCluster;
  let dir: string;
  beforeAll(async () => {
    if (skip) return;
    cluster = await startDedicatedCluster();
    dir = mkdtempSync(join(tmpdir(), 'meshcert-pg-outage-'));
  }, 120_000);
  afterAll(async () => {
    if (cluster) await destroyDedicatedCluster(cluster);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it.skipIf(skip !== null)('keeps issuing while PostgreSQL is down and records every certificate exactly once after it returns', async () => {
    const db = await createTestDatabase('outage', cluster.url);
    const s = await start(dir, { inventory: { url: db.url } });
    const token = await mintToken({ ns: 'pay', sa: 'api' });
    const csr = await makeCsr({ uris: [ID('pay', 'api')] });
    const serials: string[] = [];
    const issue = async (n: number) => {
      for (let i = 0; i < n; i++) {
        const c = await s.client.createCertificate({ csrPem: csr.pem, token });
        serials.push(new X509Certificate(c[0]!).serialNumber.toLowerCase().replace(/^0+/, ''));
      }
    };
    await issue(20);
    await stopPostgres(cluster);
    await issue(40); // issuance goes on
    await expect.poll(async () => metricValue((await get(s.server.adminPort!, '/metrics')).body, 'meshcert_inventory_store_up'), { timeout: 10_000, interval: 250 }).toBe(0);
    const mm = (await get(s.server.adminPort!, '/metrics')).body;
    expect(metricValue(mm, 'meshcert_inventory_backlog')).toBeGreaterThan(0);
    // Nothing lost: buffered, not dropped or discarded.
    expect(metricValue(mm, 'meshcert_inventory_dropped_records')).toBe(0);
    expect(metricValue(mm, 'meshcert_inventory_rejected_records')).toBe(0);
    expect(mm).toMatch(/^meshcert_inventory_audit_events_lost\{reason="dropped"\} 0$/m);
    await startPostgres(cluster);
    await issue(20);
    await expect.poll(async () => metricValue((await get(s.server.adminPort!, '/metrics')).body, 'meshcert_inventory_backlog'), { timeout: 20_000, interval: 500 }).toBe(0);
    await s.server.close();
    s.client.close();
    const store = await openStore({ kind: 'postgres', url: db.url });
    expect(await store.count()).toBe(81); // and the serving certificate, recorded at start
    for (const serial of serials) expect(await store.get(serial)).not.toBeNull();
    await store.close();
    await db.drop();
  }, 90_000);

  it.skipIf(skip !== null)('at shutdown with PostgreSQL down, ends the flush by shutdownGrace + 8 s after the drain began, and says what it could not write before the pod grace period (delay + grace + 10 s) ends', async () => {
    const db = await createTestDatabase('shutdown', cluster.url);
    const sdDir = mkdtempSync(join(tmpdir(), 'meshcert-shutdown-flush-'));
    const s = await start(sdDir, { server: { listen: '127.0.0.1:0', workers: 1, shutdownGrace: '2s' }, inventory: { url: db.url } });
    try {
      const token = await mintToken({ ns: 'pay', sa: 'api' });
      const csr = (await makeCsr({ uris: [ID('pay', 'api')] })).pem;
      // The serving certificate's record, queued at start, is written before the outage.
      await expect.poll(async () => metricValue((await get(s.server.adminPort!, '/metrics')).body, 'meshcert_inventory_backlog'), { timeout: 5_000, interval: 100 }).toBe(0);
      await stopPostgres(cluster);
      for (let i = 0; i < 5; i++) await s.client.createCertificate({ csrPem: csr, token });
      const began = Date.now();
      // An unclean shutdown: serve turns this rejection into exit code 1.
      await expect(s.server.close()).rejects.toThrow(/5 certificate record\(s\) and \d+ audit event\(s\) not written/);
      const took = Date.now() - began;
      await new Promise((r) => setTimeout(r, 300)); // the logger flushes on a timer
      const lines = s.logs().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { msg: string; deadlineSeconds?: number; records?: number });
      const flushing = lines.find((l) => l.msg === 'writing what the inventory holds in memory before exiting');
      expect(flushing?.records).toBe(5);
      // The drain took little of its 2 s (more under a loaded host): about 10 s for the flush, within the 12 s a pod would have left.
      expect(flushing?.deadlineSeconds).toBeGreaterThanOrEqual(8);
      expect(flushing?.deadlineSeconds).toBeLessThanOrEqual(10);
      expect(lines.some((l) => l.msg === 'inventory could not be flushed completely')).toBe(true);
      expect(took).toBeLessThan(16_000);
    } finally {
      s.client.close();
      await startPostgres(cluster);
      rmSync(sdDir, { recursive: true, force: true });
      await db.drop();
    }
  }, 90_000);

  it.skipIf(skip !== null)('with inventory.failClosed, answers once the record is in PostgreSQL, refuses with UNAVAILABLE (retryable, nothing internal) while it is down, then issues again; a certificate signed but not delivered has an audit row with its serial', async () => {
    const db = await createTestDatabase('failclosed', cluster.url);
    const fcDir = mkdtempSync(join(tmpdir(), 'meshcert-failclosed-'));
    const s = await start(fcDir, { inventory: { url: db.url, failClosed: true } });
    try {
      const token = await mintToken({ ns: 'pay', sa: 'api' });
      const csr = (await makeCsr({ uris: [ID('pay', 'api')] })).pem;
      // Answered only once its record is stored: the row is there the moment the answer is.
      const leaf = new X509Certificate((await s.client.createCertificate({ csrPem: csr, token }))[0]!);
      const reader = new pg.Client({ connectionString: db.url });
      await reader.connect();
      try {
        const rows = await reader.query('SELECT spiffe_id FROM inventory_certificates WHERE fingerprint = $1', [leaf.fingerprint256.replaceAll(':', '').toLowerCase()]);
        expect(rows.rows).toEqual([{ spiffe_id: ID('pay', 'api') }]);
      } finally {
        await reader.end();
      }
      await stopPostgres(cluster);
      // Refused once the recorder has seen the store fail (a write or its health check). The
      // first call is accepted before that (the last write was moments ago), signed, and refused
      // when its record cannot be stored: not delivered.
      const outcomes: string[] = [];
      await expect
        .poll(() => s.client.createCertificate({ csrPem: csr, token }).then(() => 'issued', (e: { code: number; details: string }) => `${e.code} ${e.details}`).then((o) => (outcomes.push(o), o)), { timeout: 20_000, interval: 250 })
        .toMatch(/^14 the certificate inventory is unavailable/);
      expect(outcomes.filter((o) => o === 'issued')).toEqual([]);
      const undeliveredOf = (): string[] => outcomes.flatMap((o) => /^14 the certificate inventory could not record certificate ([0-9a-f]+) /.exec(o)?.[1] ?? []);
      expect(undeliveredOf().length, outcomes.join('\n')).toBeGreaterThan(0);
      const e = await s.client.createCertificate({ csrPem: csr, token }).catch((err: { details: string }) => err);
      expect((e as { details: string }).details).not.toMatch(/postgres|ECONNREFUSED|127\.0\.0\.1|\/tmp\//i);
      await startPostgres(cluster);
      await expect
        .poll(() => s.client.createCertificate({ csrPem: csr, token }).then(() => 'issued', (e: { code: number; details: string }) => `${e.code} ${e.details}`).then((o) => (outcomes.push(o), o)), { timeout: 20_000, interval: 250 })
        .toBe('issued');
      const undelivered = undeliveredOf();
      // Each refusal of a signed certificate is audited under who asked, with the serial (its record may be written later too).
      const audit = new pg.Client({ connectionString: db.url });
      await audit.connect();
      try {
        const undeliveredRows = async (): Promise<unknown[]> => (await audit.query("SELECT serial, requester, code FROM inventory_audit_events WHERE decision = 'refused' AND serial IS NOT NULL ORDER BY at")).rows;
        // Written behind, once the store is back.
        await expect.poll(undeliveredRows, { timeout: 10_000, interval: 200 }).toEqual(undelivered.map((serial) => ({ serial, requester: ID('pay', 'api'), code: 'ISSUER_UNAVAILABLE' })));
      } finally {
        await audit.end();
      }
    } finally {
      await s.server.close();
      s.client.close();
      rmSync(fcDir, { recursive: true, force: true });
      await db.drop();
    }
  }, 90_000);
});
