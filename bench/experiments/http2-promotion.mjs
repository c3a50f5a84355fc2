/**
 * How much of a bare node:http2 server's young allocation its scavenges promote, at a given call
 * rate (bench/HISTORY.md, round 28). The server keeps nothing of a call: it reads the request,
 * answers 3,000 bytes and gRPC-style trailers. h2load drives it for 15 s over h2c with the bench's
 * headers (CONNS connections, 8 by default, of 64 streams, the rate spread over them); the
 * server's --trace-gc-nvp lines give the share promoted, which is what brings its next
 * mark-compact. What sets the share is the calls per connection, not per process: about 1 % up to
 * 400 calls/s per connection, 6-8 % from about 460 (round 28).
 *
 *   [CONNS=8] node bench/experiments/http2-promotion.mjs [callsPerSecond=3700] [v8 flags...]
 *
 * Needs h2load (Debian package nghttp2-client).
 */
import { execFile, fork } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

if (process.argv[2] === 'server') {
  const answer = Buffer.alloc(3000, 1);
  const server = http2.createServer();
  server.on('stream', (stream) => {
    stream.on('error', () => {});
    stream.resume();
    stream.on('end', () => {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(answer);
    });
  });
  server.listen(0, '127.0.0.1', () => process.send(server.address().port));
  process.on('message', () => process.exit(0));
  // The driver gone (killed, crashed) must not leave this server listening.
  process.on('disconnect', () => process.exit(0));
} else {
  const rate = Number(process.argv[2] ?? 3700);
  const conns = Number(process.env.CONNS ?? 8);
  if (!(rate > 0) || !Number.isInteger(conns) || conns < 1) {
    console.error('usage: [CONNS=8] node bench/experiments/http2-promotion.mjs [callsPerSecond=3700] [v8 flags...]');
    process.exit(2);
  }
  const flags = process.argv.slice(3);
  const child = fork(fileURLToPath(import.meta.url), ['server'], { execArgv: ['--trace-gc-nvp', ...flags], stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
  let trace = '';
  child.stdout.on('data', (d) => (trace += d));
  const port = await new Promise((resolve) => child.once('message', resolve));
  const dir = mkdtempSync(join(tmpdir(), 'http2-promotion-'));
  const body = join(dir, 'body');
  writeFileSync(body, Buffer.alloc(3000, 0x41));
  const token = 'e'.repeat(800);
  const args = ['-D', '15', '-c', String(conns), '-m', '64', '-t', '1', `--rps=${Math.max(1, Math.round(rate / conns))}`, '-d', body,
    '-H', 'content-type: application/grpc', '-H', 'te: trailers', '-H', `authorization: Bearer ${token}`, '-H', 'clusterid: Kubernetes',
    `http://127.0.0.1:${port}/istio.v1.auth.IstioCertificateService/CreateCertificate`];
  let out;
  try {
    out = await new Promise((resolve, reject) => execFile('h2load', args, (err, stdout) => (err ? reject(err) : resolve(stdout))));
  } catch (e) {
    child.kill();
    console.error(e.code === 'ENOENT' ? 'h2load not found (Debian package nghttp2-client)' : `h2load failed: ${e.message}`);
    process.exit(1);
  }
  child.send('stop');
  await new Promise((resolve) => child.once('exit', resolve));
  const field = (line, name) => Number(new RegExp(`\\b${name}=([\\d.]+)`).exec(line)?.[1] ?? 0);
  const scavenges = trace.split('\n').filter((l) => / gc=s /.test(l));
  const promoted = scavenges.reduce((s, l) => s + field(l, 'promoted'), 0);
  const allocated = scavenges.reduce((s, l) => s + field(l, 'allocated'), 0);
  const mcs = trace.split('\n').filter((l) => / gc=mc /.test(l)).length;
  console.log(/^finished in .*$/m.exec(out)?.[0] ?? out);
  console.log(`${scavenges.length} scavenges, ${mcs} mark-compacts; promoted ${(promoted / 2 ** 20).toFixed(1)} MiB, ${((100 * promoted) / Math.max(1, allocated)).toFixed(2)} % of the young allocation`);
}
