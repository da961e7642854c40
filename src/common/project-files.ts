// Files shipped with the package (Dify's schema, samples), found from this module whether it runs
// from src/ (tsx, vitest) or dist/src/ (the built CLI).
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('dify-provision: cannot find its package root');
    dir = up;
  }
  return dir;
}

export const PACKAGE_ROOT = packageRoot();
export const projectFile = (...parts: string[]) => join(PACKAGE_ROOT, ...parts);
export const DIFY_SCHEMA_SQL = projectFile('sql', 'dify', 'schema.sql');

/** Dify's schema as each release band left it (sql/dify/versions/README.md); `latest` is later main. */
export const DIFY_SCHEMAS = {
  '1.6': projectFile('sql', 'dify', 'versions', '1.6.0.sql'),
  '1.9': projectFile('sql', 'dify', 'versions', '1.9.0.sql'),
  '1.11': projectFile('sql', 'dify', 'versions', '1.11.0.sql'),
  '1.13': projectFile('sql', 'dify', 'versions', '1.13.0.sql'),
  '1.16': projectFile('sql', 'dify', 'versions', '1.16.1.sql'),
  latest: DIFY_SCHEMA_SQL,
} as const;
export type DifySchemaName = keyof typeof DIFY_SCHEMAS;
export const DIFY_SCHEMA_NAMES = Object.keys(DIFY_SCHEMAS) as DifySchemaName[];
export const DIFY_SCHEMA_VARIANT_SQL = projectFile('sql', 'dify', 'schema-variant-api-tokens-dataset-id.sql');
