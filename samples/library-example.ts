// A migration script that provisions workspaces from code, not the CLI.
// Run: REDIS_URL=… DATABASE_URL=… DIFY_STORAGE_DIR=… node dist/samples/library-example.js
// (It runs a worker in-process so it is self-contained; in production, workers run elsewhere.)
import { createProvisioner, loadConfig, runWorker, type WorkspaceInput } from 'dify-provision';

async function* customersFromYourSystem(): AsyncGenerator<WorkspaceInput> {
  yield { workspace_name: 'Northwind', owner_email: 'owner1@example.com', external_id: 'cust-1' };
  yield {
    workspace_name: 'Contoso',
    owner_email: 'owner2@example.com',
    members: [{ email: 'owner3@example.com', role: 'editor' }],
    external_id: 'cust-2',
  };
  yield { workspace_name: 'Fabrikam', owner_email: 'not an email', external_id: 'cust-3' };
}

const config = loadConfig();
const provisioner = await createProvisioner({ ...config, redisUrl: config.redisUrl!, databaseUrl: config.databaseUrl! });
const worker = await runWorker(config, { concurrency: 2 });
try {
  const batch = await provisioner.enqueue(customersFromYourSystem(), { batchId: process.argv[2] ?? 'library-example' });
  console.log(`queued ${batch.summary.queued}, rejected ${batch.summary.rejected}`);
  for await (const p of batch.progress(200)) console.log(`progress: ${p.counts.created + p.counts.existing} provisioned of ${p.total}`);
  for (const row of await batch.report()) console.log(`${row.externalId}: ${row.outcome} ${row.tenantId ?? row.error}`);
} finally {
  await worker.close();
  await provisioner.close();
}
