/**
 * labgate for Hono 4: `labgate(auth)` answers labgate's routes and puts the signed-in user in the
 * context (`c.var.labgate`); `requireUser()`, `requireRole()` and `requireAccess()` guard routes. Web
 * APIs and `hono` only, so it runs wherever Hono runs (Node, Bun, Deno, Workers).
 *
 * A guard that refuses a request throws an `HTTPException` whose `res` is labgate's answer (401, 403,
 * or 503 while the store is down), as Hono's own `basicAuth`, `bearerAuth` and `jwt` do: Hono's default
 * error handler sends that response as it is, and an `app.onError` sees the refusal (to log it, or
 * to answer it in the app's own style) and answers it with `err.getResponse()`. Only the redirect of a
 * signed-out browser to sign in is returned, not thrown: it is not an error, and it must reach the
 * browser even under an `onError` that styles every error page.
 *
 * @example
 * ```ts
 * import { Hono } from 'hono';
 * import { createLabgate } from 'labgate';
 * import { labgate, type LabgateEnv, requireUser } from 'labgate/hono';
 *
 * const auth = createLabgate({ clientId, clientSecret, url: 'http://localhost:3000', secret });
 * const app = new Hono<LabgateEnv>();
 * app.use(labgate(auth));
 * app.get('/me', requireUser(), (c) => c.json(c.var.labgate.user));
 * ```
 * @packageDocumentation
 */
import type { Context, MiddlewareHandler } from 'hono';
import { createMiddleware } from 'hono/factory';
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { type LabgateContext, RequestContext } from '../core/context.js';
import { hostGuard, type RequireUserOptions } from '../core/guards.js';
import {
  type GuardRule,
  type Labgate,
  type Policy,
  routeOf,
  type Session,
  type SessionUser,
} from '../core/index.js';

export type { LabgateContext } from '../core/context.js';

/** The context behind a guard that let the request through: there is a user. */
export interface SignedInContext extends LabgateContext {
  user: SessionUser;
  session: Session;
}

// Type aliases, not interfaces: Hono's `Env` wants `Variables` to be a `Record<string, any>`, which an
// interface (no implicit index signature) is not.

/**
 * The variables labgate sets, for an app's own `Variables`:
 * `new Hono<{ Bindings: Bindings; Variables: MyVariables & LabgateVariables }>()`.
 */
export type LabgateVariables = { labgate: LabgateContext };

/**
 * The Hono environment of an app that mounts {@link labgate}: `new Hono<LabgateEnv>()` types
 * `c.var.labgate`.
 */
export type LabgateEnv = { Variables: LabgateVariables };

/**
 * The environment a guard adds: behind `requireUser()` (or a role or access guard) `c.var.labgate.user`
 * and `.session` are not null.
 */
export type SignedInEnv = { Variables: { labgate: SignedInContext } };

/** Path and query of a request's URL (`/reports?year=2026`): what a guard and `routeOf` read. */
function targetOf(url: string): string {
  const path = url.indexOf('/', url.indexOf('//') + 2);
  return path === -1 ? '/' : url.slice(path);
}

/**
 * Throws labgate's refusal of a request (a 401, a 403, a 503 while the store is down) as an
 * `HTTPException` carrying it (see the module's comment for why).
 */
function refuse(response: Response, cause?: unknown): never {
  const status = response.status;
  const what =
    status === 401
      ? 'sign-in required'
      : status === 403
        ? 'access forbidden'
        : 'the request could not be checked';
  throw new HTTPException(status as ContentfulStatusCode, {
    res: response,
    message: `labgate: ${what}`,
    cause,
  });
}

/**
 * Looks the request's session up and sets `c.var.labgate`: at once when the cookie alone tells (no
 * session cookie, or one verified moments ago: the common request), after the store answered otherwise.
 * While the store is down, throws the 503 labgate's routes give (an `HTTPException`), never a stack trace.
 */
function attach(auth: Labgate, c: Context<LabgateEnv>): LabgateContext | Promise<LabgateContext> {
  const found = auth.sessionOf(c.req.header('cookie'));
  const set = (session: Session | null) => {
    const ctx = new RequestContext(auth, session);
    c.set('labgate', ctx);
    return ctx;
  };
  // The common request goes on in the same turn: no promise, no microtask hop before the app runs.
  if (!(found instanceof Promise)) return set(found);
  return found.then(set, (error: unknown) => refuse(auth.errorResponse(error, c.req.raw), error));
}

/**
 * The middleware: answers `/auth/*` (or your prefix) with labgate's response, and for every other
 * request looks the session up from the cookie (cached, so nearly free) and sets `c.var.labgate`
 * (`user` and `session` null when signed out) before `next()`.
 *
 * Mounted at its prefix only (`app.use('/auth/*', labgate(auth))`), it answers labgate's routes and
 * nothing else; guards given the instance (`requireUser(auth)`) then look the session up on the routes
 * that need it.
 * @example
 * ```ts
 * const app = new Hono<LabgateEnv>();
 * app.use(labgate(auth));
 * app.get('/', (c) => c.text(`hello ${c.var.labgate.user?.username ?? 'stranger'}`));
 * ```
 */
export function labgate(auth: Labgate): MiddlewareHandler<LabgateEnv> {
  const prefix = auth.options.prefix;
  return createMiddleware<LabgateEnv>((c, next) => {
    if (routeOf(targetOf(c.req.url), prefix) !== null) {
      // Hono hands over the Request itself: labgate reads it as it is (HEAD too: Hono strips the body).
      return auth.handle(c.req.raw).then(async (response) => {
        if (response) return response;
        await attach(auth, c);
        await next();
        return undefined;
      });
    }
    const attached = attach(auth, c);
    return attached instanceof Promise ? attached.then(() => next()) : next();
  });
}

export type { RequireUserOptions } from '../core/guards.js';

/**
 * Hono middleware around a core guard (the rules are the core's: `Labgate.guard`). With the instance
 * it looks the session up itself; without, it needs `app.use(labgate(auth))` before it. The guard is
 * compiled once per instance.
 */
function guarded(
  rule: GuardRule,
  first: Labgate | RequireUserOptions | undefined,
  second: RequireUserOptions | undefined,
): MiddlewareHandler<SignedInEnv> {
  const { given, guardOf } = hostGuard(rule, first, second);
  const middleware = createMiddleware<LabgateEnv>((c, next) => {
    // The common request (session known, no GitLab check due) is decided in the same turn.
    const decide = (ctx: LabgateContext): Handled => {
      const outcome = guardOf(ctx.labgate).check({
        method: c.req.method,
        target: targetOf(c.req.url),
        accept: c.req.header('accept'),
        secFetchMode: c.req.header('sec-fetch-mode'),
        session: ctx.session,
      });
      if (outcome === null) return next();
      if (outcome instanceof Promise)
        return outcome.then((refusal): Handled | Response => (refusal ? answer(refusal) : next()));
      return new Promise((resolve) => resolve(answer(outcome)));
    };
    const ctx = c.get('labgate') as LabgateContext | undefined;
    if (ctx) return decide(ctx);
    if (!given)
      throw new TypeError(
        'labgate: a guard needs app.use(labgate(auth)) before it, or the instance: requireUser(auth)',
      );
    const attached = attach(given, c);
    return attached instanceof Promise ? attached.then(decide) : decide(attached);
  });
  // Past the guard the context has a user; the cast only narrows the variable's type for the handler.
  return middleware as unknown as MiddlewareHandler<SignedInEnv>;
}

/** What a Hono middleware resolves to: a response, or nothing when `next()` answered. */
type Handled = ReturnType<MiddlewareHandler<LabgateEnv>>;

/**
 * A guard's refusal as Hono takes it: the way to sign in is no error, so it is returned (an `onError`
 * styling errors cannot hide it); a 401, 403 or 503 is thrown as an `HTTPException` carrying it.
 */
function answer(refusal: Response): Response {
  if (refusal.status >= 300 && refusal.status < 400) return refusal;
  return refuse(refusal);
}

/**
 * Lets signed-in users through. Browsers are sent to sign in (and back here afterwards); API calls get
 * 401 `{"error":"session_required"}` (thrown as an `HTTPException`). Behind it, `c.var.labgate.user` is
 * typed non-null.
 *
 * Either mount {@link labgate} for the whole app first (`app.use(labgate(auth))`, then `requireUser()`),
 * or give the guard the instance (`requireUser(auth)`): it then looks the session up itself, so labgate
 * can be mounted at its prefix only and other routes never pay for it.
 * @example
 * ```ts
 * app.use('/auth/*', labgate(auth));         // /auth/login, /auth/callback, …
 * app.get('/api/me', requireUser(auth, { api: true }), (c) => c.json(c.var.labgate.user));
 * ```
 */
export function requireUser(auth?: Labgate, options?: RequireUserOptions): MiddlewareHandler<SignedInEnv>;
export function requireUser(options?: RequireUserOptions): MiddlewareHandler<SignedInEnv>;
export function requireUser(
  first?: Labgate | RequireUserOptions,
  second?: RequireUserOptions,
): MiddlewareHandler<SignedInEnv> {
  return guarded({}, first, second);
}

/**
 * Lets through signed-in users who hold a role of the access policy's role mapping
 * (`access: { roles: { admin: 'group:acme/platform>=maintainer' } }`); others get 403 with a page that
 * names the missing role, and signed-out users are sent to sign in (or get 401).
 * @example
 * ```ts
 * app.get('/admin', requireRole('admin'), (c) => c.text(`hello ${c.var.labgate.user.username}`));
 * ```
 */
export function requireRole(
  role: string,
  auth?: Labgate,
  options?: RequireUserOptions,
): MiddlewareHandler<SignedInEnv>;
export function requireRole(role: string, options?: RequireUserOptions): MiddlewareHandler<SignedInEnv>;
export function requireRole(
  role: string,
  first?: Labgate | RequireUserOptions,
  second?: RequireUserOptions,
): MiddlewareHandler<SignedInEnv> {
  return guarded({ role }, first, second);
}

/**
 * Lets through signed-in users who satisfy a rule or policy, checked against GitLab (cached per
 * session for the re-check interval). The 403 page says which requirement failed, without listing
 * the user's other groups.
 * @example
 * ```ts
 * app.post('/deploy', requireAccess('project:acme/app>=developer'), (c) => deploy(c));
 * ```
 */
export function requireAccess(
  policy: Policy | string,
  auth?: Labgate,
  options?: RequireUserOptions,
): MiddlewareHandler<SignedInEnv>;
export function requireAccess(
  policy: Policy | string,
  options?: RequireUserOptions,
): MiddlewareHandler<SignedInEnv>;
export function requireAccess(
  policy: Policy | string,
  first?: Labgate | RequireUserOptions,
  second?: RequireUserOptions,
): MiddlewareHandler<SignedInEnv> {
  return guarded({ access: policy }, first, second);
}
