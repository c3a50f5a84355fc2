/**
 * Builds test/interop/go-client (grpc-go + Go's crypto/x509) from Debian's Go packages, offline,
 * in GOPATH mode: `apt-get install golang-go golang-google-grpc-dev golang-google-protobuf-dev`.
 * Without them the interop tests are skipped locally and say why; under CI that is a failure.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GO_PACKAGES, goBuild, goToolchainProblem, skipUnlessCi } from './go-build.js';

const SOURCE = join(import.meta.dirname, '..', 'interop', 'go-client');

export interface GoClientResult {
  code: string;
  message?: string;
  error?: string;
  alpn?: string;
  tlsVersion?: string;
  chainElements?: number;
  leafUris?: string[];
  leafSerial?: string;
  lifetimeSeconds?: number;
  roots?: number;
  verifiedPaths?: number;
  health?: string;
}

export interface GoClient {
  /** Runs one call; resolves with the client's JSON and whether its own checks passed (exit 0). */
  run(args: Record<string, string | number>): Promise<{ ok: boolean; result: GoClientResult }>;
  /** Removes the built binary. */
  remove(): void;
}

/**
 * Why the Go client cannot be built here, or undefined when it can. Throws under CI instead:
 * CI must run the interop tests.
 */
export function goClientUnavailable(): string | undefined {
  const why = goToolchainProblem();
  return skipUnlessCi(why && `${why}; install Debian's ${GO_PACKAGES} to run the grpc-go interop tests`);
}

/** Compiles the client (the first build compiles grpc-go too: allow a few minutes on a fresh machine). */
export async function buildGoClient(timeoutMs = 300_000): Promise<GoClient> {
  const dir = mkdtempSync(join(tmpdir(), 'meshcert-go-'));
  const bin = join(dir, 'go-client');
  try {
    await goBuild(SOURCE, bin, timeoutMs);
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    run: (args) =>
      new Promise((done, fail) => {
        const argv = Object.entries(args).map(([k, v]) => `-${k}=${v}`);
        execFile(bin, argv, { timeout: 25_000 }, (e, stdout, stderrText) => {
          const line = stdout.trim().split('\n').pop() ?? '';
          try {
            done({ ok: e === null, result: JSON.parse(line) as GoClientResult });
          } catch {
            fail(new Error(`go-client printed no result (${e?.message ?? ''}): ${stdout}${stderrText}`));
          }
        });
      }),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
