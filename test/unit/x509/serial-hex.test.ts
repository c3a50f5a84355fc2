import { describe, expect, it } from 'vitest';
import { serialHex } from '../../../src/x509/serial-hex.js';

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
