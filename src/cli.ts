#!/usr/bin/env node
import { caCommand, CA_USAGE } from './cli/ca.js';
import { UsageError } from './cli/args.js';
import { certsCommand, CERTS_USAGE } from './cli/certs.js';
import { configCommand } from './cli/config-check.js';
import { discoverCommand, DISCOVER_USAGE } from './cli/discover.js';
import { policyCommand, POLICY_USAGE } from './cli/policy.js';
import { requestCommand, REQUEST_USAGE } from './cli/request.js';
import { serveCommand, SERVE_USAGE } from './cli/serve.js';
import { ConfigError } from './errors/ca-error.js';
import { isWorker } from './runtime/cluster.js';
import { workerMain } from './runtime/worker-main.js';

// grpc-js sets the TLS ServerName to an IP literal when dialling one (DEP0123); harmless, and noise for CLI users.
process.noDeprecation = true;

const USAGE = `meshcert: a certificate authority for service meshes (an Istio external CA)

${SERVE_USAGE}
${CA_USAGE}
meshcert config check FILE       validate a config file
${REQUEST_USAGE}
${CERTS_USAGE}
${DISCOVER_USAGE}
${POLICY_USAGE}`;

const COMMANDS: Record<string, (argv: string[]) => Promise<number>> = {
  // Internal: how `serve` starts its forked workers (see src/runtime/cluster.ts).
  worker: async () => {
    if (!isWorker()) throw new UsageError('"worker" is started by "meshcert serve", not by hand');
    return workerMain();
  },
  serve: serveCommand,
  ca: caCommand,
  config: configCommand,
  request: requestCommand,
  certs: certsCommand,
  discover: discoverCommand,
  policy: policyCommand,
};

/** Exit codes: 0 ok, 1 failure (refused, invalid config), 2 usage error. */
async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === 'help' || cmd === '--help' || cmd === '-h') {
    console.log(USAGE);
    return cmd ? 0 : 2;
  }
  const run = COMMANDS[cmd];
  if (!run) throw new UsageError(`unknown command "${cmd}"; run "meshcert help"`);
  return run(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof UsageError) {
      console.error(`meshcert: ${err.message}`);
      process.exitCode = 2;
    } else if (err instanceof ConfigError) {
      console.error(`meshcert: ${err.message}`);
      process.exitCode = 1;
    } else {
      // Unexpected: say what, not where (no stack traces for users); MESHCERT_DEBUG=1 shows it.
      console.error(`meshcert: unexpected error: ${err instanceof Error ? err.message : String(err)}`);
      if (process.env.MESHCERT_DEBUG) console.error(err);
      process.exitCode = 1;
    }
  },
);
