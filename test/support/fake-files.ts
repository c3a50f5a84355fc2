/** A filesystem of the given files (path to text); anything else is missing (ENOENT). */
export const files =
  (f: Record<string, string>) =>
  (path: string): string => {
    if (!(path in f)) throw Object.assign(new Error(`ENOENT: ${path}`), { code: 'ENOENT' });
    return f[path]!;
  };
