import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { loadConfigFile, parseConfig } from '../config/load.js';
import { assertServable } from '../config/servable.js';
import type { MeshcertConfig } from '../config/schema.js';
import { mintDevToken } from '../dev/token-issuer.js';
import { createLogger, type Logger } from '../log/logger.js';
import { runServer, type RunningServer } from '../runtime/serve.js';
import { handOverSignal, takeOverStopSignal } from '../runtime/signals.js';
import { splitHostPort } from '../net/host-port.js';
import { isLoopback } from '../net/loopback.js';
import { serialHex } from '../x509/serial-hex.js';
import { verifyResponseChain } from '../x509/verify-chain.js';
import { workloadSpiffeId } from '../x509/spiffe-id.js';
import { parse, UsageError } from './args.js';
import { DEV_CONFIG } from './dev-config.js';

export const SERVE_USAGE = `meshcert serve --config FILE    run the CA with a config file
meshcert serve --dev              run the local demo: loopback, self-created CA, dev token issuer`;

export async function serveCommand(argv: string[]): Promise<number> {
  const { values: v } = parse(argv, { config: { type: 'string' }, dev: { type: 'boolean', default: false } });
  if (v.dev === Boolean(v.config)) throw new UsageError(`serve needs exactly one of --config FILE or --dev\n${SERVE_USAGE}`);
  // SIGHUP asks for a reload. Its default action ends the process, so this handler stays for the
  // whole life of the process, from before the config is read: while starting, the request is kept
  // and the reload runs once started (the config it asks for may already be on disk, read or not);
  // during server.shutdownDelay it still reloads (calls are still served); once the drain has
  // begun, it is ignored.
  let server: RunningServer | undefined = undefined;
  let logger: Logger | undefined = undefined;
  let earlyHup = false;
  const noteEarlyHup = (): void => logger?.info('SIGHUP received while starting; the configuration is reloaded once started');
  process.on('SIGHUP', () => {
    if (server) {
      if (!server.requestReload('SIGHUP')) logger?.info('SIGHUP received while shutting down; ignored');
    } else {
      if (!earlyHup) noteEarlyHup();
      earlyHup = true;
    }
  });
  const loaded = v.config ? loadConfigFile(v.config) : undefined;
  const config: MeshcertConfig = loaded ? loaded.config : parseConfig(DEV_CONFIG, process.env, 'the embedded dev config');
  assertServable(config, v.config ?? 'the embedded dev config');
  logger = createLogger(config.log.level);
  if (earlyHup) noteEarlyHup();
  // Logged rather than fatal in the process that owns the inventory and the controllers: a stray
  // rejection there must not take the whole replica down with records still buffered.
  process.on('unhandledRejection', (err) => logger.error({ err }, 'unhandled rejection'));
  // A stop asked for while starting is kept and honoured once started: as PID 1 in a container, a
  // signal without a handler would be dropped, and the pod would serve on until it is killed.
  // A second one ends the process at once: a start that hangs (an unreachable database, say) must
  // not need SIGKILL.
  let earlyStop: string | undefined;
  const noteEarlyStop = (signal: string): void => {
    if (earlyStop !== undefined) {
      logger.warn({ signal }, 'second stop request while starting; exiting now');
      logger.flush(() => process.exit(1));
      setTimeout(() => process.exit(1), 2000).unref();
      return;
    }
    logger.info({ signal }, 'stop requested while starting; shutting down once started (again to exit now)');
    earlyStop = signal;
  };
  const earlyTerm = (): void => noteEarlyStop('SIGTERM');
  const earlyInt = (): void => noteEarlyStop('SIGINT');
  // From the catcher cli.ts installed at once (a signal caught there is acted on here).
  takeOverStopSignal('SIGTERM', earlyTerm);
  takeOverStopSignal('SIGINT', earlyInt);
  const running = await runServer(config, logger, v.config && loaded ? { configFile: v.config, configText: loaded.text } : {});
  server = running;
  if (earlyHup && earlyStop === undefined) running.requestReload('SIGHUP while starting');
  const { port } = running;
  const close = (): Promise<void> => running.close();

  let stopping = false;
  const stop = (signal: string): void => {
    // A second signal ends server.shutdownDelay (an operator in a hurry, or Ctrl-C twice).
    if (stopping) {
      if (running.endShutdownDelay()) logger.info({ signal }, 'shutdown delay ended early');
      return;
    }
    stopping = true;
    logger.info({ signal }, 'shutting down: draining in-flight calls');
    // Exit once the last lines are written (a write still in flight at exit could be lost or
    // land after the exit handler's synchronous flush); the timer is the backstop.
    const exit = (code: number): void => {
      process.exitCode = code;
      setTimeout(() => process.exit(code), 2000).unref();
      logger.flush(() => process.exit(code));
    };
    close().then(
      () => {
        logger.info('stopped');
        exit(0);
      },
      (err: unknown) => {
        logger.error({ err }, 'error during shutdown');
        exit(1);
      },
    );
  };
  handOverSignal('SIGTERM', earlyTerm, () => stop('SIGTERM'));
  handOverSignal('SIGINT', earlyInt, () => stop('SIGINT'));
  if (earlyStop !== undefined) {
    stop(earlyStop);
    return new Promise<number>(() => {});
  }

  if (v.dev) await devDemo(config, port, logger, () => stopping);
  return new Promise<number>(() => {}); // runs until a signal
}

/** Shows a newcomer the CA working: one istio-agent-shaped request against ourselves. */
async function devDemo(config: MeshcertConfig, port: number, logger: Logger, stopping: () => boolean): Promise<void> {
  const rootPem = readFileSync(join(config.ca.dir!, 'root-cert.pem'), 'utf8');
  const spiffeId = workloadSpiffeId(config.trustDomain, 'default', 'demo');
  const dial = devDialTarget(config.server.listen, port);
  if (!dial.loopback) {
    logger.warn({ listen: config.server.listen }, 'DEV MODE listens beyond this host: anyone who can reach it can ask this CA for certificates with a token from the local development issuer, if they hold its key; listen on 127.0.0.1 for a trial');
  }
  // Client-side modules (grpc-js, @peculiar/x509) are loaded only here: a production primary never needs them.
  const { CaClient } = await import('../client/ca-client.js');
  const client = new CaClient({ address: dial.address, rootPem, ...(dial.serverName ? { serverName: dial.serverName } : {}) });
  try {
    const { buildWorkloadCsr } = await import('../client/workload-csr.js');
    const csr = await buildWorkloadCsr(spiffeId, 'rsa2048');
    const token = await mintDevToken(config.dataDir, { namespace: 'default', serviceAccount: 'demo' });
    const chain = await client.createCertificate({ csrPem: csr.csrPem, token, clusterId: config.auth.defaultCluster });
    const check = verifyResponseChain(chain, rootPem);
    process.stderr.write(
      [
        '',
        `meshcert is serving on ${dial.shown} (DEV MODE: local token issuer, CA in ${config.ca.dir})`,
        `self-test: issued ${spiffeId}, serial ${serialHex(check.leaf.serialNumber)}, valid until ${new Date(check.leaf.validTo).toISOString()}, chain verified`,
        `try it:  ${tryRequest(port, config.dataDir, config.ca.dir!, config.trustDomain, dial)}`,
        'stop:    Ctrl-C',
        '',
      ].join('\n'),
    );
  } catch (e) {
    // Stopped while it ran (Ctrl-C at once): its failure is the shutdown's, not the CA's.
    if (!stopping()) logger.error({ err: e }, 'dev self-test request failed');
  } finally {
    client.close();
  }
}

/**
 * The request command that reaches this server: request's defaults (port 15012, ./.meshcert, its
 * ca/root-cert.pem) spelled out where they differ, paths quoted for a POSIX shell where needed.
 */
export function tryRequest(port: number, dataDir: string, caDir: string, trustDomain = 'cluster.local', dial: Pick<DevDialTarget, 'address' | 'serverName'> = devDialTarget('127.0.0.1:15012', port)): string {
  const quote = (s: string): string => (/^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replaceAll("'", "'\\''")}'`);
  const extra = [
    ...(dial.address !== '127.0.0.1:15012' ? [`--address ${quote(dial.address)}`] : []),
    ...(dial.serverName ? [`--server-name ${dial.serverName}`] : []),
    ...(trustDomain !== 'cluster.local' ? [`--trust-domain ${trustDomain}`] : []),
    ...(resolve(dataDir) !== resolve('.meshcert') ? [`--data-dir ${quote(dataDir)}`] : []),
    ...(resolve(caDir) !== resolve(dataDir, 'ca') ? [`--ca-root ${quote(join(caDir, 'root-cert.pem'))}`] : []),
  ];
  return ['node dist/cli.js request --ns default --sa demo --key ec256', ...extra].join(' ');
}

export interface DevDialTarget {
  /** host:port to dial (a wildcard listen is dialled on 127.0.0.1). */
  readonly address: string;
  /** The name to check the serving certificate for when the address is one it does not name. */
  readonly serverName?: string;
  /** The listen address as the banner says it. */
  readonly shown: string;
  /** Whether only this host can reach the listener. */
  readonly loopback: boolean;
}

/**
 * Where the dev self-test and the banner's command reach a server listening on `listen`: its own
 * host, or 127.0.0.1 for a wildcard. The dev serving certificate names localhost, 127.0.0.1 and
 * ::1 (server.tls defaults), so another address is checked as localhost.
 */
export function devDialTarget(listen: string, port: number): DevDialTarget {
  const { host } = splitHostPort(listen);
  const wildcard = host === '0.0.0.0' || host === '::';
  const dialHost = wildcard ? '127.0.0.1' : host;
  const bracket = (h: string): string => (h.includes(':') ? `[${h}]` : h);
  const named = ['127.0.0.1', '::1', 'localhost'].includes(dialHost);
  return {
    address: `${bracket(dialHost)}:${port}`,
    ...(named ? {} : { serverName: 'localhost' }),
    shown: `${bracket(host)}:${port}`,
    loopback: isLoopback(host),
  };
}
