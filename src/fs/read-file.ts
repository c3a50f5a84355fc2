/**
 * Reading the files a user names (configs, CA files, CSRs, tokens, certificates) so that a wrong
 * path cannot hang or exhaust the process: only regular files, never more than a bound.
 */
import { closeSync, constants, fstatSync, openSync, readSync, statSync, type Stats } from 'node:fs';

/** Bounds no real file of its kind comes near. */
export const MAX_CONFIG_BYTES = 4 * 1024 * 1024;
/** PEM certificates, keys, CSRs and JSON key sets. */
export const MAX_PEM_BYTES = 1024 * 1024;
/** A bearer token. */
export const MAX_TOKEN_BYTES = 64 * 1024;
/** Certificate files discovery reads (a CA bundle of thousands). */
export const MAX_CERT_FILE_BYTES = 10 * 1024 * 1024;

/**
 * A file that is not a regular one, or too large. Its message says why without the path (the
 * caller names the file); `code` as an errno error's, for callers that switch on it.
 */
export class FileReadError extends Error {
  override readonly name = 'FileReadError';
  readonly code: 'ENOTREGULAR' | 'ETOOLARGE';

  constructor(code: FileReadError['code'], message: string) {
    super(message);
    this.code = code;
  }
}

/** Why `st` is not a regular file ("not a regular file (a named pipe)"), as an error. */
export function notRegular(st: Stats): FileReadError {
  const what = st.isFIFO()
    ? 'a named pipe'
    : st.isCharacterDevice()
      ? 'a character device'
      : st.isBlockDevice()
        ? 'a block device'
        : st.isSocket()
          ? 'a socket'
          : st.isDirectory()
            ? 'a directory'
            : 'a special file';
  return new FileReadError('ENOTREGULAR', `not a regular file (${what})`);
}

export interface ReadOptions {
  /**
   * Also read a pipe or a character device, as a command line's input may be (`--token-file
   * <(kubectl create token ...)`, `/dev/stdin`): blocking, and within the same bound, so
   * `/dev/zero` ends at once. For what a user types, never for what a server loads.
   */
  readonly streams?: boolean;
}

const isStream = (st: Stats): boolean => st.isFIFO() || st.isCharacterDevice();

/**
 * A regular file's bytes, read through one descriptor and never more than `maxBytes` + 1 (the
 * extra byte tells "too large" apart from "exactly at the limit", whatever `st_size` says).
 * Anything but a regular file (after following symlinks) is refused before it is opened; the
 * descriptor is checked again (the path may have been replaced meanwhile), and opened
 * non-blocking so that even then a named pipe cannot block the process (with `streams`, a pipe
 * or character device is read instead). Errno errors (ENOENT, EACCES...) are thrown as they are.
 */
export function readRegularFile(path: string, maxBytes: number, o: ReadOptions = {}): Buffer {
  const st = statSync(path);
  const stream = o.streams === true && isStream(st);
  if (!st.isFile() && !stream) throw notRegular(st);
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOCTTY | (stream ? 0 : constants.O_NONBLOCK));
  try {
    const fst = fstatSync(fd);
    if (!fst.isFile() && !(stream && isStream(fst))) throw notRegular(fst);
    const cap = maxBytes + 1;
    let buf = Buffer.allocUnsafe(Math.min(cap, Math.max(fst.size + 1, 64 * 1024)));
    let total = 0;
    for (;;) {
      if (total === buf.length) {
        if (total >= cap) break;
        const bigger = Buffer.allocUnsafe(Math.min(cap, buf.length * 2));
        buf.copy(bigger, 0, 0, total);
        buf = bigger;
      }
      const n = readSync(fd, buf, total, buf.length - total, null);
      if (n === 0) break;
      total += n;
    }
    if (total > maxBytes) throw new FileReadError('ETOOLARGE', `larger than ${maxBytes} bytes`);
    return buf.subarray(0, total);
  } finally {
    closeSync(fd);
  }
}

/** readRegularFile as UTF-8 text. */
export function readTextFile(path: string, maxBytes: number, o: ReadOptions = {}): string {
  return readRegularFile(path, maxBytes, o).toString('utf8');
}

/** Why a read failed, for a message that already names the file: the errno code, or the refusal. */
export function readProblem(e: unknown): string {
  if (e instanceof FileReadError) return e.message;
  return (e as NodeJS.ErrnoException)?.code ?? (e instanceof Error ? e.message : 'error');
}

/**
 * Whether anything is at `path`: false only when nothing is (ENOENT, or a parent that is not a
 * directory). Any other failure, a directory this process may not search (EACCES) say, is thrown:
 * existsSync answers false then, and a CA directory meshcert may not look into would be taken for
 * an empty one ("run ca init") instead of one it lacks the permission for.
 */
export function pathPresent(path: string): boolean {
  return statIfPresent(path) !== undefined;
}

/** What is at `path`, or undefined when nothing is; throws as pathPresent does. */
export function statIfPresent(path: string): Stats | undefined {
  try {
    return statSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw e;
  }
}

/** readProblem, and for a permission refused, who this process runs as (the usual cause: files made by another user). */
export function accessProblem(e: unknown): string {
  const problem = readProblem(e);
  const code = (e as NodeJS.ErrnoException)?.code;
  if ((code === 'EACCES' || code === 'EPERM') && typeof process.getuid === 'function') return `${problem} (permission denied to uid ${process.getuid()}, gid ${process.getgid?.() ?? '?'})`;
  return problem;
}
