/**
 * Builds test/interop/go-client (grpc-go + Go's crypto/x509) from Debian's Go packages, offline,
 * in GOPATH mode: `apt-get install golang-go golang-google-grpc-dev golang-google-protobuf-dev`.
 * Without them the interop tests are skipped locally and say why; under CI that is a failure.
 */
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isCi } from './ci.js';

const SOURCE = join(import.meta.dirname, '..', 'interop', 'go-client');
const GOPATH = '/usr/share/gocode';
const PACKAGES = 'golang-go golang-google-grpc-dev golang-google-protobuf-dev';

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
}

export interface GoClient {
  /** Runs one call; resolves with the client's JSON and whether its own checks passed (exit 0). */
  run(args: Record<string, string | number>): Promise<{ ok: boolean; result: GoClientResult }>;
}

/** Why the Go client cannot be built here, or undefined when it can. */
function missing(): string | undefined {
  try {
    execFileSync('go', ['version'], { stdio: 'ignore' });
  } catch {
    return 'the go command is not installed';
  }
  if (!existsSync(join(GOPATH, 'src/google.golang.org/grpc')) || !existsSync(join(GOPATH, 'src/google.golang.org/protobuf'))) {
    return `grpc-go or protobuf-go is not in ${GOPATH}`;
  }
  return undefined;
}

/** Builds the client, or returns the reason it is skipped (throws under CI instead). */
export function buildGoClient(): GoClient | string {
  const why = missing();
  if (why) {
    const msg = `${why}; install Debian's ${PACKAGES} to run the grpc-go interop tests`;
    if (isCi()) throw new Error(`${msg} (CI must run them)`);
    console.warn(`[meshcert test setup] ${msg}; they are skipped.`);
    return msg;
  }
  const bin = join(mkdtempSync(join(tmpdir(), 'meshcert-go-')), 'go-client');
  execFileSync('go', ['build', '-o', bin, '.'], {
    cwd: SOURCE,
    env: { ...process.env, GOPATH, GO111MODULE: 'off', GOFLAGS: '', CGO_ENABLED: '0' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return {
    run: (args) =>
      new Promise((resolve, reject) => {
        const argv = Object.entries(args).map(([k, v]) => `-${k}=${v}`);
        execFile(bin, argv, { timeout: 60_000 }, (err, stdout, stderr) => {
          const line = stdout.trim().split('\n').pop() ?? '';
          let result: GoClientResult;
          try {
            result = JSON.parse(line) as GoClientResult;
          } catch {
            reject(new Error(`go-client printed no result (${err?.message ?? ''}): ${stdout}${stderr}`));
            return;
          }
          resolve({ ok: err === null, result });
        });
      }),
  };
}
