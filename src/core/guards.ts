/**
 * The guards' rules, written once for every host: a request described as plain data either passes, or
 * gets the response to send. A signed-out browser navigation is sent to sign in (and back afterwards);
 * any other signed-out request (`fetch`, XHR, an API client) gets 401 JSON; a signed-in user without the
 * role or access gets 403. Adapters only translate their host's request into a {@link GuardRequest} and
 * the answer back.
 */
import { accessFailureText, normalisePolicy, type Policy } from './access.js';
import { LabgateError } from './errors.js';
import { errorAnswer } from './pages.js';
import type { AccessChecks } from './recheck.js';
import { signInUrl } from './routes.js';
import type { Runtime } from './runtime.js';
import type { Session } from './sessions.js';

/** A request as a guard sees it: plain data any host has at hand. */
export interface GuardRequest {
  /** `GET`, `POST`, … */
  method: string;
  /** The request target as the client sent it, path and query (`/reports?year=2026`): where sign-in returns. */
  target: string;
  /** The `Accept` header. */
  accept?: string | null | undefined;
  /** The `Sec-Fetch-Mode` header (`navigate` for a browser navigation, `cors` for `fetch`). */
  secFetchMode?: string | null | undefined;
  /** The request's session (from `sessionOf`), or null. */
  session: Session | null;
}

/** What a guard demands besides a signed-in user. */
export interface GuardRule {
  /** A role of the access policy's role mapping (`access.roles`). */
  role?: string;
  /** A policy or one rule, checked against GitLab (`project:acme/app>=developer`). */
  access?: Policy | string;
  /** Always answer 401 instead of sending browsers to sign in (an API). Default: decided per request. */
  api?: boolean;
}

/** A guard's answer: `null` lets the request through; otherwise the response to send. */
export type GuardOutcome = Response | null;

/**
 * A guard, compiled once from its {@link GuardRule}. `check` answers at once when it can (no session, a
 * role, an access decision made within the re-check interval) and with a promise only when it must ask
 * GitLab.
 */
export interface Guard {
  check(request: GuardRequest): GuardOutcome | Promise<GuardOutcome>;
}

/**
 * Whether a request is a browser navigating (which can follow a redirect to sign in) rather than a
 * script or an API client (which needs a status it can act on): a `GET` that does not ask for JSON
 * only, and either says `Sec-Fetch-Mode: navigate` or, from a client that sends no `Sec-Fetch-Mode`,
 * accepts HTML or anything.
 */
export function isNavigation(request: Pick<GuardRequest, 'method' | 'accept' | 'secFetchMode'>): boolean {
  if (request.method !== 'GET' && request.method !== 'HEAD') return false;
  const accept = request.accept ?? '';
  if (accept.includes('application/json') && !accept.includes('text/html')) return false;
  if (request.secFetchMode) return request.secFetchMode === 'navigate';
  return accept === '' || accept === '*/*' || accept.includes('text/html');
}

/** The 401 every guard gives a signed-out request that is not a navigation. */
export function signInRequired(): Response {
  return Response.json(
    { error: 'session_required', message: 'Sign-in required' },
    {
      status: 401,
      headers: {
        'www-authenticate': 'Cookie realm="labgate"',
        'cache-control': 'no-store',
        'x-content-type-options': 'nosniff',
      },
    },
  );
}

/** The redirect every guard gives a signed-out navigation: to sign in, and back to `location` afterwards. */
export function signInRedirect(location: string): Response {
  return new Response(null, { status: 302, headers: { location, 'cache-control': 'no-store' } });
}

/** A guard compiled once from its rule, on a runtime and its access checks. */
export function createGuard(rt: Runtime, checks: AccessChecks, rule: GuardRule = {}): Guard {
  const { role, api = false } = rule;
  if (role !== undefined && (typeof role !== 'string' || role === ''))
    throw new TypeError('labgate: a guard role is a non-empty string');
  // A bad rule is a mistake in the app: refuse it when the guard is made, not on a request.
  const compiled = rule.access === undefined ? null : checks.compile(rule.access);
  const { options } = rt;
  const answer = (error: unknown, request: GuardRequest): Response =>
    errorAnswer(error, { accept: request.accept, route: request.target.split('?')[0]! }, options);
  const forbidden = (detail: string, request: GuardRequest): Response =>
    answer(new LabgateError('access_forbidden', `access refused: ${detail}`, { detail }), request);
  return {
    check(request) {
      const { session } = request;
      if (!session) {
        return !api && isNavigation(request)
          ? signInRedirect(signInUrl(options, request.target))
          : signInRequired();
      }
      if (role !== undefined && !session.user.roles.includes(role))
        return forbidden(`This page needs the role “${role}”.`, request);
      if (compiled === null) return null;
      const known = checks.decided(session.id, compiled);
      if (known) return known.allowed ? null : forbidden(accessFailureText(known.failed), request);
      return rt
        .stateFor(session, 'a guard')
        .then((state) => checks.decide(state, compiled))
        .then(
          (decision) => (decision.allowed ? null : forbidden(accessFailureText(decision.failed), request)),
          (error: unknown) => answer(error, request),
        );
    },
  };
}

/** The options every host's `requireUser`, `requireRole` and `requireAccess` take. */
export interface RequireUserOptions {
  /** Answer 401 JSON instead of redirecting browsers to sign in (for APIs). Default: by the request. */
  api?: boolean;
}

/** What a host guard needs of a labgate instance. */
interface Guarding {
  handle(request: Request): unknown;
  guard(rule?: GuardRule): Guard;
}

function isGuarding(value: unknown): value is Guarding {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as Guarding).handle === 'function' &&
    typeof (value as Guarding).guard === 'function'
  );
}

/**
 * What every adapter's guards share, written once: their arguments (an optional labgate instance,
 * then {@link RequireUserOptions}), a bad rule refused where the route is declared, and the core guard
 * compiled once per instance (`guardOf`), for a host that finds the instance on the request.
 */
export function hostGuard<L extends Guarding>(
  rule: GuardRule,
  first: L | RequireUserOptions | undefined,
  second?: RequireUserOptions,
): { given: L | undefined; guardOf(auth: L): Guard } {
  const given = isGuarding(first) ? first : undefined;
  const options = (given ? second : (first as RequireUserOptions | undefined)) ?? {};
  const full: GuardRule = options.api === undefined ? rule : { ...rule, api: options.api };
  const compiled = new WeakMap<L, Guard>();
  const guardOf = (auth: L): Guard => {
    let guard = compiled.get(auth);
    if (!guard) {
      guard = auth.guard(full);
      compiled.set(auth, guard);
    }
    return guard;
  };
  if (given) guardOf(given);
  else if (rule.access !== undefined)
    normalisePolicy(typeof rule.access === 'string' ? { allow: [rule.access] } : rule.access);
  return { given, guardOf };
}
