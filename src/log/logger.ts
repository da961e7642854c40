// One pino logger per process. Nothing secret is ever passed to it: keys and tokens never leave
// the provisioning step that makes them, so there is nothing to redact after the fact.
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level: string, destination: 1 | 2 = 2): Logger {
  return pino({ level, base: { pid: process.pid } }, pino.destination({ fd: destination, sync: false }));
}
