import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAdminServer } from '../../../src/admin/server.js';
import { createLogger } from '../../../src/log/logger.js';

describe('the admin server without an inventory', () => {
  let admin: Awaited<ReturnType<typeof startAdminServer>>;
  const url = (path: string): string => `http://127.0.0.1:${admin.port}${path}`;

  beforeAll(async () => {
    admin = await startAdminServer({
      listen: '127.0.0.1:0',
      logger: createLogger('silent'),
      metrics: () => Promise.resolve({ contentType: 'text/plain; version=0.0.4', body: 'm 1\n' }),
      readiness: () => Promise.resolve([{ name: 'ca', ok: true }]),
    });
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
    const other = await fetch(url('/nope'));
    expect(other.status).toBe(404);
    expect(await other.json()).toEqual({ error: 'not found' });
  });
});
