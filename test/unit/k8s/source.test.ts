import { describe, expect, it } from 'vitest';
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

  it('turns a client that cannot be built into a ConfigError naming the section, and keeps a ConfigError as it is', () => {
    const e = kubeSettingError(new Error('not running in a Kubernetes pod: KUBERNETES_SERVICE_HOST is not set'));
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.message).toBe('kubernetes: not running in a Kubernetes pod: KUBERNETES_SERVICE_HOST is not set');
    const c = new ConfigError('kubernetes.caFile x: ENOENT');
    expect(kubeSettingError(c)).toBe(c);
  });
});
