// What Dify's `tenant_was_created` signal does after `create_tenant` (1.16+): with
// NEW_USER_DEFAULT_PLUGIN_IDS set, its handler queues the Celery task
// `tasks.install_default_plugins_task.install_default_plugins_task(tenant_id, plugin_ids)` on the
// `plugin` queue of Dify's Celery broker (api/events/event_handlers/
// queue_default_plugin_install_when_tenant_created.py). We read the same settings Dify reads to
// queue the same message on the same broker (api/extensions/ext_celery.py).
import { ConfigError } from '../common/errors.js';
import type { RedisTarget } from './redis-target.js';
import type { DifySettings } from './dify-settings.js';

export const CELERY_NAMES = [
  'NEW_USER_DEFAULT_PLUGIN_IDS',
  'CELERY_BROKER_URL',
  'CELERY_USE_SENTINEL',
  'CELERY_SENTINEL_MASTER_NAME',
  'CELERY_SENTINEL_PASSWORD',
];

export interface DefaultPluginSettings {
  /** NEW_USER_DEFAULT_PLUGIN_ID_LIST: split on ",", stripped, empty items dropped, as Dify does. */
  pluginIds: string[];
  /** Dify's Celery broker (CELERY_BROKER_URL, its Sentinel options). */
  broker: RedisTarget;
  /** The Redis transport's global_keyprefix: `REDIS_KEY_PREFIX:` (stripped) when set, else ''. */
  keyPrefix: string;
  /** The broker as messages show it (no credential). */
  shown: string;
}

const bad = (line: string) => new ConfigError(`invalid configuration:\n  ${line}`);
const yes = (v: string | undefined) => /^(1|on|t|true|y|yes)$/i.test((v ?? '').trim());

/**
 * Dify's default-plugin settings; undefined when NEW_USER_DEFAULT_PLUGIN_IDS names no plugin
 * (Dify then queues nothing). A broker we cannot reach the way Dify does throws, naming the variable.
 */
export function defaultPluginsFromDify(s: DifySettings): DefaultPluginSettings | undefined {
  const pluginIds = (s.get('NEW_USER_DEFAULT_PLUGIN_IDS') ?? '')
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean);
  if (pluginIds.length === 0) return undefined;
  const url = (s.get('CELERY_BROKER_URL') ?? '').trim();
  if (!url)
    throw bad(
      `${s.label('CELERY_BROKER_URL')}: required to queue Dify's default-plugin task (NEW_USER_DEFAULT_PLUGIN_IDS is set${s.where('NEW_USER_DEFAULT_PLUGIN_IDS')})`,
    );
  const prefix = (s.get('REDIS_KEY_PREFIX') ?? '').trim();
  const keyPrefix = prefix ? `${prefix}:` : '';
  if (yes(s.get('CELERY_USE_SENTINEL'))) {
    // kombu: sentinel://[:password@]host:port[/db];sentinel://host:port… — the URL's password is
    // the master's; CELERY_SENTINEL_PASSWORD the sentinels'.
    const master = s.get('CELERY_SENTINEL_MASTER_NAME');
    if (!master)
      throw bad(`${s.label('CELERY_SENTINEL_MASTER_NAME')}: required with CELERY_USE_SENTINEL=true${s.where('CELERY_USE_SENTINEL')}`);
    const nodes = url.split(';').map((part) => parseUrl(s, part.trim(), ['sentinel:']));
    const first = nodes[0]!;
    const sentinelPassword = s.get('CELERY_SENTINEL_PASSWORD');
    return {
      pluginIds,
      keyPrefix,
      shown: `Sentinel master "${master}" via ${nodes.map((n) => `${n.host}:${n.port}`).join(', ')}`,
      broker: {
        kind: 'sentinel',
        sentinels: nodes.map((n) => ({ host: n.host, port: n.port })),
        name: master,
        ...(first.username ? { username: first.username } : {}),
        ...(first.password ? { password: first.password } : {}),
        ...(sentinelPassword ? { sentinelPassword } : {}),
        db: first.db,
        tls: undefined,
      },
    };
  }
  const n = parseUrl(s, url, ['redis:', 'rediss:']);
  return {
    pluginIds,
    keyPrefix,
    shown: `${n.protocol}//${n.host}:${n.port}/${n.db}`,
    broker: {
      kind: 'node',
      host: n.host,
      port: n.port,
      ...(n.username ? { username: n.username } : {}),
      ...(n.password ? { password: n.password } : {}),
      db: n.db,
      tls: n.protocol === 'rediss:' ? { caFile: undefined } : undefined,
    },
  };
}

function parseUrl(s: DifySettings, value: string, schemes: string[]) {
  const label = s.label('CELERY_BROKER_URL');
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    throw bad(`${label}: not a URL`);
  }
  if (!schemes.includes(u.protocol))
    throw bad(
      `${label}: a ${u.protocol.replace(/:$/, '')}:// broker; dify-provision queues Dify's tasks on a Redis broker only (${schemes.map((p) => `${p}//`).join(', ')})`,
    );
  const db = u.pathname.replace(/^\//, '') || '0';
  if (!/^\d+$/.test(db)) throw bad(`${label}: "${u.pathname}" is not a database number`);
  return {
    protocol: u.protocol,
    host: u.hostname.replace(/^\[|\]$/g, ''),
    port: u.port ? Number(u.port) : u.protocol === 'sentinel:' ? 26379 : 6379,
    username: decodeURIComponent(u.username),
    password: decodeURIComponent(u.password),
    db: Number(db),
  };
}
