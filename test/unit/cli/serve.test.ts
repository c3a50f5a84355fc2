import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { devDialTarget, tryRequest } from '../../../src/cli/serve.js';

describe("the dev banner's request command", () => {
  it("is request's defaults as they are, and names the address, data directory and root where the server's differ", () => {
    const plain = 'node dist/cli.js request --ns default --sa demo --key ec256';
    expect(tryRequest(15012, '.meshcert', '.meshcert/ca')).toBe(plain);
    expect(tryRequest(15012, resolve('.meshcert'), resolve('.meshcert/ca'))).toBe(plain);
    expect(tryRequest(23050, '/tmp/dev', '/tmp/dev/ca')).toBe(`${plain} --address 127.0.0.1:23050 --data-dir /tmp/dev`);
    expect(tryRequest(15012, '.meshcert', '/etc/meshcert/ca')).toBe(`${plain} --ca-root /etc/meshcert/ca/root-cert.pem`);
    // A trust domain other than request's default: the CSR must ask for the identity the dev token names.
    expect(tryRequest(15012, '.meshcert', '.meshcert/ca', 'example.org')).toBe(`${plain} --trust-domain example.org`);
    expect(tryRequest(15012, '.meshcert', '.meshcert/ca', 'cluster.local')).toBe(plain);
    // Quoted for a shell where a path needs it.
    expect(tryRequest(15012, "/tmp/it's here", "/tmp/it's here/ca")).toBe(`${plain} --data-dir '/tmp/it'\\''s here'`);
  });
});

describe('where the dev self-test and the banner reach the server', () => {
  it('dials the listen address (127.0.0.1 for a wildcard), checked as localhost where the dev certificate does not name it, and says whether only this host can reach it', () => {
    expect(devDialTarget('127.0.0.1:15012', 15012)).toEqual({ address: '127.0.0.1:15012', shown: '127.0.0.1:15012', loopback: true });
    expect(devDialTarget('127.0.0.3:0', 25062)).toEqual({ address: '127.0.0.3:25062', serverName: 'localhost', shown: '127.0.0.3:25062', loopback: true });
    expect(devDialTarget('0.0.0.0:25060', 25060)).toEqual({ address: '127.0.0.1:25060', shown: '0.0.0.0:25060', loopback: false });
    expect(devDialTarget('[::]:25060', 25060)).toEqual({ address: '127.0.0.1:25060', shown: '[::]:25060', loopback: false });
    expect(devDialTarget('[::1]:25061', 25061)).toEqual({ address: '[::1]:25061', shown: '[::1]:25061', loopback: true });
    expect(devDialTarget('10.1.2.3:15012', 15012)).toEqual({ address: '10.1.2.3:15012', serverName: 'localhost', shown: '10.1.2.3:15012', loopback: false });
    const plain = 'node dist/cli.js request --ns default --sa demo --key ec256';
    expect(tryRequest(25062, '.meshcert', '.meshcert/ca', 'cluster.local', devDialTarget('127.0.0.3:25062', 25062))).toBe(`${plain} --address 127.0.0.3:25062 --server-name localhost`);
    expect(tryRequest(15012, '.meshcert', '.meshcert/ca', 'cluster.local', devDialTarget('0.0.0.0:15012', 15012))).toBe(plain);
    expect(tryRequest(25061, '.meshcert', '.meshcert/ca', 'cluster.local', devDialTarget('[::1]:25061', 25061))).toBe(`${plain} --address '[::1]:25061'`);
  });
});
