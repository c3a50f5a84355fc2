/**
 * A serial number's hex as meshcert reports and stores it: lowercase, without leading zeros ("0"
 * for zero). OpenSSL and Node's X509Certificate.serialNumber print whole octets instead, so a
 * serial whose first octet is below 0x10 (every serial meshcert issues: they start with the time)
 * reads "01…" there and "1…" here.
 */
export function serialHex(hex: string): string {
  return hex.toLowerCase().replace(/^0+(?=.)/, '');
}
