import { X509Certificate } from 'node:crypto';

export interface PemBlock {
  /** What follows BEGIN, e.g. CERTIFICATE. */
  readonly label: string;
  /** Between the BEGIN and END lines (base64, headers, line breaks), as written. */
  readonly body: string;
  /** The block from its BEGIN line to its END line, inclusive. */
  readonly text: string;
}

/** A label as PEM writes them (RFC 7468 and OpenSSL's older ones: capitals, digits, spaces, #). */
const LABEL = /^[A-Z0-9 #]{1,64}$/;

/**
 * Every `-----BEGIN X-----` … `-----END X-----` block of `text`, in order, in linear time: a block
 * ends at the first END line after its BEGIN, and a BEGIN whose next END names another label is
 * no block (the next BEGIN is tried). Files and Secrets read by discovery are anyone's: a regex
 * with a lazy `[\s\S]*?` up to a matching END rescans to the end of the text for every BEGIN that
 * has none (minutes for a 10 MB file of BEGIN lines).
 */
export function pemBlocks(text: string): PemBlock[] {
  const blocks: PemBlock[] = [];
  // The next END line at or after some position, found once and reused by every BEGIN before it.
  let nextEnd = -2;
  const endAfter = (from: number): number => {
    if (nextEnd === -1 || nextEnd >= from) return nextEnd;
    nextEnd = text.indexOf('-----END ', from);
    return nextEnd;
  };
  let at = 0;
  for (;;) {
    const begin = text.indexOf('-----BEGIN ', at);
    if (begin < 0) break;
    const labelStart = begin + '-----BEGIN '.length;
    at = labelStart;
    const labelEnd = text.indexOf('-----', labelStart);
    if (labelEnd < 0) break;
    const label = text.slice(labelStart, labelEnd);
    if (!LABEL.test(label)) continue;
    const end = endAfter(labelEnd + 5);
    if (end < 0) break; // no END line after this BEGIN, so none after any later one
    const close = `${label}-----`;
    const endLabelStart = end + '-----END '.length;
    if (!text.startsWith(close, endLabelStart)) continue;
    const after = endLabelStart + close.length;
    blocks.push({ label, body: text.slice(labelEnd + 5, end), text: text.slice(begin, after) });
    at = after;
  }
  return blocks;
}

/** Splits a PEM bundle into one normalised PEM string per certificate, each ending with "\n". */
export function splitPemCertificates(pem: string): string[] {
  return certificateTexts(pemBlocks(pem));
}

/** Parses every certificate of a PEM bundle; throws when a block is not a certificate. */
export function parsePemBundle(pem: string): X509Certificate[] {
  return certificatesOf(pemBlocks(pem));
}

function certificateTexts(blocks: readonly PemBlock[]): string[] {
  return blocks.filter((b) => b.label === 'CERTIFICATE').map((b) => `${b.text.trim()}\n`);
}

function certificatesOf(blocks: readonly PemBlock[]): X509Certificate[] {
  return certificateTexts(blocks).map((p) => new X509Certificate(p));
}

/** A PEM body's base64 once its whitespace is gone (RFC 7468 strict: no headers). */
export const PEM_BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** A BEGIN or END line of a PEM block (RFC 7468), found wherever it sits in a line. */
const ARMOR_LINE = /-----(BEGIN|END) [A-Z0-9 #]{1,64}-----/g;
/** Nothing but blanks up to the end of the line or text (OpenSSL strips a line's trailing whitespace). */
const BLANKS_TO_EOL = /[ \t\v\f\r]*(?:\n|$)/y;

/**
 * Why Node's TLS would not trust every certificate of a CA bundle, or undefined (checked against
 * openssl and Node's TLS). Node takes an empty or half-written bundle silently and trusts nothing.
 * OpenSSL's PEM reader reads the blocks in order: it finds a BEGIN or END line only at the start of
 * a line (blanks after it are fine), so a bundle concatenated without a newline between two
 * certificates ("-----END CERTIFICATE----------BEGIN CERTIFICATE-----"), or indented, loses a
 * certificate; and it stops at a block it cannot read (a BEGIN without its END, a block of another
 * kind that is not base64), so every certificate after that is lost.
 */
export function caBundleProblem(bundle: string): string | undefined {
  // A byte-order mark, as Windows editors save: OpenSSL skips it.
  const pem = bundle.charCodeAt(0) === 0xfeff ? bundle.slice(1) : bundle;
  const blocks = pemBlocks(pem);
  let certificates: X509Certificate[];
  try {
    certificates = certificatesOf(blocks);
  } catch (err) {
    return `a CERTIFICATE block does not parse: ${(err as Error).message}`;
  }
  if (certificates.length === 0) return 'holds no PEM certificate';
  const lineOf = (index: number): number => pem.slice(0, index).split('\n').length;
  let begins = 0;
  for (const m of pem.matchAll(ARMOR_LINE)) {
    if (m[1] === 'BEGIN') begins++;
    BLANKS_TO_EOL.lastIndex = m.index + m[0].length;
    if ((m.index > 0 && pem[m.index - 1] !== '\n') || !BLANKS_TO_EOL.test(pem)) {
      return `line ${lineOf(m.index)}: "${m[0]}" shares its line with other text, and OpenSSL would skip the certificate; put it on a line of its own`;
    }
  }
  if (begins > blocks.length) return 'a BEGIN line has no matching END line: OpenSSL stops reading there, and the certificates after it are not trusted';
  for (const b of blocks) {
    // RFC 1421 headers (Proc-Type: ...) are OpenSSL's to read; anything else must be base64.
    if (b.label === 'CERTIFICATE' || b.body.includes(':')) continue;
    if (!PEM_BASE64.test(b.body.replace(/\s+/g, ''))) {
      return `line ${lineOf(pem.indexOf(b.text))}: the ${b.label} block is not base64: OpenSSL stops reading there, and the certificates after it are not trusted`;
    }
  }
  return undefined;
}

export function certToPem(cert: X509Certificate): string {
  return cert.toString().endsWith('\n') ? cert.toString() : `${cert.toString()}\n`;
}
