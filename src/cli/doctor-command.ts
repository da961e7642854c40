// `dify-provision doctor [--fix]`: exit 0 only when nothing is left to report.
import { requireConfig, type Config } from '../config/config.js';
import { createPool } from '../db/pool.js';
import { runDoctor } from '../provision/doctor.js';

export async function doctorCommand(flags: { fix?: boolean; json?: boolean; minAge: number }, config: Config): Promise<number> {
  const cfg = requireConfig(config, 'databaseUrl', 'storageDir');
  const db = createPool(cfg.databaseUrl, 2);
  try {
    const findings = await runDoctor(db, { storageDir: cfg.storageDir, fix: flags.fix ?? false, minOrphanAgeSeconds: flags.minAge });
    const open = findings.filter((f) => !f.fixed);
    if (flags.json) process.stdout.write(`${JSON.stringify({ findings, remaining: open.length })}\n`);
    else {
      for (const f of findings) process.stdout.write(`${f.fixed ? 'fixed' : f.kind.padEnd(21)}  tenant ${f.tenantId}: ${f.detail}${f.fixed ? '' : ` — fix: ${f.fix}`}\n`);
      process.stdout.write(open.length === 0 ? `doctor: no findings${findings.length ? ' left' : ''}\n` : `doctor: ${open.length} finding(s)${flags.fix ? '' : ' (--fix repairs modes and removes orphan key folders)'}\n`);
    }
    return open.length === 0 ? 0 : 1;
  } finally {
    await db.end();
  }
}
