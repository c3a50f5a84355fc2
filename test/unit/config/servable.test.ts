import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config/load.js';
import type { ConfigInput } from '../../../src/config/schema.js';
import { assertServable, servabilityProblems } from '../../../src/config/servable.js';
import { ConfigError } from '../../../src/errors/ca-error.js';

const problems = (input: ConfigInput): string[] => servabilityProblems(parseConfig(input, {}));

describe('servabilityProblems', () => {
  it('accepts a cluster with an authenticator, and the dev issuer alone', () => {
    expect(problems({ auth: { clusters: [{ name: 'k', tokenReview: {} }] } })).toEqual([]);
    expect(problems({ dev: { tokenIssuer: true } })).toEqual([]);
  });

  it('refuses a config with no authentication, as serve refuses it at start', () => {
    expect(problems({})).toEqual([expect.stringMatching(/^auth\.clusters: no authentication configured/)]);
  });

  it('refuses a cluster with no authenticator only when client certificates are off', () => {
    const bare = { name: 'k' };
    expect(problems({ auth: { clusters: [bare] } })).toEqual([]);
    expect(problems({ auth: { clientCertificates: false, defaultCluster: 'j', clusters: [{ name: 'j', tokenReview: {} }, bare] } })).toEqual([
      'auth.clusters.1: cluster "k" has no authenticator: add jwt issuers or tokenReview',
    ]);
  });

  it('counts the dev token issuer as the default cluster\'s authenticator', () => {
    expect(problems({ dev: { tokenIssuer: true }, auth: { clientCertificates: false, clusters: [{ name: 'Kubernetes', trustDomain: 'example.org' }] } })).toEqual([]);
    expect(problems({ dev: { tokenIssuer: true }, auth: { clientCertificates: false, clusters: [{ name: 'other' }] } })).toHaveLength(1);
  });

  it('assertServable throws a ConfigError naming the source and every problem', () => {
    const config = parseConfig({ auth: { clientCertificates: false } }, {});
    expect(() => assertServable(config, '/etc/m.yaml')).toThrow(ConfigError);
    expect(() => assertServable(config, '/etc/m.yaml')).toThrow(/^\/etc\/m\.yaml cannot be served:\n {2}- auth\.clusters: no authentication/);
  });
});
