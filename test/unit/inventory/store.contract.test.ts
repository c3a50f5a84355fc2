/**
 * One contract, two backends: every assertion here runs against SQLite (temp dir) and the real
 * PostgreSQL started by test/support/postgres.ts (a fresh database for this file).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { getPriority, tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { CERT_TABLE, PRUNE_BATCH, SIGHTINGS_TABLE } from '../../../src/inventory/common.js';
import { openStore, type OpenStoreOptions } from '../../../src/inventory/open.js';
import { PostgresInventoryStore, SIGHTINGS_LOCK_KEY } from '../../../src/inventory/postgres.js';
import { STORE_THREAD_NICE, SqliteInventoryStore, WAL_AUTOCHECKPOINT_PAGES } from '../../../src/inventory/sqlite.js';
import {
  InvalidCursorError,
  InvalidFilterError,
  InventoryDataError,
  type Snapshot,
  type AuditEvent,
  type CertificateFilter,
  type CertificateRecord,
  type InventoryStore,
} from '../../../src/inventory/types.js';
import { createSelectOnlyRole, createTestDatabase, pgSkipReason, type TestDatabase } from '../../support/postgres-control.js';
import { HOUR, T0, asStored, fp, makeRecord } from './fixtures.js';

type Row = Record<string, unknown>;

interface Harness {
  name: 'sqlite' | 'postgres';
  skip: () => string | null;
  setup(): Promise<void>;
  teardown(): Promise<void>;
  /** The storage fresh() uses for this test (empty at the start of each test). */
  main(): Promise<OpenStoreOptions>;
  /** Brand-new storage without any schema. */
  blank(): Promise<OpenStoreOptions>;
  /** An unmigrated store object on the given storage. */
  construct(opts: OpenStoreOptions): InventoryStore;
  raw(opts: OpenStoreOptions, sql: string): Promise<Row[]>;
}

function sqliteHarness(): Harness {
  let dir = '';
  let n = 0;
  let current: OpenStoreOptions | null = null;
  return {
    name: 'sqlite',
    skip: () => null,
    async setup() {
      dir = mkdtempSync(join(tmpdir(), 'meshcert-inv-'));
    },
    async teardown() {
      rmSync(dir, { recursive: true, force: true });
    },
    async main() {
      current = { kind: 'sqlite', path: join(dir, `db-${++n}`, 'inventory.db') };
      return current;
    },
    async blank() {
      return { kind: 'sqlite', path: join(dir, `blank-${++n}.db`) };
    },
    construct(opts) {
      if (opts.kind !== 'sqlite') throw new Error('wrong kind');
      return new SqliteInventoryStore({ path: opts.path });
    },
    async raw(opts, sql) {
      if (opts.kind !== 'sqlite') throw new Error('wrong kind');
      const db = new Database(opts.path, { readonly: true });
      try {
        return db.prepare(sql).all() as Row[];
      } finally {
        db.close();
      }
    },
  };
}

function postgresHarness(): Harness {
  let main: TestDatabase | null = null;
  const extra: TestDatabase[] = [];
  let migrated = false;
  const pools = new Map<string, pg.Pool>();
  const poolFor = (url: string): pg.Pool => {
    let p = pools.get(url);
    if (p === undefined) {
      p = new pg.Pool({ connectionString: url, max: 2 });
      pools.set(url, p);
    }
    return p;
  };
  return {
    name: 'postgres',
    skip: pgSkipReason,
    async setup() {
      main = await createTestDatabase('contract');
    },
    async teardown() {
      for (const p of pools.values()) await p.end();
      for (const db of [...extra, ...(main ? [main] : [])]) await db.drop();
    },
    async main() {
      if (main === null) throw new Error('setup did not run');
      if (migrated) {
        await poolFor(main.url).query('TRUNCATE inventory_certificates, inventory_audit_events, inventory_discovery_sightings, inventory_discovery_places');
      }
      migrated = true;
      return { kind: 'postgres', url: main.url };
    },
    async blank() {
      const db = await createTestDatabase('contract_blank');
      extra.push(db);
      return { kind: 'postgres', url: db.url };
    },
    construct(opts) {
      if (opts.kind !== 'postgres') throw new Error('wrong kind');
      return new PostgresInventoryStore({ url: opts.url });
    },
    async raw(opts, sql) {
      if (opts.kind !== 'postgres') throw new Error('wrong kind');
      return (await poolFor(opts.url).query(sql)).rows as Row[];
    },
  };
}

const FAR_FUTURE = new Date(Date.UTC(9999, 0, 1));

function byExpiry(a: CertificateRecord, b: CertificateRecord): number {
  const d = a.notAfter.getTime() - b.notAfter.getTime();
  if (d !== 0) return d;
  return a.fingerprint < b.fingerprint ? -1 : a.fingerprint > b.fingerprint ? 1 : 0;
}

async function listAll(store: InventoryStore, filter: CertificateFilter): Promise<{ items: CertificateRecord[]; pages: number }> {
  const items: CertificateRecord[] = [];
  let cursor: string | undefined;
  let pages = 0;
  for (;;) {
    const page = await store.list({ ...filter, cursor });
    pages++;
    items.push(...page.items);
    if (page.nextCursor === null) break;
    cursor = page.nextCursor;
    if (pages > 10_000) throw new Error('pagination does not terminate');
  }
  return { items, pages };
}

describe.each([sqliteHarness(), postgresHarness()])('inventory store contract: $name', (h) => {
  const skipReason = h.skip();
  if (skipReason !== null) {
    it.skip(`SKIPPED (${h.name}): ${skipReason}`, () => undefined);
    return;
  }

  const opened: InventoryStore[] = [];
  let loc: OpenStoreOptions;
  let store: InventoryStore;

  const track = <S extends InventoryStore>(s: S): S => {
    opened.push(s);
    return s;
  };

  beforeAll(() => h.setup());
  afterAll(() => h.teardown());
  beforeEach(async () => {
    loc = await h.main();
    store = track(await openStore(loc));
  });
  afterEach(async () => {
    for (const s of opened.splice(0)) await s.close();
  });

  it('reports its kind', () => {
    expect(store.kind).toBe(h.name);
  });

  it('stores every field and gets by fingerprint or serial', async () => {
    const full = makeRecord(1, {
      subject: 'CN=workload,O=meshcert',
      dnsNames: ['a.example', 'b.example'],
      source: 'discovered:k8s-secrets',
      requester: 'spiffe://cluster.local/ns/istio-system/sa/istiod',
      notBefore: new Date(T0 + 123),
      notAfter: new Date(T0 + 24 * HOUR + 456),
      issuedAt: new Date(T0 + 789),
      keyAlgorithm: 'RSA',
      keySize: 3072,
    });
    const minimal = makeRecord(2, { spiffeId: null, namespace: null, serviceAccount: null, cluster: null, requester: null, policyRule: null });
    await store.insertMany([full, minimal]);

    expect(await store.get(full.fingerprint)).toEqual(full);
    expect(await store.get(full.serial)).toEqual(full);
    expect(await store.get(minimal.fingerprint)).toEqual(asStored(minimal));
    // case, ':' separators and 0x prefix are tolerated
    expect(await store.get(full.fingerprint.toUpperCase())).toEqual(full);
    expect(await store.get(full.serial.match(/../g)!.join(':'))).toEqual(full);
    expect(await store.get(`0x${full.serial}`)).toEqual(full);
    // leading zeros, as OpenSSL and X509Certificate.serialNumber print a serial whose first octet is below 0x10
    expect(await store.get(`0${full.serial}`)).toEqual(full);
    expect(await store.get(`00:${full.serial.match(/../g)!.join(':')}`)).toEqual(full);
    expect(await store.get(fp('nope'))).toBeNull();
    expect(await store.get('')).toBeNull();
    expect(await store.get("' OR 1=1 --")).toBeNull();
  });

  it('get by serial prefers a fingerprint match, then the most recently issued', async () => {
    const older = makeRecord('s1', { serial: 'abcd', issuer: 'other-ca', issuedAt: new Date(T0) });
    const newer = makeRecord('s2', { serial: 'abcd', issuer: 'default', issuedAt: new Date(T0 + HOUR) });
    await store.insertMany([older, newer]);
    expect((await store.get('abcd'))?.fingerprint).toBe(newer.fingerprint);
    expect((await store.get(older.fingerprint))?.fingerprint).toBe(older.fingerprint);
  });

  it('inserts idempotently on fingerprint (retries, duplicates within a batch, first write wins)', async () => {
    const batch = Array.from({ length: 50 }, (_, i) => makeRecord(i));
    await store.insertMany(batch);
    await store.insertMany(batch); // a retried batch
    await store.insertMany([...batch.slice(0, 10), makeRecord(100), makeRecord(100)]); // overlap + duplicate in batch
    await store.insertMany([makeRecord(0, { issuer: 'changed' })]);
    expect(await store.count()).toBe(51);
    expect((await store.get(batch[0]!.fingerprint))?.issuer).toBe('default');
    const rows = await h.raw(loc, 'SELECT count(*) AS n, count(DISTINCT fingerprint) AS d FROM inventory_certificates');
    expect(Number(rows[0]!.n)).toBe(51);
    expect(Number(rows[0]!.d)).toBe(51);
    await store.insertMany([]);
    expect(await store.count()).toBe(51);
  });

  it('rejects invalid records with InventoryDataError and writes nothing of that batch', async () => {
    const good = makeRecord(1);
    const bad: CertificateRecord[] = [
      makeRecord(2, { fingerprint: 'XYZ' }),
      makeRecord(3, { serial: 'ABCD' }),
      makeRecord(4, { notAfter: new Date(Number.NaN) }),
      makeRecord(5, { spiffeId: 'spiffe://x\u0000y' }),
      makeRecord(6, { source: 'elsewhere' as CertificateRecord['source'] }),
      makeRecord(7, { keySize: 1.5 }),
      makeRecord(8, { issuer: '' }),
      // An unpaired surrogate: SQLite stored mangled bytes, PostgreSQL refused the batch (jsonb).
      makeRecord(9, { namespace: 'x\ud800y' }),
      makeRecord(10, { dnsNames: ['a.example', 'x\udc00'] }),
      // PostgreSQL's key_size is an integer (int4): both refuse what it cannot hold.
      makeRecord(11, { keySize: -1 }),
      makeRecord(12, { keySize: 2 ** 31 }),
      makeRecord(13, { keyAlgorithm: '' }),
      makeRecord(14, { issuer: null as unknown as string }),
      makeRecord(15, { keyAlgorithm: null as unknown as string }),
      makeRecord(16, { source: 'discovered:file:/a\u0000b' }),
      makeRecord(17, { subject: 'CN=a\u0000b' }),
      makeRecord(18, { dnsNames: ['a.example', null as unknown as string] }),
    ];
    for (const b of bad) {
      await expect(store.insertMany([good, b])).rejects.toBeInstanceOf(InventoryDataError);
    }
    expect(await store.count()).toBe(0);
    // The bounds themselves are held.
    const bounds = [makeRecord(19, { keySize: 0 }), makeRecord(20, { keySize: 2 ** 31 - 1 })];
    await store.insertMany(bounds);
    expect((await store.get(bounds[1]!.fingerprint))?.keySize).toBe(2 ** 31 - 1);
  });

  it('holds indexed text up to 2048 bytes each, and refuses longer alike (PostgreSQL refuses an index entry over about 2.7 KB)', async () => {
    // Random text, which nothing compresses: the longest each store must hold.
    const text = (bytes: number): string => randomBytes(bytes).toString('base64url').slice(0, bytes);
    const longest = makeRecord('long', { spiffeId: `spiffe://x/${text(2048 - 'spiffe://x/'.length)}`, namespace: '\u00e9'.repeat(1024), serviceAccount: text(2048), source: `discovered:file:/${text(2048 - 'discovered:file:/'.length)}` });
    await store.insertMany([longest]);
    expect(await store.get(longest.fingerprint)).toEqual(asStored(longest));
    await store.recordSnapshots([{ source: longest.source as `discovered:${string}`, fingerprints: [longest.fingerprint] }], new Date(T0));
    for (const over of [{ spiffeId: `${longest.spiffeId}a` }, { namespace: '\u00e9'.repeat(1025) }, { serviceAccount: text(2049) }, { source: `${longest.source}a` as CertificateRecord['source'] }]) {
      const e = await store.insertMany([makeRecord('over', over)]).catch((err: unknown) => err);
      expect(e, Object.keys(over)[0]).toBeInstanceOf(InventoryDataError);
      expect((e as Error).message).toBe('certificate record #0 rejected: spiffeId, namespace, serviceAccount and source must be at most 2048 bytes each');
    }
    await expect(store.recordSnapshots([{ source: `${longest.source}a` as `discovered:${string}`, fingerprints: [longest.fingerprint] }], new Date(T0))).rejects.toBeInstanceOf(InventoryDataError);
    expect(await store.count()).toBe(1);
  });

  it('counts and prunes expired records', async () => {
    const recs = Array.from({ length: 10 }, (_, i) => makeRecord(i, { notAfter: new Date(T0 + i * HOUR) }));
    await store.insertMany(recs);
    expect(await store.count()).toBe(10);
    expect(await store.pruneExpired(new Date(T0 + 4 * HOUR))).toBe(4); // strictly before
    expect(await store.count()).toBe(6);
    expect(await store.get(recs[3]!.fingerprint)).toBeNull();
    expect(await store.get(recs[4]!.fingerprint)).not.toBeNull();
    expect(await store.pruneExpired(new Date(T0))).toBe(0);
    expect(await store.pruneExpired(FAR_FUTURE)).toBe(6);
    expect(await store.count()).toBe(0);
  });

  it('applies every filter, alone and combined, in notAfter/fingerprint order', async () => {
    const recs: CertificateRecord[] = [];
    let i = 0;
    for (const ns of ['ns-a', 'ns-b', null] as const) {
      for (const sa of ['sa-1', 'sa-2'] as const) {
        for (const source of ['issued', 'discovered:k8s', 'discovered:vault'] as const) {
          for (const issuer of ['default', 'other'] as const) {
            i++;
            recs.push(
              makeRecord(i, {
                namespace: ns,
                serviceAccount: ns === null ? null : sa,
                spiffeId: ns === null ? null : `spiffe://cluster.local/ns/${ns}/sa/${sa}`,
                requester: sa === 'sa-2' ? 'meshcert:server.tls' : 'spiffe://cluster.local/ns/istio-system/sa/ztunnel',
                source,
                issuer,
                notAfter: new Date(T0 + (i % 7) * HOUR), // ties on purpose
              }),
            );
          }
        }
      }
    }
    await store.insertMany(recs);
    const now = new Date(T0 + 2 * HOUR);
    const cases: [CertificateFilter, (r: CertificateRecord) => boolean][] = [
      [{}, () => true],
      [{ namespace: 'ns-a' }, (r) => r.namespace === 'ns-a'],
      [{ serviceAccount: 'sa-2' }, (r) => r.serviceAccount === 'sa-2'],
      [{ issuer: 'other' }, (r) => r.issuer === 'other'],
      [{ spiffeId: 'spiffe://cluster.local/ns/ns-b/sa/sa-1' }, (r) => r.spiffeId === 'spiffe://cluster.local/ns/ns-b/sa/sa-1'],
      [{ requester: 'meshcert:server.tls' }, (r) => r.requester === 'meshcert:server.tls'],
      [{ requester: 'spiffe://cluster.local/ns/istio-system/sa/ztunnel', namespace: 'ns-b' }, (r) => r.requester === 'spiffe://cluster.local/ns/istio-system/sa/ztunnel' && r.namespace === 'ns-b'],
      [{ source: 'issued' }, (r) => r.source === 'issued'],
      [{ source: 'discovered:vault' }, (r) => r.source === 'discovered:vault'],
      [{ source: 'discovered' }, (r) => r.source.startsWith('discovered:')],
      [{ expiringBefore: new Date(T0 + 3 * HOUR) }, (r) => r.notAfter.getTime() < T0 + 3 * HOUR],
      [{ includeExpired: false, now }, (r) => r.notAfter >= now],
      [{ includeExpired: true, now }, () => true],
      [
        { namespace: 'ns-a', source: 'discovered', includeExpired: false, now, expiringBefore: new Date(T0 + 5 * HOUR) },
        (r) => r.namespace === 'ns-a' && r.source.startsWith('discovered:') && r.notAfter >= now && r.notAfter.getTime() < T0 + 5 * HOUR,
      ],
      [{ namespace: 'nope' }, () => false],
    ];
    for (const [filter, pred] of cases) {
      const expected = recs.filter(pred).sort(byExpiry).map(asStored);
      const page = await store.list({ ...filter, limit: 1000 });
      expect(page.items, JSON.stringify(filter)).toEqual(expected);
      expect(page.nextCursor).toBeNull();
    }
  });

  it('includeExpired: false defaults `now` to the current time', async () => {
    const past = makeRecord(1, { notAfter: new Date(Date.now() - HOUR) });
    const future = makeRecord(2, { notAfter: new Date(Date.now() + HOUR) });
    await store.insertMany([past, future]);
    const page = await store.list({ includeExpired: false });
    expect(page.items.map((r) => r.fingerprint)).toEqual([future.fingerprint]);
  });

  it('limits pages: default 100, at most 1000, at least 1', async () => {
    const recs = Array.from({ length: 1005 }, (_, i) => makeRecord(i, { notAfter: new Date(T0 + (i % 13) * 1000) }));
    for (let i = 0; i < recs.length; i += 500) await store.insertMany(recs.slice(i, i + 500));
    const dflt = await store.list({});
    expect(dflt.items).toHaveLength(100);
    expect(dflt.nextCursor).not.toBeNull();
    const max = await store.list({ limit: 5000 });
    expect(max.items).toHaveLength(1000);
    const rest = await store.list({ limit: 5000, cursor: max.nextCursor! });
    expect(rest.items).toHaveLength(5);
    expect(rest.nextCursor).toBeNull();
    expect((await store.list({ limit: 0 })).items).toHaveLength(1);
    expect((await store.list({ limit: Number.NaN })).items).toHaveLength(100);
    expect((await store.list({ limit: 2.9 })).items).toHaveLength(2);
  });

  it('paginates every row exactly once, in order (ties on notAfter included)', async () => {
    const recs = Array.from({ length: 257 }, (_, i) =>
      makeRecord(i, { namespace: i % 3 === 0 ? 'ns-x' : 'ns-y', notAfter: new Date(T0 + (i % 5) * HOUR) }),
    );
    await store.insertMany(recs);
    for (const [limit, filter] of [
      [10, {}],
      [1, { namespace: 'ns-x' }],
      [7, { namespace: 'ns-y', expiringBefore: new Date(T0 + 3 * HOUR) }],
      [257, {}],
      [256, {}],
    ] as [number, CertificateFilter][]) {
      const { items, pages } = await listAll(store, { ...filter, limit });
      const expected = recs
        .filter((r) => (filter.namespace === undefined || r.namespace === filter.namespace) && (filter.expiringBefore === undefined || r.notAfter < filter.expiringBefore))
        .sort(byExpiry);
      expect(items.map((r) => r.fingerprint)).toEqual(expected.map((r) => r.fingerprint));
      expect(new Set(items.map((r) => r.fingerprint)).size).toBe(items.length);
      expect(pages).toBe(Math.max(1, Math.ceil(expected.length / limit))); // no trailing empty page
    }
  });

  it('pagination property: pages concatenate to the filtered, ordered set', async () => {
    const recArb = fc.record({
      ns: fc.constantFrom('ns-a', 'ns-b', null),
      hour: fc.integer({ min: 0, max: 4 }),
      source: fc.constantFrom('issued', 'discovered:x'),
    });
    await fc.assert(
      fc.asyncProperty(
        fc.array(recArb, { maxLength: 40 }),
        fc.integer({ min: 1, max: 9 }),
        fc.constantFrom<CertificateFilter>({}, { namespace: 'ns-a' }, { source: 'discovered' }, { expiringBefore: new Date(T0 + 2 * HOUR) }),
        async (specs, limit, filter) => {
          await store.pruneExpired(FAR_FUTURE);
          const recs = specs.map((s, i) =>
            makeRecord(`p${i}`, { namespace: s.ns, source: s.source as CertificateRecord['source'], notAfter: new Date(T0 + s.hour * HOUR) }),
          );
          await store.insertMany(recs);
          const { items } = await listAll(store, { ...filter, limit });
          const expected = recs
            .filter(
              (r) =>
                (filter.namespace === undefined || r.namespace === filter.namespace) &&
                (filter.source === undefined || r.source.startsWith('discovered:')) &&
                (filter.expiringBefore === undefined || r.notAfter < filter.expiringBefore),
            )
            .sort(byExpiry);
          expect(items.map((r) => r.fingerprint)).toEqual(expected.map((r) => r.fingerprint));
        },
      ),
      { numRuns: 25 },
    );
  });

  it("pages and filters by instants whatever this process's time zone, one whose offset then had seconds included", async () => {
    const saved = process.env.TZ;
    // New York before 1883: local mean time, -04:56:02, which a minute-rounded offset would shift.
    process.env.TZ = 'America/New_York';
    try {
      const old = makeRecord('lmt', { notBefore: new Date(Date.UTC(1800, 0, 1)), notAfter: new Date(Date.UTC(1800, 5, 1)), issuedAt: new Date(Date.UTC(1800, 0, 1)) });
      const now = makeRecord('now');
      await store.insertMany([old, now]);
      const seen: string[] = [];
      let cursor: string | null | undefined;
      for (let page = 0; page < 5 && cursor !== null; page++) {
        const p = await store.list({ limit: 1, ...(cursor ? { cursor } : {}) });
        seen.push(...p.items.map((r) => r.fingerprint));
        cursor = p.nextCursor;
      }
      expect(seen).toEqual([old.fingerprint, now.fingerprint]);
      expect((await store.list({ expiringBefore: new Date(old.notAfter.getTime() + 1000) })).items.map((r) => r.fingerprint)).toEqual([old.fingerprint]);
    } finally {
      if (saved === undefined) delete process.env.TZ;
      else process.env.TZ = saved;
    }
  });

  it('rejects a forged cursor with InvalidCursorError', async () => {
    await store.insertMany([makeRecord(1)]);
    const f = 'ab'.repeat(32);
    // Times no certificate has (beyond Date's range, or before year 1): both stores refuse them alike.
    const outOfRange = [9e15, -1e15, 253_402_300_800_000].map((a) => Buffer.from(JSON.stringify({ v: 1, a, f })).toString('base64url'));
    // JSON that is not an object, or a time that is no whole millisecond.
    const notACursor = ['null', '5', JSON.stringify({ v: 1, a: 1.5, f }), JSON.stringify({ v: 2, a: 0, f })].map((j) => Buffer.from(j).toString('base64url'));
    for (const cursor of ['garbage', Buffer.from('{"v":1,"a":"x","f":"y"}').toString('base64url'), Buffer.from('[1]').toString('base64url'), ...outOfRange, ...notACursor]) {
      await expect(store.list({ cursor })).rejects.toBeInstanceOf(InvalidCursorError);
    }
  });

  it('rejects an invalid expiringBefore or now with a RangeError before asking the database', async () => {
    await store.insertMany([makeRecord(1)]);
    await expect(store.list({ expiringBefore: new Date(Number.NaN) })).rejects.toThrow(RangeError);
    await expect(store.list({ includeExpired: false, now: new Date(Number.NaN) })).rejects.toThrow(RangeError);
  });

  it('rejects a filter holding a NUL character (PostgreSQL text cannot) with InvalidFilterError, alike', async () => {
    await store.insertMany([makeRecord(1)]);
    for (const key of ['namespace', 'serviceAccount', 'issuer', 'spiffeId', 'requester', 'source'] as const) {
      await expect(store.list({ [key]: 'a\u0000b' }), key).rejects.toBeInstanceOf(InvalidFilterError);
    }
  });

  it('latestPerIdentity: identities whose latest certificate expires in [now, before) and was not renewed', async () => {
    const id = (n: string): string => `spiffe://cluster.local/ns/ns-a/sa/${n}`;
    const at = (h: number): Date => new Date(T0 + h * HOUR);
    const a1 = makeRecord('a1', { spiffeId: id('a'), issuedAt: at(0), notAfter: at(24) });
    const a2 = makeRecord('a2', { spiffeId: id('a'), issuedAt: at(12), notAfter: at(72) }); // renewed
    const b1 = makeRecord('b1', { spiffeId: id('b'), issuedAt: at(0), notAfter: at(24) }); // stale
    const c1 = makeRecord('c1', { spiffeId: id('c'), issuedAt: at(-48), notAfter: at(-24) }); // long dead
    const d1 = makeRecord('d1', { spiffeId: id('d'), issuedAt: at(0), notAfter: at(100) }); // fine
    const e1 = makeRecord('e1', { spiffeId: null, issuedAt: at(0), notAfter: at(24) }); // no identity
    const f1 = makeRecord('f1', { spiffeId: id('f'), issuedAt: at(1), notAfter: at(30) });
    const f2 = makeRecord('f2', { spiffeId: id('f'), issuedAt: at(1), notAfter: at(40) }); // same issuedAt: later notAfter wins
    const g1 = makeRecord('g1', { spiffeId: id('g'), issuedAt: at(0), notAfter: at(90) });
    const g2 = makeRecord('g2', { spiffeId: id('g'), issuedAt: at(2), notAfter: at(20) }); // latest by issuedAt, short TTL
    // Same issuedAt and notAfter: the greater fingerprint wins (a deterministic tie-break).
    const [h1, h2] = [makeRecord('h1', { spiffeId: id('h'), issuedAt: at(3), notAfter: at(35) }), makeRecord('h2', { spiffeId: id('h'), issuedAt: at(3), notAfter: at(35) })].sort((x, y) =>
      x.fingerprint < y.fingerprint ? -1 : 1,
    );
    await store.insertMany([a1, a2, b1, c1, d1, e1, f1, f2, g1, g2, h1!, h2!]);

    const stale = await store.latestPerIdentity(at(48), at(10));
    expect(stale).toEqual([g2, b1, h2!, f2].map(asStored));
    const withDead = await store.latestPerIdentity(at(48), new Date(0));
    expect(withDead.map((r) => r.fingerprint)).toEqual([c1, g2, b1, h2!, f2].map((r) => r.fingerprint));
    expect(await store.latestPerIdentity(at(10), at(0))).toEqual([]);
    // The window starts at now inclusive: a certificate ending exactly now is still reported.
    expect((await store.latestPerIdentity(at(48), at(24))).map((r) => r.fingerprint)).toEqual([b1, h2!, f2].map((r) => r.fingerprint));
  });

  it('latestPerIdentity reports only certificates meshcert issued (a discovered one is a snapshot), superseded by a later one of any source', async () => {
    const id = (n: string): string => `spiffe://cluster.local/ns/ns-c/sa/${n}`;
    const at = (h: number): Date => new Date(T0 + h * HOUR);
    const seen = makeRecord('dx', { spiffeId: id('seen'), issuedAt: at(0), notAfter: at(24), source: 'discovered:file:/etc/old.pem' });
    const ours = makeRecord('ou', { spiffeId: id('ours'), issuedAt: at(0), notAfter: at(24) });
    const movedAway = makeRecord('mv', { spiffeId: id('moved'), issuedAt: at(0), notAfter: at(24) });
    const elsewhere = makeRecord('el', { spiffeId: id('moved'), issuedAt: at(5), notAfter: at(26), source: 'discovered:k8s-secret:ns-c/x' });
    await store.insertMany([seen, ours, movedAway, elsewhere]);
    expect((await store.latestPerIdentity(at(48), at(10))).map((r) => r.spiffeId)).toEqual([id('ours')]);
  });

  it('latestPerIdentity with maxRemainingFraction keeps only certificates that far into their lifetime (a superset of isStale)', async () => {
    const id = (n: string): string => `spiffe://cluster.local/ns/ns-b/sa/${n}`;
    const at = (h: number): Date => new Date(T0 + h * HOUR);
    const fresh = makeRecord('fr', { spiffeId: id('fresh'), notBefore: at(0), issuedAt: at(0), notAfter: at(24) }); // at 6h: 3/4 left
    const old = makeRecord('ol', { spiffeId: id('old'), notBefore: at(-18), issuedAt: at(-18), notAfter: at(12) }); // at 6h: 1/5 left
    const edge = makeRecord('ed', { spiffeId: id('edge'), notBefore: at(-3), issuedAt: at(-3), notAfter: at(15) }); // at 6h: exactly 1/2 left
    const zero = makeRecord('ze', { spiffeId: id('zero'), notBefore: at(10), issuedAt: at(0), notAfter: at(10) }); // zero lifetime
    await store.insertMany([fresh, old, edge, zero]);
    const now = at(6);
    const all = await store.latestPerIdentity(at(30), now);
    expect(all.map((r) => r.spiffeId)).toEqual([id('zero'), id('old'), id('edge'), id('fresh')]);
    const half = await store.latestPerIdentity(at(30), now, { maxRemainingFraction: 0.5 });
    expect(half.map((r) => r.spiffeId)).toEqual([id('zero'), id('old'), id('edge')]);
    const fifth = await store.latestPerIdentity(at(30), now, { maxRemainingFraction: 0.2 });
    expect(fifth.map((r) => r.spiffeId)).toEqual([id('zero'), id('old')]);
    expect(await store.latestPerIdentity(at(30), now, { maxRemainingFraction: 0.1 })).toEqual([zero].map(asStored));
  });

  it("discoveredExpiring: the certificates of each place's latest snapshot that end before the date, expired ones included", async () => {
    // Snapshot times in the past: PostgreSQL caps them at its clock + 5 minutes.
    const base = Math.floor(Date.now() / 1000) * 1000 - 1000 * HOUR;
    const at = (h: number): Date => new Date(base + h * HOUR);
    const found = (i: string, where: string, subject: string, end: number): CertificateRecord =>
      makeRecord(i, { spiffeId: null, namespace: null, serviceAccount: null, requester: null, policyRule: null, issuer: 'CN=Some CA', subject, notBefore: at(end - 90 * 24), issuedAt: at(end - 90 * 24), notAfter: at(end), source: `discovered:${where}` });
    const web1 = found('w1', 'file:/etc/web.pem', 'CN=web', 20);
    const web2 = found('w2', 'file:/etc/web.pem', 'CN=web', 2000); // its renewal
    const shared = found('a1', 'endpoint:lb-a:443', 'CN=shop', 30); // served by two load balancers
    const sharedRenewed = found('a2', 'endpoint:lb-a:443', 'CN=shop', 2000); // lb-a got the renewal, lb-b did not
    const db = found('d1', 'endpoint:db:5432', 'CN=db', 40);
    const dbCa = found('dc', 'endpoint:db:5432', 'CN=db CA', 10);
    const gone = found('g1', 'file:/etc/old.pem', 'CN=old', -5); // expired, and still there at its last sighting
    const emptied = found('e1', 'file:/etc/emptied.pem', 'CN=emptied', 15); // its file now holds only a key
    const later = found('l1', 'file:/etc/later.pem', 'CN=later', 100);
    const ours = makeRecord('ou', { issuedAt: at(0), notAfter: at(20) }); // issued: never in a snapshot
    await store.insertMany([web1, web2, shared, sharedRenewed, db, dbCa, gone, emptied, later, ours]);
    const snap = (where: string, ...rs: CertificateRecord[]): Snapshot => ({ source: `discovered:${where}`, fingerprints: rs.map((r) => r.fingerprint) });
    const run1 = at(-48);
    const run2 = at(-24);
    await store.recordSnapshots(
      [snap('file:/etc/web.pem', web1), snap('endpoint:lb-a:443', shared), snap('endpoint:lb-b:443', shared), snap('endpoint:db:5432', db, dbCa, db), snap('file:/etc/old.pem', gone), snap('file:/etc/emptied.pem', emptied), snap('file:/etc/later.pem', later)],
      run1,
    );
    await store.recordSnapshots([snap('file:/etc/web.pem', web2), snap('endpoint:lb-a:443', sharedRenewed), snap('file:/etc/emptied.pem'), snap('file:/etc/web.pem', web2)], run2);
    // A run with an older time (another machine's clock) changes no place's latest snapshot.
    await store.recordSnapshots([snap('file:/etc/web.pem', web1)], at(-72));

    const report = async (before: Date): Promise<string[]> => (await store.discoveredExpiring(before)).map((d) => `${d.source} ${d.record.subject} ${d.seenAt.toISOString()}`);
    expect(await report(at(48))).toEqual([
      `discovered:file:/etc/old.pem CN=old ${run1.toISOString()}`,
      `discovered:endpoint:db:5432 CN=db CA ${run1.toISOString()}`,
      `discovered:endpoint:lb-b:443 CN=shop ${run1.toISOString()}`,
      `discovered:endpoint:db:5432 CN=db ${run1.toISOString()}`,
    ]);
    const first = (await store.discoveredExpiring(at(48)))[0]!;
    expect(first.record).toEqual(asStored(gone));
    expect(await report(at(-5))).toEqual([]); // before: exclusive

    // A place that is gone is forgotten on request; its certificate records stay.
    expect(await store.forgetPlaces(['discovered:endpoint:lb-b:443'])).toEqual(['discovered:endpoint:lb-b:443']);
    expect(await store.forgetPlaces(['discovered:endpoint:lb-b:443'])).toEqual([]);
    expect(await report(at(48))).toEqual([`discovered:file:/etc/old.pem CN=old ${run1.toISOString()}`, `discovered:endpoint:db:5432 CN=db CA ${run1.toISOString()}`, `discovered:endpoint:db:5432 CN=db ${run1.toISOString()}`]);
    expect(await store.get(shared.fingerprint)).not.toBeNull();

    // Pruning keeps an expired certificate a place still served when last seen, and drops one no
    // place serves any more, with its sightings.
    expect(await store.pruneExpired(at(100))).toBe(4); // web1, shared (lb-a renewed, lb-b forgotten), emptied, ours; not old.pem's, nor db's
    expect(await store.get(gone.fingerprint)).not.toBeNull();
    expect(await store.get(web1.fingerprint)).toBeNull();
    expect((await h.raw(loc, `SELECT count(*) AS n FROM inventory_discovery_sightings WHERE fingerprint = '${web1.fingerprint}'`)).map((r) => Number(r.n))).toEqual([0]);
    expect(await report(at(48))).toEqual([`discovered:file:/etc/old.pem CN=old ${run1.toISOString()}`, `discovered:endpoint:db:5432 CN=db CA ${run1.toISOString()}`, `discovered:endpoint:db:5432 CN=db ${run1.toISOString()}`]);
  });

  it('keeps the latest snapshot of a place when an older one holding the same certificate is replayed', async () => {
    const current = makeRecord('replayed', { source: 'discovered:file:/etc/now.pem', notAfter: new Date(T0 + HOUR) });
    await store.insertMany([current]);
    const snap: Snapshot = { source: 'discovered:file:/etc/now.pem', fingerprints: [current.fingerprint] };
    const newer = new Date(Date.now() - HOUR);
    await store.recordSnapshots([snap], newer);
    // Another machine's run, with an older clock, saw the same certificate there.
    await store.recordSnapshots([snap], new Date(newer.getTime() - 24 * HOUR));
    expect((await store.places('discovered:file:')).map((p) => [p.source, p.seenAt.toISOString(), p.certificates])).toEqual([[snap.source, newer.toISOString(), 1]]);
    expect((await store.discoveredExpiring(FAR_FUTURE)).map((d) => [d.record.fingerprint, d.seenAt.toISOString()])).toEqual([[current.fingerprint, newer.toISOString()]]);
  });

  it('keeps a snapshot recorded just after a prune deleted its record, so writing the record again restores it (the race discover closes)', async () => {
    const old = (i: string): CertificateRecord => makeRecord(i, { source: 'discovered:file:/race.pem', notBefore: new Date(T0 - 100 * HOUR), issuedAt: new Date(T0 - 100 * HOUR), notAfter: new Date(T0 - 50 * HOUR) });
    const served = old('race-served');
    await store.insertMany([served]);
    expect(await store.pruneExpired(new Date(T0))).toBe(1); // in no snapshot yet: pruned
    await store.recordSnapshots([{ source: 'discovered:file:/race.pem', fingerprints: [served.fingerprint] }], new Date(Date.now() - HOUR));
    await store.insertMany([old('race-other')]);
    expect(await store.pruneExpired(new Date(T0))).toBe(1); // another record: the sweep after it runs
    await store.insertMany([served]); // discover writes its records again after the snapshots
    expect((await store.discoveredExpiring(FAR_FUTURE)).map((d) => d.record.fingerprint)).toEqual([served.fingerprint]);
  });

  it('keeps an empty snapshot only for a place already known (a Secret key that never held a certificate is no place)', async () => {
    const r = makeRecord('known', { source: 'discovered:k8s-secret:a/s', notAfter: new Date(Date.now() + HOUR) });
    await store.insertMany([r]);
    const at = new Date(Date.now() - HOUR);
    await store.recordSnapshots([{ source: 'discovered:k8s-secret:a/s', fingerprints: [r.fingerprint] }, { source: 'discovered:k8s-secret:a/s/ca.crt', fingerprints: [] }], at);
    expect(await store.forgetPlaces(['discovered:k8s-secret:a/s/ca.crt'])).toEqual([]);
    // Emptied later: the known place's snapshot is empty from then on.
    await store.recordSnapshots([{ source: 'discovered:k8s-secret:a/s', fingerprints: [] }], new Date(at.getTime() + 1000));
    expect(await store.discoveredExpiring(FAR_FUTURE)).toEqual([]);
    expect(await store.forgetPlaces(['discovered:k8s-secret:a/s'])).toEqual(['discovered:k8s-secret:a/s']);
  });

  it('forgets many places in one call, returning the known ones in the order given', async () => {
    const n = 2_000;
    const at = new Date(Date.now() - HOUR);
    const recs = Array.from({ length: n }, (_, i) => makeRecord(`many-${i}`, { source: `discovered:k8s-secret:many/s${i}`, notAfter: new Date(Date.now() + HOUR) }));
    await store.insertMany(recs);
    await store.recordSnapshots(recs.map((r) => ({ source: r.source as `discovered:${string}`, fingerprints: [r.fingerprint] })), at);
    // A known place whose sightings are gone (emptied, then its old certificate expired and was pruned) is known by its place row alone.
    const gone = 'discovered:k8s-secret:many/gone' as const;
    const old = makeRecord('many-old', { source: gone, notBefore: new Date(T0 - 100 * HOUR), issuedAt: new Date(T0 - 100 * HOUR), notAfter: new Date(T0 - 50 * HOUR) });
    await store.insertMany([old]);
    await store.recordSnapshots([{ source: gone, fingerprints: [old.fingerprint] }], at);
    await store.recordSnapshots([{ source: gone, fingerprints: [] }], new Date(at.getTime() + 1000));
    expect(await store.pruneExpired(new Date(T0))).toBe(1);
    expect(Number((await h.raw(loc, `SELECT count(*) AS n FROM inventory_discovery_sightings WHERE source = '${gone}'`))[0]!.n)).toBe(0);
    expect((await store.places(gone)).map((p) => p.source)).toEqual([gone]);
    const odd = recs.filter((_, i) => i % 2 === 1).map((r) => r.source as `discovered:${string}`);
    const never = (i: number): `discovered:${string}` => `discovered:k8s-secret:many/never${i}`;
    const asked = [never(0), ...odd.slice().reverse(), never(1), gone, 'discovered:k8s-secret:many/s0', 'discovered:k8s-secret:many/s0', never(2)] as const;
    const forgotten = await store.forgetPlaces(asked);
    expect(forgotten).toEqual([...odd.slice().reverse(), gone, 'discovered:k8s-secret:many/s0', 'discovered:k8s-secret:many/s0']);
    expect((await store.places('discovered:k8s-secret:many/')).length).toBe(n - odd.length - 1);
    expect(await store.forgetPlaces([])).toEqual([]);
    // Their certificate records stay.
    expect(await store.get(recs[1]!.fingerprint)).not.toBeNull();
  });

  it('lists the known places under a prefix, in bytewise order, each with its latest snapshot, and none from a prefix that is only similar', async () => {
    const soon = makeRecord('pl-soon', { source: 'discovered:k8s-secret:b/s', notAfter: new Date(T0 + HOUR) });
    const late = makeRecord('pl-late', { source: 'discovered:k8s-secret:b/s', notAfter: new Date(T0 + 10 * HOUR) });
    await store.insertMany([soon, late]);
    const first = new Date(Date.now() - 2 * HOUR);
    const places = ['discovered:k8s-secret:b/s', 'discovered:k8s-secret:a/s/ca.crt', 'discovered:k8s-secret:B/s', 'discovered:k8s-secretx:a/s', 'discovered:file:/k8s-secret:a', 'discovered:k8s-secret:a_/s'] as const;
    await store.recordSnapshots(places.map((source) => ({ source, fingerprints: [late.fingerprint] })), first);
    // Later: b/s holds both, a/s/ca.crt nothing; the others keep their first snapshot.
    const second = new Date(Date.now() - HOUR);
    await store.recordSnapshots([{ source: 'discovered:k8s-secret:b/s', fingerprints: [soon.fingerprint, late.fingerprint] }, { source: 'discovered:k8s-secret:a/s/ca.crt', fingerprints: [] }], second);
    const listed = (await store.places('discovered:k8s-secret:')).map((p) => [p.source, p.seenAt.toISOString(), p.certificates, p.earliestNotAfter?.toISOString() ?? null]);
    expect(listed).toEqual([
      ['discovered:k8s-secret:B/s', first.toISOString(), 1, late.notAfter.toISOString()],
      ['discovered:k8s-secret:a/s/ca.crt', second.toISOString(), 0, null],
      ['discovered:k8s-secret:a_/s', first.toISOString(), 1, late.notAfter.toISOString()],
      ['discovered:k8s-secret:b/s', second.toISOString(), 2, soon.notAfter.toISOString()],
    ]);
    // `_` and `%` in a prefix are literal.
    expect((await store.places('discovered:k8s-secret:a_')).map((p) => p.source)).toEqual(['discovered:k8s-secret:a_/s']);
    expect(await store.places('discovered:endpoint:')).toEqual([]);
  });

  it('stamps a snapshot no later than the database clock allows (PostgreSQL: + 5 minutes; SQLite shares the runner clock)', async () => {
    const r = makeRecord('ahead', { source: 'discovered:file:/ahead.pem', notAfter: new Date(Date.now() + HOUR) });
    await store.insertMany([r]);
    const dayAhead = new Date(Date.now() + 24 * HOUR);
    await store.recordSnapshots([{ source: 'discovered:file:/ahead.pem', fingerprints: [r.fingerprint] }], dayAhead);
    const [seen] = await store.discoveredExpiring(FAR_FUTURE);
    if (loc.kind === 'postgres') expect(seen!.seenAt.getTime()).toBeLessThanOrEqual(Date.now() + 5 * 60_000 + 5_000);
    else expect(seen!.seenAt.getTime()).toBe(dayAhead.getTime());
  });

  it('refuses snapshots that are not of a discovered place or of fingerprints, and writes none of the batch', async () => {
    const r = makeRecord('s1', { source: 'discovered:file:/x.pem', notAfter: new Date(T0 + HOUR) });
    await store.insertMany([r]);
    const good: Snapshot = { source: 'discovered:file:/x.pem', fingerprints: [r.fingerprint] };
    for (const bad of [{ source: 'issued', fingerprints: [r.fingerprint] }, { source: 'discovered:', fingerprints: [r.fingerprint] }, { source: 'discovered:file:/x.pem', fingerprints: ['ABC'] }]) {
      await expect(store.recordSnapshots([good, bad as Snapshot], new Date(T0))).rejects.toBeInstanceOf(InventoryDataError);
    }
    await expect(store.recordSnapshots([good], new Date(Number.NaN))).rejects.toBeInstanceOf(InventoryDataError);
    expect(await store.discoveredExpiring(FAR_FUTURE)).toEqual([]);
  });

  it('stores audit events exactly once per id', async () => {
    const events: AuditEvent[] = [
      { id: 'ev-1', at: new Date(T0), requester: 'r', identity: 'spiffe://x', cluster: 'c1', decision: 'issued', serial: 'ab' },
      { id: 'ev-2', at: new Date(T0 + 1), requester: null, identity: null, cluster: null, decision: 'refused', code: 'POLICY_DENIED', reason: 'no rule' },
    ];
    await store.insertAudit(events);
    await store.insertAudit(events); // retry
    await store.insertAudit([{ at: new Date(T0 + 2), requester: 'r', identity: 'i', cluster: null, decision: 'refused' }]); // id generated
    await store.insertAudit([]);
    const rows = await h.raw(loc, 'SELECT id, decision, code, reason, serial, requester FROM inventory_audit_events ORDER BY at');
    expect(rows).toHaveLength(3);
    expect(rows[0]).toMatchObject({ id: 'ev-1', decision: 'issued', code: null, serial: 'ab', requester: 'r' });
    expect(rows[1]).toMatchObject({ id: 'ev-2', decision: 'refused', code: 'POLICY_DENIED', reason: 'no rule', requester: null });
    expect(typeof rows[2]!.id).toBe('string');
    await expect(
      store.insertAudit([{ at: new Date(T0), requester: null, identity: null, cluster: null, decision: 'maybe' as 'issued' }]),
    ).rejects.toBeInstanceOf(InventoryDataError);
  });

  it('rejects invalid audit events with InventoryDataError and writes nothing of that batch', async () => {
    const event = (over: Partial<AuditEvent>): AuditEvent => ({ at: new Date(T0), requester: 'r', identity: 'spiffe://x', cluster: 'c1', decision: 'refused', ...over });
    const bad: AuditEvent[] = [
      event({ at: new Date(Number.NaN) }),
      event({ id: '' }),
      event({ id: 'a\u0000b' }),
      event({ requester: 'r\ud800' }),
      event({ identity: 'spiffe://x\u0000' }),
      event({ cluster: 'c\u0000' }),
      event({ code: 'X\u0000' }),
      event({ reason: 'no\udc00' }),
      event({ serial: 'ab\u0000' }),
    ];
    for (const b of bad) {
      await expect(store.insertAudit([event({ id: 'good' }), b]), JSON.stringify(b)).rejects.toBeInstanceOf(InventoryDataError);
    }
    expect(await h.raw(loc, 'SELECT id FROM inventory_audit_events')).toEqual([]);
  });

  it('prunes audit events recorded before a time, and leaves certificate records alone', async () => {
    await store.insertMany([makeRecord(1, { notAfter: new Date(T0) })]);
    await store.insertAudit(
      Array.from({ length: 6 }, (_, i): AuditEvent => ({ id: `a-${i}`, at: new Date(T0 + i * HOUR), requester: null, identity: null, cluster: null, decision: 'refused', code: 'OVERLOADED' })),
    );
    expect(await store.pruneAudit(new Date(T0 + 2 * HOUR))).toBe(2); // strictly before
    const ids = async () => (await h.raw(loc, 'SELECT id FROM inventory_audit_events ORDER BY at')).map((r) => r.id);
    expect(await ids()).toEqual(['a-2', 'a-3', 'a-4', 'a-5']);
    expect(await store.pruneAudit(new Date(T0))).toBe(0);
    expect(await store.count()).toBe(1);
    expect(await store.pruneAudit(FAR_FUTURE)).toBe(4);
    expect(await ids()).toEqual([]);
    expect(await store.count()).toBe(1);
  });

  it('prunes a backlog larger than one batch completely, and only what is old enough', async () => {
    const old = 2 * PRUNE_BATCH + 7;
    await store.insertAudit(
      Array.from({ length: old + 3 }, (_, i): AuditEvent => ({ id: `b-${i}`, at: new Date(i < old ? T0 : T0 + 2 * HOUR), requester: null, identity: null, cluster: null, decision: 'refused', code: 'OVERLOADED' })),
    );
    expect(await store.pruneAudit(new Date(T0 + HOUR))).toBe(old);
    expect(await h.raw(loc, 'SELECT id FROM inventory_audit_events')).toHaveLength(3);
    await store.insertMany(Array.from({ length: PRUNE_BATCH + 2 }, (_, i) => makeRecord(i, { notAfter: new Date(i < PRUNE_BATCH + 1 ? T0 : T0 + 2 * HOUR) })));
    expect(await store.pruneExpired(new Date(T0 + HOUR))).toBe(PRUNE_BATCH + 1);
    expect(await store.count()).toBe(1);
  }, 60_000);

  it('migrate is idempotent', async () => {
    await store.migrate();
    await store.migrate();
    const rows = await h.raw(loc, 'SELECT version, count(*) AS n FROM inventory_schema_migrations GROUP BY version');
    expect(rows.length).toBeGreaterThan(0);
    for (const r of rows) expect(Number(r.n)).toBe(1);
  });

  it('opened read-only, reads what a writer stored and writes nothing', async () => {
    await store.insertMany([makeRecord(1), makeRecord(2)]);
    const versions = await h.raw(loc, 'SELECT version FROM inventory_schema_migrations ORDER BY version');
    const reader = track(await openStore({ ...loc, readOnly: true }));
    expect((await reader.list({})).items.map((r) => r.fingerprint)).toEqual([makeRecord(1), makeRecord(2)].map((r) => r.fingerprint).sort());
    await expect(reader.insertMany([makeRecord(3)])).rejects.toThrow();
    await expect(reader.forgetPlaces(['discovered:file:/etc/ssl/a.pem'])).rejects.toThrow();
    expect(await store.count()).toBe(2);
    expect(await h.raw(loc, 'SELECT version FROM inventory_schema_migrations ORDER BY version')).toEqual(versions);
  });

  it('opened read-only or to write, refuses storage without a meshcert schema, or with a newer one, and changes neither', async () => {
    const blank = await h.blank();
    // An empty file is an empty SQLite database (a missing one is refused as missing).
    if (blank.kind === 'sqlite') writeFileSync(blank.path, '');
    await expect(openStore({ ...blank, readOnly: true })).rejects.toThrow(/^it holds no meshcert inventory \(no schema\): is this the right database\?$/);
    await expect(h.raw(blank, 'SELECT count(*) AS n FROM inventory_schema_migrations')).rejects.toThrow();
    const latest = Number(((await h.raw(loc, 'SELECT max(version) AS v FROM inventory_schema_migrations')) as [{ v: number }])[0].v);
    // A later meshcert's schema (in storage of its own, which later tests do not reuse): this one
    // reads it only as far as it knows it, so not at all.
    const later = await h.blank();
    const writer = await openStore(later);
    await writer.insertMany([makeRecord(1)]);
    await writer.close();
    if (later.kind === 'sqlite') {
      const db = new Database(later.path);
      db.prepare('INSERT INTO inventory_schema_migrations (version, applied_at) VALUES (?, ?)').run(latest + 1, Date.now());
      db.close();
    } else {
      await h.raw(later, `INSERT INTO inventory_schema_migrations (version) VALUES (${latest + 1}) RETURNING version`);
    }
    const newer = `its schema is version ${latest + 1}, newer than this meshcert's ${latest}: use the meshcert release that wrote it`;
    await expect(openStore({ ...later, readOnly: true })).rejects.toThrow(newer);
    // To write (an older serve or discover after a rollback): refused alike, nothing written.
    await expect(openStore(later)).rejects.toThrow(newer);
    expect(await h.raw(later, 'SELECT count(*) AS n FROM inventory_certificates')).toEqual([{ n: later.kind === 'sqlite' ? 1 : '1' }]);
  });

  it('upgrades a schema 1 inventory: per place and subject, the latest discovered certificate taken as served there; every record kept', async () => {
    const base = Math.floor(Date.now() / 1000) * 1000 - 200 * HOUR; // in the past: the seed's time is capped at now
    const at = (h: number): Date => new Date(base + h * HOUR);
    const found = (i: string, subject: string | null, born: number, end: number): CertificateRecord =>
      makeRecord(i, { source: 'discovered:file:/x.pem', subject, notBefore: at(born), issuedAt: at(born), notAfter: at(end) });
    // At /x.pem: a leaf and its renewal (same subject), their CA, a certificate with no subject, and
    // one that has expired (history: not seeded). At /y.pem, one whose notBefore is ahead.
    const old = found('x-old', 'CN=x', -100, 300);
    const renewed = found('x-new', 'CN=x', -10, 400);
    const ca = found('x-ca', 'CN=x CA', -1000, 500);
    const anon = found('x-anon', null, -50, 350);
    const expired = found('x-gone', 'CN=gone', -300, 100);
    const ahead = makeRecord('y-ahead', { source: 'discovered:file:/y.pem', subject: 'CN=y', notBefore: at(500), issuedAt: at(500), notAfter: at(900) });
    await store.insertMany([makeRecord(1), old, renewed, ca, anon, expired, ahead]);
    await store.close();
    // Back to what meshcert's first release left: schema 1, without the discovery tables.
    const downgrade = ['DROP TABLE inventory_discovery_sightings', 'DROP TABLE inventory_discovery_places', 'DELETE FROM inventory_schema_migrations WHERE version > 1'];
    if (loc.kind === 'sqlite') {
      const db = new Database(loc.path);
      for (const sql of downgrade) db.prepare(sql).run();
      db.close();
    } else {
      for (const sql of downgrade) await h.raw(loc, sql);
    }
    await expect(openStore({ ...loc, readOnly: true })).rejects.toThrow("its schema is version 1, older than this meshcert's 2: start meshcert serve against it once to upgrade it");
    const started = Math.floor(Date.now() / 1000) * 1000;
    const upgraded = track(await openStore(loc));
    expect((await h.raw(loc, 'SELECT version FROM inventory_schema_migrations ORDER BY version')).map((r) => Number(r.version))).toEqual([1, 2]);
    expect(await upgraded.count()).toBe(7);
    const seeded = await upgraded.discoveredExpiring(at(10_000));
    // Seen at the place's latest notBefore (a time in the past, which the next run supersedes), capped at now.
    expect(seeded.filter((d) => d.source === 'discovered:file:/x.pem').map((d) => [d.record.fingerprint, d.seenAt.toISOString()])).toEqual([anon, renewed, ca].map((r) => [r.fingerprint, at(-10).toISOString()]));
    const y = seeded.filter((d) => d.source === 'discovered:file:/y.pem');
    expect(y.map((d) => d.record.fingerprint)).toEqual([ahead.fingerprint]);
    expect(y[0]!.seenAt.getTime()).toBeGreaterThanOrEqual(started);
    expect(y[0]!.seenAt.getTime()).toBeLessThanOrEqual(Date.now());
    await upgraded.recordSnapshots([{ source: 'discovered:file:/x.pem', fingerprints: [ca.fingerprint] }], new Date());
    expect((await upgraded.discoveredExpiring(at(10_000))).filter((d) => d.source === 'discovered:file:/x.pem').map((d) => d.record.fingerprint)).toEqual([ca.fingerprint]);
  });

  it('two stores (separate pools/connections) migrating a blank database at once both succeed, once', async () => {
    for (let round = 0; round < 3; round++) {
      const blank = await h.blank();
      const a = track(h.construct(blank));
      const b = track(h.construct(blank));
      await Promise.all([a.migrate(), b.migrate()]);
      const rows = await h.raw(blank, 'SELECT version, count(*) AS n FROM inventory_schema_migrations GROUP BY version');
      expect(rows.length).toBeGreaterThan(0);
      for (const r of rows) expect(Number(r.n)).toBe(1);
      await a.insertMany([makeRecord(1)]);
      expect(await b.count()).toBe(1);
    }
  });

  it('loses nothing across close and reopen', async () => {
    const recs = Array.from({ length: 120 }, (_, i) => makeRecord(i));
    await store.insertMany(recs);
    await store.insertAudit([{ id: 'keep', at: new Date(T0), requester: null, identity: null, cluster: null, decision: 'issued' }]);
    await store.close();
    await store.close(); // idempotent
    await expect(store.ping()).rejects.toThrow();
    const again = track(await openStore(loc));
    expect(await again.count()).toBe(120);
    expect(await again.get(recs[77]!.fingerprint)).toEqual(asStored(recs[77]!));
    expect(await h.raw(loc, "SELECT id FROM inventory_audit_events WHERE id = 'keep'")).toHaveLength(1);
    await again.ping();
  });
});

describe('sqlite store specifics', () => {
  let dir = '';
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'meshcert-inv-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('creates the parent directory and a 0600 file in WAL mode', async () => {
    const path = join(dir, 'a', 'b', 'inv.db');
    const store = await openStore({ kind: 'sqlite', path });
    try {
      await store.insertMany([makeRecord(1)]);
      expect(statSync(path).mode & 0o777).toBe(0o600);
      const db = new Database(path, { readonly: true });
      expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
      db.close();
    } finally {
      await store.close();
    }
  });

  it('leaves the mode of a database file that exists as its owner set it; refuses a named pipe at once instead of blocking on it', async () => {
    const path = join(dir, 'kept-mode.db');
    await (await openStore({ kind: 'sqlite', path })).close();
    chmodSync(path, 0o640);
    const again = await openStore({ kind: 'sqlite', path });
    await again.close();
    expect(statSync(path).mode & 0o777).toBe(0o640);
    const fifo = join(dir, 'inventory.fifo');
    execFileSync('mkfifo', [fifo]);
    expect(() => new SqliteInventoryStore({ path: fifo })).toThrow(`the inventory database ${fifo} is not a regular file (a named pipe)`);
    // Read-only (certs, discover --places) too: SQLite's own open would block on it.
    expect(() => new SqliteInventoryStore({ path: fifo, readOnly: true })).toThrow(`the inventory database ${fifo} is not a regular file (a named pipe)`);
  });

  it('writes with synchronous NORMAL, checkpoints every WAL_AUTOCHECKPOINT_PAGES pages (not SQLite\'s 1000), from a thread of lower priority', async () => {
    const store = new SqliteInventoryStore({ path: join(dir, 'settings.db'), busyTimeoutMs: 1234 });
    try {
      expect(WAL_AUTOCHECKPOINT_PAGES).toBe(10_000);
      expect(STORE_THREAD_NICE).toBe(5);
      expect(await store.settings()).toEqual({
        journalMode: 'wal',
        synchronous: 1,
        walAutocheckpoint: WAL_AUTOCHECKPOINT_PAGES,
        busyTimeoutMs: 1234,
        threadNice: process.platform === 'linux' ? STORE_THREAD_NICE : null,
      });
    } finally {
      await store.close();
    }
  });

  it('durable (inventory.failClosed, whose answers wait for commits): synchronous FULL, and the thread at the process\u2019s priority', async () => {
    const store = new SqliteInventoryStore({ path: join(dir, 'durable.db'), durable: true });
    try {
      const settings = await store.settings();
      expect(settings.synchronous).toBe(2);
      expect(settings.threadNice).toBe(process.platform === 'linux' ? getPriority() : null);
      expect(settings.journalMode).toBe('wal');
    } finally {
      await store.close();
    }
  });

  it('fails to open a file that is not a database, with the reason', async () => {
    const path = join(dir, 'garbage.db');
    writeFileSync(path, Buffer.alloc(4096, 7));
    await expect(openStore({ kind: 'sqlite', path })).rejects.toThrow(/not a database/);
  });

  it('rejects calls after close', async () => {
    const store = await openStore({ kind: 'sqlite', path: join(dir, 'closed.db') });
    await store.close();
    await expect(store.count()).rejects.toThrow(/closed/);
    await expect(store.insertMany([makeRecord(1)])).rejects.toThrow(/closed/);
  });
});

describe.skipIf(pgSkipReason() !== null)('postgres store: a value over one of its limits', () => {
  it('is a property of the batch (SQLSTATE class 54, InventoryDataError), which the recorder splits, not a failure to retry forever', async () => {
    const db = await createTestDatabase('limits');
    const store = await openStore({ kind: 'postgres', url: db.url });
    const admin = new pg.Client({ connectionString: db.url });
    await admin.connect();
    try {
      // An index of the operator's own on a column the store does not bound.
      await admin.query(`CREATE INDEX extra_subject ON ${CERT_TABLE} (subject)`);
      const e = await store.insertMany([makeRecord('big', { subject: randomBytes(3000).toString('base64') })]).catch((err: unknown) => err);
      expect(e).toBeInstanceOf(InventoryDataError);
      expect(((e as Error).cause as { code?: string }).code).toBe('54000');
      expect(await store.count()).toBe(0);
    } finally {
      await admin.end();
      await store.close();
      await db.drop().catch(() => {});
    }
  });
});

describe('postgres store specifics', () => {
  it('ping rejects when the server is unreachable', async () => {
    const store = new PostgresInventoryStore({ url: 'postgresql://postgres@127.0.0.1:1/postgres', connectionTimeoutMs: 1000 });
    try {
      await expect(store.ping()).rejects.toThrow();
    } finally {
      await store.close();
    }
  });
});

/** A place with two sightings, and its sightings' order: what the deadlock tests lock in turn. */
const place = 'discovered:file:/etc/a.pem' as const;
const [first, second] = [fp('a'), fp('b')].sort();

/**
 * A database whose deadlocks always roll the store's transaction back, not `other`'s: PostgreSQL
 * looks for a deadlock once, deadlock_timeout after a statement starts waiting. The store's
 * sessions look after 5 s (time enough on a slow machine for the other's second statement to
 * close the cycle), the other after a minute.
 */
async function deadlockScene(name: string): Promise<{ db: TestDatabase; other: pg.Client; store: InventoryStore }> {
  const db = await createTestDatabase(name);
  const other = new pg.Client({ connectionString: db.url });
  await other.connect();
  await other.query(`ALTER DATABASE "${db.name}" SET deadlock_timeout = '5s'`);
  await other.query(`SET deadlock_timeout = '60s'`);
  return { db, other, store: await openStore({ kind: 'postgres', url: db.url }) };
}

describe.skipIf(pgSkipReason() !== null)('postgres store: a statement rolled back for a deadlock', () => {
  it('is run again: forgetting a place that another transaction deletes sightings of, in the other order, succeeds', async () => {
    const { db, other, store } = await deadlockScene('deadlock');
    try {
      await store.recordSnapshots([{ source: place, fingerprints: [first!, second!] }], new Date());
      // Each rejection the store's pool gives, by SQLSTATE.
      const pool = (store as unknown as { pool: pg.Pool }).pool;
      const query = pool.query.bind(pool) as (...a: unknown[]) => Promise<unknown>;
      const codes: string[] = [];
      (pool as unknown as { query: (...a: unknown[]) => Promise<unknown> }).query = (...a) =>
        query(...a).catch((e: { code?: string }) => {
          codes.push(e.code ?? '?');
          throw e;
        });
      // The other transaction holds the sighting the forget reaches last; the forget then holds
      // the first and waits; the other asks for the first: a cycle, which PostgreSQL ends by
      // rolling the forget back.
      await other.query('BEGIN');
      await other.query(`DELETE FROM ${SIGHTINGS_TABLE} WHERE source = $1 AND fingerprint = $2`, [place, second]);
      const forgetting = store.forgetPlaces([place]);
      await expect
        .poll(async () => (await other.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'meshcert-inventory' AND wait_event_type = 'Lock'`)).rows[0].n, { timeout: 10_000 })
        .toBe(1);
      await other.query(`DELETE FROM ${SIGHTINGS_TABLE} WHERE source = $1 AND fingerprint = $2`, [place, first]);
      await other.query('COMMIT');
      expect(await forgetting).toEqual([place]);
      expect(codes).toEqual(['40P01']);
      expect(await store.places('discovered:')).toEqual([]);
    } finally {
      await other.end();
      await store.close();
      await db.drop().catch(() => {});
    }
  });
});

describe.skipIf(pgSkipReason() !== null)('postgres store: a transaction rolled back for a deadlock', () => {
  it('is run again whole: a snapshot write meeting another transaction that locks its sightings in the other order succeeds', async () => {
    const { db, other, store } = await deadlockScene('deadlock-tx');
    try {
      const at = new Date();
      await store.recordSnapshots([{ source: place, fingerprints: [first!, second!] }], at);
      // Each rejection a statement of the store's transactions gives, by SQLSTATE.
      const pool = (store as unknown as { pool: pg.Pool }).pool;
      const connect = pool.connect.bind(pool) as () => Promise<pg.PoolClient>;
      const codes: string[] = [];
      (pool as unknown as { connect: () => Promise<pg.PoolClient> }).connect = async () => {
        const client = await connect();
        const query = client.query.bind(client) as (...a: unknown[]) => Promise<unknown>;
        (client as unknown as { query: (...a: unknown[]) => Promise<unknown> }).query = (...a) =>
          query(...a).catch((e: { code?: string }) => {
            codes.push(e.code ?? '?');
            throw e;
          });
        return client;
      };
      // The other holds the sighting the snapshot's upsert reaches last; the snapshot holds the
      // first and waits; the other asks for the first: a cycle.
      await other.query('BEGIN');
      await other.query(`UPDATE ${SIGHTINGS_TABLE} SET seen_at = seen_at WHERE source = $1 AND fingerprint = $2`, [place, second]);
      const later = new Date(at.getTime() + 60_000);
      const writing = store.recordSnapshots([{ source: place, fingerprints: [first!, second!] }], later);
      await expect
        .poll(async () => (await other.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'meshcert-inventory' AND wait_event_type = 'Lock' AND wait_event <> 'advisory'`)).rows[0].n, { timeout: 10_000 })
        .toBe(1);
      await other.query(`UPDATE ${SIGHTINGS_TABLE} SET seen_at = seen_at WHERE source = $1 AND fingerprint = $2`, [place, first]);
      await other.query('COMMIT');
      await writing;
      expect(codes).toEqual(['40P01']);
      const { rows } = await other.query(`SELECT fingerprint, seen_at FROM ${SIGHTINGS_TABLE} WHERE source = $1 ORDER BY fingerprint`, [place]);
      expect(rows.map((r: { fingerprint: string; seen_at: Date }) => [r.fingerprint, r.seen_at.toISOString()])).toEqual([
        [first, later.toISOString()],
        [second, later.toISOString()],
      ]);
    } finally {
      await other.end();
      await store.close();
      await db.drop().catch(() => {});
    }
  });
});

describe.skipIf(pgSkipReason() !== null)('postgres store: prune batches and discovery snapshots take turns', () => {
  it("a snapshot write waits for a prune batch under way, and a prune batch for a snapshot write, so a batch never deletes a record a discover run has just recorded as served", async () => {
    const db = await createTestDatabase('prune-turns');
    const other = new pg.Client({ connectionString: db.url });
    await other.connect();
    const store = await openStore({ kind: 'postgres', url: db.url });
    const waiting = async (): Promise<number> =>
      (await other.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'meshcert-inventory' AND wait_event = 'advisory'`)).rows[0].n;
    try {
      const old = makeRecord('expired-served', { notAfter: new Date(T0 - 10 * HOUR), notBefore: new Date(T0 - 20 * HOUR), issuedAt: new Date(T0 - 20 * HOUR) });
      await store.insertMany([old]);
      // A prune batch in flight (its lock, as pruneExpired takes it): the snapshot waits for it.
      await other.query('BEGIN');
      await other.query('SELECT pg_advisory_xact_lock_shared($1, $2)', [...SIGHTINGS_LOCK_KEY]);
      let recorded = false;
      const snapshot = store.recordSnapshots([{ source: 'discovered:file:/etc/a.pem', fingerprints: [old.fingerprint] }], new Date()).then(() => (recorded = true));
      await expect.poll(waiting, { timeout: 10_000 }).toBe(1);
      expect(recorded).toBe(false);
      await other.query('COMMIT');
      await snapshot;
      // A snapshot write in flight: a prune batch waits for it, then sees the sighting and keeps the record.
      await other.query('BEGIN');
      await other.query('SELECT pg_advisory_xact_lock($1, $2)', [...SIGHTINGS_LOCK_KEY]);
      let pruned: number | undefined;
      const pruning = store.pruneExpired(new Date(T0)).then((n) => (pruned = n));
      await expect.poll(waiting, { timeout: 10_000 }).toBe(1);
      expect(pruned).toBeUndefined();
      await other.query('COMMIT');
      expect(await pruning).toBe(0);
      expect(await store.get(old.fingerprint)).not.toBeNull();
    } finally {
      await other.end();
      await store.close();
      await db.drop().catch(() => {});
    }
  });
});

describe.skipIf(pgSkipReason() !== null)('postgres store opened read-only (the certs commands)', () => {
  it('works with a role that may only SELECT, which a migrating open cannot use', async () => {
    const db = await createTestDatabase('read-only-role');
    let role: { url: string; drop(): Promise<void> } | undefined;
    try {
      const writer = await openStore({ kind: 'postgres', url: db.url });
      await writer.insertMany([makeRecord(1)]);
      await writer.close();
      role = await createSelectOnlyRole(db);
      await expect(openStore({ kind: 'postgres', url: role.url })).rejects.toThrow(/permission denied/);
      const reader = await openStore({ kind: 'postgres', url: role.url, readOnly: true });
      try {
        expect((await reader.list({})).items.map((r) => r.fingerprint)).toEqual([makeRecord(1).fingerprint]);
      } finally {
        await reader.close();
      }
    } finally {
      await db.drop().catch(() => {});
      await role?.drop().catch(() => {});
    }
  });
});
