/**
 * The state of a root rotation, as `<dir>/rotation.json` records it (see rotate.ts). Apart from
 * rotate.ts so that loading a CA directory (material.ts) can read it without loading the
 * certificate builders.
 */
import { join } from 'node:path';
import { z } from 'zod';
import { ConfigError } from '../errors/ca-error.js';
import { readCaTextIfPresent, ROTATION_FILE, writeFileAtomic } from './files.js';

const certSummarySchema = z.strictObject({
  subject: z.string(),
  fingerprint256: z.string(),
  notBefore: z.string(),
  notAfter: z.string(),
});
export type CertSummary = z.infer<typeof certSummarySchema>;

const stateSchema = z.strictObject({
  version: z.literal(1),
  /** started → switching → switched → finishing → (rotation.json removed). */
  step: z.enum(['started', 'switching', 'switched', 'finishing']),
  startedAt: z.string(),
  /** How long `switch` waits after `start` (so every workload has received {old, new}). */
  minWaitSeconds: z.number().int().nonnegative(),
  switchAllowedAt: z.string(),
  oldRoot: certSummarySchema,
  newRoot: certSummarySchema,
  oldIntermediate: certSummarySchema,
  newIntermediate: certSummarySchema,
  switchedAt: z.string().optional(),
  switchForced: z.boolean().optional(),
  /** The longest lifetime a leaf signed by the old intermediate may have (recorded at switch). */
  maxLeafLifetimeSeconds: z.number().int().nonnegative().optional(),
  /** Set when a re-run of switch shortened it (--force): finish's wait is then the operator's word. */
  maxLeafLifetimeForced: z.boolean().optional(),
  finishAllowedAt: z.string().optional(),
  finishingAt: z.string().optional(),
  finishForced: z.boolean().optional(),
  /** Directory name under archive/ that `finish` writes. */
  archive: z.string().optional(),
});
export type RotationState = z.infer<typeof stateSchema>;
export type RotationStep = RotationState['step'];

export function rotationFile(dir: string): string {
  return join(dir, ROTATION_FILE);
}

/** The rotation in progress in `dir`, or undefined when there is none. */
export function readRotationState(dir: string): RotationState | undefined {
  const path = rotationFile(dir);
  const text = readCaTextIfPresent(path);
  if (text === undefined) return undefined;
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new ConfigError(`${path} is not valid JSON; it records the CA rotation in progress: restore it or inspect the directory by hand`);
  }
  const parsed = stateSchema.safeParse(raw);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    throw new ConfigError(`${path} is not a valid rotation state (${first ? `${first.path.join('.') || 'top level'}: ${first.message}` : 'unknown problem'})`);
  }
  return parsed.data;
}

export function writeRotationState(dir: string, state: RotationState): void {
  writeFileAtomic(rotationFile(dir), `${JSON.stringify(stateSchema.parse(state), null, 2)}\n`);
}
