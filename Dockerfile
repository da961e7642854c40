# dify-provision: the CLI, workers and dashboard in one image.
FROM node:20-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.web.json ./
COPY src ./src
COPY workers ./workers
COPY web ./web
COPY sql ./sql
COPY samples ./samples
RUN npm ci && npm prune --omit=dev
ENTRYPOINT ["node", "dist/src/cli/main.js"]
