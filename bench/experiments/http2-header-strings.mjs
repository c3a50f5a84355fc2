/**
 * What node:http2's received headers cost V8's full collections (bench/HISTORY.md, round 27).
 *
 * Node 20 hands every received header value (and every header name it has no static string for)
 * to JavaScript as an external string over nghttp2's buffer. V8 finalizes those in the
 * "clear.external_string_table" step of a mark-compact's atomic pause, so that pause grows with
 * the headers received since the last one. This drives 60,000 POSTs over h2c with a given number
 * of extra short headers and sums that step over the server's mark-compacts (--trace-gc-nvp).
 * The server keeps nothing: the cost is there for headers no code holds on to.
 *
 *   node bench/experiments/http2-header-strings.mjs [extraHeaders=0] [requests=60000] [bare]
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import http2 from 'node:http2';

if (process.argv[2] === 'server') {
  // Some old-generation churn, so that mark-compacts happen as they do in a serving worker.
  const churn = [];
  const server = http2.createServer();
  server.on('stream', (stream) => {
    churn.push(new Array(200).fill(0));
    if (churn.length > 2000) churn.length = 0;
    stream.respond({ ':status': 200 });
    stream.end('ok');
  });
  server.listen(0, '127.0.0.1', () => process.send(server.address().port));
  process.on('message', () => process.exit(0));
} else {
  const extra = Number(process.argv[2] ?? 0);
  const total = Number(process.argv[3] ?? 60_000);
  const child = fork(fileURLToPath(import.meta.url), ['server'], { execArgv: ['--trace-gc-nvp'], stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
  let trace = '';
  child.stdout.on('data', (d) => (trace += d));
  const port = await new Promise((resolve) => child.once('message', resolve));
  // With "bare", only the pseudo-headers (:path's value is short and the others are static).
  const headers = process.argv[4] === 'bare' ? { ':method': 'POST', ':path': '/x' } : { ':method': 'POST', ':path': '/x', authorization: `Bearer ${'t'.repeat(800)}`, clusterid: 'Kubernetes' };
  for (let i = 0; i < extra; i++) headers[`x-extra-${i}`] = `v${i}`;
  const sessions = [0, 1, 2, 3].map(() => http2.connect(`http://127.0.0.1:${port}`));
  let started = 0;
  let done = 0;
  await new Promise((resolve) => {
    const next = (session) => {
      if (started >= total) return;
      started++;
      const req = session.request(headers);
      req.resume();
      req.on('end', () => (++done === total ? resolve() : next(session)));
      req.end();
    };
    for (const s of sessions) for (let i = 0; i < 32; i++) next(s);
  });
  for (const s of sessions) s.close();
  child.send('stop');
  await new Promise((resolve) => child.once('exit', resolve));
  const fulls = trace.split('\n').filter((l) => /\bgc=mc\b/.test(l));
  const field = (line, name) => Number(new RegExp(`\\b${name.replace('.', '\\.')}=([\\d.]+)`).exec(line)?.[1] ?? 0);
  const pause = fulls.reduce((s, l) => s + field(l, 'pause'), 0);
  const clear = fulls.reduce((s, l) => s + field(l, 'clear.external_string_table'), 0);
  console.log(`${total} requests, ${Object.keys(headers).length} headers each: ${fulls.length} mark-compacts, ${pause.toFixed(1)} ms of pauses, ${clear.toFixed(1)} ms of it clearing the external string table`);
}
