import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initCaDir } from '../../../src/ca/init.js';
import { createLogger } from '../../../src/log/logger.js';
import { ExpiryMonitor, type ExpiryMonitorOptions } from '../../../src/monitoring/expiry-monitor.js';

const YEAR = 365 * 86_400;
let base: string;
let a: string;
let b: string;

beforeAll(async () => {
  base = mkdtempSync(join(tmpdir(), 'meshcert-monitor-'));
  a = join(base, 'a');
  b = join(base, 'b');
  await initCaDir({ dir: a });
  await initCaDir({ dir: b });
});
afterAll(() => rmSync(base, { recursive: true, force: true }));

const options = (issuers: ExpiryMonitorOptions['issuers'], caWarnBefore = 30 * 86_400): ExpiryMonitorOptions => ({ issuers, caWarnBefore, staleWithin: 86_400, interval: 300 });

describe('ExpiryMonitor', () => {
  it("checks the issuers and windows of the latest config it was given (a reload's)", async () => {
    const m = new ExpiryMonitor(options([{ name: 'default', dir: a }]), createLogger('silent'));
    const first = await m.check();
    expect(new Set(first.ca.map((e) => e.issuer))).toEqual(new Set(['default']));
    // ca init makes a one-year intermediate: not in a 30-day window, in a two-year one.
    expect(first.ca.filter((e) => e.state !== 'ok')).toEqual([]);
    m.update(options([{ name: 'default', dir: a }, { name: 'payments', dir: b }], 2 * YEAR));
    const second = await m.check();
    expect(new Set(second.ca.map((e) => e.issuer))).toEqual(new Set(['default', 'payments']));
    // The intermediates (one year) are in it; the roots (ten years) are not.
    expect(second.ca.filter((e) => e.state === 'warning').map((e) => `${e.issuer} ${e.role}`).sort()).toEqual(['default intermediate', 'payments intermediate']);
  });
});
