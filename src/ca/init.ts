import { X509Certificate } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import type { KeyType } from '../config/schema.js';
import { ConfigError } from '../errors/ca-error.js';
import { beginCaCreation, CaDirTaken, caPath, endCaCreation, makeDirectory, recoverInterruptedCreation, writeFileAtomic, writePrivateKey } from './files.js';
import { caSubjectName, checkOrganization, createIntermediateCert, createRootCert, generateKey } from './generate.js';
import { buildMaterial, isCaDirEmpty, type CaMaterial } from './material.js';

const YEAR_MS = 365 * 24 * 3600 * 1000;

export interface CaInitOptions {
  readonly dir: string;
  readonly keyType?: KeyType;
  readonly organization?: string;
  readonly rootLifetimeMs?: number;
  readonly intermediateLifetimeMs?: number;
  readonly now?: Date;
}

/**
 * Creates a root (10 years) and an intermediate (1 year) in Istio's plug-in layout.
 * Refuses to overwrite an existing CA. The root key is written too (0600) so the intermediate
 * can be renewed later; production users should move it offline.
 */
export async function initCaDir(o: CaInitOptions): Promise<CaMaterial> {
  if (existsSync(o.dir) && !statSync(o.dir).isDirectory()) throw new ConfigError(`${o.dir} exists and is not a directory: give the CA a directory of its own`);
  recoverInterruptedCreation(o.dir);
  if (!isCaDirEmpty(o.dir)) throw new CaDirTaken(`CA directory ${o.dir} already holds a CA; refusing to overwrite it`);
  const keyType = o.keyType ?? 'ec256';
  const org = o.organization ?? 'meshcert';
  checkOrganization(org);
  const now = o.now ?? new Date();
  const notBefore = new Date(now.getTime() - 5 * 60 * 1000);
  const stamp = now.toISOString().slice(0, 10);

  const rootKey = await generateKey(keyType);
  const root = await createRootCert(rootKey, {
    subject: caSubjectName(org, `root CA ${stamp}`),
    notBefore,
    notAfter: new Date(now.getTime() + (o.rootLifetimeMs ?? 10 * YEAR_MS)),
    keyType,
  });
  const interKey = await generateKey(keyType);
  const inter = await createIntermediateCert(interKey.keys.publicKey, { cert: root, key: rootKey.keys.privateKey, keyType }, {
    subject: caSubjectName(org, `intermediate CA ${stamp}`),
    notBefore,
    notAfter: new Date(now.getTime() + (o.intermediateLifetimeMs ?? YEAR_MS)),
  });

  const rootPem = `${root.toString('pem')}\n`;
  const interPem = `${inter.toString('pem')}\n`;
  const material = buildMaterial(new X509Certificate(interPem), interKey.privateKey, [], [new X509Certificate(rootPem)], now);

  makeDirectory(o.dir);
  beginCaCreation(o.dir);
  // Another process may have made one while the keys were generated: it stands, this one goes.
  if (!isCaDirEmpty(o.dir)) {
    endCaCreation(o.dir);
    throw new CaDirTaken(`another process created a CA in ${o.dir} meanwhile; refusing to overwrite it`);
  }
  writePrivateKey(caPath(o.dir, 'rootKey'), rootKey.privateKeyPem);
  writePrivateKey(caPath(o.dir, 'key'), interKey.privateKeyPem);
  writeFileAtomic(caPath(o.dir, 'root'), rootPem);
  writeFileAtomic(caPath(o.dir, 'chain'), interPem + rootPem);
  // ca-cert.pem last: its presence is what marks the directory as initialised.
  writeFileAtomic(caPath(o.dir, 'cert'), interPem);
  endCaCreation(o.dir);
  return material;
}
