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

/** The stdout writer (`boom`, flushed synchronously at exit) and what pino writes lines to. */
let stdout: { boom: ReturnType<typeof pino.destination>; lines: pino.DestinationStream } | undefined;

function stdoutDestination(): pino.DestinationStream {
  if (!stdout) {
    // Buffer mode, each line encoded once here: in string mode sonic-boom re-measures the whole
    // pending buffer's UTF-8 length on every line and encodes it again on every write (measured:
    // about 4 % of a worker's CPU per certificate at thousands of lines per second).
    const boom = pino.destination({ dest: 1, sync: false, minLength: 4096, contentMode: 'buffer' });
    const lines = {
      write: (line: string) => boom.write(Buffer.from(line) as unknown as string),
      // logger.flush() forwards here.
      flush: (cb?: (err?: Error) => void) => boom.flush(cb),
    };
    stdout = { boom, lines };
    // Whatever the exit path, write what is buffered.
    process.on('exit', () => flushLogs());
    const timer = setInterval(() => boom.flush(), 250);
    timer.unref();
  }
  return stdout.lines;
}

/** Writes buffered log lines now (synchronously). */
export function flushLogs(): void {
  try {
    stdout?.boom.flushSync();
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
