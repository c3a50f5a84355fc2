/**
 * Shared helpers for the controller tests. They run against FakeKube (test/support/fake-kube.ts):
 * a real Kubernetes API server was not available where these tests were written.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initCaDir } from '../../../src/ca/init.js';
import { loadCaDir } from '../../../src/ca/material.js';
import type { ServingCertIssuer } from '../../../src/controllers/istiod-tls.js';
import { localServingCertIssuer } from '../../../src/controllers/serving-issuer.js';
import { LocalIssuer } from '../../../src/issuer/local.js';
import { createKubeClient, type KubeClient } from '../../../src/k8s/client.js';
import type { FakeKube, FakeRequest } from '../../support/fake-kube.js';

/** A client whose requests carry `Bearer <token>` (FakeKube without a token accepts any). */
export function clientFor(fake: FakeKube, token: string): KubeClient {
  return createKubeClient({ server: fake.url, caPem: fake.caPem, token }, { requestTimeoutMs: 5_000, watch: { connectTimeoutMs: 3_000 } });
}

export const isWrite = (r: FakeRequest): boolean => r.method === 'POST' || r.method === 'PUT' || r.method === 'PATCH' || r.method === 'DELETE';

/** Writes (not reads, not watches) to `kind` (path segment), optionally only those carrying `token`. */
export function writesTo(fake: FakeKube, kind: 'configmaps' | 'secrets' | 'leases', token?: string): FakeRequest[] {
  return fake.requests.filter(
    (r) => isWrite(r) && r.path.split('/').includes(kind) && (token === undefined || r.authorization === `Bearer ${token}`),
  );
}

/** A log that records every call (to assert on, and to check that no key leaks). */
export interface RecordedLog {
  readonly lines: Array<{ level: string; obj: unknown; msg: string | undefined }>;
  info: (obj: unknown, msg?: string) => void;
  warn: (obj: unknown, msg?: string) => void;
  debug: (obj: unknown, msg?: string) => void;
  error: (obj: unknown, msg?: string) => void;
}

export function recordingLog(): RecordedLog {
  const lines: RecordedLog['lines'] = [];
  const at =
    (level: string) =>
    (obj: unknown, msg?: string): void => {
      lines.push({ level, obj, msg });
    };
  return { lines, info: at('info'), warn: at('warn'), debug: at('debug'), error: at('error') };
}

/** The controllers' log option type is pino's; the recorder implements the calls they make. */
export const asLog = (l: RecordedLog): never => l as never;

export interface TestCa {
  readonly dir: string;
  readonly issuer: LocalIssuer;
  readonly rootPem: string;
  /** An issuer function as meshcert wires it (localServingCertIssuer over this CA's LocalIssuer). */
  issue(clock?: () => number): ServingCertIssuer;
  cleanup(): void;
}

/** A CA made by meshcert's own `ca init`, loaded as `serve` loads it. */
export async function makeTestCa(org = 'meshcert-test'): Promise<TestCa> {
  const dir = mkdtempSync(join(tmpdir(), 'meshcert-controllers-ca-'));
  await initCaDir({ dir, organization: org });
  const issuer = new LocalIssuer('default', loadCaDir(dir));
  // Backdate 0: the lifetime arithmetic in the renewal tests stays exact.
  const issue = (clock: () => number = Date.now): ServingCertIssuer => localServingCertIssuer(() => issuer, { now: clock, backdateMs: 0 });
  return {
    dir,
    issuer,
    rootPem: issuer.material.rootBundlePem,
    issue,
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** Polls `fn` until it returns true (or throws after `timeoutMs`). */
export async function until(fn: () => boolean, timeoutMs = 5_000, what = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
