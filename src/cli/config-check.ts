import { loadConfigFile } from '../config/load.js';
import { assertServable } from '../config/servable.js';
import { formatDuration } from '../config/duration.js';
import { ClientCertRevocations, farAheadWarning } from '../auth/revocations.js';
import type { MeshcertConfig } from '../config/schema.js';
import { parse, UsageError } from './args.js';
import { openInventory, resolveInventoryTarget } from './certs.js';

export async function configCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub !== 'check') throw new UsageError('usage: meshcert config check FILE');
  const { positionals } = parse(rest, {}, true);
  if (positionals.length !== 1) throw new UsageError('usage: meshcert config check FILE');
  const { config } = loadConfigFile(positionals[0]!);
  // Valid for `serve`, not just for the schema: what check accepts, the next start accepts.
  assertServable(config, positionals[0]!);
  console.log(`${positionals[0]}: valid`);
  console.log(`  listen ${config.server.listen}, trust domain ${config.trustDomain}, CA ${config.ca.dir}${config.ca.autoInit ? ' (autoInit)' : ''}`);
  // The default rule as resolved (issuance.* or policy.default.lifetime, whichever the file sets).
  const def = config.policy.default;
  console.log(
    def.deny !== undefined
      ? `  default rule: deny (${def.deny}); ${config.policy.rules.length} rule(s)`
      : `  lifetime default ${formatDuration(def.lifetime.default)}, max ${formatDuration(def.lifetime.max)} (${def.lifetime.aboveMax} above max); ${config.policy.rules.length} rule(s)`,
  );
  console.log(`  clusters: ${config.auth.clusters.map((c) => c.name).join(', ') || '(none)'}${config.dev.tokenIssuer ? ' + DEV token issuer' : ''}`);
  const revocations = new ClientCertRevocations(config.auth.revokedClientCertificates);
  if (revocations.size > 0) {
    console.log(`  revoked client certificates: ${revocations.size} entr${revocations.size === 1 ? 'y' : 'ies'}${config.auth.clientCertificates ? '' : ' (auth.clientCertificates is off: no client certificate is accepted anyway)'}`);
  }
  // Valid, but most likely a typo in the year: said here, before a reload puts it in force.
  for (const r of revocations.farAhead(Date.now())) {
    console.error(`meshcert: warning: ${farAheadWarning(r)}`);
  }
  for (const w of await unrevokedSerials(positionals[0]!, config, revocations)) console.error(`meshcert: warning: ${w}`);
  return 0;
}

/**
 * A serial in auth.revokedClientCertificates that is mistyped, or whose certificate the entry's
 * selectors or time do not match, refuses nothing, silently: each is looked up in the inventory
 * the file configures, and what would not be refused is said (warnings; the file stays valid).
 */
async function unrevokedSerials(file: string, config: MeshcertConfig, revocations: ClientCertRevocations): Promise<string[]> {
  const listed = config.auth.revokedClientCertificates.flatMap((e, i) => (e.serials ?? []).map((serial, j) => ({ at: `auth.revokedClientCertificates[${i}].serials[${j}] ${serial}`, serial })));
  if (listed.length === 0) return [];
  let store: Awaited<ReturnType<typeof openInventory>>;
  try {
    store = await openInventory(resolveInventoryTarget({ config: file }), true);
  } catch (e) {
    return [`cannot look the revoked serials up in the inventory: ${(e as Error).message}`];
  }
  try {
    const warnings: string[] = [];
    for (const { at, serial } of listed) {
      const rec = await store.get(serial);
      if (!rec) warnings.push(`${at} is no certificate in the inventory: a mistyped serial refuses nothing`);
      else if (rec.spiffeId === null) warnings.push(`${at} is a certificate with no SPIFFE ID, which is no client certificate meshcert accepts anyway`);
      else if (!revocations.find(rec.spiffeId, rec.notBefore.getTime(), rec.serial)) {
        warnings.push(`${at} is a certificate for ${rec.spiffeId} that no entry refuses (its selectors or time do not match it)`);
      }
    }
    return warnings;
  } finally {
    await store.close();
  }
}
