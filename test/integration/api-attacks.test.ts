// Attacks on the dashboard's HTTP API over real sockets, against real PostgreSQL and Redis: what
// an outsider (no token), a read-only token or another site can make the server hold.
import { readdir } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { listeningDashboard } from '../helpers/dashboard.js';
import { createTestEnv, type TestEnv } from '../helpers/test-env.js';
import { xlsxBomb } from '../helpers/zip-bomb.js';

const ADMIN = 'attack-admin-token-0123456789';
const READER = 'attack-read-only-token-0123456789';
let env: TestEnv;
let dashboard: Awaited<ReturnType<typeof listeningDashboard>>;
let port: number;
let uploads: string;
const CAP = 1 << 20;

beforeEach(async () => {
  env = await createTestEnv();
  dashboard = await listeningDashboard(env, { token: ADMIN, readTokens: [READER], maxBytes: CAP });
  ({ port, uploads } = dashboard);
});
afterEach(async () => {
  await dashboard.close();
  await env.cleanup();
});

/**
 * Sends a request's head and the first bytes of a body that never ends (a slow client), and
 * resolves with the answer's status line once the server has closed the connection. A server
 * that keeps reading the body it refused lets anyone hold its connections for as long as they
 * like (fastify has no request timeout): the socket is then still open after the answer, and
 * this fails after a minute of waiting for the close.
 */
function refusedSlowBody(head: string, body?: string): Promise<{ status: string; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const socket: Socket = connect(port, '127.0.0.1');
    let answer = '';
    const chunked = /transfer-encoding: chunked/i.test(head);
    const piece = chunked ? '1\r\nx\r\n' : 'x';
    const drip = setInterval(() => socket.writable && socket.write(piece), 200);
    socket.setEncoding('utf8');
    // No answer in two minutes: the server is reading the body to its (never coming) end.
    let waiting: NodeJS.Timeout | undefined = setTimeout(() => {
      socket.destroy();
      reject(new Error('no answer in two minutes: the server goes on reading a body that never ends'));
    }, 120_000);
    socket.on('data', (d: string) => {
      answer += d;
      // Answered: the server has a minute to close the connection (it keeps it open forever when it
      // goes on reading the refused body).
      if (answer.length > d.length) return;
      clearTimeout(waiting);
      waiting = setTimeout(() => {
        socket.destroy();
        reject(new Error(`answered "${answer.split('\r\n')[0]}" but kept reading the refused body: the connection stayed open`));
      }, 60_000);
    });
    socket.on('error', (err) => (/EPIPE|ECONNRESET/.test(err.message) ? undefined : reject(err)));
    socket.on('close', () => {
      clearInterval(drip);
      clearTimeout(waiting);
      resolve({ status: answer.split('\r\n')[0]!, closed: true });
    });
    socket.write(`${head}\r\n\r\n${body ?? (chunked ? `400\r\n${'x'.repeat(1024)}\r\n` : 'x'.repeat(1024))}`);
  });
}

describe('a refused request cannot hold a connection with a body that never ends', () => {
  it('no token, a read-only token, another site: answered, then the connection is closed', { timeout: 180_000 }, async () => {
    const post = (path: string, headers: string[]) =>
      [`POST ${path} HTTP/1.1`, `Host: 127.0.0.1:${port}`, 'Content-Type: text/csv', ...headers].join('\r\n');
    const visit = await fetch(`http://127.0.0.1:${port}/?token=${ADMIN}`, { redirect: 'manual' });
    const session = String(visit.headers.get('set-cookie')).split(';')[0]!;
    const cases = [
      { head: post('/api/v1/batches', ['Content-Length: 1000000000']), status: '401' },
      { head: post('/api/v1/plans', ['Transfer-Encoding: chunked']), status: '401' },
      { head: post('/api/v1/batches', [`Authorization: Bearer ${READER}`, 'Content-Length: 1000000000']), status: '403' },
      {
        head: post('/api/v1/batches/x/cancel', [`Cookie: dify_provision_session=forged`, 'Content-Length: 1000000000']),
        status: '401',
      },
      // The admin's own session, from a page on another port: refused as cross-site.
      { head: post('/api/v1/batches', [`Cookie: ${session}`, 'Origin: http://127.0.0.1:1', 'Content-Length: 1000000000']), status: '403' },
    ];
    for (const c of cases) {
      const got = await refusedSlowBody(c.head);
      expect(got.status, c.head).toContain(` ${c.status} `);
    }
  });
});

describe('a multipart upload is bounded in all its bytes, not only in its file part', () => {
  it(
    'a chunked form whose bytes are all outside a file part (a preamble that never ends) is refused past the cap',
    { timeout: 180_000 },
    async () => {
      const boundary = 'dify-provision-boundary';
      const head = [
        'POST /api/v1/plans HTTP/1.1',
        `Host: 127.0.0.1:${port}`,
        `Authorization: Bearer ${ADMIN}`,
        `Content-Type: multipart/form-data; boundary=${boundary}`,
        'Transfer-Encoding: chunked',
      ].join('\r\n');
      // Busboy skips a preamble before the first boundary: 3 MiB of it, past the 1 MiB cap and the
      // 1 MiB allowed for form fields, then a byte at a time for as long as the server reads.
      const junk = 'y'.repeat(64 << 10);
      const preamble = `${junk.length.toString(16)}\r\n${junk}\r\n`.repeat(48);
      const got = await refusedSlowBody(head, preamble);
      expect(got.status).toContain(' 413 ');
      expect(await readdir(uploads)).toEqual([]);
    },
  );
});

describe('a zip bomb as an .xlsx plan', () => {
  const XLSX = 'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet';
  const plan = (body: Uint8Array<ArrayBuffer> | FormData, headers: Record<string, string> = {}) =>
    fetch(`http://127.0.0.1:${port}/api/v1/plans`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN}`, ...headers }, body });
  const refused = async (res: Response) => {
    const body = await res.text();
    expect(res.status, body).toBe(422);
    expect(JSON.parse(body).error).toMatchObject({ code: 'CSV_FORMAT', message: expect.stringContaining('--max-bytes') });
  };

  it("is bounded by the dashboard's --max-bytes, as a batch is: shared strings held in memory, a sheet inflating past it", async () => {
    // The same workbook, inflating to less than the cap, is an ordinary file: its row is planned.
    const small = await plan(xlsxBomb('sheet', CAP / 2), { 'content-type': XLSX });
    expect(small.status, await small.clone().text()).toBe(200);
    expect(await small.json()).toMatchObject({ total: 1, input: { format: 'xlsx', sheet: 'Customers' } });
    // 32 MiB of shared strings (held in memory) from a few KiB, as the raw body: within the
    // library's default bounds (1 GiB), far past this dashboard's 1 MiB.
    const strings = xlsxBomb('sharedStrings', 32 << 20);
    expect(strings.length).toBeLessThan(CAP);
    await refused(await plan(strings, { 'content-type': XLSX }));
    // A sheet inflating to 256 MiB, multipart.
    const sheet = xlsxBomb('sheet', 256 << 20);
    expect(sheet.length).toBeLessThan(CAP);
    const form = new FormData();
    form.set('file', new Blob([sheet], { type: XLSX }), 'customers.xlsx');
    await refused(await plan(form));
    expect(await readdir(uploads)).toEqual([]);
  });
});
