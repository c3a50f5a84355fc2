/**
 * Certificates in PEM files.
 *
 * A `--files` argument is one of:
 * - a file: read whatever its name;
 * - a directory: every `*.pem` and `*.crt` file below it, recursively. Symlinked directories are
 *   followed when they lead to a directory inside the argument's own (a kubelet-mounted Secret's
 *   keys are such links), each real directory once, so a link cycle cannot loop and a link to `/`
 *   cannot walk the filesystem; kubelet's `..<timestamp>` copies are skipped. A subdirectory that
 *   cannot be read is skipped, not fatal to the argument;
 * - a simple glob whose wildcards are in the last path component only: `*` (any run of
 *   characters but `/`) and `?` (one character), e.g. `/etc/certs/*.pem`; the directory part is
 *   taken literally and not searched recursively. (Node 20 has no fs.glob; shells expand globs
 *   anyway, and `meshcert discover` takes several paths after one `--files`.)
 *
 * Each file is one item. A file whose PEM blocks are all something else (PRIVATE KEY,
 * CERTIFICATE REQUEST...) is skipped, not an error, so a folder of key pairs scans cleanly; a
 * file without any PEM block, or with a CERTIFICATE block that does not parse (or no END line),
 * is an error. When some blocks of a file parse and others do not, the good ones are recorded and
 * the file is still reported as an error.
 */
import { X509Certificate } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import type { DiscoveredItem } from './types.js';

const EXTENSIONS = /\.(pem|crt)$/i;
const MAX_FILE_BYTES = 10 * 1024 * 1024;
const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;

/** A regex for a basename glob (`*`, `?`; everything else literal). */
export function globToRegExp(glob: string): RegExp {
  let re = '';
  for (const ch of glob) {
    if (ch === '*') re += '[^/]*';
    else if (ch === '?') re += '[^/]';
    else re += ch.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

function hasWildcard(s: string): boolean {
  return s.includes('*') || s.includes('?');
}

function walk(dir: string, out: string[], seen: Set<string> = new Set(), root: string = realpathSync(dir)): void {
  // Each directory once, however many symlinks lead to it (and no loop through one).
  const real = realpathSync(dir);
  if (seen.has(real)) return;
  seen.add(real);
  const entries = readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const e of entries) {
    // A kubelet-mounted Secret or ConfigMap keeps its files in a `..<timestamp>` directory behind
    // `..data` and per-key symlinks (a key at a nested path: a symlinked directory): read through
    // the symlinks, whose paths survive updates.
    if (e.name.startsWith('..')) continue;
    const p = join(dir, e.name);
    if (e.isDirectory() || (e.isSymbolicLink() && isDirectory(p) && isInside(p, root))) {
      try {
        walk(p, out, seen, root);
      } catch {
        // Unreadable (permissions) or gone meanwhile: the rest of the tree still counts.
      }
    } else if (EXTENSIONS.test(e.name) && (e.isFile() || (e.isSymbolicLink() && isFile(p)))) out.push(p);
  }
}

/** Whether `p` resolves to `root` or below it. */
function isInside(p: string, root: string): boolean {
  try {
    const real = realpathSync(p);
    return real === root || real.startsWith(`${root}/`);
  } catch {
    return false;
  }
}

function isDirectory(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

/** Expands one `--files` argument into file paths, or an error item. */
export function expandFileArg(arg: string): { files: string[]; error?: DiscoveredItem } {
  const abs = resolve(arg);
  const fail = (error: string): { files: string[]; error: DiscoveredItem } => ({
    files: [],
    error: { kind: 'file', target: abs, source: null, status: 'error', error },
  });
  if (!existsSync(abs) && hasWildcard(abs)) {
    const dir = dirname(abs);
    if (hasWildcard(dir)) return fail('wildcards are only supported in the last path component');
    let names: string[];
    try {
      names = readdirSync(dir).sort();
    } catch (e) {
      return fail(`cannot read directory ${dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    const re = globToRegExp(basename(abs));
    const files = names.filter((n) => re.test(n)).map((n) => join(dir, n)).filter(isFile);
    return files.length === 0 ? fail('no file matches') : { files };
  }
  let st;
  try {
    st = statSync(abs);
  } catch (e) {
    return fail((e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file or directory' : `cannot access: ${(e as Error).message}`);
  }
  if (st.isDirectory()) {
    const files: string[] = [];
    try {
      walk(abs, files);
    } catch (e) {
      return fail(`cannot read directory: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    return files.length === 0 ? fail('no *.pem or *.crt file in this directory') : { files };
  }
  return { files: [abs] };
}

/** Parses a file's PEM certificates into one item (see the module comment). */
export function readPemFile(path: string): DiscoveredItem {
  const source = `discovered:file:${path}` as const;
  const fail = (error: string, certificates: X509Certificate[] = []): DiscoveredItem => ({ kind: 'file', target: path, source, status: 'error', error, certificates });
  let buf: Buffer;
  try {
    if (statSync(path).size > MAX_FILE_BYTES) return fail(`larger than ${MAX_FILE_BYTES} bytes: not a certificate file`);
    buf = readFileSync(path);
  } catch (e) {
    return fail(`cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const text = buf.toString('latin1');
  const certs: X509Certificate[] = [];
  const problems: string[] = [];
  const otherLabels = new Set<string>();
  let blocks = 0;
  let certBlocks = 0;
  for (const m of text.matchAll(PEM_BLOCK)) {
    blocks++;
    const label = m[1]!;
    if (label !== 'CERTIFICATE') {
      otherLabels.add(label);
      continue;
    }
    certBlocks++;
    try {
      certs.push(new X509Certificate(m[0]));
    } catch {
      problems.push(`certificate #${certBlocks} does not parse`);
    }
  }
  const begins = (text.match(/-----BEGIN [A-Z0-9 ]+-----/g) ?? []).length;
  if (begins > blocks) problems.push(`${begins - blocks} PEM block(s) without a matching END line`);
  if (blocks === 0 && begins === 0) return fail('not a PEM file (no -----BEGIN line)');
  if (certs.length === 0 && problems.length === 0) {
    return { kind: 'file', target: path, source, status: 'skipped', reason: `no certificate (only ${[...otherLabels].join(', ')})` };
  }
  if (problems.length > 0) {
    return fail(`broken PEM: ${problems.join('; ')}${certs.length > 0 ? ` (${certs.length} good certificate(s) recorded anyway)` : ''}`, certs);
  }
  return { kind: 'file', target: path, source, status: 'ok', certificates: certs };
}

/** Every file item of the `--files` arguments, in argument order (files deduplicated). */
export function discoverFiles(args: readonly string[]): DiscoveredItem[] {
  const items: DiscoveredItem[] = [];
  const seen = new Set<string>();
  for (const arg of args) {
    const { files, error } = expandFileArg(arg);
    if (error) items.push(error);
    for (const f of files) {
      if (seen.has(f)) continue;
      seen.add(f);
      items.push(readPemFile(f));
    }
  }
  return items;
}
