/** The bench refuses options it cannot honour before it starts anything (exit 2, saying which). */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '../../..');

function bench(...args: string[]) {
  return spawnSync(join(ROOT, 'node_modules/.bin/tsx'), [join(ROOT, 'bench/run.ts'), '--skip-build', ...args], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
}

describe('bench options', () => {
  it('refuses a --max-concurrent-streams outside 1..10000', () => {
    for (const v of ['0', '1.5', '10001', 'many']) {
      const r = bench(`--max-concurrent-streams=${v}`);
      expect(r.status).toBe(2);
      expect(r.stderr).toContain(`--max-concurrent-streams must be a whole number from 1 to 10000 (got ${v})`);
    }
  });

  it('refuses a --max-connections outside 0..1000000 (0: no limit, as in the config)', () => {
    for (const v of ['-1', '2.5', '1000001']) {
      const r = bench(`--max-connections=${v}`);
      expect(r.status).toBe(2);
      expect(r.stderr).toContain(`--max-connections must be a whole number from 0 to 1000000 (got ${v})`);
    }
  });

  it('refuses --node-options that are not node options (a script would run instead of meshcert)', () => {
    const r = bench('--node-options=--max-old-space-size=96 other.js');
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('--node-options takes node options only, each as --name or --name=value (got "other.js")');
  });
});
