import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

/**
 * JSON logs, one line per event. Redaction is belt-and-braces: call sites never pass tokens,
 * CSRs or keys; the top-level names are censored should one slip in (top-level paths only:
 * wildcard redaction costs several percent of CPU at thousands of lines per second).
 *
 * Without an explicit destination, logs go to stdout through a buffered writer (a write per 4 KB,
 * not per line); `flushLogs` writes what is pending, and it is called before every exit.
 */
export function createLogger(level: LevelWithSilent = 'info', destination?: NodeJS.WritableStream): Logger {
  const dest = destination ?? stdoutDestination();
  return pino(
    {
      level,
      base: { service: 'meshcert' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: ['token', 'authorization', 'privateKey', 'csr'], censor: '[redacted]' },
      serializers: { err: serializeError },
    },
    dest as pino.DestinationStream,
  );
}

let stdout: ReturnType<typeof pino.destination> | undefined;
let stdoutLines: pino.DestinationStream | undefined;

function stdoutDestination(): pino.DestinationStream {
  if (!stdout) {
    // Buffer mode, each line encoded once here: in string mode sonic-boom re-measures the whole
    // pending buffer's UTF-8 length on every line and encodes it again on every write (measured:
    // about 4 % of a worker's CPU per certificate at thousands of lines per second).
    const sb = pino.destination({ dest: 1, sync: false, minLength: 4096, contentMode: 'buffer' });
    stdout = sb;
    const lines = {
      write: (line: string) => sb.write(Buffer.from(line) as unknown as string),
      // logger.flush() forwards here.
      flush: (cb?: (err?: Error) => void) => sb.flush(cb),
    };
    stdoutLines = lines;
    // Whatever the exit path, write what is buffered.
    process.on('exit', () => flushLogs());
    const timer = setInterval(() => sb.flush(), 250);
    timer.unref();
  }
  return stdoutLines!;
}

/** Writes buffered log lines now (synchronously). */
export function flushLogs(): void {
  try {
    stdout?.flushSync();
  } catch {
    // nothing left to write to
  }
}

/** Errors are logged by type, code and message only: stacks stay out of production logs. */
function serializeError(err: unknown): Record<string, unknown> {
  if (!(err instanceof Error)) return { message: String(err) };
  const out: Record<string, unknown> = { type: err.name, message: err.message };
  const code = (err as { code?: unknown }).code;
  if (code !== undefined) out.code = code;
  if (err.cause instanceof Error) out.cause = serializeError(err.cause);
  return out;
}
