import { execFileSync } from 'node:child_process';
import { request } from 'node:http';
import { connect } from 'node:net';
import { hostname } from 'node:os';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isLocalHostHeader, startAdminServer, targetHost } from '../../../src/admin/server.js';
import { isLoopback } from '../../../src/net/loopback.js';
import { createLogger } from '../../../src/log/logger.js';
import type { InventoryStore } from '../../../src/inventory/types.js';

/** An admin server on a loopback port with fixed metrics and readiness, and no inventory. */
const startPlain = (): ReturnType<typeof startAdminServer> =>
  startAdminServer({
    listen: '127.0.0.1:0',
    logger: createLogger('silent'),
    metrics: () => Promise.resolve({ contentType: 'text/plain; version=0.0.4', body: 'm 1\n' }),
    readiness: () => Promise.resolve([{ name: 'ca', ok: true }]),
  });

/** One request on a connection of its own (from `localAddress`, another loopback address say): its status, or the error that ended it. */
function getOnce(port: number, path: string, localAddress?: string): Promise<number | string> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false, headers: { connection: 'close' }, ...(localAddress ? { localAddress } : {}) }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    req.end();
  });
}

/** An admin server whose /metrics answers only once `release` is called, counting the calls that wait. */
async function startGated(limits: { maxConnections: number; maxConnectionsPerAddress: number }): Promise<{ admin: Awaited<ReturnType<typeof startAdminServer>>; calls: () => number; release: () => void }> {
  let calls = 0;
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const admin = await startAdminServer({
    listen: '127.0.0.1:0',
    logger: createLogger('silent'),
    limits: { ...limits, headersTimeoutMs: 10_000, requestTimeoutMs: 30_000, idleTimeoutMs: 30_000 },
    metrics: async () => {
      calls++;
      await gate;
      return { contentType: 'text/plain', body: 'm 1\n' };
    },
    readiness: () => Promise.resolve([]),
  });
  return { admin, calls: () => calls, release };
}

describe('the admin server without an inventory', () => {
  let admin: Awaited<ReturnType<typeof startAdminServer>>;
  const url = (path: string): string => `http://127.0.0.1:${admin.port}${path}`;

  beforeAll(async () => {
    admin = await startPlain();
  });
  afterAll(() => admin?.close());

  it.each(['/healthz', '/readyz', '/metrics'])('answers GET and HEAD on %s, and 405 to other methods', async (path) => {
    expect((await fetch(url(path))).status).toBe(200);
    const head = await fetch(url(path), { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe('');
    for (const method of ['POST', 'DELETE', 'PUT']) {
      const r = await fetch(url(path), { method });
      expect(r.status).toBe(405);
      expect(r.headers.get('allow')).toBe('GET, HEAD');
      expect(((await r.json()) as { error: string }).error).toBe(`method ${method} not allowed; use GET`);
    }
  });

  it('says the inventory is disabled when asked for certificates, and not found for anything else', async () => {
    const api = await fetch(url('/api/v1/certificates?limit=1'));
    expect(api.status).toBe(404);
    expect(await api.json()).toEqual({ error: 'the certificate inventory is disabled (inventory.store: none)' });
    // The absolute form of a request target (RFC 9112 §3.2.2) names the same paths.
    const absolute = await new Promise<number>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: admin.port, path: `http://127.0.0.1:${admin.port}/healthz` }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end();
    });
    expect(absolute).toBe(200);
    for (const path of ['/nope', '/api/v1/certificatesx']) {
      const other = await fetch(url(path));
      expect(other.status, path).toBe(404);
      expect(await other.json(), path).toEqual({ error: 'not found' });
    }
  });
});

describe('the admin server on loopback and the Host header (DNS rebinding)', () => {
  let admin: Awaited<ReturnType<typeof startAdminServer>>;
  beforeAll(async () => {
    admin = await startPlain();
  });
  afterAll(() => admin?.close());

  /** A GET with the Host header as given (fetch does not let a caller set it). */
  const get = (host: string): Promise<number> =>
    new Promise((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: admin.port, path: '/metrics', headers: { host } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end();
    });

  it('answers requests addressed to localhost or an IP literal, and refuses a DNS name with 421', async () => {
    for (const host of [`localhost:${admin.port}`, `127.0.0.1:${admin.port}`, `[::1]:${admin.port}`, 'LOCALHOST']) expect(await get(host), host).toBe(200);
    for (const host of [`attacker.example:${admin.port}`, 'meshcert.meshcert.svc']) expect(await get(host), host).toBe(421);
  });

  it('knows a loopback listen address however it is spelled, and checks Host headers on each', async () => {
    for (const host of ['127.0.0.1', '127.1.2.3', '::1', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1', '::ffff:7f00:1', 'localhost', 'LocalHost']) expect(isLoopback(host), host).toBe(true);
    for (const host of ['0.0.0.0', '::', '10.0.0.1', '::ffff:10.0.0.1', '::2', 'meshcert.local', '127.0.0.1.nip.io']) expect(isLoopback(host), host).toBe(false);
    const mapped = await startAdminServer({ listen: '[::ffff:127.0.0.1]:0', logger: createLogger('silent'), metrics: () => Promise.resolve({ contentType: 'text/plain', body: '' }), readiness: () => Promise.resolve([]) });
    try {
      const status = await new Promise<number>((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port: mapped.port, path: '/metrics', headers: { host: 'attacker.example' } }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on('error', reject);
        req.end();
      });
      expect(status).toBe(421);
    } finally {
      await mapped.close();
    }
  });

  it('checks Host headers on every connection that came in over loopback, whatever admin.listen says (a wildcard, or a name resolving to loopback)', async () => {
    for (const listen of ['0.0.0.0:0', `${hostnameOnLoopback() ?? 'localhost'}:0`]) {
      const server = await startAdminServer({ listen, logger: createLogger('silent'), metrics: () => Promise.resolve({ contentType: 'text/plain', body: '' }), readiness: () => Promise.resolve([]) });
      try {
        const status = (host: string): Promise<number> =>
          new Promise<number>((resolve, reject) => {
            const req = request({ host: '127.0.0.1', port: server.port, path: '/metrics', headers: { host } }, (res) => {
              res.resume();
              resolve(res.statusCode ?? 0);
            });
            req.on('error', reject);
            req.end();
          });
        expect(await status('attacker.example'), listen).toBe(421);
        expect(await status(`127.0.0.1:${server.port}`), listen).toBe(200);
      } finally {
        await server.close();
      }
    }
  });

  it('reads Host headers as names and addresses', () => {
    expect(isLocalHostHeader(undefined)).toBe(true);
    expect(isLocalHostHeader('10.1.2.3:9402')).toBe(true);
    expect(isLocalHostHeader('[fe80::1]:9402')).toBe(true);
    expect(isLocalHostHeader('localhost.attacker.example')).toBe(false);
    expect(isLocalHostHeader('127.0.0.1.nip.io')).toBe(false);
    // Malformed: an unclosed or misplaced bracket, a bracketed name or IPv4, a bare IPv6, junk after the port.
    for (const host of ['[::1', '[::1]x', '::1', '[127.0.0.1]', '[localhost]', 'localhost:80:80', '127.0.0.1]', 'localhost:x']) expect(isLocalHostHeader(host), host).toBe(false);
    for (const host of ['localhost:', '[::1]', '[::1]:9402', '127.0.0.1']) expect(isLocalHostHeader(host), host).toBe(true);
  });

  it("judges an absolute-form request by its target's authority, not the Host header (RFC 9112 §3.2.2)", async () => {
    const absolute = (target: string, host: string): Promise<number> =>
      new Promise((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port: admin.port, path: target, headers: { host } }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on('error', reject);
        req.end();
      });
    expect(await absolute('http://attacker.example/metrics', 'localhost')).toBe(421);
    expect(await absolute('http://localhost@attacker.example/metrics', 'localhost')).toBe(421);
    expect(await absolute(`http://localhost:${admin.port}/metrics`, 'attacker.example')).toBe(200);
    expect(targetHost('HTTP://user:pw@[::1]:9402/x?y', 'attacker.example')).toBe('[::1]:9402');
    expect(targetHost('/metrics', 'localhost')).toBe('localhost');
  });

  it('refuses a request with two Host headers (RFC 9112 §3.2), whichever comes first', async () => {
    const twoHosts = (first: string, second: string): Promise<number> =>
      new Promise((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port: admin.port, path: '/metrics', setHost: false });
        req.setHeader('host', [first, second]);
        req.on('response', (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on('error', reject);
        req.end();
      });
    expect(await twoHosts('localhost', 'attacker.example')).toBe(400);
    expect(await twoHosts('attacker.example', 'localhost')).toBe(400);
    expect(await get('localhost')).toBe(200);
  });
});

describe('the admin server with a store that is down', () => {
  it('answers 503 to every inventory request and warns at most once a minute, with how many failed since', async () => {
    const store = {
      list: () => Promise.reject(new Error('connection refused')),
      get: () => Promise.reject(new Error('connection refused')),
    } as unknown as InventoryStore;
    const lines: Array<{ level: number; msg: string; failedSinceLastWarning?: number }> = [];
    const sink = new Writable({ write: (c: Buffer, _e, cb) => (lines.push(...c.toString().trim().split('\n').map((l) => JSON.parse(l) as (typeof lines)[number])), cb()) });
    let t = 1_000_000;
    const admin = await startAdminServer({ listen: '127.0.0.1:0', logger: createLogger('debug', sink), now: () => t, store, metrics: () => Promise.resolve({ contentType: 'text/plain', body: '' }), readiness: () => Promise.resolve([]) });
    try {
      const url = `http://127.0.0.1:${admin.port}/api/v1/certificates`;
      const warnings = (): Array<number | undefined> => lines.filter((l) => l.level === 40 && l.msg.startsWith('inventory API: store failed')).map((l) => l.failedSinceLastWarning);
      expect((await fetch(url)).status).toBe(503);
      t += 1_000;
      for (let i = 0; i < 3; i++) expect((await fetch(url)).status).toBe(503);
      await expect.poll(() => lines.filter((l) => l.msg === 'inventory API: store failed').length).toBe(3);
      expect(warnings()).toEqual([undefined]);
      t += 60_000;
      expect((await fetch(url)).status).toBe(503);
      await expect.poll(warnings).toEqual([undefined, 3]);
    } finally {
      await admin.close();
    }
  });
});

describe('the admin server under load', () => {
  it('answers a third inventory query while two are under way with 503 and Retry-After, without asking the store, and the next one once a slot is free', async () => {
    const waiting: Array<() => void> = [];
    let lists = 0;
    const store = {
      list: () => {
        lists++;
        return new Promise((resolve) => waiting.push(() => resolve({ items: [], nextCursor: null })));
      },
    } as unknown as InventoryStore;
    const admin = await startAdminServer({ listen: '127.0.0.1:0', logger: createLogger('silent'), store, metrics: () => Promise.resolve({ contentType: 'text/plain', body: '' }), readiness: () => Promise.resolve([]) });
    try {
      const url = `http://127.0.0.1:${admin.port}/api/v1/certificates?issuer=zzz`;
      const held = [fetch(url), fetch(url)];
      await expect.poll(() => lists).toBe(2);
      const busy = await fetch(url);
      expect(busy.status).toBe(503);
      expect(busy.headers.get('retry-after')).toBe('1');
      expect(await busy.json()).toEqual({ error: 'the inventory is answering 2 other queries; retry in a second' });
      expect(lists).toBe(2);
      waiting.splice(0).forEach((r) => r());
      expect((await Promise.all(held)).map((r) => r.status)).toEqual([200, 200]);
      const next = fetch(url);
      await expect.poll(() => lists).toBe(3);
      waiting.splice(0).forEach((r) => r());
      expect((await next).status).toBe(200);
      // A bad request is still told so while the slots are full: it never reaches the store.
      const more = [fetch(url), fetch(url)];
      await expect.poll(() => lists).toBe(5);
      const bad = await fetch(`http://127.0.0.1:${admin.port}/api/v1/certificates?${'x'.repeat(500)}=1`);
      expect(bad.status).toBe(400);
      expect(((await bad.json()) as { error: string }).error).toMatch(/^unknown query parameter "x{64}"; known: /);
      waiting.splice(0).forEach((r) => r());
      await Promise.all(more);
    } finally {
      await admin.close();
    }
  });

  it("keeps answering probes while a client holds every connection: a new one takes the slot of the connection idle longest, and is refused only when every one has a request under way", async () => {
    const { admin, calls, release } = await startGated({ maxConnections: 3, maxConnectionsPerAddress: 3 });
    const get = (path: string): Promise<number | string> => getOnce(admin.port, path);
    const silent = await Promise.all(
      [0, 1, 2].map(
        () =>
          new Promise<{ closed: Promise<void> }>((resolve) => {
            const socket = connect(admin.port, '127.0.0.1', () => resolve({ closed: new Promise((c) => socket.once('close', () => c())) }));
            socket.on('error', () => undefined);
          }),
      ),
    );
    try {
      // Three connections open and silent (a client's kept-alive ones, or a slowloris): the probe
      // still gets in, in the slot of the first of them.
      await new Promise((r) => setTimeout(r, 100));
      expect(await get('/healthz')).toBe(200);
      await silent[0]!.closed;
      // Three requests under way hold every slot: a fourth connection is refused, not queued.
      const scrapes = [get('/metrics'), get('/metrics'), get('/metrics')];
      await expect.poll(calls).toBe(3);
      await Promise.all(silent.map((s) => s.closed));
      expect(await get('/healthz')).toMatch(/^(ECONNRESET|EPIPE|socket hang up)$/);
      release();
      expect(await Promise.all(scrapes)).toEqual([200, 200, 200]);
      expect(await get('/healthz')).toBe(200);
    } finally {
      release();
      await admin.close();
    }
  });

  it('lets one address hold at most maxConnectionsPerAddress connections, so a client whose requests never end leaves the probes room', async () => {
    const { admin, calls, release } = await startGated({ maxConnections: 4, maxConnectionsPerAddress: 2 });
    try {
      // A client on 127.0.0.2 with two requests under way (a slow reader, say): its third connection is refused...
      const held = [getOnce(admin.port, '/metrics', '127.0.0.2'), getOnce(admin.port, '/metrics', '127.0.0.2')];
      await expect.poll(calls).toBe(2);
      expect(await getOnce(admin.port, '/healthz', '127.0.0.2')).toMatch(/^(ECONNRESET|EPIPE|socket hang up)$/);
      // ...while another address (the kubelet's) still gets in.
      expect(await getOnce(admin.port, '/healthz')).toBe(200);
      release();
      expect(await Promise.all(held)).toEqual([200, 200]);
    } finally {
      release();
      await admin.close();
    }
  });

  it('closes a connection whose request headers do not arrive in time, and one that stops reading its answer', async () => {
    const big = 'x'.repeat(32 * 2 ** 20);
    const admin = await startAdminServer({
      listen: '127.0.0.1:0',
      logger: createLogger('silent'),
      limits: { maxConnections: 128, maxConnectionsPerAddress: 32, headersTimeoutMs: 300, requestTimeoutMs: 1_000, idleTimeoutMs: 1_000 },
      metrics: () => Promise.resolve({ contentType: 'text/plain', body: big }),
      readiness: () => Promise.resolve([]),
    });
    /** Sends `text`, reads nothing for `pauseMs`, then everything until the server closes. */
    const exchange = (text: string, pauseMs = 0): Promise<{ ms: number; head: string; bytes: number }> =>
      new Promise((resolve, reject) => {
        const started = Date.now();
        let head = '';
        let bytes = 0;
        const socket = connect(admin.port, '127.0.0.1', () => socket.write(text));
        socket.pause();
        setTimeout(() => socket.resume(), pauseMs);
        socket.on('data', (d: Buffer) => {
          if (head.length < 64) head += d.subarray(0, 64).toString();
          bytes += d.length;
        });
        socket.on('close', () => resolve({ ms: Date.now() - started, head, bytes }));
        socket.on('error', () => resolve({ ms: Date.now() - started, head, bytes }));
        socket.setTimeout(10_000, () => reject(new Error('not closed by the server')));
      });
    try {
      // Headers begun and never ended: 408 once headersTimeout has passed.
      const slow = await exchange('GET /healthz HTTP/1.1\r\nHost: localhost\r\n');
      expect(slow.head).toMatch(/^HTTP\/1\.1 408 /);
      expect(slow.ms).toBeLessThan(1_400);
      // A client that stops reading a large answer (32 MiB) for 3 s: closed when its socket has been
      // stuck for idleTimeout, so it never gets the whole of it.
      const stuck = await exchange('GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n', 3_000);
      expect(stuck.head).toMatch(/^HTTP\/1\.1 200 /);
      expect(stuck.bytes).toBeLessThan(big.length);
    } finally {
      await admin.close();
    }
  }, 20_000);
});

/** This machine's own name when it resolves to a loopback address (Debian's 127.0.1.1, say), for a listen given by name. */
function hostnameOnLoopback(): string | undefined {
  try {
    const address = execFileSync('getent', ['ahostsv4', hostname()], { encoding: 'utf8' }).split(/\s+/)[0] ?? '';
    return address.startsWith('127.') ? hostname() : undefined;
  } catch {
    return undefined;
  }
}
