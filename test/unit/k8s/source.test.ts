import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { fakeKubeTls } from '../../support/fake-kube.js';
import { parseConfig } from '../../../src/config/load.js';
import { ConfigError } from '../../../src/errors/ca-error.js';
import { kubeSettingError, kubeSource } from '../../../src/k8s/source.js';

describe('kubeSource and kubeSettingError', () => {
  it('names the setting of an unreadable kubernetes.caFile (serve stops with it, not with an "unexpected error")', () => {
    const config = parseConfig({ dev: { tokenIssuer: true }, kubernetes: { server: 'https://127.0.0.1:6443', caFile: '/nonexistent/kube-ca.crt' } }, {});
    let err: unknown;
    try {
      kubeSource(config);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toBe('kubernetes.caFile /nonexistent/kube-ca.crt: ENOENT');
  });

  it('checks kubernetes.caFile once, as an absolute path the client reads again for every request, and refuses a bundle TLS would trust nothing or too little from', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshcert-kube-source-'));
    try {
      const { caPem } = await fakeKubeTls();
      const cases: Array<[string, string, string | undefined]> = [
        ['ok.crt', caPem, undefined],
        ['empty.crt', '', 'holds no PEM certificate'],
        ['joined.crt', `${caPem.trimEnd()}${caPem}`, 'shares its line with other text'],
      ];
      for (const [name, text, problem] of cases) {
        writeFileSync(join(dir, name), text);
        const config = parseConfig({ dev: { tokenIssuer: true }, kubernetes: { server: 'https://127.0.0.1:6443', caFile: join(dir, name) } }, {});
        if (problem === undefined) {
          expect(kubeSource(config)).toEqual({ server: 'https://127.0.0.1:6443', caFile: join(dir, name) });
        } else {
          expect(() => kubeSource(config)).toThrow(ConfigError);
          expect(() => kubeSource(config)).toThrow(`kubernetes.caFile ${join(dir, name)}: `);
          expect(() => kubeSource(config)).toThrow(problem);
        }
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('turns a client that cannot be built into a ConfigError naming the section, and keeps a ConfigError as it is', () => {
    const e = kubeSettingError(new Error('not running in a Kubernetes pod: KUBERNETES_SERVICE_HOST is not set'));
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.message).toBe('kubernetes: not running in a Kubernetes pod: KUBERNETES_SERVICE_HOST is not set');
    const c = new ConfigError('kubernetes.caFile x: ENOENT');
    expect(kubeSettingError(c)).toBe(c);
  });
});
