import { ConfigError } from '../errors/ca-error.js';
import type { MeshcertConfig } from './schema.js';

/**
 * What `serve` needs beyond a valid schema. Other commands read the same file for one section
 * (`certs` its inventory, `policy explain` its policy) and need none of it; `config check` and a
 * hot reload do, so that a file they accept is one the next start accepts too.
 */
export function servabilityProblems(config: MeshcertConfig): string[] {
  const problems: string[] = [];
  if (config.auth.clusters.length === 0 && !config.dev.tokenIssuer) {
    problems.push('auth.clusters: no authentication configured: add a cluster with jwt issuers or tokenReview (or run "meshcert serve --dev" locally)');
  }
  if (!config.auth.clientCertificates) {
    config.auth.clusters.forEach((c, i) => {
      // The dev token issuer joins the default cluster's authenticators.
      const devIssuer = config.dev.tokenIssuer && c.name === config.auth.defaultCluster;
      if (c.jwt.length === 0 && c.tokenReview === undefined && !devIssuer) problems.push(`auth.clusters.${i}: cluster "${c.name}" has no authenticator: add jwt issuers or tokenReview`);
    });
  }
  return problems;
}

/** Throws a ConfigError listing every problem `serve` would refuse the config for. */
export function assertServable(config: MeshcertConfig, source: string): void {
  const problems = servabilityProblems(config);
  if (problems.length > 0) throw new ConfigError(`${source} cannot be served:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
}
