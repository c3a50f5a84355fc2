/**
 * Which settings a hot reload applies, and which changes wait for a restart. A reload swaps the
 * CAs, the policy and auth.revokedClientCertificates and retunes the expiry monitor; everything
 * else (listeners, limits, the rest of authentication, the inventory, Istio integration) is built
 * once at start, so an operator who edits it must be told that the running server has not taken it.
 */
import { isDeepStrictEqual } from 'node:util';
import type { MeshcertConfig } from './schema.js';

/**
 * The config a reload puts in force: `next`'s CAs, policy, lifetimes, monitoring and revoked
 * client certificates, and every other setting as the server started. This is what a replacement
 * worker process starts with, so that a setting the running server did not take (an authenticator
 * removed, say) is not in force in some processes only.
 */
export function reloadedConfig(started: MeshcertConfig, next: MeshcertConfig): MeshcertConfig {
  return {
    ...started,
    ca: next.ca,
    issuers: next.issuers,
    policy: next.policy,
    issuance: { ...next.issuance, backdate: started.issuance.backdate },
    monitoring: next.monitoring,
    // Revoking a client certificate must not wait for a restart; the rest of auth builds once.
    auth: { ...started.auth, revokedClientCertificates: next.auth.revokedClientCertificates },
  };
}

/** The settings that differ between the config the server started with and `next` but that only a restart applies, sorted. */
export function restartOnlyChanges(started: MeshcertConfig, next: MeshcertConfig): string[] {
  const inForce = reloadedConfig(started, next);
  const a = inForce as unknown as Record<string, unknown>;
  const b = next as unknown as Record<string, unknown>;
  const out: string[] = [];
  for (const key of new Set([...Object.keys(a), ...Object.keys(b)])) {
    if (key !== 'issuance' && !isDeepStrictEqual(a[key], b[key])) out.push(key);
  }
  if (inForce.issuance.backdate !== next.issuance.backdate) out.push('issuance.backdate');
  return out.sort();
}
