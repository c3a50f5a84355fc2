import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { status } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { CA_ERROR_CODES, CaError, ConfigError, type CaErrorCode } from '../../../src/errors/ca-error.js';
import { GRPC_STATUS, toGrpcFailure } from '../../../src/grpc/status.js';

const README = fileURLToPath(new URL('../../../README.md', import.meta.url));

/** The status each code must map to (PROTOCOL/STYLE tables; istio-agent retries only UNAVAILABLE-like codes). */
const EXPECTED: Record<CaErrorCode, status> = {
  AUTH_MISSING: status.UNAUTHENTICATED,
  AUTH_INVALID: status.UNAUTHENTICATED,
  IMPERSONATION_DENIED: status.UNAUTHENTICATED,
  IDENTITY_MISMATCH: status.PERMISSION_DENIED,
  POLICY_DENIED: status.PERMISSION_DENIED,
  CSR_MALFORMED: status.INVALID_ARGUMENT,
  CSR_BAD_SIGNATURE: status.INVALID_ARGUMENT,
  CSR_UNSUPPORTED_KEY: status.INVALID_ARGUMENT,
  CSR_FORBIDDEN_EXTENSION: status.INVALID_ARGUMENT,
  TTL_INVALID: status.INVALID_ARGUMENT,
  REQUEST_TOO_LARGE: status.RESOURCE_EXHAUSTED,
  NOT_READY: status.UNAVAILABLE,
  AUTH_BACKEND_UNAVAILABLE: status.UNAVAILABLE,
  ISSUER_UNAVAILABLE: status.UNAVAILABLE,
  OVERLOADED: status.UNAVAILABLE,
  RATE_LIMITED: status.RESOURCE_EXHAUSTED,
  ISSUER_FAILED: status.INTERNAL,
  CANCELLED: status.CANCELLED,
  INTERNAL: status.INTERNAL,
};

describe('GRPC_STATUS', () => {
  it('maps exactly the known codes', () => {
    expect(Object.keys(GRPC_STATUS).sort()).toEqual([...CA_ERROR_CODES].sort());
  });

  it.each(CA_ERROR_CODES.map((code) => [code, status[EXPECTED[code]]] as const))('maps %s to %s', (code) => {
    expect(GRPC_STATUS[code]).toBe(EXPECTED[code]);
    expect(Number.isInteger(GRPC_STATUS[code])).toBe(true);
    expect(GRPC_STATUS[code]).not.toBe(status.OK);
    expect(GRPC_STATUS[code]).not.toBe(status.UNKNOWN);
  });
});

describe('toGrpcFailure', () => {
  it.each(CA_ERROR_CODES.map((code) => [code] as const))('turns a CaError %s into its status, message and reason', (code) => {
    const failure = toGrpcFailure(new CaError(code, `the caller can fix ${code}`));
    expect(failure).toEqual({ code: GRPC_STATUS[code], details: `the caller can fix ${code}`, reason: code });
  });

  it.each<[string, unknown]>([
    ['a plain Error', new Error('secret path /etc/meshcert/ca-key.pem')],
    ['a TypeError', new TypeError("Cannot read properties of undefined (reading 'token')")],
    ['a ConfigError', new ConfigError('ca-key.pem does not match')],
    ['an error with a gRPC-like numeric code', Object.assign(new Error('leaky'), { code: status.NOT_FOUND })],
    ['an error with a string code', Object.assign(new Error('connect ECONNREFUSED 10.0.0.1:443'), { code: 'ECONNREFUSED' })],
    ['an object shaped like a CaError', { name: 'CaError', code: 'AUTH_INVALID', message: 'looks like one' }],
    ['a string', 'boom'],
    ['null', null],
    ['undefined', undefined],
  ])('turns %s into INTERNAL "internal error"', (_name, err) => {
    expect(toGrpcFailure(err)).toEqual({ code: status.INTERNAL, details: 'internal error', reason: 'INTERNAL' });
  });

  it('never sends the message or cause of a non-CaError', () => {
    const err = new Error('token=eyJhbGciOi...', { cause: new Error('inner secret') });
    const failure = toGrpcFailure(err);
    expect(failure.details).toBe('internal error');
    expect(JSON.stringify(failure)).not.toContain('eyJ');
    expect(JSON.stringify(failure)).not.toContain('inner secret');
  });
});

describe('README error table', () => {
  it('exists at the repository root', () => {
    expect(existsSync(README), `${README} is missing: it must hold the error table`).toBe(true);
  });

  it.each(CA_ERROR_CODES.map((code) => [code] as const))('lists %s in a table row', (code) => {
    const text = existsSync(README) ? readFileSync(README, 'utf8') : '';
    const rows = text.split('\n').filter((line) => line.trimStart().startsWith('|'));
    expect(rows.some((row) => row.includes(`\`${code}\``)), `no README table row contains \`${code}\``).toBe(true);
  });

  it.each(CA_ERROR_CODES.map((code) => [code, status[GRPC_STATUS[code]]] as const))('gives %s the status %s in its README row', (code, name) => {
    const text = existsSync(README) ? readFileSync(README, 'utf8') : '';
    const row = text.split('\n').find((line) => line.trimStart().startsWith(`| \`${code}\` |`));
    expect(row, `no README table row starts with \`${code}\``).toBeDefined();
    expect(row!.split('|').map((cell) => cell.trim())[2]).toBe(name);
  });
});
