/**
 * auth.revokedClientCertificates: client certificates meshcert no longer accepts as credentials.
 *
 * Why: a certificate meshcert issued can be renewed over mTLS by whoever holds it, renewal after
 * renewal, with no token and no node check. After a key leak, or once a node that held workloads'
 * certificates is distrusted, the operator needs a way to end that chain without turning client
 * certificates off for everyone. An entry refuses every certificate whose notBefore is before its
 * `issuedBefore`, or whose serial it lists (one leaked key), or both when it sets both, and whose
 * SPIFFE ID matches each selector it sets (globs, as policy's `match`); the holder must
 * authenticate with a token again. Entries are compiled once per load or reload.
 *
 * This is not revocation for the mesh: peers keep trusting such a certificate until it expires
 * (meshcert publishes no CRL; short lifetimes are the mesh's revocation).
 */
import { PatternSet } from '../match/glob.js';
import { parseSpiffeId, parseWorkloadSpiffeId } from '../x509/spiffe-id.js';

/** One auth.revokedClientCertificates entry as the config schema validated it. */
export interface RevocationConfig {
  /** RFC 3339 with a zone. An entry has this, `serials`, or both. */
  readonly issuedBefore?: string | undefined;
  /** As serialHex writes them. */
  readonly serials?: readonly string[] | undefined;
  readonly trustDomains?: readonly string[] | undefined;
  readonly namespaces?: readonly string[] | undefined;
  readonly serviceAccounts?: readonly string[] | undefined;
}

/** Why a certificate is refused: the entry (its index in the config), and its time or the serial it lists. */
export interface Revocation {
  readonly index: number;
  readonly issuedBefore?: Date;
  readonly serial?: string;
}

interface Entry {
  readonly index: number;
  /** issuedBefore, in ms. */
  readonly before?: number;
  readonly serials?: ReadonlySet<string>;
  readonly trustDomains?: PatternSet;
  readonly namespaces?: PatternSet;
  readonly serviceAccounts?: PatternSet;
}

const FAR_AHEAD_MS = 86_400_000;

/** What `serve` (at each load) and `config check` say of an entry more than a day ahead. */
export function farAheadWarning(r: Revocation & { issuedBefore: Date }): string {
  return `auth.revokedClientCertificates[${r.index}].issuedBefore ${r.issuedBefore.toISOString()} is more than a day ahead: client certificates issued until then are refused as credentials too`;
}

export class ClientCertRevocations {
  static readonly none = new ClientCertRevocations([]);
  private readonly entries: readonly Entry[];

  constructor(config: readonly RevocationConfig[]) {
    this.entries = config.map((c, index) => {
      // The schema checks these; this catches a caller that skipped it.
      if (c.issuedBefore === undefined && c.serials === undefined) throw new Error(`auth.revokedClientCertificates[${index}] has neither issuedBefore nor serials`);
      const before = c.issuedBefore === undefined ? undefined : Date.parse(c.issuedBefore);
      if (before !== undefined && !Number.isFinite(before)) throw new Error(`auth.revokedClientCertificates[${index}].issuedBefore is not a date: ${JSON.stringify(c.issuedBefore)}`);
      return {
        index,
        ...(before !== undefined ? { before } : {}),
        ...(c.serials ? { serials: new Set(c.serials) } : {}),
        ...(c.trustDomains ? { trustDomains: new PatternSet(c.trustDomains) } : {}),
        ...(c.namespaces ? { namespaces: new PatternSet(c.namespaces) } : {}),
        ...(c.serviceAccounts ? { serviceAccounts: new PatternSet(c.serviceAccounts) } : {}),
      };
    });
  }

  get size(): number {
    return this.entries.length;
  }

  /**
   * Entries more than a day ahead of `now`. A cutoff a little ahead covers the time until the
   * reload; a day or more is most likely a typo in the year, which would refuse the renewals of
   * every certificate issued until then: `serve` and `config check` warn about these.
   */
  farAhead(now: number): Array<Revocation & { issuedBefore: Date }> {
    return this.entries.flatMap((e) => (e.before !== undefined && e.before > now + FAR_AHEAD_MS ? [{ index: e.index, issuedBefore: new Date(e.before) }] : []));
  }

  /**
   * The first entry that refuses a certificate for `spiffeId` with this notBefore (ms) and serial
   * (as serialHex writes it), or undefined. A namespace or service-account selector matches only
   * Istio workload IDs (spiffe://TD/ns/NS/sa/SA): an ID of another shape has neither.
   */
  find(spiffeId: string, notBefore: number, serial: string): Revocation | undefined {
    if (this.entries.length === 0) return undefined;
    let trustDomain: string;
    try {
      trustDomain = parseSpiffeId(spiffeId).trustDomain;
    } catch {
      return undefined; // the authenticator refuses such an ID before asking
    }
    const workload = parseWorkloadSpiffeId(spiffeId);
    for (const e of this.entries) {
      if (e.before !== undefined && !(notBefore < e.before)) continue;
      if (e.serials && !e.serials.has(serial)) continue;
      if (e.trustDomains && !e.trustDomains.test(trustDomain)) continue;
      if (e.namespaces && !(workload && e.namespaces.test(workload.namespace))) continue;
      if (e.serviceAccounts && !(workload && e.serviceAccounts.test(workload.serviceAccount))) continue;
      return { index: e.index, ...(e.before !== undefined ? { issuedBefore: new Date(e.before) } : {}), ...(e.serials ? { serial } : {}) };
    }
    return undefined;
  }
}
