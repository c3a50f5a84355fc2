import { AggregatorRegistry, type Registry } from 'prom-client';

export type WorkerMetricsJson = Awaited<ReturnType<Registry['getMetricsAsJSON']>>;

/** Kept as one aggregate once this many workers have died; a crash loop must not grow the list. */
const COMPACT_AT = 8;

/**
 * The counts of worker processes that have exited. The primary sums its workers' counters at
 * each scrape; a worker that dies takes its counts with it and its replacement starts from 0, so
 * the sums would fall, which Prometheus reads as a counter reset (and `rate()` as a spike of
 * the whole remaining total). Its last counters and histograms are kept and added to every sum;
 * its gauges (a state of a process that is gone) are not.
 */
export class RetiredWorkerMetrics {
  private list: WorkerMetricsJson[] = [];
  private compacting = false;

  retire(last: WorkerMetricsJson): void {
    // prom-client declares `type` a numeric enum; at run time it is the string ('counter', 'gauge'...).
    const counts = last.filter((m) => ['counter', 'histogram'].includes(String(m.type)));
    if (counts.length === 0) return;
    this.list.push(counts);
    if (this.list.length >= COMPACT_AT && !this.compacting) void this.compact();
  }

  /** To be aggregated with the live workers' metrics. */
  snapshots(): WorkerMetricsJson[] {
    return [...this.list];
  }

  private async compact(): Promise<void> {
    this.compacting = true;
    try {
      // A copy: workers retired while this awaits join the list, not the batch, and stay after the merge.
      const batch = [...this.list];
      const merged = await AggregatorRegistry.aggregate(batch).getMetricsAsJSON();
      this.list = [merged, ...this.list.filter((s) => !batch.includes(s))];
    } finally {
      this.compacting = false;
    }
  }
}
