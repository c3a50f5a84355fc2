/**
 * Starts meshcert as a user would (the built CLI, a config file, a CA made by `ca init`, TLS,
 * production log level, default worker count) and samples its CPU time and memory from /proc.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LogCounter } from './log-counter.js';
import { clockTicks } from './proc.js';

export interface BenchServer {
  readonly port: number;
  /** The HTTP/2 streams per connection it serves with, as it said when it started ('auto' resolved). */
  readonly maxConcurrentStreams: number | undefined;
  readonly child: ChildProcess;
  /** CPU seconds (user+system) used so far by the primary and its workers. */
  cpuSeconds(): number;
  /** CPU seconds so far per process (by PID: a worker replaced is another process): the primary first, then each worker. */
  cpuSecondsPerProcess(): Array<{ pid: number; seconds: number }>;
  /** Current RSS of primary + workers, bytes. */
  rssBytes(): number;
  /**
   * Current PSS of primary + workers, bytes: each shared page (the node binary, shared libraries)
   * counted once across the processes, as the pod's memory cgroup counts it. RSS counts them in
   * every process.
   */
  pssBytes(): number;
  /** Peak RSS (VmHWM) of each process so far, MB: the primary first, then workers. */
  peakRssMb(): number[];
  /**
   * The server's meshcert_grpc_error_statuses_total by code name, scraped from its admin port: every
   * status but OK it has sent (h2load reads no grpc-status, so its rows count errors by this).
   */
  errorStatuses(): Promise<Record<string, number>>;
  /** Complete lines of the server's log containing this string (incremental: see LogCounter). */
  countLog(fragment: string): number;
  /** Stops the server (SIGTERM): its exit code, or the signal that ended it (`SIGKILL`, say) when it died of one. */
  stop(): Promise<number | NodeJS.Signals>;
}

/** What a run changes from the defaults (each absent: the config's default). */
export interface ConfigChoices {
  /** server.workers. */
  workers?: string;
  /** server.maxConcurrentStreams. */
  maxConcurrentStreams?: number;
  /** server.maxConnections. */
  maxConnections?: number;
  /** inventory.failClosed, under which every certificate is answered only once its record is stored. */
  failClosed?: boolean;
}

export function writeConfig(dir: string, jwksFile: string, choices: ConfigChoices = {}): string {
  const file = join(dir, 'meshcert.yaml');
  const server = [
    choices.workers === undefined ? '' : `  workers: ${choices.workers}\n`,
    choices.maxConcurrentStreams === undefined ? '' : `  maxConcurrentStreams: ${choices.maxConcurrentStreams}\n`,
    choices.maxConnections === undefined ? '' : `  maxConnections: ${choices.maxConnections}\n`,
  ].join('');
  writeFileSync(
    file,
    `dataDir: ${join(dir, 'data')}
admin:
  listen: 127.0.0.1:0
server:
  listen: 127.0.0.1:0
${server}${choices.failClosed ? 'inventory:\n  failClosed: true\n' : ''}ca:
  dir: ${join(dir, 'ca')}
auth:
  clusters:
    - name: Kubernetes
      jwt:
        - issuer: https://kubernetes.default.svc.cluster.local
          jwksFile: ${jwksFile}
`,
  );
  return file;
}

/**
 * `nodeArgs` go before the script (e.g. --cpu-prof); cluster workers inherit them. `wrapper`, when
 * given, is started with node's command line as its arguments and must exec it. The server's
 * stdout and stderr go straight to `logFile`: read through a pipe by this driver, the log cost
 * about 10 µs of the shared CPU per certificate (measured), which is not the server's.
 */
export async function startServer(root: string, configFile: string, logFile: string, nodeArgs: readonly string[] = [], wrapper?: string): Promise<BenchServer> {
  const fd = openSync(logFile, 'w');
  const command = [process.execPath, ...nodeArgs, join(root, 'dist/cli.js'), 'serve', '--config', configFile];
  // A wrapper must exec the command it is given: the bench samples the process it started.
  // MESHCERT_* variables override the config file (MESHCERT_INVENTORY_STORE=none would turn the
  // inventory off): the server under test runs on the bench's config alone.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MESHCERT_')));
  const child = spawn(wrapper ?? command[0]!, wrapper ? command : command.slice(1), { stdio: ['ignore', fd, fd], env });
  closeSync(fd);
  const { port, streams } = await new Promise<{ port: number; streams: number | undefined }>((resolve, reject) => {
    const started = Date.now();
    const poll = setInterval(() => {
      // The primary's line (a worker's has "worker":N), which comes once the whole server is up.
      const m = /^(?![^\n]*"worker":)[^\n]*"port":(\d+)[^\n]*"msg":"meshcert serving"/m.exec(readFileSync(logFile, 'utf8'));
      if (m) {
        clearInterval(poll);
        const streams = /"maxConcurrentStreams":(\d+)/.exec(m[0])?.[1];
        resolve({ port: Number(m[1]), streams: streams === undefined ? undefined : Number(streams) });
      } else if (Date.now() - started > 60_000) {
        clearInterval(poll);
        reject(new Error(`meshcert did not start; see ${logFile}`));
      }
    }, 100);
    child.on('exit', (code) => {
      clearInterval(poll);
      reject(new Error(`meshcert exited with ${code}; see ${logFile}`));
    });
  });
  // Said at once: a driver's own error for a server gone (a connect deadline, say) does not name the cause.
  let stopping = false;
  child.on('exit', (code, signal) => {
    if (!stopping) process.stderr.write(`[bench] meshcert exited during the run (${signal ?? `code ${code}`}); see ${logFile}\n`);
  });
  // Let every worker finish starting.
  await new Promise((r) => setTimeout(r, 1000));
  // Finding the workers scans all of /proc (about 1.4 ms here): done at most every 2 s, not at
  // every 200 ms RSS sample, since the driver's CPU is taken from the server under test. A worker
  // restarted meanwhile is missed for up to 2 s.
  let known: { at: number; pids: number[] } = { at: -Infinity, pids: [] };
  const pids = (): number[] => {
    const now = performance.now();
    if (now - known.at > 2_000) known = { at: now, pids: [child.pid!, ...childrenOf(child.pid!)] };
    return known.pids;
  };
  // A process gone (a worker that died, the OOM killer's victim) keeps the CPU it was last read
  // with: a phase's CPU is the difference of two totals, which must not go down (a storm whose
  // server was killed read -1.68 s). The phase it went in lacks its CPU since that read, and says
  // so elsewhere (the exit is reported, a run with a dead worker fails).
  const lastCpu = new Map<number, number>();
  const cpuOf = (pid: number): number => {
    const s = procCpuSeconds(pid);
    if (s !== undefined) lastCpu.set(pid, s);
    return lastCpu.get(pid) ?? 0;
  };
  const counters = new Map<string, LogCounter>();
  const startLog = readFileSync(logFile, 'utf8');
  const adminPort = /"port":(\d+),"msg":"admin server listening"/.exec(startLog)?.[1];
  // The inventory is part of what is measured (README: "inventory on with its default store").
  if (!/"store":"sqlite"[^\n]*"msg":"inventory store open"/.test(startLog)) {
    child.kill('SIGTERM');
    throw new Error(`the server did not say its SQLite inventory is open; see ${logFile}`);
  }
  return {
    port,
    maxConcurrentStreams: streams,
    child,
    cpuSeconds: () => {
      for (const p of pids()) cpuOf(p);
      let sum = 0;
      for (const s of lastCpu.values()) sum += s;
      return sum;
    },
    cpuSecondsPerProcess: () => pids().map((pid) => ({ pid, seconds: cpuOf(pid) })),
    rssBytes: () => pids().reduce((sum, p) => sum + procRss(p), 0),
    pssBytes: () => pids().reduce((sum, p) => sum + procPss(p), 0),
    peakRssMb: () => pids().map((p) => Math.round(procStatusKb(p, 'VmHWM') / 1024)),
    errorStatuses: async () => {
      if (adminPort === undefined) throw new Error(`the server logged no admin port, so its sent statuses cannot be read; see ${logFile}`);
      const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
      const series = [...text.matchAll(/^meshcert_grpc_error_statuses_total\{code="(\w+)"\} (\d+)$/gm)];
      // Every code's series exists from the start (at 0): none read means this read nothing, not no error.
      if (series.length === 0) throw new Error(`no meshcert_grpc_error_statuses_total series in the server's /metrics: its h2load rows' errors cannot be counted`);
      return Object.fromEntries(series.map((m) => [m[1]!, Number(m[2])]));
    },
    countLog: (fragment) => {
      let c = counters.get(fragment);
      if (!c) counters.set(fragment, (c = new LogCounter(logFile, fragment)));
      return c.read();
    },
    stop: () =>
      new Promise((resolve) => {
        stopping = true;
        // Gone already, by an exit or a signal (the OOM killer's SIGKILL): its 'exit' has been emitted.
        if (child.exitCode !== null || child.signalCode !== null) return resolve(exitOutcome(child.exitCode, child.signalCode));
        child.once('exit', (code, signal) => resolve(exitOutcome(code, signal)));
        child.kill('SIGTERM');
      }),
  };
}

/** An exit code, or the signal that ended the process instead. */
function exitOutcome(code: number | null, signal: NodeJS.Signals | null): number | NodeJS.Signals {
  return code ?? signal ?? -1;
}

function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(d));
    } catch {
      // process ended meanwhile
    }
  }
  return out;
}

/** User + system CPU of a process, or undefined once it is gone. */
function procCpuSeconds(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / clockTicks();
  } catch {
    return undefined;
  }
}

function procRss(pid: number): number {
  return procStatusKb(pid, 'VmRSS') * 1024;
}

function procPss(pid: number): number {
  try {
    const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

function procStatusKb(pid: number, field: string): number {
  try {
    const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}
