// `dify-provision dashboard`: the web dashboard, on loopback by default, behind a token.
import { randomBytes } from 'node:crypto';
import type { Config } from '../config/config.js';
import { buildDashboard } from '../dashboard/server.js';
import { openQueue } from './context.js';

export async function dashboardCommand(flags: { host: string; port: number }, config: Config, env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const ctx = await openQueue(config);
  const generated = !env.DASHBOARD_TOKEN;
  const token = env.DASHBOARD_TOKEN || randomBytes(24).toString('base64url');
  const app = await buildDashboard({ db: ctx.db, queue: ctx.queue, redis: ctx.redis, token });
  const address = await app.listen({ host: flags.host, port: flags.port });
  const url = new URL(address);
  if (generated) url.searchParams.set('token', token);
  process.stdout.write(`dashboard: ${url.toString()}${generated ? '\n(token generated for this run; set DASHBOARD_TOKEN to choose one)' : ' (token: DASHBOARD_TOKEN)'}\n`);
  const stop = async () => {
    await app.close();
    await ctx.close();
    process.exit(0);
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
