import { describe, expect, it } from 'vitest';
import { policySchema, type PolicyInput } from '../../../src/policy/schema.js';
import { policyWarnings } from '../../../src/policy/warnings.js';
import { EXAMPLE_POLICY } from '../../fixtures/policy.js';

const warnings = (input: PolicyInput, clusters = ['Kubernetes', 'east']): string[] => policyWarnings(policySchema.parse(input), clusters);

describe('policyWarnings: rules that are valid but cannot do what they say', () => {
  it('names the rules after one that matches every request', () => {
    expect(warnings({ rules: [{ name: 'first', match: { namespaces: ['a'] }, deny: 'no' }, { name: 'all', match: { namespaces: ['*'] } }, { name: 'deny-ks', match: { namespaces: ['kube-system'] }, deny: 'no' }, { name: 'late' }] })).toEqual([
      'policy rules "deny-ks", "late" can never apply: rule "all" before them matches every request (the first rule that matches decides)',
    ]);
    // Last, it shadows nothing; a field that can refuse a request keeps it from matching everything.
    expect(warnings({ rules: [{ name: 'a', match: { namespaces: ['x'] } }, { name: 'all' }] })).toEqual([]);
    // A glob narrower than "*" can refuse a request.
    expect(warnings({ rules: [{ name: 'prod', match: { namespaces: ['prod-*'] } }, { name: 'b' }] })).toEqual([]);
    expect(warnings({ rules: [{ name: 'certs', match: { authenticatedBy: 'client-certificate' } }, { name: 'b', match: { impersonated: true } }, { name: 'c' }] })).toEqual([]);
  });

  it('names a clusters pattern that matches no cluster served, with the name in another case', () => {
    expect(warnings({ rules: [{ name: 'r', match: { clusters: ['kubernetes', 'east', 'west-*'] }, deny: 'no' }] })).toEqual([
      'policy rule "r": clusters pattern "kubernetes" matches none of the clusters this CA serves ("Kubernetes", "east"); names are case-sensitive: did you mean "Kubernetes"?',
      'policy rule "r": clusters pattern "west-*" matches none of the clusters this CA serves ("Kubernetes", "east")',
    ]);
    expect(warnings({ rules: [{ name: 'r', match: { clusters: ['e*'] }, deny: 'no' }] })).toEqual([]);
  });

  it('has nothing to say about the example policy', () => {
    expect(policyWarnings(policySchema.parse(EXAMPLE_POLICY), ['Kubernetes'])).toEqual([]);
  });
});
