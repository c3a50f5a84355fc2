/**
 * Certificates in PEM (or DER) files.
 *
 * A `--files` argument is one of:
 * - a file: read whatever its name;
 * - a directory: every `*.pem`, `*.crt`, `*.cer` and `*.der` regular file below it, recursively.
 *   Symlinked directories are followed when they lead to a directory inside the argument's own (a
 *   kubelet-mounted Secret's keys are such links), each real directory once, so a link cycle
 *   cannot loop and a link to `/` cannot walk the filesystem; kubelet's `..<timestamp>` copies are
 *   skipped. A subdirectory that cannot be read is skipped, not fatal to the argument; so is
 *   anything that is not a regular file (a named pipe, a device, a socket): it is never opened;
 * - a simple glob whose wildcards are in the last path component only: `*` (any run of
 *   characters but `/`) and `?` (one character), e.g. `/etc/certs/*.pem`; the directory part is
 *   taken literally and not searched recursively. (Node 20 has no fs.glob; shells expand globs
 *   anyway, and `meshcert discover` takes several paths after one `--files`.)
 * A file a walk or a glob finds whose name is not UTF-8 is an error item naming it: meshcert names
 * places by path, as text, so it cannot read and record it under its own.
 *
 * Only regular files are read (a symlink is followed first): a named pipe or a device given by
 * name is an error item ("not a regular file") and is not opened. A file is read through one
 * descriptor and at most 10 MB + 1 byte, so a file that grows while it is read is still bounded.
 *
 * Each file is one item. Certificates are `CERTIFICATE` and `X509 CERTIFICATE` PEM blocks, and
 * the certificate leading a `TRUSTED CERTIFICATE` block (OpenSSL's trusted format, whose trust
 * settings after the certificate are ignored). A file without any `-----BEGIN` line is tried as
 * one DER certificate. A `PKCS7` block is reported as unsupported (an error: its certificates are
 * not read). A file whose PEM blocks are all something else (PRIVATE KEY, CERTIFICATE REQUEST...),
 * or a DER private key, is skipped, not an error, so a folder of key pairs scans cleanly; key
 * material is never put in an item, a message or the inventory. A file that is neither PEM nor a
 * DER certificate, or with a certificate block that does not parse (or no END line), is an error.
 * When some blocks of a file parse and others do not, the good ones are recorded and the file is
 * still reported as an error.
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { existsSync, readdirSync, realpathSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { readElement, TAG_SEQUENCE } from '../x509/der.js';
import { pemBlocks } from '../x509/pem.js';
import { accessProblem, FileReadError, MAX_CERT_FILE_BYTES, readProblem, readRegularFile } from '../fs/read-file.js';
import type { DiscoveredItem } from './types.js';

const EXTENSIONS = /\.(pem|crt|cer|der)$/i;
export const MAX_FILE_BYTES = MAX_CERT_FILE_BYTES;
const PEM_BEGIN = /-----BEGIN [A-Z0-9 #]+-----/g;
const PKCS7_LABELS = new Set(['PKCS7', 'PKCS #7 SIGNED DATA']);

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

/** A directory below a `--files` argument that could not be read: its files are not looked at this run. */
function unreadableDirectory(path: string, e: unknown): DiscoveredItem {
  return { kind: 'file', target: path, source: null, status: 'error', error: `cannot read directory: ${accessProblem(e)}` };
}

/** A file whose name is not UTF-8: places are named by path, as text, so it cannot be one. Said, not skipped. */
function notUtf8(dir: string, name: Buffer): DiscoveredItem {
  return { kind: 'file', target: join(dir, name.toString('utf8')), source: null, status: 'error', error: `its name is not valid UTF-8 (bytes ${name.toString('hex')}); meshcert names places by path: rename it` };
}

function walk(dir: string, out: string[], problems: DiscoveredItem[], seen: Set<string> = new Set(), root: string = realpathSync(dir)): void {
  // Each directory once, however many symlinks lead to it (and no loop through one).
  const real = realpathSync(dir);
  if (seen.has(real)) return;
  seen.add(real);
  // As bytes: a name that is not UTF-8 read as a string would be a path that does not exist.
  const entries = readdirSync(dir, { withFileTypes: true, encoding: 'buffer' })
    .map((e) => ({ e, name: utf8Name(e.name) }))
    .sort((a, b) => Buffer.compare(a.e.name, b.e.name));
  for (const { e, name } of entries) {
    if (name === null) {
      if (EXTENSIONS.test(e.name.toString('latin1')) || e.isDirectory()) problems.push(notUtf8(dir, e.name));
      continue;
    }
    // A kubelet-mounted Secret or ConfigMap keeps its files in a `..<timestamp>` directory behind
    // `..data` and per-key symlinks (a key at a nested path: a symlinked directory): read through
    // the symlinks, whose paths survive updates.
    if (name.startsWith('..')) continue;
    const p = join(dir, name);
    if (e.isDirectory() || (e.isSymbolicLink() && isDirectory(p) && isInside(p, root))) {
      try {
        walk(p, out, problems, seen, root);
      } catch (err) {
        // The rest of the tree still counts. Gone meanwhile: nothing to read. Unreadable
        // (permissions): an error, so the run says so and exits 1; its files' last snapshots
        // would otherwise stand unnoticed.
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') problems.push(unreadableDirectory(p, err));
      }
    } else if (EXTENSIONS.test(name) && (e.isFile() || (e.isSymbolicLink() && isFile(p)))) out.push(p);
  }
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/** A file name as text, or null when it is not UTF-8. */
function utf8Name(name: Buffer): string | null {
  try {
    return UTF8.decode(name);
  } catch {
    return null;
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

/** Expands one `--files` argument into file paths, or an error item; `skipped`: places in it that could not be read (a directory, a name not UTF-8). */
export function expandFileArg(arg: string): { files: string[]; error?: DiscoveredItem; skipped?: DiscoveredItem[] } {
  const abs = resolve(arg);
  const fail = (error: string): { files: string[]; error: DiscoveredItem } => ({
    files: [],
    error: { kind: 'file', target: abs, source: null, status: 'error', error },
  });
  if (!existsSync(abs) && hasWildcard(abs)) {
    const dir = dirname(abs);
    if (hasWildcard(dir)) return fail('wildcards are only supported in the last path component');
    let names: Buffer[];
    try {
      names = readdirSync(dir, { encoding: 'buffer' }).sort(Buffer.compare);
    } catch (e) {
      return fail(`cannot read directory ${dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    const re = globToRegExp(basename(abs));
    const files: string[] = [];
    const skipped: DiscoveredItem[] = [];
    for (const raw of names) {
      const name = utf8Name(raw);
      // Matched byte for byte (a pattern's non-ASCII letters cannot match such a name anyway).
      if (name === null) {
        if (re.test(raw.toString('latin1'))) skipped.push(notUtf8(dir, raw));
      } else if (re.test(name) && isFile(join(dir, name))) files.push(join(dir, name));
    }
    if (skipped.length > 0) return { files, skipped };
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
    const skipped: DiscoveredItem[] = [];
    try {
      walk(abs, files, skipped);
    } catch (e) {
      return fail(`cannot read directory: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    if (skipped.length > 0) return { files, skipped };
    return files.length === 0 ? fail('no *.pem, *.crt, *.cer or *.der file in this directory') : { files };
  }
  return { files: [abs] };
}

/**
 * The certificate a DER encoding starts with: its first SEQUENCE only (what follows is not read),
 * or, with `whole`, the encoding that is exactly one certificate and nothing after it.
 */
function leadingCertificate(der: Buffer, whole = false): X509Certificate {
  const el = readElement(der, 0);
  if (el.tag !== TAG_SEQUENCE) throw new Error('not a SEQUENCE');
  if (whole && el.end !== der.length) throw new Error('data after the certificate');
  return new X509Certificate(der.subarray(0, el.end));
}

/** The certificate of a `CERTIFICATE`, `X509 CERTIFICATE` or `TRUSTED CERTIFICATE` block; null for other labels. */
function blockCertificate(label: string, body: string): X509Certificate | null {
  if (label === 'CERTIFICATE' || label === 'X509 CERTIFICATE') return new X509Certificate(`-----BEGIN CERTIFICATE-----${body}-----END CERTIFICATE-----`);
  if (label !== 'TRUSTED CERTIFICATE') return null;
  // X509 || X509_CERT_AUX: the certificate, then OpenSSL's trust settings.
  if (!/^[A-Za-z0-9+/=\s]*$/.test(body)) throw new Error('not base64');
  return leadingCertificate(Buffer.from(body.replace(/\s+/g, ''), 'base64'));
}

/** A whole file that is exactly one DER certificate, or null. */
function derCertificate(buf: Buffer): X509Certificate | null {
  try {
    return leadingCertificate(buf, true);
  } catch {
    return null;
  }
}

/** Whether a file is a DER private key (PKCS#8, encrypted or not, SEC1 or PKCS#1); the key is not kept. */
function isDerPrivateKey(buf: Buffer): boolean {
  for (const type of ['pkcs8', 'sec1', 'pkcs1'] as const) {
    try {
      createPrivateKey({ key: buf, format: 'der', type });
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ERR_MISSING_PASSPHRASE') return true;
    }
  }
  return false;
}

export interface ReadFileOptions {
  /** Larger files are errors; default 10 MB. */
  maxBytes?: number;
}

/** Parses a file's certificates into one item (see the module comment). */
export function readPemFile(path: string, options: ReadFileOptions = {}): DiscoveredItem {
  const source = `discovered:file:${path}` as const;
  const fail = (error: string, certificates: X509Certificate[] = []): DiscoveredItem => ({ kind: 'file', target: path, source, status: 'error', error, certificates });
  let buf: Buffer;
  try {
    buf = readRegularFile(path, options.maxBytes ?? MAX_FILE_BYTES);
  } catch (e) {
    if (e instanceof FileReadError) return fail(e.code === 'ETOOLARGE' ? `${e.message}: not a certificate file` : e.message);
    return fail(`cannot read: ${readProblem(e)}`);
  }
  const text = buf.toString('latin1');
  const certs: X509Certificate[] = [];
  const problems: string[] = [];
  const otherLabels = new Set<string>();
  let blocks = 0;
  let certBlocks = 0;
  let pkcs7 = 0;
  /** The numbers of the certificate blocks that do not parse. */
  const unparsed: number[] = [];
  for (const block of pemBlocks(text)) {
    blocks++;
    const label = block.label;
    if (PKCS7_LABELS.has(label)) {
      pkcs7++;
      continue;
    }
    let cert: X509Certificate | null;
    try {
      cert = blockCertificate(label, block.body);
    } catch {
      certBlocks++;
      unparsed.push(certBlocks);
      continue;
    }
    if (cert === null) {
      otherLabels.add(label);
      continue;
    }
    certBlocks++;
    certs.push(cert);
  }
  if (unparsed.length > 0) problems.push(unparsedText(unparsed));
  const begins = (text.match(PEM_BEGIN) ?? []).length;
  if (begins > blocks) problems.push(`${begins - blocks} PEM block(s) without a matching END line`);
  if (blocks === 0 && begins === 0) {
    const der = derCertificate(buf);
    if (der !== null) return { kind: 'file', target: path, source, status: 'ok', certificates: [der] };
    if (isDerPrivateKey(buf)) return { kind: 'file', target: path, source, status: 'skipped', reason: 'no certificate (a DER private key)' };
    return fail('not a PEM file (no -----BEGIN line) nor a DER certificate');
  }
  const errors: string[] = [];
  if (problems.length > 0) errors.push(`broken PEM: ${problems.join('; ')}`);
  if (pkcs7 > 0) errors.push(`unsupported (PKCS#7): ${pkcs7} PKCS7 block(s) not read (\`openssl pkcs7 -print_certs\` converts them to PEM certificates)`);
  if (certs.length === 0 && errors.length === 0) {
    return { kind: 'file', target: path, source, status: 'skipped', reason: `no certificate (only ${[...otherLabels].join(', ')})` };
  }
  if (errors.length > 0) {
    const error = `${errors.join('; ')}${certs.length > 0 ? ` (${certs.length} good certificate(s) recorded anyway)` : ''}`;
    // Every block ended: the file was whole, not caught mid-write, so its good certificates are what it serves.
    if (certs.length > 0 && begins === blocks) return { kind: 'file', target: path, source, status: 'error', error, certificates: certs, readInFull: true };
    return fail(error, certs);
  }
  return { kind: 'file', target: path, source, status: 'ok', certificates: certs };
}

/** Which certificate blocks do not parse, the first few by number (a file of thousands must not make a message of megabytes). */
function unparsedText(numbers: readonly number[]): string {
  const shown = numbers.slice(0, 5).map((n) => `#${n}`).join(', ');
  if (numbers.length === 1) return `certificate ${shown} does not parse`;
  return `${numbers.length} certificates do not parse (${shown}${numbers.length > 5 ? ', ...' : ''})`;
}

/** Every file item of the `--files` arguments, in argument order (files deduplicated). */
export function discoverFiles(args: readonly string[]): DiscoveredItem[] {
  const items: DiscoveredItem[] = [];
  const seen = new Set<string>();
  for (const arg of args) {
    const { files, error, skipped } = expandFileArg(arg);
    if (error) items.push(error);
    if (skipped) items.push(...skipped);
    for (const f of files) {
      if (seen.has(f)) continue;
      seen.add(f);
      items.push(readPemFile(f));
    }
  }
  return items;
}
