import { resolve } from 'node:path';
import { initCaDir } from '../ca/init.js';
import { loadCaDir } from '../ca/material.js';
import { parse, UsageError } from './args.js';

const KEY_TYPES = ['ec256', 'ec384', 'rsa2048', 'rsa3072', 'rsa4096'] as const;

export const CA_USAGE = `meshcert ca init --dir DIR [--key-type ec256|ec384|rsa2048|rsa3072|rsa4096] [--org NAME]
  Creates a root (10 years) and an intermediate (1 year) in Istio's cacerts layout; key files are 0600.
meshcert ca check --dir DIR
  Loads a CA directory and reports whether meshcert would accept it.`;

export async function caCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === 'init') {
    const { values: v } = parse(rest, { dir: { type: 'string' }, 'key-type': { type: 'string', default: 'ec256' }, org: { type: 'string', default: 'meshcert' } });
    if (!v.dir) throw new UsageError('ca init needs --dir');
    if (!(KEY_TYPES as readonly string[]).includes(v['key-type']!)) throw new UsageError(`--key-type must be one of ${KEY_TYPES.join(', ')}`);
    const dir = resolve(v.dir);
    const m = await initCaDir({ dir, keyType: v['key-type'] as (typeof KEY_TYPES)[number], organization: v.org! });
    console.log(`created a CA in ${dir}`);
    console.log(`  root          ${m.roots[0]!.subject.replace(/\n/g, ', ')} (until ${new Date(m.roots[0]!.validTo).toISOString()})`);
    console.log(`  intermediate  ${m.signingCert.subject.replace(/\n/g, ', ')} (until ${new Date(m.signingCert.validTo).toISOString()})`);
    console.log('  files         ca-cert.pem, ca-key.pem (0600), cert-chain.pem, root-cert.pem, root-key.pem (0600)');
    console.log('  keep root-key.pem offline once the intermediate is in place; meshcert does not need it to serve');
    return 0;
  }
  if (sub === 'check') {
    const { values: v } = parse(rest, { dir: { type: 'string' } });
    if (!v.dir) throw new UsageError('ca check needs --dir');
    const m = loadCaDir(resolve(v.dir));
    console.log(`CA OK: signs as "${m.signingCert.subject.replace(/\n/g, ', ')}", ${m.intermediates.length} intermediate(s), ${m.roots.length} root(s), usable until ${m.notAfter.toISOString()}`);
    return 0;
  }
  throw new UsageError(`unknown ca subcommand ${sub ?? '(none)'}\n${CA_USAGE}`);
}
