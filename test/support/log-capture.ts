/** A logger whose lines are kept, parsed, for tests that assert what was logged. */
import { Writable } from 'node:stream';
import { createLogger, type Logger } from '../../src/log/logger.js';

export interface CapturedLogs {
  readonly logger: Logger;
  /** Every line written so far (pino writes them asynchronously: await a tick or flush first). */
  readonly lines: Array<Record<string, unknown>>;
}

export function captureLogs(level: Parameters<typeof createLogger>[0] = 'info'): CapturedLogs {
  const lines: Array<Record<string, unknown>> = [];
  return { lines, logger: createLogger(level, new Writable({ write: (c: Buffer, _e, cb) => (lines.push(JSON.parse(c.toString()) as Record<string, unknown>), cb()) })) };
}
