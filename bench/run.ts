/**
 * npm run bench [-- options]: see USAGE below.
 *
 * Starts meshcert as a user would (built CLI, config file, CA from `ca init`, TLS, JWT auth with a
 * JWKS file, info-level logs, default worker count), drives it, and prints one table plus a JSON
 * file under bench/results/. The crypto ceiling is measured in the same run on the same machine,
 * so throughput/ceiling compares across machines. Benchmarks are not tests: nothing here asserts a
 * speed; --smoke (used by CI) only checks that results are well-formed and error-free.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { cryptoCeiling } from './lib/ceiling.js';
import { ceilingFor, counterRise, h2loadRowErrors, soakFlatness, validateResults, type FlatnessVerdict, type MemorySample, type Workload } from './lib/checks.js';
import { buildGoStorm, goToolchainProblem, runGoStorm } from './lib/go-storm.js';
import { decodeChain } from './lib/grpc-frame.js';
import { leafMismatch } from './lib/leaf-check.js';
import { prepare, runLoad, type LoadResult, type PreparedCall } from './lib/h2-client.js';
import { hasH2load, runH2load, type H2loadResult } from './lib/h2load.js';
import { startServer, writeConfig, type BenchServer } from './lib/server.js';
import { round, summarize, type LatencySummary } from './lib/stats.js';
import { makeRequests, makeTokenSigners, rsaKeyPool, type BenchRequest, type KeyKind } from './lib/workload.js';
import { verifyResponseChain } from '../src/x509/verify-chain.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const USAGE = `usage: npm run bench [-- --smoke | --storm | --soak [--duration 600] [--rate 1000]] [--workers N]
  [--max-concurrent-streams N] [--max-connections N] [--node-options="--flag ..."] [--fail-closed]
  [--storm-connections N] [--storm-driver auto|go|node] [--server-wrapper PATH] [--profile DIR] [--keep] [--skip-build]
Each option is described in README.md, "Performance", and at its definition in bench/run.ts.`;
const OPTIONS = {
  smoke: { type: 'boolean', default: false },
  soak: { type: 'boolean', default: false },
  /** Only the restart storm (and the ceiling). */
  storm: { type: 'boolean', default: false },
  duration: { type: 'string', default: '600' },
  rate: { type: 'string', default: '1000' },
  'skip-build': { type: 'boolean', default: false },
  /** server.workers for the run (default: the config's default). */
  workers: { type: 'string' },
  /**
   * server.maxConcurrentStreams for the run (default: the config's, auto: 100, or 16 under a memory limit below 304 MiB). With 16 the storm's calls
   * wait in their clients rather than in the server's memory (see the README's memory-bounded shape).
   */
  'max-concurrent-streams': { type: 'string' },
  /** server.maxConnections for the run (default: the config's; 0: no limit, as in the config): connections each serving process keeps open at once. */
  'max-connections': { type: 'string' },
  /**
   * Node options for the server's process, before its script: V8 heap limits such as
   * --node-options="--max-old-space-size=96 --max-semi-space-size=4" for the memory-bounded shape
   * (with `=`: parseArgs takes a separate value starting with a dash for an option). Cluster workers
   * inherit them, and a heap flag given here wins over the config's (server.workerHeapMb and friends).
   */
  'node-options': { type: 'string' },
  /** inventory.failClosed on: every certificate answered only once its record is stored (default off, the config's default). */
  'fail-closed': { type: 'boolean', default: false },
  /**
   * Connections the storm's calls are spread over (default 50). In a real restart every pod's
   * agent has its own connection; 10000 gives one per identity (opened before the timed phase).
   */
  'storm-connections': { type: 'string', default: '50' },
  /**
   * Client of the storm: `go` (grpc-go, istio-agent's stack, bench/storm-go), `node` (node:http2,
   * as every other distinct-request row), or `auto` (go where Debian's Go and grpc-go are installed).
   */
  'storm-driver': { type: 'string', default: 'auto' },
  /**
   * An executable the server is started through, given node's command line to exec (keeping its
   * PID, which the bench samples): a script that enters a cgroup with a memory limit, say, so
   * that a shape is measured as a pod limited so would run it (`server.workers: auto` and V8's
   * default heap both follow the limit).
   */
  'server-wrapper': { type: 'string' },
  /** Run the server (and its workers) under `node --cpu-prof`, writing .cpuprofile files to this directory. */
  profile: { type: 'string' },
  /** Keep the run's directory (config, CA, inventory, server.log) even when the run passes. */
  keep: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
} as const;
let parsed;
try {
  parsed = parseArgs({ options: OPTIONS });
} catch (e) {
  process.stderr.write(`${(e as Error).message}\n${USAGE}\n`);
  process.exit(2);
}
const args = parsed.values;
if (args.help) {
  console.log(USAGE);
  process.exit(0);
}
const smoke = args.smoke!;
const stormOnly = args.storm!;

/** `--name`'s value as a whole number from 1 to `max`, or exit 2 saying what it must be. */
function wholeNumberArg(name: string, raw: string, max: number, min = 1): number {
  const v = Number(raw);
  if (!Number.isInteger(v) || v < min || v > max) {
    process.stderr.write(`--${name} must be a whole number from ${min} to ${max} (got ${raw})\n`);
    process.exit(2);
  }
  return v;
}

const stormConnections = wholeNumberArg('storm-connections', args['storm-connections']!, 20_000);
const stormDriverArg = args['storm-driver']!;
if (!['auto', 'go', 'node'].includes(stormDriverArg)) {
  process.stderr.write(`--storm-driver must be auto, go or node (got ${stormDriverArg})\n`);
  process.exit(2);
}
for (const k of ['duration', 'rate'] as const) {
  const v = Number(args[k]);
  if (!Number.isFinite(v) || v <= 0) {
    process.stderr.write(`--${k} must be a positive number (got ${args[k]})\n`);
    process.exit(2);
  }
}
const maxConcurrentStreams = args['max-concurrent-streams'] === undefined ? undefined : wholeNumberArg('max-concurrent-streams', args['max-concurrent-streams'], 10_000);
const maxConnections = args['max-connections'] === undefined ? undefined : wholeNumberArg('max-connections', args['max-connections'], 1_000_000, 0);
const nodeOptions = (args['node-options'] ?? '').split(/\s+/).filter((o) => o !== '');
const notAnOption = nodeOptions.find((o) => !/^--[a-z]/.test(o));
if (notAnOption !== undefined) {
  // A script or value in the wrong place would run something else than meshcert's server.
  process.stderr.write(`--node-options takes node options only, each as --name or --name=value (got ${JSON.stringify(notAnOption)})\n`);
  process.exit(2);
}
const openFiles = Number(execFileSync('sh', ['-c', 'ulimit -n'], { encoding: 'utf8' }).trim());
if (Number.isFinite(openFiles) && stormConnections + 256 > openFiles) {
  // Otherwise connections fail with EMFILE and show up as UNAVAILABLE, as if the server refused them.
  process.stderr.write(`--storm-connections ${stormConnections} needs more open files than this shell allows (ulimit -n ${openFiles}); raise it first\n`);
  process.exit(2);
}

interface Row {
  scenario: string;
  driver: string;
  /** Which crypto ceiling the row is compared with. */
  workload: Workload;
  requests: number;
  perSecond: number;
  latency: LatencySummary;
  errors: number;
  unavailable: number;
  serverCpuSeconds: number;
  cpuPerRequestUs: number;
  /** Throughput / crypto ceiling; null for a rate-limited row, whose throughput is the rate asked for. */
  ceilingRatio?: number | null;
  /** Run at a fixed rate (half of the peak), not as fast as the server answers. */
  rateLimited?: boolean;
  /** An h2load row's error count, by source (see h2loadRowErrors). */
  h2loadErrors?: { failed: number; non2xx: number; statusesSent: Record<string, number>; cancelledByTeardown: number };
  /** Share of the run's server CPU per process (primary first): shows how evenly workers were loaded. */
  cpuShare?: number[];
  note?: string;
}

interface Results {
  rows: Row[];
  storm?: { identities: number; served: number; latency: LatencySummary } & Record<string, unknown>;
  soak?: { served: number; latency: LatencySummary; flatness: FlatnessVerdict } & Record<string, unknown>;
  /** The crypto ceiling of each key type: the higher of the two passes. */
  ceilings: Record<string, number>;
  /** Each pass of the ceiling, before the rows and after them. */
  ceilingPasses?: Array<{ rsa2048: number; ec256: number }>;
  /** Results that are well-formed but suspect (a throughput above the crypto ceiling). */
  warnings: string[];
  peakRssMb: number;
  peakPssMb: number;
  peakRssPerProcessMb: number[];
  /** Peak RSS within each phase (the peak since that phase started). */
  phasePeakRssMb: Record<string, number>;
}

/** The server's log lines for each outcome of a CreateCertificate call (src/grpc/certificate-service.ts). */
const ISSUED = '"decision":"issued"';
const CANCELLED = '"decision":"refused","code":"CANCELLED"';
/** A refusal answered UNAVAILABLE (shed, overloaded: what a client retries). */
const UNAVAILABLE = '"grpcCode":14,';
/** A soak that achieves less than this share of the rate asked for fails. */
const SOAK_MIN_RATE_FRACTION = 0.95;

/**
 * Collects the driver's own garbage now, before a timed h2load run: the driver holds the
 * pre-generated requests (hundreds of MB), and a major collection of its heap costs a few hundred
 * milliseconds of CPU on the same two vCPUs the server is being measured on. For the same reason
 * `npm run bench` starts the driver with V8's memory reducer off: it ran such a collection about
 * 8 s after the driver went idle, in the middle of the half-of-peak run (sampled from /proc).
 */
setFlagsFromString('--expose-gc');
const collectGarbage = runInNewContext('gc') as () => void;
const settleDriver = async (): Promise<void> => {
  collectGarbage();
  await sleep(200);
};

const log = (msg: string): void => {
  process.stderr.write(`[bench] ${msg}\n`);
};

/** The server's shape for this run, as the log and the table name it: what differs from the defaults. */
function shape(): string {
  const parts = [`server.workers: ${args.workers ?? 'default'}`];
  if (maxConcurrentStreams !== undefined) parts.push(`server.maxConcurrentStreams: ${maxConcurrentStreams}`);
  if (maxConnections !== undefined) parts.push(`server.maxConnections: ${maxConnections}`);
  if (args['fail-closed']) parts.push('inventory.failClosed: true');
  if (nodeOptions.length > 0) parts.push(`node ${nodeOptions.join(' ')}`);
  if (args['server-wrapper']) parts.push(`started through ${args['server-wrapper']}`);
  // The server inherits the bench's environment: glibc's arena count changes its RSS (the memory-bounded shape sets it).
  if (process.env.MALLOC_ARENA_MAX) parts.push(`MALLOC_ARENA_MAX=${process.env.MALLOC_ARENA_MAX}`);
  return parts.join(', ');
}

async function main(): Promise<void> {
  if (!args['skip-build']) execFileSync('npm', ['run', 'build', '--silent'], { cwd: ROOT, stdio: 'inherit' });
  const dir = mkdtempSync(join(tmpdir(), 'meshcert-bench-'));
  const results: Results = {
    rows: [],
    ceilings: {},
    warnings: [],
    peakRssMb: 0,
    peakPssMb: 0,
    peakRssPerProcessMb: [],
    phasePeakRssMb: {},
  };
  let server: BenchServer | undefined;
  let peakRss = 0;
  /** Peak RSS since the current phase started (see startPhase). */
  let phasePeak = 0;
  let peakPss = 0;
  let rssTimer: NodeJS.Timeout | undefined;
  let pssTimer: NodeJS.Timeout | undefined;
  const failures: string[] = [];
  try {
    execFileSync(process.execPath, [join(ROOT, 'dist/cli.js'), 'ca', 'init', '--dir', join(dir, 'ca')], { stdio: 'ignore' });
    const signers = makeTokenSigners();
    writeFileSync(join(dir, 'jwks.json'), JSON.stringify({ keys: signers.map((s) => s.jwk) }));
    const configFile = writeConfig(dir, join(dir, 'jwks.json'), { workers: args.workers, maxConcurrentStreams, maxConnections, failClosed: args['fail-closed'] });
    const nodeArgs = [...nodeOptions, ...(args.profile ? ['--cpu-prof', `--cpu-prof-dir=${args.profile}`] : [])];
    server = await startServer(ROOT, configFile, join(dir, 'server.log'), nodeArgs, args['server-wrapper']);
    const srv = server;
    const sampleRss = (): void => {
      const b = srv.rssBytes();
      peakRss = Math.max(peakRss, b);
      phasePeak = Math.max(phasePeak, b);
    };
    rssTimer = setInterval(sampleRss, 200);
    // smaps_rollup walks page tables: sampled less often than VmRSS.
    pssTimer = setInterval(() => (peakPss = Math.max(peakPss, srv.pssBytes())), 1000);
    const rootPem = readFileSync(join(dir, 'ca/root-cert.pem'), 'utf8');
    log(`meshcert on 127.0.0.1:${server.port}, ${shape()}, ${server.maxConcurrentStreams ?? '?'} streams per connection`);

    const n = smoke ? 300 : 20000;
    log('pre-generating distinct CSRs and tokens (not timed)');
    const pool = await rsaKeyPool(smoke ? 4 : 64);
    const soak = args.soak!;
    const soakSeconds = Number(args.duration);
    const soakRate = Number(args.rate);
    // A soak's tokens must outlive it: its duration plus an hour's margin (generation, warm-up).
    const ttl = soak ? Math.max(3600, soakSeconds + 3600) : 3600;
    // Warm-up has identities of its own, so that every row's calls are new to the server.
    const warmReqs = makeRequests(smoke ? 50 : 1000, 'rsa2048', signers, pool, 'warm');
    const rsaReqs = stormOnly ? [] : makeRequests(n, 'rsa2048', signers, pool, 'rsa', ttl);
    const ecReqs = soak || stormOnly ? [] : makeRequests(n, 'ec256', signers, pool, 'ec');
    const mixReqs = soak || stormOnly ? [] : interleave(makeRequests(n / 2, 'rsa2048', signers, pool, 'mixr'), makeRequests(n / 2, 'ec256', signers, pool, 'mixe'));
    const stormReqs = soak ? [] : interleave(makeRequests(smoke ? 500 : 5000, 'rsa2048', signers, pool, 'storm-r'), makeRequests(smoke ? 500 : 5000, 'ec256', signers, pool, 'storm-e'));
    const load = { port: server.port, rootPem, connections: 8, concurrency: 64 };

    // Each phase's own peak RSS: the peak since the phase started, not since the run started.
    const startPhase = (): void => {
      phasePeak = 0;
      sampleRss();
    };
    const endPhase = (name: string): void => {
      sampleRss();
      results.phasePeakRssMb[name] = round(phasePeak / 2 ** 20);
    };

    // Warm up (JIT, connections) on identities no row sends again.
    startPhase();
    const warmCalls = prepare(warmReqs);
    const warm = await runLoad(warmCalls, load);
    checkSamples(warm, warmCalls, rootPem, 'warm-up', failures);
    endPhase('warm-up');
    warmReqs.length = 0;

    const measure = async (scenario: string, workload: Workload, reqs: BenchRequest[]): Promise<Row> => {
      startPhase();
      const cpu0 = srv.cpuSeconds();
      const perProcess0 = srv.cpuSecondsPerProcess();
      const calls = prepare(reqs);
      const r = await runLoad(calls, load);
      const cpu = srv.cpuSeconds() - cpu0;
      endPhase(scenario);
      checkSamples(r, calls, rootPem, scenario, failures);
      return { ...row(scenario, workload, 'node:http2, distinct CSR+token per call', r, cpu), cpuShare: shares(srv.cpuSecondsPerProcess(), perProcess0, cpu) };
    };
    let goStormBin: string | undefined;
    /** The storm's client (see --storm-driver), built now: a first build compiles grpc-go, not timed. */
    const chooseStormDriver = async (): Promise<'go' | 'node'> => {
      if (stormDriverArg === 'node') return 'node';
      const problem = goToolchainProblem();
      if (problem) {
        if (stormDriverArg === 'go') throw new Error(`--storm-driver go: ${problem}`);
        log(`storm over node:http2: ${problem}`);
        return 'node';
      }
      goStormBin = await buildGoStorm(dir);
      return 'go';
    };
    const measurePeaks = async (): Promise<void> => {
      results.rows.push(await measure('RSA-2048 CSR, RS256 token', 'rsa2048', rsaReqs));
      results.rows.push(await measure('ECDSA P-256 CSR, ES256 token', 'ec256', ecReqs));
      results.rows.push(await measure('mix (half RSA, half EC)', 'mix', mixReqs));

      /**
       * One h2load run with the server's own outcome counts around it. Its errors are counted
       * directly (see h2loadRowErrors): h2load counts HTTP 200 as success whatever the grpc-status.
       */
      const h2loadRow = async (label: string, workload: Workload, driver: string, phaseName: string, opts: Parameters<typeof runH2load>[0]): Promise<{ row: Row; peak: H2loadResult }> => {
        await sleep(1000); // logs are flushed every 250 ms: count only this run's lines
        const before = { issued: srv.countLog(ISSUED), cancelled: srv.countLog(CANCELLED), statuses: await srv.errorStatuses() };
        await settleDriver();
        startPhase();
        const cpu0 = srv.cpuSeconds();
        const perProcess0 = srv.cpuSecondsPerProcess();
        const h = await runH2load(opts);
        const cpu = srv.cpuSeconds() - cpu0;
        endPhase(phaseName);
        const cpuShare = shares(srv.cpuSecondsPerProcess(), perProcess0, cpu);
        await sleep(1000); // let the log catch up
        const issued = srv.countLog(ISSUED) - before.issued;
        // Refused as cancelled: calls in flight when h2load's time was up, sent nothing (not errors).
        const cancelled = srv.countLog(CANCELLED) - before.cancelled;
        const statusesSent = counterRise(before.statuses, await srv.errorStatuses());
        const e = h2loadRowErrors({ failed: h.failed, non2xx: h.non2xx, errorStatuses: statusesSent });
        if (e.errors !== 0) {
          const sent = Object.entries(statusesSent).map(([code, n]) => `${n} ${code}`).join(', ');
          failures.push(`h2load ${label} (${driver}): ${e.errors} errors: ${h.failed} h2load failures (${h.non2xx} of them non-2xx answers), ${e.statusErrors} statuses other than OK sent by the server${sent ? ` (${sent})` : ''}`);
        }
        return {
          peak: h,
          row: {
            scenario: label,
            workload,
            driver,
            requests: h.requests,
            perSecond: round(h.perSecond),
            latency: roundLat(h.latency),
            errors: e.errors,
            // The server's UNAVAILABLE answers (h2load does not read grpc-status); also among the errors.
            unavailable: statusesSent.UNAVAILABLE ?? 0,
            serverCpuSeconds: round(cpu, 2),
            // The server's own count: calls still in flight when h2load's time was up were served too.
            cpuPerRequestUs: round((cpu / Math.max(1, issued)) * 1e6),
            cpuShare,
            h2loadErrors: { failed: h.failed, non2xx: h.non2xx, statusesSent, cancelledByTeardown: cancelled },
          },
        };
      };

      if (await hasH2load()) {
        for (const kind of ['rsa2048', 'ec256'] as KeyKind[]) {
          const one = (kind === 'rsa2048' ? rsaReqs : ecReqs)[0]!;
          const body = prepare([one])[0]!.body;
          const label = kind === 'rsa2048' ? 'RSA-2048 CSR, RS256 token' : 'ECDSA P-256 CSR, ES256 token';
          const clients = 8;
          // Timed, not a fixed count: h2load gives every connection the same share of a count, so
          // when Node's round robin puts 5 or 6 of the 8 connections on one worker, the other finishes
          // its share early and idles while the first works through the rest.
          const base = { port: srv.port, body, token: one.token, dir, durationSeconds: smoke ? 2 : 15, clients, streams: 16 };
          const { row: peakRow, peak } = await h2loadRow(label, kind, 'h2load, fixed body (peak)', `h2load ${label}`, base);
          results.rows.push(peakRow);
          // Latency at half of the measured peak, rate-limited.
          const rpsPerClient = Math.max(1, Math.floor(peak.perSecond / 2 / clients));
          // Room for four times the streams of the peak run: h2load starts a call's clock when it
          // gets a stream, so a pause that filled them all would hide the calls queued behind it.
          const { row: halfRow } = await h2loadRow(label, kind, 'h2load, fixed body at half of peak', `h2load ${label} at half of peak`, { ...base, streams: base.streams * 4, rpsPerClient });
          results.rows.push({ ...halfRow, rateLimited: true, ceilingRatio: null });
        }
      } else {
        failures.push('h2load not found (Debian package nghttp2-client): fixed-body runs skipped');
      }
    };
    // The ceiling is measured twice, with the server idle, before the rows and after them: one
    // pass is noisy on a shared host (EC 4,778, 3,670 and 2,570/s in three passes in a row here).
    const ceilSeconds = smoke ? 1 : 5;
    const measureCeilings = async (): Promise<{ rsa2048: number; ec256: number }> => ({
      rsa2048: round((await cryptoCeiling('rsa2048', ceilSeconds)).perSecond),
      ec256: round((await cryptoCeiling('ec256', ceilSeconds)).perSecond),
    });
    log('crypto ceiling, first pass (server idle)');
    const ceilingsBefore = await measureCeilings();
    // --soak runs only the soak (and the ceiling): it is about memory over time, not peak numbers.
    if (!args.soak) {
      if (!stormOnly) await measurePeaks();

      const stormDriver = await chooseStormDriver();
      log(`restart storm: every identity at once, retrying UNAVAILABLE like istio-agent (client: ${stormDriver === 'go' ? 'grpc-go' : 'node:http2'})`);
      const stormCalls = prepare(stormReqs);
      // The storm's client is this process (node:http2) or shares the two vCPUs with it (grpc-go):
      // drop the earlier rows' requests and collect now, so that a collection of them does not
      // run during the storm.
      for (const reqs of [rsaReqs, ecReqs, mixReqs]) reqs.length = 0;
      await sleep(1000); // logs are flushed every 250 ms: count only the storm's lines
      const unavailableLogged0 = srv.countLog(UNAVAILABLE);
      await settleDriver();
      startPhase();
      let stormCpu0 = 0;
      let stormPerProcess0: Array<{ pid: number; seconds: number }> = [];
      let driverCpu0 = process.cpuUsage();
      const onStart = (): void => {
        stormCpu0 = srv.cpuSeconds();
        stormPerProcess0 = srv.cpuSecondsPerProcess();
        driverCpu0 = process.cpuUsage();
      };
      const stormOptions = { port: srv.port, rootPem, connections: stormConnections, onStart };
      let storm: LoadResult;
      let driverCpu: number;
      if (stormDriver === 'go') {
        const r = await runGoStorm(goStormBin!, dir, stormCalls, stormOptions);
        storm = r;
        driverCpu = r.driverCpuSeconds;
      } else {
        storm = await runLoad(stormCalls, { ...stormOptions, concurrency: stormCalls.length, retry: true });
        const used = process.cpuUsage(driverCpu0);
        driverCpu = (used.user + used.system) / 1e6;
      }
      const stormCpu = srv.cpuSeconds() - stormCpu0;
      endPhase('storm');
      await sleep(1000); // let the log catch up
      // A client reports a connection lost or reset as UNAVAILABLE too: the server's log tells
      // the calls it answered so (shed, overloaded) from those that got no answer. Inferred, not
      // measured: an answer to a call its client had given up on is logged but not seen, and a
      // worker that dies loses up to 250 ms of its log.
      const unavailableAnswered = srv.countLog(UNAVAILABLE) - unavailableLogged0;
      if (unavailableAnswered > storm.unavailable) {
        results.warnings.push(`storm: the server logged ${unavailableAnswered} UNAVAILABLE answers but its client saw ${storm.unavailable} (answers to calls given up on?): transportFailures is not meaningful`);
      }
      results.storm = {
        identities: stormCalls.length,
        connections: stormConnections,
        secondsUntilAllServed: round(storm.elapsedMs / 1000, 2),
        served: storm.ok,
        // UNAVAILABLE answers, each retried unless its call had used up its retries (then it is
        // also in failedAfterRetries).
        unavailableRetried: storm.unavailable,
        // Of those, the UNAVAILABLE the server answered (its log), and the rest: calls that got
        // no status from it (connection closed or reset: a worker lost, a connection shed).
        unavailableAnswered,
        transportFailures: storm.unavailable - unavailableAnswered,
        // Every retry, of UNAVAILABLE or RESOURCE_EXHAUSTED.
        retries: storm.retries,
        // Calls that never got a certificate, whatever their last status: identities = served + failedAfterRetries.
        failedAfterRetries: storm.failed,
        reconnects: storm.reconnects,
        // Retried as istio-agent retries them, but the target allows no error but retried UNAVAILABLE.
        resourceExhausted: storm.resourceExhausted,
        otherErrors: storm.otherErrors,
        errorCodes: storm.errorCodes,
        latency: roundLat(summarize(storm.latenciesMs)),
        // Server CPU from the first call to the last answer (connections were opened before).
        serverCpuSeconds: round(stormCpu, 2),
        cpuPerCertificateUs: Math.round((stormCpu / Math.max(storm.ok, 1)) * 1e6),
        cpuShare: shares(srv.cpuSecondsPerProcess(), stormPerProcess0, stormCpu),
        // The storm's client runs on the same vCPUs: which one it was, and what it took from the server.
        driver: stormDriver === 'go' ? 'grpc-go' : 'node:http2',
        driverCpuSeconds: round(driverCpu, 2),
      };
      verifySamples(storm, stormCalls, rootPem, 'storm', failures);
      if (storm.ok !== stormCalls.length || storm.failed > 0 || storm.otherErrors > 0 || storm.resourceExhausted > 0) {
        failures.push(`storm: ${storm.ok}/${stormCalls.length} served, ${storm.failed} failed after their retries (${storm.otherErrors} with a status never retried; codes ${JSON.stringify(storm.errorCodes)}), ${storm.resourceExhausted} RESOURCE_EXHAUSTED answers (retried, yet errors)`);
      }
    }

    if (args.soak) {
      log(`soak: ${soakRate}/s for ${soakSeconds}s over ${rsaReqs.length} distinct pre-generated calls, cycled`);
      const samples: MemorySample[] = [];
      const t0 = Date.now();
      startPhase();
      const sampler = setInterval(() => samples.push({ t: Math.round((Date.now() - t0) / 1000), rssMb: round(srv.rssBytes() / 2 ** 20), pssMb: round(srv.pssBytes() / 2 ** 20) }), 5000);
      const soakCalls = prepare(rsaReqs);
      const r = await runLoad(soakCalls, { ...load, durationMs: soakSeconds * 1000, ratePerSecond: soakRate });
      clearInterval(sampler);
      endPhase('soak');
      const achieved = r.ok / (r.elapsedMs / 1000);
      const flatness = soakFlatness(samples);
      results.soak = {
        seconds: soakSeconds,
        rate: soakRate,
        achievedPerSecond: round(achieved),
        served: r.ok,
        errors: r.failed,
        unavailable: r.unavailable,
        errorCodes: r.errorCodes,
        // The soak cycles the pre-generated calls: after the first pass every identity is renewed
        // with a token the server has seen before (its token cache may still hold it).
        distinctRequests: rsaReqs.length,
        passes: round(r.ok / Math.max(1, rsaReqs.length)),
        tokenLifetimeSeconds: ttl,
        latency: roundLat(summarize(r.latenciesMs)),
        rssAfterWarmupMb: flatness.rss?.afterWarmupMb,
        rssLastFifthMb: flatness.rss?.lastFifthMb,
        pssAfterWarmupMb: flatness.pss?.afterWarmupMb,
        pssLastFifthMb: flatness.pss?.lastFifthMb,
        flatness,
        samples,
      };
      verifySamples(r, soakCalls, rootPem, 'soak', failures);
      if (r.failed > 0) failures.push(`soak: ${r.failed} calls failed (${r.unavailable} UNAVAILABLE; codes ${JSON.stringify(r.errorCodes)})`);
      if (achieved < SOAK_MIN_RATE_FRACTION * soakRate) failures.push(`soak: ${round(achieved)} certificates/s achieved, below ${SOAK_MIN_RATE_FRACTION * 100} % of the ${soakRate}/s asked for`);
      if (!flatness.flat) failures.push(`soak memory not flat: ${flatness.verdict} (rule: ${flatness.rule})`);
    }

    log('crypto ceiling, second pass (server idle)');
    const ceilingsAfter = await measureCeilings();
    // The higher pass: contention only ever lowers a measurement, and the ratio is the lower for it.
    const ceilings = { rsa2048: Math.max(ceilingsBefore.rsa2048, ceilingsAfter.rsa2048), ec256: Math.max(ceilingsBefore.ec256, ceilingsAfter.ec256) };
    results.ceilings.rsa2048 = ceilings.rsa2048;
    results.ceilings.ec256 = ceilings.ec256;
    results.ceilingPasses = [ceilingsBefore, ceilingsAfter];
    for (const r of results.rows) {
      // A rate-limited row's throughput is the rate it was asked for: no ratio.
      if (r.rateLimited) continue;
      r.ceilingRatio = round(r.perSecond / ceilingFor(r.workload, ceilings), 2);
      // Above 1, the ceiling under-measured this machine (it ran on a busy machine, say), or the row
      // did less crypto per call than the ceiling counts (h2load's fixed body repeats one token).
      if (r.ceilingRatio > 1) results.warnings.push(`${r.scenario} (${r.driver}): throughput/ceiling ${r.ceilingRatio} > 1: the crypto ceiling under-measured, or the row did less crypto per call than it counts`);
    }
  } finally {
    if (rssTimer) clearInterval(rssTimer);
    if (pssTimer) clearInterval(pssTimer);
    if (server) results.peakRssPerProcessMb = server.peakRssMb();
    const outcome = server ? await server.stop() : 0;
    if (typeof outcome === 'string') failures.push(`meshcert was ended by ${outcome}${outcome === 'SIGKILL' ? ' during the run (the kernel\'s OOM killer sends it)' : ''}`);
    else if (outcome !== 0) failures.push(`meshcert exited with ${outcome} on SIGTERM`);
    // A worker that died was replaced and the run may look fine, but it dropped every connection it held.
    // Read in chunks: a long soak's log (one info line per certificate) outgrows a string.
    try {
      const deaths = server ? server.countLog('"msg":"worker died') : 0;
      if (deaths > 0) failures.push(`${deaths} worker process(es) died during the run`);
    } catch (e) {
      failures.push(`could not read the server's log: ${(e as Error).message}`);
    }
    // Kept when something failed: the server's log says why (a worker that died, say).
    if (failures.length === 0 && !args.keep) rmSync(dir, { recursive: true, force: true });
    else log(failures.length === 0 ? `kept ${dir} (--keep)` : `kept ${dir} (server.log) for the failures below`);
  }
  results.peakRssMb = round(peakRss / 2 ** 20);
  results.peakPssMb = round(peakPss / 2 ** 20);
  // Malformed results (no requests, latencies out of order or not numbers, no ceiling, a storm
  // not fully served) fail the run, smoke or full.
  const problems = validateResults(results, { rows: !args.soak && !stormOnly, storm: !args.soak, soak: !!args.soak });
  failures.push(...problems.map((p) => `malformed result: ${p}`));

  const machine = { cpus: cpus().length, model: cpus()[0]?.model, memoryGb: round(totalmem() / 2 ** 30), node: process.version, openssl: process.versions.openssl };
  const out = {
    when: new Date().toISOString(),
    mode: smoke ? 'smoke' : args.soak ? 'soak' : stormOnly ? 'storm' : 'full',
    machine,
    workers: args.workers ?? 'default',
    maxConcurrentStreams: maxConcurrentStreams ?? 'default',
    // What the server said it serves with ('auto' resolves by the memory limit it runs under).
    maxConcurrentStreamsServed: server?.maxConcurrentStreams ?? null,
    maxConnections: maxConnections ?? 'default',
    nodeOptions,
    serverWrapper: args['server-wrapper'] ?? null,
    mallocArenaMax: process.env.MALLOC_ARENA_MAX ?? null,
    failClosed: args['fail-closed'],
    ...results,
    failures,
  };
  mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
  const file = join(ROOT, 'bench/results', `${out.when.replace(/[:.]/g, '-')}-${out.mode}.json`);
  writeFileSync(file, `${JSON.stringify(out, null, 2)}\n`);
  printTable(out);
  for (const w of out.warnings) console.log(`WARNING: ${w}`);
  console.log(`\nresults: ${file}`);
  if (failures.length) {
    console.error(`\nFAILED:\n  ${failures.join('\n  ')}`);
    process.exitCode = 1;
  }
}

/**
 * Each process's share of a phase's server CPU, matched by PID (a worker started during the
 * phase counts from zero; one that ended in it has no share, its CPU being in the total).
 */
function shares(after: Array<{ pid: number; seconds: number }>, before: Array<{ pid: number; seconds: number }>, total: number): number[] {
  const at = new Map(before.map((p) => [p.pid, p.seconds]));
  return after.map((p) => round((p.seconds - (at.get(p.pid) ?? 0)) / Math.max(total, 1e-9), 2));
}

function row(scenario: string, workload: Workload, driver: string, r: LoadResult, cpu: number): Row {
  return {
    scenario,
    workload,
    driver,
    requests: r.ok,
    perSecond: round(r.ok / (r.elapsedMs / 1000)),
    latency: roundLat(summarize(r.latenciesMs)),
    // Every call that did not end OK, whatever its status (RESOURCE_EXHAUSTED and UNAVAILABLE too).
    errors: r.failed,
    unavailable: r.unavailable,
    serverCpuSeconds: round(cpu, 2),
    cpuPerRequestUs: round((cpu / Math.max(1, r.ok)) * 1e6),
  };
}

/**
 * Every call of a run must have ended OK, whatever the status it did not (RESOURCE_EXHAUSTED
 * counts like any other), and every sampled response must be a chain that verifies, for the
 * identity and key asked for (a fast wrong answer is not a result).
 */
function checkSamples(r: LoadResult, calls: readonly PreparedCall[], rootPem: string, scenario: string, failures: string[]): void {
  if (r.failed || r.otherErrors || r.unavailable || r.ok + r.failed !== calls.length) {
    failures.push(`${scenario}: ${r.ok} OK of ${calls.length} calls, ${r.failed} failed (${r.unavailable} UNAVAILABLE, ${r.otherErrors} with another status; codes ${JSON.stringify(r.errorCodes)})`);
  }
  verifySamples(r, calls, rootPem, scenario, failures);
}

function verifySamples(r: LoadResult, calls: readonly PreparedCall[], rootPem: string, scenario: string, failures: string[]): void {
  // Every identity of a run is asked for with one key (a cycled soak repeats both together).
  const keyOf = new Map(calls.flatMap((c) => (c.expect ? [[c.expect.spiffeId, c.expect.spki] as const] : [])));
  for (const body of r.samples) {
    const chain = decodeChain(body);
    try {
      verifyResponseChain(chain, rootPem);
      const problem = leafMismatch(chain[0]!, keyOf);
      if (problem) failures.push(`${scenario}: a response certifies the wrong thing: ${problem}`);
    } catch (e) {
      failures.push(`${scenario}: a response did not verify: ${(e as Error).message}`);
    }
  }
}

function printTable(out: Results & { machine: Record<string, unknown> }): void {
  const m = out.machine;
  console.log(`\nmeshcert bench: ${m.cpus} x ${m.model}, Node ${m.node}, OpenSSL ${m.openssl}; ${shape()}`);
  const passes = out.ceilingPasses?.map((p) => `RSA ${p.rsa2048}, EC ${p.ec256}`).join(' / ');
  console.log(`crypto ceiling (all cores, token verify + CSR verify + leaf sign; the higher of two passes): RSA ${out.ceilings.rsa2048}/s, EC ${out.ceilings.ec256}/s${passes ? ` (passes before / after the rows: ${passes})` : ''}`);
  const head = ['scenario', 'driver', 'req', 'cert/s', 'p50 ms', 'p90', 'p99', 'max', 'err', 'unavail', 'cpu µs/req', '/ceiling', 'cpu share (primary, workers)'];
  const lines = out.rows.map((r) => [r.scenario, r.driver, r.requests, r.perSecond, r.latency.p50, r.latency.p90, r.latency.p99, r.latency.max, r.errors, r.unavailable, r.cpuPerRequestUs, r.ceilingRatio ?? '', r.cpuShare?.join('/') ?? '']);
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => String(l[i]).length)));
  const fmt = (cells: unknown[]): string => cells.map((c, i) => String(c).padEnd(widths[i]!)).join('  ');
  console.log(fmt(head));
  for (const l of lines) console.log(fmt(l));
  if (out.storm) console.log(`storm: ${JSON.stringify(out.storm)}`);
  if (out.soak) {
    console.log(`soak: ${JSON.stringify({ ...out.soak, flatness: undefined, samples: undefined })}`);
    const f = out.soak.flatness;
    console.log(`soak memory: ${f.verdict}; ${f.samplesJudged} samples after ${f.warmupSeconds} s judged; rule: ${f.rule}`);
  }
  console.log(`server peak RSS (primary + workers): ${out.peakRssMb} MB; per process (VmHWM, primary first): ${out.peakRssPerProcessMb.join(', ')} MB; by phase: ${JSON.stringify(out.phasePeakRssMb)}`);
  console.log(`server peak PSS (primary + workers; shared pages counted once, as the pod's memory cgroup counts them): ${out.peakPssMb} MB`);
}

function roundLat(l: LatencySummary): LatencySummary {
  return { p50: round(l.p50), p90: round(l.p90), p99: round(l.p99), max: round(l.max), mean: round(l.mean) };
}

function interleave<T>(a: T[], b: T[]): T[] {
  const out: T[] = [];
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if (a[i]) out.push(a[i]!);
    if (b[i]) out.push(b[i]!);
  }
  return out;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
