/**
 * Builds test/interop/go-client (grpc-go + Go's crypto/x509) from Debian's Go packages, offline,
 * in GOPATH mode: `apt-get install golang-go golang-google-grpc-dev golang-google-protobuf-dev`.
 * Without them the interop tests are skipped locally and say why; under CI that is a failure.
 */
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
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
  let why: string | undefined;
  try {
    execFileSync('go', ['version'], { stdio: 'ignore' });
    if (!existsSync(join(GOPATH, 'src/google.golang.org/grpc')) || !existsSync(join(GOPATH, 'src/google.golang.org/protobuf'))) {
      why = `grpc-go or protobuf-go is not in ${GOPATH}`;
    }
  } catch {
    why = 'the go command is not installed';
  }
  if (!why) return undefined;
  const msg = `${why}; install Debian's ${PACKAGES} to run the grpc-go interop tests`;
  if (isCi()) throw new Error(`${msg} (CI must run them)`);
  console.warn(`[meshcert test setup] ${msg}; they are skipped.`);
  return msg;
}

/** Compiles the client (the first build compiles grpc-go too: allow a few minutes on a fresh machine). */
export function buildGoClient(timeoutMs = 300_000): Promise<GoClient> {
  const dir = mkdtempSync(join(tmpdir(), 'meshcert-go-'));
  const bin = join(dir, 'go-client');
  const env: NodeJS.ProcessEnv = { ...process.env, GOPATH, GO111MODULE: 'off', GOFLAGS: '', CGO_ENABLED: '0' };
  // Go needs a build cache; without a HOME it has no default one.
  if (!env.GOCACHE && !env.HOME) env.GOCACHE = join(tmpdir(), 'meshcert-go-cache');
  return new Promise((resolve, reject) => {
    execFile('go', ['build', '-o', bin, '.'], { cwd: SOURCE, env, timeout: timeoutMs }, (err, _stdout, stderr) => {
      if (err) {
        rmSync(dir, { recursive: true, force: true });
        reject(new Error(`go build of ${SOURCE} failed: ${err.message}\n${stderr}`));
        return;
      }
      resolve({
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
      });
    });
  });
}
