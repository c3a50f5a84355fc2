/** Runs the meshcert CLI as a user would, as a child process (through tsx, so no build is needed). */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, expect, vi } from 'vitest';
import { writeServeDir } from './harness.js';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CLI = ['--import', 'tsx', 'src/cli.ts'];

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Whether the CLI can be run as uid 65534 (nobody) here: only as root, and only when that user can
 * read this checkout and its node_modules (a clone under a 0700 directory cannot).
 */
export function canRunAsNobody(): boolean {
  return process.getuid?.() === 0 && spawnSync(process.execPath, [...CLI, '--help'], { cwd: ROOT, uid: 65534, gid: 65534, stdio: 'ignore', timeout: 30_000 }).status === 0;
}

/** `uid`/`gid`: run as that user (only root may), as a server started by another user than made its files would. */
export function runCli(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number; uid?: number; gid?: number } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const as = opts.uid === undefined ? {} : { uid: opts.uid, gid: opts.gid ?? opts.uid };
    const child = spawn(process.execPath, [...CLI, ...args], { cwd: ROOT, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'], ...as });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`meshcert ${args.join(' ')} timed out\n${stderr}`));
    }, opts.timeoutMs ?? 60_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

export interface ServerProcess {
  child: ChildProcess;
  port: number;
  output: () => string;
  /** Resolves with the exit code. */
  exited: Promise<number | null>;
}

/**
 * Starts `meshcert serve` and resolves once it logs that it is serving (with the bound port): the
 * line of the process the test started, not a worker's, which comes first. `starting` sees the
 * process while it starts.
 */
export function startServe(args: string[], env: NodeJS.ProcessEnv = {}, starting?: (child: ChildProcess, output: () => string) => void): Promise<ServerProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...CLI, 'serve', ...args], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`serve did not start:\n${out}`));
    }, 60_000);
    const onData = (d: Buffer): void => {
      out += d.toString();
      const m = /^(?![^\n]*"worker":)[^\n]*"port":(\d+)[^\n]*"msg":"meshcert serving"/m.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ child, port: Number(m[1]), output: () => out, exited });
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`serve exited with ${code} before serving:\n${out}`));
    });
    starting?.(child, () => out);
  });
}

/** The admin server's port, once the server has logged it (it may start after "meshcert serving"). */
export function adminPort(server: ServerProcess): Promise<number> {
  return vi.waitFor(() => Number(/"port":(\d+),"msg":"admin server listening"/.exec(server.output())?.[1] ?? expect.fail('admin not up yet')), { timeout: 10_000 });
}

/** The readiness check's word on the workers ('2/2 workers serving'); '' before the admin server is up. */
export async function readiness(output: () => string): Promise<string> {
  const port = /"port":(\d+),"msg":"admin server listening"/.exec(output())?.[1];
  if (!port) return '';
  const r = await fetch(`http://127.0.0.1:${port}/readyz`);
  const body = (await r.json()) as { checks: Array<{ name: string; detail: string }> };
  return body.checks.find((c) => c.name === 'grpc')!.detail;
}

/**
 * A describe block's `meshcert serve` runs: each call writes a fresh directory (writeServeDir:
 * `yaml` as meshcert.yaml beside the test JWKS) and starts serve on it; after the block, every
 * server still running is killed and every directory removed, whatever the tests asserted.
 */
export function serveRuns(): (prefix: string, yaml: string, env?: NodeJS.ProcessEnv) => Promise<{ s: ServerProcess; dir: string }> {
  const servers: ServerProcess[] = [];
  const dirs: string[] = [];
  afterAll(() => {
    for (const s of servers) killIfRunning(s);
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
  return async (prefix, yaml, env) => {
    const { dir, config } = await writeServeDir(prefix, yaml);
    dirs.push(dir);
    const s = await startServe(['--config', config], env);
    servers.push(s);
    return { s, dir };
  };
}

/** Kills a server a test left running (an assertion failed before the test's own shutdown). */
export function killIfRunning(server: ServerProcess | undefined): void {
  if (server && server.child.exitCode === null) server.child.kill('SIGKILL');
}

/** Whether process `pid` has a handler for signal number `signal` (/proc/PID/status's SigCgt); false when it is gone or not there yet. */
export function handlesSignal(pid: number, signal: number): boolean {
  try {
    return ((BigInt(`0x${/^SigCgt:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]}`) >> BigInt(signal - 1)) & 1n) === 1n;
  } catch {
    return false;
  }
}
