/**
 * A PgBouncer in transaction pooling mode in front of the test PostgreSQL server, for tests that
 * check the inventory relies on no session state. Started in the foreground as a child process
 * (as the server's user when the tests run as root: PgBouncer refuses to run as root) and ended
 * by its PID.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, chownSync, constants, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { freePort, serverUser } from './postgres.js';

/** The pgbouncer binary (Debian installs it in /usr/sbin, often not on a user's PATH), or null. */
export function findPgBouncer(): string | null {
  const dirs = [...(process.env.PATH ?? '').split(':').filter((d) => d !== ''), '/usr/sbin', '/usr/local/sbin'];
  for (const dir of dirs) {
    const candidate = join(dir, 'pgbouncer');
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return null;
}

export interface PoolAlias {
  /** The database name clients connect to. */
  alias: string;
  /** The real database on the server. */
  database: string;
  /** Server connections PgBouncer keeps for this alias. */
  poolSize: number;
}

export interface PgBouncer {
  port: number;
  /** A client URL for one of the aliases. */
  url(alias: string): string;
  /** What PgBouncer wrote to stderr, for failure messages. */
  log(): string;
  stop(): Promise<void>;
}

/**
 * Starts PgBouncer in transaction mode on a free loopback port, in front of the server at
 * `serverUrl` (trust authentication, as the test cluster uses), with one pool per alias.
 */
export async function startPgBouncer(binary: string, serverUrl: string, aliases: readonly PoolAlias[]): Promise<PgBouncer> {
  const server = new URL(serverUrl);
  const user = decodeURIComponent(server.username) || 'postgres';
  const dir = mkdtempSync(join(tmpdir(), 'meshcert-pgbouncer-'));
  const owner = serverUser();
  const port = await freePort();
  const databases = aliases.map(
    (a) => `${a.alias} = host=${server.hostname} port=${server.port || '5432'} dbname=${a.database} pool_size=${a.poolSize}`,
  );
  writeFileSync(join(dir, 'userlist.txt'), `"${user}" ""\n`);
  writeFileSync(
    join(dir, 'pgbouncer.ini'),
    [
      '[databases]',
      ...databases,
      '[pgbouncer]',
      'listen_addr = 127.0.0.1',
      `listen_port = ${port}`,
      'unix_socket_dir =',
      'auth_type = trust',
      `auth_file = ${join(dir, 'userlist.txt')}`,
      'pool_mode = transaction',
      'max_client_conn = 500',
      // pg sends none of these, but other clients' drivers do; harmless to allow.
      'ignore_startup_parameters = extra_float_digits',
      '',
    ].join('\n'),
  );
  if (owner !== null) {
    for (const f of ['', 'userlist.txt', 'pgbouncer.ini']) chownSync(join(dir, f), owner.uid, owner.gid);
  }
  let stderr = '';
  const child: ChildProcess = spawn(binary, [join(dir, 'pgbouncer.ini')], {
    cwd: dir,
    stdio: ['ignore', 'ignore', 'pipe'],
    ...(owner !== null ? { uid: owner.uid, gid: owner.gid } : {}),
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString('utf8')).slice(-20_000);
  });
  let exited: string | null = null;
  const gone = new Promise<void>((resolve) => {
    child.on('error', (err) => {
      exited = `could not start: ${err.message}`;
      resolve();
    });
    child.on('exit', (code, signal) => {
      exited = `exited (${signal ?? `code ${code}`})`;
      resolve();
    });
  });
  const stop = async (): Promise<void> => {
    if (exited === null && child.pid !== undefined) process.kill(child.pid, 'SIGTERM');
    await Promise.race([gone, new Promise((r) => setTimeout(r, 5000))]);
    if (exited === null && child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  const url = (alias: string): string => `postgresql://${encodeURIComponent(user)}@127.0.0.1:${port}/${alias}`;

  // Ready once a client gets through to the server behind it.
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (exited !== null) {
      await stop();
      throw new Error(`pgbouncer ${exited}: ${stderr}`);
    }
    const client = new pg.Client({ connectionString: url(aliases[0]!.alias), connectionTimeoutMillis: 2000 });
    client.on('error', () => undefined);
    try {
      await client.connect();
      await client.query('SELECT 1');
      await client.end();
      break;
    } catch (err) {
      await client.end().catch(() => undefined);
      if (Date.now() > deadline) {
        await stop();
        throw new Error(`pgbouncer did not accept connections within 15 s: ${(err as Error).message}\n${stderr}`, { cause: err });
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return { port, url, log: () => stderr, stop };
}
