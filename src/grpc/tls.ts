import { ServerCredentials } from '@grpc/grpc-js';
import type { SecureContextOptions } from 'node:tls';

export interface ServingIdentity {
  /** PEM chain: serving certificate first, then intermediates. */
  readonly certChainPem: string;
  readonly keyPem: string;
  /** Anchors client certificates may chain to (meshcert's roots and intermediates), for optional mTLS. */
  readonly clientCaPem?: string;
}

/**
 * Server credentials whose certificate can be swapped at run time (renewal, file change):
 * grpc-js applies `updateSecureContextOptions` to live listeners via setSecureContext, so new
 * handshakes use the new certificate and existing connections are untouched.
 * Client certificates are requested but optional (workloads use tokens; VMs and istiod may use mTLS).
 * The handshake checks them against `clientCaPem` (meshcert's roots and intermediates): grpc-js
 * shows a peer certificate to the service only when the handshake verified it. The
 * client-certificate authenticator then checks identity, validity and usage again.
 */
export class ReloadableServerCredentials extends ServerCredentials {
  constructor(identity: ServingIdentity) {
    super(
      { requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.2', ALPNProtocols: ['h2'] },
      ReloadableServerCredentials.contextOptions(identity),
    );
  }

  update(identity: ServingIdentity): void {
    this.updateSecureContextOptions(ReloadableServerCredentials.contextOptions(identity));
  }

  override _equals(other: ServerCredentials): boolean {
    return other === this;
  }

  private static contextOptions(i: ServingIdentity): SecureContextOptions {
    return { cert: i.certChainPem, key: i.keyPem, ...(i.clientCaPem ? { ca: i.clientCaPem } : {}), minVersion: 'TLSv1.2' };
  }
}
