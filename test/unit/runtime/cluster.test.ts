import { EventEmitter } from 'node:events';
import { connect } from 'node:net';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { parseConfig } from '../../../src/config/load.js';
import type { ConfigInput, MeshcertConfig } from '../../../src/config/schema.js';
import type { CaSnapshot } from '../../../src/ca/state.js';
import { ConfigError } from '../../../src/errors/ca-error.js';
import type { CertificateRecord } from '../../../src/inventory/types.js';
import { createLogger } from '../../../src/log/logger.js';
import { initialHeapMb, startWorkers, workerExecArgv, type PrimaryMessage, type WorkerMessage, type WorkerMetricsJson, type WorkerPool } from '../../../src/runtime/cluster.js';
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
  /** Its channel has just closed, and Node has not emitted 'disconnect' yet. */
  channelClosing(): void {
    this.connected = false;
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

  it("fails to start with a ConfigError when a worker's failure is the operator's to fix (a port in use), and a plain Error otherwise", async () => {
    for (const config_ of [true, false]) {
      const starting = startWorkers(config(), CA, logger, shapeOf(2));
      await vi.waitFor(() => expect(fake.forked).toHaveLength(2));
      const failed = starting.then(
        () => expect.unreachable('started'),
        (e: unknown) => e,
      );
      fake.forked[0]!.say({ type: 'fatal', message: 'server.listen: address in use', ...(config_ ? { config: true } : {}) });
      fake.forked[0]!.exit(1);
      await vi.waitFor(() => expect(fake.forked[1]!.sent.map((m) => m.type)).toContain('shutdown'));
      fake.forked[1]!.exit(0);
      const err = (await failed) as Error;
      expect(err.message).toBe('server.listen: address in use');
      expect(err instanceof ConfigError, String(config_)).toBe(config_);
      fake.forked.length = 0;
    }
  });

  it('tells a worker that starts while the server drains (server.shutdownDelay) to report NOT_SERVING too', async () => {
    const pool = await twoServing(config());
    pool.draining();
    const c = await replacementOf(fake.forked[1]!);
    expect(c.sent.map((m) => m.type)).not.toContain('draining');
    c.say({ type: 'listening', port: 0 });
    expect(c.sent.map((m) => m.type)).toContain('draining');
  });

  it("fails to start with the reason a worker gave, though its exit is seen before its last message", async () => {
    const starting = startWorkers(config(), CA, logger, shapeOf(2));
    await vi.waitFor(() => expect(fake.forked).toHaveLength(2));
    const failed = expect(starting).rejects.toThrow('ca.certFile: cannot read /ca/cert.pem');
    const [a, b] = fake.forked as [FakeWorker, FakeWorker];
    a.exitBeforeChannelEnds(1);
    a.say({ type: 'fatal', message: 'ca.certFile: cannot read /ca/cert.pem', config: true });
    a.channelEnds();
    await vi.waitFor(() => expect(b.sent.map((m) => m.type)).toContain('shutdown'));
    b.exit(0);
    await failed;
  });

  it('tells one still starting when another failed to start to drain once it listens (it could not read the first request)', async () => {
    const starting = startWorkers(config(), CA, logger, shapeOf(2));
    await vi.waitFor(() => expect(fake.forked).toHaveLength(2));
    const failed = expect(starting).rejects.toThrow('worker exited with 1 before serving');
    const [a, b] = fake.forked as [FakeWorker, FakeWorker];
    a.exit(1);
    await vi.waitFor(() => expect(b.sent.map((m) => m.type)).toContain('shutdown'));
    b.start();
    expect(b.sent.at(-1)).toEqual({ type: 'shutdown' });
    expect(b.sent.filter((m) => m.type === 'shutdown')).toHaveLength(2);
    b.exit(0);
    await failed;
  });

  it('tells the hook how a serving worker died: by a signal, or with an exit code', async () => {
    const deaths: string[] = [];
    const starting = startWorkers(config(), CA, logger, shapeOf(2), { onDeath: (how) => deaths.push(how) });
    await vi.waitFor(() => expect(fake.forked).toHaveLength(2));
    for (const w of fake.forked) w.start();
    pools.push(await starting);
    const [a, b] = fake.forked as [FakeWorker, FakeWorker];
    a.exitBeforeChannelEnds(null, 'SIGKILL');
    a.channelEnds();
    b.exit(3);
    expect(deaths).toEqual(['signal', 'exit_code']);
  });

  it('tells every worker, and any started later, when the server begins to drain', async () => {
    const pool = await twoServing(config());
    pool.draining();
    for (const w of fake.forked) expect(w.sent.at(-1)).toEqual({ type: 'draining' });
  });

  it('answers a scrape at once when no worker is serving (all died at once), without waiting its timeout', async () => {
    const pool = await twoServing(config());
    for (const w of fake.forked.slice(0, 2)) w.exit(1);
    const started = Date.now();
    expect(await pool.workerMetrics(3_000)).toEqual({ metrics: [], unanswered: 0 });
    expect(Date.now() - started).toBeLessThan(1_000);
  });

  it('refuses a reload at once when the server stops while none serves, rather than waiting for a replacement', async () => {
    const pool = await twoServing(config());
    pools.splice(0);
    const stopped = pool.shutdown();
    for (const w of fake.forked) w.exit(0);
    await stopped;
    const answer_ = await Promise.race([pool.reload(revoking(), CA).then(() => 'applied', (e: Error) => e.message), new Promise((r) => setTimeout(() => r('still waiting'), 1_000))]);
    expect(answer_).toBe('the server is shutting down');
  });

  it('at shutdown, does not count one still starting that exits non-zero as a worker that did not stop cleanly', async () => {
    const pool = await twoServing(config());
    pools.splice(0);
    const c = await replacementOf(fake.forked[1]!);
    const stopped = pool.shutdown();
    fake.forked[0]!.exit(0);
    c.exit(1);
    await expect(stopped).resolves.toBeUndefined();
  });

  it("at shutdown, does not wait more than 2 s for a worker's channel that never reports its end", async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'setInterval'] });
    const pool = await twoServing(config());
    pools.splice(0);
    const [a, b] = fake.forked as [FakeWorker, FakeWorker];
    let settled = false;
    const stopped = pool.shutdown().finally(() => (settled = true));
    a.exit(0);
    b.exitBeforeChannelEnds(0);
    await vi.advanceTimersByTimeAsync(1_999);
    expect(settled).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(settled).toBe(true);
    await stopped;
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

  /**
   * Three workers; a and b die, and their replacements c and d are given the config a reload then
   * replaces (e applies it): both must catch up once they listen. e then dies, its replacement starting.
   */
  async function threeWithTwoBehind(): Promise<{ pool: WorkerPool; c: FakeWorker; d: FakeWorker }> {
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
    return { pool, c, d };
  }

  /**
   * Three workers; replacements c and d start behind a reload (fake timers on from their listening),
   * a second reload round (`next`) is sent to both, and d answers its catch-up: c's is left to the test.
   */
  async function roundWithTwoCatchingUp(next: MeshcertConfig = revoking()): Promise<{ c: FakeWorker; d: FakeWorker; reloading: Promise<void> }> {
    const { pool, c, d } = await threeWithTwoBehind();
    vi.useFakeTimers({ toFake: ['setTimeout', 'setInterval'] });
    c.say({ type: 'listening', port: 0 });
    d.say({ type: 'listening', port: 0 });
    await vi.advanceTimersByTimeAsync(1_000);
    const reloading = pool.reload(next, CA); // sent to both, held back as they are
    d.say({ type: 'reloaded', id: d.reloads()[0]!.id });
    return { c, d, reloading };
  }

  it('a worker retired during a reload round (its catch-up unanswered) leaves the round: its exit is no refusal', async () => {
    // Three workers: e applies a reload while c and d start (both must catch up), then dies, its replacement still starting.
    const next = revoking();
    const { c, d, reloading } = await roundWithTwoCatchingUp(next); // d catches up in time
    expect(lastReload(c).config).toBe(next);
    expect(lastReload(d).config).toBe(next);
    await vi.advanceTimersByTimeAsync(29_000); // c does not: retired, 30 s after it listened
    expect(c.sent.at(-1)).toEqual({ type: 'shutdown' });
    c.exit(0);
    answer(d);
    await expect(reloading).resolves.toBeUndefined();
  });

  it('a worker retired during a reload round is out of it: its refusal of the round, sent while it drains, rejects nothing', async () => {
    const { c, d, reloading } = await roundWithTwoCatchingUp();
    await vi.advanceTimersByTimeAsync(29_000); // c's catch-up unanswered: retired
    expect(c.sent.at(-1)).toEqual({ type: 'shutdown' });
    answer(c, 'jwksFile /keys.json: cannot read JSON'); // its answer to the round, late
    answer(d);
    await expect(reloading).resolves.toBeUndefined();
  });

  it('a worker retired during a reload round it had applied is not sent back when the round is rejected: it drains', async () => {
    const { c, d, reloading } = await roundWithTwoCatchingUp();
    answer(c); // c applies the round, but never answers its catch-up
    await vi.advanceTimersByTimeAsync(29_000);
    expect(c.sent.at(-1)).toEqual({ type: 'shutdown' });
    answer(d, 'jwksFile /keys.json: cannot read JSON');
    await expect(reloading).rejects.toThrow('cannot read JSON');
    expect(c.sent.at(-1)).toEqual({ type: 'shutdown' });
    expect(c.reloads()).toHaveLength(2); // its catch-up and the round: nothing more
  });

  it('a worker retired once is not retired again (nor replaced twice) when another of its reloads goes unanswered', async () => {
    const { c, d, reloading } = await roundWithTwoCatchingUp();
    answer(c); // c applies the round (and is sent back), but answers neither its catch-up nor that
    answer(d, 'jwksFile /keys.json: cannot read JSON');
    await expect(reloading).rejects.toThrow('cannot read JSON');
    const forked = fake.forked.length;
    await vi.advanceTimersByTimeAsync(32_000); // its catch-up's 30 s end, then its rollback's
    expect(msgs().filter((m) => m.includes('draining it and starting a replacement'))).toHaveLength(1);
    expect(c.sent.filter((m) => m.type === 'shutdown')).toHaveLength(1);
    expect(fake.forked).toHaveLength(forked + 1);
  });

  it('one held back that applied a rejected reload round is admitted once it has gone back to the config in force', async () => {
    const { pool, c, d } = await threeWithTwoBehind();
    // c and d listen behind the config in force: held back, both are the round's targets.
    c.say({ type: 'listening', port: 0 });
    d.say({ type: 'listening', port: 0 });
    expect(pool.serving()).toBe(0);
    const reloading = pool.reload(revoking(), CA);
    d.say({ type: 'reloaded', id: d.reloads()[0]!.id }); // d catches up during the round: not admitted yet
    answer(d); // and applies the round's config
    answer(c, 'jwksFile /keys.json: cannot read JSON');
    await expect(reloading).rejects.toThrow('cannot read JSON');
    expect(pool.serving()).toBe(0);
    answer(d); // back on the config in force
    expect(pool.serving()).toBe(1);
    expect(pool.connections().map((x) => x.worker)).toEqual([d.id]);
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

  it('at shutdown, a worker held back that catches up meanwhile is not admitted: it is not among the workers taking connections', async () => {
    const { pool, a, c } = await replacementBehind();
    c.say({ type: 'listening', port: 0 });
    expect(pool.connections().map((e) => e.worker)).toEqual([a.id]);
    pools.splice(0);
    const stopped = pool.shutdown();
    answer(c); // its catch-up, answered as the server stops
    expect(pool.connections().map((e) => e.worker)).toEqual([a.id]);
    for (const w of fake.forked) if (!w.isDead()) w.exit(0);
    await stopped;
  });

  it("counts a worker whose channel has ended as serving no more, before its exit is seen, and hands it nothing", async () => {
    const pool = await twoServing(config());
    const [a, b] = fake.forked as [FakeWorker, FakeWorker];
    b.channelEnds();
    expect(pool.serving()).toBe(1);
    expect(pool.connections().map((e) => e.worker)).toEqual([a.id]);
  });

  it("hands a connection to another worker, not to one whose channel has just closed (its 'disconnect' not yet emitted)", async () => {
    const pool = await twoServing(config());
    const [a, b] = fake.forked as [FakeWorker, FakeWorker];
    // a, the first of two equals, would be picked.
    a.channelClosing();
    expect(await connectionGoesTo(pool, [a, b])).toEqual([b]);
    expect(a.sent.map((m) => m.type)).not.toContain('connection');
    expect(pool.serving()).toBe(1);
  });

  it('one catching up is admitted when it answers, though another worker exited meanwhile', async () => {
    const { pool, a, c } = await replacementBehind();
    c.say({ type: 'listening', port: 0 });
    expect(pool.serving()).toBe(1);
    a.exit(1);
    expect(pool.serving()).toBe(0);
    answer(c);
    expect(pool.connections().map((x) => x.worker)).toEqual([c.id]);
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

  it('after a rejected reload: one retired for not going back is not admitted again while it drains, when a later reload is rejected too', async () => {
    const { pool, a, b } = await rejectedBySilence(true);
    answer(a);
    vi.advanceTimersByTime(30_000);
    expect(b.sent.at(-1)).toEqual({ type: 'shutdown' });
    expect(pool.serving()).toBe(1);
    // b drains (it still holds the config in force: it never applied the rejected one) as a refuses the next reload.
    const refused = pool.reload(revoking(), CA);
    answer(a, 'jwksFile /keys.json: cannot read JSON');
    await expect(refused).rejects.toThrow('cannot read JSON');
    expect(pool.serving()).toBe(1);
    expect(pool.connections().map((e) => e.worker)).toEqual([a.id]);
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

  it('tells every worker at once when a batch arrives and the inventory stops accepting records (inventory.failClosed), not at the next 250 ms tick', async () => {
    let accepting = true;
    const starting = startWorkers(config(), CA, logger, shapeOf(2), { onInventory: () => {}, accepting: () => accepting });
    await vi.waitFor(() => expect(fake.forked).toHaveLength(2));
    for (const w of fake.forked) w.start();
    pools.push(await starting);
    const [a, b] = fake.forked as [FakeWorker, FakeWorker];
    accepting = false;
    a.say(encodeInventory({ type: 'inventory', records: [], audit: [] }));
    for (const w of [a, b]) expect(w.sent.at(-1)).toEqual({ type: 'inventory-state', accepting: false });
  });

  it('tells a replacement, before any connection, that the inventory refuses records', async () => {
    const starting = startWorkers(config(), CA, logger, shapeOf(2), { accepting: () => false });
    await vi.waitFor(() => expect(fake.forked).toHaveLength(2));
    for (const w of fake.forked) w.start();
    pools.push(await starting);
    // The state published to the workers that started; a replacement is told when it listens.
    await new Promise((r) => setTimeout(r, 300));
    const c = await replacementOf(fake.forked[1]!);
    c.say({ type: 'listening', port: 0 });
    expect(c.sent.map((m) => m.type)).toEqual(['config', 'inventory-state']);
    expect(c.sent[1]).toEqual({ type: 'inventory-state', accepting: false });
  });

  it("counts a worker's connections down as it reports them closed", async () => {
    const pool = await twoServing(config());
    const [w] = await connectionGoesTo(pool, fake.forked.slice(0, 2));
    const open = (): number | undefined => pool.connections().find((e) => e.worker === w!.id)?.open;
    expect(open()).toBe(1);
    w!.say({ type: 'connections-closed', count: 1 });
    expect(open()).toBe(0);
  });

  it('answers a metrics scrape as soon as every serving worker has answered, with their metrics', async () => {
    const pool = await twoServing(config());
    const scrape = pool.workerMetrics(3_000);
    const started = Date.now();
    for (const w of fake.forked) {
      const ask = w.sent.find((m): m is Extract<PrimaryMessage, { type: 'metrics-request' }> => m.type === 'metrics-request')!;
      w.say({ type: 'metrics', id: ask.id, metrics: [] });
    }
    expect(await scrape).toEqual({ metrics: [[], []], unanswered: 0 });
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it("keeps a dead worker's last counters in later scrapes, so that the sums do not drop", async () => {
    const pool = await twoServing(config());
    const [a, b] = fake.forked as [FakeWorker, FakeWorker];
    const counter = [{ name: 'meshcert_test_total', help: 'a test counter', type: 'counter', values: [{ value: 3, labels: {} }], aggregator: 'sum' }] as unknown as WorkerMetricsJson;
    const answerScrape = (w: FakeWorker): void => {
      const ask = w.sent.filter((m): m is Extract<PrimaryMessage, { type: 'metrics-request' }> => m.type === 'metrics-request').at(-1)!;
      w.say({ type: 'metrics', id: ask.id, metrics: counter });
    };
    const first = pool.workerMetrics(3_000);
    answerScrape(a);
    answerScrape(b);
    expect((await first).metrics).toHaveLength(2);
    b.exit(1);
    const second = pool.workerMetrics(3_000);
    answerScrape(a);
    expect(await second).toEqual({ metrics: [counter, counter], unanswered: 0 });
  });

  it('a retired worker that exits within the grace period is not killed, nor said to be', async () => {
    const { c } = await replacementBehind();
    vi.useFakeTimers({ toFake: ['setTimeout'] });
    c.say({ type: 'listening', port: 0 });
    answer(c, 'no');
    expect(c.sent.at(-1)).toEqual({ type: 'shutdown' });
    vi.advanceTimersByTime(1_000);
    c.exit(0);
    vi.advanceTimersByTime(10_000);
    expect(c.kills).toEqual([]);
    expect(msgs().filter((m) => m.startsWith('worker still running'))).toEqual([]);
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
