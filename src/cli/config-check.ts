import { loadConfigFile } from '../config/load.js';
import { assertServable } from '../config/servable.js';
import { formatDuration } from '../config/duration.js';
import { parse, UsageError } from './args.js';

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
  return 0;
}
