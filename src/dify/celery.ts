// A Celery task message exactly as Dify's `task.delay(...)` puts it on its Redis broker: Celery's
// task protocol 2 with the JSON serializer (celery/app/amqp.py as_task_v2, Celery 5.5 as Dify
// pins it), in kombu's Redis transport envelope (kombu/transport/virtual: body base64-encoded,
// delivery_info, delivery_tag), LPUSHed on the queue's list, whose name carries the transport's
// global_keyprefix. Python's json.dumps spacing and ensure_ascii, and repr() for argsrepr.
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';

/** Python's json.dumps (", " and ": " separators, ensure_ascii). */
export function pyJson(value: unknown): string {
  if (value === null || value === undefined) return 'null';
  if (Array.isArray(value)) return `[${value.map(pyJson).join(', ')}]`;
  if (typeof value === 'object')
    return `{${Object.entries(value as Record<string, unknown>)
      .map(([k, v]) => `${pyJson(k)}: ${pyJson(v)}`)
      .join(', ')}}`;
  if (typeof value === 'string')
    return JSON.stringify(value).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  return JSON.stringify(value);
}

/** Python's repr() of the str, list and tuple values a task's arguments are made of. */
export function pyRepr(value: unknown, tuple = false): string {
  if (Array.isArray(value)) {
    const items = value.map((v) => pyRepr(v));
    return tuple ? `(${items.join(', ')}${items.length === 1 ? ',' : ''})` : `[${items.join(', ')}]`;
  }
  if (typeof value === 'string') {
    const q = value.includes("'") && !value.includes('"') ? '"' : "'";
    const body = value
      .replace(/\\/g, '\\\\')
      .replace(/\n/g, '\\n')
      .replace(/\r/g, '\\r')
      .replace(/\t/g, '\\t')
      .replace(new RegExp(q, 'g'), `\\${q}`);
    return `${q}${body}${q}`;
  }
  if (value && typeof value === 'object')
    return `{${Object.entries(value as Record<string, unknown>)
      .map(([k, v]) => `${pyRepr(k)}: ${pyRepr(v)}`)
      .join(', ')}}`;
  return value === null || value === undefined ? 'None' : value === true ? 'True' : value === false ? 'False' : String(value);
}

export interface CeleryTask {
  /** The task id (a uuid4): also the message's correlation id and root id. */
  id: string;
  /** The registered name, e.g. tasks.install_default_plugins_task.install_default_plugins_task. */
  name: string;
  /** Positional arguments, as `delay(*args)` gets them. */
  args: unknown[];
  /** The task's queue (its `@shared_task(queue=…)`): the exchange and routing key too. */
  queue: string;
}

/** The broker list a queue's messages go to (priority 0: the queue's own name) under the prefix. */
export const queueKey = (keyPrefix: string, queue: string) => `${keyPrefix}${queue}`;

/** The envelope kombu's Redis transport LPUSHes, as JSON. */
export function celeryMessage(task: CeleryTask, origin = `gen${process.pid}@${hostname()}`): string {
  const kwargs = {};
  const body = [task.args, kwargs, { callbacks: null, errbacks: null, chain: null, chord: null }];
  return pyJson({
    body: Buffer.from(pyJson(body), 'utf8').toString('base64'),
    'content-encoding': 'utf-8',
    'content-type': 'application/json',
    headers: {
      lang: 'py',
      task: task.name,
      id: task.id,
      shadow: null,
      eta: null,
      expires: null,
      group: null,
      group_index: null,
      retries: 0,
      timelimit: [null, null],
      root_id: task.id,
      parent_id: null,
      argsrepr: pyRepr(task.args, true),
      kwargsrepr: pyRepr(kwargs),
      origin,
      // Dify's Celery app sets task_ignore_result=True.
      ignore_result: true,
      replaced_task_nesting: 0,
      stamped_headers: null,
      stamps: {},
    },
    properties: {
      correlation_id: task.id,
      reply_to: randomUUID(),
      delivery_mode: 2,
      delivery_info: { exchange: task.queue, routing_key: task.queue },
      priority: 0,
      body_encoding: 'base64',
      delivery_tag: randomUUID(),
    },
  });
}

/**
 * Queues a message at most once per task id, atomically on the broker: a marker key (kept for
 * `markerSeconds`) and the LPUSH in one script, so a retry or the sweep that repeats the call
 * after a crash queues nothing twice. Returns 1 when queued now, 0 when it was queued before.
 */
export const QUEUE_ONCE_SCRIPT = `
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then
  redis.call('LPUSH', KEYS[2], ARGV[1])
  return 1
end
return 0`;

/** The marker of a queued task id (in Dify's broker, under its prefix). */
export const sentMarkerKey = (keyPrefix: string, taskId: string) => `${keyPrefix}dify-provision:celery-sent:${taskId}`;
