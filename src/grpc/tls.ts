import { constants } from 'node:crypto';
import { createSecureContext, type SecureContextOptions } from 'node:tls';

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
 *
 * No session tickets: a resumed session keeps only the client's leaf certificate, not the
 * intermediates it sent, so a client certificate from an intermediate the listener does not hold
 * (another cluster's, under a shared root) would fail authentication on every resumed connection.
 * A CA's clients connect once per renewal; a full handshake costs them nothing that matters.
 */
export function secureContextOptions(i: ServingIdentity): SecureContextOptions {
  return {
    cert: i.certChainPem,
    key: i.keyPem,
    ...(i.clientCaPem ? { ca: i.clientCaPem } : {}),
    minVersion: 'TLSv1.2',
    ciphers: TLS12_CIPHERS,
    secureOptions: constants.SSL_OP_NO_TICKET,
  };
}

/**
 * Throws what the listener would throw for this identity (a key that does not match, a pair
 * OpenSSL's security level refuses), without touching the listener: so that a reload can refuse
 * one before it swaps anything in.
 */
export function checkServingIdentity(i: ServingIdentity): void {
  createSecureContext(secureContextOptions(i));
}

/**
 * TLS 1.2 suites: ECDHE with AEAD only. Node's defaults also offer CBC suites (some with SHA-1),
 * which HTTP/2 forbids (RFC 9113 §9.2.2) and Go's and rustls' clients never pick. TLS 1.3's suites
 * are not set here (OpenSSL's defaults, all AEAD).
 */
export const TLS12_CIPHERS = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');
