// `dify-provision services`: local Redis + PostgreSQL (with Dify's schema) for trying things out,
// until Ctrl-C. Prints the environment to export in other shells.
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { describeSchema, probeDifySchema } from '../dify/schema-probe.js';
import { loadConfig } from '../config/config.js';
import { openDbRuntime } from '../runtime/runtime.js';
import { projectFile, type DifySchemaName } from '../common/project-files.js';
import { createDifyDatabase } from '../services/dify-database.js';
import { startLocalServices } from '../services/local-services.js';

export async function servicesCommand(flags: { dir?: string; difySchema: DifySchemaName }): Promise<number> {
  const services = await startLocalServices({
    ...(flags.dir ? { dir: resolve(flags.dir) } : {}),
    say: (m) => process.stderr.write(`${m}\n`),
  });
  const dir = services.dir;
  const databaseUrl = await createDifyDatabase(services.databaseUrl, 'dify', { schema: flags.difySchema });
  const rt = await openDbRuntime({ ...loadConfig({}), databaseUrl }, { migrate: false, poolMax: 1 });
  const schema = await probeDifySchema(rt.db).finally(() => rt.close());
  await mkdir(join(dir, 'storage'), { recursive: true });
  process.stdout.write(
    `export REDIS_URL=${services.redisUrl}\nexport DATABASE_URL=${databaseUrl}\nexport DIFY_STORAGE_DIR=${join(dir, 'storage')}\n` +
      `# a fresh database "dify" (no accounts); ${describeSchema(schema)}\n` +
      `# the demo's ten sample accounts (owners for samples/workspaces.csv): psql "$DATABASE_URL" -f ${shellQuote(projectFile('samples', 'accounts.sql'))}\n` +
      `# Ctrl-C stops both servers and removes ${dir}\n`,
  );
  // The servers run detached: without a timer of its own this process would end here, leaving them.
  const keepAlive = setInterval(() => {}, 1 << 30);
  await new Promise<void>((resolve) => {
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.once(signal, () => resolve());
  });
  clearInterval(keepAlive);
  await services.stop();
  return 0;
}

/** A POSIX shell word for `s`, quoted only when it needs to be. */
const shellQuote = (s: string) => (/^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);
