/**
 * Says a repeated failure at most once per window, with how many went unsaid since: a client
 * repeating requests, or a timer retrying, must not write one log line each.
 */
export class LogThrottle {
  private saidAt = Number.NEGATIVE_INFINITY;
  private unsaid = 0;

  constructor(
    private readonly everyMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * One occurrence: the number held back since the last line when this one is to be said (0 for
   * the first), or undefined when it is held back (counted for the next line).
   */
  take(): number | undefined {
    const t = this.now();
    if (t - this.saidAt < this.everyMs) {
      this.unsaid++;
      return undefined;
    }
    const held = this.unsaid;
    this.saidAt = t;
    this.unsaid = 0;
    return held;
  }
}
