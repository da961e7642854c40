// The API as `dify-provision dashboard` serves it (the built CLI, its own process): read-only
// tokens from DASHBOARD_READ_TOKENS and --read-token-file, uploads capped by --max-bytes, spooled
// under the process's temp dir and never left there.
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { csvOf } from '../helpers/batch.js';
import type { Background } from '../helpers/cli.js';
import { startDashboard } from '../helpers/dashboard.js';
import { createTestEnv, type TestEnv } from '../helpers/test-env.js';

const ADMIN = 'cli-api-admin-token-0123456789';
const FROM_ENV = 'cli-api-read-token-from-env-01';
const FROM_FLAG = 'cli-api-read-token-from-flag-1';
let env: TestEnv;
let dash: Background | undefined;
let base: string;
let tmp: string;

beforeAll(async () => {
  env = await createTestEnv();
  tmp = join(env.dir, 'tmp');
  await mkdir(tmp);
  const tokens = join(env.dir, 'read-tokens');
  await writeFile(tokens, `${FROM_FLAG}\n`, { mode: 0o600 });
  const started = await startDashboard(
    { ...env.env, DASHBOARD_TOKEN: ADMIN, DASHBOARD_READ_TOKENS: `${FROM_ENV}, other-read-token-0123456`, TMPDIR: tmp },
    ['--read-token-file', tokens, '--max-bytes', '64KiB'],
  );
  dash = started.dash;
  base = started.base;
  expect(dash.output()).toContain(`dashboard: ${base}/`);
});
afterAll(async () => {
  await dash?.stop('SIGKILL');
  await env?.cleanup();
});

const call = (path: string, token: string, init: RequestInit = {}) =>
  fetch(`${base}/api/v1${path}`, { ...init, headers: { authorization: `Bearer ${token}`, ...(init.headers as Record<string, string>) } });
const csv = (text: string): RequestInit => ({ method: 'POST', headers: { 'content-type': 'text/csv' }, body: text });

describe('dify-provision dashboard serves /api/v1', () => {
  it('takes read-only tokens from the environment and a file, and caps uploads at --max-bytes', async () => {
    const small = csvOf([{ workspace_name: 'Acme', owner_email: 'owner1@example.com' }]);
    for (const reader of [FROM_ENV, FROM_FLAG]) {
      expect((await call('/batches', reader)).status).toBe(200);
      const refused = await call('/batches?batch_id=by-reader', reader, csv(small));
      expect(refused.status).toBe(403);
      expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('READ_ONLY');
    }
    const created = await call('/batches?batch_id=small', ADMIN, csv(small));
    expect(created.status, await created.clone().text()).toBe(201);
    expect(await created.json()).toMatchObject({ batch_id: 'small', queued: 1 });

    const line = 'Workspace,owner1@example.com\n';
    const big = `workspace_name,owner_email\n${line.repeat(Math.ceil((100 << 10) / line.length))}`;
    const tooBig = await call('/batches?batch_id=big', ADMIN, csv(big));
    expect(tooBig.status).toBe(413);
    expect(((await tooBig.json()) as { error: { code: string; message: string } }).error).toMatchObject({
      code: 'UPLOAD_TOO_LARGE',
      message: expect.stringContaining('65536 bytes'),
    });
    expect((await call('/batches/big', ADMIN)).status).toBe(404);
    expect(await readdir(tmp)).toEqual([]);
  });
});
