import { EventEmitter } from 'node:events';
import { connect } from 'node:net';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { parseConfig } from '../../../src/config/load.js';
import type { ConfigInput, MeshcertConfig } from '../../../src/config/schema.js';
import type { CaSnapshot } from '../../../src/ca/state.js';
import type { CertificateRecord } from '../../../src/inventory/types.js';
import { createLogger } from '../../../src/log/logger.js';
import { initialHeapMb, startWorkers, workerExecArgv, type PrimaryMessage, type WorkerMessage, type WorkerPool } from '../../../src/runtime/cluster.js';
import { encodeInventory, type InventoryMessage } from '../../../src/runtime/ipc-sink.js';
import type { ServingShape } from '../../../src/runtime/auto-shape.js';

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
/** A serving shape as `serve` resolves it: `workers` processes, 100 streams per connection. */
const shapeOf = (workers: number): ServingShape => ({ workers, maxConcurrentStreams: 100 });
/** CAs as the primary would load them (the pool only carries them: their texts are not read here). */
const caNamed = (label: string): CaSnapshot => ({ default: { cert: `cert ${label}`, key: `key ${label}`, chain: '', root: `root ${label}` } });
const CA = caNamed('in force');

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
  /** Connections sent to it fail, as a send on a broken channel does. */
  failConnections = false;
  readonly process = { pid: 10_000 + this.id, kill: (signal: string) => void this.kills.push(signal) };
  isConnected(): boolean {
    return this.connected;
  }
  isDead(): boolean {
    return this.dead;
  }
  send(m: PrimaryMessage, _handle?: unknown, _opts?: unknown, cb?: (err: Error | null) => void): boolean {
    this.sent.push(m);
    cb?.(m.type === 'connection' && this.failConnections ? new Error('ENOMEM') : null);
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
  /** Its process could not be spawned: Node emits 'error' (syscall 'spawn ...') and never 'exit'. */
  spawnFails(code: string): void {
    this.connected = false;
    this.dead = true;
    this.emit('error', Object.assign(new Error(`spawn /usr/bin/node ${code}`), { code, syscall: 'spawn /usr/bin/node' }));
  }
  /** Exits with its channel not yet read to its end: messages may still come, then 'disconnect'. */
  exitBeforeChannelEnds(code: number | null, signal: string | null = null): void {
    this.dead = true;
    this.emit('exit', code, signal);
  }
  channelEnds(): void {
    this.connected = false;
    this.emit('disconnect');
  }
  reloads(): Array<Extract<PrimaryMessage, { type: 'reload' }>> {
    return this.sent.filter((m): m is Extract<PrimaryMessage, { type: 'reload' }> => m.type === 'reload');
  }
}

describe('startWorkers: workers started during a reload, and rejected reloads', () => {
  const lines: string[] = [];
  const logger = createLogger('info', new Writable({ write: (c, _e, cb) => (lines.push(String(c)), cb()) }));
  const pools: WorkerPool[] = [];
  afterEach(async () => {
    vi.useRealTimers();
    for (const p of pools.splice(0)) {
      const stopped = p.shutdown();
      for (const w of fake.forked) if (!w.isDead()) w.exit(0);
      await stopped;
    }
    fake.forked.length = 0;
    lines.length = 0;
  });

  const config = (extra: Record<string, unknown> = {}): MeshcertConfig =>
    parseConfig({ dataDir: '/nonexistent/meshcert-test', server: { listen: '127.0.0.1:0', workers: 2, shutdownGrace: 1 }, ...extra } as ConfigInput, {}, 'config', '/');
  /** A config a reload may bring (a new object: the primary tells configs apart by identity). */
  const revoking = (): MeshcertConfig => config({ auth: { revokedClientCertificates: [{ issuedBefore: '2026-11-30T00:00:00Z' }] } });
  const msgs = (): string[] => lines.map((l) => (JSON.parse(l) as { msg: string }).msg);
  const lastReload = (w: FakeWorker) => w.reloads().at(-1)!;
  const answer = (w: FakeWorker, error?: string): void => w.say({ type: 'reloaded', id: lastReload(w).id, ...(error === undefined ? {} : { error }) });

  /** Two workers serving with `c`. */
  async function twoServing(c: MeshcertConfig): Promise<WorkerPool> {
    const starting = startWorkers(c, CA, logger, shapeOf(2));
    await vi.waitFor(() => expect(fake.forked).toHaveLength(2));
    for (const w of fake.forked) w.start();
    const pool = await starting;
    pools.push(pool);
    return pool;
  }

  /** Kills `b` and returns its replacement, which has asked for (and been given) the config in force. */
  async function replacementOf(b: FakeWorker): Promise<FakeWorker> {
    const before = fake.forked.length;
    b.exit(1);
    await vi.waitFor(() => expect(fake.forked).toHaveLength(before + 1));
    const c = fake.forked[before]!;
    c.say({ type: 'need-config' });
    return c;
  }

  /** Two workers; b dies, and its replacement c is given the config a reload then replaces (a applies it): c must catch up once it listens. */
  async function replacementBehind(): Promise<{ pool: WorkerPool; a: FakeWorker; c: FakeWorker }> {
    const pool = await twoServing(config());
    const [a, b] = fake.forked;
    const c = await replacementOf(b!);
    const reloading = pool.reload(revoking(), CA);
    answer(a!);
    await reloading;
    return { pool, a: a!, c };
  }

  /**
   * Two workers serving (fake timers on); a reload that `a` applies (when `aAnswers`) and `b` never
   * answers, rejected after its 30 s. Returns with both sent back to the config before.
   */
  async function rejectedBySilence(aAnswers: boolean): Promise<{ pool: WorkerPool; a: FakeWorker; b: FakeWorker; before: MeshcertConfig }> {
    vi.useFakeTimers({ toFake: ['setTimeout'] });
    const before = config();
    const pool = await twoServing(before);
    const [a, b] = fake.forked;
    const reloading = pool.reload(revoking(), CA);
    if (aAnswers) answer(a!);
    const rejected = expect(reloading).rejects.toThrow('a worker did not answer the reload within 30s');
    vi.advanceTimersByTime(30_000);
    await rejected;
    return { pool, a: a!, b: b!, before };
  }

  /** Which of `workers` the primary hands a new connection to (each is handed in a 'connection' message). */
  async function connectionGoesTo(pool: WorkerPool, workers: FakeWorker[]): Promise<FakeWorker[]> {
    const counts = workers.map((w) => w.sent.filter((m) => m.type === 'connection').length);
    const socket = connect(pool.port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    await new Promise((r) => setTimeout(r, 50));
    socket.destroy();
    return workers.filter((w, i) => w.sent.filter((m) => m.type === 'connection').length > counts[i]!);
  }


  it('fails to start, naming the limit, when a worker process cannot be spawned (Node then emits no exit)', async () => {
    const starting = startWorkers(config(), CA, logger, shapeOf(2));
    await vi.waitFor(() => expect(fake.forked).toHaveLength(2));
    const failed = expect(starting).rejects.toThrow("could not start a worker process (EMFILE): meshcert's process is at its open-file limit (ulimit -n)");
    fake.forked[0]!.spawnFails('EMFILE');
    // The other is stopped, so that the process exits with the reason instead of half started.
    await vi.waitFor(() => expect(fake.forked[1]!.sent.map((m) => m.type)).toContain('shutdown'));
    fake.forked[1]!.exit(0);
    await failed;
  });

  it('retries a replacement whose process cannot be spawned, until one serves', async () => {
    const pool = await twoServing(config());
    const [a, b] = fake.forked;
    const c = await replacementOf(b!);
    c.spawnFails('EAGAIN');
    await vi.waitFor(() => expect(msgs()).toContain('replacement worker failed to start; retrying'));
    expect(lines.join('')).toContain('could not start a worker process (EAGAIN): the process limit is reached');
    // Another attempt after the pause, which takes the place the first could not.
    await vi.waitFor(() => expect(fake.forked).toHaveLength(4), { timeout: 2000 });
    const d = fake.forked[3]!;
    d.start();
    await vi.waitFor(() => expect(pool.serving()).toBe(2));
    expect(await connectionGoesTo(pool, [a!, d])).toHaveLength(1);
  });

  it('sends every worker, replacements too, the shape the primary resolved (workers never resolve auto themselves)', async () => {
    const shape: ServingShape = { workers: 2, maxConcurrentStreams: 16 };
    const starting = startWorkers(config(), CA, logger, shape);
    await vi.waitFor(() => expect(fake.forked).toHaveLength(2));
    for (const w of fake.forked) w.start();
    pools.push(await starting);
    const c = await replacementOf(fake.forked[1]!);
    for (const w of [fake.forked[0]!, c]) {
      const sent = w.sent.find((m): m is Extract<PrimaryMessage, { type: 'config' }> => m.type === 'config');
      expect(sent?.shape).toEqual(shape);
    }
  });
  it('one started before a reload took effect is caught up before it takes connections; refusing, it is drained and replaced by one given the config in force', async () => {
    const before = config();
    const pool = await twoServing(before);
    const [a, b] = fake.forked;
    const c = await replacementOf(b!);
    expect(c.sent.find((m) => m.type === 'config')).toMatchObject({ config: before });
    const next = revoking();
    const reloading = pool.reload(next, CA);
    expect(lastReload(a!).config).toBe(next);
    answer(a!);
    await reloading;
    // c listens: it is sent the config in force, and takes no connection meanwhile.
    c.say({ type: 'listening', port: 0 });
    expect(lastReload(c).config).toBe(next);
    expect(pool.serving()).toBe(1);
    // Two connections: with c in the dispatcher, the second would go to it (fewest open).
    for (let i = 0; i < 2; i++) expect(await connectionGoesTo(pool, [a!, c])).toEqual([a]);
    answer(c, 'cannot read /ca/ca-key.pem');
    expect(c.sent.at(-1)).toEqual({ type: 'shutdown' });
    expect(pool.serving()).toBe(1);
    expect(lines.join('')).toMatch(/"error":"cannot read \/ca\/ca-key.pem".*"msg":"a worker refused the configuration in force; draining it and starting a replacement/);
    // Its replacement starts at once, with the config in force, and takes connections once it listens.
    await vi.waitFor(() => expect(fake.forked).toHaveLength(4));
    const d = fake.forked[3]!;
    d.start();
    expect(d.sent.find((m) => m.type === 'config')).toMatchObject({ config: next });
    expect(d.reloads(), 'given the config in force at start: nothing to catch up').toEqual([]);
    expect(pool.serving()).toBe(2);
    expect(await connectionGoesTo(pool, [a!, c, d])).not.toContain(c);
    // A reload while c drains goes to a and d only, and succeeds without c's answer.
    const later = revoking();
    const reloadingLater = pool.reload(later, CA);
    for (const w of [a!, d]) answer(w);
    await reloadingLater;
    expect(c.reloads()).toHaveLength(1);
    // The retired worker leaves once drained; that is no crash, and starts no other replacement
    // (one would come within the 200 ms pause of a second restart).
    c.exit(0);
    await new Promise((r) => setTimeout(r, 400));
    expect(fake.forked).toHaveLength(4);
    expect(lines.filter((l) => l.includes('worker died')).map((l) => (JSON.parse(l) as { pid: number }).pid)).toEqual([b!.process.pid]);
  });

  it('one that caught up to a config a later reload replaced is caught up again, then takes connections', async () => {
    const pool = await twoServing(config());
    const [a, b] = fake.forked;
    const c = await replacementOf(b!);
    const first = revoking();
    const reloading = pool.reload(first, CA);
    answer(a!);
    await reloading;
    // A second reload begins while c still starts (so it is not among its targets); c listens
    // meanwhile and is sent the config in force then, the first.
    const second = revoking();
    const reloadingAgain = pool.reload(second, CA);
    c.say({ type: 'listening', port: 0 });
    expect(c.reloads().map((r) => r.config)).toEqual([first]);
    answer(a!);
    await reloadingAgain;
    // c answers for the first: it is sent the second, and takes connections only once it has it.
    answer(c);
    expect(lastReload(c).config).toBe(second);
    expect(await connectionGoesTo(pool, [a!, c])).toEqual([a]);
    answer(c);
    expect(pool.serving()).toBe(2);
    expect(await connectionGoesTo(pool, [a!, c])).toEqual([c]);
    expect(msgs()).not.toContain('a worker refused the configuration in force; draining it and starting a replacement, so that none serves with the configuration before');
  });

  it('one that listens while a reload is under way is held back, then caught up (or, the reload rejected, admitted as it is), and is no target of the round', async () => {
    const before = config();
    const pool = await twoServing(before);
    const [a, b] = fake.forked;
    const c = await replacementOf(b!);
    const next = revoking();
    const reloading = pool.reload(next, CA);
    // c was given the config the reload replaces; it listens before the reload ends.
    c.say({ type: 'listening', port: 0 });
    expect(c.reloads()).toEqual([]);
    expect(pool.serving()).toBe(1);
    for (let i = 0; i < 2; i++) expect(await connectionGoesTo(pool, [a!, c])).toEqual([a]);
    answer(a!);
    await reloading;
    // Caught up after the round, admitted once it has applied the config.
    expect(c.reloads().map((r) => r.config)).toEqual([next]);
    expect(pool.serving()).toBe(1);
    answer(c);
    expect(pool.serving()).toBe(2);
    expect(await connectionGoesTo(pool, [a!, c])).toEqual([c]);

    // A rejected reload: a worker that listened meanwhile runs the config in force, and is admitted as it is.
    const d = await replacementOf(a!);
    const rejected = pool.reload(revoking(), CA);
    d.say({ type: 'listening', port: 0 });
    expect(pool.serving()).toBe(1);
    answer(c, 'policy does not build');
    await expect(rejected).rejects.toThrow('policy does not build');
    expect(d.reloads()).toEqual([]);
    expect(pool.serving()).toBe(2);
  });

  it('sends each config with the CAs loaded with it: after a rejected reload, the one sent back and a replacement get the CAs in force, not the rejected ones', async () => {
    const before = config();
    const starting = startWorkers(before, caNamed('A'), logger, shapeOf(2));
    await vi.waitFor(() => expect(fake.forked).toHaveLength(2));
    for (const w of fake.forked) w.start();
    const pool = await starting;
    pools.push(pool);
    const [a, b] = fake.forked;
    expect(a!.sent.find((m) => m.type === 'config')).toMatchObject({ config: before, ca: caNamed('A') });
    const next = revoking();
    const reloading = pool.reload(next, caNamed('B'));
    expect(lastReload(a!)).toMatchObject({ config: next, ca: caNamed('B') });
    answer(a!);
    answer(b!);
    await reloading;
    // Rejected (b refuses): a, which applied it, is sent back to the config and the CAs in force.
    const rejected = pool.reload(revoking(), caNamed('C'));
    answer(a!);
    answer(b!, 'policy does not build');
    await expect(rejected).rejects.toThrow('policy does not build');
    expect(lastReload(a!)).toMatchObject({ config: next, ca: caNamed('B') });
    const c = await replacementOf(b!);
    expect(c.sent.find((m) => m.type === 'config')).toMatchObject({ config: next, ca: caNamed('B') });
  });

  it('one held back whose catch-up is not answered within 30 s is retired', async () => {
    const { pool, c } = await replacementBehind();
    vi.useFakeTimers({ toFake: ['setTimeout'] });
    c.say({ type: 'listening', port: 0 });
    expect(c.reloads()).toHaveLength(1);
    vi.advanceTimersByTime(29_999);
    expect(c.sent.at(-1)!.type).toBe('reload');
    vi.advanceTimersByTime(1);
    expect(c.sent.at(-1)).toEqual({ type: 'shutdown' });
    expect(msgs()).toContain('a worker did not apply the configuration in force within 30s; draining it and starting a replacement, so that none serves with the configuration before');
    // One replacement, after the pause of a second restart.
    vi.advanceTimersByTime(200);
    expect(fake.forked).toHaveLength(4);
    // Its late answer changes nothing.
    answer(c);
    expect(pool.serving()).toBe(1);
    vi.advanceTimersByTime(60_000);
    expect(fake.forked).toHaveLength(4);
  });

  it('one whose catch-up is answered in time, or that exits first, is not retired by the timer', async () => {
    const { pool, a, c } = await replacementBehind();
    vi.useFakeTimers({ toFake: ['setTimeout'] });
    c.say({ type: 'listening', port: 0 });
    vi.advanceTimersByTime(29_000);
    answer(c);
    vi.advanceTimersByTime(60_000);
    expect(c.sent.map((m) => m.type)).not.toContain('shutdown');
    expect(pool.serving()).toBe(2);
    // Another, that exits while its catch-up is pending.
    const d = await replacementOf(a!);
    const again = pool.reload(revoking(), CA);
    answer(c);
    await again;
    d.say({ type: 'listening', port: 0 });
    expect(d.reloads()).toHaveLength(1);
    d.exit(1);
    vi.advanceTimersByTime(60_000);
    expect(msgs().filter((m) => m.includes('draining it and starting a replacement'))).toEqual([]);
  });

  it('one the dispatcher dropped after a failed hand-off is admitted again a second later', async () => {
    const pool = await twoServing(config());
    const [a, b] = fake.forked;
    b!.failConnections = true;
    // The first goes to one of the two (a tie), the second to the other: b's hand-off fails once.
    const first = await connectionGoesTo(pool, [a!, b!]);
    const second = await connectionGoesTo(pool, [a!, b!]);
    expect([...first, ...second].sort((x, y) => x.id - y.id)).toEqual([a, b]);
    expect(pool.serving()).toBe(1);
    b!.failConnections = false;
    await vi.waitFor(() => expect(pool.serving()).toBe(2), { timeout: 3_000 });
  });

  it('with every worker held back, a reload is checked by them (not applied unchecked), and they are admitted after it', async () => {
    // a applies a reload while c starts (c must catch up); then a dies too, its replacement d still starting.
    const { pool, a, c } = await replacementBehind();
    const first = lastReload(a).config;
    await replacementOf(a);
    c.say({ type: 'listening', port: 0 });
    expect(pool.serving()).toBe(0);
    // c is held back (catching up): the next reload is sent to it, and refused by it.
    const bad = config({ auth: { revokedClientCertificates: [] } });
    const rejected = pool.reload(bad, CA);
    await vi.waitFor(() => expect(lastReload(c).config).toBe(bad));
    answer(c, 'jwksFile /keys.json: cannot read JSON');
    await expect(rejected).rejects.toThrow('cannot read JSON');
    // Its catch-up to the config in force succeeds: admitted.
    c.say({ type: 'reloaded', id: c.reloads()[0]!.id });
    expect(c.reloads()[0]!.config).toBe(first);
    expect(pool.serving()).toBe(1);
  });

  it('a reload that finds no worker serving waits for a replacement to check it, and is rejected when it refuses it', async () => {
    const pool = await twoServing(config());
    const [a, b] = fake.forked as [FakeWorker, FakeWorker];
    await replacementOf(a);
    const c = await replacementOf(b);
    const bad = revoking();
    let settled = false;
    const rejected = pool.reload(bad, CA).finally(() => (settled = true));
    await new Promise((r) => setTimeout(r, 300));
    expect(settled).toBe(false); // not applied unchecked: waiting
    c.say({ type: 'listening', port: 0 });
    await vi.waitFor(() => expect(lastReload(c).config).toBe(bad));
    answer(c, 'jwksFile /keys.json: cannot read JSON');
    await expect(rejected).rejects.toThrow('cannot read JSON');
  });

  it('a worker retired during a reload round (its catch-up unanswered) leaves the round: its exit is no refusal', async () => {
    // Three workers: e applies a reload while c and d start (both must catch up), then dies, its replacement still starting.
    const starting = startWorkers(config(), CA, logger, shapeOf(3));
    await vi.waitFor(() => expect(fake.forked).toHaveLength(3));
    for (const w of fake.forked) w.start();
    const pool = await starting;
    pools.push(pool);
    const [a, b, e] = fake.forked as [FakeWorker, FakeWorker, FakeWorker];
    const c = await replacementOf(b);
    const d = await replacementOf(a);
    const reloadingFirst = pool.reload(revoking(), CA);
    answer(e);
    await reloadingFirst;
    await replacementOf(e);
    vi.useFakeTimers({ toFake: ['setTimeout', 'setInterval'] });
    c.say({ type: 'listening', port: 0 });
    d.say({ type: 'listening', port: 0 });
    await vi.advanceTimersByTimeAsync(1_000);
    const next = revoking();
    const reloading = pool.reload(next, CA); // sent to both, held back as they are
    expect(lastReload(c).config).toBe(next);
    expect(lastReload(d).config).toBe(next);
    d.say({ type: 'reloaded', id: d.reloads()[0]!.id }); // d catches up in time
    await vi.advanceTimersByTimeAsync(29_000); // c does not: retired, 30 s after it listened
    expect(c.sent.at(-1)).toEqual({ type: 'shutdown' });
    c.exit(0);
    answer(d);
    await expect(reloading).resolves.toBeUndefined();
  });

  it('at shutdown, waits for each worker\'s channel to end after its exit, and fails (said) when one did not stop cleanly', async () => {
    const pool = await twoServing(config());
    pools.splice(0);
    const [a, b] = fake.forked as [FakeWorker, FakeWorker];
    let settled = false;
    const stopped = pool.shutdown().then(
      () => (settled = true),
      (e: Error) => {
        settled = true;
        throw e;
      },
    );
    a.exit(0);
    b.exitBeforeChannelEnds(1);
    await new Promise((resolve) => setTimeout(resolve, 50));
    // b's last messages (its last records among them) may still be in its channel.
    expect(settled).toBe(false);
    b.channelEnds();
    await expect(stopped).rejects.toThrow(`1 worker(s) did not stop cleanly: worker ${b.process.pid} exited with code 1`);
  });

  it('at shutdown, says so when it kills a worker still running after its grace period and margin', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'setInterval'] });
    const pool = await twoServing(config());
    pools.splice(0);
    const [a, b] = fake.forked as [FakeWorker, FakeWorker];
    const stopped = pool.shutdown();
    a.exit(0);
    // shutdownGrace 1 s, plus 5 s.
    await vi.advanceTimersByTimeAsync(6_000);
    expect(b.kills).toEqual(['SIGKILL']);
    expect(msgs()).toContain('worker still running after its grace period and margin; killed (its calls in flight were cut off, and records it had not shipped are lost)');
    b.exitBeforeChannelEnds(null, 'SIGKILL');
    b.channelEnds();
    await expect(stopped).rejects.toThrow(`worker ${b.process.pid} exited with SIGKILL`);
  });

  it('counts no worker as serving once stopping', async () => {
    const pool = await twoServing(config());
    expect(pool.serving()).toBe(2);
    const stopped = pool.shutdown();
    expect(pool.serving()).toBe(0);
    for (const w of fake.forked) w.exit(0);
    await stopped;
    pools.splice(0);
  });

  it('one held back is no target of a reload round, and reporting memory pressure meanwhile, is admitted short of memory: it is handed no connection until it recovers', async () => {
    const { pool, a, c } = await replacementBehind();
    c.say({ type: 'listening', port: 0 });
    c.say({ type: 'memory-pressure', high: true });
    // A reload while c catches up is not sent to c: it catches up to it afterwards.
    const later = revoking();
    const reloadingLater = pool.reload(later, CA);
    expect(c.reloads()).toHaveLength(1);
    answer(a!);
    await reloadingLater;
    answer(c);
    expect(lastReload(c).config).toBe(later);
    expect(pool.serving()).toBe(1);
    answer(c);
    expect(pool.serving()).toBe(2);
    for (let i = 0; i < 2; i++) expect(await connectionGoesTo(pool, [a!, c])).toEqual([a]);
    c.say({ type: 'memory-pressure', high: false });
    expect(await connectionGoesTo(pool, [a!, c])).toEqual([c]);
  });

  it('a reload that a worker exits under is rejected, not applied: the one that applied it is sent back, and a replacement starts with the config in force', async () => {
    const before = config();
    const pool = await twoServing(before);
    const [a, b] = fake.forked as [FakeWorker, FakeWorker];
    const next = revoking();
    const reloading = pool.reload(next, CA);
    answer(a);
    b.exit(1); // an exit answers the round, but applies nothing
    await expect(reloading).rejects.toThrow('1 worker(s) exited before applying it');
    expect(a.reloads().map((r) => r.config)).toEqual([next, before]);
    await vi.waitFor(() => expect(fake.forked).toHaveLength(3));
    const c = fake.forked[2]!;
    c.say({ type: 'need-config' });
    expect(c.sent.find((m) => m.type === 'config')).toMatchObject({ config: before });
  });

  it('a reload under way when the server stops is rejected, as the server is shutting down', async () => {
    const pool = await twoServing(config());
    pools.splice(0);
    const reloading = pool.reload(revoking(), CA);
    const stopped = pool.shutdown();
    for (const w of fake.forked) w.exit(0);
    await expect(reloading).rejects.toThrow('the server is shutting down');
    await stopped;
  });

  it('after a rejected reload: only the workers that applied it are sent back; one that cannot go back is logged, not retired', async () => {
    const before = config();
    const pool = await twoServing(before);
    const [a, b] = fake.forked;
    const next = revoking();
    const reloading = pool.reload(next, CA);
    // a applies it, b refuses it: the reload is rejected and a is sent the config in force.
    answer(a!);
    answer(b!, 'jwksFile /keys.json: cannot read JSON');
    await expect(reloading).rejects.toThrow('jwksFile /keys.json: cannot read JSON');
    expect(a!.reloads().map((r) => r.config)).toEqual([next, before]);
    expect(b!.reloads().map((r) => r.config), 'b never left the config in force').toEqual([next]);
    // a cannot go back (the file it would re-read is the broken one): said, and a serves on.
    answer(a!, 'jwksFile /keys.json: cannot read JSON');
    expect(lines.join('')).toMatch(/"pid":\d+,"error":"jwksFile \/keys.json: cannot read JSON","msg":"a worker could not go back to the configuration in force after a rejected reload; it serves with the rejected one until a reload succeeds"/);
    expect(a!.sent.map((m) => m.type)).not.toContain('shutdown');
    await new Promise((r) => setTimeout(r, 150));
    expect(fake.forked).toHaveLength(2);
    expect(pool.serving()).toBe(2);
    // The next reload that succeeds reaches both.
    const fixed = revoking();
    const again = pool.reload(fixed, CA);
    for (const w of [a!, b!]) answer(w);
    await again;
    expect(lastReload(a!).config).toBe(fixed);
    expect(lastReload(b!).config).toBe(fixed);
  });

  it('after a rejected reload: a worker that did not answer in time is sent back too, and one that goes back is not sent anything more', async () => {
    const { a, b, before } = await rejectedBySilence(true);
    expect(lastReload(a!).config).toBe(before);
    expect(lastReload(b!).config).toBe(before);
    answer(a!);
    answer(b!);
    expect(a!.reloads()).toHaveLength(2);
    expect(b!.reloads()).toHaveLength(2);
    // Answered in time: the 30 s timers of the rollbacks retire no one.
    vi.advanceTimersByTime(60_000);
    expect(msgs().filter((m) => m.startsWith('a worker'))).toEqual([]);
    expect(a!.sent.map((m) => m.type)).not.toContain('shutdown');
    expect(b!.sent.map((m) => m.type)).not.toContain('shutdown');
  });

  it('after a rejected reload: a worker stuck in it (no answer to the round or to being sent back) is retired, and the next reload is not held up by it', async () => {
    const { pool, a, b, before } = await rejectedBySilence(true);
    answer(a);
    // b answers nothing: 30 s after it was sent back, it is drained and a replacement started.
    vi.advanceTimersByTime(29_999);
    expect(b!.sent.map((m) => m.type)).not.toContain('shutdown');
    vi.advanceTimersByTime(1);
    expect(b!.sent.at(-1)).toEqual({ type: 'shutdown' });
    expect(msgs()).toContain('a worker did not go back to the configuration in force within 30s of a rejected reload; draining it and starting a replacement, so that none serves with a configuration no one knows');
    expect(a!.sent.map((m) => m.type)).not.toContain('shutdown');
    // The replacement is forked at once (a timer set inside a tick runs 1 ms later); it has not asked for its config yet.
    vi.advanceTimersByTime(1);
    vi.useRealTimers();
    await vi.waitFor(() => expect(fake.forked).toHaveLength(3));
    const c = fake.forked[2]!;
    expect(await connectionGoesTo(pool, [a!, b!, c])).toEqual([a]);
    // The next reload goes to a alone and succeeds; the replacement starts with it.
    const next = revoking();
    const again = pool.reload(next, CA);
    expect(lastReload(b!).config).toBe(before);
    answer(a!);
    await again;
    c.start();
    expect(c.sent.find((m) => m.type === 'config')).toMatchObject({ config: next });
    expect(c.reloads()).toEqual([]);
  });

  it('after a rejected reload: when every worker is stuck, the last one taking connections is kept, not retired', async () => {
    const { pool, a, b } = await rejectedBySilence(false);
    vi.advanceTimersByTime(30_000);
    // One is retired; the other, then the only one taking connections, is kept and said so.
    const shut = [a!, b!].filter((w) => w.sent.some((m) => m.type === 'shutdown'));
    expect(shut).toHaveLength(1);
    expect(msgs()).toContain('a worker did not go back to the configuration in force within 30s of a rejected reload; it is the last one taking connections, so it is kept (restart meshcert if reloads keep failing)');
    expect(pool.serving()).toBe(1);
  });

  it('a retired worker that does not drain within the grace period is killed', async () => {
    const { c } = await replacementBehind();
    vi.useFakeTimers({ toFake: ['setTimeout'] });
    c.say({ type: 'listening', port: 0 });
    answer(c, 'no');
    expect(c.sent.at(-1)).toEqual({ type: 'shutdown' });
    // server.shutdownGrace (1 s) and a margin of 5.
    vi.advanceTimersByTime(5_999);
    expect(c.kills).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(c.kills).toEqual(['SIGKILL']);
  });

  it("hands a worker's inventory batch to the intake with its Dates, answers its durable records through the worker, and drops a batch that is not one without stopping", async () => {
    const got: InventoryMessage[] = [];
    const starting = startWorkers(config(), CA, logger, shapeOf(2), {
      onInventory: (m, reply) => {
        got.push(m);
        reply({ type: 'inventory-kept', stored: (m.durable ?? []).map((d) => d.id), failed: [] });
      },
    });
    await vi.waitFor(() => expect(fake.forked).toHaveLength(2));
    for (const w of fake.forked) w.start();
    pools.push(await starting);
    const [a] = fake.forked;
    const record = { serial: '0a', notBefore: new Date(1000), notAfter: new Date(2000), issuedAt: new Date(1500) } as CertificateRecord;
    a!.say({ type: 'inventory', batch: '{"records":[' });
    a!.say(encodeInventory({ type: 'inventory', records: [record], audit: [], durable: [{ id: 3, record }] }));
    expect(got).toHaveLength(1);
    expect(got[0]!.records[0]!.notAfter).toEqual(new Date(2000));
    expect(got[0]!.durable![0]!.record.issuedAt).toEqual(new Date(1500));
    expect(a!.sent).toContainEqual({ type: 'inventory-kept', stored: [3], failed: [] });
    expect(msgs()).toContain('a worker shipped an inventory batch that is not one; dropped');
  });
});
