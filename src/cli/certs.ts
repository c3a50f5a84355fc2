import { existsSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { recordToJson, parseSourceFilter } from '../admin/certificates-api.js';
import { formatDuration } from '../config/duration.js';
import { caDirectories, loadConfigFile, parseConfig } from '../config/load.js';
import type { MeshcertConfig } from '../config/schema.js';
import { ConfigError } from '../errors/ca-error.js';
import {
  caExpiryReport,
  discoveredExpiring,
  readCaCertificates,
  staleIdentities,
  type CaCertificateInput,
  type CaExpiryEntry,
  type ExpiringDiscovered,
  type StaleIdentity,
} from '../inventory/expiry.js';
import { openStore, type OpenStoreOptions } from '../inventory/open.js';
import type { CertificateFilter, CertificateRecord, InventoryStore } from '../inventory/types.js';
import { parse, spanFlag, UsageError } from './args.js';
import { forTerminal } from './terminal-text.js';
import { certificateKey, NOT_A_CERTIFICATE_KEY } from '../x509/serial-hex.js';

export const CERTS_USAGE = `meshcert certs list [--namespace N] [--sa S] [--issuer I] [--requester R] [--source issued|discovered|discovered:...] [--expiring-within 7d] [--exclude-expired] [--limit 1000] [--json]
  Lists inventoried certificates (ordered by notAfter, so expired ones first), up to --limit
  (default 1000); --exclude-expired leaves out those already expired (renewed ones are kept for
  inventory.retention). --requester:
  who asked (a caller's SPIFFE ID, a node agent's for the workloads it asked for, or
  meshcert:server.tls / meshcert:istio.istiodTls for the certificates meshcert issued itself).
meshcert certs show SERIAL|FINGERPRINT [--json]
  Shows one certificate (exit 1 when not found).
meshcert certs expiring [--within DURATION] [--json]
  CA certificates of every configured issuer (roots, intermediates, serving certificate file)
  within their warning window or expired, workload identities that stopped renewing, and the
  certificates that places found by \`meshcert discover\` served when last seen that expire soon
  or have expired. The windows are the server's (monitoring.caWarnBefore, 30d;
  monitoring.staleWithin, 24h; monitoring.discoveredWarnBefore, 30d) unless --within sets all
  three.
  Store: --config FILE (its inventory and ca sections, as serve reads them) or
  --db sqlite:PATH|postgres://URL; default sqlite .meshcert/inventory.db. Given both, --db is
  the store and the config still names the CA directories and the windows.`;

/** Where the inventory and the CA files are, from --config / --db. */
export interface InventoryTarget {
  store: OpenStoreOptions;
  /** Human-readable store location (no credentials). */
  label: string;
  /** The default CA's directory (ca.dir). */
  caDir: string;
  /** Every CA to check for expiry, as the server's monitor does: the default first, then issuers[]. */
  issuers: ReadonlyArray<{ name: string; dir: string }>;
  /** server.tls.certFile, when configured. */
  servingCertFile: string | null;
  /** The CA directories come from --config or MESHCERT_CA_DIR / MESHCERT_DATA_DIR, not the built-in default. */
  caConfigured: boolean;
  /** monitoring.caWarnBefore, staleWithin and discoveredWarnBefore, seconds: `certs expiring` windows unless --within. */
  caWarnBefore: number;
  staleWithin: number;
  discoveredWarnBefore: number;
}

function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    // libpq-style URLs may carry the password as a parameter too.
    if (u.searchParams.has('password')) u.searchParams.set('password', '***');
    return u.toString();
  } catch {
    return 'postgres://(unparseable URL)';
  }
}

/** Parses `--db`: `sqlite:PATH` or `postgres://...` / `postgresql://...`. */
export function parseDbArg(db: string): { store: OpenStoreOptions; label: string } {
  if (db.startsWith('sqlite:')) {
    const path = db.slice('sqlite:'.length);
    if (path === '') throw new UsageError('--db sqlite: needs a path, e.g. sqlite:.meshcert/inventory.db');
    return { store: { kind: 'sqlite', path: resolve(path) }, label: `sqlite:${resolve(path)}` };
  }
  if (db.startsWith('postgres://') || db.startsWith('postgresql://')) return { store: { kind: 'postgres', url: db }, label: redact(db) };
  throw new UsageError('--db must be sqlite:PATH or postgres://USER@HOST:PORT/DB');
}

/**
 * Resolves the store and CA directory from the same configuration `meshcert serve` uses: the
 * --config file (validated; relative paths against its folder) or, without one, the defaults,
 * both with the MESHCERT_* environment overrides (MESHCERT_DATA_DIR, MESHCERT_CA_DIR,
 * MESHCERT_INVENTORY_URL). So: `inventory.store` sqlite (`inventory.path`, default
 * `<dataDir>/inventory.db`) or postgres (`inventory.url`), `ca.dir` (default `<dataDir>/ca`),
 * `server.tls.certFile`. `--db` overrides the configured store. A broken config file throws
 * ConfigError (exit 1).
 */
export function resolveInventoryTarget(o: { config?: string; db?: string }, env: NodeJS.ProcessEnv = process.env): InventoryTarget {
  const config = o.config !== undefined ? loadConfigFile(o.config, env, { streams: true }).config : parseConfig({}, env, 'defaults', process.cwd());
  return inventoryTargetOf(config, { configured: o.config !== undefined, ...(o.db !== undefined ? { db: o.db } : {}) }, env);
}

/**
 * resolveInventoryTarget for a config already loaded (`configured`: from a file, not the
 * defaults): `config check` reads its file once, which may be a pipe that a second read finds empty.
 */
export function inventoryTargetOf(config: MeshcertConfig, o: { configured: boolean; db?: string }, env: NodeJS.ProcessEnv = process.env): InventoryTarget {
  const issuers = caDirectories(config);
  const common = {
    caDir: issuers[0]!.dir,
    issuers,
    servingCertFile: config.server.tls.certFile ?? null,
    caConfigured: o.configured || env.MESHCERT_CA_DIR !== undefined || env.MESHCERT_DATA_DIR !== undefined,
    caWarnBefore: config.monitoring.caWarnBefore,
    staleWithin: config.monitoring.staleWithin,
    discoveredWarnBefore: config.monitoring.discoveredWarnBefore,
  };
  if (o.db !== undefined) return { ...parseDbArg(o.db), ...common };
  const inv = config.inventory;
  const kind = inv.store ?? (inv.url !== undefined ? 'postgres' : 'sqlite');
  if (kind === 'postgres' && inv.url !== undefined) return { store: { kind: 'postgres', url: inv.url }, label: redact(inv.url), ...common };
  if (kind === 'sqlite') {
    const path = inv.path ?? resolve(config.dataDir, 'inventory.db');
    return { store: { kind: 'sqlite', path }, label: `sqlite:${path}`, ...common };
  }
  throw new ConfigError(kind === 'none' ? 'the inventory is disabled in this configuration (inventory.store: none); pass --db to read one' : 'inventory.store postgres needs inventory.url');
}

/** Thrown when the store cannot be opened; the CLI reports it and exits 1. */
export class StoreOpenError extends Error {
  override readonly name = 'StoreOpenError';
}

/**
 * Opens the target's store. With `mustExist`, a missing SQLite file is an error instead of
 * creating an empty inventory (read-only commands).
 */
export async function openInventory(target: InventoryTarget, mustExist: boolean): Promise<InventoryStore> {
  if (mustExist && target.store.kind === 'sqlite' && !existsSync(target.store.path)) {
    throw new StoreOpenError(`no inventory at ${target.label} (pass --config or --db)`);
  }
  // SQLite says only "disk I/O error" of a directory.
  if (target.store.kind === 'sqlite' && existsSync(target.store.path) && !statSync(target.store.path).isFile()) {
    throw new StoreOpenError(`cannot open the inventory ${target.label}: not a regular file (give the database file's path, e.g. sqlite:.meshcert/inventory.db)`);
  }
  try {
    // Read-only commands change nothing: no file created, no migration (a SELECT-only role or a file it cannot write will do).
    const readOnly = mustExist;
    return await openStore(target.store.kind === 'postgres' ? { ...target.store, poolSize: 2, connectionTimeoutMs: 10_000, readOnly } : { ...target.store, readOnly });
  } catch (e) {
    const msg = (e as Error).message;
    // SQLite reads a WAL database through its -wal/-shm files: with the server stopped, a reader
    // that cannot write the directory cannot create them.
    const hint = mustExist && target.store.kind === 'sqlite' && /readonly|unable to open/i.test(msg) ? ' (read it as the server\'s user, or while the server runs)' : '';
    throw new StoreOpenError(`cannot open the inventory ${target.label}: ${msg}${hint}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Output.

const DAY_MS = 86_400_000;

export function daysLeft(notAfter: Date, now: Date): string {
  const ms = notAfter.getTime() - now.getTime();
  return ms < 0 ? 'expired' : (Math.floor((ms / DAY_MS) * 10) / 10).toFixed(1);
}

function identityOf(r: CertificateRecord): string {
  return r.spiffeId ?? r.subject ?? r.dnsNames?.[0] ?? '-';
}

/** A place as discover records it: a file by its absolute path (a relative one is from the current directory). */
export function absolutePlace(place: string): string {
  return place.startsWith('file:') && place.length > 'file:'.length ? `file:${resolve(place.slice('file:'.length))}` : place;
}

/** Left-aligned columns separated by two spaces; every cell made safe for a terminal. */
export function table(header: string[], cells: string[][]): string {
  const rows = cells.map((r) => r.map(forTerminal));
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

/** `issued`, but for the certificates meshcert issued its own parts (its serving certificate, istiod's), which say which. */
function sourceOf(r: CertificateRecord): string {
  return r.source === 'issued' && r.requester?.startsWith('meshcert:') ? `issued (${r.requester})` : r.source;
}

function recordRows(records: readonly CertificateRecord[], now: Date): string[][] {
  return records.map((r) => [r.serial, identityOf(r), r.issuer, r.notAfter.toISOString(), daysLeft(r.notAfter, now), sourceOf(r)]);
}

const RECORD_HEADER = ['SERIAL', 'IDENTITY', 'ISSUER', 'NOT AFTER', 'DAYS LEFT', 'SOURCE'];

function printRecord(r: CertificateRecord, now: Date): void {
  const rows: [string, string][] = [
    ['serial', r.serial],
    ['fingerprint', r.fingerprint],
    ['spiffe id', r.spiffeId ?? '-'],
    ['namespace', r.namespace ?? '-'],
    ['service account', r.serviceAccount ?? '-'],
    ['cluster', r.cluster ?? '-'],
    ['subject', r.subject ?? '-'],
    ['dns names', r.dnsNames && r.dnsNames.length > 0 ? r.dnsNames.join(', ') : '-'],
    ['issuer', r.issuer],
    ['key', `${r.keyAlgorithm} ${r.keySize}`],
    ['not before', r.notBefore.toISOString()],
    ['not after', `${r.notAfter.toISOString()} (${daysLeft(r.notAfter, now) === 'expired' ? 'expired' : `${daysLeft(r.notAfter, now)} days left`})`],
    ['issued at', r.issuedAt.toISOString()],
    ['requester', r.requester ?? '-'],
    ['policy rule', r.policyRule ?? '-'],
    ['source', r.source],
  ];
  for (const [k, v] of rows) console.log(`${k.padEnd(16)}${forTerminal(v)}`);
}

// ---------------------------------------------------------------------------------------------
// CA certificates.

/** The CA certificates of the target (see {@link readCaCertificates}). */
export function loadCaCertificates(target: Pick<InventoryTarget, 'issuers' | 'servingCertFile'>): { certs: CaCertificateInput[]; problems: string[] } {
  const certs: CaCertificateInput[] = [];
  const problems: string[] = [];
  for (const [i, issuer] of target.issuers.entries()) {
    // The serving certificate is the default CA's (as in the server's monitor).
    const r = readCaCertificates(issuer.dir, issuer.name, i === 0 ? target.servingCertFile : null);
    certs.push(...r.certs);
    problems.push(...r.problems);
  }
  return { certs, problems };
}

function caEntryJson(e: CaExpiryEntry): Record<string, unknown> {
  return { ...e, notAfter: e.notAfter.toISOString() };
}

function staleJson(s: StaleIdentity): Record<string, unknown> {
  return { ...s, latest: recordToJson(s.latest) };
}

function discoveredJson(d: ExpiringDiscovered): Record<string, unknown> {
  return { ...d, record: recordToJson(d.record), seenAt: d.seenAt.toISOString() };
}

// ---------------------------------------------------------------------------------------------
// Commands.

const STORE_OPTIONS = {
  config: { type: 'string' },
  db: { type: 'string' },
  json: { type: 'boolean', default: false },
} as const;


async function withStore<T>(v: { config?: string; db?: string }, fn: (store: InventoryStore, target: InventoryTarget) => Promise<T>): Promise<T> {
  const target = resolveInventoryTarget(v);
  const store = await openInventory(target, true);
  try {
    return await fn(store, target);
  } catch (e) {
    // Ours (and a bug's TypeError or RangeError) as they are: only what the store threw is its failure.
    if (e instanceof UsageError || e instanceof ConfigError || e instanceof StoreOpenError || e instanceof TypeError || e instanceof RangeError) throw e;
    // A store that opened and then failed a query (a connection lost, a corrupt file): said as a
    // store failure naming it, as one that cannot be opened is, not as an unexpected error.
    throw new StoreOpenError(`the inventory ${target.label} failed: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  } finally {
    await store.close().catch(() => undefined);
  }
}

async function listCommand(argv: string[], now: Date): Promise<number> {
  const { values: v } = parse(argv, {
    ...STORE_OPTIONS,
    namespace: { type: 'string' },
    sa: { type: 'string' },
    issuer: { type: 'string' },
    requester: { type: 'string' },
    source: { type: 'string' },
    'expiring-within': { type: 'string' },
    'exclude-expired': { type: 'boolean', default: false },
    limit: { type: 'string', default: '1000' },
  });
  if (!/^\d+$/.test(v.limit!) || Number(v.limit) < 1) throw new UsageError('--limit must be a positive integer');
  const limit = Number(v.limit);
  const filter: CertificateFilter = { now };
  if (v.namespace !== undefined) filter.namespace = v.namespace;
  if (v.sa !== undefined) filter.serviceAccount = v.sa;
  if (v.issuer !== undefined) filter.issuer = v.issuer;
  if (v.requester !== undefined) filter.requester = v.requester;
  if (v.source !== undefined) {
    const s = parseSourceFilter(v.source);
    if (s === null) throw new UsageError('--source must be issued, discovered or discovered:<name>');
    filter.source = s.startsWith('discovered:') ? `discovered:${absolutePlace(s.slice('discovered:'.length))}` : s;
  }
  if (v['expiring-within'] !== undefined) {
    // At most a century (spanFlag): always a date the stores hold.
    filter.expiringBefore = new Date(now.getTime() + spanFlag(v['expiring-within'], '--expiring-within') * 1000);
  }
  if (v['exclude-expired']) filter.includeExpired = false;

  return withStore(v, async (store) => {
    const records: CertificateRecord[] = [];
    let cursor: string | null = null;
    let more = false;
    do {
      const page = await store.list({ ...filter, limit: Math.min(1000, limit - records.length), ...(cursor !== null ? { cursor } : {}) });
      records.push(...page.items);
      cursor = page.nextCursor;
      if (records.length >= limit) {
        more = cursor !== null;
        break;
      }
    } while (cursor !== null);
    if (v.json) console.log(JSON.stringify(records.map(recordToJson), null, 2));
    else if (records.length === 0) console.log('no certificates match');
    else console.log(table(RECORD_HEADER, recordRows(records, now)));
    // Listed by expiry, expired first: a full page of them can hide every live one.
    const hint = filter.includeExpired === false || !records.some((r) => r.notAfter.getTime() < now.getTime()) ? 'raise --limit' : 'raise --limit, or --exclude-expired to leave out those already expired';
    if (more) console.error(`meshcert: showing the first ${limit} certificates; more match (${hint})`);
    return 0;
  });
}

async function showCommand(argv: string[], now: Date): Promise<number> {
  const { values: v, positionals } = parse(argv, STORE_OPTIONS, true);
  if (positionals.length !== 1) throw new UsageError('usage: meshcert certs show SERIAL|FINGERPRINT [--json]');
  const key = positionals[0]!;
  // Said before any store is opened, as the API's 400: a typo, not a certificate that is not there.
  const norm = certificateKey(key);
  if (norm === null) throw new UsageError(`certs show ${JSON.stringify(key.slice(0, 200))}: ${NOT_A_CERTIFICATE_KEY}`);
  return withStore(v, async (store) => {
    const r = await store.get(norm);
    if (r === null) {
      if (v.json) console.log(JSON.stringify({ error: 'not found', key }));
      console.error(`meshcert: no certificate with serial or fingerprint ${key}`);
      return 1;
    }
    if (v.json) console.log(JSON.stringify(recordToJson(r), null, 2));
    else printRecord(r, now);
    return 0;
  });
}

async function expiringCommand(argv: string[], now: Date): Promise<number> {
  const { values: v } = parse(argv, { ...STORE_OPTIONS, within: { type: 'string' } });
  const within = v.within === undefined ? undefined : spanFlag(v.within, '--within');
  return withStore(v, async (store, target) => {
    // The server's windows (monitoring.caWarnBefore, staleWithin, discoveredWarnBefore) unless --within sets all three.
    const caWindow = within ?? target.caWarnBefore;
    const staleWindow = within ?? target.staleWithin;
    const discoveredWindow = within ?? target.discoveredWarnBefore;
    // `--db` alone names no CA: the built-in default directory is checked only when it exists.
    const unchecked = !target.caConfigured && !existsSync(target.caDir);
    const { certs, problems } = unchecked ? { certs: [], problems: [] } : loadCaCertificates(target);
    const ca = caExpiryReport(certs, now, caWindow).filter((e) => e.state !== 'ok');
    const stale = await staleIdentities(store, now, staleWindow);
    const discovered = await discoveredExpiring(store, now, discoveredWindow);
    for (const p of problems) console.error(`meshcert: ${p}`);
    // A check that could not read a CA directory is incomplete: a script running it must notice.
    const code = problems.length > 0 ? 1 : 0;
    if (v.json) {
      // caComplete: every CA file could be read (with problems, `ca` holds only what could).
      console.log(JSON.stringify({ ca: ca.map(caEntryJson), caChecked: !unchecked, caComplete: !unchecked && problems.length === 0, staleIdentities: stale.map(staleJson), discovered: discovered.map(discoveredJson), problems }, null, 2));
      return code;
    }
    if (unchecked) {
      console.log(`CA certificates: not checked (no CA at ${target.caDir}; pass --config to check the configured CAs)`);
    } else if (ca.length === 0 && problems.length > 0) {
      // Not "none expiring": what could not be read may be what expires.
      console.log(`CA certificates: none expiring within ${formatDuration(caWindow)} among the ${certs.length} that could be read; not checked: what the ${problems.length} problem(s) above name`);
    } else if (ca.length === 0) {
      console.log(`CA certificates: none expiring within ${formatDuration(caWindow)} (${certs.length} checked)`);
    } else {
      console.log('CA certificates:');
      console.log(
        table(
          ['ROLE', 'SUBJECT', 'ISSUER', 'NOT AFTER', 'DAYS LEFT', 'STATE'],
          ca.map((e) => [e.role, e.subject, e.issuer, e.notAfter.toISOString(), daysLeft(e.notAfter, now), e.state]),
        ),
      );
    }
    console.log('');
    if (stale.length === 0) {
      console.log(`Stale identities: none (no latest certificate expiring within ${formatDuration(staleWindow)} with less than a third of its lifetime left)`);
    } else {
      console.log('Stale identities (latest certificate not renewed):');
      console.log(
        table(
          ['SPIFFE ID', 'SERIAL', 'ISSUER', 'NOT AFTER', 'DAYS LEFT', 'LIFETIME LEFT'],
          stale.map((s) => [s.spiffeId, s.latest.serial, s.latest.issuer, s.latest.notAfter.toISOString(), daysLeft(s.latest.notAfter, now), `${Math.round(s.remainingFraction * 100)}%`]),
        ),
      );
    }
    console.log('');
    if (discovered.length === 0) {
      console.log(`Discovered certificates: none expired or expiring within ${formatDuration(discoveredWindow)} where last seen`);
    } else {
      console.log('Discovered certificates expired or expiring where last seen (renew them there, then run discover again; discover --forget PLACE drops a place that is gone):');
      console.log(
        table(
          ['WHERE', 'SUBJECT', 'SERIAL', 'ISSUER', 'NOT AFTER', 'DAYS LEFT', 'LAST SEEN'],
          discovered.map((d) => [d.where, d.record.subject ?? identityOf(d.record), d.record.serial, d.record.issuer, d.record.notAfter.toISOString(), daysLeft(d.record.notAfter, now), d.seenAt.toISOString()]),
        ),
      );
    }
    return code;
  });
}

/**
 * `meshcert certs list|show|expiring`. Exit codes: 0 ok, 1 not found (show), a CA directory that
 * could not be read (expiring), or the store cannot be opened, 2 usage (thrown as UsageError, as the other commands do).
 */
export async function certsCommand(argv: string[], options: { now?: () => Date } = {}): Promise<number> {
  const [sub, ...rest] = argv;
  const now = options.now?.() ?? new Date();
  try {
    switch (sub) {
      case 'list':
        return await listCommand(rest, now);
      case 'show':
        return await showCommand(rest, now);
      case 'expiring':
        return await expiringCommand(rest, now);
      default:
        throw new UsageError(`unknown certs subcommand ${sub ?? '(none)'}\n${CERTS_USAGE}`);
    }
  } catch (e) {
    if (e instanceof StoreOpenError) {
      console.error(`meshcert: ${e.message}`);
      return 1;
    }
    throw e;
  }
}
