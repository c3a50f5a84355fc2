/**
 * A server that cannot start must say why and exit non-zero, leaving nothing running: a port
 * already taken is the common case (a second instance, a sidecar on the same port). Before, a
 * worker that could not bind left the primary and the other worker up, serving half a config.
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { handlesSignal, ROOT, runCli } from '../support/cli.js';
import { TEST_ISSUER, writeTestJwks } from '../support/harness.js';

/** PIDs of live processes whose environment carries this marker (the CLI and any worker it forked). */
function processesMarked(marker: string): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (readFileSync(`/proc/${d}/environ`, 'latin1').includes(`MESHCERT_TEST_MARK=${marker}`)) out.push(Number(d));
    } catch {
      // gone, or not ours to read
    }
  }
  return out;
}

describe('serve exits with the reason when it cannot start', () => {
  let dir: string;
  let blocker: Server;
  let taken: number;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshcert-startfail-'));
    await writeTestJwks(join(dir, 'jwks.json'));
    blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    taken = (blocker.address() as { port: number }).port;
  });
  afterAll(async () => {
    await new Promise<void>((resolve) => blocker.close(() => resolve()));
    rmSync(dir, { recursive: true, force: true });
  });

  it.each([
    ['the gRPC port is taken, two workers', { workers: 2, grpcTaken: true }, (port: number) => `cannot listen on server.listen 127.0.0.1:${port}: the address is already in use`],
    ['the gRPC port is taken, one process', { workers: 1, grpcTaken: true }, (port: number) => `cannot listen on server.listen 127.0.0.1:${port}: the address is already in use`],
    ['the admin port is taken', { workers: 2, adminTaken: true }, (port: number) => `cannot listen on admin.listen 127.0.0.1:${port}: the address is already in use`],
    ['the JWKS file does not exist, two workers', { workers: 2, jwksFile: '/nonexistent/jwks.json' }, () => 'auth.clusters "Kubernetes": jwksFile /nonexistent/jwks.json: cannot read JSON'],
    [
      'the Kubernetes token file does not exist (root distribution), one process',
      { workers: 1, extra: 'istio: { rootCertConfigMap: { enabled: true } }\nkubernetes: { server: "https://127.0.0.1:1", tokenFile: /nonexistent/token }\n' },
      () => 'kubernetes: Kubernetes API token file /nonexistent/token does not exist',
    ],
  ])('%s', async (_name, o: { workers: number; grpcTaken?: boolean; adminTaken?: boolean; jwksFile?: string; extra?: string }, expected) => {
    const grpc = o.grpcTaken ? `127.0.0.1:${taken}` : '127.0.0.1:0';
    const admin = o.adminTaken ? `127.0.0.1:${taken}` : '127.0.0.1:0';
    const data = mkdtempSync(join(dir, 'data-'));
    const configFile = join(data, 'meshcert.yaml');
    writeFileSync(
      configFile,
      `dataDir: ${data}
server: { listen: "${grpc}", workers: ${o.workers} }
admin: { listen: "${admin}" }
ca: { autoInit: true }
${o.extra ?? ''}auth:
  clusters:
    - name: Kubernetes
      jwt: [{ issuer: "${TEST_ISSUER}", jwksFile: ${o.jwksFile ?? join(dir, 'jwks.json')} }]
`,
    );
    const marker = randomUUID();
    const r = await runCli(['serve', '--config', configFile], { env: { MESHCERT_TEST_MARK: marker }, timeoutMs: 45_000 });
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toContain(`meshcert: ${expected(taken)}`);
    expect(r.stderr).not.toMatch(/unexpected error|\n\s+at /);
    // Nothing says "serving" before all of it has started (a driver waiting for that line once
    // took a dying server for a running one); the admin port is bound before any CA work or worker.
    if (o.adminTaken) expect(r.stdout).not.toMatch(/meshcert serving|CA loaded|created a new root/);
    if (o.workers === 1) expect(r.stdout).not.toMatch(/meshcert serving/);
    // No worker outlives the primary (any that did would be killed here, not left running).
    try {
      await expect.poll(() => processesMarked(marker), { timeout: 5_000 }).toEqual([]);
    } finally {
      for (const pid of processesMarked(marker)) process.kill(pid, 'SIGKILL');
    }
  }, 60_000);
});

/** A config for serve in `data`: JWT with the test JWKS there, a CA made at start, and `extra`. */
function startConfig(data: string, o: { workers: number; admin: string; extra?: string }): string {
  return `dataDir: ${data}
server: { listen: "127.0.0.1:0", workers: ${o.workers} }
admin: ${o.admin}
ca: { autoInit: true }
${o.extra ?? ''}auth:
  clusters:
    - name: Kubernetes
      jwt: [{ issuer: "${TEST_ISSUER}", jwksFile: ${join(data, 'jwks.json')} }]
`;
}

/** Starts serve with `yaml` as its config in `data`, collecting its output. */
function spawnServe(data: string, yaml: string, marker: string): { child: ReturnType<typeof spawn>; output: () => string; exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }> } {
  const configFile = join(data, 'meshcert.yaml');
  writeFileSync(configFile, yaml);
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'serve', '--config', configFile], { cwd: ROOT, env: { ...process.env, MESHCERT_TEST_MARK: marker }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.on('exit', (code, signal) => r({ code, signal })));
  return { child, output: () => out, exited };
}

/**
 * Starts single-process serve with ambient on, against an API server that accepts connections and
 * never answers: the start hangs in the pod cache's wait (30 s). Call `end` in a finally.
 */
async function startHanging(prefix: string, admin: string): Promise<{ s: ReturnType<typeof spawnServe>; end: () => void }> {
  const data = mkdtempSync(join(tmpdir(), prefix));
  const silent = createServer(() => {});
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  const port = (silent.address() as { port: number }).port;
  const marker = randomUUID();
  const end = (): void => {
    for (const pid of processesMarked(marker)) process.kill(pid, 'SIGKILL');
    silent.close();
    rmSync(data, { recursive: true, force: true });
  };
  try {
    await writeTestJwks(join(data, 'jwks.json'));
    writeFileSync(join(data, 'kube-token'), 'token');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=kube', '-keyout', join(data, 'kube-ca.key'), '-out', join(data, 'kube-ca.pem'), '-days', '1'], { stdio: 'pipe' });
    const extra = `ambient: { enabled: true }\nkubernetes: { server: "https://127.0.0.1:${port}", caFile: ${join(data, 'kube-ca.pem')}, tokenFile: ${join(data, 'kube-token')} }\n`;
    return { s: spawnServe(data, startConfig(data, { workers: 1, admin, extra }), marker), end };
  } catch (e) {
    end();
    throw e;
  }
}

describe('serve asked to stop while it starts', () => {
  it('keeps a SIGTERM sent the moment its CLI starts, long before its modules load and its config is read, and stops cleanly once started', async () => {
    const data = mkdtempSync(join(tmpdir(), 'meshcert-earliest-stop-'));
    const marker = randomUUID();
    try {
      await writeTestJwks(join(data, 'jwks.json'));
      const s = spawnServe(data, startConfig(data, { workers: 1, admin: '{ listen: "127.0.0.1:0" }' }), marker);
      // SIGHUP's handler is the CLI's first act for serve: from then on a stop must not be lost.
      await expect.poll(() => handlesSignal(s.child.pid!, 1), { timeout: 30_000, interval: 1 }).toBe(true);
      s.child.kill('SIGTERM');
      const { code, signal } = await s.exited;
      expect([code, signal], s.output()).toEqual([0, null]);
      expect(s.output()).toMatch(/stop requested while starting/);
      expect(s.output()).toMatch(/"msg":"stopped"/);
    } finally {
      for (const pid of processesMarked(marker)) process.kill(pid, 'SIGKILL');
      rmSync(data, { recursive: true, force: true });
    }
  }, 60_000);

  it('exits at once on a second request while a start hangs (an API server that never answers)', async () => {
    const { s, end } = await startHanging('meshcert-earlystop2-', '{ enabled: false }');
    try {
      await expect.poll(() => /created a new root and intermediate CA/.test(s.output()), { timeout: 30_000, interval: 20 }).toBe(true);
      s.child.kill('SIGTERM');
      await expect.poll(() => /stop requested while starting/.test(s.output()), { timeout: 15_000, interval: 20 }).toBe(true);
      const t = Date.now();
      s.child.kill('SIGTERM');
      const { code } = await s.exited;
      expect(code, s.output()).toBe(1);
      expect(Date.now() - t).toBeLessThan(15_000); // the pod cache would wait 30 s
      expect(s.output()).toMatch(/second stop request while starting; exiting now/);
    } finally {
      end();
    }
  }, 60_000);

  it('answers probes while it starts: /healthz 200, /readyz 503 naming what is still starting', async () => {
    const { s, end } = await startHanging('meshcert-startprobe-', '{ listen: "127.0.0.1:0" }');
    try {
      const admin = await vi.waitFor(() => Number(/"port":(\d+),"msg":"admin server listening"/.exec(s.output())?.[1] ?? expect.fail('admin not up yet')), { timeout: 30_000, interval: 50 });
      expect((await fetch(`http://127.0.0.1:${admin}/healthz`)).status).toBe(200);
      const r = await fetch(`http://127.0.0.1:${admin}/readyz`);
      expect(r.status).toBe(503);
      const body = (await r.json()) as { ready: boolean; checks: Array<{ name: string; ok: boolean; detail: string }> };
      expect(body.checks.filter((c) => c.name === 'ca' || c.name === 'grpc')).toEqual([
        { name: 'ca', ok: false, detail: 'loading' },
        { name: 'grpc', ok: false, detail: 'starting' },
      ]);
      expect(s.output()).not.toMatch(/meshcert serving/);
      s.child.kill('SIGTERM');
      s.child.kill('SIGTERM');
      await s.exited;
    } finally {
      end();
    }
  }, 60_000);

  it('keeps the request and shuts down cleanly once started (as PID 1, an unhandled SIGTERM would be dropped)', async () => {
    const data = mkdtempSync(join(tmpdir(), 'meshcert-earlystop-'));
    try {
      await writeTestJwks(join(data, 'jwks.json'));
      const marker = randomUUID();
      const s = spawnServe(
        data,
        startConfig(data, { workers: 2, admin: '{ listen: "127.0.0.1:0" }' }),
        marker,
      );
      // The CA is created before the workers are forked, and they take a second or more to load:
      // the signal lands while the server is still starting.
      await expect.poll(() => /created a new root and intermediate CA/.test(s.output()), { timeout: 30_000, interval: 20 }).toBe(true);
      s.child.kill('SIGTERM');
      const { code, signal } = await s.exited;
      expect({ code, signal }, s.output()).toEqual({ code: 0, signal: null });
      expect(s.output()).toMatch(/"msg":"stopped"/);
      await expect.poll(() => processesMarked(marker), { timeout: 5_000 }).toEqual([]);
    } finally {
      rmSync(data, { recursive: true, force: true });
    }
  }, 60_000);
});

