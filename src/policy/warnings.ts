import { PatternSet } from '../match/glob.js';
import type { Policy, RuleMatch } from './schema.js';

/** Whether a match list lets every value through (absent, or a `*` in it). */
const open = (list: readonly string[] | undefined): boolean => list === undefined || list.includes('*');

/** Whether `match` matches every request: no field that can refuse one. */
function matchesEverything(m: RuleMatch): boolean {
  return open(m.trustDomains) && open(m.clusters) && open(m.namespaces) && open(m.serviceAccounts) && m.impersonated === undefined && (m.authenticatedBy === undefined || m.authenticatedBy.length === 2);
}

/**
 * Rules that are valid but cannot do what they say: those after a rule that matches every request
 * (first match wins: they never apply), and `clusters` patterns that match none of the clusters
 * this CA serves (a caller is always one of them: the rule never applies to anyone, and a deny
 * written so denies nothing). Said at load and by `config check`, as warnings.
 */
export function policyWarnings(policy: Policy, servedClusters: readonly string[]): string[] {
  const out: string[] = [];
  const catchAll = policy.rules.findIndex((r) => matchesEverything(r.match));
  if (catchAll !== -1 && catchAll < policy.rules.length - 1) {
    const unreachable = policy.rules.slice(catchAll + 1).map((r) => `"${r.name}"`);
    out.push(`policy rule${unreachable.length > 1 ? 's' : ''} ${unreachable.join(', ')} can never apply: rule "${policy.rules[catchAll]!.name}" before ${unreachable.length > 1 ? 'them' : 'it'} matches every request (the first rule that matches decides)`);
  }
  for (const r of policy.rules) {
    for (const p of r.match.clusters ?? []) {
      const pattern = new PatternSet([p]);
      if (servedClusters.some((c) => pattern.test(c))) continue;
      const other = servedClusters.find((c) => c.toLowerCase() === p.toLowerCase());
      out.push(
        `policy rule "${r.name}": clusters pattern "${p}" matches none of the clusters this CA serves (${servedClusters.map((c) => `"${c}"`).join(', ') || 'none'})${other ? `; names are case-sensitive: did you mean "${other}"?` : ''}`,
      );
    }
  }
  return out;
}
