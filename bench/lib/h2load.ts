import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { summarize, type LatencySummary } from './stats.js';

export interface H2loadResult {
  requests: number;
  /** Requests h2load itself saw fail (transport), not counting grpc-status. */
  failed: number;
  succeeded2xx: number;
  perSecond: number;
  latency: LatencySummary;
}

export function hasH2load(): Promise<boolean> {
  return new Promise((resolve) => execFile('h2load', ['--version'], (err) => resolve(!err)));
}

/**
 * Drives one fixed request body with h2load. h2load counts HTTP 200 as success even when
 * grpc-status is not 0, so callers must check the server's own count of issued certificates.
 */
export function runH2load(o: {
  port: number;
  body: Buffer;
  token: string;
  dir: string;
  requests?: number;
  durationSeconds?: number;
  clients: number;
  streams: number;
  rpsPerClient?: number;
}): Promise<H2loadResult> {
  const bodyFile = join(o.dir, `body-${Date.now()}.bin`);
  const logFile = join(o.dir, `h2load-${Date.now()}.log`);
  writeFileSync(bodyFile, o.body);
  const args = [
    ...(o.durationSeconds ? ['-D', String(o.durationSeconds)] : ['-n', String(o.requests ?? 10000)]),
    '-c', String(o.clients),
    '-m', String(o.streams),
    '-t', '1',
    ...(o.rpsPerClient ? [`--rps=${o.rpsPerClient}`] : []),
    '-d', bodyFile,
    '--log-file', logFile,
    '-H', 'content-type: application/grpc',
    '-H', 'te: trailers',
    '-H', `authorization: Bearer ${o.token}`,
    '-H', 'clusterid: Kubernetes',
    `https://127.0.0.1:${o.port}/istio.v1.auth.IstioCertificateService/CreateCertificate`,
  ];
  return new Promise((resolve, reject) => {
    execFile('h2load', args, { maxBuffer: 16 * 1024 * 1024, timeout: 600_000 }, (err, stdout) => {
      if (err) return reject(new Error(`h2load failed: ${err.message}`));
      const done = /requests: (\d+) total, \d+ started, (\d+) done/.exec(stdout);
      const status = /status codes: (\d+) 2xx/.exec(stdout);
      const failed = /succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(stdout);
      const rate = /finished in [\d.]+m?s, ([\d.]+) req\/s/.exec(stdout);
      const lat = readFileSync(logFile, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => Number(l.split('\t')[2]) / 1000);
      resolve({
        requests: Number(done?.[2] ?? 0),
        failed: failed ? Number(failed[1]) + Number(failed[2]) + Number(failed[3]) : 0,
        succeeded2xx: Number(status?.[1] ?? 0),
        perSecond: Number(rate?.[1] ?? 0),
        latency: summarize(lat),
      });
    });
  });
}
