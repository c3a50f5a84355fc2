import { createPrivateKey, generateKeyPairSync, X509Certificate } from 'node:crypto';
import { unwatchFile, watchFile } from 'node:fs';
import { MAX_PEM_BYTES, readProblem, readTextFile } from '../fs/read-file.js';
import { ConfigError } from '../errors/ca-error.js';
import type { LocalIssuer } from '../issuer/local.js';
import type { Logger } from '../log/logger.js';
import { parsePemBundle } from '../x509/pem.js';

export interface ServingCertOptions {
  readonly certFile?: string;
  readonly keyFile?: string;
  readonly dnsNames: readonly string[];
  readonly ipAddresses: readonly string[];
  /** Seconds. */
  readonly lifetime: number;
  readonly renewBeforeRatio: number;
  /** How often user-supplied files are checked for changes (ms). */
  readonly pollIntervalMs?: number;
}

export interface ServingMaterial {
  readonly certChainPem: string;
  readonly keyPem: string;
  readonly notAfter: Date;
  readonly source: 'files' | 'issued';
}

/**
 * The gRPC server's own certificate: user-supplied files (re-read when they change; a broken
 * update is logged and the previous certificate kept) or issued by meshcert's CA and renewed
 * before it expires.
 */
export class ServingCertificate {
  private material: ServingMaterial;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  /** When the current issued certificate was made (its real lifetime can be cut short by the CA's NotAfter). */
  private issuedAt = Date.now();
  /** The file-poll listener, so close() removes only this instance's watchers. */
  private fileListener: (() => void) | undefined;

  private constructor(
    private readonly o: ServingCertOptions,
    private readonly issuer: () => LocalIssuer,
    private readonly logger: Logger,
    private readonly onChange: (m: ServingMaterial) => void,
  ) {
    this.material = o.certFile ? loadServingFiles(o.certFile, o.keyFile!) : issue(o, issuer());
  }

  static start(o: ServingCertOptions, issuer: () => LocalIssuer, logger: Logger, onChange: (m: ServingMaterial) => void): ServingCertificate {
    const s = new ServingCertificate(o, issuer, logger, onChange);
    s.arm();
    return s;
  }

  get current(): ServingMaterial {
    return this.material;
  }

  /** Re-issue now (e.g. after the CA changed). No-op for user-supplied files. */
  reissue(): void {
    this.prepareReissue(this.issuer())?.commit();
  }

  /**
   * A pair from `issuer` (the CA a reload is about to put in force), issued now but not in force
   * until commit(): a reload checks it, and refuses the whole reload, before it swaps anything.
   * Undefined for user-supplied files (nothing to issue) or once closed.
   */
  prepareReissue(issuer: LocalIssuer): { material: ServingMaterial; commit(): void } | undefined {
    if (this.o.certFile || this.closed) return undefined;
    const at = Date.now();
    const material = issue(this.o, issuer);
    return {
      material,
      commit: () => {
        this.replace(material);
        this.issuedAt = at;
        this.arm();
      },
    };
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.o.certFile && this.fileListener) {
      unwatchFile(this.o.certFile, this.fileListener);
      unwatchFile(this.o.keyFile!, this.fileListener);
    }
  }

  private arm(): void {
    if (this.o.certFile) {
      const check = (): void => {
        try {
          const next = loadServingFiles(this.o.certFile!, this.o.keyFile!);
          if (next.certChainPem !== this.material.certChainPem || next.keyPem !== this.material.keyPem) this.replace(next);
        } catch (e) {
          // Mid-update (cert written, key not yet) or broken files: keep serving the old pair.
          this.logger.error({ err: e }, 'serving certificate files changed but cannot be used; keeping the previous certificate');
        }
      };
      this.fileListener = check;
      const interval = this.o.pollIntervalMs ?? 2000;
      watchFile(this.o.certFile, { interval, persistent: false }, check);
      watchFile(this.o.keyFile!, { interval, persistent: false }, check);
      return;
    }
    if (this.timer) clearTimeout(this.timer);
    // The leaf never outlives the CA: renew on its real lifetime, or a CA near its end means a reissue every second.
    const lifetimeMs = Math.min(this.o.lifetime * 1000, this.material.notAfter.getTime() - this.issuedAt);
    const renewAt = this.material.notAfter.getTime() - lifetimeMs * this.o.renewBeforeRatio;
    // setTimeout takes at most 2^31-1 ms; longer waits simply re-arm.
    const delay = Math.min(Math.max(renewAt - Date.now(), 1000), 2 ** 31 - 1);
    this.timer = setTimeout(() => {
      if (Date.now() >= renewAt) {
        try {
          this.renewNow();
        } catch (e) {
          this.logger.error({ err: e }, 'serving certificate renewal failed; retrying in 60s');
          this.timer = setTimeout(() => this.arm(), 60_000).unref();
          return;
        }
      }
      this.arm();
    }, delay).unref();
  }

  /** Issues a new pair and puts it in force; the time goes with it only once the listener took it. */
  private renewNow(): void {
    const at = Date.now();
    this.replace(issue(this.o, this.issuer()));
    this.issuedAt = at;
  }

  private replace(m: ServingMaterial): void {
    // The listener first: a pair it refuses (OpenSSL's security level, say) throws here, and the
    // one in force stays `current` (and in the expiry metric); a changed file is tried again.
    this.onChange(m);
    this.material = m;
    this.logger.info({ source: m.source, notAfter: m.notAfter.toISOString() }, 'serving certificate loaded');
  }
}

function issue(o: ServingCertOptions, issuer: LocalIssuer): ServingMaterial {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const now = Date.now();
  const leaf = issuer.sign({
    spki: publicKey.export({ type: 'spki', format: 'der' }),
    uris: [],
    dnsNames: o.dnsNames,
    ipAddresses: o.ipAddresses,
    notBefore: new Date(now - 120_000),
    notAfter: new Date(now + o.lifetime * 1000),
  });
  return {
    // Serve the intermediates too so clients holding only the root can build the chain.
    certChainPem: [leaf.pem, ...issuer.material.intermediatesPem].join(''),
    keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    notAfter: leaf.notAfter,
    source: 'issued',
  };
}

/** server.tls.certFile and keyFile, read and checked as `serve` does at start (and `config check`). */
export function loadServingFiles(certFile: string, keyFile: string): ServingMaterial {
  let certPem: string;
  let keyPem: string;
  try {
    certPem = readTextFile(certFile, MAX_PEM_BYTES);
    keyPem = readTextFile(keyFile, MAX_PEM_BYTES);
  } catch (e) {
    throw new ConfigError(`cannot read the serving certificate or key (server.tls.certFile/keyFile): ${readProblem(e)}`);
  }
  let leaf: X509Certificate;
  try {
    const certs = parsePemBundle(certPem);
    if (certs.length === 0) throw new Error('empty');
    leaf = certs[0]!;
  } catch {
    throw new ConfigError('server.tls.certFile does not hold a PEM certificate chain');
  }
  let key;
  try {
    key = createPrivateKey(keyPem);
  } catch {
    throw new ConfigError('server.tls.keyFile is not a readable unencrypted PEM private key');
  }
  if (!leaf.checkPrivateKey(key)) throw new ConfigError('server.tls.keyFile does not match server.tls.certFile');
  const notAfter = new Date(leaf.validTo);
  if (notAfter <= new Date()) throw new ConfigError(`the serving certificate expired on ${notAfter.toISOString()}`);
  return { certChainPem: certPem, keyPem, notAfter, source: 'files' };
}
