import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

/**
 * JSON logs, one line per event. Redaction is belt-and-braces: call sites never pass tokens,
 * CSRs or keys, but if one slips into an `err` or request object it is censored here.
 */
export function createLogger(level: LevelWithSilent = 'info', destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      base: { service: 'meshcert' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: {
        paths: ['token', '*.token', 'authorization', '*.authorization', 'privateKey', '*.privateKey', 'key', '*.key', 'csr', '*.csr'],
        censor: '[redacted]',
      },
      serializers: { err: serializeError },
    },
    destination as pino.DestinationStream | undefined,
  );
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
