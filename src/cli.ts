#!/usr/bin/env node
import { UsageError } from './cli/args.js';
import { ConfigError } from './errors/ca-error.js';
import { catchStopSignals } from './runtime/signals.js';

// grpc-js sets the TLS ServerName to an IP literal when dialling one (DEP0123); harmless, and noise for CLI users.
process.noDeprecation = true;

type Command = (argv: string[]) => Promise<number>;

/**
 * Commands load their modules on demand: a serving process should not carry the Kubernetes
 * client, the certificate builder or the discovery code it never uses (tens of MB each).
 */
const COMMANDS: Record<string, () => Promise<Command>> = {
  serve: async () => (await import('./cli/serve.js')).serveCommand,
  ca: async () => (await import('./cli/ca.js')).caCommand,
  config: async () => (await import('./cli/config-check.js')).configCommand,
  request: async () => (await import('./cli/request.js')).requestCommand,
  certs: async () => (await import('./cli/certs.js')).certsCommand,
  discover: async () => (await import('./cli/discover.js')).discoverCommand,
  policy: async () => (await import('./cli/policy.js')).policyCommand,
  // Internal: how `serve` starts its forked workers (see src/runtime/cluster.ts).
  worker: async () => {
    const [{ isWorker }, { workerMain }] = await Promise.all([import('./runtime/cluster.js'), import('./runtime/worker-main.js')]);
    return async () => {
      if (!isWorker()) throw new UsageError('"worker" is started by "meshcert serve", not by hand');
      return workerMain();
    };
  },
};

async function usage(): Promise<string> {
  const [serve, ca, request, certs, discover, policy] = await Promise.all([
    import('./cli/serve.js'),
    import('./cli/ca.js'),
    import('./cli/request.js'),
    import('./cli/certs.js'),
    import('./cli/discover.js'),
    import('./cli/policy.js'),
  ]);
  return `meshcert: a certificate authority for service meshes (an Istio external CA)

${serve.SERVE_USAGE}
${ca.CA_USAGE}
meshcert config check [--no-files] FILE   validate a config file and the files it names
${request.REQUEST_USAGE}
${certs.CERTS_USAGE}
${discover.DISCOVER_USAGE}
${policy.POLICY_USAGE}`;
}

/** Each command's own help, for `meshcert COMMAND --help`. */
const COMMAND_USAGE: Record<string, () => Promise<string>> = {
  serve: async () => (await import('./cli/serve.js')).SERVE_USAGE,
  ca: async () => (await import('./cli/ca.js')).CA_USAGE,
  config: async () => 'meshcert config check [--no-files] FILE   validate a config file as serve would, reading the CA directories, serving certificate and jwksFiles it names (--no-files: the file alone)',
  request: async () => (await import('./cli/request.js')).REQUEST_USAGE,
  certs: async () => (await import('./cli/certs.js')).CERTS_USAGE,
  discover: async () => (await import('./cli/discover.js')).DISCOVER_USAGE,
  policy: async () => (await import('./cli/policy.js')).POLICY_USAGE,
};

/**
 * A reader that stops early (`meshcert certs list | head`) closes the pipe: console.log then fails
 * with EPIPE, which would end the command with Node's stack trace. Ended quietly instead, with the
 * status a Unix tool killed by SIGPIPE has (141): the output was cut, so its outcome is unknown.
 * Not for `serve` (and its workers): a server whose log pipe closed drains as on any shutdown.
 */
function endQuietlyOnClosedPipe(): void {
  // Any other failure to write the output (EIO, ENOSPC) is a failure of the command.
  const onError = (err: NodeJS.ErrnoException): never => process.exit(err.code === 'EPIPE' ? 141 : failureExit);
  process.stdout.on('error', onError);
  process.stderr.on('error', onError);
}

/** What a file-system error that names its path says to the user, or undefined for any other error. */
const FS_PROBLEMS: Readonly<Record<string, string>> = {
  ENOENT: 'no such file or directory',
  ENOTDIR: 'a part of the path is a file, not a directory',
  EISDIR: 'is a directory',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EROFS: 'read-only file system',
  ENOSPC: 'no space left on the device',
  EEXIST: 'already exists',
  ENAMETOOLONG: 'the name is too long',
  ELOOP: 'too many symbolic links',
};
function fileSystemProblem(err: unknown): string | undefined {
  const e = err as NodeJS.ErrnoException | undefined;
  const what = e?.code !== undefined ? FS_PROBLEMS[e.code] : undefined;
  if (what === undefined || typeof e?.path !== 'string') return undefined;
  return `cannot ${e.syscall ?? 'use'} ${e.path}: ${what} (${e.code})`;
}

/**
 * The exit code of a failure that is not a usage error: 1, except for `policy explain`, whose 1
 * means denied (a CI step asserting a denial must not pass on a crash).
 */
let failureExit = 1;

/** Exit codes: 0 ok, 1 failure (refused, invalid config), 2 usage error; 3 policy explain's failure; 141 closed pipe. */
async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === 'policy') failureExit = 3;
  if (cmd !== 'serve' && cmd !== 'worker') endQuietlyOnClosedPipe();
  if (!cmd || cmd === 'help' || cmd === '--help' || cmd === '-h') {
    // `meshcert help COMMAND` is that command's help.
    const asked = cmd === 'help' && rest[0] !== undefined && rest[0] !== '--help' && rest[0] !== '-h' ? rest[0] : undefined;
    const one = asked !== undefined && Object.hasOwn(COMMAND_USAGE, asked) ? COMMAND_USAGE[asked] : undefined;
    if (asked !== undefined && !one) throw new UsageError(`unknown command "${asked}"; run "meshcert help"`);
    // A bare `meshcert` is a usage error: its usage goes where errors go.
    (cmd ? console.log : console.error)(one ? await one() : await usage());
    return cmd ? 0 : 2;
  }
  // A serving process reloads on SIGHUP, whose default action ends the process: from the first
  // moment, not once its modules have loaded (serve reads its config after, so none is lost).
  // A worker takes SIGINT and SIGTERM from its primary's word only (a Ctrl-C or a kill of the
  // process group reaches it too), also while it is still loading: one killed then would fail the
  // primary's start instead of letting it stop cleanly.
  if (cmd === 'worker') for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => {});
  // And a stop asked for before serve has its handlers: kept, and honoured once they are there.
  // Before SIGHUP's: a test waits for that one to know the CLI has started.
  if (cmd === 'serve') catchStopSignals();
  if (cmd === 'serve' || cmd === 'worker') process.on('SIGHUP', () => {});
  const load = Object.hasOwn(COMMANDS, cmd) ? COMMANDS[cmd] : undefined;
  if (!load) throw new UsageError(`unknown command "${cmd}"; run "meshcert help"`);
  // Before the command parses its options (none of them takes --help); a value after `--` is not asked for help.
  const options = rest.indexOf('--') === -1 ? rest : rest.slice(0, rest.indexOf('--'));
  const help = Object.hasOwn(COMMAND_USAGE, cmd) ? COMMAND_USAGE[cmd] : undefined;
  if (help && (options.includes('--help') || options.includes('-h'))) {
    console.log(await help());
    return 0;
  }
  return (await load())(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    endSoon();
  },
  (err: unknown) => {
    if (err instanceof UsageError) {
      console.error(`meshcert: ${err.message}`);
      process.exitCode = 2;
    } else if (err instanceof ConfigError) {
      console.error(`meshcert: ${err.message}`);
      process.exitCode = failureExit;
    } else if (fileSystemProblem(err) !== undefined) {
      // A path the command was given that cannot be used (not a directory, no permission, full disk): the user's to fix.
      console.error(`meshcert: ${fileSystemProblem(err)}`);
      if (process.env.MESHCERT_DEBUG) console.error(err);
      process.exitCode = failureExit;
    } else {
      // Unexpected: say what, not where (no stack traces for users); MESHCERT_DEBUG=1 shows it.
      console.error(`meshcert: unexpected error: ${err instanceof Error ? err.message : String(err)}`);
      if (process.env.MESHCERT_DEBUG) console.error(err);
      process.exitCode = failureExit;
    }
    endSoon();
  },
);

/**
 * A command that has returned or failed ends even if something it started (a watch, a timer, a
 * request to a server that never answers) still holds the event loop: a server that cannot start
 * should crash-loop visibly, and a CronJob's discover run end with its exit code, not sit idle.
 */
function endSoon(): void {
  setTimeout(() => {
    void import('./log/logger.js').then(
      ({ flushLogs }) => flushLogs(),
      () => undefined,
    ).finally(() => process.exit());
  }, 3000).unref();
}
