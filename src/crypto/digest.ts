/**
 * One-shot digests for the per-request path. Node's `crypto.hash` (20.12+) hashes without creating
 * a Hash object; each `createHash` object is a native handle that V8 must process when it dies, in
 * every young-generation collection's pause (measured under load: about eight such handles per
 * certificate, 2-4 ms of each 4-8 ms scavenge). `createHash` remains the fallback on older Node 20.
 */
import * as nodeCrypto from 'node:crypto';

type OneShot = (algorithm: string, data: string | Buffer, outputEncoding: 'hex' | 'buffer') => string | Buffer;
const oneShot = (nodeCrypto as { hash?: OneShot }).hash;

/** Lowercase hex SHA-256 of `data` (a string is hashed as UTF-8). */
export function sha256Hex(data: string | Buffer): string {
  return oneShot ? (oneShot('sha256', data, 'hex') as string) : nodeCrypto.createHash('sha256').update(data).digest('hex');
}

/** SHA-1 of `data` (key identifiers, RFC 5280 4.2.1.2 method 1; not a security function here). */
export function sha1(data: Buffer): Buffer {
  return oneShot ? (oneShot('sha1', data, 'buffer') as Buffer) : nodeCrypto.createHash('sha1').update(data).digest();
}
