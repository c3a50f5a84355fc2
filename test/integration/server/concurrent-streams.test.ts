/**
 * server.maxConcurrentStreams as the running server advertises it in its HTTP/2 SETTINGS (what
 * makes a client queue calls above it): a number is sent as set, and 'auto' (the default) as
 * runtime/auto-shape.ts resolves it for this machine's memory limit (16 in a small pod, else 100).
 */
import { connect, type ClientHttp2Session } from 'node:http2';
import { afterEach, describe, expect, it } from 'vitest';
import { concurrentStreams } from '../../../src/runtime/auto-shape.js';
import { startTestCa, type TestCa } from '../../support/harness.js';

let ca: TestCa | undefined;
afterEach(async () => {
  await ca?.close();
  ca = undefined;
});

async function advertisedStreams(t: TestCa): Promise<number | undefined> {
  const session: ClientHttp2Session = connect(`https://${t.address}`, { ca: t.rootPem, servername: 'localhost', ALPNProtocols: ['h2'] });
  try {
    return await new Promise((resolve, reject) => {
      session.once('remoteSettings', (s) => resolve(s.maxConcurrentStreams));
      session.once('error', reject);
    });
  } finally {
    session.destroy();
  }
}

describe('server.maxConcurrentStreams on the wire', () => {
  it('advertises the number set', async () => {
    ca = await startTestCa({ server: { maxConcurrentStreams: 7 } });
    expect(await advertisedStreams(ca)).toBe(7);
    expect(ca.logs()).toMatch(/"maxConcurrentStreams":7[,}].*"msg":"meshcert serving"/);
  }, 30_000);

  it('advertises the number its starter resolved over the config (a worker serves the shape its primary sent)', async () => {
    ca = await startTestCa({}, undefined, { maxConcurrentStreams: 5 });
    expect(ca.config.server.maxConcurrentStreams).toBe('auto');
    expect(await advertisedStreams(ca)).toBe(5);
  }, 30_000);

  it("advertises what 'auto' resolves to here, by default", async () => {
    ca = await startTestCa();
    expect(ca.config.server.maxConcurrentStreams).toBe('auto');
    expect(await advertisedStreams(ca)).toBe(concurrentStreams('auto'));
    // ...and says so when it starts serving.
    expect(ca.logs()).toMatch(new RegExp(`"maxConcurrentStreams":${concurrentStreams('auto')}[,}].*"msg":"meshcert serving"`));
  }, 30_000);
});
