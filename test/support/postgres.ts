/**
 * Vitest globalSetup: a PostgreSQL server for the tests.
 *
 * - MESHCERT_TEST_PG_URL set: that server is used as is (tests create their own databases in it).
 * - Otherwise, when PostgreSQL binaries are found (/usr/lib/postgresql/<v>/bin, or initdb on PATH),
 *   a throwaway cluster is created in a temp dir and started on a free loopback port, as the
 *   `postgres` user when running as root (the server refuses root). It is stopped and its dir
 *   removed in teardown (and, as a last resort, when the process exits).
 * - No PostgreSQL: with CI set the run FAILS; locally the PostgreSQL tests are skipped and say why.
 *   MESHCERT_TEST_PG=off skips them on purpose (still a failure under CI).
 *
 * Tests read the result with `inject('pg')` (see postgres-control.ts for helpers).
 * This module imports nothing from vitest at run time, so test workers may import its helpers.
 */
import { execFile, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { isCi } from './ci.js';

export interface PgCluster {
  binDir: string;
  /** Temp dir holding data/, the socket and the log; removed by destroyCluster. */
  baseDir: string;
  dataDir: string;
  logFile: string;
  port: number;
  /** The user the server runs as when the tests run as root; null otherwise. */
  uid: number | null;
  gid: number | null;
  /** Superuser connection URL (database `postgres`). */
  url: string;
}

export interface PgTestInfo {
  available: boolean;
  /** Why PostgreSQL tests are skipped (when not available). */
  reason: string | null;
  /** Superuser/admin URL; tests create their own databases with it. */
  url: string | null;
  /** The throwaway cluster started by this setup; null when MESHCERT_TEST_PG_URL was used. */
  cluster: PgCluster | null;
  /** PostgreSQL binaries, when found (lets tests start dedicated clusters, e.g. for outages). */
  binDir: string | null;
}

declare module 'vitest' {
  export interface ProvidedContext {
    pg: PgTestInfo;
  }
}

function versionOf(dir: string): number {
  const n = Number.parseFloat(dir);
  return Number.isFinite(n) ? n : 0;
}

/** Directory holding initdb and pg_ctl, or null. */
export function findPgBinDir(): string | null {
  const has = (dir: string): boolean => existsSync(join(dir, 'initdb')) && existsSync(join(dir, 'pg_ctl'));
  const root = '/usr/lib/postgresql';
  if (existsSync(root)) {
    const versions = readdirSync(root).sort((a, b) => versionOf(b) - versionOf(a));
    for (const v of versions) {
      const dir = join(root, v, 'bin');
      if (has(dir)) return dir;
    }
  }
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    const initdb = join(dir, 'initdb');
    if (!existsSync(initdb)) continue;
    // Debian puts wrapper symlinks on PATH; the real binaries sit together in the target's dir.
    const real = dirname(realpathSync(initdb));
    if (has(real)) return real;
    if (has(dir)) return dir;
  }
  return null;
}

function lookupId(flag: '-u' | '-g', user: string): number | null {
  const r = spawnSync('id', [flag, user], { encoding: 'utf8' });
  if (r.status !== 0) return null;
  const n = Number.parseInt(r.stdout.trim(), 10);
  return Number.isInteger(n) ? n : null;
}

/** As root, the unprivileged user to run the server as; null when not root. */
export function serverUser(): { uid: number; gid: number } | null {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return null;
  for (const name of ['postgres', 'nobody']) {
    const uid = lookupId('-u', name);
    const gid = lookupId('-g', name);
    if (uid !== null && gid !== null && uid !== 0) return { uid, gid };
  }
  throw new Error('running as root and neither a `postgres` nor a `nobody` user exists to run PostgreSQL');
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function run(c: Pick<PgCluster, 'binDir' | 'baseDir' | 'uid' | 'gid'>, cmd: string, args: string[], timeoutMs = 60_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      join(c.binDir, cmd),
      args,
      {
        cwd: c.baseDir,
        timeout: timeoutMs,
        env: { ...process.env, LC_ALL: 'C', LANG: 'C' },
        ...(c.uid !== null && c.gid !== null ? { uid: c.uid, gid: c.gid } : {}),
      },
      (err, stdout, stderr) => {
        if (err) reject(new Error(`${cmd} ${args.join(' ')} failed: ${err.message}\n${stdout}\n${stderr}`));
        else resolve(stdout);
      },
    );
  });
}

function logTail(c: PgCluster): string {
  try {
    return readFileSync(c.logFile, 'utf8').split('\n').slice(-20).join('\n');
  } catch {
    return '';
  }
}

function serverOptions(c: PgCluster): string {
  // Throwaway test data: durability off for speed (a clean pg_ctl stop still writes everything).
  return [
    `-k ${c.baseDir}`,
    `-p ${c.port}`,
    '-c listen_addresses=127.0.0.1',
    '-c fsync=off',
    '-c synchronous_commit=off',
    '-c full_page_writes=off',
    '-c max_connections=200',
  ].join(' ');
}

/** Starts (or restarts) the cluster on its data dir and port; resolves when it accepts connections. */
export async function startCluster(c: PgCluster): Promise<void> {
  try {
    await run(c, 'pg_ctl', ['-D', c.dataDir, '-l', c.logFile, '-o', serverOptions(c), '-w', '-t', '60', 'start']);
  } catch (err) {
    throw new Error(`${(err as Error).message}\n--- server log ---\n${logTail(c)}`, { cause: err });
  }
}

/** Stops the cluster (default mode fast: sessions are terminated, data is kept). */
export async function stopCluster(c: PgCluster, mode: 'smart' | 'fast' | 'immediate' = 'fast'): Promise<void> {
  await run(c, 'pg_ctl', ['-D', c.dataDir, '-m', mode, '-w', '-t', '60', 'stop']);
}

/** initdb + start in a fresh temp dir on a free loopback port. */
export async function createCluster(binDir: string): Promise<PgCluster> {
  const user = serverUser();
  const baseDir = mkdtempSync(join(tmpdir(), 'meshcert-pg-'));
  chmodSync(baseDir, 0o700);
  if (user !== null) chownSync(baseDir, user.uid, user.gid);
  const partial = { binDir, baseDir, uid: user?.uid ?? null, gid: user?.gid ?? null };
  try {
    await run(partial, 'initdb', ['-D', join(baseDir, 'data'), '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--no-locale', '--no-sync']);
    let lastErr: unknown = null;
    for (let attempt = 0; attempt < 3; attempt++) {
      const port = await freePort();
      const cluster: PgCluster = {
        ...partial,
        dataDir: join(baseDir, 'data'),
        logFile: join(baseDir, 'server.log'),
        port,
        url: `postgresql://postgres@127.0.0.1:${port}/postgres`,
      };
      try {
        await startCluster(cluster);
        return cluster;
      } catch (err) {
        lastErr = err; // most likely the port was taken in between: try another
      }
    }
    throw lastErr;
  } catch (err) {
    rmSync(baseDir, { recursive: true, force: true });
    throw err;
  }
}

/** Stops the server (immediate) and removes its directory. Never throws. */
export async function destroyCluster(c: PgCluster): Promise<void> {
  await stopCluster(c, 'immediate').catch(() => undefined);
  rmSync(c.baseDir, { recursive: true, force: true });
}

/** Synchronous variant for process 'exit' handlers. */
export function destroyClusterSync(c: PgCluster): void {
  if (existsSync(join(c.dataDir, 'postmaster.pid'))) {
    spawnSync(join(c.binDir, 'pg_ctl'), ['-D', c.dataDir, '-m', 'immediate', '-w', 'stop'], {
      cwd: c.baseDir,
      stdio: 'ignore',
      ...(c.uid !== null && c.gid !== null ? { uid: c.uid, gid: c.gid } : {}),
    });
  }
  rmSync(c.baseDir, { recursive: true, force: true });
}

export default async function setup(project: TestProject): Promise<(() => Promise<void>) | undefined> {
  const disabled = process.env.MESHCERT_TEST_PG === 'off';
  const binDir = disabled ? null : findPgBinDir();
  const external = process.env.MESHCERT_TEST_PG_URL;
  if (external !== undefined && external !== '') {
    // The outage tests stop and restart a cluster of their own: they need the binaries even then.
    if (binDir === null && isCi()) {
      throw new Error('CI must run the PostgreSQL outage tests, which start and stop a cluster of their own: install the PostgreSQL binaries (initdb, pg_ctl) beside MESHCERT_TEST_PG_URL, and do not set MESHCERT_TEST_PG=off');
    }
    project.provide('pg', { available: true, reason: null, url: external, cluster: null, binDir });
    return undefined;
  }
  if (binDir === null) {
    const reason = disabled
      ? 'PostgreSQL disabled by MESHCERT_TEST_PG=off'
      : 'PostgreSQL not available: MESHCERT_TEST_PG_URL unset and no initdb/pg_ctl in /usr/lib/postgresql/*/bin or on PATH';
    if (isCi()) throw new Error(`${reason}. CI must run the PostgreSQL tests: install PostgreSQL (e.g. apt-get install postgresql) or set MESHCERT_TEST_PG_URL.`);
    console.warn(`[meshcert test setup] ${reason}; PostgreSQL tests will be skipped.`);
    project.provide('pg', { available: false, reason, url: null, cluster: null, binDir: null });
    return undefined;
  }
  const cluster = await createCluster(binDir);
  const onExit = (): void => destroyClusterSync(cluster);
  process.once('exit', onExit);
  project.provide('pg', { available: true, reason: null, url: cluster.url, cluster, binDir });
  return async () => {
    process.removeListener('exit', onExit);
    await destroyCluster(cluster);
  };
}
