// What Dify does right after create_tenant besides its rows: on 1.16+, with
// NEW_USER_DEFAULT_PLUGIN_IDS set, its tenant_was_created handler queues
// `install_default_plugins_task.delay(tenant.id, plugin_ids)` on the `plugin` queue. We queue the
// same message for each workspace we create, exactly once:
//   1. In the workspace's own transaction the task is recorded (dify_tasks, with its Celery id).
//   2. After COMMIT it is queued on Dify's broker by one script that sets a marker for its id and
//      LPUSHes the message only if the marker was not there, then the record is marked queued.
// So nothing is queued for a workspace that did not commit (a rollback takes the record with it),
// and a crash between COMMIT and queueing (or the broker down) leaves the record for the row's
// job run again or the sweep; a crash after the LPUSH and before the mark finds the marker and
// queues nothing twice.
import type { Logger } from 'pino';
import { randomUUID } from 'node:crypto';
import type { DefaultPluginSettings } from '../config/dify-celery.js';
import type { Db, Tx } from '../db/pool.js';
import { celeryMessage, QUEUE_ONCE_SCRIPT, queueKey, sentMarkerKey } from '../dify/celery.js';
import type { Band } from '../dify/schema-probe.js';
import { describeError } from '../common/errors.js';
import { redisConnection, type RedisClient } from '../queue/connection.js';
import { markDifyTaskQueued, pendingDifyTasks, recordDifyTasks, type DifyTaskRecord } from '../store/dify-tasks.js';

export const INSTALL_DEFAULT_PLUGINS = 'tasks.install_default_plugins_task.install_default_plugins_task';
export const PLUGIN_QUEUE = 'plugin';
/** How long the broker remembers a queued task id (longer than any sweep lag). */
const MARKER_SECONDS = 30 * 24 * 3600;

/** The Dify bands whose releases can fire the task: D (1.15+; the task exists from 1.16.0). */
export const bandQueuesDefaultPlugins = (band: Band) => band === 'D';

export class DifyTasks {
  constructor(
    private readonly broker: RedisClient,
    readonly settings: DefaultPluginSettings,
    private readonly logger?: Logger,
  ) {}

  /** What the plan and the start line say. */
  describe(): string {
    return `Dify's ${INSTALL_DEFAULT_PLUGINS}(tenant_id, [${this.settings.pluginIds.join(', ')}]) is queued on the "${PLUGIN_QUEUE}" queue of ${this.settings.shown} for each workspace created`;
  }

  /** In the workspace's transaction: the task recorded, not queued yet. */
  async prepare(tx: Tx, row: { batchId: string; line: number; tenantId: string }): Promise<DifyTaskRecord[]> {
    const task = {
      id: randomUUID(),
      ...row,
      name: INSTALL_DEFAULT_PLUGINS,
      queue: PLUGIN_QUEUE,
      args: [row.tenantId, this.settings.pluginIds],
    };
    await recordDifyTasks(tx, [task]);
    return [task];
  }

  /** After the commit: each task queued once on Dify's broker, then marked. Returns how many were queued now. */
  async queue(db: Db, tasks: DifyTaskRecord[]): Promise<number> {
    let queued = 0;
    for (const t of tasks) {
      const { keyPrefix } = this.settings;
      const message = celeryMessage({ id: t.id, name: t.name, args: t.args, queue: t.queue });
      const n = (await this.broker.eval(
        QUEUE_ONCE_SCRIPT,
        2,
        sentMarkerKey(keyPrefix, t.id),
        queueKey(keyPrefix, t.queue),
        message,
        String(MARKER_SECONDS),
      )) as number;
      await markDifyTaskQueued(db, t.id);
      queued += n;
    }
    return queued;
  }

  /** Tasks recorded and never queued (a crash, the broker down): of one row, or idle ones (the sweep). */
  async completePending(db: Db, which: { batchId: string; line: number } | { idleSeconds: number }): Promise<number> {
    return this.queue(db, await pendingDifyTasks(db, which));
  }

  close(): void {
    this.broker.disconnect();
  }

  /** Logs instead of failing the row: the workspace is created, the sweep queues the task later. */
  async settle(run: () => Promise<number>, row: { batchId: string; line: number; tenantId: string }): Promise<void> {
    try {
      await run();
    } catch (err) {
      this.logger?.warn(
        { ...row, error: describeError(err) },
        "Dify's default-plugin task could not be queued on its broker yet: the workspace is created and a worker's sweep queues it",
      );
    }
  }
}

/** The worker's DifyTasks, when this Dify queues the task; undefined (logged) when it would not. */
export function openDifyTasks(settings: DefaultPluginSettings | undefined, band: Band, logger: Logger): DifyTasks | undefined {
  if (!settings) return undefined;
  if (!bandQueuesDefaultPlugins(band)) {
    logger.warn(`NEW_USER_DEFAULT_PLUGIN_IDS is set, but this Dify's release (band ${band}) has no default-plugin task: nothing is queued`);
    return undefined;
  }
  return new DifyTasks(redisConnection(settings.broker, 'producer'), settings, logger);
}
