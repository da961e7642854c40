// Every dashboard request carries the token (Authorization: Bearer or an X-Dashboard-Token header)
// or a browser session made from it; only the health check and the icon are open. A ?token= in
// the address is only traded for a session by a page visit (the API never takes it).
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
/**
 * Sessions held at once per token: a token's oldest session goes first when it makes one more.
 * Per token, so that visits with a read-only token (which many may hold) never push out the
 * admin's sessions, or another read token's.
 */
export const MAX_SESSIONS_PER_TOKEN = 1000;

/** The dashboard token is the admin's; a read token (DASHBOARD_READ_TOKENS) reads only: GETs. */
export type Role = 'admin' | 'read';

/** Who a token is: its role, and which token it is (`admin`, `read:0`, ...), never the token itself. */
export interface Holder {
  role: Role;
  token: string;
}

export interface Sessions {
  readonly ttlMs: number;
  /** A new session value (for the cookie), for the token it was made from. */
  create(holder?: Holder): string;
  /** The session's role, if it is live. */
  valid(value: string): Role | undefined;
}

export function sessionStore(ttlMs = SESSION_TTL_MS, perToken = MAX_SESSIONS_PER_TOKEN): Sessions {
  // sha256 of the value -> when it ends and whose it is; and each token's sessions, oldest first.
  const sessions = new Map<string, { end: number; holder: Holder }>();
  const byToken = new Map<string, Set<string>>();
  const digest = (value: string) => createHash('sha256').update(value).digest('base64');
  const drop = (h: string) => {
    const s = sessions.get(h);
    if (!s) return;
    sessions.delete(h);
    const own = byToken.get(s.holder.token);
    own?.delete(h);
    if (own?.size === 0) byToken.delete(s.holder.token);
  };
  return {
    ttlMs,
    create(holder = { role: 'admin', token: 'admin' }) {
      const now = Date.now();
      for (const [h, s] of sessions) if (s.end <= now) drop(h);
      const own = byToken.get(holder.token) ?? new Set<string>();
      while (own.size >= perToken) drop(own.values().next().value!);
      const value = randomBytes(32).toString('base64url');
      const h = digest(value);
      sessions.set(h, { end: now + ttlMs, holder });
      byToken.set(holder.token, own.add(h));
      return value;
    },
    valid(value) {
      const h = digest(value);
      const session = sessions.get(h);
      if (session === undefined) return undefined;
      if (session.end > Date.now()) return session.holder.role;
      drop(h);
      return undefined;
    },
  };
}

type Presented = { kind: 'token'; value: string } | { kind: 'session'; values: string[] };

/**
 * The token or sessions a request carries in its headers (a ?token= in the address is not one:
 * see requireToken). Every session cookie is taken, not only the first: a page on another port of
 * this host can set a cookie of the same name for this host (cookies ignore ports), with a longer
 * Path so that the browser sends it first; taking the first would let it log the admin out, or
 * put a read-only session it holds in front of the admin's.
 */
function presented(req: FastifyRequest): Presented | undefined {
  const auth = req.headers.authorization;
  if (auth?.startsWith('Bearer ')) return { kind: 'token', value: auth.slice(7) };
  const header = req.headers['x-dashboard-token'];
  if (typeof header === 'string') return { kind: 'token', value: header };
  const values = (req.headers.cookie ?? '')
    .split(';')
    .map((c) => c.trim())
    .filter((c) => c.startsWith(`${SESSION_COOKIE}=`))
    .map((c) => c.slice(SESSION_COOKIE.length + 1));
  return values.length > 0 ? { kind: 'session', values } : undefined;
}

/** The best live session among those presented: the admin's if one is, else a read-only one. */
function sessionRole(sessions: Sessions, values: string[]): Role | undefined {
  const roles = values.map((v) => sessions.valid(v));
  return roles.includes('admin') ? 'admin' : roles.includes('read') ? 'read' : undefined;
}

/** The ?token= of the address, if there is one (any value, even an empty or a repeated one). */
function addressToken(req: FastifyRequest): string | undefined {
  const query = (req.query as Record<string, unknown> | undefined)?.token;
  if (query === undefined) return undefined;
  return typeof query === 'string' ? query : '';
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
  // Leading slashes first: `//api/v1/…` is a path here, never a host named `api`.
  const url = new URL(`/${rawUrl.replace(/^[/\\]+/, '')}`, 'http://dashboard.invalid');
  url.searchParams.delete('token');
  return `/${url.pathname.replace(/^[/\\]+/, '')}${url.search}`;
}

/**
 * The path a request is served by: the pattern of the route the router matched (it decodes
 * percent-escapes, so `/%71ueues/…` is routed to `/queues/…`), or, when no route matches, the
 * decoded path. Every decision about a path is made on this, never on the raw address.
 */
export function routedPath(req: FastifyRequest): string {
  const routed = req.routeOptions.url;
  if (routed !== undefined) return routed;
  const path = req.url.split('?')[0]!;
  try {
    return decodeURIComponent(path);
  } catch {
    return path;
  }
}

/** The versioned API, the console's JSON and bull-board's: they take the token as a header only. */
// What a program reads (the APIs and the metrics a scraper takes) is never a page a browser opens.
const isApi = (path: string) =>
  path.startsWith('/api/') || path.startsWith('/queues/api/') || /^\/(metrics|favicon\.(svg|ico))\/?$/.test(path);

/**
 * Whether a ?token= request is for the API, judged on the path as routed and on where the
 * exchange would send it: `/./api/v1/…`, `/x/../api/v1/…` or `//api/v1/…` are routed nowhere but
 * redirect to the API, and must not come back with a session for it.
 */
function forApi(req: FastifyRequest): boolean {
  if (isApi(routedPath(req))) return true;
  const target = sameSiteTarget(req.url).split('?')[0]!;
  let decoded = target;
  try {
    decoded = decodeURIComponent(target);
  } catch {
    // not decodable: judged as written
  }
  return isApi(target) || isApi(decoded.replace(/^[/\\]+/, '/'));
}

/** The tokens a dashboard takes: its own (admin) and read-only ones. */
export interface Tokens {
  admin: string;
  read?: readonly string[];
}

const roles = new WeakMap<FastifyRequest, Role>();
/** The role of an authenticated request (undefined on the open paths). */
export const roleOf = (req: FastifyRequest): Role | undefined => roles.get(req);

function holderOf(value: string, tokens: Tokens): Holder | undefined {
  if (same(value, tokens.admin)) return { role: 'admin', token: 'admin' };
  const i = tokens.read?.findIndex((t) => same(value, t)) ?? -1;
  return i >= 0 ? { role: 'read', token: `read:${i}` } : undefined;
}

/** The versioned API answers in its JSON error body; the pages and the rest as plain text. */
export function refuse(req: FastifyRequest, reply: FastifyReply, status: number, code: string, message: string): FastifyReply {
  // Refused before its body was read: the connection closes after the answer, so whoever sent
  // the request (no token, a read-only one, another site) cannot hold it open with a body that
  // never ends (fastify sets no request timeout).
  void reply.header('connection', 'close');
  if (routedPath(req).startsWith('/api/v1/')) return reply.code(status).send({ error: { code, message } });
  return reply.code(status).type('text/plain').send(`${status}: ${message}\n`);
}

const NEEDS_TOKEN = 'this dashboard needs its token (open it with ?token=…, or send Authorization: Bearer …)';

export function requireToken(app: FastifyInstance, tokens: Tokens, open: string[], sessions: Sessions = sessionStore()): void {
  app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
    const path = routedPath(req);
    if (open.includes(path)) return;
    // A token in the address ends up in proxy logs and shell history: it is only ever traded for
    // a session, by a page visit (GET), which then drops it from the address bar. The API and
    // every other request take the token as a header; one with ?token= is refused, whatever else
    // it carries, so that a client sending it learns at once.
    const inAddress = addressToken(req);
    if (inAddress !== undefined) {
      if ((req.method !== 'GET' && req.method !== 'HEAD') || forApi(req)) {
        return refuse(
          req,
          reply,
          401,
          'TOKEN_IN_ADDRESS',
          'a token in the address (?token=) only opens the dashboard pages in a browser: send it as Authorization: Bearer …',
        );
      }
      const holder = holderOf(inAddress, tokens);
      if (!holder) return refuse(req, reply.header('www-authenticate', 'Bearer'), 401, 'UNAUTHORIZED', NEEDS_TOKEN);
      // Trade the token in the address for a new session, and drop it from the address bar.
      return reply
        .header(
          'set-cookie',
          `${SESSION_COOKIE}=${sessions.create(holder)}; HttpOnly; SameSite=Strict; Path=/; Max-Age=${Math.ceil(sessions.ttlMs / 1000)}`,
        )
        .redirect(sameSiteTarget(req.url));
    }
    const given = presented(req);
    const role = given && (given.kind === 'token' ? holderOf(given.value, tokens)?.role : sessionRole(sessions, given.values));
    if (!role) {
      return refuse(
        req,
        reply.header('www-authenticate', 'Bearer'),
        401,
        'UNAUTHORIZED',
        given?.kind === 'session'
          ? 'this dashboard session has ended (or belongs to another dashboard process): open the address with ?token=… again'
          : NEEDS_TOKEN,
      );
    }
    roles.set(req, role);
    // A read-only token reads: status, rows, reports (GET); anything else is the admin token's.
    if (role === 'read' && req.method !== 'GET' && req.method !== 'HEAD') {
      return refuse(req, reply, 403, 'READ_ONLY', 'this token is read-only (status and reports): changes need the dashboard token');
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
      return refuse(
        req,
        reply,
        403,
        'CROSS_SITE',
        'cross-site request refused (state changes come from the dashboard page itself, or with Authorization: Bearer)',
      );
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
