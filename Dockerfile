# meshcert container image.
#
#   docker build -t REGISTRY/meshcert:TAG .
#
# NOTE: this image is not built on the development machines (they have no container engine);
# test/deploy checks this file statically (stages, user, entrypoint, what .dockerignore lets in).
#
# better-sqlite3 is a native module. The build stage has python3, make and g++ so that `npm ci` can
# compile it when no prebuilt binary fits, and it links against the build stage's glibc. Both stages
# are Debian 12 (bookworm: node:20-bookworm-slim and distroless nodejs20-debian12), with the same
# Node 20 ABI, so the module built here loads in the runtime image. Keep the two in step when
# changing either (e.g. Node 22: node:22-bookworm-slim with nodejs22-debian12).

FROM node:20-bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY proto ./proto
COPY src ./src
RUN npm run build \
 && npm prune --omit=dev --no-audit --no-fund

FROM gcr.io/distroless/nodejs20-debian12:nonroot
ENV NODE_ENV=production
WORKDIR /app
# Owned by root and not writable by the runtime user; meshcert writes only to its dataDir.
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# Loaded at run time: dist/grpc/proto.js reads ../../proto/ (that is /app/proto).
COPY --from=build /app/proto ./proto
USER 65532:65532
# 15012: gRPC over TLS (the CA); 9402: admin HTTP (/metrics, /healthz, /readyz).
EXPOSE 15012 9402
ENTRYPOINT ["/nodejs/bin/node", "/app/dist/cli.js"]
CMD ["serve", "--config", "/etc/meshcert/config.yaml"]
