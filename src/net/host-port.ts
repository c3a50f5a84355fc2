import type { AddressInfo, Server } from 'node:net';
import { ConfigError } from '../errors/ca-error.js';

/** `host:port` or `[v6]:port` as validated by the config schema; an empty host means all IPv4 addresses. */
export function splitHostPort(hostPort: string): { host: string; port: number } {
  const i = hostPort.lastIndexOf(':');
  return { host: hostPort.slice(0, i).replace(/^\[|\]$/g, '') || '0.0.0.0', port: Number(hostPort.slice(i + 1)) };
}

/**
 * An address to connect to, from user input: `host:port` or `[v6]:port`, host required, port
 * 1-65535; throws a message that says what is wrong. (Listen addresses come through the config
 * schema and `splitHostPort`.)
 */
export function parseHostPort(s: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(s) ?? /^([^:[\]]+):(\d+)$/.exec(s);
  if (!m) throw new Error(`"${s}" is not host:port (use [addr]:port for IPv6)`);
  const port = Number(m[2]);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`"${s}": port must be 1-65535`);
  return { host: m[1]!, port };
}

const LISTEN_PROBLEMS: Record<string, string> = {
  EADDRINUSE: 'the address is already in use (another process listens on it)',
  EACCES: 'permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)',
  EADDRNOTAVAIL: 'no network interface has that address',
  ENOTFOUND: 'the host name does not resolve',
  EAI_AGAIN: 'the host name could not be resolved now (DNS did not answer)',
};

/** A listener that cannot bind is a configuration problem the operator must fix: say which setting and why. */
export function listenError(setting: string, address: string, err: unknown): ConfigError {
  const code = (err as { code?: unknown })?.code;
  const why = (typeof code === 'string' && LISTEN_PROBLEMS[code]) || (err instanceof Error ? err.message : String(err));
  return new ConfigError(`cannot listen on ${setting} ${address}: ${why}`, { cause: err });
}

/**
 * Binds `server` to `address` (a validated `host:port`; port 0 picks a free one) and resolves with
 * the bound port; a failure rejects with listenError naming `setting`. Errors after that are the
 * caller's to handle.
 */
export async function listenOn(server: Server, address: string, setting: string): Promise<number> {
  const { host, port } = splitHostPort(address);
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => reject(listenError(setting, address, err));
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  return (server.address() as AddressInfo).port;
}
