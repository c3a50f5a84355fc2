/**
 * Whether this process could write where `serve` writes at start (the SQLite inventory, a CA
 * ca.autoInit creates), asked without writing anything: `config check` must not pass a file that
 * `serve` then stops on.
 */
import { accessSync, constants, type Stats } from 'node:fs';
import { dirname } from 'node:path';
import { accessProblem, notRegular, statIfPresent } from './read-file.js';

/**
 * Why this process could not create or write `path`, or null. A `file` (a database, with the
 * journal files beside it) needs its directory writable too; a missing one, the nearest directory
 * that exists above it (everything below is created). A `directory` is written into.
 */
export function writeProblem(path: string, kind: 'file' | 'directory'): string | null {
  let st: Stats | undefined;
  try {
    st = statIfPresent(path);
  } catch (e) {
    return accessProblem(e);
  }
  // Absent, or a file where a parent directory should be, which creatableIn names.
  if (st === undefined) return creatableIn(dirname(path));
  if (kind === 'file' && !st.isFile()) return notRegular(st).message;
  if (kind === 'directory' && !st.isDirectory()) return 'not a directory';
  try {
    accessSync(path, kind === 'file' ? constants.R_OK | constants.W_OK : constants.R_OK | constants.W_OK | constants.X_OK);
  } catch (e) {
    return `not writable: ${accessProblem(e)}`;
  }
  return kind === 'file' ? creatableIn(dirname(path)) : null;
}

/** Why nothing could be created in `dir` (made first, with its missing parents, if need be), or null. */
function creatableIn(dir: string): string | null {
  for (;;) {
    let st: Stats | undefined;
    try {
      st = statIfPresent(dir);
    } catch (e) {
      return `cannot create it in ${dir}: ${accessProblem(e)}`;
    }
    if (st === undefined) {
      const parent = dirname(dir);
      // Only at "/" (missing: never on a real system) is there no parent to try.
      if (parent === dir) return `cannot create it: ${dir} does not exist`;
      dir = parent;
      continue;
    }
    if (!st.isDirectory()) return `cannot create it: ${dir} is not a directory`;
    try {
      accessSync(dir, constants.W_OK | constants.X_OK);
      return null;
    } catch (e) {
      return `cannot create it in ${dir}: ${accessProblem(e)}`;
    }
  }
}
