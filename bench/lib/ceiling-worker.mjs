// One thread of the crypto ceiling: how many certificates' worth of crypto (token verify, CSR
// signature verify with a freshly imported key, leaf signature) one core does per second.
import { createPublicKey, generateKeyPairSync, randomBytes, sign, verify } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';

const { kind, seconds } = workerData;
const ca = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
const tbs = randomBytes(620); // a leaf TBSCertificate is about this size
const tokenInput = randomBytes(900);
const csrInfo = randomBytes(420);

let tokenKey, tokenSig, csrJwk, csrSig, tokenOpts = {}, hash = 'sha256';
if (kind === 'rsa2048') {
  const t = generateKeyPairSync('rsa', { modulusLength: 2048 });
  tokenKey = t.publicKey;
  tokenSig = sign(hash, tokenInput, t.privateKey);
  const c = generateKeyPairSync('rsa', { modulusLength: 2048 });
  csrJwk = c.publicKey.export({ format: 'jwk' });
  csrSig = sign(hash, csrInfo, c.privateKey);
} else {
  const t = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  tokenKey = t.publicKey;
  tokenOpts = { dsaEncoding: 'ieee-p1363' };
  tokenSig = sign(hash, tokenInput, { key: t.privateKey, ...tokenOpts });
  const c = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  csrJwk = c.publicKey.export({ format: 'jwk' });
  csrSig = sign(hash, csrInfo, c.privateKey);
}

let ops = 0;
const end = performance.now() + seconds * 1000;
const start = performance.now();
while (performance.now() < end) {
  for (let i = 0; i < 20; i++) {
    if (!verify(hash, tokenInput, { key: tokenKey, ...tokenOpts }, tokenSig)) throw new Error('token verify');
    const k = createPublicKey({ key: csrJwk, format: 'jwk' });
    if (!verify(hash, csrInfo, k, csrSig)) throw new Error('csr verify');
    sign(hash, tbs, ca);
    ops++;
  }
}
parentPort.postMessage({ ops, seconds: (performance.now() - start) / 1000 });
