import { MAX_PEM_BYTES, readProblem, readTextFile } from '../fs/read-file.js';
import { isIP } from 'node:net';
import { formatDuration, parseLifetimeArg } from '../config/duration.js';
import { parseCsrPem } from '../csr/parse.js';
import type { CsrKeyInfo, ParsedCsr } from '../csr/types.js';
import { ConfigError, isCaError } from '../errors/ca-error.js';
import { PolicyEngine, type PolicyDecision, type PolicyRequest, type RuleEvaluation } from '../policy/engine.js';
import type { CredentialKind } from '../policy/schema.js';
import { AMBIENT_OFF, chooseIdentity, identityOutsideCa } from '../authority/authority.js';
import { notWorkloadIdentity, unservedTrustDomain } from '../auth/client-cert.js';
import { isValidNamespace, isValidServiceAccount } from '../auth/jwt.js';
import { certificateCluster, clusterTrustDomain, effectiveDefaultCluster, servedClusterNames, servedTrustDomains } from '../config/default-cluster.js';
import { loadConfigFile } from '../config/load.js';
import { ipToBytes } from '../net/ip-text.js';
import { parseWorkloadSpiffeId, workloadSpiffeId } from '../x509/spiffe-id.js';
import { parse, UsageError } from './args.js';
import { isCaDirEmpty } from '../ca/material.js';
import { loadIssuer, loadNamedIssuer } from '../ca/state.js';
import type { MeshcertConfig } from '../config/schema.js';
import type { LocalIssuer } from '../issuer/local.js';
import { createLogger } from '../log/logger.js';

export const POLICY_USAGE = `meshcert policy explain --config FILE --ns NAMESPACE --sa SERVICE_ACCOUNT [options]
  Shows which policy rule decides a certificate request, the decision, and every rule tried.
  --config FILE               meshcert config file (its "policy" section is used)
  --cluster ID                clusterid (default: auth.defaultCluster, else Kubernetes)
  --trust-domain TD           the trust domain asked for (default: the cluster's or the config's
                              trustDomain); a token caller authenticates in its cluster's, so another
                              one must be an alias of it; with --client-certificate or --impersonated,
                              the certificate's or the workload's
  --key rsa2048|rsa3072|rsa4096|ec256|ec384   the CSR's key (default rsa2048)
  --dns NAME[,NAME]           requested DNS SANs
  --ip ADDR[,ADDR]            requested IP SANs
  --ttl DURATION              requested lifetime (default 24h, what istio-agent and ztunnel ask
                              for unless SECRET_TTL is changed; 0: none, i.e. the rule's default)
  --impersonated              the request is on behalf of another identity
  --client-certificate        the caller authenticates with a client certificate (mTLS), not a token
  --csr FILE                  take key and SANs (and, without --ns/--sa, the identity) from a PEM CSR
  --no-ca                     judge by the policy alone: do not read the CA's files (allowed DNS
                              names and IP addresses are otherwise checked against its name constraints)
  --json                      print the result as JSON
  Exit codes: 0 allowed, 1 denied, 2 usage error, 3 invalid or unreadable config, or any other failure.`;

const KEYS: Readonly<Record<string, CsrKeyInfo>> = {
  rsa2048: { algorithm: 'RSA', size: 2048 },
  rsa3072: { algorithm: 'RSA', size: 3072 },
  rsa4096: { algorithm: 'RSA', size: 4096 },
  ec256: { algorithm: 'ECDSA', size: 256, curve: 'P-256' },
  ec384: { algorithm: 'ECDSA', size: 384, curve: 'P-384' },
};

/** What `--json` prints. */
export interface PolicyExplainOutput {
  identity: string;
  request: {
    trustDomain: string;
    cluster: string;
    namespace: string;
    serviceAccount: string;
    impersonated: boolean;
    authenticatedBy: CredentialKind;
    key: CsrKeyInfo;
    requestedTtlSeconds: number | null;
    dnsNames: string[];
    ipAddresses: string[];
    emails: string[];
  };
  /** Whether the server would issue: the policy allows, and the CA can certify the names. */
  allowed: boolean;
  rule: string;
  /** The policy's decision. */
  decision: PolicyDecision;
  /**
   * With DNS names or IP addresses the policy allows: why the chosen CA's name constraints refuse
   * them (the server refuses with CSR_FORBIDDEN_EXTENSION), or null when they allow them.
   * Undefined when not checked (nothing to check, or the CA could not be loaded: see warnings).
   */
  caRefusal?: string | null;
  /**
   * Why the chosen CA's name constraints leave out the caller's trust domain: the server refuses
   * with ISSUER_UNAVAILABLE (retried; an operator's to fix), names or none. Absent when not checked
   * or when they allow it.
   */
  issuerRefusal?: string;
  /** Why authentication refuses the caller before the policy (AUTH_INVALID): a cluster the CA does not serve. */
  clusterRefusal?: string;
  /** Why authentication refuses this caller (AUTH_INVALID): a token's names that are not Kubernetes names, a client certificate's trust domain this CA does not serve. */
  authRefusal?: string;
  /** Why the server refuses an --impersonated request before the policy (IMPERSONATION_DENIED): ambient mode off, a node proxy of another cluster, or another trust domain. */
  impersonationRefusal?: string;
  /** Why the server refuses the CSR before the policy (--csr): a CA request, or another identity than the caller's. */
  csrRefusal?: { code: string; reason: string };
  /**
   * When allowed: the lifetime the server gives now, the policy's capped at the signing chain's end
   * (`caEnd`) as the server caps it. `caEnd` is known only when the CA's files were read.
   */
  ttlSeconds?: number;
  caEnd?: string;
  /** The certificate's SANs when allowed: the SPIFFE ID and the extra ones. */
  sans: { uris: string[]; dnsNames: string[]; ipAddresses: string[] } | null;
  trace: RuleEvaluation[];
  /** What explain could not check, and what the rules for the caller's own trust domain say of an alias. */
  warnings: string[];
}

export async function policyCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub !== 'explain') throw new UsageError(`usage: ${POLICY_USAGE}`);
  const { values: v } = parse(rest, {
    config: { type: 'string' },
    ns: { type: 'string' },
    sa: { type: 'string' },
    cluster: { type: 'string' },
    'trust-domain': { type: 'string' },
    key: { type: 'string' },
    dns: { type: 'string', multiple: true },
    ip: { type: 'string', multiple: true },
    // As `request`: agents always send a lifetime, so the rule's default applies only to 0.
    ttl: { type: 'string', default: '24h' },
    impersonated: { type: 'boolean', default: false },
    'client-certificate': { type: 'boolean', default: false },
    csr: { type: 'string' },
    'no-ca': { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
  });
  if (!v.config) throw new UsageError('policy explain needs --config FILE');
  if (v['client-certificate'] && v.impersonated) throw new UsageError('--impersonated with --client-certificate: the server refuses impersonation by a client certificate (it is bound to no pod)');
  // As serve judges it: a certificate names no cluster, so the policy judges its holder as the
  // default cluster's whatever the clusterid header says.
  if (v['client-certificate'] && v.cluster !== undefined) throw new UsageError('--cluster with --client-certificate: the server judges a client-certificate caller as the default cluster, whatever its clusterid header says');
  if (v.key !== undefined && !Object.hasOwn(KEYS, v.key)) throw new UsageError(`--key must be one of ${Object.keys(KEYS).join(', ')}`);
  if (v.csr !== undefined && (v.key !== undefined || v.dns !== undefined || v.ip !== undefined)) {
    throw new UsageError('--key, --dns and --ip cannot be used with --csr: they are read from the CSR');
  }
  // A certificate's iPAddress has no zone index: no CSR can carry one, so no request names one.
  const ips = splitList(v.ip);
  const zoned = ips.find((ip) => ip.includes('%'));
  if (zoned !== undefined) throw new UsageError(`--ip ${zoned}: a zone index (%...) is not part of an address a certificate can name`);
  // A CSR carries an address as its bytes: what is not an address is a typo, not a request to judge.
  const notIp = ips.find((ip) => isIP(ip) === 0);
  if (notIp !== undefined) throw new UsageError(`--ip ${notIp} is not an IPv4 or IPv6 address`);
  let ttl: number | undefined;
  if (v.ttl !== undefined) {
    try {
      ttl = parseLifetimeArg(v.ttl);
    } catch (e) {
      throw new UsageError(`--ttl: ${(e as Error).message}`);
    }
  }

  const warnings: string[] = [];
  const csr = v.csr === undefined ? undefined : readCsr(v.csr);
  let fromCsr: ReturnType<typeof parseWorkloadSpiffeId> = null;
  if (csr?.uris.length === 1) fromCsr = parseWorkloadSpiffeId(csr.uris[0]!);

  const namespace = v.ns ?? fromCsr?.namespace;
  const serviceAccount = v.sa ?? fromCsr?.serviceAccount;
  if (!namespace || !serviceAccount) throw new UsageError('policy explain needs --ns and --sa (or --csr with a workload SPIFFE ID)');

  // The config, loaded exactly as `serve` loads it (issuance shorthands, issuer checks, env), so the
  // explanation is the server's decision; plus the defaults for cluster and trust domain.
  // Its own exit code: a CI step asserting "denied" (1) must not pass on a broken config.
  let config;
  try {
    config = loadConfigFile(v.config, process.env, { streams: true }).config;
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    console.error(`meshcert: ${e.message}`);
    return 3;
  }
  const policy = config.policy;
  // As serve decides it: an empty clusterid is the default cluster, or the only one configured;
  // one it does not serve is refused at authentication, before any rule is read.
  const served = servedClusterNames(config);
  const cluster = v.cluster || effectiveDefaultCluster(config, served);
  const clusterRefusal = v.cluster && !served.includes(v.cluster) ? `unknown cluster "${v.cluster}" in the clusterid header (this CA serves ${served.length > 0 ? served.map((c) => `"${c}"`).join(', ') : 'none'})` : undefined;
  // The trust domain the caller authenticates in, which the rules judge (serve does not take it
  // from the CSR: a CSR may only ask for the caller's identity or an alias of it). A token's is its
  // cluster's, whatever is asked for: there --trust-domain is the one the CSR asks for, as
  // `meshcert request --trust-domain` asks. A client certificate's, or an impersonated identity's,
  // is --trust-domain's.
  const byToken = !v['client-certificate'] && !v.impersonated;
  const trustDomain = byToken ? clusterTrustDomain(config, cluster) : (v['trust-domain'] ?? clusterTrustDomain(config, cluster));
  const askedTrustDomain = v['trust-domain'] ?? trustDomain;
  let identity: string;
  let asked: string;
  try {
    identity = workloadSpiffeId(trustDomain, namespace, serviceAccount);
    asked = workloadSpiffeId(askedTrustDomain, namespace, serviceAccount);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  // As the authenticators: Kubernetes names only, a token's or a client certificate's (with
  // --impersonated they are the workload's, which node authorization judges, not the token's).
  // A client certificate authenticates only in a trust domain this CA serves (as serve builds it).
  const servedTds = servedTrustDomains(config);
  const kubernetesNames = isValidNamespace(namespace) && isValidServiceAccount(serviceAccount);
  const authRefusal = v['client-certificate']
    ? !kubernetesNames
      ? notWorkloadIdentity(identity)
      : servedTds.has(trustDomain)
        ? undefined
        : unservedTrustDomain(trustDomain, servedTds)
    : !v.impersonated && !kubernetesNames
      ? 'token names an invalid Kubernetes namespace or service account (a namespace is a DNS-1123 label, a service account a DNS-1123 subdomain)'
      : undefined;
  // Node authorization, as far as the config decides it (the pods on the node are the API server's to say).
  const defaultCluster = effectiveDefaultCluster(config, served);
  const nodeTrustDomain = clusterTrustDomain(config, defaultCluster);
  const impersonationRefusal = !v.impersonated
    ? undefined
    : !config.ambient.enabled
      ? AMBIENT_OFF
      : cluster !== defaultCluster
        ? `the caller authenticated in cluster "${cluster}", but this CA checks node proxies only in cluster "${defaultCluster}", whose pods it watches`
        : trustDomain !== nodeTrustDomain
          ? `ImpersonatedIdentity is in trust domain ${trustDomain}, but this CA issues for ${nodeTrustDomain}`
          : undefined;
  // The CSR's identity and CA request, judged by the server's own function, before the policy.
  const group = config.trustDomainAliases.length > 0 ? [config.trustDomain, ...config.trustDomainAliases] : [];
  let csrRefusal: { code: string; reason: string } | undefined;
  // Without --csr, a token caller's CSR asks for --trust-domain's identity (its own, or an alias).
  const asks = csr ?? (asked !== identity ? { requestsCa: false, uris: [asked] } : undefined);
  if (asks) {
    try {
      identity = chooseIdentity({ method: v['client-certificate'] ? 'client-cert' : 'jwt', identities: [identity] }, asks, group);
    } catch (e) {
      if (!isCaError(e)) throw e;
      csrRefusal = { code: e.code, reason: e.message };
    }
  }

  // As serve: the requested identity's trust domain decides, and an alias must pass the caller's own too.
  const requestedTd = parseWorkloadSpiffeId(identity)?.trustDomain ?? trustDomain;
  const request: PolicyRequest = {
    trustDomain: requestedTd,
    ...(requestedTd !== trustDomain ? { authenticatedTrustDomain: trustDomain } : {}),
    clusterId: cluster,
    // As serve: a certificate holder's `{cluster}` is the one its trust domain tells, if any.
    ...(v['client-certificate'] ? { templateCluster: certificateCluster(config, served, trustDomain) ?? '' } : {}),
    namespace,
    serviceAccount,
    impersonated: v.impersonated ?? false,
    authenticatedBy: v['client-certificate'] ? 'client-certificate' : 'token',
    key: csr ? csr.key : KEYS[v.key ?? 'rsa2048']!,
    requestedTtlSeconds: ttl,
    dnsNames: csr ? csr.dnsNames : splitList(v.dns),
    // As the CSR parser reads them: an IPv4-mapped IPv6 address is the IPv4 address it maps.
    ipAddresses: csr ? csr.ipAddresses : ips.map(unmapIpv4),
    emails: csr ? csr.emails : [],
    uris: csr ? csr.uris : [],
  };
  if (request.authenticatedBy === 'client-certificate' && !config.auth.clientCertificates) {
    warnings.push('auth.clientCertificates is off: the server accepts no client certificate, so it never judges such a caller');
  }
  const { decision, evaluated, refusedInAuthenticatedDomain } = new PolicyEngine(policy).explain(request);
  if (refusedInAuthenticatedDomain) warnings.push(`the alias is allowed in ${requestedTd}, but the rules for the caller's own trust domain ${trustDomain} refuse it`);
  const refusedEarlier = clusterRefusal ?? authRefusal ?? impersonationRefusal ?? csrRefusal;
  const ca = decision.allowed && !refusedEarlier && !v['no-ca'] ? await checkWithCa(config, decision, identity, warnings) : {};
  const { caRefusal, issuerRefusal } = ca;
  const allowed = decision.allowed && !refusedEarlier && !issuerRefusal && !caRefusal;
  const out: PolicyExplainOutput = {
    identity,
    request: {
      trustDomain: requestedTd,
      cluster,
      namespace,
      serviceAccount,
      impersonated: request.impersonated,
      authenticatedBy: request.authenticatedBy,
      key: { ...request.key },
      requestedTtlSeconds: ttl ?? null,
      dnsNames: [...request.dnsNames],
      ipAddresses: [...request.ipAddresses],
      emails: [...request.emails],
    },
    allowed,
    rule: decision.rule,
    decision,
    ...(caRefusal !== undefined ? { caRefusal } : {}),
    ...(issuerRefusal !== undefined ? { issuerRefusal } : {}),
    ...(clusterRefusal !== undefined ? { clusterRefusal } : {}),
    ...(authRefusal !== undefined ? { authRefusal } : {}),
    ...(impersonationRefusal !== undefined ? { impersonationRefusal } : {}),
    ...(csrRefusal !== undefined ? { csrRefusal } : {}),
    ...(allowed ? { ttlSeconds: ca.ttlSeconds ?? decision.ttlSeconds } : {}),
    ...(ca.caEnd !== undefined ? { caEnd: ca.caEnd.toISOString() } : {}),
    sans: allowed ? { uris: [identity], dnsNames: decision.dnsNames, ipAddresses: decision.ipAddresses } : null,
    trace: evaluated,
    warnings,
  };
  if (v.json) console.log(JSON.stringify(out, null, 2));
  else printText(out);
  return out.allowed ? 0 : 1;
}

interface CaVerdict {
  /** Why the CA's name constraints refuse the names the policy allows; null: they allow them; absent: not checked. */
  caRefusal?: string | null;
  /** Why they leave out the caller's trust domain (checked first, as the server does). */
  issuerRefusal?: string;
  /** The signing chain's end, and the lifetime the server gives now when it cuts the policy's short. */
  caEnd?: Date;
  ttlSeconds?: number;
}

/**
 * What the signing CA adds to an allowed decision, as the server applies it before signing: a leaf
 * never outlives the chain, and the chain's name constraints must allow the DNS names and IP
 * addresses. The CA is loaded from the files the config names (read only, never created), as serve
 * loads it (an expired one is refused). One that cannot be loaded is a warning, unless its
 * directory holds no CA and there are no names to check (files not at hand: explain then gives the
 * policy's lifetime, as --no-ca does).
 */
async function checkWithCa(config: MeshcertConfig, d: Extract<PolicyDecision, { allowed: true }>, identity: string, warnings: string[]): Promise<CaVerdict> {
  const names = d.dnsNames.length > 0 || d.ipAddresses.length > 0;
  const quiet = createLogger('silent');
  const named = config.issuers.find((i) => i.name === d.issuer);
  // Files not at hand, or a CA serve itself would refuse (`config check` says which).
  const notChecked = (why: string, present = true): CaVerdict => {
    if (names) warnings.push(`the CA "${d.issuer}" could not be loaded, so its name constraints were not checked (--no-ca: the policy alone): ${why}`);
    else if (present) warnings.push(`the CA "${d.issuer}" could not be loaded, so the lifetime is the policy's, not cut short at the CA's end (serve refuses a CA it cannot load): ${why}`);
    return {};
  };
  const present = !isCaDirEmpty(named ? named.dir : config.ca.dir!);
  if (!named && !present) return notChecked(`CA directory ${config.ca.dir} holds no CA`, false);
  let issuer: LocalIssuer;
  try {
    issuer = named ? loadNamedIssuer(config, named, quiet) : await loadIssuer(config, quiet, { allowInit: false });
  } catch (e) {
    return notChecked((e as Error).message, present);
  }
  const now = Date.now();
  // As the server: NotAfter = min(now + lifetime, the chain's end), in whole seconds.
  const left = Math.floor((issuer.notAfter.getTime() - now) / 1000);
  const verdict: CaVerdict = { caEnd: issuer.notAfter, ...(left < d.ttlSeconds ? { ttlSeconds: left } : {}) };
  // As the server: the identity first, names or none.
  const outside = identityOutsideCa(issuer, d.rule, identity);
  if (outside !== null) return { ...verdict, issuerRefusal: outside };
  if (!names) return verdict;
  const refused = issuer.refusedNames({ uris: [identity], dnsNames: d.dnsNames, ipAddresses: d.ipAddresses });
  return { ...verdict, caRefusal: refused.length > 0 ? refused.join('; ') : null };
}

/** An IPv4-mapped IPv6 address (any spelling) as the IPv4 address it maps, as the server judges it; others unchanged. */
function unmapIpv4(ip: string): string {
  if (isIP(ip) !== 6) return ip;
  try {
    const b = ipToBytes(ip);
    return b.length === 4 ? [...b].join('.') : ip;
  } catch {
    return ip; // a zone index, say: the policy refuses it as given
  }
}

/** Repeated and comma-separated values, trimmed, empty ones dropped. */
function splitList(values: string[] | undefined): string[] {
  return (values ?? []).flatMap((s) => s.split(',')).map((s) => s.trim()).filter((s) => s !== '');
}

function readCsr(file: string): ParsedCsr {
  let pem: string;
  try {
    pem = readTextFile(file, MAX_PEM_BYTES, { streams: true });
  } catch (e) {
    throw new UsageError(`cannot read the CSR ${file}: ${readProblem(e)}`);
  }
  try {
    return parseCsrPem(pem);
  } catch (e) {
    if (isCaError(e)) throw new UsageError(`--csr ${file}: ${e.message} (${e.code})`);
    throw e;
  }
}

function describeKey(k: CsrKeyInfo): string {
  return k.algorithm === 'ECDSA' ? `ECDSA ${k.curve ?? `${k.size}-bit`}` : `RSA ${k.size}`;
}

function describeLifetime(d: Extract<PolicyDecision, { allowed: true }>, requested: number | null, o: PolicyExplainOutput): string {
  const policy = formatDuration(d.ttlSeconds);
  let text: string;
  if (requested === null || requested <= 0) text = `${policy} (the rule's default; no lifetime requested)`;
  else if (!d.ttlClamped) text = `${policy} (as requested)`;
  else text = `${policy} (${d.ttlSeconds > requested ? 'raised to the minimum' : 'clamped to the maximum'}; requested ${formatDuration(requested)})`;
  if (o.ttlSeconds === undefined || o.ttlSeconds === d.ttlSeconds) return text;
  return `${formatDuration(o.ttlSeconds)}, cut short at the signing CA's end ${o.caEnd}; the policy gives ${text}`;
}

function printText(o: PolicyExplainOutput): void {
  const r = o.request;
  const list = (xs: readonly string[]): string => (xs.length > 0 ? xs.join(', ') : 'none');
  const lines = [
    `policy explain for ${o.identity}`,
    `  cluster ${r.cluster}, key ${describeKey(r.key)}, lifetime ${r.requestedTtlSeconds === null ? 'not requested' : formatDuration(r.requestedTtlSeconds)}, ` +
      `DNS ${list(r.dnsNames)}, IP ${list(r.ipAddresses)}${r.emails.length > 0 ? `, email ${list(r.emails)}` : ''}, ` +
      `${r.impersonated ? 'impersonated' : 'not impersonated'}, authenticated by ${r.authenticatedBy === 'token' ? 'token' : 'client certificate'}`,
    '',
    `rule:      ${o.rule}`,
  ];
  const d = o.decision;
  const policySays = `the policy would ${d.allowed ? 'allow' : `deny: ${d.reason}`}`;
  if (o.clusterRefusal || o.authRefusal) {
    lines.push(`decision:  deny (AUTH_INVALID): ${o.clusterRefusal ?? o.authRefusal}; the server refuses the caller before the policy (${policySays})`);
  } else if (o.impersonationRefusal) {
    lines.push(`decision:  deny (IMPERSONATION_DENIED): ${o.impersonationRefusal}; the server refuses the request before the policy (${policySays})`);
  } else if (o.csrRefusal) {
    lines.push(`decision:  deny (${o.csrRefusal.code}): ${o.csrRefusal.reason}; the server refuses the CSR before the policy (${policySays})`);
  } else if (d.allowed && o.issuerRefusal) {
    lines.push(`decision:  deny (ISSUER_UNAVAILABLE): the policy allows it, but ${o.issuerRefusal} (the server answers UNAVAILABLE, which clients retry, until then)`);
  } else if (d.allowed && o.caRefusal) {
    lines.push(`decision:  deny (CSR_FORBIDDEN_EXTENSION): the policy allows it, but the signing CA "${d.issuer}" cannot certify its names: ${o.caRefusal}`);
  } else if (d.allowed) {
    const sans = [...o.sans!.uris.map((u) => `URI:${u}`), ...d.dnsNames.map((n) => `DNS:${n}`), ...d.ipAddresses.map((a) => `IP:${a}`)];
    lines.push('decision:  allow', `lifetime:  ${describeLifetime(d, r.requestedTtlSeconds, o)}`, `SANs:      ${sans.join(', ')}`, `issuer:    ${d.issuer}`);
  } else {
    lines.push(`decision:  deny (${d.code}): ${d.reason}`);
  }
  lines.push('', 'rules tried:');
  for (const t of o.trace) lines.push(`  ${t.matched ? 'match   ' : 'no match'}  ${t.rule}: ${t.why}`);
  for (const w of o.warnings) lines.push(`warning: ${w}`);
  console.log(lines.join('\n'));
}
