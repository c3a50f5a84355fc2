import { describe, expect, it } from 'vitest';
import { HealthService, type HealthCheckResponse } from '../../../src/grpc/health.js';
import { Status } from '../../../src/grpc/codes.js';
import type { ServerStream } from '../../../src/grpc/server.js';

/** A Watch stream that records what it was sent. */
function recorder(): { stream: ServerStream<HealthCheckResponse>; sent: string[]; close: () => void } {
  const sent: string[] = [];
  let onClose = (): void => {};
  const stream = {
    write: (r: HealthCheckResponse) => void sent.push(r.status),
    end: () => void sent.push('(end)'),
    fail: (code: number, details: string) => void sent.push(`(fail ${code} ${details})`),
    onClose: (f: () => void) => void (onClose = f),
  } as unknown as ServerStream<HealthCheckResponse>;
  return { stream, sent, close: () => onClose() };
}

describe('HealthService', () => {
  it('answers Check for the overall status and known services, NOT_FOUND for others', () => {
    const h = new HealthService(['ca']);
    expect(h.check({})).toEqual({ status: 'NOT_SERVING' });
    h.setAll('SERVING');
    expect(h.check({ service: 'ca' })).toEqual({ status: 'SERVING' });
    expect(h.serving).toBe(true);
    expect(() => h.check({ service: 'other' })).toThrow(expect.objectContaining({ code: Status.NOT_FOUND }));
  });

  it('sends Watch the current status at once, then only changes', () => {
    const h = new HealthService(['ca']);
    const w = recorder();
    h.watch({ service: 'ca' }, w.stream);
    h.setAll('NOT_SERVING');
    h.setAll('SERVING');
    h.setAll('SERVING');
    h.setAll('NOT_SERVING');
    expect(w.sent).toEqual(['NOT_SERVING', 'SERVING', 'NOT_SERVING']);
  });

  it('answers Watch of an unknown service with SERVICE_UNKNOWN once, and forgets closed watches', () => {
    const h = new HealthService(['ca']);
    const unknown = recorder();
    h.watch({ service: 'nope' }, unknown.stream);
    const gone = recorder();
    h.watch({}, gone.stream);
    gone.close();
    h.setAll('SERVING');
    expect(unknown.sent).toEqual(['SERVICE_UNKNOWN']);
    expect(gone.sent).toEqual(['NOT_SERVING']);
  });

  it('ends every Watch with UNAVAILABLE at shutdown (not OK: a Watch never ends of itself), and forgets them', () => {
    const h = new HealthService(['ca']);
    const a = recorder();
    const b = recorder();
    h.watch({}, a.stream);
    h.watch({ service: 'ca' }, b.stream);
    h.setAll('NOT_SERVING');
    h.endWatches();
    h.setAll('SERVING');
    expect(a.sent).toEqual(['NOT_SERVING', `(fail ${Status.UNAVAILABLE} the server is shutting down)`]);
    expect(b.sent).toEqual(['NOT_SERVING', `(fail ${Status.UNAVAILABLE} the server is shutting down)`]);
  });
});
