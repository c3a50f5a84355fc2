/** What an authenticator learned about the caller of CreateCertificate. */
export interface Caller {
  /** How the caller was authenticated (for logs and metrics). */
  readonly method: 'jwt' | 'tokenreview' | 'client-cert';
  /** SPIFFE IDs the caller may request certificates for (one for tokens; URI SANs for client certificates). */
  readonly identities: readonly string[];
  /** Kubernetes namespace and service account, when the credential is a service-account token. */
  readonly namespace?: string;
  readonly serviceAccount?: string;
  /** Bound pod of a projected token (used by ambient node authorization), when present. */
  readonly pod?: { readonly name: string; readonly uid: string };
  readonly node?: { readonly name: string; readonly uid?: string };
  /** Seconds since epoch after which this verdict must not be reused: the credential's expiry, or sooner (bounds caching). */
  readonly expiresAt?: number;
}

/** The parts of an incoming call authenticators look at; transport-neutral. */
export interface AuthRequest {
  /** Raw bearer token from `authorization: Bearer ...`, if any. */
  readonly bearerToken?: string;
  /** Value of the `clusterid` header ('' when sent empty, undefined when absent). */
  readonly clusterId?: string;
  /** DER certificates the client presented over mTLS (leaf first), if any. */
  readonly peerCertificates?: readonly Buffer[];
  /**
   * Why the handshake did not verify the client certificate the client presented (OpenSSL's code,
   * e.g. CERT_HAS_EXPIRED); absent when none was presented or it verified.
   */
  readonly peerCertificateRefused?: string;
  /** The client's IP address (no port): backends shared by all clients are shared fairly by it. */
  readonly peerHost?: string;
  /** An authorization header was sent that is not `Bearer <token>` (Basic, a bare token): the refusal says so. */
  readonly authorizationNotBearer?: boolean;
}

export interface Authenticator {
  readonly name: string;
  /**
   * Returns the caller, or null when this authenticator does not apply (e.g. no bearer token).
   * Throws CaError AUTH_INVALID when the credential is present but bad, and
   * AUTH_BACKEND_UNAVAILABLE when a backend (JWKS, API server) cannot be reached.
   */
  authenticate(req: AuthRequest): Promise<Caller | null>;
  /**
   * When present, changes whenever a credential this authenticator accepted may no longer be
   * accepted (a signing key removed): a cache of verified tokens must not answer across a change.
   */
  readonly cacheGeneration?: number;
}
