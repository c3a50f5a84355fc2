/**
 * The PostgreSQL inventory behind PgBouncer in transaction pooling mode, as many platform teams
 * run it: every statement outside a transaction may run on another server connection, and one
 * server connection serves other clients in turn. So the store may rely on no session state: a
 * named (prepared) statement exists on one server connection only (a second replica's Parse there
 * fails 42P05, a client moved elsewhere gets 26000), and a session advisory lock is taken on one
 * connection and released (or not) on another.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PostgresInventoryStore } from '../../../src/inventory/postgres.js';
import type { AuditEvent } from '../../../src/inventory/types.js';
import { isCi } from '../../support/ci.js';
import { findPgBouncer, startPgBouncer, type PgBouncer } from '../../support/pgbouncer.js';
import { createTestDatabase, pgInfo, pgSkipReason, type TestDatabase } from '../../support/postgres-control.js';
import { makeRecord } from './fixtures.js';

const binary = findPgBouncer();
const skipReason = pgSkipReason() ?? (binary === null ? 'pgbouncer not found (Debian package pgbouncer)' : null);

if (skipReason !== null && isCi() && binary === null) {
  // CI installs it (.ci/run): a missing binary there is a broken setup, not a reason to skip.
  describe('inventory behind PgBouncer', () => {
    it('needs pgbouncer under CI', () => {
      throw new Error('pgbouncer not found under CI: .ci/run should have installed it');
    });
  });
} else if (skipReason !== null) {
  describe('inventory behind PgBouncer', () => {
    it.skip(`SKIPPED: ${skipReason}`, () => undefined);
  });
} else {
  describe('inventory behind PgBouncer (transaction pooling)', () => {
    let bouncer: PgBouncer;
    let shared: TestDatabase;
    const blank: TestDatabase[] = [];
    const stores: PostgresInventoryStore[] = [];
    const open = (url: string): PostgresInventoryStore => {
      const s = new PostgresInventoryStore({ url, poolSize: 2, connectionTimeoutMs: 10_000, queryTimeoutMs: 20_000 });
      stores.push(s);
      return s;
    };

    beforeAll(async () => {
      shared = await createTestDatabase('bouncer_shared');
      for (let i = 0; i < 3; i++) blank.push(await createTestDatabase(`bouncer_blank${i}`));
      bouncer = await startPgBouncer(binary!, pgInfo().url!, [
        // One server connection: every client of the alias takes turns on it.
        { alias: 'solo', database: shared.name, poolSize: 1 },
        ...blank.map((db, i) => ({ alias: `pair${i}`, database: db.name, poolSize: 2 })),
      ]);
    }, 60_000);

    afterAll(async () => {
      await Promise.all(stores.map((s) => s.close().catch(() => undefined)));
      await bouncer?.stop();
      await Promise.all([shared, ...blank].map((db) => db?.drop()));
    }, 60_000);

    it('two replicas sharing one server connection both record certificates and audit events', async () => {
      const a = open(bouncer.url('solo'));
      const b = open(bouncer.url('solo'));
      await a.migrate();
      await b.migrate();
      await a.insertMany([makeRecord('a1'), makeRecord('a2')]);
      await b.insertMany([makeRecord('b1'), makeRecord('b2')]);
      await a.insertMany([makeRecord('a3')]);
      const event = (id: string): AuditEvent => ({ id, at: new Date(), requester: 'r', identity: 'i', cluster: 'c1', decision: 'issued' });
      await a.insertAudit([event('ev-a')]);
      await b.insertAudit([event('ev-b')]);
      expect(await a.count()).toBe(5);
      expect(await b.count()).toBe(5);
      expect((await b.get(makeRecord('a3').fingerprint))?.serial).toBe(makeRecord('a3').serial);
    }, 60_000);

    it('replicas migrating blank databases at once each migrate once, and leave no advisory lock held', async () => {
      // Three replicas per database, all starting together, through a pool of two server connections.
      const results = await Promise.allSettled(
        blank.flatMap((_db, i) => [0, 1, 2].map(() => open(bouncer.url(`pair${i}`)).migrate())),
      );
      const failures = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => String(r.reason));
      expect(failures).toEqual([]);

      const admin = new pg.Client({ connectionString: pgInfo().url! });
      await admin.connect();
      try {
        for (const db of blank) {
          const locks = await admin.query(
            `SELECT count(*)::int AS n FROM pg_locks l JOIN pg_database d ON d.oid = l.database WHERE l.locktype = 'advisory' AND d.datname = $1`,
            [db.name],
          );
          expect(locks.rows[0].n, `advisory locks still held on ${db.name}`).toBe(0);
        }
      } finally {
        await admin.end();
      }
      // The schema works: a store on each records and reads back.
      for (let i = 0; i < blank.length; i++) {
        const s = open(bouncer.url(`pair${i}`));
        await s.migrate();
        await s.insertMany([makeRecord(`m${i}`)]);
        expect(await s.count()).toBe(1);
      }
    }, 120_000);
  });
}
