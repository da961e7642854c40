// `dify-provision dashboard`: the web dashboard, on loopback by default, behind a token.
import { randomBytes } from 'node:crypto';
import type { Config } from '../config/config.js';
import { buildDashboard } from '../dashboard/server.js';
import { ConfigError } from '../common/errors.js';
import { provisionerOn } from '../provisioner.js';
import { openQueueRuntime } from '../runtime/runtime.js';

export async function dashboardCommand(
  flags: { host: string; port: number; readToken?: string[]; maxBytes?: number },
  config: Config,
): Promise<void> {
  const rt = await openQueueRuntime(config);
  const token = config.dashboardToken ?? randomBytes(24).toString('base64url');
  const readTokens = [...(config.dashboardReadTokens ?? []), ...(flags.readToken ?? [])];
  if (readTokens.includes(token)) throw new ConfigError('a read-only token (--read-token, DASHBOARD_READ_TOKENS) is the dashboard token');
  const app = await buildDashboard({
    db: rt.db,
    queue: rt.queue,
    redis: rt.redis,
    token,
    readTokens,
    provisioner: provisionerOn(rt),
    ...(flags.maxBytes ? { maxBytes: flags.maxBytes } : {}),
  });
  const address = await app.listen({ host: flags.host, port: flags.port });
  const url = new URL(address);
  if (!config.dashboardToken) url.searchParams.set('token', token);
  process.stdout.write(
    `dashboard: ${url.toString()}${config.dashboardToken ? ' (token: DASHBOARD_TOKEN)' : '\n(token generated for this run; set DASHBOARD_TOKEN to choose one)'}\n`,
  );
  const stop = async () => {
    await app.close();
    await rt.close();
    process.exit(0);
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
