import { generateKeyPairSync } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import forge from 'node-forge';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { Queue } from 'bullmq';
import { buildDashboard } from '../../src/dashboard/server.js';
import { maskToken } from '../../src/dify/api-keys.js';
import { createProvisioner, type Provisioner } from '../../src/provisioner.js';
import { runWorker } from '../../src/worker/run-worker.js';
import { dumpRedis } from '../helpers/redis-dump.js';
import { createTestEnv, type TestEnv } from '../helpers/test-env.js';

const TOKEN = /^dataset-[A-Za-z0-9]{24}$/;
const ANY_TOKEN = /dataset-[A-Za-z0-9]{24}/;

let env: TestEnv;
let provisioner: Provisioner;
afterEach(async () => {
  await provisioner?.close();
  await env?.cleanup();
});

async function setup(shape: 'bindings' | 'column' | 'none') {
  env = await createTestEnv({ variant: shape === 'column' });
  if (shape !== 'bindings') await env.db.query(`DROP TABLE dataset_api_token_bindings`);
  provisioner = await createProvisioner(env.config);
}

async function tenantWithDatasets(n: number): Promise<{ tenantId: string; datasets: string[] }> {
  const { rows: t } = await env.db.query<{ id: string }>(`INSERT INTO tenants (name) VALUES ('kb owner') RETURNING id`);
  const tenantId = t[0]!.id;
  const { rows: owner } = await env.db.query<{ id: string }>(`SELECT id FROM accounts LIMIT 1`);
  const datasets: string[] = [];
  for (let i = 0; i < n; i++) {
    const { rows } = await env.db.query<{ id: string }>(
      `INSERT INTO datasets (tenant_id, name, created_by) VALUES ($1, $2, $3) RETURNING id`,
      [tenantId, `kb ${i}`, owner[0]!.id],
    );
    datasets.push(rows[0]!.id);
  }
  return { tenantId, datasets };
}

describe.each(['bindings', 'column'] as const)('keys for existing workspaces (%s scoping)', (shape) => {
  it("mints tokens in Dify's format, unique, workspace-wide or bound to the tenant's own knowledge bases", async () => {
    await setup(shape);
    const { tenantId, datasets } = await tenantWithDatasets(2);
    const other = await tenantWithDatasets(1);
    const results = await provisioner.mintApiKeys([
      { tenantId },
      { tenantId, datasetIds: [datasets[0]!] },
      { tenantId, datasetIds: [other.datasets[0]!] },
      { tenantId, datasetIds: ['../../etc'] },
    ]);
    const [wide, bound, foreign, bad] = results;
    expect(wide!.key!.token).toMatch(TOKEN);
    expect(bound!.key!.token).toMatch(TOKEN);
    expect(wide!.key!.token).not.toBe(bound!.key!.token);
    expect(wide!.key!.masked).toBe(`${wide!.key!.token.slice(0, 5)}...${wide!.key!.token.slice(-4)}`);
    expect(foreign!.error).toBe(`dataset: knowledge base(s) ${other.datasets[0]} do not belong to workspace ${tenantId}`);
    expect(bad!.error).toBe('dataset: "../../etc" is not a strict UUID');

    const { rows } = await env.db.query(
      `SELECT id, type, app_id, tenant_id, token FROM api_tokens WHERE tenant_id = $1 ORDER BY created_at`,
      [tenantId],
    );
    expect(rows).toHaveLength(2);
    expect(rows.every((r) => r.type === 'dataset' && r.app_id === null)).toBe(true);
    const boundTo = async (id: string) =>
      shape === 'bindings'
        ? (await env.db.query(`SELECT dataset_id FROM dataset_api_token_bindings WHERE api_token_id = $1`, [id])).rows.map(
            (r) => r.dataset_id,
          )
        : (await env.db.query(`SELECT dataset_id FROM api_tokens WHERE id = $1`, [id])).rows
            .filter((r) => r.dataset_id)
            .map((r) => r.dataset_id);
    expect(await boundTo(wide!.key!.id)).toEqual([]);
    expect(await boundTo(bound!.key!.id)).toEqual([datasets[0]]);

    const listed = await provisioner.listApiKeys(tenantId);
    // created_at has whole seconds (Dify's column): the two keys may tie, so compare as a set.
    expect(listed.map((k) => [k.masked, k.scope]).sort((a, b) => a[1]!.localeCompare(b[1]!))).toEqual([
      [maskToken(bound!.key!.token), `knowledge bases ${datasets[0]}`],
      [maskToken(wide!.key!.token), 'workspace'],
    ]);
    expect(JSON.stringify(listed)).not.toMatch(ANY_TOKEN);
  });

  it("respects Dify's limit of 10 dataset keys per workspace", async () => {
    await setup(shape);
    const { tenantId } = await tenantWithDatasets(0);
    const results = await provisioner.mintApiKeys(Array.from({ length: 11 }, () => ({ tenantId })));
    expect(results.filter((r) => r.key)).toHaveLength(10);
    expect(results[10]!.error).toBe(`dataset: workspace ${tenantId} has 10 dataset API keys already (Dify allows 10)`);
  });
});

describe('scoping the database cannot express', () => {
  it('binds several knowledge bases only with bindings, and refuses scoped keys with neither shape', async () => {
    await setup('column');
    const { tenantId, datasets } = await tenantWithDatasets(2);
    expect((await provisioner.mintApiKeys([{ tenantId, datasetIds: datasets }]))[0]!.error).toBe(
      'dataset: this Dify scopes a key with api_tokens.dataset_id: one knowledge base per key',
    );
    await provisioner.close();
    await env.cleanup();
    await setup('none');
    const again = await tenantWithDatasets(1);
    expect((await provisioner.mintApiKeys([{ tenantId: again.tenantId, datasetIds: again.datasets }]))[0]!.error).toMatch(
      /neither dataset_api_token_bindings nor api_tokens\.dataset_id/,
    );
    expect((await provisioner.mintApiKeys([{ tenantId: again.tenantId }]))[0]!.key!.token).toMatch(TOKEN);
  });
});

describe('keys minted with a batch: sealed, masked everywhere, revealed once', () => {
  it('never lets a token reach Redis, logs, job data or reports, and reveals them once to the right key', async () => {
    await setup('bindings');
    const operator = generateKeyPairSync('rsa', {
      modulusLength: 2048,
      publicKeyEncoding: { type: 'spki', format: 'pem' },
      privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    });
    const stranger = generateKeyPairSync('rsa', {
      modulusLength: 2048,
      privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
      publicKeyEncoding: { type: 'spki', format: 'pem' },
    });
    let logs = '';
    const logger = pino({ level: 'debug' }, new Writable({ write: (c, _e, cb) => ((logs += c), cb()) }));
    const rows = Array.from({ length: 5 }, (_, i) => ({ workspace_name: `Keyed ${i}`, owner_email: `owner${i + 1}@example.com` }));
    await expect(provisioner.enqueue(rows, { batchId: 'nokey', mintDatasetKeys: true })).rejects.toThrow(/needs --seal-to/);

    const worker = await runWorker(env.config, { concurrency: 4, logger });
    const batch = await provisioner.enqueue(rows, { batchId: 'keyed', mintDatasetKeys: true, sealTo: operator.publicKey });
    await batch.done(100).finally(() => worker.close());

    const tokens = (await env.db.query<{ token: string }>(`SELECT token FROM api_tokens`)).rows.map((r) => r.token);
    expect(tokens).toHaveLength(5);
    expect(new Set(tokens).size).toBe(5);
    tokens.forEach((t) => expect(t).toMatch(TOKEN));

    const redisDump = await dumpRedis(env.redis);
    expect(redisDump.length).toBeGreaterThan(0);
    const report = await batch.report();
    let csv = '';
    for await (const c of batch.reportCsv()) csv += c;
    // What the dashboard serves, through its real routes.
    const dashboard = await buildDashboard({
      db: env.db,
      queue: new Queue('provision', { connection: env.redis, prefix: env.config.queuePrefix }),
      redis: env.redis,
      token: 't',
    });
    let served = '';
    for (const url of [
      '/api/batches',
      '/api/batches/keyed',
      '/api/batches/keyed/rows?limit=200',
      '/api/batches/keyed/report.csv',
      '/api/batches/keyed/report.json',
      '/',
      '/metrics',
    ]) {
      const res = await dashboard.inject({ url, headers: { authorization: 'Bearer t' } });
      expect(res.statusCode, url).toBe(200);
      served += res.body;
    }
    await dashboard.close();
    expect(served).toContain(maskToken(tokens[0]!));
    const { rows: ours } = await env.db.query(`SELECT * FROM dify_provision.rows`);
    const { rows: sealed } = await env.db.query(`SELECT * FROM dify_provision.sealed_secrets`);
    for (const token of tokens) {
      for (const [where, text] of [
        ['redis', redisDump],
        ['logs', logs],
        ['report', JSON.stringify(report)],
        ['csv', csv],
        ['dashboard', served],
        ['rows', JSON.stringify(ours)],
        ['sealed', JSON.stringify(sealed)],
      ] as const) {
        expect(text.includes(token), `token found in ${where}`).toBe(false);
      }
    }
    expect(report.map((r) => r.apiKey).sort()).toEqual(tokens.map(maskToken).sort());

    // An independent JOSE implementation (node-forge: RSA-OAEP-SHA256 + AES-256-GCM by hand) opens the seal.
    const [protectedB64, encKey, iv, ciphertext, tag] = (sealed[0].jwe as string).split('.');
    expect(JSON.parse(Buffer.from(protectedB64!, 'base64url').toString())).toMatchObject({ alg: 'RSA-OAEP-256', enc: 'A256GCM' });
    const key = forge.pki.privateKeyFromPem(operator.privateKey);
    const cek = key.decrypt(Buffer.from(encKey!, 'base64url').toString('binary'), 'RSA-OAEP', {
      md: forge.md.sha256.create(),
      mgf1: { md: forge.md.sha256.create() },
    });
    const decipher = forge.cipher.createDecipher('AES-GCM', cek);
    decipher.start({
      iv: Buffer.from(iv!, 'base64url').toString('binary'),
      additionalData: protectedB64!,
      tag: forge.util.createBuffer(Buffer.from(tag!, 'base64url').toString('binary')),
    });
    decipher.update(forge.util.createBuffer(Buffer.from(ciphertext!, 'base64url').toString('binary')));
    expect(decipher.finish()).toBe(true);
    expect(tokens).toContain(decipher.output.getBytes());

    // Wrong key: clear error, nothing written, nothing marked revealed.
    const dir = await mkdtemp(join(tmpdir(), 'secrets-'));
    await expect(provisioner.revealSecrets('keyed', stranger.privateKey, join(dir, 'wrong.csv'))).rejects.toThrow(
      /does not open the sealed secrets/,
    );
    expect(existsSync(join(dir, 'wrong.csv'))).toBe(false);

    // Once: the file has every token, mode 0600; a second call refuses.
    expect(await provisioner.revealSecrets('keyed', operator.privateKey, join(dir, 'secrets.csv'))).toBe(5);
    const file = await readFile(join(dir, 'secrets.csv'), 'utf8');
    expect(((await stat(join(dir, 'secrets.csv'))).mode & 0o777).toString(8)).toBe('600');
    expect(file.match(/dataset-[A-Za-z0-9]{24}/g)!.sort()).toEqual([...tokens].sort());
    await expect(provisioner.revealSecrets('keyed', operator.privateKey, join(dir, 'again.csv'))).rejects.toThrow(/revealed already/);
    expect((await env.db.query(`SELECT count(*)::int AS n FROM dify_provision.sealed_secrets WHERE jwe IS NOT NULL`)).rows[0].n).toBe(0);
  });

  it('rejects a row that asks for a key when the batch has no seal key, and provisions the rest', async () => {
    await setup('bindings');
    const batch = await provisioner.enqueue(
      [
        { workspace_name: 'Plain', owner_email: 'owner1@example.com' },
        { workspace_name: 'Wants key', owner_email: 'owner2@example.com', dataset_api_key: 'yes' } as never,
      ],
      { batchId: 'mixed-keys' },
    );
    expect(batch.summary).toMatchObject({ queued: 1, rejected: 1 });
    expect((await batch.report())[1]).toMatchObject({
      outcome: 'rejected',
      error: 'dataset_api_key: asks for an API key but the batch has no --seal-to key to seal it to',
    });
  });
});
