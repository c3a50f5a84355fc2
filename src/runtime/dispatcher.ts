/**
 * The cluster primary's accept loop: it owns the gRPC listening socket and hands every new
 * connection, unread, to the serving worker that holds the fewest open connections.
 *
 * Why not Node's cluster round robin: it gives a connection to whichever worker acknowledged its
 * previous one first, so connections opened together (a load generator's 8, a ztunnel per node, a
 * gateway's pool) often split 5/3 or 6/2, and since a connection's calls stay on its worker, one
 * worker then does three quarters of the work while the other idles (measured: CPU shares of
 * 0.77/0.16, and p99 at half of peak four times the balanced runs').
 */
import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from '../log/logger.js';
import { listenOn } from '../net/host-port.js';

/** A worker as the dispatcher sees it. */
export interface DispatchTarget {
  /** For metrics and logs (the cluster worker's id). */
  readonly id: number;
  /**
   * Starts passing the socket to the worker and returns true; `done` follows once it is sent, or
   * with an error (the socket is then closed). False when the worker cannot take it at all (its
   * channel has closed): the socket is untouched and goes to another worker.
   */
  hand(socket: Socket, done: (err: Error | null) => void): boolean;
}

export interface DispatcherOptions {
  /** Connections held while no worker serves (all died at once, or none has started yet); beyond it they are closed. */
  readonly maxWaiting?: number;
  /** ...and how long one is held before it is closed, so that its client tries another replica. */
  readonly maxWaitMs?: number;
}

interface Entry {
  /** Connections handed to the worker that it has not reported closed. */
  open: number;
  /** Order of the last hand-off, so that ties go to the worker that waited longest. */
  last: number;
  /** The worker refuses new connections until its memory recovers: others get them meanwhile. */
  short: boolean;
  /** Sockets whose hand-off has not completed (Node passes one at a time, each after the last is acknowledged). */
  readonly sending: Set<Socket>;
}

interface Waiting {
  readonly socket: Socket;
  readonly timer: NodeJS.Timeout;
}

export class ConnectionDispatcher<T extends DispatchTarget> {
  private readonly server: Server;
  private readonly targets = new Map<T, Entry>();
  /** Open connections of workers removed while alive, for when they are added again (gone with them). */
  private readonly removedOpen = new WeakMap<T, number>();
  /** Accepted while no worker could take them, oldest first. */
  private readonly waiting: Waiting[] = [];
  private readonly maxWaiting: number;
  private readonly maxWaitMs: number;
  private handed = 0;
  private closing = false;

  constructor(
    private readonly logger: Logger,
    options: DispatcherOptions = {},
  ) {
    this.maxWaiting = options.maxWaiting ?? 1024;
    this.maxWaitMs = options.maxWaitMs ?? 10_000;
    // pauseOnConnect: the primary must not read a byte, or the worker's TLS would miss it.
    this.server = createServer({ pauseOnConnect: true }, (socket) => this.dispatch(socket));
  }

  /** Binds `host:port` (port 0: a free one); resolves with the port. Errors say which setting failed. */
  async listen(address: string): Promise<number> {
    const port = await listenOn(this.server, address, 'server.listen');
    // accept() failing later (EMFILE, say) is logged; the listener keeps going.
    this.server.on('error', (err: Error) => this.logger.error({ err }, 'gRPC listener error'));
    return port;
  }

  /**
   * A worker that serves: it gets connections from now on (and those that waited for one). One
   * added again after a remove (a failed hand-off on a live channel) keeps its count of open
   * connections: from zero it would be handed every new one until the count caught up.
   */
  add(target: T): void {
    if (this.targets.has(target)) return;
    this.targets.set(target, { open: this.removedOpen.get(target) ?? 0, last: 0, short: false, sending: new Set() });
    this.removedOpen.delete(target);
    while (this.waiting.length > 0 && !this.closing) {
      const w = this.waiting.shift()!;
      clearTimeout(w.timer);
      this.dispatch(w.socket);
    }
  }

  /**
   * A worker that drains, disconnected or died gets nothing more; the connections it has are its
   * own to close. Those still queued for it are closed here (Node's IPC drops a queued hand-off
   * when the channel closes, without a word): their clients reconnect.
   */
  remove(target: T): void {
    const e = this.targets.get(target);
    if (!e) return;
    this.targets.delete(target);
    for (const s of e.sending) s.destroy();
    // Those being handed over were never the worker's: it will not report them closed.
    this.removedOpen.set(target, Math.max(0, e.open - e.sending.size));
  }

  /** The worker reports that `count` of the connections handed to it have closed. */
  closed(target: T, count: number): void {
    const e = this.targets.get(target);
    if (e) e.open = Math.max(0, e.open - count);
    else if (this.removedOpen.has(target)) this.removedOpen.set(target, Math.max(0, this.removedOpen.get(target)! - count));
  }

  /** The worker reports that it is short of memory (it would refuse a connection) or has recovered. */
  setShortOfMemory(target: T, short: boolean): void {
    const e = this.targets.get(target);
    if (e) e.short = short;
  }

  /** Whether the worker is handed connections (added, and not removed since). */
  has(target: T): boolean {
    return this.targets.has(target);
  }

  /** Open connections per serving worker, as this dispatcher counts them. */
  openCounts(): Array<{ worker: number; open: number }> {
    return [...this.targets].map(([t, e]) => ({ worker: t.id, open: e.open }));
  }

  /** Connections accepted and waiting for a worker to serve. */
  get waitingCount(): number {
    return this.waiting.length;
  }

  /**
   * Stops accepting; connections waiting for a worker are closed. Does not wait for net.Server's
   * 'close': once sockets were handed over, Node waits for every worker to report them closed,
   * and never hears when the workers that held them have exited.
   */
  close(): void {
    this.closing = true;
    for (const w of this.waiting.splice(0)) {
      clearTimeout(w.timer);
      w.socket.destroy();
    }
    this.server.close();
  }

  private dispatch(socket: Socket): void {
    if (this.closing) return void socket.destroy();
    const target = this.pick();
    if (!target) return this.wait(socket);
    const entry = this.targets.get(target)!;
    entry.open++;
    entry.last = ++this.handed;
    entry.sending.add(socket);
    const started = target.hand(socket, (err) => {
      entry.sending.delete(socket);
      if (!err) return;
      // The channel broke under the send (the worker is exiting): the client reconnects.
      this.logger.debug({ err: err.message, worker: target.id }, 'could not hand a connection to a worker');
      entry.open = Math.max(0, entry.open - 1);
      socket.destroy();
      // Not a worker added again since (this send was queued before): that one is serving.
      if (this.targets.get(target) === entry) this.remove(target);
    });
    if (!started) {
      entry.sending.delete(socket);
      entry.open--;
      this.remove(target);
      this.dispatch(socket);
    }
  }

  private wait(socket: Socket): void {
    if (this.waiting.length >= this.maxWaiting) return void socket.destroy();
    const timer = setTimeout(() => {
      const i = this.waiting.findIndex((w) => w.socket === socket);
      if (i >= 0) this.waiting.splice(i, 1);
      socket.destroy();
    }, this.maxWaitMs);
    timer.unref();
    this.waiting.push({ socket, timer });
  }

  /**
   * The serving worker with the fewest open connections, preferring those with memory to spare;
   * of equals, the one handed to least recently. When all are short of memory one still gets the
   * connection and refuses it (counted there, in meshcert_connections_shed_total).
   */
  private pick(): T | undefined {
    let best: T | undefined;
    let bestEntry: Entry | undefined;
    const better = (e: Entry, b: Entry): boolean => {
      if (e.short !== b.short) return !e.short;
      if (e.open !== b.open) return e.open < b.open;
      return e.last < b.last;
    };
    for (const [t, e] of this.targets) {
      if (!bestEntry || better(e, bestEntry)) {
        best = t;
        bestEntry = e;
      }
    }
    return best;
  }
}
