// Every dashboard request carries the token (Authorization: Bearer, the cookie set by a first
// ?token= visit, or an X-Dashboard-Token header); only the health check is open.
import { timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

export const COOKIE = 'dify_provision_token';

function presented(req: FastifyRequest): string | undefined {
  const auth = req.headers.authorization;
  if (auth?.startsWith('Bearer ')) return auth.slice(7);
  const header = req.headers['x-dashboard-token'];
  if (typeof header === 'string') return header;
  const cookie = req.headers.cookie
    ?.split(';')
    .map((c) => c.trim())
    .find((c) => c.startsWith(`${COOKIE}=`));
  if (cookie) return decodeURIComponent(cookie.slice(COOKIE.length + 1));
  const query = (req.query as Record<string, unknown> | undefined)?.token;
  return typeof query === 'string' ? query : undefined;
}

function same(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export function requireToken(app: FastifyInstance, token: string, open: string[]): void {
  app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
    const path = req.url.split('?')[0]!;
    if (open.includes(path)) return;
    const given = presented(req);
    if (!given || !same(given, token)) {
      return reply
        .code(401)
        .header('www-authenticate', 'Bearer')
        .type('text/plain')
        .send('401: this dashboard needs its token (open it with ?token=…, or send Authorization: Bearer …)\n');
    }
    const query = (req.query as Record<string, unknown> | undefined)?.token;
    if (typeof query === 'string' && req.method === 'GET') {
      // Trade the token in the address for a cookie, and drop it from the address bar.
      const url = new URL(req.url, 'http://x');
      url.searchParams.delete('token');
      return reply
        .header('set-cookie', `${COOKIE}=${encodeURIComponent(token)}; HttpOnly; SameSite=Strict; Path=/`)
        .redirect(url.pathname + url.search);
    }
  });
}

/**
 * Cross-site request forgery: a page on another port of this host is "same site", so the
 * SameSite cookie alone does not stop it. A state change must come from our own origin
 * (Sec-Fetch-Site / Origin, when the browser sends them), and one authenticated by the cookie
 * must carry a header no form can set (X-Requested-With: dify-provision; a cross-origin script
 * that sets it needs a CORS preflight we never grant). A request with Authorization: Bearer
 * is not forgeable by a page (browsers never attach it by themselves).
 */
export function guardStateChanges(app: FastifyInstance): void {
  app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
    if (req.method === 'GET' || req.method === 'HEAD' || req.method === 'OPTIONS') return;
    const site = req.headers['sec-fetch-site'];
    const origin = req.headers.origin;
    const bearer = req.headers.authorization?.startsWith('Bearer ') ?? false;
    const foreign =
      (typeof site === 'string' && site !== 'same-origin' && site !== 'none') ||
      (typeof origin === 'string' && hostOf(origin) !== req.headers.host) ||
      (!bearer && req.headers['x-requested-with'] !== 'dify-provision');
    if (foreign) {
      return reply
        .code(403)
        .type('text/plain')
        .send('403: cross-site request refused (state changes come from the dashboard page itself, or with Authorization: Bearer)\n');
    }
  });
}

function hostOf(origin: string): string | undefined {
  try {
    return new URL(origin).host;
  } catch {
    return undefined;
  }
}
