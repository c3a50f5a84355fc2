/**
 * Text from certificates and the places they were found in (SPIFFE IDs, DNS names, file and Secret
 * names), made safe to print on a terminal. Anyone who can write a certificate or name a file that
 * discovery reads chooses those characters: an escape sequence among them could erase or forge
 * rows of a listing (hide an expiring certificate) or drive the terminal. Control characters (C0,
 * DEL, C1) and the bidirectional overrides that reorder what is shown are written as \u{XXXX};
 * everything else is printed as it is. JSON output needs none of this: JSON escapes them itself.
 */
// eslint-disable-next-line no-control-regex -- control characters are what it finds
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

export function forTerminal(text: string): string {
  return text.replace(UNSAFE, (c) => `\\u{${c.charCodeAt(0).toString(16).padStart(4, '0')}}`);
}
