/**
 * Helpers for tests that use PostgreSQL (the server started by test/support/postgres.ts).
 *
 * Test files run in parallel: a test that stops the server should do it on a dedicated cluster
 * (startDedicatedCluster) so other files' tests are unaffected; stopPostgres()/startPostgres()
 * default to the shared cluster only when called without one.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { inject } from 'vitest';
import { createCluster, destroyCluster, startCluster, stopCluster, type PgCluster, type PgTestInfo } from './postgres.js';

export type { PgCluster, PgTestInfo };

export function pgInfo(): PgTestInfo {
  return inject('pg');
}

/** Null when PostgreSQL tests can run, else the reason they are skipped. */
export function pgSkipReason(): string | null {
  const info = pgInfo();
  return info.available ? null : (info.reason ?? 'PostgreSQL not available');
}

/** Null when a dedicated (stoppable) cluster can be started, else why not. */
export function dedicatedClusterSkipReason(): string | null {
  const info = pgInfo();
  return info.binDir === null ? 'PostgreSQL binaries (initdb, pg_ctl) not found: cannot start a cluster to stop and restart' : null;
}

function sharedCluster(): PgCluster {
  const c = pgInfo().cluster;
  if (c === null) throw new Error('the shared PostgreSQL server was not started by the test setup (MESHCERT_TEST_PG_URL?): it cannot be stopped');
  return c;
}

/** pg_ctl stop -m fast on the cluster's data dir (default: the shared cluster). */
export async function stopPostgres(cluster: PgCluster = sharedCluster()): Promise<void> {
  await stopCluster(cluster, 'fast');
}

/** pg_ctl start on the same data dir and port; resolves once it accepts connections. */
export async function startPostgres(cluster: PgCluster = sharedCluster()): Promise<void> {
  await startCluster(cluster);
}

/** A private cluster (initdb + start) for tests that stop the server. Call destroyDedicatedCluster after. */
export async function startDedicatedCluster(): Promise<PgCluster> {
  const binDir = pgInfo().binDir;
  if (binDir === null) throw new Error(dedicatedClusterSkipReason() ?? 'no PostgreSQL binaries');
  return createCluster(binDir);
}

export async function destroyDedicatedCluster(cluster: PgCluster): Promise<void> {
  await destroyCluster(cluster);
}

export interface TestDatabase {
  name: string;
  url: string;
  drop(): Promise<void>;
}

function withDatabase(url: string, db: string): string {
  const u = new URL(url);
  u.pathname = `/${db}`;
  return u.toString();
}

/** CREATE DATABASE with a unique name on the server of `adminUrl` (default: the injected server). */
export async function createTestDatabase(prefix: string, adminUrl: string | null = pgInfo().url): Promise<TestDatabase> {
  if (adminUrl === null) throw new Error(pgSkipReason() ?? 'PostgreSQL not available');
  const name = `meshcert_${prefix.toLowerCase().replace(/[^a-z0-9_]/g, '_').slice(0, 30)}_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE "${name}"`);
  } finally {
    await admin.end();
  }
  return {
    name,
    url: withDatabase(adminUrl, name),
    drop: async () => {
      const c = new pg.Client({ connectionString: adminUrl });
      await c.connect();
      try {
        await c.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      } finally {
        await c.end();
      }
    },
  };
}

/**
 * A login role that may only SELECT the tables `db` holds now (as an operator gives a read-only
 * inventory reader), and may create nothing: its URL, and drop() to remove it.
 */
export async function createSelectOnlyRole(db: TestDatabase): Promise<{ url: string; drop(): Promise<void> }> {
  const role = `meshcert_ro_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: db.url });
  await admin.connect();
  try {
    await admin.query(`CREATE ROLE ${role} LOGIN`);
    await admin.query(`GRANT SELECT ON ALL TABLES IN SCHEMA public TO ${role}`);
    await admin.query('REVOKE CREATE ON SCHEMA public FROM PUBLIC');
  } finally {
    await admin.end();
  }
  const url = new URL(db.url);
  url.username = role;
  return {
    url: url.toString(),
    drop: async () => {
      // The role owns nothing; its grants go with the database, which the caller drops first.
      const c = new pg.Client({ connectionString: pgInfo().url! });
      await c.connect();
      try {
        await c.query(`DROP ROLE IF EXISTS ${role}`);
      } finally {
        await c.end();
      }
    },
  };
}
