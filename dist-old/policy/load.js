import { ConfigError } from '../errors/ca-error.js';
import { policySchema } from './schema.js';
/**
 * Validates a policy section (already read from YAML or JSON). Throws ConfigError listing every
 * problem with its path; `pathPrefix` is put before each path (e.g. "policy" for the config file).
 */
export function parsePolicy(raw, source = 'policy', pathPrefix = '') {
    const result = policySchema.safeParse(raw ?? {});
    if (!result.success)
        throw new ConfigError(formatPolicyIssues(source, result.error.issues, pathPrefix));
    return result.data;
}
/** One line per issue, "path: message", as `meshcert config check` prints them. */
export function formatPolicyIssues(source, issues, pathPrefix = '') {
    const lines = issues.map((i) => {
        const where = [pathPrefix, ...i.path.map(String)].filter((s) => s !== '').join('.') || '(top level)';
        if (i.code === 'unrecognized_keys') {
            return `  - ${i.keys.map((k) => (where === '(top level)' ? k : `${where}.${k}`)).join(', ')}: unknown setting`;
        }
        return `  - ${where}: ${i.message}`;
    });
    return `invalid policy in ${source}:\n${lines.join('\n')}`;
}
//# sourceMappingURL=load.js.map