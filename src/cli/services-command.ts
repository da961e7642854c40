// `dify-provision services`: local Redis + PostgreSQL (with Dify's schema) for trying things out,
// until Ctrl-C. Prints the environment to export in other shells.
import { join } from 'node:path';
import { projectFile } from '../project-files.js';
import { createDifyDatabase } from '../services/dify-database.js';
import { startLocalServices } from '../services/local-services.js';

export async function servicesCommand(flags: { dir: string }): Promise<number> {
  const dir = projectFile(flags.dir);
  const services = await startLocalServices({ dir, say: (m) => process.stderr.write(`${m}\n`) });
  const databaseUrl = await createDifyDatabase(services.databaseUrl, 'dify');
  process.stdout.write(
    `export REDIS_URL=${services.redisUrl}\nexport DATABASE_URL=${databaseUrl}\nexport DIFY_STORAGE_DIR=${join(dir, 'storage')}\n` +
      `# a fresh database "dify" with Dify's schema (no accounts); Ctrl-C stops both servers and removes ${dir}\n`,
  );
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await services.stop();
  return 0;
}
