/**
 * A PostgreSQL connection that ends while the inventory holds it checked out (a transaction, the
 * migration's transactions): a restart, a failover, pg_terminate_backend. pg's Client then emits
 * 'error' as well as rejecting the statement; unheard, that 'error' threw from a socket event and
 * ended the process (the primary, and with it every worker and the records buffered in memory).
 * Now the statement's rejection is all that happens. The server is a stand-in that speaks just
 * enough of the protocol to accept a connection, then drops it at the first statement.
 */
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { PostgresInventoryStore, SIGHTINGS_LOCK_KEY } from '../../../src/inventory/postgres.js';
import { createTestDatabase, pgSkipReason } from '../../support/postgres-control.js';

function message(type: string, body: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.write(type, 0, 'latin1');
  head.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}

/** Accepts the startup (no password asked), then ends the connection at the first statement, after answering it if it is a simple BEGIN. */
function droppingServer(): Promise<{ server: Server; port: number; dropped: () => number }> {
  let dropped = 0;
  const server = createServer((socket: Socket) => {
    let started = false;
    let answered = false;
    let pending = Buffer.alloc(0);
    socket.on('error', () => {});
    socket.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      if (!started) {
        if (pending.length < 4 || pending.length < pending.readInt32BE(0)) return;
        pending = pending.subarray(pending.readInt32BE(0));
        started = true;
        // AuthenticationOk, ReadyForQuery (idle).
        socket.write(Buffer.concat([message('R', Buffer.from([0, 0, 0, 0])), message('Z', Buffer.from('I', 'latin1'))]));
      }
      if (answered || pending.length < 5) return; // after the first statement, nothing more is answered
      const type = String.fromCharCode(pending[0]!);
      if (type === 'X') return void socket.end();
      answered = true;
      dropped++;
      if (type === 'Q' && pending.subarray(5).toString('latin1').startsWith('BEGIN')) {
        // In the transaction, then gone while the next statement waits.
        socket.write(Buffer.concat([message('C', Buffer.from('BEGIN\0', 'latin1')), message('Z', Buffer.from('T', 'latin1'))]));
        setTimeout(() => socket.destroy(), 50);
      } else {
        socket.destroy();
      }
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, port: (server.address() as AddressInfo).port, dropped: () => dropped })));
}

describe('PostgresInventoryStore: a connection lost while checked out', () => {
  let server: Server | undefined;
  let store: PostgresInventoryStore | undefined;
  afterEach(async () => {
    await store?.close().catch(() => undefined);
    await new Promise((r) => server?.close(r));
  });

  it.each([
    ['inside a transaction (a prune batch)', (s: PostgresInventoryStore) => s.pruneExpired(new Date())],
    ['holding the migration lock', (s: PostgresInventoryStore) => s.migrate()],
  ])('%s: the call fails, and nothing is thrown out of the socket', async (_name, run) => {
    const fake = await droppingServer();
    server = fake.server;
    const poolErrors: Error[] = [];
    store = new PostgresInventoryStore({ url: `postgres://meshcert:x@127.0.0.1:${fake.port}/inventory`, onPoolError: (e) => poolErrors.push(e) });
    await expect(run(store)).rejects.toThrow(/Connection terminated/);
    expect(fake.dropped()).toBeGreaterThanOrEqual(1);
    // A late 'error' (as the connection finishes closing) must not escape either.
    await new Promise((r) => setTimeout(r, 200));
  });
});

describe.skipIf(pgSkipReason() !== null)('PostgresInventoryStore on a real PostgreSQL: a backend terminated inside a prune', () => {
  it('rejects that prune (waiting for the sightings lock a discover run holds), and the store answers afterwards', async () => {
    const db = await createTestDatabase('terminated');
    const store = new PostgresInventoryStore({ url: db.url });
    const holder = new pg.Client({ connectionString: db.url });
    try {
      await store.migrate();
      await holder.connect();
      await holder.query('SELECT pg_advisory_lock($1, $2)', [...SIGHTINGS_LOCK_KEY]); // as discover's snapshot write
      const prune = store.pruneExpired(new Date());
      prune.catch(() => {});
      const waiting = async (): Promise<number> =>
        (await holder.query(`SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = 'meshcert-inventory' AND wait_event_type = 'Lock'`, [db.name])).rows.length;
      await expect.poll(waiting, { timeout: 10_000 }).toBe(1);
      await holder.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'meshcert-inventory' AND wait_event_type = 'Lock'`, [db.name]);
      await expect(prune).rejects.toThrow(/terminat/);
      await new Promise((r) => setTimeout(r, 200)); // a late 'error' as the connection closes
      expect(await store.count()).toBe(0);
    } finally {
      await holder.end().catch(() => {});
      await store.close();
      await db.drop().catch(() => {});
    }
  }, 30_000);
});
