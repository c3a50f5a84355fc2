/**
 * The embedded default behind `meshcert serve --dev` and `npm start`: loopback only, a CA created
 * at first start under ./.meshcert, and the local development token issuer. Not a production config.
 */
export const DEV_CONFIG = {
    dataDir: '.meshcert',
    server: { listen: '127.0.0.1:15012' },
    ca: { autoInit: true },
    dev: { tokenIssuer: true },
};
//# sourceMappingURL=dev-config.js.map