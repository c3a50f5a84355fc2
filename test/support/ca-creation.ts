import { utimesSync } from 'node:fs';
import { join } from 'node:path';
import { CREATION_FRESH_MS } from '../../src/ca/files.js';

/** Dates a CA directory's creation marker past CREATION_FRESH_MS: a creation killed a while ago, not one still running. */
export function ageCreationMarker(dir: string): void {
  const then = (Date.now() - 2 * CREATION_FRESH_MS) / 1000;
  utimesSync(join(dir, '.meshcert-creating'), then, then);
}
