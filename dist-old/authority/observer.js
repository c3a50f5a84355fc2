/** Calls every observer; one failing observer never hides the decision from the others. */
export function fanOut(observers) {
    return {
        issued(cert, ctx) {
            for (const o of observers) {
                try {
                    o.issued(cert, ctx);
                }
                catch {
                    // observers must not throw; ignore rather than fail the call
                }
            }
        },
        refused(code, reason, ctx) {
            for (const o of observers) {
                try {
                    o.refused(code, reason, ctx);
                }
                catch {
                    // as above
                }
            }
        },
    };
}
//# sourceMappingURL=observer.js.map