import { getHeapSpaceStatistics, getHeapStatistics } from 'node:v8';

/**
 * Watches how full this process's V8 old generation is, so that a flood of connections or calls
 * is turned away before the heap runs out. A worker's old generation is capped
 * (server.workerHeapMb) to keep RSS flat; without this, a restart storm of 16,000 agents, each on
 * its own connection, filled it and killed both workers with "JavaScript heap out of memory"
 * (measured), dropping every connection they held.
 *
 * Sampled on a timer, and again when asked (`high`) if the last sample is more than 10 ms old: a
 * burst of connections can arrive within one turn of the event loop that lasts seconds (each TLS
 * handshake takes 1.5-2 ms of CPU), and a state read from a sample taken before it let both
 * workers accept enough connections to run out of heap (measured). Reading the statistics costs a
 * few microseconds. `used` counts garbage not yet collected, so the state can turn high just
 * before a major collection; what it triggers is only shedding that clients retry, and the gap
 * between the high and low marks keeps it from flapping.
 */

export interface HeapSample {
  /** Bytes used in the old generation (every space but the young generation's). */
  readonly oldUsed: number;
  /** The most the old generation may hold. */
  readonly oldLimit: number;
}

const MB = 1024 * 1024;
const YOUNG_SPACES = new Set(['new_space', 'new_large_object_space']);

/** The size of a `--flag=N` (MB) among Node's flags, or undefined. The last one wins, as in V8. */
export function flagMb(flags: readonly string[], name: string): number | undefined {
  let mb: number | undefined;
  for (const f of flags) {
    const m = new RegExp(`^--${name.replace(/-/g, '[-_]')}=(\\d+)$`).exec(f);
    if (m) mb = Number(m[1]);
  }
  return mb;
}

/**
 * The old generation's limit in bytes: `--max-old-space-size` when set (cluster workers get it
 * from server.workerHeapMb), else V8's heap limit less its young generation (three semi-spaces,
 * 16 MB each by default on 64-bit).
 */
export function oldGenerationLimit(flags: readonly string[], heapSizeLimit: number): number {
  const old = flagMb(flags, 'max-old-space-size');
  if (old !== undefined && old > 0) return old * MB;
  const semi = flagMb(flags, 'max-semi-space-size') ?? 16;
  return Math.max(16 * MB, heapSizeLimit - 3 * semi * MB);
}

/** Node's flags for this process, in increasing precedence: NODE_OPTIONS', then the command line's. */
export function processFlags(): string[] {
  return [...(process.env.NODE_OPTIONS ?? '').split(/\s+/).filter(Boolean), ...process.execArgv];
}

/** This process's heap now. */
export function sampleHeap(oldLimit: number): HeapSample {
  let oldUsed = 0;
  for (const s of getHeapSpaceStatistics()) if (!YOUNG_SPACES.has(s.space_name)) oldUsed += s.space_used_size;
  return { oldUsed, oldLimit };
}

export interface HeapPressureOptions {
  /** High at or above this share of the old generation's limit (0 < highRatio < 1). */
  readonly highRatio: number;
  /** Back to normal below this share; default 7/8 of highRatio (0.7 for 0.8). */
  readonly lowRatio?: number;
  readonly intervalMs?: number;
  /** Reading `high` samples again when the last sample is older than this; default 10 ms. */
  readonly freshMs?: number;
  /** For tests; default: this process's heap. */
  readonly sample?: () => HeapSample;
  readonly now?: () => number;
}

/** What the transport and admission read: whether memory is short, and a signal on each sample while it is. */
export interface PressureSignal {
  readonly high: boolean;
  /** Called on every sample while high (to keep shedding), and once when it turns low again. */
  onSample(listener: (high: boolean, sample: HeapSample) => void): void;
}

export class HeapPressure implements PressureSignal {
  private state = false;
  private sampledAt = Number.NEGATIVE_INFINITY;
  private timer: NodeJS.Timeout | undefined;
  private readonly listeners: Array<(high: boolean, sample: HeapSample) => void> = [];
  private readonly lowRatio: number;
  private readonly sample: () => HeapSample;
  private readonly now: () => number;

  constructor(private readonly o: HeapPressureOptions) {
    if (!(o.highRatio > 0 && o.highRatio < 1)) throw new RangeError(`highRatio must be between 0 and 1 (got ${o.highRatio})`);
    this.lowRatio = o.lowRatio ?? o.highRatio * 0.875;
    if (!(this.lowRatio >= 0 && this.lowRatio < o.highRatio)) throw new RangeError(`lowRatio must be below highRatio (got ${this.lowRatio})`);
    const limit = oldGenerationLimit(processFlags(), getHeapStatistics().heap_size_limit);
    this.sample = o.sample ?? (() => sampleHeap(limit));
    this.now = o.now ?? (() => performance.now());
  }

  get high(): boolean {
    if (this.now() - this.sampledAt >= (this.o.freshMs ?? 10)) this.check();
    return this.state;
  }

  onSample(listener: (high: boolean, sample: HeapSample) => void): void {
    this.listeners.push(listener);
  }

  /** Takes one sample and updates the state (the timer calls this; tests call it directly). */
  check(): HeapSample {
    const s = this.sample();
    this.sampledAt = this.now();
    const ratio = s.oldUsed / s.oldLimit;
    const was = this.state;
    if (!was && ratio >= this.o.highRatio) this.state = true;
    else if (was && ratio < this.lowRatio) this.state = false;
    if (this.state || was) {
      for (const l of this.listeners) {
        // Listeners run inside the connection handler and the timer: one that throws must not
        // take the process down, nor stop the others.
        try {
          l(this.state, s);
        } catch (e) {
          process.emitWarning(`memory pressure listener failed: ${e instanceof Error ? e.message : String(e)}`);
        }
      }
    }
    return s;
  }

  start(): this {
    this.timer ??= setInterval(() => this.check(), this.o.intervalMs ?? 100).unref();
    return this;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
