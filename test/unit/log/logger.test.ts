/**
 * The stdout logger as a process uses it: buffered lines, multi-byte text, redaction, and
 * nothing lost when the process exits at once (flushLogs runs on exit).
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

function runScript(body: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const script = `import { createLogger } from './src/log/logger.ts';\n${body}`;
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: ROOT, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe('createLogger to stdout', () => {
  it('writes every line, in order and whole, even when the process exits right after logging', async () => {
    const n = 5000;
    const r = await runScript(`
      const log = createLogger('info');
      for (let i = 0; i < ${n}; i++) log.info({ i, note: i % 3 ? 'é 证书 🔐' : 'plain', token: 'secret-' + i }, 'line');
      process.exit(0);
    `);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const lines = r.stdout.split('\n').filter(Boolean);
    expect(lines).toHaveLength(n);
    lines.forEach((l, i) => {
      const o = JSON.parse(l) as { i: number; note: string; token: string; msg: string };
      expect(o.i).toBe(i);
      expect(o.note).toBe(i % 3 ? 'é 证书 🔐' : 'plain');
      expect(o.token).toBe('[redacted]');
    });
    expect(r.stdout).not.toContain('secret-');
  });

  it('logs errors by type, code and message, without the stack', async () => {
    const r = await runScript(`
      const log = createLogger('info');
      const e = Object.assign(new Error('disk full', { cause: new RangeError('inner') }), { code: 'ENOSPC' });
      log.error({ err: e }, 'write failed');
    `);
    const o = JSON.parse(r.stdout.trim()) as { err: Record<string, unknown> };
    expect(o.err).toEqual({ type: 'Error', message: 'disk full', code: 'ENOSPC', cause: { type: 'RangeError', message: 'inner' } });
    expect(r.stdout).not.toMatch(/\bat .*:\d+:\d+/);
  });
});
