/**
 * Latency at a fixed rate against the serving processes' garbage collection (bench/HISTORY.md,
 * round 28). Starts the bench's server (same config, the built dist/) with --trace-gc-nvp, drives
 * one fixed RSA request with h2load at `--rate` calls/s (`--connections` of 64 streams; 8, as
 * the bench's half-of-peak rows, by default) for `--runs` runs of 15 s, and prints per run: h2load's latency, the
 * mark-compacts (pause and its `clear.external_string_table` step, ms) and scavenges of every
 * process, and per process the share of its young-generation allocation that scavenges promoted to
 * the old generation, which is what makes mark-compacts come sooner.
 *
 *   npm run build && npx tsx bench/experiments/gc-at-rate.ts [--rate 2750] [--runs 3]
 *     [--connections 8] [--node-options="--v8-flag ..."] [--prefill 60000] [--peak-first]
 *
 * --prefill N issues N distinct certificates first (half RSA, half EC), as the bench's distinct
 * rows do before its h2load rows; --peak-first runs h2load unthrottled for 15 s before each run,
 * as the bench's peak row comes before its half-of-peak row. Needs h2load (nghttp2-client).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { prepare, runLoad } from '../lib/h2-client.js';
import { runH2load } from '../lib/h2load.js';
import { startServer, writeConfig } from '../lib/server.js';
import { makeRequests, makeTokenSigners, rsaKeyPool } from '../lib/workload.js';

const { values: args } = parseArgs({
  options: {
    rate: { type: 'string', default: '2750' },
    runs: { type: 'string', default: '3' },
    'node-options': { type: 'string', default: '' },
    prefill: { type: 'string', default: '0' },
    'peak-first': { type: 'boolean', default: false },
    connections: { type: 'string', default: '8' },
  },
});
const rate = Number(args.rate);
const runs = Number(args.runs);
const prefill = Number(args.prefill);
const connections = Number(args.connections);
if (!(rate > 0) || !(runs > 0) || !(prefill >= 0) || !Number.isInteger(connections) || connections < 1) {
  process.stderr.write('--rate and --runs take positive numbers, --prefill a count, --connections a whole number\n');
  process.exit(2);
}

const ROOT = process.cwd();
const dir = mkdtempSync(join(tmpdir(), 'meshcert-gc-at-rate-'));
execFileSync(process.execPath, [join(ROOT, 'dist/cli.js'), 'ca', 'init', '--dir', join(dir, 'ca')], { stdio: 'ignore' });
const signers = makeTokenSigners();
writeFileSync(join(dir, 'jwks.json'), JSON.stringify({ keys: signers.map((s) => s.jwk) }));
const logFile = join(dir, 'server.log');
const nodeArgs = ['--trace-gc-nvp', ...(args['node-options'] ?? '').split(/\s+/).filter(Boolean)];
const srv = await startServer(ROOT, writeConfig(dir, join(dir, 'jwks.json')), logFile, nodeArgs);
try {
  const pool = await rsaKeyPool(16);
  if (prefill > 0) {
    const reqs = [...makeRequests(Math.ceil(prefill / 2), 'rsa2048', signers, pool, 'pre-r'), ...makeRequests(Math.floor(prefill / 2), 'ec256', signers, pool, 'pre-e')];
    const r = await runLoad(prepare(reqs), { port: srv.port, rootPem: readFileSync(join(dir, 'ca/root-cert.pem'), 'utf8'), connections: 8, concurrency: 64 });
    console.log(`prefill: ${r.ok} issued, ${r.failed} failed`);
  }
  const one = makeRequests(1, 'rsa2048', signers, pool, 'fixed')[0]!;
  const base = { port: srv.port, body: prepare([one])[0]!.body, token: one.token, dir, clients: 8, streams: 16 };
  await runH2load({ ...base, durationSeconds: 8 }); // warm-up
  for (let i = 0; i < runs; i++) {
    if (args['peak-first']) {
      const peak = await runH2load({ ...base, durationSeconds: 15 });
      console.log(`peak: ${peak.perSecond.toFixed(0)}/s`);
      await new Promise((r) => setTimeout(r, 2000));
    }
    const from = readFileSync(logFile, 'utf8').length;
    const h = await runH2load({ ...base, durationSeconds: 15, clients: connections, streams: 64, rpsPerClient: Math.floor(rate / connections) });
    console.log(`run ${i}: ${h.perSecond.toFixed(0)}/s, p50 ${h.latency.p50.toFixed(1)} p90 ${h.latency.p90.toFixed(1)} p99 ${h.latency.p99.toFixed(1)} max ${h.latency.max.toFixed(1)} ms, ${h.failed} failed`);
    console.log(describeGc(readFileSync(logFile, 'utf8').slice(from)));
  }
} finally {
  await srv.stop();
}

/** One line per process from --trace-gc-nvp output ("[pid:isolate] ... pause=... gc=mc|s ..."). */
function describeGc(trace: string): string {
  const field = (line: string, name: string): number => Number(new RegExp(`\\b${name.replace(/\./g, '\\.')}=([\\d.]+)`).exec(line)?.[1] ?? 0);
  const byPid = new Map<string, { mc: string[]; scavenges: number[]; promoted: number; allocated: number }>();
  for (const line of trace.split('\n')) {
    const kind = / gc=(mc|s) /.exec(line)?.[1];
    const pid = /^\[(\d+):/.exec(line)?.[1];
    if (!kind || !pid) continue;
    const p = byPid.get(pid) ?? { mc: [], scavenges: [], promoted: 0, allocated: 0 };
    byPid.set(pid, p);
    if (kind === 'mc') {
      p.mc.push(`${field(line, 'pause').toFixed(0)}/${field(line, 'clear.external_string_table').toFixed(0)}`);
    } else {
      p.scavenges.push(field(line, 'pause'));
      p.promoted += field(line, 'promoted');
      p.allocated += field(line, 'allocated');
    }
  }
  return [...byPid]
    .map(([pid, p]) => {
      const s = p.scavenges.sort((a, b) => a - b);
      const share = p.allocated > 0 ? ((100 * p.promoted) / p.allocated).toFixed(2) : '0';
      return `  pid ${pid}: mark-compacts (pause/external strings, ms) [${p.mc.join(' ')}]; ${s.length} scavenges, median ${(s[s.length >> 1] ?? 0).toFixed(1)} ms, max ${(s.at(-1) ?? 0).toFixed(1)} ms; promoted ${share} % of allocated`;
    })
    .join('\n');
}
