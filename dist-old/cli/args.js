import { parseArgs } from 'node:util';
/** Usage errors exit with code 2 and a one-line message. */
export class UsageError extends Error {
    name = 'UsageError';
}
export function parse(argv, options, allowPositionals = false) {
    try {
        return parseArgs({ args: argv, options, allowPositionals, strict: true });
    }
    catch (e) {
        throw new UsageError(e.message);
    }
}
//# sourceMappingURL=args.js.map