import { loadConfigFile } from '../config/load.js';
import { formatDuration } from '../config/duration.js';
import { parse, UsageError } from './args.js';
export async function configCommand(argv) {
    const [sub, ...rest] = argv;
    if (sub !== 'check')
        throw new UsageError('usage: meshcert config check FILE');
    const { positionals } = parse(rest, {}, true);
    if (positionals.length !== 1)
        throw new UsageError('usage: meshcert config check FILE');
    const { config } = loadConfigFile(positionals[0]);
    console.log(`${positionals[0]}: valid`);
    console.log(`  listen ${config.server.listen}, trust domain ${config.trustDomain}, CA ${config.ca.dir}${config.ca.autoInit ? ' (autoInit)' : ''}`);
    console.log(`  lifetime default ${formatDuration(config.issuance.defaultTtl)}, max ${formatDuration(config.issuance.maxTtl)} (${config.issuance.onTtlAboveMax} above max)`);
    console.log(`  clusters: ${config.auth.clusters.map((c) => c.name).join(', ') || '(none)'}${config.dev.tokenIssuer ? ' + DEV token issuer' : ''}`);
    return 0;
}
//# sourceMappingURL=config-check.js.map