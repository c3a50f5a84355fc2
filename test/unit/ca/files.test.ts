import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { importIstiod } from '../../../src/ca/import-istiod.js';
import { initCaDir } from '../../../src/ca/init.js';
import { beginCaCreation, CaDirTaken, endCaCreation, exposedKeyNotes, STEP_LOCK, withCaDirLock, interruptedCreation, readCaTextIfPresent, recoverInterruptedCreation, waitForCaCreation, writeFileAtomic, writePrivateKey } from '../../../src/ca/files.js';

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
  it.skipIf(process.getuid?.() !== 0)("run as root, keeps the owner of the file it replaces, and gives new files and directories their directory's owner", () => {
    const dir = join(base, `d${++n}`);
    mkdirSync(dir);
    chownSync(dir, 65534, 65534);
    writeFileSync(join(dir, 'ca-key.pem'), 'old', { mode: 0o600 });
    chownSync(join(dir, 'ca-key.pem'), 65534, 65534);
    writePrivateKey(join(dir, 'ca-key.pem'), 'new');
    writeFileAtomic(join(dir, 'rotation.json'), '{}');
    writePrivateKey(join(dir, 'archive', 'x', 'ca-key.pem'), 'archived');
    const owner = (p: string): [number, number] => [statSync(p).uid, statSync(p).gid];
    for (const p of ['ca-key.pem', 'rotation.json', 'archive', 'archive/x', 'archive/x/ca-key.pem']) expect(owner(join(dir, p)), p).toEqual([65534, 65534]);
    expect(readFileSync(join(dir, 'ca-key.pem'), 'utf8')).toBe('new');
    expect(mode(join(dir, 'ca-key.pem'))).toBe(0o600);
    // A file of root's own stays root's.
    writeFileSync(join(dir, 'root-key.pem'), 'root', { mode: 0o600 });
    writePrivateKey(join(dir, 'root-key.pem'), 'root 2');
    expect(owner(join(dir, 'root-key.pem'))).toEqual([0, 0]);
  });

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
    expect(synced.filter((p) => !p.endsWith('.tmp'))).toEqual([base, top, join(top, 'x'), join(top, 'x', 'y')]);
  });

  it('ca init and ca import-istiod make their directory durably too: its parent is synced', async () => {
    const top = join(base, `d${++n}`);
    await initCaDir({ dir: join(top, 'ca') });
    expect(synced.slice(0, 2)).toEqual([base, top]);
    synced.splice(0);
    importIstiod({ from: join(top, 'ca'), dir: join(top, 'imported', 'ca') });
    expect(synced.slice(0, 2)).toEqual([top, join(top, 'imported')]);
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

describe('a CA creation in progress in a shared directory', () => {
  const marker = (d: string): string => join(d, '.meshcert-creating');
  const dated = (d: string, offsetMs: number): void => {
    const t = (Date.now() + offsetMs) / 1000;
    utimesSync(marker(d), t, t);
  };
  const fresh = (): string => {
    const d = mkdtempSync(join(base, 'creating-'));
    beginCaCreation(d);
    return d;
  };

  it("waits for a live creation whose marker a clock ahead of its creator's dates as old, until the marker goes", async () => {
    const d = fresh();
    dated(d, -40_000);
    // By its date alone it looks stale: the CLI, which does not wait, would clear it.
    expect(interruptedCreation(d)).toBe('cleared');
    const started = performance.now();
    setTimeout(() => rmSync(marker(d)), 300);
    let waits = 0;
    expect(await waitForCaCreation(d, () => waits++, 5000)).toBe('none');
    expect(performance.now() - started).toBeGreaterThanOrEqual(250);
    expect(waits).toBe(1);
  });

  it('takes a marker unchanged for the whole wait as a dead creation, even when dated ahead of this clock', async () => {
    const d = fresh();
    dated(d, 5 * 60_000);
    expect(interruptedCreation(d)).toBe('cleared');
    expect(await waitForCaCreation(d, undefined, 300)).toBe('stale');
    expect(recoverInterruptedCreation(d, { stale: true })).toBe('cleared');
    expect(readdirSync(d)).toEqual([]);
  });

  it('takes a marker dated long ago as dead at once, and a fresh one as another creation the CLI does not touch', async () => {
    const d = fresh();
    expect(interruptedCreation(d)).toBe('in-progress');
    expect(() => recoverInterruptedCreation(d)).toThrow(CaDirTaken);
    expect(() => recoverInterruptedCreation(d)).toThrow(/another process is creating a CA in .*; wait for it to finish, or, if a creation was killed, run again in 30 s/);
    expect(() => beginCaCreation(d)).toThrow(CaDirTaken);
    dated(d, -3600_000);
    expect(await waitForCaCreation(d, undefined, 60_000)).toBe('stale');
  });
});

describe('temp files of killed writes', () => {
  it("go once a creation completes, here and in the step's subdirectories: a dead pid's, or any over a minute old; never a live writer's fresh one, ours, or another file", () => {
    const d = mkdtempSync(join(base, 'temps-'));
    mkdirSync(join(d, 'previous'));
    mkdirSync(join(d, 'archive', 'x', 'deeper'), { recursive: true });
    const now = Date.now();
    const dead = 2 ** 22 + 12_345; // above Linux's pid_max: no process has it
    const live = process.ppid;
    const gone = [`ca-key.pem.${dead}.${now}.tmp`, `root-key.pem.${live}.${now - 120_000}.tmp`, `previous/ca-key.pem.${dead}.${now}.tmp`, `archive/x/ca-key.pem.${dead}.${now}.tmp`];
    const kept = [`ca-cert.pem.${live}.${now}.tmp`, `ca-key.pem.${process.pid}.${now - 120_000}.tmp`, 'ca-key.pem', 'notes.tmp', 'x.1.2.tmp.bak', `archive/x/deeper/ca-key.pem.${dead}.${now}.tmp`];
    for (const f of [...gone, ...kept]) writeFileSync(join(d, f), 'x');
    // An earlier version's staging directory, with a key in it.
    mkdirSync(join(d, '.staging-AbC123'));
    writeFileSync(join(d, '.staging-AbC123', 'ca-key.pem'), 'x');
    gone.push('.staging-AbC123');
    beginCaCreation(d);
    endCaCreation(d);
    for (const f of gone) expect(existsSync(join(d, f)), f).toBe(false);
    for (const f of kept) expect(existsSync(join(d, f)), f).toBe(true);
  });

  it('a complete creation whose marker was left is not waited for', async () => {
    const d = mkdtempSync(join(base, 'complete-'));
    beginCaCreation(d);
    writeFileSync(join(d, 'ca-cert.pem'), 'x');
    let waited = false;
    expect(await waitForCaCreation(d, () => (waited = true))).toBe('stale');
    expect(waited).toBe(false);
    expect(recoverInterruptedCreation(d, { stale: true })).toBe('completed');
  });
});

describe('readCaTextIfPresent', () => {
  it('reads a file, is undefined for none (a dangling link included), and names the file for any other problem', () => {
    const d = mkdtempSync(join(base, 'optional-'));
    writeFileSync(join(d, 'root-cert.pem'), 'pem');
    expect(readCaTextIfPresent(join(d, 'root-cert.pem'))).toBe('pem');
    expect(readCaTextIfPresent(join(d, 'ca-cert.pem'))).toBeUndefined();
    symlinkSync(join(d, 'gone'), join(d, 'dangling.pem'));
    expect(readCaTextIfPresent(join(d, 'dangling.pem'))).toBeUndefined();
    mkdirSync(join(d, 'cert-chain.pem'));
    expect(() => readCaTextIfPresent(join(d, 'cert-chain.pem'))).toThrow(`cannot read ${join(d, 'cert-chain.pem')}: not a regular file (a directory)`);
    writeFileSync(join(d, 'big.pem'), Buffer.alloc(1024 * 1024 + 1));
    expect(() => readCaTextIfPresent(join(d, 'big.pem'))).toThrow(/big\.pem: larger than 1048576 bytes/);
  });
});

describe('withCaDirLock', () => {
  it('removes its own lock when the step ends (and when it throws), never a lock another process put in its place meanwhile', () => {
    const d = mkdtempSync(join(base, 'lock-'));
    const lock = join(d, STEP_LOCK);
    expect(withCaDirLock(d, 'test', () => existsSync(lock))).toBe(true);
    expect(existsSync(lock)).toBe(false);
    expect(() => withCaDirLock(d, 'test', () => { throw new Error('step failed'); })).toThrow('step failed');
    expect(existsSync(lock)).toBe(false);
    // Taken over while this step ran (judged stale by another process): the new holder's lock stays.
    const theirs = `${JSON.stringify({ step: 'rotate start', pid: 1, host: 'elsewhere', at: new Date().toISOString(), nonce: 'theirs' })}\n`;
    withCaDirLock(d, 'test', () => writeFileSync(lock, theirs));
    expect(readFileSync(lock, 'utf8')).toBe(theirs);
  });
});

describe('exposedKeyNotes', () => {
  it('is quiet about a Secret volume: files 0440 behind ..data symlinks (whose own mode is 0777), in a sticky directory', () => {
    const d = mkdtempSync(join(base, 'secret-volume-'));
    mkdirSync(join(d, '..2026_12_01'));
    symlinkSync('..2026_12_01', join(d, '..data'));
    for (const f of ['ca-key.pem', 'root-key.pem', 'ca-cert.pem']) {
      writeFileSync(join(d, '..2026_12_01', f), 'x', { mode: 0o440 });
      chmodSync(join(d, '..2026_12_01', f), 0o440);
      symlinkSync(join('..data', f), join(d, f));
    }
    chmodSync(d, 0o1777);
    expect(exposedKeyNotes(d)).toEqual([]);
    chmodSync(d, 0o700);
  });

  it('names a key all users may write, though not read (they could replace it)', () => {
    const d = mkdtempSync(join(base, 'writable-key-'));
    writeFileSync(join(d, 'ca-key.pem'), 'x');
    chmodSync(join(d, 'ca-key.pem'), 0o602);
    expect(exposedKeyNotes(d)).toEqual([`${join(d, 'ca-key.pem')}, a private key, is open to all users (mode 0602): chmod 600 it (meshcert writes its keys 0600)`]);
  });

  it('names a key open to all users (through a symlink too) and a directory all may write', () => {
    const d = mkdtempSync(join(base, 'exposed-'));
    writeFileSync(join(d, 'real-key.pem'), 'x');
    chmodSync(join(d, 'real-key.pem'), 0o644);
    symlinkSync('real-key.pem', join(d, 'ca-key.pem'));
    writeFileSync(join(d, 'root-key.pem'), 'x');
    chmodSync(join(d, 'root-key.pem'), 0o600);
    // Staged and archived sets hold keys too.
    for (const sub of ['next', 'archive/20261201T000000Z']) {
      mkdirSync(join(d, sub), { recursive: true });
      writeFileSync(join(d, sub, 'root-key.pem'), 'x');
      chmodSync(join(d, sub, 'root-key.pem'), 0o604);
    }
    chmodSync(d, 0o777);
    expect(exposedKeyNotes(d)).toEqual([
      `${d} is writable by all users (mode 0777): anyone on this machine can replace the CA's files; chmod o-w it (meshcert makes its CA directories 0700)`,
      `${join(d, 'ca-key.pem')}, a private key, is open to all users (mode 0644): chmod 600 it (meshcert writes its keys 0600)`,
      `${join(d, 'next', 'root-key.pem')}, a private key, is open to all users (mode 0604): chmod 600 it (meshcert writes its keys 0600)`,
      `${join(d, 'archive', '20261201T000000Z', 'root-key.pem')}, a private key, is open to all users (mode 0604): chmod 600 it (meshcert writes its keys 0600)`,
    ]);
    chmodSync(d, 0o700);
  });
});
