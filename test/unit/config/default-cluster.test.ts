import { describe, expect, it } from 'vitest';
import { certificateCluster } from '../../../src/config/default-cluster.js';
import { parseConfig } from '../../../src/config/load.js';
import type { ConfigInput } from '../../../src/config/schema.js';

type ClusterInput = NonNullable<NonNullable<ConfigInput['auth']>['clusters']>[number];
const cluster = (name: string, trustDomain?: string): ClusterInput => ({ name, jwt: [{ issuer: `https://${name}.test`, jwksFile: '/dev/null' }], ...(trustDomain ? { trustDomain } : {}) });
const config = (clusters: ClusterInput[]) => parseConfig({ trustDomain: 'cluster.local', trustDomainAliases: ['old.local'], auth: { clusters } }, {}, 'test');

describe('certificateCluster: the cluster a client certificate names through its trust domain', () => {
  it('is the only cluster served, whatever the trust domain', () => {
    const c = config([cluster('Kubernetes')]);
    expect(certificateCluster(c, ['Kubernetes'], 'cluster.local')).toBe('Kubernetes');
    expect(certificateCluster(c, ['Kubernetes'], 'east.local')).toBe('Kubernetes');
  });

  it('is the one cluster of that trust domain (an alias counts as the mesh domain), none when several or none share it', () => {
    const c = config([cluster('Kubernetes'), cluster('east', 'east.local')]);
    const served = ['Kubernetes', 'east'];
    expect(certificateCluster(c, served, 'east.local')).toBe('east');
    expect(certificateCluster(c, served, 'cluster.local')).toBe('Kubernetes');
    expect(certificateCluster(c, served, 'old.local')).toBe('Kubernetes');
    expect(certificateCluster(c, served, 'west.local')).toBeUndefined();
    // A cluster whose own trust domain is the alias is that alias's cluster, not the mesh domain's.
    const aliased = config([cluster('Kubernetes'), cluster('old', 'old.local')]);
    expect(certificateCluster(aliased, ['Kubernetes', 'old'], 'old.local')).toBe('old');
    const shared = config([cluster('Kubernetes'), cluster('west')]);
    expect(certificateCluster(shared, ['Kubernetes', 'west'], 'cluster.local')).toBeUndefined();
  });
});
