/**
 * Builds a Go program from Debian's Go packages, offline, in GOPATH mode
 * (`apt-get install golang-go golang-google-grpc-dev golang-google-protobuf-dev`): the grpc-go
 * interop client (test/interop/go-client), the benchmark's storm driver (bench/storm-go), and the
 * crypto/x509 verifier (test/interop/go-verify, standard library only).
 */
import { execFile, execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isCi } from './ci.js';

const GOPATH = '/usr/share/gocode';
export const GO_PACKAGES = 'golang-go golang-google-grpc-dev golang-google-protobuf-dev';

/** Why Go programs cannot be built here, or undefined when they can (`grpc`: ones using grpc-go). */
export function goToolchainProblem(o: { grpc?: boolean } = { grpc: true }): string | undefined {
  try {
    execFileSync('go', ['version'], { stdio: 'ignore' });
  } catch {
    return 'the go command is not installed';
  }
  if (o.grpc !== false && (!existsSync(join(GOPATH, 'src/google.golang.org/grpc')) || !existsSync(join(GOPATH, 'src/google.golang.org/protobuf')))) {
    return `grpc-go or protobuf-go is not in ${GOPATH}`;
  }
  return undefined;
}

/**
 * A reason to skip tests that need Go, said once on stderr; under CI it throws instead: CI must
 * run them. Undefined (run them) when there is no problem.
 */
export function skipUnlessCi(problem: string | undefined): string | undefined {
  if (problem === undefined) return undefined;
  if (isCi()) throw new Error(`${problem} (CI must run them)`);
  console.warn(`[meshcert test setup] ${problem}; they are skipped.`);
  return problem;
}

/** `go build -o bin` in `sourceDir` (the first build compiles grpc-go too: allow minutes on a fresh machine). */
export function goBuild(sourceDir: string, bin: string, timeoutMs = 300_000): Promise<void> {
  const env: NodeJS.ProcessEnv = { ...process.env, GOPATH, GO111MODULE: 'off', GOFLAGS: '', CGO_ENABLED: '0' };
  // Go needs a build cache; without a HOME it has no default one.
  if (!env.GOCACHE && !env.HOME) env.GOCACHE = join(tmpdir(), 'meshcert-go-cache');
  return new Promise((resolve, reject) => {
    execFile('go', ['build', '-o', bin, '.'], { cwd: sourceDir, env, timeout: timeoutMs }, (err, _stdout, stderr) => {
      if (err) reject(new Error(`go build of ${sourceDir} failed: ${err.message}\n${stderr}`));
      else resolve();
    });
  });
}
