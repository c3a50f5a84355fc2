import { describe, expect, it } from 'vitest';
import { certificateKey, serialHex } from '../../../src/x509/serial-hex.js';

describe('serialHex', () => {
  it.each([
    ['01A2B3', '1a2b3'],
    ['0001', '1'],
    ['00', '0'],
    ['0', '0'],
    ['7f', '7f'],
    ['10', '10'],
  ])('%s becomes %s', (input, out) => {
    expect(serialHex(input)).toBe(out);
  });
});

describe('certificateKey', () => {
  it('reads a serial or fingerprint as typed (colons, spaces, 0x, any case), and refuses what is not hex or longer than any', () => {
    expect(certificateKey(' 0xAB:CD ef ')).toBe('abcdef');
    expect(certificateKey('f'.repeat(128))).toBe('f'.repeat(128));
    expect(certificateKey('f'.repeat(129))).toBeNull();
    expect(certificateKey('xyz')).toBeNull();
    expect(certificateKey('')).toBeNull();
  });
});
