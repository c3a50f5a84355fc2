/**
 * Property-based fuzzing: whatever the bytes or text, the parser returns or throws a CaError,
 * quickly. Any other exception (TypeError, RangeError, OpenSSL errors...) is a bug.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { CaError } from '../../../src/errors/ca-error.js';
import { parseCsrDer, parseCsrPem } from '../../../src/csr/parse.js';
import { derToPem, makeCsr } from '../../fixtures/csr.js';

const RUNS = 2000;

/** Runs fn; returns 'ok' or the CaError code, rethrows anything else. */
function outcome(fn: () => unknown): string {
  try {
    fn();
    return 'ok';
  } catch (err) {
    if (err instanceof CaError) return err.code;
    throw err;
  }
}

type Mutation =
  | { kind: 'flip'; at: number; bit: number }
  | { kind: 'set'; at: number; value: number }
  | { kind: 'truncate'; at: number }
  | { kind: 'insert'; at: number; bytes: Uint8Array }
  | { kind: 'delete'; at: number; count: number };

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant('set' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }) }),
  fc.record({ kind: fc.constant('delete' as const), at: fc.nat(), count: fc.integer({ min: 1, max: 8 }) }),
);

function mutate(input: Buffer, mutations: Mutation[]): Buffer {
  let buf = Buffer.from(input);
  for (const m of mutations) {
    if (buf.length === 0) break;
    const at = m.at % buf.length;
    switch (m.kind) {
      case 'flip':
        buf[at] = buf[at]! ^ (1 << m.bit);
        break;
      case 'set':
        buf[at] = m.value;
        break;
      case 'truncate':
        buf = buf.subarray(0, at);
        break;
      case 'insert':
        buf = Buffer.concat([buf.subarray(0, at), m.bytes, buf.subarray(at)]);
        break;
      case 'delete':
        buf = Buffer.concat([buf.subarray(0, at), buf.subarray(at + m.count)]);
        break;
    }
  }
  return buf;
}

describe('CSR parser fuzzing', () => {
  const samples: { name: string; der: Buffer; pem: string }[] = [];
  beforeAll(async () => {
    const ec = await makeCsr({ key: 'ec256', dns: ['a.example'], ips: ['10.0.0.1'], cn: 'x', keyCertSign: true });
    const rsa = await makeCsr({ key: 'rsa2048' });
    samples.push({ name: 'ec', der: ec.der, pem: ec.pem }, { name: 'rsa', der: rsa.der, pem: rsa.pem });
  });

  it('returns or throws a CaError for arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2048 }), (bytes) => {
        outcome(() => parseCsrDer(Buffer.from(bytes)));
      }),
      { numRuns: RUNS },
    );
  });

  it('returns or throws a CaError for arbitrary bytes that start like a CSR', () => {
    const prefix = fc.constantFrom(Buffer.from([0x30, 0x82]), Buffer.from([0x30, 0x81]), Buffer.from([0x30, 0x82, 0x01, 0x00, 0x30, 0x81]));
    fc.assert(
      fc.property(prefix, fc.uint8Array({ maxLength: 600 }), (p, rest) => {
        outcome(() => parseCsrDer(Buffer.concat([p, rest])));
      }),
      { numRuns: RUNS / 2 },
    );
  });

  it('returns or throws a CaError for arbitrary mutations of a valid CSR in DER and PEM', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1 }), fc.array(mutationArb, { minLength: 1, maxLength: 4 }), (which, mutations) => {
        const sample = samples[which]!;
        const mutated = mutate(sample.der, mutations);
        const a = outcome(() => parseCsrDer(mutated));
        const b = outcome(() => parseCsrPem(derToPem(mutated)));
        // Same verdict whether the bytes arrive as DER or PEM.
        expect(b).toBe(a);
      }),
      { numRuns: RUNS },
    );
  });

  it('never accepts a CSR with a single flipped bit', () => {
    // The samples themselves parse: a refusal of the flipped ones says something.
    for (const { der } of samples) expect(outcome(() => parseCsrDer(der))).toBe('ok');
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1 }), fc.nat(), fc.integer({ min: 0, max: 7 }), (which, at, bit) => {
        const { der } = samples[which]!;
        const mutated = mutate(der, [{ kind: 'flip', at, bit }]);
        expect(outcome(() => parseCsrDer(mutated))).not.toBe('ok');
      }),
      { numRuns: RUNS },
    );
  });

  it('returns or throws a CaError for arbitrary edits of the PEM text', () => {
    const edit = fc.record({ at: fc.nat(), remove: fc.integer({ min: 0, max: 4 }), text: fc.string({ maxLength: 6 }) });
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1 }), fc.array(edit, { minLength: 1, maxLength: 3 }), (which, edits) => {
        let pem = samples[which]!.pem;
        for (const e of edits) {
          const at = e.at % (pem.length + 1);
          pem = pem.slice(0, at) + e.text + pem.slice(at + e.remove);
        }
        outcome(() => parseCsrPem(pem));
      }),
      { numRuns: RUNS },
    );
  });

  it('returns or throws a CaError for arbitrary strings', () => {
    const text = fc.oneof(
      fc.string({ maxLength: 300 }),
      fc.string({ unit: 'binary', maxLength: 300 }),
      fc.string({ maxLength: 300 }).map((s) => `-----BEGIN CERTIFICATE REQUEST-----\n${s}\n-----END CERTIFICATE REQUEST-----\n`),
      fc.base64String({ maxLength: 400 }).map((s) => `-----BEGIN CERTIFICATE REQUEST-----\n${s}\n-----END CERTIFICATE REQUEST-----\n`),
    );
    fc.assert(
      fc.property(text, (s) => {
        outcome(() => parseCsrPem(s));
      }),
      { numRuns: RUNS },
    );
  });
});
