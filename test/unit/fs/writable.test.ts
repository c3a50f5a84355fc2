import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { writeProblem } from '../../../src/fs/writable.js';

const base = mkdtempSync(join(tmpdir(), 'meshcert-writable-'));
afterAll(() => rmSync(base, { recursive: true, force: true }));

describe('writeProblem', () => {
  it('accepts a file or directory that can be written, or created with its missing parents', () => {
    writeFileSync(join(base, 'inventory.db'), '');
    expect(writeProblem(join(base, 'inventory.db'), 'file')).toBeNull();
    expect(writeProblem(join(base, 'a', 'b', 'inventory.db'), 'file')).toBeNull();
    expect(writeProblem(base, 'directory')).toBeNull();
    expect(writeProblem(join(base, 'new-ca'), 'directory')).toBeNull();
  });

  it('says what is in the way: a directory where the database goes, a file where a directory must be', () => {
    mkdirSync(join(base, 'dir.db'));
    expect(writeProblem(join(base, 'dir.db'), 'file')).toBe('not a regular file (a directory)');
    writeFileSync(join(base, 'plain'), '');
    expect(writeProblem(join(base, 'plain'), 'directory')).toBe('not a directory');
    expect(writeProblem(join(base, 'plain', 'sub', 'inventory.db'), 'file')).toBe(`cannot create it: ${join(base, 'plain')} is not a directory`);
  });
});
