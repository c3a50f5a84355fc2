import type { X509Certificate } from 'node:crypto';
import type { RecordSource } from '../inventory/types.js';

/**
 * One thing a discovery source looked at (a file, an endpoint, a Secret). `ok`: it held
 * certificates; `skipped`: it legitimately held none (a private-key PEM in a scanned folder, a
 * Secret whose tls.crt is still empty); `error`: it should have held certificates and did not
 * (unreadable, not PEM, broken PEM, unreachable endpoint...); an error item may still carry the
 * certificates that did parse (a bundle with one broken block), and they are recorded. With
 * `readInFull`, the place was read whole and only some of its blocks did not parse (no block cut
 * short, as a file caught mid-write has): its good certificates are what it serves, and its snapshot.
 *
 * `held`: the SHA-256 fingerprints (lowercase hex) of every certificate at the place, when that
 * differs from `certificates` (a Secret key repeating certificates an earlier key of the Secret
 * already gave, which are recorded once). The place's snapshot is `held`, else `certificates`; a
 * skipped item with a source is a place that holds none.
 *
 * `alsoEmpty`: other places this look found empty, reported nowhere else (a Secret's `ca.crt` or
 * `root-cert.pem` that is absent or empty now): each gets an empty snapshot, whatever the item's status.
 */
export type DiscoveredItem = (
  | { kind: ItemKind; target: string; source: RecordSource; status: 'ok'; certificates: X509Certificate[]; warning?: string; held?: string[] }
  | { kind: ItemKind; target: string; source: RecordSource | null; status: 'skipped'; reason: string; held?: string[] }
  | { kind: ItemKind; target: string; source: RecordSource | null; status: 'error'; error: string; certificates?: X509Certificate[]; readInFull?: true; held?: string[] }
) & { alsoEmpty?: Array<`discovered:${string}`> };

export type ItemKind = 'file' | 'endpoint' | 'k8s-secret' | 'k8s';
