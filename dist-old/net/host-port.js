/** `host:port` or `[v6]:port` as validated by the config schema; an empty host means all IPv4 addresses. */
export function splitHostPort(hostPort) {
    const i = hostPort.lastIndexOf(':');
    return { host: hostPort.slice(0, i).replace(/^\[|\]$/g, '') || '0.0.0.0', port: Number(hostPort.slice(i + 1)) };
}
//# sourceMappingURL=host-port.js.map