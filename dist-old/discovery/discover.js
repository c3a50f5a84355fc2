import { recordProblem } from '../inventory/common.js';
import { recordFromCertificate } from '../inventory/record-from-cert.js';
import { DEFAULT_ENDPOINT_TIMEOUT_MS, discoverEndpoint } from './endpoint.js';
import { discoverFiles } from './files.js';
import { discoverK8sSecrets } from './k8s-secrets.js';
async function mapLimited(xs, limit, fn) {
    const out = new Array(xs.length);
    let next = 0;
    const worker = async () => {
        while (next < xs.length) {
            const i = next++;
            out[i] = await fn(xs[i]);
        }
    };
    await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, xs.length)) }, worker));
    return out;
}
/** Runs the sources (files, then endpoints, then Secrets); the items, not yet recorded. */
export async function collect(o) {
    const items = [];
    if (o.files && o.files.length > 0)
        items.push(...discoverFiles(o.files));
    if (o.endpoints && o.endpoints.length > 0) {
        const timeoutMs = o.endpointTimeoutMs ?? DEFAULT_ENDPOINT_TIMEOUT_MS;
        items.push(...(await mapLimited(o.endpoints, o.concurrency ?? 16, (e) => discoverEndpoint(e, { timeoutMs }))));
    }
    if (o.k8sSecrets)
        items.push(...(await discoverK8sSecrets(o.k8sSecrets === true ? {} : o.k8sSecrets)));
    return items;
}
function toRecords(item) {
    const certs = item.status === 'skipped' ? [] : (item.certificates ?? []);
    if (item.source === null)
        return { records: [], problem: null };
    const records = [];
    const problems = [];
    certs.forEach((cert, i) => {
        try {
            const r = recordFromCertificate(cert, { source: item.source });
            const p = recordProblem(r);
            if (p === null)
                records.push(r);
            else
                problems.push(`certificate #${i + 1} cannot be inventoried: ${p}`);
        }
        catch (e) {
            problems.push(`certificate #${i + 1} cannot be read: ${e.message}`);
        }
    });
    return { records, problem: problems.length > 0 ? problems.join('; ') : null };
}
const BATCH = 500;
/** Collects and records; see the module comment. Throws only when the store fails. */
export async function discover(store, o) {
    const items = await collect(o);
    const before = await store.count();
    const reports = [];
    const all = [];
    for (const item of items) {
        const { records, problem } = toRecords(item);
        all.push(...records);
        const base = { kind: item.kind, target: item.target, source: item.source, certificates: records.length, fingerprints: records.map((r) => r.fingerprint) };
        if (item.status === 'error')
            reports.push({ ...base, status: 'error', error: problem ? `${item.error}; ${problem}` : item.error });
        else if (problem !== null)
            reports.push({ ...base, status: 'error', error: problem });
        else if (item.status === 'skipped')
            reports.push({ ...base, status: 'skipped', reason: item.reason });
        else
            reports.push({ ...base, status: 'ok' });
    }
    for (let i = 0; i < all.length; i += BATCH)
        await store.insertMany(all.slice(i, i + BATCH));
    const after = await store.count();
    return {
        items: reports,
        found: all.length,
        newRecords: after - before,
        ok: reports.filter((r) => r.status === 'ok').length,
        skipped: reports.filter((r) => r.status === 'skipped').length,
        failed: reports.filter((r) => r.status === 'error').length,
    };
}
/** 0 when at least one item succeeded and none failed; 1 otherwise (any failure, or nothing found). */
export function discoveryExitCode(r) {
    return r.failed === 0 && r.ok > 0 ? 0 : 1;
}
//# sourceMappingURL=discover.js.map