// `identity`: which Dify identity (and so which queue) this database has, the PostgreSQL server
// behind it, and who else claims it. `--new` gives a physical copy an identity of its own;
// `--adopt` says that rows queued under an earlier lineage are this server's (a crash restart no
// process of ours saw).
import type { Config } from '../config/config.js';
import { UsageError } from '../common/errors.js';
import { forgetServer, otherLineageAdvice } from '../queue/server-watch.js';
import { openQueueRuntime } from '../runtime/runtime.js';
import { newIdentity } from '../store/instance.js';
import { recordSuccession, rowsOfOtherLineages } from '../store/server.js';
import { isStrictUuid } from '../common/types.js';
import { escapeControls } from './terminal.js';

export async function identityCommand(flags: { new?: boolean; adopt?: string; json?: boolean }, config: Config): Promise<number> {
  if (flags.new && flags.adopt) throw new UsageError('--new and --adopt exclude each other');
  if (flags.adopt !== undefined && !isStrictUuid(flags.adopt))
    throw new UsageError('--adopt takes a lineage: a lower-case UUID as `status` or `identity` prints it');
  const rt = await openQueueRuntime(config);
  const say = (line: string) => process.stdout.write(`${escapeControls(line)}\n`);
  try {
    if (flags.new) {
      const { server } = rt.server.state;
      const made = await newIdentity(rt.db);
      await forgetServer(rt.redis, rt.config.queuePrefix, rt.dify.queueName, server);
      const out = { before: rt.dify.queueName, after: made.after.queueName, lineage: made.lineage, leftRows: made.leftRows };
      if (flags.json) say(JSON.stringify(out));
      else {
        say(
          `database "${made.after.database}" has a new identity: queue ${made.after.queueName} (was ${rt.dify.queueName}), server lineage ${made.lineage}`,
        );
        say(
          `${made.leftRows} row(s) still open here were cancelled, not queued: they belong to the server this database was copied from (\`retry --cancelled BATCH\` queues a batch here on purpose)`,
        );
        say(`running workers of this database stop by themselves; start them again to serve ${made.after.queueName}`);
      }
      return 0;
    }
    if (flags.adopt) {
      await recordSuccession(rt.db, rt.server.state.server.lineage, flags.adopt);
      await rt.server.refresh();
      say(`rows queued under lineage ${flags.adopt} are run by this server (lineage ${rt.server.state.server.lineage}) from now on`);
      return 0;
    }
    const { gate, message, server, others } = await rt.server.refresh();
    const waiting = await rowsOfOtherLineages(rt.db, server.chain);
    if (flags.json) {
      say(
        JSON.stringify({
          queue: rt.dify.queueName,
          database: rt.dify.database,
          identity: rt.dify.id,
          gate,
          message,
          server,
          others,
          otherServers: waiting,
        }),
      );
      return 0;
    }
    say(`queue ${rt.dify.queueName} serves Dify database "${rt.dify.database}" (identity ${rt.dify.id})`);
    say(
      `this PostgreSQL server: lineage ${server.lineage} since ${server.since.toISOString()}, ${server.chain.length - 1} earlier lineage(s) recorded as its own`,
    );
    say(gate === 'open' ? (message ?? 'no other live server claims this identity') : `${gate}: ${message}`);
    for (const w of waiting) say(`${w.rows} row(s) wait for another server (lineage ${w.lineage}): ${otherLineageAdvice(w.lineage)}`);
    return gate === 'conflict' ? 3 : 0;
  } finally {
    await rt.close();
  }
}
