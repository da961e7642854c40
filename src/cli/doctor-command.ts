// `dify-provision doctor [--fix]`: exit 0 only when nothing is left to report.
import { requireConfig, storageOf, type Config } from '../config/config.js';
import { describeSchema, probeDifySchema } from '../dify/schema-probe.js';
import { runDoctor } from '../doctor/doctor.js';
import { openDbRuntime, openKeyStorage } from '../runtime/runtime.js';
import { escapeControls } from './terminal.js';

export async function doctorCommand(flags: { fix?: boolean; json?: boolean; minAge: number }, config: Config): Promise<number> {
  const cfg = requireConfig(config, 'databaseUrl', 'storageDir');
  const rt = await openDbRuntime(cfg, { migrate: false, poolMax: 2 });
  try {
    const schema = await probeDifySchema(rt.db);
    const where = storageOf(cfg)!;
    if (cfg.storageNote) process.stderr.write(`${cfg.storageNote}\n`);
    const storage = where.kind === 'local' ? { storageDir: where.root } : { storage: await openKeyStorage(cfg, { probe: false }) };
    const findings = await runDoctor(rt.db, {
      ...storage,
      schema,
      fix: flags.fix ?? false,
      minOrphanAgeSeconds: flags.minAge,
    });
    const open = findings.filter((f) => !f.fixed);
    if (flags.json)
      process.stdout.write(`${JSON.stringify({ schema: describeSchema(schema), band: schema.band, findings, remaining: open.length })}\n`);
    else {
      process.stdout.write(`${describeSchema(schema)}\n`);
      for (const f of findings)
        // Folder and object names come from the storage, which others can write: escaped.
        process.stdout.write(
          `${escapeControls(`${f.fixed ? 'fixed' : f.kind.padEnd(21)}  tenant ${f.tenantId}: ${f.detail}${f.fixed ? '' : ` — fix: ${f.fix}`}`, { all: true })}\n`,
        );
      process.stdout.write(
        open.length === 0
          ? `doctor: no findings${findings.length ? ' left' : ''}\n`
          : `doctor: ${open.length} finding(s)${flags.fix ? '' : ' (--fix repairs modes and removes orphan key folders)'}\n`,
      );
    }
    return open.length === 0 ? 0 : 1;
  } finally {
    await rt.close();
  }
}
