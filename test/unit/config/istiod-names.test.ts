import { describe, expect, it } from 'vitest';
import { istiodDnsNameOptions, istiodDnsNames } from '../../../src/config/istiod-names.js';

describe('istiodDnsNames', () => {
  it('names istiod and each revision, short and namespaced, istiod\'s other known Services, plus the cluster domain when given', () => {
    expect(istiodDnsNames('istio-system')).toEqual([
      'istio-pilot.istio-system.svc',
      'istiod',
      'istiod-remote.istio-system.svc',
      'istiod.istio-system',
      'istiod.istio-system.svc',
    ]);
    expect(istiodDnsNames('mesh', { revisions: ['default', '1-22', ''], clusterDomain: 'cluster.local', extraDnsNames: ['istiod.example.com'] })).toEqual([
      'istio-pilot.mesh.svc',
      'istiod',
      'istiod-1-22',
      'istiod-1-22.mesh',
      'istiod-1-22.mesh.svc',
      'istiod-1-22.mesh.svc.cluster.local',
      'istiod-remote.mesh.svc',
      'istiod.example.com',
      'istiod.mesh',
      'istiod.mesh.svc',
      'istiod.mesh.svc.cluster.local',
    ]);
  });

  it('takes istio.istiodTls\'s revisions and extraDnsNames from the config', () => {
    expect(istiodDnsNames('istio-system', istiodDnsNameOptions({ revisions: ['canary'], extraDnsNames: ['istiod.mesh.example.com'] }))).toEqual([
      'istio-pilot.istio-system.svc',
      'istiod',
      'istiod-canary',
      'istiod-canary.istio-system',
      'istiod-canary.istio-system.svc',
      'istiod-remote.istio-system.svc',
      'istiod.istio-system',
      'istiod.istio-system.svc',
      'istiod.mesh.example.com',
    ]);
  });
});
