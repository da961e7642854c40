# dify-provision: the CLI, workers and dashboard in one image. It runs as the base image's non-root
# user (node, uid 1000); a worker writing Dify's local key storage runs as Dify's uid 1001 instead
# (--user 1001:1001, as deploy/dify-compose/docker-compose.yaml does).
FROM node:20-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.web.json ./
COPY src ./src
COPY workers ./workers
COPY web ./web
COPY sql ./sql
COPY samples ./samples
RUN npm ci && npm prune --omit=dev
USER node
# An absolute path: compose or Kubernetes may give the container another working directory (cli: /tmp).
ENTRYPOINT ["node", "/app/dist/src/cli/main.js"]
