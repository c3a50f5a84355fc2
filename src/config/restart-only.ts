/**
 * Which settings a hot reload applies, and which changes wait for a restart. A reload swaps the
 * CAs and the policy and retunes the expiry monitor; everything else (listeners, limits,
 * authentication, the inventory, Istio integration) is built once at start, so an operator who
 * edits it must be told that the running server has not taken it.
 */
import { isDeepStrictEqual } from 'node:util';
import type { MeshcertConfig } from './schema.js';

/** Top-level sections a reload applies in full (issuance's lifetimes are part of the policy). */
const RELOADED: ReadonlySet<string> = new Set(['ca', 'issuers', 'policy', 'issuance', 'monitoring']);

/** The settings that differ between the config the server started with and `next` but that only a restart applies, sorted. */
export function restartOnlyChanges(started: MeshcertConfig, next: MeshcertConfig): string[] {
  const out: string[] = [];
  const a = started as unknown as Record<string, unknown>;
  const b = next as unknown as Record<string, unknown>;
  for (const key of new Set([...Object.keys(a), ...Object.keys(b)])) {
    if (!RELOADED.has(key) && !isDeepStrictEqual(a[key], b[key])) out.push(key);
  }
  // Set on the Authority at start, unlike the lifetimes beside it.
  if (started.issuance.backdate !== next.issuance.backdate) out.push('issuance.backdate');
  return out.sort();
}
