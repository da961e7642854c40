// The new user's trial, from the CLI's dry run (its own composition of the reading stages): a
// membership file whose line for gus is rejected (a role typo) no longer plans gus's removal, and
// a changes file naming one workspace by external_id and by workspace_id plans the second rename
// refused, naming the first line. The runs themselves: test/integration/changes-same-workspace.
import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { projectFile } from '../../src/common/project-files.js';
import { runCli } from '../helpers/cli.js';
import { cliWorld, until } from '../helpers/cli-world.js';

const world = cliWorld();

describe('apply --dry-run from the CLI on the sample workspaces', () => {
  it('plans no removal of a person a rejected sync line lists, and refuses a second rename of one workspace named otherwise', async () => {
    const env = world.env;
    await env.db.query(await readFile(projectFile('samples', 'accounts.sql'), 'utf8'));
    const worker = world.worker();
    const ingest = await runCli(['ingest', projectFile('samples', 'workspaces.csv'), '--batch-id', 'day-one'], env.env);
    expect(ingest.code, ingest.stderr).toBe(0);
    await until(world.done('day-one'), 'the sample workspaces');
    await worker.stop();

    const sync3 = await world.file('sync3.csv', [
      { external_id: 'crm-1006', email: 'farah@hooli.example', role: 'owner' },
      { external_id: 'crm-1006', email: 'gus@hooli.example', role: 'edtor' },
    ]);
    const plan = await runCli(['apply', sync3, '--sync', '--dry-run'], env.env);
    expect(plan.code).toBe(2);
    expect(plan.stdout).toContain('plan: 3 changes: would change nothing; 1 unchanged; 2 refused\n');
    expect(plan.stderr).toContain('line 3 (role): "edtor" is not a role');
    expect(plan.stderr).toContain(
      'line 4 (email): gus@hooli.example is not listed but is not removed: line 3 naming this workspace is rejected',
    );

    const { rows } = await env.db.query<{ id: string }>(
      `SELECT tenant_id::text AS id FROM dify_provision.ledger WHERE idempotency_key = 'external:crm-1003'`,
    );
    const renames = await world.file('renames.csv', [
      { action: 'rename', workspace_id: '', external_id: 'crm-1003', name: 'Globex Inc' },
      { action: 'rename', workspace_id: rows[0]!.id, external_id: '', name: 'Globex LLC' },
    ]);
    const renamed = await runCli(['apply', renames, '--dry-run'], env.env);
    expect(renamed.code).toBe(2);
    expect(renamed.stdout).toContain('plan: 2 changes: would rename 1; 1 refused\n');
    expect(renamed.stderr).toContain(
      'line 3 (action): line 2 renames this workspace already (the same workspace, named there by its external_id)',
    );
  });
});
