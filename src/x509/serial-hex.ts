/**
 * A serial number's hex as meshcert reports and stores it: lowercase, without leading zeros ("0"
 * for zero). OpenSSL and Node's X509Certificate.serialNumber print whole octets instead, so a
 * serial whose first octet is below 0x10 (every serial meshcert issues: they start with the time)
 * reads "01…" there and "1…" here.
 */
export function serialHex(hex: string): string {
  return hex.toLowerCase().replace(/^0+(?=.)/, '');
}

/** Hex as a person typed or copied it (a serial, a fingerprint): lowercase, without ':' separators, whitespace or a 0x prefix. */
export function typedHex(text: string): string {
  let k = String(text).trim().toLowerCase().replace(/[:\s]/g, '');
  if (k.startsWith('0x')) k = k.slice(2);
  return k;
}

/** Why a lookup key is refused (certificateKey gave null). */
export const NOT_A_CERTIFICATE_KEY = 'a certificate is looked up by its serial or SHA-256 fingerprint (hex)';

/** A serial or fingerprint as typed, in typedHex's form, or null when it is not one (not hex, or longer than any). */
export function certificateKey(text: string): string | null {
  const k = typedHex(text);
  return /^[0-9a-f]{1,128}$/.test(k) ? k : null;
}

/** A serial as meshcert writes it (serialHex), from any form typedHex accepts. */
export function canonicalSerial(serial: string): string {
  return serialHex(typedHex(serial));
}
