/**
 * labgate for Express: one middleware that answers labgate's routes and puts the signed-in user on
 * `req`, and `requireUser()` for routes that need one. Works with Express 4 and 5.
 *
 * @example
 * ```ts
 * import express from 'express';
 * import { createLabgate } from 'labgate';
 * import { labgate, requireUser } from 'labgate/express';
 *
 * const auth = createLabgate({ clientId, clientSecret, url: 'http://localhost:3000', secret });
 * const app = express();
 * app.use(labgate(auth));
 * app.get('/me', requireUser(), (req, res) => res.json(req.labgate!.user));
 * ```
 * @packageDocumentation
 */
import { IncomingMessage, type ServerResponse } from 'node:http';
import { type LabgateContext, RequestContext } from '../core/context.js';
import { hostGuard, type RequireUserOptions } from '../core/guards.js';
import { type GuardRule, type Labgate, LabgateError, type Policy, routeOf } from '../core/index.js';
import { sendWebResponse, toWebRequest } from './node.js';

export type { LabgateContext } from '../core/context.js';

declare global {
  namespace Express {
    interface Request {
      /** Set by labgate's middleware and guards (an app may assign its own, or undefined to clear it). */
      labgate?: LabgateContext | undefined;
    }
  }
}

/** Options of {@link labgate}. */
export interface ExpressOptions {
  /** Trust `X-Forwarded-*` from a proxy in front of the app (only for labgate's own routes' client address). Default false. */
  trustProxy?: boolean;
}

type Next = (error?: unknown) => void;
type Middleware = (req: ExpressRequest, res: ServerResponse, next: Next) => void;

// Where `req.labgate` lives. Express gives each request a new prototype
// (`Object.setPrototypeOf(req, app.request)`), after which V8 gives the request a shape of its own:
// adding a property to it takes V8's slow path (measured: one added property costs 3–5 % of a bare
// Express request, more than labgate's whole session check), and every property read on it is a full
// lookup through its prototypes. So the context goes into a WeakMap keyed by the request (gone with
// the request); labgate's guards read it there, and `req.labgate` is an accessor on Express's request
// prototype that reads and writes it there for the app. Outside Express (a request whose prototype is
// Node's own) it is a plain property.
const contexts = new WeakMap<IncomingMessage, LabgateContext>();
type ExpressRequest = IncomingMessage & { labgate?: LabgateContext | undefined };

/** The prototypes (Express's request objects) that carry the `labgate` accessor. */
const withAccessor = new WeakSet<object>();
/** The prototype of the last request found to have the accessor on its chain. */
let lastPrototype: object | null = null;

/**
 * Makes `req.labgate` an accessor on the topmost Express request prototype of `req` (the one right
 * above Node's `IncomingMessage.prototype`, shared by every app and sub-app of that Express), once.
 * False when `req` has no such prototype, or something else already defines `labgate` there.
 */
function accessorFor(req: IncomingMessage): boolean {
  const prototype = Object.getPrototypeOf(req) as object | null;
  if (prototype === lastPrototype) return true;
  let base = prototype;
  while (base !== null && Object.getPrototypeOf(base) !== IncomingMessage.prototype)
    base = Object.getPrototypeOf(base) as object | null;
  if (base === null) return false;
  if (!withAccessor.has(base)) {
    if (Object.getOwnPropertyDescriptor(base, 'labgate')) return false;
    Object.defineProperty(base, 'labgate', {
      configurable: true,
      enumerable: false,
      get(this: IncomingMessage) {
        return contexts.get(this);
      },
      // An app (or a test double) that assigns `req.labgate` itself: kept where the guards read it.
      set(this: IncomingMessage, value: LabgateContext | undefined) {
        if (value === undefined) contexts.delete(this);
        else contexts.set(this, value);
      },
    });
    withAccessor.add(base);
  }
  lastPrototype = prototype;
  return true;
}

/** Sets `req.labgate` (see {@link contexts}) and returns the context. */
function setContext(req: ExpressRequest, ctx: LabgateContext): LabgateContext {
  if (accessorFor(req)) contexts.set(req, ctx);
  else req.labgate = ctx;
  return ctx;
}

/**
 * The context on `req`, if any. An Express request's is read from the WeakMap, without a lookup of
 * `labgate` through the request's prototypes; another request's is its property.
 */
function attached(req: ExpressRequest): LabgateContext | undefined {
  return contexts.get(req) ?? (Object.getPrototypeOf(req) === lastPrototype ? undefined : req.labgate);
}

/** The URL Express saw, as a Web `Request` on the app's configured origin (never the Host header's). */
function webRequest(
  auth: Labgate,
  req: IncomingMessage,
  res: ServerResponse,
  options: ExpressOptions,
): Request {
  const mounted = req.url;
  // Under app.use('/x', …) Express strips the mount path from req.url; labgate's routes are absolute.
  req.url = (req as IncomingMessage & { originalUrl?: string }).originalUrl ?? req.url;
  try {
    return toWebRequest(req, {
      origin: auth.options.origin,
      trustProxy: options.trustProxy ?? false,
      response: res,
    });
  } finally {
    req.url = mounted;
  }
}

/**
 * Finds the request's session, sets `req.labgate` and calls `then` with it: at once when the cookie
 * alone tells (no session cookie, or one verified moments ago: the common request), after the store
 * answered otherwise. When the store is down it answers as labgate's routes do (503 with a page).
 */
function attach(
  auth: Labgate,
  req: ExpressRequest,
  res: ServerResponse,
  then: (ctx: LabgateContext) => void,
  fail: Next,
): void {
  const found = auth.sessionOf(req.headers.cookie);
  if (!(found instanceof Promise)) {
    then(setContext(req, new RequestContext(auth, found)));
    return;
  }
  found.then(
    (session) => then(setContext(req, new RequestContext(auth, session))),
    (error: unknown) => {
      // Never a stack trace: the same page labgate's routes give when the store is unreachable.
      const request = new Request(`${auth.options.origin}/`, {
        headers: { accept: req.headers.accept ?? '' },
      });
      sendWebResponse(res, auth.errorResponse(error, request)).catch(fail);
    },
  );
}

/**
 * The middleware: answers `/auth/*` (or your prefix), and for every other request looks up the session
 * from the cookie (cached, so nearly free) and sets `req.labgate` before calling `next()`.
 *
 * Mounted at its prefix (`app.use(auth.options.prefix, labgate(auth))`) it only answers labgate's
 * routes; the guards given the instance (`requireUser(auth)`) then look up the session on the routes
 * that need it, and every other request skips labgate altogether.
 */
export function labgate(auth: Labgate, options: ExpressOptions = {}): Middleware {
  const prefix = auth.options.prefix;
  return (req, res, next) => {
    const url = (req as IncomingMessage & { originalUrl?: string }).originalUrl ?? req.url ?? '/';
    if (routeOf(url, prefix) !== null) {
      let request: Request;
      try {
        request = webRequest(auth, req, res, options);
      } catch (error) {
        unconvertible(auth, req, res, url, error).catch(next);
        return;
      }
      auth
        .handle(request)
        .then(async (response) => {
          if (response) await sendWebResponse(res, response, { method: request.method });
          else next();
        })
        .catch(next);
      return;
    }
    attach(auth, req, res, () => next(), next);
  };
}

/**
 * Answers a labgate route whose request cannot become a Web `Request` (a method Fetch refuses, such as
 * `TRACE`) through labgate's error page: 405 with the route's `Allow`, never Express's stack trace.
 */
async function unconvertible(
  auth: Labgate,
  req: IncomingMessage,
  res: ServerResponse,
  url: string,
  error: unknown,
): Promise<void> {
  const method = (req.method ?? '').toUpperCase();
  const failure =
    method === 'TRACE' || method === 'TRACK' || method === 'CONNECT'
      ? new LabgateError('method_not_allowed')
      : new LabgateError('request_invalid', 'the request cannot be read', { cause: error });
  // The error page only needs the path and what the client accepts.
  const headers = { accept: req.headers.accept ?? '' };
  let stand: Request;
  try {
    stand = new Request(`${auth.options.origin}${url.startsWith('/') ? url : `/${url}`}`, { headers });
  } catch {
    stand = new Request(`${auth.options.origin}${auth.options.prefix}`, { headers });
  }
  await sendWebResponse(res, auth.errorResponse(failure, stand), { method: 'GET' });
}

export type { RequireUserOptions } from '../core/guards.js';

/**
 * Express middleware around a core guard (the rules are the core's: `Labgate.guard`). With the
 * instance it looks the session up itself; without, it needs `app.use(labgate(auth))` before it. The
 * guard is compiled once per instance.
 */
function guarded(
  rule: GuardRule,
  first: Labgate | RequireUserOptions | undefined,
  second: RequireUserOptions | undefined,
): Middleware {
  const { given, guardOf } = hostGuard(rule, first, second);
  return (req, res, next) => {
    const check = (ctx: LabgateContext) => {
      const outcome = guardOf(ctx.labgate).check({
        method: req.method ?? 'GET',
        target: (req as IncomingMessage & { originalUrl?: string }).originalUrl ?? req.url ?? '/',
        accept: req.headers.accept,
        secFetchMode: req.headers['sec-fetch-mode'] as string | undefined,
        session: ctx.session,
      });
      if (outcome === null) next();
      else if (outcome instanceof Response) sendWebResponse(res, outcome).catch(next);
      else outcome.then((answer) => (answer ? sendWebResponse(res, answer) : next())).catch(next);
    };
    const ctx = attached(req);
    if (ctx) check(ctx);
    else if (given) attach(given, req, res, check, next);
    else
      next(
        new TypeError(
          'labgate: a guard needs app.use(labgate(auth)) before it, or the instance: requireUser(auth)',
        ),
      );
  };
}

/**
 * Lets signed-in users through. Browsers are sent to sign in (and back here afterwards); API calls get
 * 401 `{"error":"session_required"}`.
 *
 * Either mount {@link labgate} for the whole app first (`app.use(labgate(auth))`, then
 * `requireUser()`), or give the guard the instance (`requireUser(auth)`): it then looks up the session
 * itself, so labgate can be mounted at its prefix only and other routes never pay for it.
 * @example
 * ```ts
 * app.use(auth.options.prefix, labgate(auth));         // /auth/login, /auth/callback, …
 * app.get('/me', requireUser(auth, { api: true }), (req, res) => res.json(req.labgate!.user));
 * ```
 */
export function requireUser(auth?: Labgate, options?: RequireUserOptions): Middleware;
export function requireUser(options?: RequireUserOptions): Middleware;
export function requireUser(first?: Labgate | RequireUserOptions, second?: RequireUserOptions): Middleware {
  return guarded({}, first, second);
}

/**
 * Lets through signed-in users who hold a role of the access policy's role mapping
 * (`access: { roles: { admin: 'group:acme/platform>=maintainer' } }`); others get 403 with a page that
 * names the missing role, and signed-out users are sent to sign in (or get 401).
 */
export function requireRole(role: string, auth?: Labgate, options?: RequireUserOptions): Middleware;
export function requireRole(role: string, options?: RequireUserOptions): Middleware;
export function requireRole(
  role: string,
  first?: Labgate | RequireUserOptions,
  second?: RequireUserOptions,
): Middleware {
  return guarded({ role }, first, second);
}

/**
 * Lets through signed-in users who satisfy a rule or policy, checked against GitLab (cached per
 * session for the re-check interval): `requireAccess('project:acme/app>=developer')`.
 * The 403 page says which requirement failed, without listing the user's other groups.
 */
export function requireAccess(
  policy: Policy | string,
  auth?: Labgate,
  options?: RequireUserOptions,
): Middleware;
export function requireAccess(policy: Policy | string, options?: RequireUserOptions): Middleware;
export function requireAccess(
  policy: Policy | string,
  first?: Labgate | RequireUserOptions,
  second?: RequireUserOptions,
): Middleware {
  return guarded({ access: policy }, first, second);
}
