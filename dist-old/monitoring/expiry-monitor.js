import { caExpiryReport, readCaCertificates, staleIdentities } from '../inventory/expiry.js';
/**
 * Periodically re-reads the CA directories (so rotated files are seen) and the inventory: warns
 * once per certificate and state when a CA certificate enters its warning window or expires, and
 * reports stale workload identities. Results go to the log and to metrics.
 */
export class ExpiryMonitor {
    o;
    logger;
    metrics;
    store;
    timer;
    warned = new Map();
    constructor(o, logger, metrics, store) {
        this.o = o;
        this.logger = logger;
        this.metrics = metrics;
        this.store = store;
    }
    start() {
        void this.check();
        this.timer = setInterval(() => void this.check(), this.o.interval * 1000).unref();
    }
    stop() {
        if (this.timer)
            clearInterval(this.timer);
    }
    async check(now = new Date()) {
        const ca = [];
        for (const [i, issuer] of this.o.issuers.entries()) {
            // Read without validity checks: an expired certificate is what we must report, not a reason to stop.
            const { certs, problems } = readCaCertificates(issuer.dir, issuer.name, i === 0 ? (this.o.servingCertFile ?? null) : null);
            for (const problem of problems)
                this.logger.error({ issuer: issuer.name, problem }, 'expiry monitor cannot read a CA file');
            ca.push(...caExpiryReport(certs, now, this.o.caWarnBefore));
        }
        for (const e of ca) {
            if (e.state === 'ok')
                continue;
            if (this.warned.get(e.fingerprint) === e.state)
                continue;
            this.warned.set(e.fingerprint, e.state);
            this.logger.warn({ issuer: e.issuer, role: e.role, subject: e.subject, notAfter: e.notAfter.toISOString(), daysLeft: Math.floor(e.secondsLeft / 86400), state: e.state }, e.state === 'expired' ? 'CA certificate has expired' : 'CA certificate expires soon: rotate it (see README "CA rotation")');
        }
        this.metrics?.caWarnings.set(ca.filter((e) => e.state !== 'ok').length);
        let stale = 0;
        if (this.store) {
            try {
                const s = await staleIdentities(this.store, now, this.o.staleWithin);
                stale = s.length;
                this.metrics?.staleIdentities.set(stale);
                if (stale > 0)
                    this.logger.warn({ count: stale, examples: s.slice(0, 5).map((x) => x.spiffeId) }, 'workload identities whose latest certificate was not renewed');
            }
            catch (err) {
                this.logger.warn({ err }, 'expiry monitor cannot query the inventory');
            }
        }
        return { ca, stale };
    }
}
//# sourceMappingURL=expiry-monitor.js.map