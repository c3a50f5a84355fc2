import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileReadError, readProblem, readRegularFile, readTextFile } from '../../../src/fs/read-file.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'meshcert-read-file-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const problem = (path: string, max = 1024): string => {
  try {
    readRegularFile(path, max);
  } catch (e) {
    return readProblem(e);
  }
  return 'read';
};

describe('readRegularFile', () => {
  it('reads a regular file whole up to the bound, through a symlink too, and refuses one a byte over', () => {
    const path = join(dir, 'exact.txt');
    writeFileSync(path, 'x'.repeat(1024));
    expect(readRegularFile(path, 1024)).toHaveLength(1024);
    symlinkSync(path, join(dir, 'link.txt'));
    expect(readTextFile(join(dir, 'link.txt'), 1024)).toBe('x'.repeat(1024));
    writeFileSync(join(dir, 'over.txt'), 'x'.repeat(1025));
    expect(problem(join(dir, 'over.txt'))).toBe('larger than 1024 bytes');
    // More than the initial buffer: read in steps, whatever the size stat reported.
    writeFileSync(join(dir, 'big.txt'), 'y'.repeat(300_000));
    expect(readRegularFile(join(dir, 'big.txt'), 300_000)).toHaveLength(300_000);
  });

  it('refuses, at once and without reading, a named pipe no one writes to, a device that never ends, and a directory', () => {
    const fifo = join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const started = Date.now();
    expect(problem(fifo)).toBe('not a regular file (a named pipe)');
    expect(problem('/dev/zero')).toBe('not a regular file (a character device)');
    mkdirSync(join(dir, 'sub'));
    expect(problem(join(dir, 'sub'))).toBe('not a regular file (a directory)');
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(() => readRegularFile(fifo, 1)).toThrow(FileReadError);
  });

  it('with streams, reads a pipe someone writes to and a character device, within the bound; a directory still not', async () => {
    const fifo = join(dir, 'fed');
    execFileSync('mkfifo', [fifo]);
    // The writer, as a shell's <(...) is: another process.
    const writer = spawn('sh', ['-c', `printf 'token-from-a-pipe' > '${fifo}'`]);
    expect(readTextFile(fifo, 1024, { streams: true })).toBe('token-from-a-pipe');
    await new Promise((resolve) => writer.once('exit', resolve));
    expect(() => readRegularFile('/dev/zero', 1000, { streams: true })).toThrow('larger than 1000 bytes');
    expect(readRegularFile('/dev/null', 10, { streams: true })).toHaveLength(0);
    expect(() => readRegularFile(dir, 10, { streams: true })).toThrow('not a regular file (a directory)');
  });

  it('passes errno errors through, and says their code', () => {
    expect(problem(join(dir, 'missing'))).toBe('ENOENT');
    expect(() => readRegularFile(join(dir, 'missing'), 1)).toThrow(expect.objectContaining({ code: 'ENOENT' }));
  });
});
