// Every key and value in Redis, as text: for proving that no secret is stored there.
import type { Redis } from 'ioredis';

export async function dumpRedis(redis: Redis): Promise<string> {
  let dump = '';
  for (const key of await redis.keys('*')) {
    const type = await redis.type(key);
    const value =
      type === 'string'
        ? await redis.get(key)
        : type === 'hash'
          ? JSON.stringify(await redis.hgetall(key))
          : type === 'list'
            ? JSON.stringify(await redis.lrange(key, '0', '-1'))
            : type === 'zset'
              ? JSON.stringify(await redis.zrange(key, '0', '-1'))
              : type === 'set'
                ? JSON.stringify(await redis.smembers(key))
                : type === 'stream'
                  ? JSON.stringify(await redis.xrange(key, '-', '+'))
                  : '';
    dump += `${key} ${value}\n`;
  }
  return dump;
}
