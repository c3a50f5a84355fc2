import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { summarize, type LatencySummary } from './stats.js';

export interface H2loadResult {
  /** Requests h2load saw done (with -D: before its deadline; calls still in flight then are not). */
  requests: number;
  /**
   * Requests h2load itself saw fail (transport: stream reset, connection lost, timeout). Its
   * "errored" and "timeout" counts are subsets of this one and are not added again.
   */
  failed: number;
  /** Answers with an HTTP status outside 2xx (3xx + 4xx + 5xx). gRPC answers 200 even for a non-OK grpc-status. */
  non2xx: number;
  perSecond: number;
  latency: LatencySummary;
}

export function hasH2load(): Promise<boolean> {
  return new Promise((resolve) => execFile('h2load', ['--version'], (err) => resolve(!err)));
}

const DURATION_UNITS: Record<string, number> = { us: 1e-6, ms: 1e-3, s: 1 };

/**
 * Parses h2load's summary (stdout) and its --log-file (one line per request: start time µs, HTTP
 * status, duration µs). Throws on anything it does not recognise: a run whose output did not parse
 * is a failure, not a row of zeros.
 */
export function parseH2loadOutput(stdout: string, logText: string): H2loadResult {
  const req = /^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout$/m.exec(stdout);
  const status = /^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx$/m.exec(stdout);
  const rate = /^finished in ([\d.]+)(us|ms|s), ([\d.]+) req\/s/m.exec(stdout);
  const missing = [!req && '"requests:"', !status && '"status codes:"', !rate && '"finished in"'].filter(Boolean);
  if (missing.length) throw new Error(`h2load's output did not parse (no ${missing.join(', ')} line):\n${stdout.slice(-2000)}`);
  const latenciesMs: number[] = [];
  for (const line of logText.split('\n')) {
    if (line === '') continue;
    // Status -1: a request that failed in transport (stream reset, connection lost). It is in
    // h2load's "failed" count; its time is no answer's latency.
    const m = /^\d+\t(-1|\d+)\t(\d+)$/.exec(line);
    if (!m) throw new Error(`h2load's log file did not parse: ${JSON.stringify(line.slice(0, 200))}`);
    if (m[1] !== '-1') latenciesMs.push(Number(m[2]) / 1000);
  }
  const done = Number(req![3]);
  // "done" counts the requests that failed in transport too; those have no time.
  const answered = done - Number(req![5]);
  if (answered > 0 && latenciesMs.length === 0) throw new Error(`h2load reported ${answered} requests answered but logged no request times`);
  const seconds = Number(rate![1]) * DURATION_UNITS[rate![2]!]!;
  const perSecond = Number(rate![3]);
  if (!Number.isFinite(seconds) || !Number.isFinite(perSecond)) throw new Error(`h2load's "finished in" line did not parse: ${rate![0]}`);
  return {
    requests: done,
    failed: Number(req![5]),
    non2xx: Number(status![2]) + Number(status![3]) + Number(status![4]),
    perSecond,
    latency: summarize(latenciesMs),
  };
}

/**
 * Drives one fixed request body with h2load. h2load counts HTTP 200 as success even when
 * grpc-status is not 0, so callers must count the server's refusals themselves.
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
      try {
        resolve(parseH2loadOutput(stdout, readFileSync(logFile, 'utf8')));
      } catch (e) {
        reject(e as Error);
      }
    });
  });
}
