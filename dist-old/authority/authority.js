import { decodeCsrPem, verifyCsrProof, verifyCsrProofAsync } from '../csr/parse.js';
import { CaError } from '../errors/ca-error.js';
import { parseSpiffeId, parseWorkloadSpiffeId } from '../x509/spiffe-id.js';
/**
 * The CreateCertificate use case, transport-neutral: authenticate, refuse what is not allowed,
 * decide identity, lifetime, SANs and CA through the policy, sign. Every refusal is a CaError;
 * the transport maps it.
 */
export class Authority {
    deps;
    now;
    constructor(deps) {
        this.deps = deps;
        this.now = deps.now ?? (() => new Date());
    }
    async issue(req) {
        const caller = await this.deps.authenticate(req.auth);
        try {
            if (this.deps.signatures === 'inline') {
                return await this.run(() => {
                    const d = this.decide(caller, req);
                    verifyCsrProof(d.proof);
                    this.deps.beforeSign?.();
                    let leaf;
                    try {
                        leaf = d.issuer.sign(d.sign);
                    }
                    catch (e) {
                        return issuerFailed(e);
                    }
                    return issued(d, leaf);
                });
            }
            const d = await this.run(() => this.decide(caller, req));
            // Proof of possession before anything is signed.
            await verifyCsrProofAsync(d.proof);
            this.deps.beforeSign?.();
            let leaf;
            try {
                leaf = await d.issuer.signAsync(d.sign);
            }
            catch (e) {
                return issuerFailed(e);
            }
            return issued(d, leaf);
        }
        catch (e) {
            if (e instanceof CaError)
                e.caller = caller.identities[0];
            throw e;
        }
    }
    run(work) {
        return this.deps.schedule ? this.deps.schedule(work) : Promise.resolve().then(work);
    }
    decide(caller, req) {
        const registry = this.deps.issuers();
        const policy = this.deps.policy();
        // Ambient: ztunnel asks for the workloads on its node. Only with node authorization configured.
        const impersonate = req.metadata.ImpersonatedIdentity;
        let subject = caller;
        if (impersonate) {
            if (!this.deps.nodeAuthorizer) {
                throw new CaError('IMPERSONATION_DENIED', 'ImpersonatedIdentity is not allowed: this CA does not accept certificate requests on behalf of other workloads (ambient mode is off)');
            }
            this.deps.nodeAuthorizer.authorize(caller, impersonate);
            subject = { ...caller, identities: [impersonate] };
        }
        // Per workload identity: every ztunnel shares one service account, so key on who the
        // certificate is for, not on who asks.
        this.deps.rateLimit?.take(subject.identities[0] ?? 'unknown');
        const { unverified: csr, proof } = decodeCsrPem(req.csrPem);
        const spiffeId = chooseIdentity(subject, csr, this.deps.options.trustDomainGroup);
        const workload = parseWorkloadSpiffeId(spiffeId);
        const decision = policy.evaluate({
            trustDomain: workload?.trustDomain ?? trustDomainOf(spiffeId),
            clusterId: req.auth.clusterId || this.deps.options.defaultCluster,
            namespace: workload?.namespace ?? subject.namespace ?? '',
            serviceAccount: workload?.serviceAccount ?? subject.serviceAccount ?? '',
            impersonated: Boolean(impersonate),
            key: csr.key,
            requestedTtlSeconds: req.validitySeconds,
            dnsNames: csr.dnsNames,
            ipAddresses: csr.ipAddresses,
            emails: csr.emails,
            uris: csr.uris,
        });
        if (!decision.allowed)
            throw new CaError(decision.code, decision.reason);
        const issuer = registry.get(decision.issuer);
        const now = this.now();
        if (issuer.notAfter <= now)
            throw new CaError('ISSUER_UNAVAILABLE', `the signing CA "${issuer.name}" has expired; an operator must renew it`);
        return {
            proof,
            issuer,
            rootBundlePem: registry.rootBundlePem,
            sign: {
                spki: csr.spki,
                uris: [spiffeId],
                dnsNames: decision.dnsNames,
                ipAddresses: decision.ipAddresses,
                notBefore: new Date(now.getTime() - this.deps.options.backdate * 1000),
                notAfter: new Date(now.getTime() + decision.ttlSeconds * 1000),
            },
            certificate: {
                caller,
                spiffeId,
                impersonated: Boolean(impersonate),
                issuer: issuer.name,
                key: csr.key,
                policyRule: decision.rule,
                dnsNames: decision.dnsNames,
                ...(workload ? { workload: { namespace: workload.namespace, serviceAccount: workload.serviceAccount } } : {}),
            },
        };
    }
}
/** The signer's failure is ours, not the caller's: ISSUER_FAILED, with the cause for the log. */
function issuerFailed(e) {
    throw new CaError('ISSUER_FAILED', 'failed to sign the certificate', { cause: e });
}
function issued(d, leaf) {
    // The root bundle is the union of every issuer's roots, so all workloads trust each other.
    return { ...d.certificate, leaf, chain: [leaf.pem, ...d.issuer.material.intermediatesPem, d.rootBundlePem] };
}
function trustDomainOf(id) {
    try {
        return parseSpiffeId(id).trustDomain;
    }
    catch (e) {
        throw new CaError('IDENTITY_MISMATCH', `the requested identity is not a valid SPIFFE ID: ${e.message}`);
    }
}
/**
 * The CSR's URI SANs must be absent or name exactly the caller's identity (istio-csr's rule,
 * stricter than istiod, which ignores them); a CA request is refused. Other SANs (DNS, IP, email)
 * are the policy's to allow or refuse.
 */
export function chooseIdentity(caller, csr, trustDomainGroup = []) {
    if (csr.requestsCa)
        throw new CaError('CSR_FORBIDDEN_EXTENSION', 'the CSR asks for a CA certificate (BasicConstraints CA or keyCertSign); workload certificates cannot be CAs');
    if (caller.identities.length === 0)
        throw new CaError('AUTH_INVALID', 'the credential carries no workload identity');
    if (csr.uris.length === 0)
        return caller.identities[0];
    if (csr.uris.length > 1)
        throw new CaError('IDENTITY_MISMATCH', 'the CSR requests more than one URI SAN; an X.509-SVID has exactly one SPIFFE ID');
    const wanted = csr.uris[0];
    if (!caller.identities.includes(wanted) && !isAliasOf(wanted, caller.identities, trustDomainGroup)) {
        throw new CaError('IDENTITY_MISMATCH', `the CSR requests identity ${wanted.slice(0, 256)}, but the caller is ${caller.identities.join(', ')}`);
    }
    return wanted;
}
/**
 * Trust-domain aliases: spiffe://<a>/ns/N/sa/S is the caller's identity too when the caller is
 * spiffe://<b>/ns/N/sa/S and both <a> and <b> belong to the mesh's trust-domain group.
 */
function isAliasOf(wanted, identities, group) {
    if (group.length < 2)
        return false;
    const w = parseWorkloadSpiffeId(wanted);
    if (!w || !group.includes(w.trustDomain))
        return false;
    return identities.some((id) => {
        const c = parseWorkloadSpiffeId(id);
        return c !== null && c.namespace === w.namespace && c.serviceAccount === w.serviceAccount && group.includes(c.trustDomain);
    });
}
//# sourceMappingURL=authority.js.map