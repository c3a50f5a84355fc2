import { pino } from 'pino';
/**
 * JSON logs, one line per event. Redaction is belt-and-braces: call sites never pass tokens,
 * CSRs or keys; the top-level names are censored should one slip in (top-level paths only:
 * wildcard redaction costs several percent of CPU at thousands of lines per second).
 *
 * Without an explicit destination, logs go to stdout through a buffered writer (a write per 4 KB,
 * not per line); `flushLogs` writes what is pending, and it is called before every exit.
 */
export function createLogger(level = 'info', destination) {
    const dest = destination ?? stdoutDestination();
    return pino({
        level,
        base: { service: 'meshcert' },
        timestamp: pino.stdTimeFunctions.isoTime,
        redact: { paths: ['token', 'authorization', 'privateKey', 'csr'], censor: '[redacted]' },
        serializers: { err: serializeError },
    }, dest);
}
let stdout;
function stdoutDestination() {
    if (!stdout) {
        stdout = pino.destination({ dest: 1, sync: false, minLength: 4096 });
        // Whatever the exit path, write what is buffered.
        process.on('exit', () => flushLogs());
        const timer = setInterval(() => stdout?.flush(), 250);
        timer.unref();
    }
    return stdout;
}
/** Writes buffered log lines now (synchronously). */
export function flushLogs() {
    try {
        stdout?.flushSync();
    }
    catch {
        // nothing left to write to
    }
}
/** Errors are logged by type, code and message only: stacks stay out of production logs. */
function serializeError(err) {
    if (!(err instanceof Error))
        return { message: String(err) };
    const out = { type: err.name, message: err.message };
    const code = err.code;
    if (code !== undefined)
        out.code = code;
    if (err.cause instanceof Error)
        out.cause = serializeError(err.cause);
    return out;
}
//# sourceMappingURL=logger.js.map