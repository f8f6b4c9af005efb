/**
 * labgate for Next.js (16, App Router): labgate's routes as one route handler, the session for server
 * components, a guard for route handlers, and one for `proxy.ts`.
 *
 * @example
 * ```ts
 * // app/auth/[...labgate]/route.ts
 * import { handlers } from 'labgate/next';
 * import { auth } from '@/lib/auth';
 * export const { GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS } = handlers(auth);
 *
 * // app/me/route.ts
 * import { requireUser } from 'labgate/next';
 * export const GET = requireUser(auth, (_request, { session }) => Response.json(session.user));
 *
 * // a server component
 * import { getSession } from 'labgate/next';
 * const session = await getSession(auth);
 * ```
 * @packageDocumentation
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  type Guard,
  type GuardRule,
  type Labgate,
  LabgateError,
  routeOf,
  type Session,
} from '../core/index.js';
import { sendWebResponse } from './node.js';

/**
 * labgate, or a function that gives it, called at the first request (and again only after it failed).
 * Next evaluates route modules while it builds the app, where the app's secrets and store may be
 * missing: a function defers creating labgate to run time.
 */
export type LabgateSource = Labgate | (() => Labgate | Promise<Labgate>);

type LabgateFactory = () => Labgate | Promise<Labgate>;

/** The instance each factory gave (or is giving), so that every helper handed it shares one call. */
const made = new WeakMap<LabgateFactory, { auth?: Labgate; pending?: Promise<Labgate> | undefined }>();

/** The instance of a source: itself at once when it is one, or once the function has given it. */
function instanceOf(source: LabgateSource): () => Labgate | Promise<Labgate> {
  if (typeof source !== 'function') {
    if (typeof source?.handle !== 'function')
      throw new TypeError('labgate: labgate/next takes a labgate instance or a function that returns one');
    return () => source;
  }
  const state = made.get(source) ?? {};
  made.set(source, state);
  return () => {
    if (state.auth) return state.auth;
    if (!state.pending) {
      state.pending = Promise.resolve().then(source);
      state.pending.then(
        (auth) => {
          state.auth = auth;
        },
        () => {
          state.pending = undefined;
        },
      );
    }
    return state.pending;
  };
}

/** A route handler as Next calls it: the request, and the route's context (its `params`). */
export type RouteHandler = (request: Request, context?: unknown) => Promise<Response>;

/** The route handlers of labgate's routes, one per method Next routes. */
export interface LabgateHandlers {
  GET: RouteHandler;
  HEAD: RouteHandler;
  POST: RouteHandler;
  PUT: RouteHandler;
  PATCH: RouteHandler;
  DELETE: RouteHandler;
  OPTIONS: RouteHandler;
}

/**
 * labgate's routes (`/auth/login`, `/auth/callback`, `/auth/logout`, `/auth/session`, …) as the route
 * handlers of a catch-all route at labgate's prefix, `app/auth/[...labgate]/route.ts`. Every method
 * goes to labgate, so a method a route does not take gets labgate's 405 with its `Allow`, not Next's.
 * @example
 * ```ts
 * export const { GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS } = handlers(auth);
 * ```
 */
export function handlers(source: LabgateSource): LabgateHandlers {
  const labgate = instanceOf(source);
  const handle: RouteHandler = async (request) => {
    const auth = await labgate();
    try {
      const response = await auth.handle(request);
      if (response) return response;
      // The route sits outside labgate's prefix: a mistake in the app, said plainly.
      throw new LabgateError('not_found', `labgate's routes live under ${auth.options.prefix}`);
    } catch (error) {
      return auth.errorResponse(error, request);
    }
  };
  return {
    GET: handle,
    HEAD: handle,
    POST: handle,
    PUT: handle,
    PATCH: handle,
    DELETE: handle,
    OPTIONS: handle,
  };
}

/** next/headers, once loaded (see {@link getSession}). */
let nextHeaders: Promise<typeof import('next/headers.js')> | undefined;

/**
 * The session of the request being rendered, for server components, server actions and route
 * handlers; null when signed out. Read-only: it never writes a cookie, which server components cannot
 * do. labgate keeps tokens in its store and never rewrites the session cookie when it refreshes one,
 * so `auth.gitlab(session)` and `auth.getAccessToken(session)` are safe from a server component too.
 *
 * It reads the raw `Cookie` header rather than `cookies()`, whose map keeps one of two same-named
 * cookies: labgate refuses a session cookie sent twice (one tossed in by a sibling domain).
 * Rejects with a `LabgateError` `store_unavailable` while the store is down.
 * @example
 * ```tsx
 * export default async function Page() {
 *   const session = await getSession(auth);
 *   return <p>{session ? `Hello ${session.user.name}` : 'Signed out'}</p>;
 * }
 * ```
 */
export async function getSession(source: LabgateSource): Promise<Session | null> {
  // Loaded at the first call: Next's request scope (its AsyncLocalStorage) exists only once Next runs,
  // and a module that imports next/headers early, outside Next, would break it for the process.
  nextHeaders ??= import('next/headers.js');
  const { headers } = await nextHeaders;
  // The headers first: reading them tells Next the page is dynamic, so a build does not prerender it
  // (and never creates labgate without the app's secrets).
  const cookie = (await headers()).get('cookie');
  return (await instanceOf(source)()).sessionOf(cookie);
}

/** What {@link requireUser} hands its route handler besides the request. */
export interface GuardedContext {
  /** The signed-in session. */
  session: Session;
  /** labgate. */
  labgate: Labgate;
  /** The route's context from Next (its `params`). */
  route: unknown;
}

/** The guard's view of a Web request. */
function guardRequest(request: Request, session: Session | null) {
  const url = new URL(request.url);
  return {
    method: request.method,
    target: `${url.pathname}${url.search}`,
    accept: request.headers.get('accept'),
    secFetchMode: request.headers.get('sec-fetch-mode'),
    session,
  };
}

/** A core guard per instance, compiled once; with the instance at hand, at once (a bad rule throws now). */
function guardOf(source: LabgateSource, rule: GuardRule): (auth: Labgate) => Guard {
  let compiled: { auth: Labgate; guard: Guard } | undefined;
  const of = (auth: Labgate) => {
    if (compiled?.auth !== auth) compiled = { auth, guard: auth.guard(rule) };
    return compiled.guard;
  };
  if (typeof source !== 'function') of(source);
  return of;
}

/**
 * A route handler for signed-in users only (and, with a rule, only those with the role or the access).
 * The answers are the core guard's: signed-out browser navigations are sent to sign in and back,
 * other signed-out requests get 401 JSON, users without the role or access get 403.
 * @example
 * ```ts
 * export const GET = requireUser(auth, (_request, { session }) => Response.json(session.user));
 * export const POST = requireUser(auth, deploy, { access: 'project:acme/app>=developer' });
 * ```
 */
export function requireUser(
  source: LabgateSource,
  handler: (request: Request, context: GuardedContext) => Response | Promise<Response>,
  rule: GuardRule = {},
): RouteHandler {
  const labgate = instanceOf(source);
  const guard = guardOf(source, rule);
  return async (request, route) => {
    const auth = await labgate();
    let session: Session | null;
    try {
      session = await auth.sessionOf(request.headers.get('cookie'));
      const refused = await guard(auth).check(guardRequest(request, session));
      if (refused) return refused;
    } catch (error) {
      return auth.errorResponse(error, request);
    }
    // The app's own errors stay the app's, for Next's error handling.
    return handler(request, { session: session!, labgate: auth, route });
  };
}

/** The answer with an absolute `Location`: Next refuses a relative one from a proxy. */
function absolute(answer: Response, origin: string): Response {
  const location = answer.headers.get('location');
  if (location === null || !location.startsWith('/')) return answer;
  const headers = new Headers(answer.headers);
  headers.set('location', new URL(location, origin).href);
  return new Response(answer.body, { status: answer.status, statusText: answer.statusText, headers });
}

/** A path `labgateProxy` protects, and what it demands there. */
export interface ProtectedPath extends GuardRule {
  /** A path (`/profile`) guarding itself and everything below it (`/profile/keys`). */
  path: string;
}

/** Options of {@link labgateProxy}. */
export interface ProxyOptions {
  /** The paths that need a signed-in user (first match wins); every other request is let through. */
  protect: Array<string | ProtectedPath>;
}

/** What a proxy answers: a response to send, or undefined to let the request through. */
export type ProxyHandler = (request: Request) => Promise<Response | undefined>;

/**
 * A guard for `proxy.ts` (Next 16's middleware, on Node): signed-out browsers are sent to sign in
 * before a protected page renders, other signed-out requests get 401, users without the role or the
 * access 403 (the core guard's answers); everything else, and labgate's own routes, goes on.
 *
 * Do not rely on the proxy alone for authorization: a proxy can be skipped (CVE-2025-29927, a forged
 * `x-middleware-subrequest` header made Next skip middleware altogether, and a matcher that misses a
 * path skips it too). Check the session again where the data is read: {@link requireUser} in route
 * handlers, {@link getSession} in server components and server actions.
 * @example
 * ```ts
 * // proxy.ts
 * export const proxy = labgateProxy(auth, { protect: ['/profile', { path: '/admin', role: 'admin' }] });
 * export const config = { matcher: ['/profile/:path*', '/admin/:path*'] };
 * ```
 */
export function labgateProxy(source: LabgateSource, options: ProxyOptions): ProxyHandler {
  if (!Array.isArray(options?.protect))
    throw new TypeError('labgate: labgateProxy needs { protect: [paths] }');
  const labgate = instanceOf(source);
  const rules = options.protect.map((entry) => {
    const { path, ...rule } = typeof entry === 'string' ? { path: entry } : entry;
    if (typeof path !== 'string' || !path.startsWith('/'))
      throw new TypeError(`labgate: a protected path starts with "/": ${String(path)}`);
    return { path: path.length > 1 ? path.replace(/\/+$/, '') : path, guard: guardOf(source, rule) };
  });
  return async (request) => {
    const url = new URL(request.url);
    // Next routes `/%70rofile` to the page of `/profile`: compare the path as Next routes it.
    let pathname = url.pathname;
    try {
      pathname = decodeURIComponent(pathname);
    } catch {
      // Not valid percent-encoding: Next finds no page for it either.
    }
    const found = rules.find(
      ({ path }) => path === '/' || pathname === path || pathname.startsWith(`${path}/`),
    );
    if (!found) return undefined;
    const auth = await labgate();
    if (routeOf(url.pathname, auth.options.prefix) !== null) return undefined;
    try {
      const session = await auth.sessionOf(request.headers.get('cookie'));
      const answer = await found.guard(auth).check(guardRequest(request, session));
      return answer ? absolute(answer, auth.options.origin) : undefined;
    } catch (error) {
      return auth.errorResponse(error, request);
    }
  };
}

/** Next's request handler for a custom server (`app.getRequestHandler()`). */
export type NextRequestHandler = (req: IncomingMessage, res: ServerResponse) => Promise<void>;

/** Methods Fetch refuses to carry: Next cannot build a `Request` for them and answers 500. */
const UNCARRIED = new Set(['TRACE', 'TRACK', 'CONNECT']);

/**
 * For a custom server: Next's request handler, except that a request to labgate's routes with a
 * method Fetch cannot carry (`TRACE`, `TRACK`, `CONNECT`) gets labgate's 405 with the route's `Allow`,
 * where Next alone answers 500.
 * @example
 * ```ts
 * const app = next({ dev: false });
 * await app.prepare();
 * createServer(wrapRequestHandler(auth, app.getRequestHandler())).listen(3000);
 * ```
 */
export function wrapRequestHandler(source: LabgateSource, handle: NextRequestHandler): NextRequestHandler {
  const labgate = instanceOf(source);
  return async (req, res) => {
    if (!UNCARRIED.has((req.method ?? '').toUpperCase())) return handle(req, res);
    const auth = await labgate();
    const target = req.url ?? '/';
    if (routeOf(target, auth.options.prefix) === null) return handle(req, res);
    // The error page needs only the route (for its Allow) and what the client accepts.
    const path = new URL(target, 'http://labgate.invalid').pathname;
    const stand = new Request(`${auth.options.origin}${path}`, {
      headers: { accept: req.headers.accept ?? '' },
    });
    await sendWebResponse(res, auth.errorResponse(new LabgateError('method_not_allowed'), stand), {
      method: 'GET',
    });
  };
}
