import { utimesSync } from 'node:fs';
import { join } from 'node:path';

/** Dates a CA directory's creation marker an hour back: a creation killed a while ago, not one still running. */
export function ageCreationMarker(dir: string): void {
  const then = (Date.now() - 3600_000) / 1000;
  utimesSync(join(dir, '.meshcert-creating'), then, then);
}
