import { describe, expect, it } from 'vitest';
import { parseH2loadOutput } from '../../../bench/lib/h2load.js';

/** h2load 1.52's summary of a timed run (-D) whose clients were stopped with calls in flight. */
const TIMED = `starting benchmark...
spawning thread #0: 8 total client(s). Timing-based test with 0s of warm-up time and 2s of main duration for measurements.
Main benchmark duration is over for thread #0. Stopping all clients.
Stopped all clients for thread #0

finished in 2.00s, 1500.50 req/s, 4.20MB/s
requests: 3001 total, 3129 started, 3001 done, 3000 succeeded, 1 failed, 0 errored, 0 timeout
status codes: 3101 2xx, 0 3xx, 1 4xx, 0 5xx
traffic: 8.40MB (8808412) total, 81.45KB (83400) headers (space savings 95.77%), 7.90MB (8283100) data
                     min         max         mean         sd        +/- sd
time for request:       93us     11.46ms       276us       333us    96.65%
`;
const LOG = '1795963685978723\t200\t9885\n1795963685978724\t200\t1000\n1795963685978725\t200\t30000\n';

/** h2load's summary when no connection could be made. */
const REFUSED = `starting benchmark...
spawning thread #0: 1 total client(s). 10 total requests

finished in 244us, 0.00 req/s, 0B/s
requests: 10 total, 0 started, 0 done, 0 succeeded, 10 failed, 10 errored, 0 timeout
status codes: 0 2xx, 0 3xx, 0 4xx, 0 5xx
`;

describe('parseH2loadOutput', () => {
  it('reads done, failed (its errored and timeout counts are part of failed, not added), non-2xx, rate and latencies', () => {
    const r = parseH2loadOutput(TIMED, LOG);
    expect(r.requests).toBe(3001);
    expect(r.failed).toBe(1);
    expect(r.non2xx).toBe(1);
    expect(r.perSecond).toBe(1500.5);
    expect(r.latency).toMatchObject({ p50: 9.885, max: 30 });
  });

  it('counts a request that failed in transport (status -1 in the log) as failed, not as a latency, and does not throw', () => {
    const r = parseH2loadOutput(TIMED, `${LOG}1795963685978726\t-1\t500000\n`);
    expect(r.failed).toBe(1);
    // 500 ms would be the max (and move the mean) had it been counted.
    expect(r.latency).toMatchObject({ p50: 9.885, max: 30 });
  });

  it('reads a run whose every request failed in transport (done counts them, the log has no time)', () => {
    const allFailed = TIMED.replace('3001 done, 3000 succeeded, 1 failed', '2 done, 0 succeeded, 2 failed');
    const r = parseH2loadOutput(allFailed, '1795963685978726\t-1\t500000\n1795963685978727\t-1\t500000\n');
    expect(r).toMatchObject({ requests: 2, failed: 2 });
  });

  it('reads a run that finished in microseconds and failed every request', () => {
    const r = parseH2loadOutput(REFUSED, '');
    expect(r).toMatchObject({ requests: 0, failed: 10, non2xx: 0, perSecond: 0 });
  });

  it('throws on output it does not recognise instead of reporting zeros', () => {
    expect(() => parseH2loadOutput('h2load: unrecognized option\n', LOG)).toThrow(/did not parse.*"requests:"/s);
    expect(() => parseH2loadOutput(TIMED.replace(/^status codes.*$/m, ''), LOG)).toThrow(/"status codes:"/);
    expect(() => parseH2loadOutput(TIMED.replace('finished in', 'done in'), LOG)).toThrow(/"finished in"/);
  });

  it('throws on a log file it does not recognise, or none when requests were done', () => {
    expect(() => parseH2loadOutput(TIMED, 'garbage\n')).toThrow(/log file did not parse/);
    expect(() => parseH2loadOutput(TIMED, '')).toThrow(/logged no request times/);
  });
});
