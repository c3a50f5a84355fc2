import { describe, expect, it } from 'vitest';
import { LogThrottle } from '../../../src/log/throttle.js';

describe('LogThrottle', () => {
  it('says the first occurrence, holds the rest of the window back, and gives their count with the next line', () => {
    let t = 1_000;
    const lines = new LogThrottle(60_000, () => t);
    expect(lines.take()).toBe(0);
    t += 1;
    expect(lines.take()).toBeUndefined();
    t += 59_998;
    expect(lines.take()).toBeUndefined();
    t += 1; // the window since the last line has passed
    expect(lines.take()).toBe(2);
    expect(lines.take()).toBeUndefined();
    t += 60_000;
    expect(lines.take()).toBe(1);
    t += 120_000;
    expect(lines.take()).toBe(0);
  });

  it('says the first occurrence at any clock reading (performance.now starts near 0)', () => {
    expect(new LogThrottle(60_000, () => 0).take()).toBe(0);
  });
});
