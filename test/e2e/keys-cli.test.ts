import { generateKeyPairSync } from 'node:crypto';
import { existsSync } from 'node:fs';
import { execFileSync, spawn } from 'node:child_process';
import { mkdir, open, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CLI, runCli, startCli } from '../helpers/cli.js';
import { useCliWorld } from '../helpers/cli-env.js';

const world = useCliWorld();

const dir = () => world.env.dir;

describe('API keys from the CLI', () => {
  it('mints keys in bulk from a CSV of tenant/dataset pairs, lists them masked, and never writes over a file', async () => {
    const { rows: t } = await world.env.db.query<{ id: string }>(`INSERT INTO tenants (name) VALUES ('a'), ('b') RETURNING id`);
    const [a, b] = t.map((r) => r.id) as [string, string];
    const { rows: acc } = await world.env.db.query<{ id: string }>(`SELECT id FROM accounts LIMIT 1`);
    const { rows: ds } = await world.env.db.query<{ id: string }>(
      `INSERT INTO datasets (tenant_id, name, created_by) VALUES ($1, 'kb', $2) RETURNING id`,
      [b, acc[0]!.id],
    );
    const pairs = join(dir(), `${world.env.name}-pairs.csv`);
    await writeFile(pairs, `tenant_id,dataset_id\n${a},\n${b},${ds[0]!.id}\n${b},${'f'.repeat(8)}-0000-4000-8000-000000000000\n`);
    const out = join(dir(), `${world.env.name}-keys.csv`);
    const r = await runCli(['keys', 'create', '--from', pairs, '--out', out], world.env.env);
    expect(r.code).toBe(1); // one pair named a knowledge base of no such workspace
    expect(r.stderr).toContain(
      `tenant ${b}: dataset: knowledge base(s) ffffffff-0000-4000-8000-000000000000 do not belong to workspace ${b}`,
    );
    const file = await readFile(out, 'utf8');
    expect(((await stat(out)).mode & 0o777).toString(8)).toBe('600');
    const tokens = file.match(/dataset-[A-Za-z0-9]{24}/g)!;
    expect(tokens).toHaveLength(2);
    expect(r.stderr).not.toContain(tokens[0]!);

    const list = await runCli(['keys', 'list', '--tenant', b], world.env.env);
    expect(list.stdout).toContain(`${tokens[1]!.slice(0, 5)}...${tokens[1]!.slice(-4)}`);
    expect(list.stdout).toContain(`knowledge bases ${ds[0]!.id}`);
    expect(list.stdout).not.toContain(tokens[1]!);

    const again = await runCli(['keys', 'create', '--tenant', a, '--out', out], world.env.env);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('exists already: choose a new file');
  });

  it('seals batch keys to the operator and reveals them once with `secrets`', async () => {
    const operator = generateKeyPairSync('rsa', {
      modulusLength: 2048,
      publicKeyEncoding: { type: 'spki', format: 'pem' },
      privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    });
    await writeFile(join(dir(), 'op.pub'), operator.publicKey);
    await writeFile(join(dir(), 'op.key'), operator.privateKey, { mode: 0o600 });
    const csv = join(dir(), `${world.env.name}-keys-batch.csv`);
    await writeFile(csv, 'workspace_name,owner_email,dataset_api_key\nK1,owner1@example.com,yes\nK2,owner2@example.com,no\n');
    const refused = await runCli(['ingest', csv, '--mint-dataset-keys', '--batch-id', 'nokey'], world.env.env);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('minting API keys needs --seal-to operator-public.pem');

    world.worker = startCli(['worker', '--concurrency', '2'], world.env.env);
    const ok = await runCli(
      ['ingest', csv, '--seal-to', join(dir(), 'op.pub'), '--batch-id', 'keys', '--wait', '--report-dir', dir()],
      world.env.env,
    );
    expect(ok.code, ok.stdout + ok.stderr).toBe(0);
    expect((await world.env.db.query(`SELECT count(*)::int AS n FROM api_tokens`)).rows[0].n).toBe(1); // K2 said no

    const out = join(dir(), 'revealed.csv');
    const first = await runCli(['secrets', 'keys', '--key', join(dir(), 'op.key'), '--out', out], world.env.env);
    expect(first.stdout, first.stderr).toContain('1 API key(s) of batch keys written to');
    expect(await readFile(out, 'utf8')).toMatch(
      /^line,tenant_id,api_token_id,token\n2,[0-9a-f-]{36},[0-9a-f-]{36},dataset-[A-Za-z0-9]{24}\n$/,
    );
    const second = await runCli(['secrets', 'keys', '--key', join(dir(), 'op.key'), '--out', join(dir(), 'again.csv')], world.env.env);
    expect(second.code).toBe(1);
    expect(second.stderr).toMatch(/were revealed already .* they are shown once/);
    expect(existsSync(join(dir(), 'again.csv'))).toBe(false);
  });

  it('on a full disk, mints no key whose token it could not write (a real tmpfs, and /dev/full as standard output)', async () => {
    const { rows: t } = await world.env.db.query<{ id: string }>(
      `INSERT INTO tenants (name) VALUES ('f1'), ('f2'), ('f3'), ('f4') RETURNING id`,
    );
    const ids = t.map((r) => r.id);
    const keysInDify = async () =>
      (await world.env.db.query<{ token: string }>(`SELECT token FROM api_tokens WHERE tenant_id = ANY($1::uuid[])`, [ids])).rows.map(
        (r) => r.token,
      );
    const pairs = join(dir(), `${world.env.name}-full.csv`);
    // 40 keys (10 per workspace, Dify's limit), about 4.6 KiB of output.
    await writeFile(pairs, `tenant_id\n${ids.flatMap((id) => Array.from({ length: 10 }, () => id)).join('\n')}\n`);

    // Standard output is /dev/full: the header cannot be written, so nothing is minted.
    const operator = generateKeyPairSync('rsa', {
      modulusLength: 2048,
      publicKeyEncoding: { type: 'spki', format: 'pem' },
      privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    });
    const sealTo = join(dir(), 'operator-public.pem');
    await writeFile(sealTo, operator.publicKey);
    const full = await open('/dev/full', 'w');
    try {
      const child = spawn(process.execPath, [CLI, 'keys', 'create', '--from', pairs, '--seal-to', sealTo], {
        env: world.env.env,
        stdio: ['ignore', full.fd, 'pipe'],
      });
      let stderr = '';
      child.stderr!.on('data', (d) => (stderr += d));
      const code = await new Promise<number | null>((r) => child.on('close', r));
      expect(code).not.toBe(0);
      expect(stderr).toMatch(/cannot write to standard output \(.*ENOSPC.*\): no key was minted/);
    } finally {
      await full.close();
    }
    expect(await keysInDify()).toEqual([]);

    // A 64 KiB tmpfs with one free page: the keys that fit are minted and written, the rest neither.
    const mnt = join(dir(), 'tiny');
    await mkdir(mnt);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', mnt]);
    try {
      const filler = join(mnt, 'filler');
      const fh = await open(filler, 'w');
      try {
        for (;;) await fh.write(Buffer.alloc(4096));
      } catch (err) {
        expect((err as NodeJS.ErrnoException).code).toBe('ENOSPC');
      }
      await fh.truncate((await fh.stat()).size - 4096); // one page free
      await fh.close();
      const out = join(mnt, 'keys.csv');
      const r = await runCli(['keys', 'create', '--from', pairs, '--out', out], world.env.env);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(
        /cannot write to .*keys\.csv \(.*\): the key being written was not minted, nor any after it; \d+ key\(s\) before it are in the output/,
      );
      const written = (await readFile(out, 'utf8')).match(/dataset-[A-Za-z0-9]{24}/g) ?? [];
      expect(written.length).toBeGreaterThan(0);
      expect(written.length).toBeLessThan(40);
      expect((await keysInDify()).sort()).toEqual([...written].sort());
      expect(r.stderr).toContain(`; ${written.length} key(s) before it are in the output`);
    } finally {
      execFileSync('umount', [mnt]);
    }
  });
});
