/**
 * Builds test/interop/go-verify (Go's crypto/x509 chain verification, standard library only) and
 * runs it. Without the go command the tests that use it are skipped locally and say why; under
 * CI that is a failure.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { goBuild, goToolchainProblem, skipUnlessCi } from './go-build.js';

const SOURCE = join(import.meta.dirname, '..', 'interop', 'go-verify');

export interface ChainToVerify {
  readonly root: string;
  readonly intermediates: string;
  readonly leaf: string;
}

export interface GoVerdict {
  readonly ok: boolean;
  readonly error?: string;
}

export interface GoVerifier {
  /** The release it was built with, e.g. [1, 19, 8]. */
  readonly version: readonly [number, number, number];
  /** Go's verdict on each chain (PEM), in order: one process for all. */
  verify(chains: readonly ChainToVerify[]): GoVerdict[];
  remove(): void;
}

/** Why Go cannot be used here, or undefined. Throws under CI instead: CI must run these checks. */
export function goVerifierUnavailable(): string | undefined {
  const why = goToolchainProblem({ grpc: false });
  return skipUnlessCi(why && `${why} (Debian: golang-go); the checks against Go's crypto/x509 need it`);
}

export async function buildGoVerifier(): Promise<GoVerifier> {
  const dir = mkdtempSync(join(tmpdir(), 'meshcert-go-verify-'));
  const bin = join(dir, 'go-verify');
  try {
    await goBuild(SOURCE, bin);
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const v = /go(\d+)\.(\d+)(?:\.(\d+))?/.exec(execFileSync('go', ['version'], { encoding: 'utf8' }));
  if (!v) throw new Error('cannot read the output of go version');
  return {
    version: [Number(v[1]), Number(v[2]), Number(v[3] ?? 0)],
    verify(chains) {
      const input = chains.map((c) => JSON.stringify(c)).join('\n') + '\n';
      const out = execFileSync(bin, [], { input, encoding: 'utf8', timeout: 30_000 });
      return out.trim().split('\n').map((l) => JSON.parse(l) as GoVerdict);
    },
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** Whether a Go release has the fix for CVE-2025-61727 (1.24.11, 1.25.5, and 1.26 on). */
export function refusesWildcardsOverExclusions([major, minor, patch]: readonly [number, number, number]): boolean {
  return major > 1 || minor >= 26 || (minor === 25 && patch >= 5) || (minor === 24 && patch >= 11);
}
