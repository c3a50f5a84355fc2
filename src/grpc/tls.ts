import type { SecureContextOptions } from 'node:tls';

export interface ServingIdentity {
  /** PEM chain: serving certificate first, then intermediates. */
  readonly certChainPem: string;
  readonly keyPem: string;
  /** Anchors client certificates may chain to (meshcert's roots and intermediates), for optional mTLS. */
  readonly clientCaPem?: string;
}

/**
 * The TLS context of the gRPC listener. Built again on every change (renewal, file change, CA
 * reload) and swapped in with setSecureContext: new handshakes use it, live connections keep theirs.
 */
export function secureContextOptions(i: ServingIdentity): SecureContextOptions {
  return { cert: i.certChainPem, key: i.keyPem, ...(i.clientCaPem ? { ca: i.clientCaPem } : {}), minVersion: 'TLSv1.2' };
}
