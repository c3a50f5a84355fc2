/**
 * The TLS context of the gRPC listener. Built again on every change (renewal, file change, CA
 * reload) and swapped in with setSecureContext: new handshakes use it, live connections keep theirs.
 */
export function secureContextOptions(i) {
    return { cert: i.certChainPem, key: i.keyPem, ...(i.clientCaPem ? { ca: i.clientCaPem } : {}), minVersion: 'TLSv1.2' };
}
//# sourceMappingURL=tls.js.map