import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { writeFileAtomic, writePrivateKey } from '../../../src/ca/files.js';

/** What each fsyncSync call synced (the path its descriptor names), in order; the real call still runs. */
const synced = vi.hoisted(() => [] as string[]);
vi.mock('node:fs', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs')>();
  return {
    ...real,
    fsyncSync: (fd: number) => {
      synced.push(real.readlinkSync(`/proc/self/fd/${fd}`));
      real.fsyncSync(fd);
    },
  };
});

const base = mkdtempSync(join(tmpdir(), 'meshcert-ca-files-'));
afterAll(() => rmSync(base, { recursive: true, force: true }));
beforeEach(() => void synced.splice(0));
let n = 0;
const mode = (p: string): number => statSync(p).mode & 0o777;

describe('writeFileAtomic', () => {
  it('writes the file with the mode asked for, whatever the umask, and keys 0600', () => {
    const dir = join(base, `d${++n}`);
    const old = process.umask(0o077);
    try {
      writeFileAtomic(join(dir, 'cert.pem'), 'cert\n');
    } finally {
      process.umask(old);
    }
    writePrivateKey(join(dir, 'key.pem'), 'key\n');
    expect(readFileSync(join(dir, 'cert.pem'), 'utf8')).toBe('cert\n');
    expect(mode(join(dir, 'cert.pem'))).toBe(0o644);
    expect(mode(join(dir, 'key.pem'))).toBe(0o600);
    expect(mode(dir)).toBe(0o700);
  });

  it('replaces an existing file and leaves nothing else behind', () => {
    const dir = join(base, `d${++n}`);
    writeFileAtomic(join(dir, 'a.pem'), 'one');
    writeFileAtomic(join(dir, 'a.pem'), 'two');
    expect(readFileSync(join(dir, 'a.pem'), 'utf8')).toBe('two');
    expect(readdirSync(dir)).toEqual(['a.pem']);
  });

  it('syncs the data before the rename and the directory after it', () => {
    const dir = join(base, `d${++n}`);
    mkdirSync(dir);
    writeFileAtomic(join(dir, 'key.pem'), 'secret', 0o600);
    // The temp file while it still has its temp name, then the directory holding the rename.
    expect(synced).toHaveLength(2);
    expect(synced[0]).toMatch(new RegExp(`^${dir}/key\\.pem\\.\\d+\\.\\d+\\.tmp$`));
    expect(synced[1]).toBe(dir);
  });

  it('syncs the parent of every directory it creates', () => {
    const top = join(base, `d${++n}`);
    writeFileAtomic(join(top, 'x', 'y', 'f.pem'), 'data');
    expect(synced.filter((p) => !p.endsWith('.tmp'))).toEqual([join(top, 'x'), top, base, join(top, 'x', 'y')]);
  });

  it("leaves a temp file it did not create alone (another writer's)", () => {
    const dir = join(base, `d${++n}`);
    mkdirSync(dir);
    const now = vi.spyOn(Date, 'now').mockReturnValue(1_700_000_000_000);
    try {
      const theirs = join(dir, `key.pem.${process.pid}.1700000000000.tmp`);
      writeFileSync(theirs, 'theirs');
      expect(() => writePrivateKey(join(dir, 'key.pem'), 'secret')).toThrow(/EEXIST/);
      expect(readFileSync(theirs, 'utf8')).toBe('theirs');
    } finally {
      now.mockRestore();
    }
  });

  it('removes its temp file when the write fails, and throws', () => {
    const dir = join(base, `d${++n}`);
    // The target is a directory that is not empty: the rename fails after the data is written.
    mkdirSync(join(dir, 'key.pem'), { recursive: true });
    writeFileSync(join(dir, 'key.pem', 'x'), 'x');
    expect(() => writePrivateKey(join(dir, 'key.pem'), 'secret')).toThrow();
    expect(readdirSync(dir)).toEqual(['key.pem']);
  });
});
