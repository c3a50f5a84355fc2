import { chmodSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
/** The Istio plug-in CA layout (Secret `cacerts`). */
export const CA_FILES = {
    cert: 'ca-cert.pem',
    key: 'ca-key.pem',
    chain: 'cert-chain.pem',
    root: 'root-cert.pem',
    /** Not part of Istio's layout: written by `ca init` so intermediates can be renewed; move it offline. */
    rootKey: 'root-key.pem',
};
export function caPath(dir, file) {
    return join(dir, CA_FILES[file]);
}
/**
 * Writes atomically (temp file + rename) so a reader never sees half a file.
 * Private keys get mode 0600 before any byte is written.
 */
export function writeFileAtomic(path, data, mode = 0o644) {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    const tmp = `${path}.${process.pid}.${Date.now()}.tmp`;
    writeFileSync(tmp, data, { mode, flag: 'wx' });
    chmodSync(tmp, mode);
    renameSync(tmp, path);
}
export function writePrivateKey(path, pem) {
    writeFileAtomic(path, pem, 0o600);
}
//# sourceMappingURL=files.js.map