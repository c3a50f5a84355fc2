import { describe, expect, it } from 'vitest';
import { istiodDnsNames } from '../../../src/config/istiod-names.js';

describe('istiodDnsNames', () => {
  it('names istiod and each revision, short and namespaced, plus the cluster domain when given', () => {
    expect(istiodDnsNames('istio-system')).toEqual(['istiod', 'istiod.istio-system', 'istiod.istio-system.svc']);
    expect(istiodDnsNames('mesh', { revisions: ['default', '1-22', ''], clusterDomain: 'cluster.local', extraDnsNames: ['istiod.example.com'] })).toEqual([
      'istiod',
      'istiod-1-22',
      'istiod-1-22.mesh',
      'istiod-1-22.mesh.svc',
      'istiod-1-22.mesh.svc.cluster.local',
      'istiod.example.com',
      'istiod.mesh',
      'istiod.mesh.svc',
      'istiod.mesh.svc.cluster.local',
    ]);
  });
});
