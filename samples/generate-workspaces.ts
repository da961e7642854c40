// Writes a large sample CSV to standard output, for trying batches at scale:
//   node dist/samples/generate-workspaces.js 10000 [accounts] > big.csv
// Owners cycle through owner1@example.com … owner<accounts>@example.com (default 200), the
// accounts that `npm run bench` and the tests create.
const rows = Number(process.argv[2] ?? 1000);
const accounts = Number(process.argv[3] ?? 200);
if (!Number.isInteger(rows) || rows < 1 || !Number.isInteger(accounts) || accounts < 1) {
  process.stderr.write('usage: generate-workspaces.js ROWS [ACCOUNTS]\n');
  process.exit(2);
}
const out = process.stdout;
out.write('workspace_name,owner_email,plan,external_id\n');
for (let i = 1; i <= rows; i++) {
  const line = `Workspace ${i},owner${((i - 1) % accounts) + 1}@example.com,basic,gen-${i}\n`;
  if (!out.write(line)) await new Promise<void>((r) => out.once('drain', () => r()));
}
