/**
 * A CA directory (Istio's cacerts layout, one self-signed P-256 root that signs) made by the
 * openssl CLI rather than meshcert, for CAs meshcert would never make itself.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

/** `extensions`: openssl -addext values beside a CA's basicConstraints and keyUsage. */
export function writeOpensslRootCaDir(dir: string, subject: string, extensions: readonly string[]): void {
  mkdirSync(dir, { mode: 0o700 });
  const ext = ['basicConstraints=critical,CA:true', 'keyUsage=critical,keyCertSign', ...extensions];
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca-key.pem', '-out', 'ca-cert.pem', '-days', '30', '-subj', subject, ...ext.flatMap((e) => ['-addext', e])],
    { cwd: dir, stdio: 'ignore' },
  );
  chmodSync(join(dir, 'ca-key.pem'), 0o600);
  copyFileSync(join(dir, 'ca-cert.pem'), join(dir, 'root-cert.pem'));
}
