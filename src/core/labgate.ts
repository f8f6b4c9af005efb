/**
 * `createLabgate`: one app's labgate, assembled from its parts — the runtime they share
 * (src/core/runtime.ts), the routes (routes.ts, with the sign-in in signin.ts and callback.ts), the
 * token lifecycle (tokens.ts), access decisions and re-checks (recheck.ts), the guards (guards.ts) and
 * the sessions (sessions.ts) — behind the {@link Labgate} interface every host uses.
 */
import type { Decision, Policy } from './access.js';
import { createCallback } from './callback.js';
import type { LabgateEventHandler, LabgateEventName } from './events.js';
import type { GitLabClient } from './gitlab.js';
import { createGuard, type Guard, type GuardRule } from './guards.js';
import type { LabgateOptions, ResolvedOptions } from './options.js';
import { errorAnswer } from './pages.js';
import { createAccessChecks } from './recheck.js';
import { createRoutes, routeError, signInUrl } from './routes.js';
import { createRuntime } from './runtime.js';
import type { Session, SessionInfo } from './sessions.js';
import type { Store, TokenSet } from './store.js';
import { createTokens, type TokenCheck } from './tokens.js';

export type { TokenCheck } from './tokens.js';

/** labgate for one app: mount `handle` in front of the app, call `getSession` where you need the user. */
export interface Labgate {
  /**
   * Answers labgate's own routes (`/auth/login`, `/auth/callback`, `/auth/logout`, `/auth/session`);
   * resolves `null` for every other path, which the app then serves.
   */
  handle(request: Request): Promise<Response | null>;
  /** The session of a request, or null. Never throws for a bad cookie; throws `store_unavailable` when the store is down. */
  getSession(request: Request): Promise<Session | null>;
  /**
   * The session of a raw `Cookie` header, for hosts that do not build a `Request` for every request:
   * the session (or null) itself when it is known without I/O — no session cookie, or one verified
   * within `sessionCacheTtl` seconds — so the common request goes on synchronously; otherwise a promise.
   * Never throws for a bad cookie; rejects with `store_unavailable` when the store is down.
   * @example
   * ```ts
   * const found = labgate.sessionOf(req.headers.cookie);
   * const session = found instanceof Promise ? await found : found;
   * ```
   */
  sessionOf(cookieHeader: string | null | undefined): Session | null | Promise<Session | null>;
  /**
   * A guard, compiled once (a bad rule throws `TypeError` here, not on a request): signed-out browser
   * navigations are sent to sign in and back, other signed-out requests get 401 JSON, signed-in users
   * without the role or the access get 403. What every adapter's `requireUser`, `requireRole` and
   * `requireAccess` call.
   * @example
   * ```ts
   * const deployers = labgate.guard({ access: 'project:acme/app>=developer' });
   * const answer = await deployers.check({ method: 'GET', target: '/deploy', accept: 'text/html', session });
   * if (answer) return answer; // a redirect, a 401 or a 403
   * ```
   */
  guard(rule?: GuardRule): Guard;
  /**
   * A GitLab access token for the session (the object, or its id), refreshed first when it is about
   * to expire (or always, with `forceRefresh`, e.g. after GitLab answered 401 `invalid_token`). Refresh
   * is single-flight in this process and locked across processes through the store. Rejects with
   * `session_required` (and ends the session) when GitLab refuses the refresh token, or when the
   * session has ended.
   */
  getAccessToken(session: Session | string, options?: { forceRefresh?: boolean }): Promise<string>;
  /**
   * Listens to a lifecycle event; returns a function that stops listening.
   * @example
   * ```ts
   * labgate.on('token.refreshed', ({ sessionId, expiresAt }) => metrics.count('refresh'));
   * ```
   */
  on<E extends LabgateEventName>(name: E, handler: LabgateEventHandler<E>): () => void;
  /**
   * A GitLab API client acting as the session's user; its token refreshes itself, and a 401 from
   * GitLab triggers one refresh and one retry.
   */
  gitlab(session: Session | string): GitLabClient;
  /**
   * Decides a policy (or one rule) for a session from GitLab, on top of the app-wide policy: what
   * `requireAccess` guards use. Answers are cached per session for `recheckInterval`.
   * @example
   * ```ts
   * const decision = await labgate.checkAccess(session, 'project:acme/app>=maintainer');
   * if (!decision.allowed) return forbidden(decision.reasons);
   * ```
   */
  checkAccess(session: Session | string, policy: Policy | string): Promise<Decision>;
  /** Asks GitLab about an access token (`/oauth/token/info`): active, scopes, remaining lifetime. */
  checkToken(accessToken: string): Promise<TokenCheck>;
  /** Spends a refresh token at GitLab and returns the new pair (it rotates: store it at once). */
  refreshToken(refreshToken: string): Promise<TokenSet>;
  /** Revokes a token at GitLab (either of a pair revokes both). */
  revokeToken(token: string): Promise<void>;
  /** Ends a session (as sign-out does, without revoking the GitLab token). */
  endSession(session: Session | string): Promise<void>;
  /** The live sessions of the session's user (ids, creation, expiry; which one is `current`). */
  listSessions(session: Session | string): Promise<SessionInfo[]>;
  /** Signs the session's user out everywhere: every session ends and every GitLab token is revoked. */
  signOutEverywhere(session: Session | string): Promise<void>;
  /**
   * The response for an error, as labgate's routes answer it: the status of its code and a page that
   * says what to do (JSON for `Accept: application/json`). Adapters use it so every host answers alike.
   */
  errorResponse(error: unknown, request: Request): Response;
  /** The sign-in URL that returns to `returnTo` (a same-origin path) afterwards. */
  signInUrl(returnTo?: string): string;
  /** Discovers GitLab now instead of at the first sign-in; rejects with a {@link LabgateError} if it cannot. */
  ready(): Promise<void>;
  /** The resolved options (read-only). */
  readonly options: Readonly<ResolvedOptions>;
  /** The store in use. */
  readonly store: Store;
}

/**
 * Creates labgate. Checks every option at once and throws `TypeError` on misuse; GitLab itself is
 * contacted at the first sign-in (or `ready()`), so an app starts even while GitLab is down.
 *
 * @example
 * ```ts
 * import { createLabgate } from 'labgate';
 *
 * const labgate = createLabgate({
 *   gitlabUrl: 'https://gitlab.com',
 *   clientId: process.env.GITLAB_CLIENT_ID!,
 *   clientSecret: process.env.GITLAB_CLIENT_SECRET,
 *   url: 'https://app.example.com',
 *   secret: process.env.LABGATE_SECRET!,
 * });
 * const response = (await labgate.handle(request)) ?? (await app(request));
 * ```
 */
export function createLabgate(input: LabgateOptions): Labgate {
  const rt = createRuntime(input);
  const { options, sessions } = rt;
  const tokens = createTokens(rt);
  const checks = createAccessChecks(rt, tokens);

  /** The session of a `Cookie` header, its app-wide access re-checked first when due. */
  async function find(header: string | null | undefined): Promise<Session | null> {
    const state = await sessions.fromCookieHeader(header);
    if (!state) return null;
    rt.remember(state);
    if (checks.due(state) && !(await checks.recheck(state))) return null;
    return state.session;
  }

  const routes = createRoutes(rt, { tokens, checks, callback: createCallback(rt, checks, tokens), find });

  async function accessToken(session: Session | string, force: boolean): Promise<string> {
    return tokens.accessToken(await rt.stateFor(session, 'getAccessToken'), force);
  }

  /** The session when it is known without I/O (no session cookie, or one verified moments ago). */
  function sessionOf(header: string | null | undefined): Session | null | Promise<Session | null> {
    const state = sessions.fromCache(header);
    if (state === null) return null;
    if (state !== undefined && !checks.due(state)) return state.session;
    return find(header);
  }

  return {
    handle: routes.handle,
    getSession(request) {
      const found = sessionOf(request.headers.get('cookie'));
      return found instanceof Promise ? found : Promise.resolve(found);
    },
    sessionOf,
    guard: (rule) => createGuard(rt, checks, rule),
    getAccessToken: (session, opts = {}) => accessToken(session, opts.forceRefresh === true),
    on: (name, handler) => rt.events.on(name, handler),
    gitlab(session) {
      const id = typeof session === 'string' ? session : session?.id;
      if (typeof id !== 'string') throw new TypeError('labgate: gitlab() takes a session or a session id');
      return rt.apiFor(({ forceRefresh }) => accessToken(id, forceRefresh));
    },
    async checkAccess(session, policy) {
      return checks.decide(await rt.stateFor(session, 'checkAccess'), checks.compile(policy));
    },
    checkToken: tokens.check,
    refreshToken: tokens.refresh,
    revokeToken: tokens.revoke,
    async endSession(session) {
      const state = await rt.stateFor(session, 'endSession').catch((error: unknown) => {
        // Ending a session that has already ended is done.
        if ((error as { code?: unknown }).code === 'session_required') return null;
        throw error;
      });
      if (state) await sessions.end(state);
    },
    async listSessions(session) {
      return sessions.list(await rt.stateFor(session, 'listSessions'));
    },
    async signOutEverywhere(session) {
      await routes.signOut(await rt.stateFor(session, 'signOutEverywhere'), true);
    },
    errorResponse(error, request) {
      const path = new URL(request.url).pathname;
      return errorAnswer(
        error,
        routeError(request.headers.get('accept'), path, options.prefix, error),
        options,
      );
    },
    signInUrl: (returnTo) => signInUrl(options, returnTo),
    ready: async () => {
      await rt.provider();
    },
    options,
    store: rt.store,
  };
}
