import { createHash } from 'node:crypto';
import { describe, expect, it, vi } from 'vitest';
import { sha1, sha256Hex } from '../../../src/crypto/digest.js';

describe('digests', () => {
  it('sha256Hex equals createHash for bytes and for a string read as UTF-8', () => {
    const bytes = Buffer.from([0, 1, 2, 250, 255]);
    expect(sha256Hex(bytes)).toBe(createHash('sha256').update(bytes).digest('hex'));
    expect(sha256Hex('3:abc\0tökén')).toBe(createHash('sha256').update('3:abc\0').update('tökén').digest('hex'));
    expect(sha256Hex('')).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  });

  it('sha1 equals createHash and returns bytes', () => {
    const bytes = Buffer.from('spki key bits');
    const out = sha1(bytes);
    expect(Buffer.isBuffer(out)).toBe(true);
    expect(out.equals(createHash('sha1').update(bytes).digest())).toBe(true);
  });

  it('gives the same results through createHash on a Node without crypto.hash', async () => {
    vi.resetModules();
    const algorithms: string[] = [];
    vi.doMock('node:crypto', async (orig) => {
      const real = await orig<typeof import('node:crypto')>();
      const createHashSpy = (alg: string) => {
        algorithms.push(alg);
        return real.createHash(alg);
      };
      return { ...real, hash: undefined, createHash: createHashSpy, default: { ...real, hash: undefined, createHash: createHashSpy } };
    });
    try {
      const fallback = await import('../../../src/crypto/digest.js');
      expect(fallback.sha256Hex('x')).toBe(sha256Hex('x'));
      expect(fallback.sha1(Buffer.from('x')).equals(sha1(Buffer.from('x')))).toBe(true);
      expect(algorithms).toEqual(['sha256', 'sha1']);
    } finally {
      vi.doUnmock('node:crypto');
      vi.resetModules();
    }
  });
});
