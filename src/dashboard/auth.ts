// Every dashboard request carries the token (Authorization: Bearer, an X-Dashboard-Token header,
// or ?token=) or a browser session made from it; only the health check and the icon are open.
//
// Browsers send a cookie to every port of its host (cookies ignore ports), so a page on another
// local port can send the browser there and read it. The token itself therefore never goes into
// a cookie: a first ?token= visit trades it for a session, a random value that only this
// dashboard process knows (held in its memory, as a hash), that ends after SESSION_TTL_MS, and
// that works only as the cookie (never as a Bearer token or ?token=). Each dashboard process has
// its own sessions: another process (or a restart) answers 401 to them, and the browser opens
// the address with ?token= again.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

export const SESSION_COOKIE = 'dify_provision_session';
/** One hour from the ?token= visit, then the address with ?token= again. */
export const SESSION_TTL_MS = 60 * 60 * 1000;
/** Sessions held at once: the oldest goes first (only a holder of the token can make them). */
const MAX_SESSIONS = 1000;

export interface Sessions {
  readonly ttlMs: number;
  /** A new session value (for the cookie). */
  create(): string;
  valid(value: string): boolean;
}

export function sessionStore(ttlMs = SESSION_TTL_MS, max = MAX_SESSIONS): Sessions {
  const expiries = new Map<string, number>(); // sha256 of the value -> when it ends
  const digest = (value: string) => createHash('sha256').update(value).digest('base64');
  return {
    ttlMs,
    create() {
      const now = Date.now();
      for (const [h, end] of expiries) if (end <= now) expiries.delete(h);
      while (expiries.size >= max) expiries.delete(expiries.keys().next().value!);
      const value = randomBytes(32).toString('base64url');
      expiries.set(digest(value), now + ttlMs);
      return value;
    },
    valid(value) {
      const h = digest(value);
      const end = expiries.get(h);
      if (end === undefined) return false;
      if (end > Date.now()) return true;
      expiries.delete(h);
      return false;
    },
  };
}

type Presented = { kind: 'token' | 'session'; value: string };

function presented(req: FastifyRequest): Presented | undefined {
  const auth = req.headers.authorization;
  if (auth?.startsWith('Bearer ')) return { kind: 'token', value: auth.slice(7) };
  const header = req.headers['x-dashboard-token'];
  if (typeof header === 'string') return { kind: 'token', value: header };
  const query = (req.query as Record<string, unknown> | undefined)?.token;
  if (typeof query === 'string') return { kind: 'token', value: query };
  const cookie = req.headers.cookie
    ?.split(';')
    .map((c) => c.trim())
    .find((c) => c.startsWith(`${SESSION_COOKIE}=`));
  return cookie ? { kind: 'session', value: cookie.slice(SESSION_COOKIE.length + 1) } : undefined;
}

function same(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * Where a ?token= visit goes next: the same path on this dashboard, without the token. A path
 * that a browser would read as another host (`//evil.example/`, `/\evil.example/`, reached with
 * `/x/..//evil.example/`) keeps a single leading slash.
 */
export function sameSiteTarget(rawUrl: string): string {
  const url = new URL(rawUrl, 'http://dashboard.invalid');
  url.searchParams.delete('token');
  return `/${url.pathname.replace(/^[/\\]+/, '')}${url.search}`;
}

export function requireToken(app: FastifyInstance, token: string, open: string[], sessions: Sessions = sessionStore()): void {
  app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
    const path = req.url.split('?')[0]!;
    if (open.includes(path)) return;
    const given = presented(req);
    const ok = given && (given.kind === 'token' ? same(given.value, token) : sessions.valid(given.value));
    if (!ok) {
      return reply
        .code(401)
        .header('www-authenticate', 'Bearer')
        .type('text/plain')
        .send(
          given?.kind === 'session'
            ? '401: this dashboard session has ended (or belongs to another dashboard process): open the address with ?token=… again\n'
            : '401: this dashboard needs its token (open it with ?token=…, or send Authorization: Bearer …)\n',
        );
    }
    const query = (req.query as Record<string, unknown> | undefined)?.token;
    if (typeof query === 'string' && req.method === 'GET') {
      // Trade the token in the address for a new session, and drop it from the address bar.
      return reply
        .header(
          'set-cookie',
          `${SESSION_COOKIE}=${sessions.create()}; HttpOnly; SameSite=Strict; Path=/; Max-Age=${Math.ceil(sessions.ttlMs / 1000)}`,
        )
        .redirect(sameSiteTarget(req.url));
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
