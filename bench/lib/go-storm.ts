/**
 * The restart storm driven by grpc-go (bench/storm-go), istio-agent's own client stack. The storm's
 * client runs on the same two vCPUs as the server: node:http2 took about 200 µs of them per call
 * (about 2 s of a 5 s storm, measured), grpc-go much less, so more of the machine is the server's,
 * as it would be with the agents on other nodes. Falls back to the node:http2 driver where Go and
 * Debian's grpc-go are not installed (the result says which driver ran).
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { goBuild, goToolchainProblem } from '../../test/support/go-build.js';
import type { LoadResult, PreparedCall } from './h2-client.js';

const SOURCE = join(import.meta.dirname, '..', 'storm-go');

export { goToolchainProblem };

export interface GoStormResult extends LoadResult {
  /** The driver's own CPU seconds from the first call to the last answer. */
  driverCpuSeconds: number;
}

/** Compiles the driver into `dir`; resolves with the binary's path. */
export async function buildGoStorm(dir: string): Promise<string> {
  const bin = join(dir, 'storm-go');
  await goBuild(SOURCE, bin);
  return bin;
}

/** What bench/storm-go prints: a LoadResult, with the samples in base64 and its own CPU. */
type GoOutput = Omit<LoadResult, 'latenciesMs' | 'samples'> & {
  latenciesMs: number[] | null;
  samples: string[] | null;
  cpuSeconds: number;
  error?: string;
};

/** A response message as the node:http2 driver returns it: gRPC-framed (uncompressed). */
function frame(message: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(message.length, 1);
  return Buffer.concat([head, message]);
}

/**
 * Runs every call at once over `connections` connections, retrying UNAVAILABLE and
 * RESOURCE_EXHAUSTED as the node:http2 driver does. `onStart` runs once the connections are up,
 * just before the first call.
 */
export async function runGoStorm(
  bin: string,
  dir: string,
  calls: readonly PreparedCall[],
  o: { port: number; rootPem: string; connections: number; onStart?: () => void },
): Promise<GoStormResult> {
  const callsFile = join(dir, 'storm-calls.txt');
  // The message without its 5-byte gRPC prefix: grpc-go frames it again.
  writeFileSync(callsFile, calls.map((c) => `${c.token}\t${c.body.subarray(5).toString('base64')}\n`).join(''));
  const rootFile = join(dir, 'storm-root.pem');
  writeFileSync(rootFile, o.rootPem);
  const child = spawn(bin, [`-addr=127.0.0.1:${o.port}`, `-root=${rootFile}`, '-server-name=localhost', `-calls=${callsFile}`, `-connections=${o.connections}`], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  let out: GoOutput | undefined;
  for await (const line of createInterface({ input: child.stdout })) {
    if (line === '{"ready":true}') {
      o.onStart?.();
      child.stdin.write('go\n');
      continue;
    }
    out = JSON.parse(line) as GoOutput;
  }
  const code = await exited;
  if (!out || out.error || code !== 0) throw new Error(`the grpc-go storm driver failed (exit ${code}): ${out?.error ?? ''}${stderr}`);
  const { latenciesMs, samples, cpuSeconds, ...counts } = out; // "error" is absent: a run with one threw above
  return {
    ...counts,
    latenciesMs: latenciesMs ?? [],
    samples: (samples ?? []).map((b64) => frame(Buffer.from(b64, 'base64'))),
    driverCpuSeconds: cpuSeconds,
  };
}
