import { EventEmitter } from 'node:events';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { parseConfig } from '../../../src/config/load.js';
import type { ConfigInput, MeshcertConfig } from '../../../src/config/schema.js';
import { createLogger } from '../../../src/log/logger.js';
import { initialHeapMb, startWorkers, workerExecArgv, type PrimaryMessage, type WorkerMessage, type WorkerPool } from '../../../src/runtime/cluster.js';

// The primary's bookkeeping is tested against fake workers: node:cluster's fork gives FakeWorkers.
const fake = vi.hoisted(() => ({ forked: [] as FakeWorker[] }));
vi.mock('node:cluster', () => ({
  default: {
    isWorker: false,
    setupPrimary: () => {},
    fork: () => {
      const w = new FakeWorker();
      fake.forked.push(w);
      return w;
    },
  },
}));

const server = { workerHeapMb: 192, workerInitialHeapMb: 'auto' as const, workerSemiSpaceMb: 0 };

describe('workerExecArgv', () => {
  it("keeps this process's flags and adds the configured heap sizes (0 adds nothing)", () => {
    expect(workerExecArgv(server, ['--enable-source-maps'], ['--enable-source-maps'])).toEqual([
      '--enable-source-maps',
      '--max-old-space-size=192',
      '--initial-old-space-size=64',
    ]);
    expect(workerExecArgv({ workerHeapMb: 0, workerInitialHeapMb: 0, workerSemiSpaceMb: 4 }, [], [])).toEqual(['--max-semi-space-size=4']);
  });

  it('leaves a flag the operator set, on the command line or in NODE_OPTIONS, with dashes or underscores', () => {
    expect(workerExecArgv(server, ['--max-old-space-size=512'], ['--max-old-space-size=512'])).toEqual([
      '--max-old-space-size=512',
      '--initial-old-space-size=170',
    ]);
    // From NODE_OPTIONS: inherited by the fork through the environment, so not repeated here.
    expect(workerExecArgv(server, [], ['--initial_old_space_size=8'])).toEqual(['--max-old-space-size=192']);
  });
});

describe('initialHeapMb', () => {
  it('is a third of the heap limit by default, 64 MB without a limit, or what is set', () => {
    expect(initialHeapMb({ workerHeapMb: 192, workerInitialHeapMb: 'auto' })).toBe(64);
    expect(initialHeapMb({ workerHeapMb: 48, workerInitialHeapMb: 'auto' })).toBe(16);
    expect(initialHeapMb({ workerHeapMb: 0, workerInitialHeapMb: 'auto' })).toBe(64);
    expect(initialHeapMb({ workerHeapMb: 192, workerInitialHeapMb: 0 })).toBe(0);
    expect(initialHeapMb({ workerHeapMb: 192, workerInitialHeapMb: 100 })).toBe(100);
  });

  it("follows the operator's heap limit when one is set on the command line or in NODE_OPTIONS", () => {
    expect(initialHeapMb({ workerHeapMb: 192, workerInitialHeapMb: 'auto' }, ['--max-old-space-size=48'])).toBe(16);
    expect(workerExecArgv(server, [], ['--max_old_space_size=48'])).toEqual(['--initial-old-space-size=16']);
  });
});

/** A cluster worker as the primary sees it: what it was sent, and the messages it "says". */
class FakeWorker extends EventEmitter {
  static next = 1;
  readonly id = FakeWorker.next++;
  readonly sent: PrimaryMessage[] = [];
  readonly kills: string[] = [];
  private connected = true;
  private dead = false;
  readonly process = { pid: 10_000 + this.id, kill: (signal: string) => void this.kills.push(signal) };
  isConnected(): boolean {
    return this.connected;
  }
  isDead(): boolean {
    return this.dead;
  }
  send(m: PrimaryMessage, _handle?: unknown, _opts?: unknown, cb?: (err: Error | null) => void): boolean {
    this.sent.push(m);
    cb?.(null);
    return true;
  }
  say(m: WorkerMessage): void {
    this.emit('message', m);
  }
  /** Starts as a real worker does: asks for its config, then listens. */
  start(): void {
    this.say({ type: 'need-config' });
    this.say({ type: 'listening', port: 0 });
  }
  exit(code: number): void {
    this.connected = false;
    this.dead = true;
    this.emit('disconnect');
    this.emit('exit', code, null);
  }
  reloads(): Array<Extract<PrimaryMessage, { type: 'reload' }>> {
    return this.sent.filter((m): m is Extract<PrimaryMessage, { type: 'reload' }> => m.type === 'reload');
  }
}

describe('startWorkers: a worker that refuses the configuration in force', () => {
  const lines: string[] = [];
  const logger = createLogger('info', new Writable({ write: (c, _e, cb) => (lines.push(String(c)), cb()) }));
  const pools: WorkerPool[] = [];
  afterEach(async () => {
    for (const p of pools.splice(0)) {
      const stopped = p.shutdown();
      for (const w of fake.forked) if (!w.isDead()) w.exit(0);
      await stopped;
    }
    fake.forked.length = 0;
    lines.length = 0;
  });

  const config = (extra: Record<string, unknown> = {}): MeshcertConfig =>
    parseConfig({ dataDir: '/nonexistent/meshcert-test', server: { listen: '127.0.0.1:0', workers: 2 }, ...extra } as ConfigInput, {}, 'config', '/');

  /** Two workers serving with `c`. */
  async function twoServing(c: MeshcertConfig): Promise<WorkerPool> {
    const starting = startWorkers(c, logger, 2);
    await vi.waitFor(() => expect(fake.forked).toHaveLength(2));
    for (const w of fake.forked) w.start();
    const pool = await starting;
    pools.push(pool);
    return pool;
  }

  it('started during a reload and refusing the catch-up: drained and replaced by a worker given the config in force', async () => {
    const before = config();
    const pool = await twoServing(before);
    const [a, b] = fake.forked;
    // b dies; its replacement asks for the config while a reload is under way, so it gets the one before.
    b!.exit(1);
    await vi.waitFor(() => expect(fake.forked).toHaveLength(3));
    const c = fake.forked[2]!;
    c.say({ type: 'need-config' });
    expect(c.sent.find((m) => m.type === 'config')).toMatchObject({ config: before });
    const next = config({ auth: { revokedClientCertificates: [{ issuedBefore: '2026-11-30T00:00:00Z' }] } });
    const reloading = pool.reload(next);
    const round = a!.reloads().at(-1)!;
    expect(round.config).toBe(next);
    a!.say({ type: 'reloaded', id: round.id });
    await reloading;
    // c listens and is brought to the config in force, which it refuses.
    c.say({ type: 'listening', port: 0 });
    const catchUp = c.reloads().at(-1)!;
    expect(catchUp.config).toBe(next);
    expect(pool.serving()).toBe(2);
    c.say({ type: 'reloaded', id: catchUp.id, error: 'cannot read /ca/ca-key.pem' });
    expect(c.sent.at(-1)).toEqual({ type: 'shutdown' });
    expect(pool.serving(), 'a retiring worker is not counted as serving').toBe(1);
    expect(lines.join('')).toMatch(/"error":"cannot read \/ca\/ca-key.pem".*"msg":"a worker refused the configuration in force; draining it and starting a replacement/);
    // Its replacement starts at once, with the config in force.
    await vi.waitFor(() => expect(fake.forked).toHaveLength(4));
    const d = fake.forked[3]!;
    d.start();
    expect(d.sent.find((m) => m.type === 'config')).toMatchObject({ config: next });
    expect(d.reloads(), 'given the config in force at start: nothing to catch up').toEqual([]);
    expect(pool.serving()).toBe(2);
    // The retired worker leaves once drained; that is no crash, and starts no other replacement.
    c.exit(0);
    await new Promise((r) => setTimeout(r, 50));
    expect(fake.forked).toHaveLength(4);
    expect(lines.filter((l) => l.includes('worker died')).map((l) => JSON.parse(l).pid)).toEqual([b!.process.pid]);
    // A later reload goes to the workers serving, not to the one that left.
    const later = pool.reload(config({ auth: { revokedClientCertificates: [] } }));
    for (const w of [a!, d]) w.say({ type: 'reloaded', id: w.reloads().at(-1)!.id });
    await later;
    expect(c.reloads()).toHaveLength(1);
  });

  it('after a rejected reload: only the workers that applied it are sent back; one that cannot go back is logged, not retired', async () => {
    const before = config();
    const pool = await twoServing(before);
    const [a, b] = fake.forked;
    const next = config({ auth: { revokedClientCertificates: [{ issuedBefore: '2026-11-30T00:00:00Z' }] } });
    const reloading = pool.reload(next);
    // a applies it, b refuses it: the reload is rejected and a is sent the config in force.
    a!.say({ type: 'reloaded', id: a!.reloads().at(-1)!.id });
    b!.say({ type: 'reloaded', id: b!.reloads().at(-1)!.id, error: 'jwksFile /keys.json: cannot read JSON' });
    await expect(reloading).rejects.toThrow('jwksFile /keys.json: cannot read JSON');
    expect(a!.reloads().map((r) => r.config)).toEqual([next, before]);
    expect(b!.reloads().map((r) => r.config), 'b never left the config in force').toEqual([next]);
    // a cannot go back (the file it would re-read is the broken one): said, and a serves on.
    a!.say({ type: 'reloaded', id: a!.reloads().at(-1)!.id, error: 'jwksFile /keys.json: cannot read JSON' });
    expect(lines.join('')).toMatch(/"pid":\d+,"error":"jwksFile \/keys.json: cannot read JSON","msg":"a worker could not go back to the configuration in force after a rejected reload; it serves with the rejected one until a reload succeeds"/);
    expect(a!.sent.map((m) => m.type)).not.toContain('shutdown');
    await new Promise((r) => setTimeout(r, 150));
    expect(fake.forked).toHaveLength(2);
    expect(pool.serving()).toBe(2);
    // The next reload that succeeds reaches both.
    const fixed = config({ auth: { revokedClientCertificates: [] } });
    const again = pool.reload(fixed);
    for (const w of [a!, b!]) w.say({ type: 'reloaded', id: w.reloads().at(-1)!.id });
    await again;
    expect(a!.reloads().at(-1)!.config).toBe(fixed);
    expect(b!.reloads().at(-1)!.config).toBe(fixed);
  });

  it('is killed when it does not drain within the grace period', async () => {
    const c0 = config({ server: { listen: '127.0.0.1:0', workers: 2, shutdownGrace: 1 } });
    const pool = await twoServing(c0);
    const [a, b] = fake.forked;
    b!.exit(1);
    await vi.waitFor(() => expect(fake.forked).toHaveLength(3));
    const c = fake.forked[2]!;
    c.say({ type: 'need-config' });
    const reloading = pool.reload(config({ server: { listen: '127.0.0.1:0', workers: 2, shutdownGrace: 1 }, auth: { revokedClientCertificates: [] } }));
    a!.say({ type: 'reloaded', id: a!.reloads().at(-1)!.id });
    await reloading;
    vi.useFakeTimers({ toFake: ['setTimeout'] });
    try {
      c.say({ type: 'listening', port: 0 });
      c.say({ type: 'reloaded', id: c.reloads().at(-1)!.id, error: 'no' });
      expect(c.sent.at(-1)).toEqual({ type: 'shutdown' });
      vi.advanceTimersByTime(5_999);
      expect(c.kills).toEqual([]);
      vi.advanceTimersByTime(1);
      expect(c.kills).toEqual(['SIGKILL']);
    } finally {
      vi.useRealTimers();
    }
  });
});
