import { accessSync, constants, existsSync, mkdirSync, rmdirSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { CaClient, statusName } from '../client/ca-client.js';
import { buildWorkloadCsr, type WorkloadKeyType } from '../client/workload-csr.js';
import { parseLifetimeArg } from '../config/duration.js';
import { hasDevIssuer, mintDevToken } from '../dev/token-issuer.js';
import { CA_FILES, writeFileAtomic, writePrivateKey } from '../ca/files.js';
import { serialHex } from '../x509/serial-hex.js';
import { parsePemBundle } from '../x509/pem.js';
import { verifyResponseChain } from '../x509/verify-chain.js';
import { workloadSpiffeId } from '../x509/spiffe-id.js';
import { parseHostPort } from '../net/host-port.js';
import { MAX_PEM_BYTES, MAX_TOKEN_BYTES, readProblem, readTextFile } from '../fs/read-file.js';
import { exclusive, parse, UsageError } from './args.js';
import { oneLine } from '../x509/names.js';

export const REQUEST_USAGE = `meshcert request --ns NAMESPACE --sa SERVICE_ACCOUNT [options]
  Requests a workload certificate as istio-agent does and checks the chain.
  --key rsa2048|ec256|ec384   key type (default rsa2048, istio-agent's default)
  --address HOST:PORT         meshcert's gRPC address (default 127.0.0.1:15012)
  --ca-root FILE              roots the server and the chain must chain to (default <data-dir>/ca/root-cert.pem)
  --token TOKEN | --token-file FILE   the service-account token (default: mint one with the dev issuer)
  --data-dir DIR              meshcert's data folder, for the dev issuer and root (default .meshcert)
  --trust-domain TD           (default cluster.local)
  --cluster ID                clusterid header (default Kubernetes)
  --ttl DURATION              requested lifetime (default 24h)
  --server-name NAME          TLS name to verify (default: the address host)
  --out DIR                   write cert-chain.pem, key.pem (0600) and root-cert.pem there
  --json                      print the result as JSON ({"refused": {code, details}} when refused,
                              {"unverified": {details}} when the chain does not verify, {"unwritten":
                              {details}} when --out could not take the files; exit 1)`;

/** What a gRPC header value may hold (grpc-js refuses the rest). */
const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;

export async function requestCommand(argv: string[]): Promise<number> {
  const { values: v } = parse(argv, {
    ns: { type: 'string' },
    sa: { type: 'string' },
    key: { type: 'string', default: 'rsa2048' },
    address: { type: 'string', default: '127.0.0.1:15012' },
    'ca-root': { type: 'string' },
    token: { type: 'string' },
    'token-file': { type: 'string' },
    'data-dir': { type: 'string', default: '.meshcert' },
    'trust-domain': { type: 'string', default: 'cluster.local' },
    cluster: { type: 'string', default: 'Kubernetes' },
    ttl: { type: 'string', default: '24h' },
    'server-name': { type: 'string' },
    out: { type: 'string' },
    json: { type: 'boolean', default: false },
  });
  if (!v.ns || !v.sa) throw new UsageError('request needs --ns and --sa');
  exclusive(v, 'token', 'token-file');
  if (!['rsa2048', 'ec256', 'ec384'].includes(v.key!)) throw new UsageError('--key must be rsa2048, ec256 or ec384');
  try {
    parseHostPort(v.address!);
  } catch (e) {
    throw new UsageError(`--address: ${(e as Error).message}`);
  }
  let ttl: number;
  try {
    ttl = parseLifetimeArg(v.ttl!);
  } catch (e) {
    throw new UsageError(`--ttl: ${(e as Error).message}`);
  }
  const dataDir = resolve(v['data-dir']!);
  const rootFile = v['ca-root'] ?? join(dataDir, 'ca', 'root-cert.pem');
  let rootPem: string;
  try {
    rootPem = readTextFile(rootFile, MAX_PEM_BYTES, { streams: true });
  } catch (e) {
    const hint = v['ca-root'] === undefined ? 'pass --ca-root or start "meshcert serve --dev" first' : "--ca-root names the CA's root-cert.pem";
    throw new UsageError(`cannot read the root certificate ${rootFile} (${readProblem(e)}): ${hint}`);
  }
  // Said here, not as a TLS failure to connect ("unable to get local issuer certificate").
  let roots: number;
  try {
    roots = parsePemBundle(rootPem).length;
  } catch (e) {
    throw new UsageError(`the root certificate file ${rootFile} holds a certificate that cannot be read: ${(e as Error).message}`);
  }
  if (roots === 0) throw new UsageError(`the root certificate file ${rootFile} holds no PEM certificate: pass --ca-root the CA's root-cert.pem`);
  let spiffeId: string;
  try {
    spiffeId = workloadSpiffeId(v['trust-domain']!, v.ns, v.sa);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const token = v.token ?? (v['token-file'] ? readTokenFile(v['token-file']) : await devToken(dataDir, v.ns, v.sa));
  // An empty one would be sent as no credential at all, and refused as such: the cause is here.
  if (token === '') throw new UsageError(v.token !== undefined ? '--token is empty' : `the token file ${v['token-file']} is empty (did the command that writes it fail?)`);
  // gRPC metadata is printable ASCII: grpc-js would refuse it with a message quoting the token.
  if (!PRINTABLE_ASCII.test(token)) throw new UsageError(`the token${v.token !== undefined ? ' (--token)' : v['token-file'] ? ` in ${v['token-file']}` : ''} holds a character a gRPC header cannot carry (only printable ASCII): is it a bare JWT?`);
  if (!PRINTABLE_ASCII.test(v.cluster!)) throw new UsageError('--cluster must be printable ASCII (it is sent as the ClusterID header)');
  // Made before asking (a certificate issued but not written loses its key), once every input is
  // read; removed again, when this made it and it is still empty, if nothing is written.
  const made = v.out === undefined ? undefined : makeOutDir(v.out);
  try {
    const code = await requestAndWrite();
    if (code !== 0) made?.removeIfEmpty();
    return code;
  } catch (e) {
    made?.removeIfEmpty();
    throw e;
  }

  async function requestAndWrite(): Promise<number> {
    const csr = await buildWorkloadCsr(spiffeId, v.key as WorkloadKeyType);
    const client = new CaClient({ address: v.address!, rootPem, ...(v['server-name'] ? { serverName: v['server-name'] } : {}) });
    const started = performance.now();
    let chain: string[];
    try {
      chain = await client.createCertificate({ csrPem: csr.csrPem, validitySeconds: ttl, token, clusterId: v.cluster! });
    } catch (e) {
      const err = e as { code?: number; details?: string };
      // grpc-js appends its resolver's notes to a connection failure: not the user's to read.
      const details = (err.details ?? String(e)).replace(/\s*Resolution note:[\s\S]*$/, '');
      // The TLS handshake, not the CA, refused: the server's certificate does not chain to the
      // root given (most often --ca-root is another CA's), or does not name the address dialled.
      if (UNTRUSTED_SERVER.test(details)) {
        const why = `the server's TLS certificate was not accepted (${details.replace(/^No connection established\. Last error: (Error: )?/, '')}): it does not chain to ${v['ca-root'] ? `--ca-root ${v['ca-root']}` : 'the root read from the data directory'}, or does not name ${v.address} (see --server-name); nothing was asked of the CA`;
        if (v.json) console.log(JSON.stringify({ unverified: { details: why } }, null, 2));
        else console.error(`meshcert: ${why}`);
        return 1;
      }
      const code = statusName(err.code ?? 2);
      if (v.json) console.log(JSON.stringify({ refused: { code, details } }, null, 2));
      else console.error(`refused: ${code}: ${details}`);
      return 1;
    } finally {
      client.close();
    }
    const ms = performance.now() - started;
    let check: ReturnType<typeof verifyResponseChain>;
    try {
      check = verifyResponseChain(chain, rootPem);
    } catch (e) {
      // Issued (and recorded by the CA), but not to be trusted here: most often --ca-root is another CA's.
      const details = `a certificate was issued, but its chain does not verify against ${v['ca-root'] ? `--ca-root ${v['ca-root']}` : 'the root read from the data directory'}: ${(e as Error).message}`;
      if (v.json) console.log(JSON.stringify({ unverified: { details } }, null, 2));
      else console.error(`meshcert: ${details}`);
      return 1;
    }
    const uri = check.leaf.subjectAltName ?? '';
    const result = {
      spiffeId: uri.replace(/^URI:/, ''),
      serial: serialHex(check.leaf.serialNumber),
      notBefore: new Date(check.leaf.validFrom).toISOString(),
      notAfter: new Date(check.leaf.validTo).toISOString(),
      keyType: v.key,
      chainElements: chain.length,
      chainVerified: true,
      issuer: oneLine(check.leaf.issuer),
      root: oneLine(check.root.subject),
      latencyMs: Math.round(ms * 10) / 10,
    };
    if (v.out) {
      const out = resolve(v.out);
      try {
        // The key first: it exists nowhere else, while the certificates are recorded by the CA.
        writePrivateKey(join(out, 'key.pem'), csr.privateKeyPem);
        writeFileAtomic(join(out, 'cert-chain.pem'), chain.slice(0, -1).join(''));
        writeFileAtomic(join(out, 'root-cert.pem'), chain[chain.length - 1]!);
      } catch (e) {
        const details = `certificate ${result.serial} was issued, but writing it to ${out} failed (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}): the files there do not make a pair; request again once the directory takes them`;
        if (v.json) console.log(JSON.stringify({ unwritten: { details } }, null, 2));
        else console.error(`meshcert: ${details}`);
        return 1;
      }
    }
    if (v.json) {
      console.log(JSON.stringify(result, null, 2));
    } else {
      console.log(`issued     ${result.spiffeId}`);
      console.log(`serial     ${result.serial}`);
      console.log(`valid      ${result.notBefore} .. ${result.notAfter}`);
      console.log(`issuer     ${result.issuer}`);
      console.log(`chain      ${result.chainElements} elements, verified to root "${result.root}"`);
      if (v.out) console.log(`written    ${resolve(v.out)}/{cert-chain.pem,key.pem,root-cert.pem}`);
    }
    return 0;
  }
}

/** OpenSSL's and Node's words for a server certificate the client does not trust, as grpc-js passes them on. */
const UNTRUSTED_SERVER = /unable to get local issuer certificate|self[- ]signed certificate|certificate verify failed|unable to verify the first certificate|certificate has expired|ERR_TLS_CERT_ALTNAME_INVALID|Hostname\/IP does not match certificate's altnames/;

/** Creates --out (and its missing parents); `removeIfEmpty` takes back what this made, while empty. */
function makeOutDir(out: string): { removeIfEmpty(): void } {
  if (existsSync(out) && !statSync(out).isDirectory()) throw new UsageError(`--out ${out} exists and is not a directory`);
  const dir = resolve(out);
  // A CA directory (Istio's cacerts layout) has a cert-chain.pem and root-cert.pem of its own, which
  // the workload's would replace, leaving a CA serve no longer loads. Refused before asking.
  const caFile = [CA_FILES.key, CA_FILES.cert, CA_FILES.rootKey].find((f) => existsSync(join(dir, f)));
  if (caFile !== undefined) {
    throw new UsageError(`--out ${out} holds a CA's files (${caFile}): the workload's cert-chain.pem and root-cert.pem would replace the CA's; give a directory of its own`);
  }
  let first: string | undefined;
  try {
    // It will hold key.pem: made private, as meshcert makes every directory a key goes in.
    first = mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw new UsageError(`--out ${out}: cannot create the directory: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    // Checked before asking: a certificate issued into a directory that refuses it loses its key.
    accessSync(dir, constants.W_OK | constants.X_OK);
  } catch (e) {
    throw new UsageError(`--out ${out}: cannot write there: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return {
    removeIfEmpty() {
      if (first === undefined) return;
      // From the deepest up to the first one made; rmdir refuses one that is not empty.
      for (let d = dir; ; d = dirname(d)) {
        try {
          rmdirSync(d);
        } catch {
          return;
        }
        if (d === first) return;
      }
    },
  };
}

/** A bad --token-file is the caller's to fix, like a bad --ca-root: said as such, exit 2. */
function readTokenFile(path: string): string {
  try {
    return readTextFile(path, MAX_TOKEN_BYTES, { streams: true }).trim();
  } catch (e) {
    throw new UsageError(`cannot read the token file ${path}: ${readProblem(e)}`);
  }
}

/** Without --token or --token-file: one from the local dev issuer, which `serve --dev` creates. */
async function devToken(dataDir: string, namespace: string, serviceAccount: string): Promise<string> {
  if (!hasDevIssuer(dataDir)) throw new UsageError(`no token: pass --token or --token-file (no dev token issuer under ${dataDir} to mint one: "meshcert serve --dev" creates it)`);
  return mintDevToken(dataDir, { namespace, serviceAccount });
}
