/**
 * labgate's routes: which request is one of them, decided once for every host (docs/security.md,
 * HTTP-4: the core and every adapter call {@link routeOf}, so a path that one of them takes for a
 * labgate route is one for all of them), and what each answers. Sign-out, the session list, account
 * linking and webhooks are here; the sign-in's two halves are src/core/signin.ts and callback.ts.
 */
import { readBody, readForm } from './body.js';
import { timingSafeEqual } from './crypto.js';
import { LabgateError } from './errors.js';
import { logText } from './log.js';
import { errorAnswer, htmlResponse, linkPage, logoutPage, PAGE_HEADERS, wantsJson } from './pages.js';
import type { AccessChecks } from './recheck.js';
import { safeRedirect, safeReturnTo } from './redirects.js';
import type { Runtime } from './runtime.js';
import type { Session, SessionState } from './sessions.js';
import { startSignIn } from './signin.js';
import type { Tokens } from './tokens.js';

/** Each route and the methods it answers (the `Allow` of a 405). */
export const ROUTE_METHODS: Readonly<Record<string, string>> = {
  '/login': 'GET, HEAD',
  '/callback': 'GET',
  '/logout': 'GET, HEAD, POST',
  '/sessions': 'GET, HEAD, POST',
  '/session': 'GET, HEAD',
  '/link': 'GET, HEAD, POST',
  '/webhooks/gitlab': 'POST',
};

// A path that URL parsing would change: dot segments (also `%2e`-encoded), backslashes, and the tab
// and newlines it drops. Only such a path pays for the parse (`/app.js` does not).
const NEEDS_PARSING = /\/\.|%2e|[\\\t\n\r]/i;

/**
 * The labgate route a request target (`/auth/login?returnTo=/`, or a URL's pathname) names, below
 * `prefix`: `'/login'`, `''` for the prefix itself, or a route labgate does not have (it answers 404);
 * `null` when the target is not under `prefix`, and the app serves it. The path is read as WHATWG URL
 * parsing reads it, as a `Request` built from the target would be: dot segments resolved (`/x/../auth`),
 * backslashes as slashes; encoded slashes stay encoded (`/auth%2Flogin` is not a route), and a repeated
 * slash is kept (`//auth/login` is not a route, `/auth//login` is an unknown one). Trailing slashes do not
 * count (`/auth/login/` is `/login`).
 */
export function routeOf(target: string, prefix: string): string | null {
  let end = target.length;
  const query = target.indexOf('?');
  if (query !== -1) end = query;
  const hash = target.indexOf('#');
  if (hash !== -1 && hash < end) end = hash;
  let path = end === target.length ? target : target.slice(0, end);
  if (NEEDS_PARSING.test(path)) {
    try {
      // The fixed origin keeps a target like `//host/x` a path.
      path = new URL(`http://labgate.invalid${path.startsWith('/') ? '' : '/'}${path}`).pathname;
    } catch {
      return null;
    }
  }
  if (!path.startsWith(prefix)) return null;
  if (path.length !== prefix.length && path.charCodeAt(prefix.length) !== 47 /* / */) return null;
  let last = path.length;
  while (last > prefix.length && path.charCodeAt(last - 1) === 47) last--;
  return path.slice(prefix.length, last);
}

/** The `Allow` value for a route (`routeOf`'s answer). */
export function allowedMethods(route: string): string {
  return ROUTE_METHODS[route] ?? 'GET, HEAD';
}

/** The sign-in URL that returns to `returnTo` (a same-origin path) afterwards. */
export function signInUrl(options: { prefix: string; origin: string }, returnTo?: string | null): string {
  const target = safeReturnTo(returnTo, options.origin, '');
  return target
    ? `${options.prefix}/login?returnTo=${encodeURIComponent(target)}`
    : `${options.prefix}/login`;
}

/** What the routes need besides the runtime. */
export interface RouteParts {
  tokens: Tokens;
  checks: AccessChecks;
  /** `GET /auth/callback`. */
  callback(request: Request): Promise<Response>;
  /** The session of a `Cookie` header, its access re-checked when due (what `getSession` answers). */
  find(header: string | null): Promise<Session | null>;
}

/** The routes of an instance, and the sign-out every way of signing out shares. */
export function createRoutes(
  rt: Runtime,
  parts: RouteParts,
): {
  handle(request: Request): Promise<Response | null>;
  signOut(state: SessionState, everywhere: boolean): Promise<void>;
} {
  const { options, store, sessions, events } = rt;
  const { prefix, logger } = options;
  const stateOf = (request: Request) => sessions.fromCookieHeader(request.headers.get('cookie'));

  /** POST routes must come from the app's own pages (Origin, or Sec-Fetch-Site for browsers that omit it). */
  function sameOrigin(request: Request): boolean {
    const origin = request.headers.get('origin');
    if (origin !== null) return origin === options.origin;
    return request.headers.get('sec-fetch-site') === 'same-origin';
  }

  /** Ends sessions and revokes their GitLab tokens; one of them, or all of the user's. */
  async function signOut(state: SessionState, everywhere: boolean): Promise<void> {
    // The cached state may hold a pair another instance has rotated since: revoke the live one.
    if (!everywhere) await sessions.reload(state).catch(() => false);
    const ending = everywhere ? await sessions.tokensOfUser(state) : [state];
    const sealed = await Promise.all(ending.map((s) => sessions.tokens(s).catch(() => null)));
    if (everywhere) await sessions.endAll(state);
    else await sessions.end(state);
    const reason = everywhere ? 'signed-out-everywhere' : 'signed-out';
    for (const ended of ending) {
      events.emit('session.ended', { sessionId: ended.session.id, userId: ended.session.userId, reason });
    }
    await Promise.all(
      sealed.map((tokens, i) =>
        tokens ? parts.tokens.revokeQuietly(tokens, ending[i]!.session) : undefined,
      ),
    );
    logger.info(`labgate: session ${state.session.id} signed out${everywhere ? ' everywhere' : ''}`);
  }

  /** `GET /auth/logout` asks to confirm; `POST /auth/logout` (from this site) ends the session and revokes. */
  async function logout(request: Request): Promise<Response> {
    if (request.method === 'GET' || request.method === 'HEAD')
      return htmlResponse(logoutPage(`${prefix}/logout`));
    if (request.method !== 'POST') throw new LabgateError('method_not_allowed');
    if (!sameOrigin(request))
      throw new LabgateError('csrf_rejected', 'sign-out was not requested by this site');
    // The session first, then the body: nothing is read for a request that fails a check.
    const state = await stateOf(request);
    const fields = await readForm(request);
    if (state) await signOut(state, fields.get('everywhere') === '1' || fields.get('everywhere') === 'true');
    return new Response(null, {
      status: 303,
      headers: {
        ...PAGE_HEADERS,
        location: safeRedirect(fields.get('returnTo'), options.origin, options.redirectDomains),
        'set-cookie': sessions.clearCookie(),
      },
    });
  }

  /** `GET /auth/sessions` lists the user's sessions; `POST /auth/sessions` with `end=<id>` ends one. */
  async function sessionList(request: Request): Promise<Response> {
    const state = await stateOf(request);
    if (request.method === 'GET' || request.method === 'HEAD') {
      if (!state) throw new LabgateError('session_required');
      return Response.json(
        { sessions: await sessions.list(state) },
        { headers: { 'cache-control': 'no-store' } },
      );
    }
    if (request.method !== 'POST') throw new LabgateError('method_not_allowed');
    if (!sameOrigin(request))
      throw new LabgateError('csrf_rejected', 'ending a session was not requested by this site');
    if (!state) throw new LabgateError('session_required');
    const fields = await readForm(request);
    const id = fields.get('end') ?? '';
    if (!(await sessions.endOne(state, id)))
      throw new LabgateError('not_found', 'no such session of this user');
    const headers: Record<string, string> = { ...PAGE_HEADERS };
    if (id === state.session.id) headers['set-cookie'] = sessions.clearCookie();
    if (wantsJson(request.headers.get('accept'))) return Response.json({ ended: id }, { headers });
    return new Response(null, {
      status: 303,
      headers: { ...headers, location: safeReturnTo(fields.get('returnTo'), options.origin) },
    });
  }

  /**
   * `GET /auth/link` asks the signed-in user to confirm; `POST /auth/link` (from this site, for a live
   * session) starts a sign-in whose account is linked to the session's user. 404 unless
   * `accountLinking` is on.
   */
  async function link(request: Request): Promise<Response> {
    if (!options.accountLinking) throw new LabgateError('not_found');
    if (request.method === 'GET' || request.method === 'HEAD') {
      if (!(await stateOf(request))) throw new LabgateError('session_required');
      return htmlResponse(linkPage(`${prefix}/link`));
    }
    if (request.method !== 'POST') throw new LabgateError('method_not_allowed');
    if (!sameOrigin(request))
      throw new LabgateError('csrf_rejected', 'linking an account was not requested by this site');
    const state = await stateOf(request);
    if (!state) throw new LabgateError('session_required');
    const fields = await readForm(request);
    return startSignIn(rt, request, { returnTo: fields.get('returnTo'), link: state.session.id });
  }

  /** `GET /auth/session`: the signed-in user as JSON, through the same check as `getSession`. */
  async function current(request: Request): Promise<Response> {
    if (request.method !== 'GET' && request.method !== 'HEAD') throw new LabgateError('method_not_allowed');
    const session = await parts.find(request.headers.get('cookie'));
    if (!session) throw new LabgateError('session_required');
    return Response.json(
      {
        user: session.user,
        session: { id: session.id, createdAt: session.createdAt, expiresAt: session.expiresAt },
      },
      { headers: { 'cache-control': 'no-store' } },
    );
  }

  /** `POST /auth/webhooks/gitlab`: a membership or user event re-checks the affected user's sessions now. */
  async function webhook(request: Request): Promise<Response> {
    if (!options.webhookSecret) throw new LabgateError('not_found');
    if (request.method !== 'POST') throw new LabgateError('method_not_allowed');
    const token = request.headers.get('x-gitlab-token') ?? '';
    if (!timingSafeEqual(token, options.webhookSecret)) {
      return Response.json({ error: 'invalid webhook token' }, { status: 401 });
    }
    const body = await readBody(request, options.webhookMaxBytes);
    let payload: Record<string, unknown>;
    try {
      payload = JSON.parse(new TextDecoder().decode(body)) as Record<string, unknown>;
    } catch {
      return Response.json({ error: 'payload is not JSON' }, { status: 400 });
    }
    const gitlabUserId = typeof payload['user_id'] === 'number' ? payload['user_id'] : null;
    if (gitlabUserId === null) return Response.json({ rechecked: 0, ignored: true });
    const server = await rt.provider();
    const userId = await rt.storeCall(() => store.get(`identity-user:${server.issuer} ${gitlabUserId}`));
    if (userId === null) return Response.json({ rechecked: 0 });
    const { rechecked, ended } = await parts.checks.recheckUser(userId);
    logger.info(
      // The event name comes from the payload (docs/security.md, LOG-1).
      `labgate: webhook "${logText(payload['event_name'] ?? payload['object_kind'] ?? 'event', 64)}" re-checked ${rechecked} session(s), ${ended} ended`,
    );
    return Response.json({ rechecked, ended });
  }

  async function route(request: Request, name: string): Promise<Response> {
    switch (name) {
      case '/login':
        if (request.method !== 'GET' && request.method !== 'HEAD')
          throw new LabgateError('method_not_allowed');
        return startSignIn(rt, request);
      case '/callback':
        if (request.method !== 'GET') throw new LabgateError('method_not_allowed');
        return parts.callback(request);
      case '/logout':
        return logout(request);
      case '/sessions':
        return sessionList(request);
      case '/link':
        return link(request);
      case '/session':
        return current(request);
      case '/webhooks/gitlab':
        return webhook(request);
      default:
        throw new LabgateError('not_found');
    }
  }

  function handle(request: Request): Promise<Response | null> {
    // A Request's URL is already parsed and serialised: its path is the text after the authority, up
    // to the query, and most requests are not labgate's: no URL is parsed for them.
    const url = request.url;
    const at = url.indexOf('/', url.indexOf('//') + 2);
    const name = at === -1 ? null : routeOf(url.slice(at), prefix);
    if (name === null) return Promise.resolve(null);
    return answer(request, name, new URL(url).pathname);
  }

  async function answer(request: Request, name: string, path: string): Promise<Response> {
    let response: Response;
    try {
      response = await route(request, name);
    } catch (error) {
      response = errorAnswer(error, routeError(request.headers.get('accept'), path, prefix, error), options);
    }
    // A session cookie that does not open (forged, ended, expired) is cleared where labgate learns it:
    // an answer that asks for a sign-in, and the sign-in itself (docs/security.md, COOKIE-3).
    if (
      (response.status === 401 || name === '/login') &&
      sessions.holdsCookie(request.headers.get('cookie'))
    ) {
      const dead = response.status === 401 || (await stateOf(request).catch(() => null)) === null;
      if (dead) response.headers.append('set-cookie', sessions.clearCookie());
    }
    return response;
  }

  return { handle, signOut };
}

/** What the answer to an error on a route needs: the client's `Accept`, the path, `Allow` on a 405. */
export function routeError(
  accept: string | null | undefined,
  path: string,
  prefix: string,
  error: unknown,
): { accept: string | null | undefined; route: string; headers?: Record<string, string> } {
  const code = (error as { code?: unknown } | null)?.code;
  return code === 'method_not_allowed'
    ? { accept, route: path, headers: { allow: allowedMethods(routeOf(path, prefix) ?? '') } }
    : { accept, route: path };
}
