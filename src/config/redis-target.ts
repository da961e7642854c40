// Where a Redis is, as our settings and Dify's REDIS_* variables describe it: one node, a
// Cluster, or a Sentinel-managed master.
import { z } from 'zod';

const hostPort = z.object({ host: z.string().min(1), port: z.number().int().min(1).max(65535) });
const tlsSchema = z.object({ caFile: z.string().optional() }).optional();

/** Where Redis is: one node (a URL), a Redis Cluster, or a Sentinel-managed master. */
export const RedisTargetSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('single'), url: z.string().regex(/^rediss?:\/\//, 'must be a redis:// or rediss:// URL'), tls: tlsSchema }),
  /** One node as fields (Dify's REDIS_HOST, REDIS_PORT, …): a password is never parsed as part of a URL. */
  hostPort.extend({
    kind: z.literal('node'),
    username: z.string().optional(),
    password: z.string().optional(),
    db: z.number().int().min(0).default(0),
    tls: tlsSchema,
  }),
  z.object({
    kind: z.literal('cluster'),
    nodes: z.array(hostPort).min(1, 'names no node'),
    username: z.string().optional(),
    password: z.string().optional(),
    tls: tlsSchema,
  }),
  z.object({
    kind: z.literal('sentinel'),
    sentinels: z.array(hostPort).min(1, 'names no sentinel'),
    name: z.string().min(1, 'needs REDIS_SENTINEL_SERVICE_NAME'),
    sentinelUsername: z.string().optional(),
    sentinelPassword: z.string().optional(),
    username: z.string().optional(),
    password: z.string().optional(),
    db: z.number().int().min(0).default(0),
    tls: tlsSchema,
  }),
]);
export type RedisTarget = z.infer<typeof RedisTargetSchema>;
