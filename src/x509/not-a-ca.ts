/**
 * Why a certificate Node does not take as a CA (`X509Certificate.ca`, OpenSSL's X509_check_ca)
 * falls short: its BasicConstraints, or a KeyUsage without keyCertSign, which OpenSSL (and Go,
 * for the leaves it signs) refuse alike. Said so that an operator re-issues the right thing.
 */
import type { X509Certificate } from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import { BasicConstraints, Certificate, id_ce_basicConstraints, id_ce_keyUsage, KeyUsage } from '@peculiar/asn1-x509';

export function notCaReason(c: X509Certificate): string {
  try {
    const extensions = AsnConvert.parse(c.raw, Certificate).tbsCertificate.extensions ?? [];
    const bc = extensions.find((e) => e.extnID === id_ce_basicConstraints);
    if (!bc || !AsnConvert.parse(bc.extnValue, BasicConstraints).cA) return 'BasicConstraints CA:true is missing';
    const ku = extensions.find((e) => e.extnID === id_ce_keyUsage);
    if (ku && !AsnConvert.parse(ku.extnValue, KeyUsage).toJSON().includes('keyCertSign')) return 'its KeyUsage lacks keyCertSign';
  } catch {
    // Only an explanation: an extension that does not parse is the reason then.
    return 'its extensions do not parse';
  }
  return 'OpenSSL does not take it as a CA';
}
