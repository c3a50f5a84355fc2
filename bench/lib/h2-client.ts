/**
 * A lean gRPC load driver on node:http2: each request is a real unary call (POST, application/grpc,
 * te: trailers, length-prefixed protobuf) over TLS, and its grpc-status trailer is checked.
 * Cheaper for the client than grpc-js, so more of the shared CPU goes to the server under test.
 */
import { connect, type ClientHttp2Session } from 'node:http2';
import { grpcRequestFrame } from './grpc-frame.js';
import type { BenchRequest } from './workload.js';

const PATH = '/istio.v1.auth.IstioCertificateService/CreateCertificate';
const CALL_DEADLINE_MS = 120_000;

export interface PreparedCall {
  readonly body: Buffer;
  readonly token: string;
  /** What the answer must certify: the identity asked for and the CSR's key (SPKI DER). */
  readonly expect?: { readonly spiffeId: string; readonly spki: Buffer };
}

export function prepare(reqs: readonly BenchRequest[]): PreparedCall[] {
  return reqs.map((r) => ({ body: grpcRequestFrame(r.csrPem), token: r.token, expect: { spiffeId: r.spiffeId, spki: r.spki } }));
}

/**
 * Keeps responses for checking: the first 5, and 45 more drawn uniformly from the whole run
 * (reservoir sampling: the `ok`-th success replaces one of them with probability 45/(ok - 5)).
 */
export function sampleInto(samples: Buffer[], body: Buffer, ok: number, random: () => number = Math.random): void {
  if (samples.length < 50) {
    samples.push(body);
    return;
  }
  const j = 5 + Math.floor(random() * (ok - 5));
  if (j < 50) samples[j] = body;
}

export interface LoadResult {
  ok: number;
  /**
   * Calls that ended without OK, whatever the status (after their retries, when retrying):
   * calls made = ok + failed.
   */
  failed: number;
  /** UNAVAILABLE answers, each retried when retrying unless its call had no retries left. */
  unavailable: number;
  /** RESOURCE_EXHAUSTED answers: retried when retrying (istio-agent does), yet errors of the server's. */
  resourceExhausted: number;
  /** Calls that ended with a status that is never retried (neither UNAVAILABLE nor RESOURCE_EXHAUSTED). */
  otherErrors: number;
  /** grpc-status → count, for everything that was not OK. */
  errorCodes: Record<string, number>;
  retries: number;
  /** Connections lost during the run and opened again. */
  reconnects: number;
  latenciesMs: number[];
  elapsedMs: number;
  /** A few response bodies, for correctness checks. */
  samples: Buffer[];
}

export interface LoadOptions {
  port: number;
  rootPem: string;
  connections: number;
  /** Calls in flight at once, across all connections. */
  concurrency: number;
  /** Retry UNAVAILABLE (and RESOURCE_EXHAUSTED) with istio-agent's backoff: 100 ms doubling, 5 tries. */
  retry?: boolean;
  /** Stop issuing new calls after this long (soak); default: run the whole list once. */
  durationMs?: number;
  /** Cap on calls started per second (soak, latency at a fixed rate). */
  ratePerSecond?: number;
  /** Called once the connections are open, just before the timed phase starts. */
  onStart?: () => void;
}

function openSession(o: LoadOptions): ClientHttp2Session {
  const s = connect(`https://127.0.0.1:${o.port}`, { ca: o.rootPem, servername: 'localhost' });
  // A lost connection fails its calls (status 14 below) and is replaced on next use, as a gRPC
  // client reconnects; the error itself needs no handler beyond not crashing the driver.
  s.on('error', () => undefined);
  return s;
}

function openSessions(o: LoadOptions): Promise<ClientHttp2Session[]> {
  return Promise.all(
    Array.from(
      { length: o.connections },
      () =>
        new Promise<ClientHttp2Session>((resolve) => {
          const s = openSession(o);
          s.once('connect', () => resolve(s));
          // Refused or dropped (say, by the server's handshake timeout under a flood of
          // connections): replaced on first use, and counted as a reconnect.
          s.once('close', () => resolve(s));
        }),
    ),
  );
}

function call(s: ClientHttp2Session, c: PreparedCall): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve) => {
    if (s.closed || s.destroyed) return resolve({ status: 14, body: Buffer.alloc(0) });
    const req = s.request({
      ':method': 'POST',
      ':path': PATH,
      'content-type': 'application/grpc',
      te: 'trailers',
      authorization: `Bearer ${c.token}`,
      clusterid: 'Kubernetes',
    });
    const chunks: Buffer[] = [];
    let status = -1;
    let answered = false;
    req.on('response', (h) => {
      answered = true;
      if (h['grpc-status'] !== undefined) status = Number(h['grpc-status']); // trailers-only response
    });
    req.on('trailers', (t) => {
      status = Number(t['grpc-status']);
    });
    req.on('data', (d: Buffer) => chunks.push(d));
    const finish = (st: number): void => {
      clearTimeout(deadline);
      resolve({ status: st, body: Buffer.concat(chunks) });
    };
    // The run must end even if a call never does: DEADLINE_EXCEEDED, counted as an error.
    const deadline = setTimeout(() => {
      finish(4);
      req.close();
    }, CALL_DEADLINE_MS);
    // No response at all: the connection went away under the call, which gRPC reports as
    // UNAVAILABLE. A response without grpc-status stays -1 (a protocol error, never retried).
    req.on('end', () => finish(answered ? status : 14));
    req.on('error', () => finish(14));
    // A stream torn down with its connection may end without 'end' or 'error': whatever came
    // before, gRPC reports that as UNAVAILABLE.
    req.on('close', () => finish(status === -1 ? 14 : status));
    req.end(c.body);
  });
}

/**
 * The connection call `i` goes on: spread evenly but not in step with `i`. With `i % n`, calls
 * that alternate RSA and EC (the mix, the storm) put every EC call on the odd connections, and
 * the server, which gives connections to its workers in turn, then had one worker do all the EC
 * work (measured: CPU shares of 0.72/0.26 in the mix). Pods' key types have nothing to do with
 * which connection they use.
 */
export function slotOf(i: number, n: number): number {
  return (Math.imul(i, 0x9e3779b1) >>> 16) % n;
}

export async function runLoad(calls: readonly PreparedCall[], o: LoadOptions): Promise<LoadResult> {
  const sessions = await openSessions(o);
  const r: LoadResult = { ok: 0, failed: 0, unavailable: 0, resourceExhausted: 0, otherErrors: 0, errorCodes: {}, retries: 0, reconnects: 0, latenciesMs: [], elapsedMs: 0, samples: [] };
  o.onStart?.();
  const started = performance.now();
  let next = 0;
  let issued = 0;
  const deadline = o.durationMs ? started + o.durationMs : Infinity;
  const one = async (c: PreparedCall, slot: number, t0: number): Promise<void> => {
    for (let attempt = 0; ; attempt++) {
      if (sessions[slot]!.closed || sessions[slot]!.destroyed) {
        sessions[slot] = openSession(o);
        r.reconnects++;
      }
      const res = await call(sessions[slot]!, c);
      if (res.status === 0) {
        r.ok++;
        r.latenciesMs.push(performance.now() - t0);
        sampleInto(r.samples, res.body, r.ok);
        return;
      }
      const retryable = res.status === 14 || res.status === 8;
      if (res.status === 14) r.unavailable++;
      if (res.status === 8) r.resourceExhausted++;
      if (o.retry && retryable && attempt < 5) {
        r.retries++;
        await new Promise((w) => setTimeout(w, 100 * 2 ** attempt * (0.5 + Math.random())));
        continue;
      }
      if (!retryable) r.otherErrors++;
      r.failed++;
      r.errorCodes[res.status] = (r.errorCodes[res.status] ?? 0) + 1;
      return;
    }
  };
  const worker = async (): Promise<void> => {
    for (;;) {
      const now = performance.now();
      if (now > deadline) return;
      if (!o.durationMs && next >= calls.length) return;
      const i = next++;
      // At a fixed rate each call has its slot in the schedule, taken before waiting (two workers
      // must not wait for the same one), and its latency counts from that slot: time spent queued
      // behind a server that fell behind is in the figures (no coordinated omission).
      let t0 = now;
      if (o.ratePerSecond) {
        t0 = started + (issued++ / o.ratePerSecond) * 1000;
        if (t0 > now) await new Promise((w) => setTimeout(w, t0 - now));
      }
      await one(calls[i % calls.length]!, slotOf(i, sessions.length), t0);
    }
  };
  await Promise.all(Array.from({ length: o.concurrency }, worker));
  r.elapsedMs = performance.now() - started;
  await closeAll(sessions);
  return r;
}

/**
 * Closes the connections and waits until they have closed, and a little longer, so that the
 * server has seen them go before the next run opens its own: the primary gives a new connection
 * to the worker with the fewest open, and a count that still held the last run's connections of
 * one worker but not the other's sent 6 of the next 8 to one worker (CPU shares 0.29/0.66).
 */
async function closeAll(sessions: readonly ClientHttp2Session[]): Promise<void> {
  await Promise.all(
    sessions.map(
      (s) =>
        new Promise<void>((resolve) => {
          if (s.destroyed) return resolve();
          const timer = setTimeout(() => s.destroy(), 5_000);
          s.once('close', () => {
            clearTimeout(timer);
            resolve();
          });
          s.close();
        }),
    ),
  );
  await new Promise((w) => setTimeout(w, 200));
}
