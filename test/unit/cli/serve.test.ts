import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tryRequest } from '../../../src/cli/serve.js';

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
