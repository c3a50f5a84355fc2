/**
 * The CA state a server runs with: every configured CA loaded and self-tested, and the policy.
 * Kept apart from the gRPC server so the primary process can validate and prepare it without
 * loading the transport.
 */
import { generateKeyPairSync } from 'node:crypto';
import { isCaDirEmpty, loadCaDir } from './material.js';
import { ensureDevIssuer } from '../dev/token-issuer.js';
import { ConfigError } from '../errors/ca-error.js';
import { LocalIssuer } from '../issuer/local.js';
import { IssuerRegistry } from '../issuer/registry.js';
import { PolicyEngine } from '../policy/engine.js';
/** Loads (or, with ca.autoInit, creates) the CA and checks it can sign a verifiable chain. */
export async function loadIssuer(config, logger, o = {}) {
    const dir = config.ca.dir;
    if (isCaDirEmpty(dir)) {
        // Never on a reload: a directory that looks empty mid-update must not become a new root of trust.
        if (o.allowInit === false)
            throw new ConfigError(`CA directory ${dir} is empty; not creating a new CA on a reload`);
        if (!config.ca.autoInit) {
            throw new ConfigError(`CA directory ${dir} is empty: run "meshcert ca init --dir ${dir}", mount Istio's cacerts there, or set ca.autoInit: true`);
        }
        // Loaded only when needed: CA generation pulls in @peculiar/x509 (~20 MB per process).
        const { initCaDir } = await import('./init.js');
        await initCaDir({ dir, keyType: config.ca.keyType });
        logger.warn({ dir, keyType: config.ca.keyType }, 'created a new root and intermediate CA (ca.autoInit); move root-key.pem offline for production use');
    }
    const issuer = new LocalIssuer('default', loadCaDir(dir));
    issuer.selfTest(selfTestKey(), `spiffe://${config.trustDomain}/ns/meshcert-self-test/sa/probe`);
    return issuer;
}
/**
 * State that must exist once before workers start (they would race to create it):
 * the CA under ca.autoInit, and the dev issuer's key.
 */
export async function prepareSharedState(config, logger) {
    const issuer = await loadIssuer(config, logger);
    if (config.dev.tokenIssuer)
        await ensureDevIssuer(config.dataDir);
    return issuer;
}
/** Loads every configured CA (default first; autoInit applies to it only) and the policy. */
export async function loadCaState(config, logger, o = {}) {
    const issuers = [await loadIssuer(config, logger, { allowInit: !o.reload })];
    for (const i of config.issuers) {
        let issuer;
        try {
            issuer = new LocalIssuer(i.name, loadCaDir(i.dir));
        }
        catch (e) {
            throw new ConfigError(`issuer "${i.name}" (${i.dir}): ${e.message}`);
        }
        issuer.selfTest(selfTestKey(), `spiffe://${config.trustDomain}/ns/meshcert-self-test/sa/probe`);
        issuers.push(issuer);
    }
    return { issuers: new IssuerRegistry(issuers), policy: new PolicyEngine(config.policy) };
}
function selfTestKey() {
    return generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'der' });
}
//# sourceMappingURL=state.js.map