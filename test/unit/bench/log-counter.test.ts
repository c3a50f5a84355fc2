import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LogCounter } from '../../../bench/lib/log-counter.js';

describe('LogCounter', () => {
  let dir: string;
  let file: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'log-counter-'));
    file = join(dir, 'server.log');
    writeFileSync(file, '');
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('counts matching lines as the file grows, a line once it is complete', () => {
    const c = new LogCounter(file, '"decision":"issued"');
    expect(c.read()).toBe(0);
    appendFileSync(file, '{"decision":"issued"}\n{"decision":"refused"}\n{"decision":"iss');
    expect(c.read()).toBe(1);
    appendFileSync(file, 'ued"}\n');
    expect(c.read()).toBe(2);
    expect(c.read()).toBe(2);
  });

  it('reads files larger than its buffer, with lines and multi-byte characters across its edges', () => {
    const line = (i: number) => `{"i":${i},"msg":"certificate issued é€","decision":"${i % 3 === 0 ? 'refused' : 'issued'}"}\n`;
    let text = '';
    let expected = 0;
    for (let i = 0; text.length < 3.5 * 1024 * 1024; i++) {
      text += line(i);
      if (i % 3 !== 0) expected++;
    }
    writeFileSync(file, text);
    const c = new LogCounter(file, '"decision":"issued"');
    expect(c.read()).toBe(expected);
    // The multi-byte characters survived the chunk edges: every line still matches its own text.
    const all = new LogCounter(file, 'issued é€');
    expect(all.read()).toBe(text.split('\n').length - 1);
  });

  it('decodes a character whose bytes straddle two reads', () => {
    // '€' is 3 bytes in UTF-8; the first lands on the last byte of the 1 MiB buffer.
    writeFileSync(file, 'p'.repeat(2 ** 20 - 2) + '\n' + '€ issued\n');
    expect(new LogCounter(file, '€ issued').read()).toBe(1);
  });
});
