import { z } from 'zod';
import { MAX_SPAN_SECONDS, MAX_SPAN_TEXT, parseDurationSeconds } from './duration.js';
import { lifetimeDuration, namespaceGlobList, policySchema, serviceAccountGlobList, trustDomainGlobList } from '../policy/schema.js';
import { canonicalSerial } from '../x509/serial-hex.js';
import { isIP } from 'node:net';
import { splitHostPort } from '../net/host-port.js';
import { ipBytesToText, ipToBytes } from '../net/ip-text.js';
import { trustDomainProblem } from '../x509/spiffe-id.js';
import { servedClusterNames } from './default-cluster.js';

/**
 * The one configuration schema. Strict objects: an unknown key is an error naming its path.
 * Durations are strings ("24h") turned into seconds here, so the rest of the code sees numbers.
 */
const duration = z
  .union([z.string(), z.number()], { error: 'expected a duration such as "90s", "15m", "24h" or "90d", or a finite number of seconds' })
  .transform((v, ctx) => {
    try {
      return parseDurationSeconds(v);
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: (e as Error).message });
      return z.NEVER;
    }
  });

/** Node's timers hold at most 2^31 - 1 ms; a longer one fires at once. */
const MAX_TIMER_SECONDS = 2_147_483;
const span = (min: number, minText: string) =>
  duration.refine((v) => v >= min && v <= MAX_SPAN_SECONDS, `must be between ${minText} and ${MAX_SPAN_TEXT}`);

const timerDuration = (min: number) =>
  duration.refine((v) => v >= min && v <= MAX_TIMER_SECONDS, `must be between ${min === 0 ? '0' : `${min}s`} and ${MAX_TIMER_SECONDS}s (about 24 days)`);

/** A host name for a DNS SAN (RFC 1123 labels, at most 253 characters): what a TLS client compares its server name with. */
const DNS_NAME = /^(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*$/;
/** A DNS SAN of a certificate meshcert makes: a host name, or a wildcard of one (`*.meshcert.svc`). */
const dnsSan = z.string().refine((s) => DNS_NAME.test(s.startsWith('*.') ? s.slice(2) : s), 'a DNS name: labels of letters, digits and "-" joined by dots, at most 253 characters (a leading "*." for a wildcard)');

/** A listen host: empty (all IPv4), an IPv4 address, a bracketed IPv6 one, or a host name (whose last label is not all digits, as in 999.1.1.1). */
function listenHostOk(host: string): boolean {
  if (host === '') return true;
  if (host.startsWith('[')) return host.endsWith(']') && isIP(host.slice(1, -1)) === 6;
  return isIP(host) === 4 || (DNS_NAME.test(host) && !/(^|\.)\d+$/.test(host));
}

const hostPort = z
  .string()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]*):\d{1,5}$/, 'expected host:port, e.g. 0.0.0.0:15012 or [::1]:15012')
  // Only the port's range and the host's form: a string without a numeric port is the regex's to report.
  .refine((s) => Number(/:(\d{1,5})$/.exec(s)?.[1] ?? 0) <= 65535, 'port must be 0-65535 (0: any free port)')
  .refine((s) => !/:\d{1,5}$/.test(s) || listenHostOk(s.slice(0, s.lastIndexOf(':'))), 'the host must be an IPv4 address, an IPv6 address in brackets, or a host name');
const keyType = z.enum(['ec256', 'ec384', 'rsa2048', 'rsa3072', 'rsa4096']);

// The SPIFFE rules themselves (x509/spiffe-id.ts), so config and issuance cannot disagree.
const trustDomain = z.string().superRefine((s, ctx) => {
  const problem = trustDomainProblem(s);
  if (problem !== null) ctx.addIssue({ code: 'custom', message: problem });
});

const jwtIssuer = z
  .strictObject({
    issuer: z.string().min(1),
    audiences: z.array(z.string().min(1)).min(1).default(['istio-ca']),
    // Keys fetched over plain HTTP could be swapped by anyone on the path, minting any identity:
    // https, or http only to this host (a sidecar proxy, tests).
    jwksUri: z
      .url({ protocol: /^https?$/ })
      .refine((u) => u.startsWith('https:') || ['localhost', '127.0.0.1', '[::1]'].includes(new URL(u).hostname), 'jwksUri must be https (http only to localhost, 127.0.0.1 or [::1])')
      .optional(),
    jwksFile: z.string().min(1).optional(),
  })
  .refine((j) => (j.jwksUri === undefined) !== (j.jwksFile === undefined), {
    message: 'set exactly one of jwksUri or jwksFile',
  });

const tokenReview = z.strictObject({
  /** https URL of the API server, with the path prefix of a proxy in front of it if any; default: in-cluster (KUBERNETES_SERVICE_HOST). */
  apiServer: z
    .url({ protocol: /^https$/ })
    .refine((u) => !u.includes('?') && !u.includes('#'), 'must not have a query or fragment: the API paths are appended to it')
    .optional(),
  caFile: z.string().optional(),
  tokenFile: z.string().optional(),
  audiences: z.array(z.string().min(1)).min(1).default(['istio-ca']),
  // Each review waits this long at most; an agent's call waits behind it.
  timeout: duration.refine((v) => v > 0 && v <= 60, 'must be more than 0s and at most 60s').prefault(5),
  /**
   * Check a token's signature against the API server's service-account keys (GET /openid/v1/jwks)
   * before asking TokenReview, so that forged tokens cost the API server nothing. While the keys
   * cannot be read, TokenReview decides alone.
   */
  verifySignatures: z.boolean().default(true),
});

const RFC3339 = z.iso.datetime({ offset: true });
const RFC3339_EXPECTED = 'must be an RFC 3339 date and time with a zone, e.g. 2026-11-29T22:00:00Z';

/**
 * A certificate serial number as people copy it: hex digits in any case, or colon-separated
 * octets, with an optional 0x (the hex after `serial=` of `openssl x509 -serial`, `meshcert certs`,
 * the issuance log). Kept as meshcert writes it (canonicalSerial: lowercase, no colons, no leading
 * zeros), as the inventory's lookup reads one. At most 20 octets (RFC 5280 §4.1.2.2).
 */
const SERIAL = /^(?:[0-9a-fA-F]+|[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2})*)$/;
const SERIAL_EXPECTED = 'must be a serial number in hex (at most 20 octets, with or without colons), e.g. 1a2b3c or 1A:2B:3C';
const serialNumber = z
  .union([z.string(), z.number()], { error: SERIAL_EXPECTED })
  .superRefine((v, ctx) => {
    // Digits alone read as a number in YAML; the digits it kept may not be the hex written.
    if (typeof v === 'number') ctx.addIssue({ code: 'custom', message: 'quote the serial number: YAML read it as a number' });
    else {
      if (!SERIAL.test(v.trim().replace(/^0x/i, '')) || canonicalSerial(v).length > 40) ctx.addIssue({ code: 'custom', message: SERIAL_EXPECTED });
    }
  })
  .transform((v) => canonicalSerial(String(v)));

/** One auth.revokedClientCertificates entry. The time stays a string here: workers get the config by IPC. */
const revocationEntry = z
  .strictObject({
    /** RFC 3339 with a zone (`2026-11-29T22:00:00Z`): a time without one would depend on the server's zone. */
    issuedBefore: z
      .union([z.string(), z.date()], { error: RFC3339_EXPECTED })
      .superRefine((v, ctx) => {
        // YAML 1.1 (a %YAML 1.1 directive, a !!timestamp tag) reads an unquoted time as a date.
        if (v instanceof Date) ctx.addIssue({ code: 'custom', message: `quote the time (${Number.isNaN(v.getTime()) ? '"2026-11-29T22:00:00Z"' : JSON.stringify(v.toISOString())}): YAML read it as a date` });
        else if (!RFC3339.safeParse(v).success) ctx.addIssue({ code: 'custom', message: RFC3339_EXPECTED });
      })
      .transform((v) => (typeof v === 'string' ? v : v.toISOString()))
      .optional(),
    /** These certificates exactly (one leaked key), whatever their notBefore. */
    serials: z.array(serialNumber).min(1, { error: 'list at least one serial number, or leave serials out' }).optional(),
    trustDomains: trustDomainGlobList.optional(),
    namespaces: namespaceGlobList.optional(),
    serviceAccounts: serviceAccountGlobList.optional(),
  })
  .refine((e) => e.issuedBefore !== undefined || e.serials !== undefined, {
    error: 'give issuedBefore, serials, or both: an entry with neither would refuse every certificate its selectors match, those issued after it included',
    path: ['issuedBefore'],
  });

/** A list refinement: an entry whose `field` repeats an earlier entry's is an issue, at that field. */
function noSecond<F extends string>(field: F, message: (value: string) => string) {
  return (list: ReadonlyArray<Record<F, string>>, ctx: z.RefinementCtx): void => {
    const seen = new Set<string>();
    list.forEach((entry, i) => {
      if (seen.has(entry[field])) ctx.addIssue({ code: 'custom', path: [i, field], message: message(entry[field]) });
      seen.add(entry[field]);
    });
  };
}

const cluster = z.strictObject({
  /** The value istio-agent sends in the `clusterid` header. */
  name: z.string().min(1),
  trustDomain: trustDomain.optional(),
  jwt: z
    .array(jwtIssuer)
    .default([])
    // A token names one issuer: two entries for it would leave one unused (serve refuses them).
    .superRefine(noSecond('issuer', (v) => `issuer ${v} is configured twice in this cluster; merge its audiences into one entry`)),
  tokenReview: tokenReview.optional(),
});

export const configSchema = z.strictObject({
  /** Where meshcert keeps generated state (CA, serving certificate, dev issuer, inventory). */
  dataDir: z.string().min(1).default('.meshcert'),
  trustDomain: trustDomain.default('cluster.local'),
  /**
   * Other trust domains this mesh answers to (Istio's meshConfig.trustDomainAliases), e.g. while
   * migrating: a caller may ask for its own namespace/service account under an alias.
   */
  trustDomainAliases: z.array(trustDomain).default([]),
  server: z
    .strictObject({
      listen: hostPort.default('0.0.0.0:15012'),
      tls: z
        .strictObject({
          /** User-supplied serving certificate (PEM chain) and key; reloaded when the files change. */
          certFile: z.string().optional(),
          keyFile: z.string().optional(),
          /** Otherwise meshcert issues its own serving certificate for these names, and renews it. */
          dnsNames: z.array(dnsSan).default(['localhost']),
          ipAddresses: z.array(z.union([z.ipv4(), z.ipv6()], { error: 'expected an IPv4 or IPv6 address' })).default(['127.0.0.1', '::1']),
          /** At least an hour: a shorter one is renewed over and over. */
          lifetime: span(3600, '1h').prefault('720h'),
          /** Renew when less than this fraction of the lifetime is left. */
          renewBeforeRatio: z.number().gt(0).lt(1).default(1 / 3),
        })
        .refine((t) => (t.certFile === undefined) === (t.keyFile === undefined), {
          message: 'set both certFile and keyFile, or neither',
        })
        .prefault({}),
      /** A CSR is a few KB; anything larger is refused with RESOURCE_EXHAUSTED. */
      maxRequestBytes: z.number().int().min(4096).max(4 * 1024 * 1024).default(64 * 1024),
      /**
       * Calls one connection may have open at once (HTTP/2 max concurrent streams); clients queue the
       * rest. 'auto' = 100, or 16 under a memory limit too small for two workers (runtime/auto-shape.ts),
       * where a restart storm's calls in flight would otherwise take the pod past its limit.
       */
      maxConcurrentStreams: z.union([z.literal('auto'), z.number().int().min(1).max(10_000)], { error: 'expected "auto" or a whole number from 1 to 10000' }).default('auto'),
      /** How long SIGTERM waits for in-flight calls before closing connections. */
      shutdownGrace: timerDuration(0).prefault('20s'),
      /**
       * After SIGTERM, keep serving this long before closing the listener, with /readyz and gRPC
       * health reporting not serving: Kubernetes removes a terminating pod from the Service's
       * endpoints while its clients are still being sent to it, and a listener closed at once
       * refuses them. A second SIGTERM or SIGINT ends the delay. 0: close at once.
       */
      shutdownDelay: timerDuration(0).prefault('0s'),
      /**
       * A connection that has not finished its TLS handshake by then is dropped. Longer than gRPC's
       * 20 s minimum connect timeout: in a storm of new connections the handshakes queue behind each
       * other (about 1.5-2 ms of CPU each), and dropping one the client still waits for throws the
       * work away and sends it to reconnect (bench/HISTORY.md, round 5).
       */
      handshakeTimeout: timerDuration(1).prefault('30s'),
      /**
       * A call whose request has not arrived in full by then gets DEADLINE_EXCEEDED (a CSR is a few
       * KB: a stalled upload, not a slow one); 0: no limit.
       */
      requestReadTimeout: timerDuration(0).prefault('30s'),
      /**
       * A connection with no traffic for this long is closed gracefully (GOAWAY; calls still open
       * finish). Bounds what idle connections hold; 0 keeps them open.
       */
      idleTimeout: timerDuration(0).prefault('5m'),
      /**
       * Connections each serving process keeps open at once; 0: no limit. A connection beyond it is
       * closed at once (clients reconnect with backoff). Each connection may buffer up to
       * maxConcurrentStreams x (maxRequestBytes + 16 KiB) of uploads, so this bounds that memory.
       * On by default: a connection's TLS and HTTP/2 state lives outside the V8 heap that memory
       * pressure watches, so without a bound anyone who can reach the port could grow the process
       * until it is OOM-killed by opening sockets and never sending a byte (19,000 such sockets
       * took 250 MB on two workers; the file-descriptor limit was the only bound).
       */
      maxConnections: z.number().int().min(0).max(1_000_000).default(5000),
      /**
       * Processes serving gRPC (Node runs JavaScript on one core per process). 'auto' = one per CPU
       * the process may use (its cgroup CPU limit, rounded up, included: runtime/auto-shape.ts);
       * 1 serves from the main process.
       */
      workers: z.union([z.literal('auto'), z.number().int().min(1).max(64)], { error: 'expected "auto" or a whole number from 1 to 64' }).default('auto'),
      /**
       * V8 old-space limit of each worker process, MB (0: Node's default). The live set of a worker
       * is small; without a limit V8 grows the heap under sustained load (RSS 250+ MB per worker),
       * with it RSS stays flat (about 120 MB) and throughput does not suffer. 192 rather than 96: a
       * storm of 10,000 agents each on its own connection fills 96 MB per worker with live
       * connections and calls, and memory pressure then sheds connections that must reconnect
       * (19-26 s against 10.7 s); a 300 s soak was as flat at either (370 MB RSS).
       */
      workerHeapMb: z.number().int().min(0).max(16_384).default(192),
      /**
       * V8 semi-space of each worker process, MB (0: Node's default, 16 on 64-bit). Under load the
       * young generation holds three semi-spaces; 2 saves about 30 MB per worker for about 8 % more
       * CPU per certificate (measured; bench/HISTORY.md).
       */
      workerSemiSpaceMb: z.number().int().min(0).max(256).default(0),
      /**
       * The old generation's size below which V8 does not start a major collection, MB, per worker
       * (V8's --initial-old-space-size; 0: V8's default). A worker's live heap is about 15 MB, and V8
       * sizes its next collection from that: at 2,200 certificates/s a worker ran a 5-15 ms
       * mark-compact every 1.6 s, and requests arriving during one wait for it; at 64, one every
       * 4-9 s (measured; bench/HISTORY.md, round 7). It costs at most that much more garbage held per
       * worker; above it V8 sizes collections as before. `auto`: a third of workerHeapMb (64 for
       * the default 192), or 64 when the heap has no limit. V8 may use less when it is close to
       * workerHeapMb.
       */
      workerInitialHeapMb: z.union([z.literal('auto'), z.number().int().min(0).max(16_384)], { error: 'expected "auto" or a whole number of MiB from 0 to 16384' }).default('auto'),
    })
    .refine((s) => s.workerHeapMb === 0 || s.workerInitialHeapMb === 'auto' || s.workerInitialHeapMb <= s.workerHeapMb, {
      message: 'server.workerInitialHeapMb must not exceed server.workerHeapMb',
      path: ['workerInitialHeapMb'],
    })
    .prefault({}),
  ca: z
    .strictObject({
      /** Istio plug-in CA layout: ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem. Default: <dataDir>/ca. */
      dir: z.string().min(1).optional(),
      /** Create a root and intermediate at first start when the directory is empty. */
      autoInit: z.boolean().default(false),
      keyType: keyType.default('ec256'),
    })
    .prefault({}),
  /** More CAs (each an Istio cacerts directory) that policy rules can choose by name; `ca` is "default". */
  issuers: z
    .array(z.strictObject({ name: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'issuer names are lowercase letters, digits and "-"'), dir: z.string().min(1) }))
    .default([])
    .refine((l) => new Set(l.map((i) => i.name)).size === l.length && !l.some((i) => i.name === 'default'), {
      message: 'issuer names must be unique and not "default" (the ca section is the default issuer)',
    }),
  /**
   * Lifetime shorthands for the default policy rule (policy.default.lifetime) and the backdate.
   * Set lifetimes here or in policy.default.lifetime, not both.
   */
  issuance: z
    .strictObject({
      defaultTtl: lifetimeDuration.prefault('24h'),
      maxTtl: lifetimeDuration.prefault('90d'),
      /** What to do when a workload asks for more than maxTtl: issue maxTtl (clamp) or refuse. */
      onTtlAboveMax: z.enum(['clamp', 'reject']).default('clamp'),
      /** NotBefore is set this far in the past to absorb clock skew between nodes. */
      // A day at most: it is clock skew, and beyond a date range NotBefore is no date at all.
      backdate: duration.refine((v) => v >= 0 && v <= 86_400, 'must be between 0s and 1d').prefault('2m'),
    })
    .prefault({})
    .refine((i) => i.defaultTtl > 0 && i.defaultTtl <= i.maxTtl, { message: 'defaultTtl must be > 0 and <= maxTtl' }),
  /** Who may get which certificate: ordered rules (first match wins) and a default rule. See src/policy/. */
  policy: policySchema.prefault({}),
  /** Ambient mode: ztunnel asks for certificates of the pods on its node (node authorization). */
  ambient: z
    .strictObject({
      enabled: z.boolean().default(false),
      /** namespace/serviceaccount of node agents allowed to impersonate. */
      trustedNodeAccounts: z.array(z.string().regex(/^[a-z0-9-]+\/[a-z0-9.-]+$/, 'expected namespace/serviceaccount')).default(['istio-system/ztunnel']),
    })
    .prefault({}),
  /** The Kubernetes API server (ambient pod lookups, controllers); default in-cluster. */
  kubernetes: z
    .strictObject({ server: z.url({ protocol: /^https$/ }).optional(), caFile: z.string().optional(), tokenFile: z.string().optional(), kubeconfig: z.string().optional() })
    .prefault({})
    // Alternatives, not layers: settings the other one would silently ignore are refused.
    .refine((k) => k.kubeconfig === undefined || (k.server ?? k.caFile ?? k.tokenFile) === undefined, { message: 'set either kubeconfig or server (with caFile, tokenFile), not both' })
    .refine((k) => k.server !== undefined || (k.caFile ?? k.tokenFile) === undefined, { message: 'caFile and tokenFile go with server (the API server they are for)' }),
  /** Istio integration that istiod does itself when its CA is on. Only the leader replica writes. */
  istio: z
    .strictObject({
      /** Keep ConfigMap istio-ca-root-cert (key root-cert.pem) equal to the root bundle in every namespace. */
      rootCertConfigMap: z
        .strictObject({
          enabled: z.boolean().default(false),
          /** Label selector of the namespaces to serve; default all. */
          namespaceSelector: z.string().optional(),
          excludeNamespaces: z.array(z.string()).default([]),
        })
        .prefault({}),
      /** Issue and renew Secret istiod-tls (tls.crt, tls.key, ca.crt) for istiod's serving certificate. */
      istiodTls: z
        .strictObject({
          enabled: z.boolean().default(false),
          // Both become DNS names of the certificate and Kubernetes names (the namespace, Service istiod-<rev>).
          namespace: z.string().regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, 'a Kubernetes namespace: lowercase letters, digits and "-", at most 63').default('istio-system'),
          /** Control-plane revisions: names istiod-<rev>.<ns>.svc are added. */
          revisions: z.array(z.string().regex(/^([a-z0-9]([a-z0-9-]{0,54}[a-z0-9])?)?$/, 'an Istio revision: lowercase letters, digits and "-", at most 56 (istiod-<rev> is a Service name)')).default([]),
          /** More DNS names, such as istiod's ISTIOD_CUSTOM_HOST. */
          extraDnsNames: z.array(dnsSan).default([]),
          lifetime: span(3600, '1h').prefault('30d'),
        })
        .prefault({}),
    })
    .prefault({}),
  leaderElection: z
    .strictObject({
      leaseName: z.string().default('meshcert-leader'),
      /** Namespace of the Lease; default the pod's (MESHCERT_POD_NAMESPACE). */
      namespace: z.string().optional(),
      leaseDuration: timerDuration(1).prefault('15s'),
      renewDeadline: timerDuration(1).prefault('10s'),
      retryPeriod: timerDuration(1).prefault('2s'),
    })
    // The elector's own rules (client-go's), checked here so that `config check` reports them.
    .refine((l) => l.leaseDuration > l.renewDeadline, { message: 'leaseDuration must be greater than renewDeadline', path: ['leaseDuration'] })
    .refine((l) => l.renewDeadline > 1.2 * l.retryPeriod, { message: 'renewDeadline must be greater than 1.2 × retryPeriod', path: ['renewDeadline'] })
    .prefault({}),
  auth: z
    .strictObject({
      /** The cluster used when `clusterid` is empty or absent (istio-agent's default is "Kubernetes"). */
      defaultCluster: z.string().min(1).default('Kubernetes'),
      clusters: z
        .array(cluster)
        .default([])
        // Two entries of one name would be one cluster, the later silently replacing the earlier.
        .superRefine(noSecond('name', (v) => `cluster "${v}" is configured twice; merge its authenticators into one entry`)),
      /** Accept mTLS client certificates chained to meshcert's roots (VMs, istiod). */
      clientCertificates: z.boolean().default(true),
      /**
       * Client certificates refused as credentials (hot-reloadable): those whose notBefore is
       * before `issuedBefore`, or whose serial `serials` lists (both, when an entry sets both), and
       * whose SPIFFE ID matches every selector the entry sets. A holder must then authenticate
       * with a token. See src/auth/revocations.ts.
       */
      revokedClientCertificates: z.array(revocationEntry).default([]),
      /** Tolerance for the token's exp/nbf/iat against this clock; more than 10 minutes is not skew. */
      clockSkew: duration.refine((v) => v <= 600, 'must be between 0s and 10m').prefault('30s'),
      tokenCache: z
        .strictObject({ maxEntries: z.number().int().min(0).default(10_000), maxTtl: duration.prefault('10m') })
        .prefault({}),
    })
    .prefault({}),
  /** Restart storms: shed load early (UNAVAILABLE, retried by istio-agent) instead of queueing. */
  overload: z
    .strictObject({
      /** Calls being processed at once per worker process; beyond it: UNAVAILABLE. */
      maxInFlight: z.number().int().min(1).default(4096),
      /**
       * Request bytes those calls may hold at once per worker process (at least one call is
       * always admitted); beyond it: UNAVAILABLE. Bounds memory when requests are large. The same
       * bound applies, separately, to requests still arriving: past it the oldest upload stalled for
       * a second is dropped (UNAVAILABLE), so clients that never finish theirs cannot hold memory.
       */
      maxInFlightBytes: z.number().int().min(4096).default(16 * 1024 * 1024),
      /**
       * Share of the V8 old generation's limit (server.workerHeapMb in workers) at which a serving
       * process turns away new connections and calls (UNAVAILABLE, retried) and sends GOAWAY to
       * connections with no call open, until it is back below 7/8 of this share; 0: never. Keeps
       * a flood of connections from exhausting the heap (README "Overload protection").
       */
      heapLimitRatio: z.number().min(0).max(0.95).default(0.8),
      /** Optional token bucket per SPIFFE ID, and per pod asking for it when the token is bound to one (requests/s and burst). */
      perIdentity: z.strictObject({ rate: z.number().positive(), burst: z.number().int().min(1) }).optional(),
    })
    .prefault({}),
  /** Admin HTTP server: /metrics, /healthz, /readyz, /api/v1/certificates. Not the gRPC port. */
  admin: z
    .strictObject({
      /** host:port; loopback by default (see README "Protecting the admin server"). */
      listen: hostPort.default('127.0.0.1:9402'),
      enabled: z.boolean().default(true),
    })
    .prefault({}),
  /** Where every issued (and discovered) certificate is recorded. */
  inventory: z
    .strictObject({
      /** sqlite (embedded default), postgres (several replicas), or none. Default: postgres when url is set. */
      store: z.enum(['sqlite', 'postgres', 'none']).optional(),
      /** SQLite file; default <dataDir>/inventory.db. */
      path: z.string().min(1).optional(),
      /** PostgreSQL connection string. */
      url: z.string().regex(/^postgres(ql)?:\/\//, 'expected a postgres:// URL').optional(),
      /**
       * Refuse issuance (UNAVAILABLE) while the store is down or the buffer is full, instead of going
       * on; and answer each certificate only once its record is stored (src/main.ts keepRecord).
       */
      failClosed: z.boolean().default(false),
      /** Records kept in memory while the store is down. */
      maxBuffer: z.number().int().min(100).default(100_000),
      /** Expired records are pruned this long after they expire. */
      retention: span(0, '0s').prefault('30d'),
      /**
       * Audit events (refusals, including unauthenticated and shed calls) are pruned this long
       * after they were recorded, so the table cannot grow without bound; 0 keeps them forever.
       */
      auditRetention: span(0, '0s').prefault('365d'),
    })
    .prefault({})
    .refine((i) => i.store !== 'postgres' || i.url !== undefined, { message: 'inventory.store postgres needs inventory.url' })
    .refine((i) => i.store !== 'sqlite' || i.url === undefined, { message: 'inventory.url is set but inventory.store is sqlite: set inventory.store: postgres, or remove the URL' })
    // A URL with the store off is a config that meant PostgreSQL (MESHCERT_INVENTORY_URL over a
    // base that turns the inventory off): refused rather than running with no inventory unnoticed.
    .refine((i) => i.store !== 'none' || i.url === undefined, { message: 'inventory.url is set but inventory.store is none: set inventory.store: postgres (MESHCERT_INVENTORY_STORE=postgres), or remove the URL' }),
  /** Expiry monitoring of CA certificates and workload identities. */
  monitoring: z
    .strictObject({
      /** Warn (log + metric) when a CA certificate has less than this left. */
      caWarnBefore: span(0, '0s').prefault('30d'),
      /** Report identities whose latest certificate expires within this window and was not renewed. */
      staleWithin: span(0, '0s').prefault('24h'),
      /**
       * Report the certificates that places found by `meshcert discover` served when last seen
       * and that expire within this window (0: only those already expired).
       */
      discoveredWarnBefore: span(0, '0s').prefault('30d'),
      /** How often the checks run: each reads the CA files and queries the store (a Node timer: at most about 24 days). */
      interval: timerDuration(10).prefault('5m'),
    })
    .prefault({}),
  log: z
    .strictObject({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info') })
    .prefault({}),
  /** Development only: a local token issuer whose JWKS is trusted. Never on unless asked for. */
  dev: z
    .strictObject({ tokenIssuer: z.boolean().default(false) })
    .prefault({}),
})
  .superRefine((c, ctx) => {
    // A rule may only name a configured CA.
    const names = new Set(['default', ...c.issuers.map((i) => i.name)]);
    const check = (issuer: string | undefined, path: (string | number)[]): void => {
      if (issuer !== undefined && !names.has(issuer)) ctx.addIssue({ code: 'custom', path, message: `issuer "${issuer}" is not configured (known: ${[...names].join(', ')})` });
    };
    c.policy.rules.forEach((r, i) => check(r.deny === undefined ? r.issuer : undefined, ['policy', 'rules', i, 'issuer']));
    check(c.policy.default.deny === undefined ? c.policy.default.issuer : undefined, ['policy', 'default', 'issuer']);
    // Refused here rather than by the second bind at start, which blames "another process".
    const conflict = c.admin.enabled ? listenConflict(c.server.listen, c.admin.listen) : null;
    if (conflict) ctx.addIssue({ code: 'custom', path: ['admin', 'listen'], message: conflict });
    // With one cluster, an empty clusterid means it; with several, the config must say which.
    const served = servedClusterNames(c);
    if (served.length > 1 && !served.includes(c.auth.defaultCluster)) {
      ctx.addIssue({
        code: 'custom',
        path: ['auth', 'defaultCluster'],
        message: `"${c.auth.defaultCluster}" is not one of auth.clusters (${served.join(', ')}): with several clusters, set auth.defaultCluster to the one a request with an empty or absent clusterid header belongs to`,
      });
    }
  });

/**
 * Why the admin server could not listen beside the gRPC server (null when it can): one port on
 * addresses that overlap (the same one, a wildcard covering the other, or a name that may resolve
 * to either).
 */
function listenConflict(server: string, admin: string): string | null {
  const s = splitHostPort(server);
  const a = splitHostPort(admin);
  if (s.port === 0 || s.port !== a.port) return null;
  return addressesOverlap(s.host, a.host) ? `${admin} and server.listen ${server} are one port on overlapping addresses: the admin server needs a port of its own` : null;
}

function addressesOverlap(x: string, y: string): boolean {
  const cx = canonicalIp(x);
  const cy = canonicalIp(y);
  if (cx === null || cy === null) return true;
  // "::" takes every address of both families (Node listens dual-stack), 0.0.0.0 every IPv4 one.
  const covers = (w: CanonicalIp, o: CanonicalIp): boolean => w.address === '::' || (w.address === '0.0.0.0' && o.family === 'ipv4');
  return cx.address === cy.address || covers(cx, cy) || covers(cy, cx);
}

interface CanonicalIp {
  readonly address: string;
  readonly family: 'ipv4' | 'ipv6';
}

/** An IP literal's one spelling (an IPv4-mapped IPv6 address as the IPv4 one, as ipToBytes reads it); null for a name. */
function canonicalIp(host: string): CanonicalIp | null {
  if (isIP(host) === 0) return null;
  const bytes = ipToBytes(host);
  return { address: ipBytesToText(bytes), family: bytes.length === 4 ? 'ipv4' : 'ipv6' };
}

export type MeshcertConfig = z.infer<typeof configSchema>;
export type ConfigInput = z.input<typeof configSchema>;
export type KeyType = z.infer<typeof keyType>;
