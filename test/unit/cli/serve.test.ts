import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tryRequest } from '../../../src/cli/serve.js';

describe("the dev banner's request command", () => {
  it("is request's defaults as they are, and names the address and data directory where the server's differ", () => {
    expect(tryRequest(15012, '.meshcert')).toBe('node dist/cli.js request --ns default --sa demo --key ec256');
    expect(tryRequest(15012, resolve('.meshcert'))).toBe('node dist/cli.js request --ns default --sa demo --key ec256');
    expect(tryRequest(23050, '/tmp/dev')).toBe('node dist/cli.js request --ns default --sa demo --key ec256 --address 127.0.0.1:23050 --data-dir /tmp/dev');
  });
});
