import { loadPackageDefinition } from '@grpc/grpc-js';
import { CERTIFICATE_SERVICE, HEALTH_SERVICE, protoDefinition } from '../grpc/proto.js';
let cached;
/** grpc-js client constructors for meshcert's services (the CLI and tests are grpc-js clients). */
export function loadProtos() {
    if (cached)
        return cached;
    const def = loadPackageDefinition(protoDefinition());
    const pick = (path) => path.split('.').reduce((o, k) => o[k], def);
    cached = { certificateService: pick(CERTIFICATE_SERVICE), health: pick(HEALTH_SERVICE) };
    return cached;
}
//# sourceMappingURL=protos.js.map