// `dify-provision dashboard` keeps its tokens out of `ps` and out of its output (which compose
// and Kubernetes keep as logs): read-only tokens come from the environment or a file, a
// generated admin token goes to a new 0600 file. The built CLI as a process of its own.
import { execFile } from 'node:child_process';
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, startProgram, type Background } from '../helpers/cli.js';
import { startDashboard } from '../helpers/dashboard.js';
import { freePort } from '../../src/services/local-services.js';
import { createTestEnv, type TestEnv } from '../helpers/test-env.js';

const ADMIN = 'tokens-admin-token-0123456789';
const IN_FILE = 'tokens-read-only-from-a-file-01';
const SECOND_IN_FILE = 'tokens-read-only-from-a-file-02';
let env: TestEnv;
let baseEnv: NodeJS.ProcessEnv;
const procs: Background[] = [];

beforeAll(async () => {
  env = await createTestEnv();
  const { DASHBOARD_TOKEN: _admin, DASHBOARD_READ_TOKENS: _read, ...rest } = env.env;
  baseEnv = rest;
});
afterAll(async () => {
  await Promise.all(procs.map((p) => p.stop('SIGKILL')));
  await env?.cleanup();
});

/** Every process's command line, as any user of the machine sees it. */
const ps = async () => (await promisify(execFile)('ps', ['-eww', '-o', 'pid=,args='], { maxBuffer: 16 << 20 })).stdout;

const get = (base: string, token: string) => fetch(`${base}/api/v1/batches`, { headers: { authorization: `Bearer ${token}` } });

describe('dashboard tokens stay out of ps and out of the output', () => {
  it('takes read-only tokens from a file: none is in any command line, and each reads but changes nothing', async () => {
    const file = join(env.dir, 'read-tokens');
    await writeFile(file, `# readers\n${IN_FILE}\n\n  ${SECOND_IN_FILE}  \n`, { mode: 0o600 });
    const { dash, base } = await startDashboard({ ...baseEnv, DASHBOARD_TOKEN: ADMIN }, ['--read-token-file', file]);
    procs.push(dash);
    expect(dash.output()).toContain(`dashboard: ${base}/ (token: DASHBOARD_TOKEN)`);
    const listed = await ps();
    expect(listed).toContain(`--read-token-file ${file}`); // the dashboard's own line is there
    for (const secret of [ADMIN, IN_FILE, SECOND_IN_FILE]) expect(listed).not.toContain(secret);
    for (const reader of [IN_FILE, SECOND_IN_FILE]) {
      expect((await get(base, reader)).status).toBe(200);
      const post = await fetch(`${base}/api/v1/batches?batch_id=by-reader`, {
        method: 'POST',
        headers: { authorization: `Bearer ${reader}`, 'content-type': 'text/csv' },
        body: 'workspace_name,owner_email\nAcme,owner1@example.com\n',
      });
      expect(post.status).toBe(403);
    }
    expect(dash.output()).not.toContain(IN_FILE);
  });

  it('refuses --read-token, without repeating the token', async () => {
    const secret = 'tokens-on-the-command-line-0001';
    const { dash } = await startDashboard({ ...baseEnv, DASHBOARD_TOKEN: ADMIN }, ['--read-token', secret]);
    procs.push(dash);
    // It never starts serving (startDashboard returns when it prints its address, or ends).
    expect(dash.output()).not.toContain('dashboard: ');
    expect(await dash.exited, dash.output()).not.toBe(0);
    expect(dash.output()).toMatch(/--read-token is gone: .*shows in `ps`.*DASHBOARD_READ_TOKENS.*--read-token-file/);
    expect(dash.output()).not.toContain(secret);
  });

  it('writes a generated token to a new 0600 file, never to its output, and removes it when stopped', async () => {
    const { dash, base } = await startDashboard(baseEnv);
    procs.push(dash);
    const m = /\(token generated for this run, in (\/\S+) \(0600\)/.exec(dash.output());
    expect(m, dash.output()).not.toBeNull();
    const file = m![1]!;
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect((await stat(dirname(file))).mode & 0o777).toBe(0o700);
    const token = (await readFile(file, 'utf8')).trim();
    expect(token).toMatch(/^[A-Za-z0-9_-]{32}$/);
    expect(dash.output()).not.toContain(token);
    expect(await ps()).not.toContain(token);
    expect((await get(base, token)).status).toBe(200);
    expect(dash.output()).toContain(`dashboard: ${base}/\n`);
    await dash.stop('SIGTERM');
    await expect(stat(dirname(file))).rejects.toThrow(/ENOENT/);
  });

  it('writes it where --token-file says', async () => {
    const file = join(env.dir, 'dashboard-token');
    const { dash, base } = await startDashboard(baseEnv, ['--token-file', file]);
    procs.push(dash);
    expect(dash.output()).toContain(`in ${file} (0600)`);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const token = (await readFile(file, 'utf8')).trim();
    expect(dash.output()).not.toContain(token);
    expect((await get(base, token)).status).toBe(200);
  });

  it('shows a generated token once when its output is a terminal (util-linux script gives it one), and writes no file', async () => {
    const tmp = join(env.dir, 'tty-tmp');
    await mkdir(tmp);
    const port = await freePort();
    const command = `'${process.execPath}' '${CLI}' dashboard --port ${port}`;
    const dash = startProgram('script', ['-qfec', command, '/dev/null'], { ...baseEnv, TMPDIR: tmp });
    procs.push(dash);
    let ended = false;
    void dash.exited.then(() => (ended = true));
    for (let i = 0; i < 1200 && !ended && !/shown only here/.test(dash.output()); i++) await new Promise((r) => setTimeout(r, 100));
    const m =
      /dashboard: (http:\/\/127\.0\.0\.1:\d+\/\?token=([A-Za-z0-9_-]{32}))\r?\n\(token generated for this run, shown only here/.exec(
        dash.output(),
      );
    expect(m, dash.output()).not.toBeNull();
    expect((await get(`http://127.0.0.1:${port}`, m![2]!)).status).toBe(200);
    expect(await readdir(tmp)).toEqual([]);
  });
});
