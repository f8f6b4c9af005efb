/**
 * `createLabgate`: the fetch handler of sign-in, sign-out and the session, and the session check
 * every adapter calls on each request.
 */
import * as oauth from 'oauth4webapi';
import {
  type AccessFacts,
  accessFailureText,
  type Decision,
  evaluateAccess,
  type NormalisedPolicy,
  normalisePolicy,
  type Policy,
} from './access.js';
import { readBody, readForm } from './body.js';
import { KeyRing, parseSecrets, randomToken, timingSafeEqual } from './crypto.js';
import { ERROR_CODES, isLabgateError, LabgateError, type LabgateErrorCode } from './errors.js';
import { Emitter, type LabgateEventHandler, type LabgateEventName, type LabgateEvents } from './events.js';
import { createGitLabClient, type GitLabClient, type GitLabClientOptions } from './gitlab.js';
import {
  type Guard,
  type GuardOutcome,
  type GuardRequest,
  type GuardRule,
  isNavigation,
  signInRedirect,
  signInRequired,
} from './guards.js';
import { logText } from './log.js';
import { fetchAccessFacts, TokenRejected } from './memberships.js';
import { type LabgateOptions, type ResolvedOptions, resolveOptions } from './options.js';
import { errorPage, htmlResponse, linkPage, logoutPage, PAGE_HEADERS } from './pages.js';
import {
  discover,
  guardFetch,
  type Provider,
  refusedAnswerStatus,
  syncClock,
  toLabgateError,
} from './provider.js';
import { safeReturnTo } from './redirects.js';
import { allowedMethods, routeOf } from './routes.js';
import { type Session, type SessionInfo, type SessionState, Sessions } from './sessions.js';
import { checkIdToken, completeSignIn, startSignIn } from './signin.js';
import { MemoryStore, type SessionUser, type Store, type TokenSet } from './store.js';

/** What GitLab says of an access token. */
export interface TokenCheck {
  active: boolean;
  scopes: string[];
  /** Seconds left, when active. */
  expiresIn: number | null;
  /** GitLab's numeric user id, when active. */
  userId: number | null;
  /** The OAuth application's client id, when active. */
  clientId: string | null;
}

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

function wantsJson(accept: string | null | undefined): boolean {
  return !!accept && accept.includes('application/json') && !accept.includes('text/html');
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
  const options = resolveOptions(input);
  parseSecrets(options.secret);
  const store = input.store ?? new MemoryStore({ now: options.now });
  let ring: Promise<KeyRing> | undefined;
  const keys = () => {
    ring ??= KeyRing.fromSecret(options.secret);
    return ring;
  };
  let discovered: Promise<Provider> | undefined;
  let failedAt = 0;
  const provider = () => {
    // A failed discovery is retried, but not more than once every 5 seconds.
    if (!discovered && options.now() - failedAt < 5000 && failedAt !== 0) {
      return Promise.reject(new LabgateError('gitlab_unreachable', 'GitLab discovery failed moments ago'));
    }
    discovered ??= discover(options).catch((error: unknown) => {
      discovered = undefined;
      failedAt = options.now();
      throw error;
    });
    return discovered;
  };
  const sessions = new Sessions(options, store, keys);
  const guarded = guardFetch(options);
  const events = new Emitter((name, error) =>
    logger.error(
      `labgate: a ${name} handler failed: ${error instanceof Error ? error.message : String(error)}`,
    ),
  );
  // The states of sessions this process has seen, by id: hosts keep only a session's id (a serialised
  // session, a server component's copy), and every method takes the id as well as the object.
  const live = new Map<string, SessionState>();
  const remember = (state: SessionState) => {
    if (live.get(state.session.id) === state) return;
    if (live.size >= 10_000) live.delete(live.keys().next().value!);
    live.set(state.session.id, state);
  };
  /** The state of a session given as the object or its id; `session_required` once it has ended. */
  async function stateFor(session: Session | string, what: string): Promise<SessionState> {
    const id = typeof session === 'string' ? session : session?.id;
    if (typeof id !== 'string') throw new TypeError(`labgate: ${what} takes a session or a session id`);
    const known = live.get(id);
    if (known) return known;
    const loaded = await sessions.byId(id);
    if (!loaded) throw new LabgateError('session_required', 'the session has ended');
    remember(loaded);
    return loaded;
  }
  const ctx = { options, store, keys, provider };
  const { prefix, logger } = options;

  function errorResponse(error: unknown, request: Request, route: string): Response {
    return errorAnswer(error, request.headers.get('accept'), route);
  }

  /** The answer to an error, from plain data: what the client accepts and the path it asked for. */
  function errorAnswer(error: unknown, accept: string | null | undefined, route: string): Response {
    const reference = randomToken(6);
    const failure = isLabgateError(error)
      ? error
      : new LabgateError('gitlab_error', 'unexpected failure', { cause: error });
    const code: LabgateErrorCode = isLabgateError(error) ? error.code : 'gitlab_error';
    const status = ERROR_CODES[code].status;
    const line = `labgate: ${logText(route)} failed: ${code}: ${failure.message} (reference ${reference})`;
    if (!isLabgateError(error))
      logger.error(`${line}: ${error instanceof Error ? error.name : typeof error}`);
    else if (status >= 500) logger.error(line);
    else logger.warn(line);
    const extra: Record<string, string> = { 'x-labgate-reference': reference };
    if (code === 'method_not_allowed') extra['allow'] = allowedMethods(routeOf(route, prefix) ?? '');
    if (code === 'payload_too_large') extra['connection'] = 'close';
    if (wantsJson(accept)) {
      return Response.json(
        { error: code, message: ERROR_CODES[code].title, reference },
        { status, headers: { ...PAGE_HEADERS, ...extra } },
      );
    }
    const again =
      code === 'session_required' || route.endsWith('/callback') || route.endsWith('/login')
        ? `${prefix}/login`
        : '/';
    return htmlResponse(
      errorPage(code, { again, reference, detail: isLabgateError(error) ? error.detail : undefined }),
      status,
      extra,
    );
  }

  /** POST routes must come from the app's own pages (Origin, or Sec-Fetch-Site for browsers that omit it). */
  function sameOrigin(request: Request): boolean {
    const origin = request.headers.get('origin');
    if (origin !== null) return origin === options.origin;
    return request.headers.get('sec-fetch-site') === 'same-origin';
  }

  async function storeCall<T>(run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (error) {
      throw isLabgateError(error)
        ? error
        : new LabgateError('store_unavailable', 'the store failed', { cause: error });
    }
  }

  async function stateOf(request: Request): Promise<SessionState | null> {
    return sessions.fromCookieHeader(request.headers.get('cookie'));
  }

  async function revoke(tokens: TokenSet, session?: Session): Promise<void> {
    const token = tokens.refreshToken ?? tokens.accessToken;
    try {
      const server = await provider();
      if (!server.server.revocation_endpoint) return;
      const response = await oauth.revocationRequest(server.server, server.client, server.clientAuth, token, {
        ...server.http,
        additionalParameters: { token_type_hint: tokens.refreshToken ? 'refresh_token' : 'access_token' },
        signal: AbortSignal.timeout(3000),
      });
      await oauth.processRevocationResponse(response);
      if (session) events.emit('token.revoked', { sessionId: session.id, userId: session.userId });
    } catch (error) {
      // Revocation is best effort: sign-out never fails because GitLab is slow or down.
      logger.warn(
        `labgate: revoking the GitLab token failed: ${toLabgateError(error, 'gitlab_error', 'revocation').code}`,
      );
    }
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
    await Promise.all(sealed.map((tokens, i) => (tokens ? revoke(tokens, ending[i]!.session) : undefined)));
    logger.info(`labgate: session ${state.session.id} signed out${everywhere ? ' everywhere' : ''}`);
  }

  async function logout(request: Request): Promise<Response> {
    if (request.method === 'GET' || request.method === 'HEAD') {
      return htmlResponse(logoutPage(`${prefix}/logout`));
    }
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
        location: safeReturnTo(fields.get('returnTo'), options.origin),
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
    const ended = await sessions.endOne(state, id);
    if (!ended) throw new LabgateError('not_found', 'no such session of this user');
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
    return startSignIn(ctx, request, { returnTo: fields.get('returnTo'), link: state.session.id });
  }

  async function callback(request: Request): Promise<Response> {
    const headers = new Headers(PAGE_HEADERS);
    try {
      const done = await completeSignIn(ctx, request, (cookie) => headers.append('set-cookie', cookie));
      const decision = await decideAtSignIn(done.user, done.tokens);
      done.user.roles = decision.roles;
      const current = await stateOf(request).catch(() => null);
      // The session is always the account's that just signed in: a cookie that happens to be there
      // links nothing. Only a link its user asked for (POST /auth/link) on this very session does
      // (docs/security.md, SESSION-7).
      let linkTo: string | undefined;
      if (done.link !== null) {
        if (!options.accountLinking || current?.session.id !== done.link) {
          await revoke(done.tokens);
          throw new LabgateError('transaction_invalid', 'the account link was asked for by another session');
        }
        linkTo = current.session.userId;
      }
      const userId = await storeCall(() =>
        store.upsertIdentity(
          { issuer: done.user.issuer, sub: done.user.sub, profile: done.user, updatedAt: options.now() },
          { newUserId: randomToken(16), ...(linkTo === undefined ? {} : { linkTo }) },
        ),
      );
      if (linkTo !== undefined && userId !== linkTo) {
        await revoke(done.tokens);
        throw new LabgateError('access_forbidden', 'the GitLab account belongs to another user', {
          detail: 'This GitLab account is already linked to another user, so it cannot be linked to yours.',
        });
      }
      if (linkTo !== undefined)
        logger.info(
          `labgate: ${logText(done.user.username, 64)} (${done.user.issuer} ${logText(done.user.sub, 64)}) linked to user ${userId}`,
        );
      // The browser's previous session is ended when it was the same user's (a new sign-in rotates it);
      // another user's session is not this sign-in's to end.
      if (current && current.session.userId === userId) await sessions.end(current);
      const { setCookie, state } = await sessions.create(done.user, done.tokens, userId);
      const now = options.now();
      await sessions.setAccess(state, { roles: decision.roles, checkedAt: now, okAt: now });
      await storeCall(() =>
        store.put(`identity-user:${done.user.issuer} ${done.user.sub}`, userId, options.sessionMaxAge * 1000),
      );
      headers.append('set-cookie', setCookie);
      headers.set('location', done.returnTo);
      logger.info(
        `labgate: ${logText(done.user.username, 64)} (${done.user.issuer} ${logText(done.user.sub, 64)}) signed in, session ${state.session.id}`,
      );
      events.emit('session.created', {
        sessionId: state.session.id,
        userId,
        issuer: done.user.issuer,
        sub: done.user.sub,
        username: done.user.username,
      });
      return new Response(null, { status: 303, headers });
    } catch (error) {
      const response = errorResponse(error, request, `${prefix}/callback`);
      const failure = isLabgateError(error) ? error.code : 'gitlab_error';
      events.emit('signin.failed', {
        code: failure,
        reference: response.headers.get('x-labgate-reference') ?? '',
      });
      for (const cookie of headers.getSetCookie()) response.headers.append('set-cookie', cookie);
      return response;
    }
  }

  async function route(request: Request, path: string): Promise<Response> {
    const method = request.method;
    switch (path) {
      case '/login':
        if (method !== 'GET' && method !== 'HEAD') throw new LabgateError('method_not_allowed');
        return startSignIn(ctx, request);
      case '/callback':
        if (method !== 'GET') throw new LabgateError('method_not_allowed');
        return callback(request);
      case '/logout':
        return logout(request);
      case '/sessions':
        return sessionList(request);
      case '/webhooks/gitlab':
        return webhook(request);
      case '/link':
        return link(request);
      case '/session': {
        if (method !== 'GET' && method !== 'HEAD') throw new LabgateError('method_not_allowed');
        // Through the same check as getSession: a session whose access is due is re-checked first.
        const session = await fromCookies(request.headers.get('cookie'));
        if (!session) throw new LabgateError('session_required');
        return Response.json(
          {
            user: session.user,
            session: { id: session.id, createdAt: session.createdAt, expiresAt: session.expiresAt },
          },
          { headers: { 'cache-control': 'no-store' } },
        );
      }
      default:
        throw new LabgateError('not_found');
    }
  }

  async function handle(request: Request): Promise<Response | null> {
    let path: string;
    try {
      path = new URL(request.url).pathname;
    } catch {
      return null;
    }
    const name = routeOf(path, prefix);
    if (name === null) return null;
    let response: Response;
    try {
      response = await route(request, name);
    } catch (error) {
      response = errorResponse(error, request, path);
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

  async function fromCookies(header: string | null | undefined): Promise<Session | null> {
    const state = await sessions.fromCookieHeader(header);
    if (!state) return null;
    remember(state);
    if (recheckDue(state) && !(await recheck(state))) return null;
    return state.session;
  }

  function recheckDue(state: SessionState): boolean {
    const checkedAt = state.access?.checkedAt ?? state.session.createdAt;
    return options.now() - checkedAt >= options.recheckInterval * 1000;
  }

  function cachedSession(header: string | null | undefined): Session | null | undefined {
    const state = sessions.fromCache(header);
    // Not cached, or its access re-check is due: only getSessionFromCookies can answer.
    if (state === undefined || (state !== null && recheckDue(state))) return undefined;
    // A cached state was remembered when it was loaded (fromCookies): no write here.
    return state === null ? null : state.session;
  }

  // ------------------------------------------------------------------------------------------
  // Access: decided at sign-in, re-checked on an interval and after every token refresh.

  async function userinfoOk(token: string): Promise<boolean> {
    const server = await provider();
    if (!server.server.userinfo_endpoint) return true;
    const response = await guarded(server.server.userinfo_endpoint, {
      headers: { authorization: `Bearer ${token}` },
    });
    await response.body?.cancel();
    if (response.status === 401 || response.status === 403) return false;
    if (!response.ok) throw new LabgateError('gitlab_error', `userinfo answered ${response.status}`);
    return true;
  }

  function deny(decision: Decision, session: Session | null, user: SessionUser): LabgateError {
    const failed = decision.failed ?? 'no-rule-matched';
    events.emit('access.denied', {
      sessionId: session?.id ?? null,
      userId: session?.userId ?? null,
      username: user.username,
      reason: failed,
    });
    return new LabgateError('access_forbidden', `access denied to ${user.username}: ${failed}`, {
      detail: accessFailureText(failed),
    });
  }

  /** A GitLab API client on this instance's GitLab, with the given source of tokens. */
  function apiFor(getToken: GitLabClientOptions['getToken']): GitLabClient {
    return createGitLabClient({
      gitlabUrl: options.gitlabUrl.href,
      getToken,
      fetch: options.fetch,
      timeout: options.requestTimeout,
    });
  }

  async function decideAtSignIn(user: SessionUser, tokens: TokenSet): Promise<Decision> {
    const api = apiFor(async () => tokens.accessToken);
    let facts: AccessFacts;
    try {
      // userinfo answered during the sign-in: the account is active.
      facts = await fetchAccessFacts({
        api,
        user,
        policy: options.access,
        scopes: tokens.scope.split(' '),
        now: options.now(),
        userinfo: async () => true,
        fresh: true,
      });
    } catch (error) {
      throw error instanceof TokenRejected
        ? new LabgateError('account_unavailable', 'GitLab refused the new token')
        : error;
    }
    const decision = evaluateAccess(options.access, facts);
    if (!decision.allowed) {
      await revoke(tokens);
      throw deny(decision, null, user);
    }
    return decision;
  }

  const rechecking = new Map<string, Promise<boolean>>();

  /** Re-checks a session's access; false when the session has ended. Single-flight per session. */
  function recheck(state: SessionState): Promise<boolean> {
    let pending = rechecking.get(state.session.id);
    if (!pending) {
      pending = recheckNow(state).finally(() => rechecking.delete(state.session.id));
      rechecking.set(state.session.id, pending);
    }
    return pending;
  }

  async function recheckNow(state: SessionState): Promise<boolean> {
    const { session } = state;
    const now = options.now();
    const okAt = state.access?.okAt ?? session.createdAt;
    const unreachable = async (): Promise<boolean> => {
      if (now - okAt > options.accessGracePeriod * 1000) {
        // GitLab has not answered for longer than the grace period: fail closed.
        logger.warn(
          `labgate: access of session ${session.id} could not be re-checked for too long; ending it`,
        );
        await endState(state, 'access-lost');
        return false;
      }
      // Keep the last decision, and try again in 30 seconds, or as the grace period ends if sooner.
      const retryAt = Math.min(now + 30_000, okAt + options.accessGracePeriod * 1000 + 1);
      await sessions.setAccess(state, {
        roles: state.access?.roles ?? session.user.roles,
        checkedAt: retryAt - options.recheckInterval * 1000,
        okAt,
      });
      return true;
    };
    let facts: AccessFacts;
    try {
      const tokens = await sessions.tokens(state);
      const api = apiFor(({ forceRefresh }) => getAccessToken(session, forceRefresh));
      facts = await fetchAccessFacts({
        api,
        user: session.user,
        policy: options.access,
        scopes: tokens.scope.split(' '),
        now,
        userinfo: async () => userinfoOk(await getAccessToken(session, false)),
      });
    } catch (error) {
      if (error instanceof TokenRejected || (isLabgateError(error) && error.code === 'session_required')) {
        if (!(isLabgateError(error) && error.code === 'session_required'))
          await endState(state, 'token-invalid');
        return false;
      }
      if (isLabgateError(error) && error.code === 'store_unavailable') throw error;
      return unreachable();
    }
    // Facts GitLab could not give are not a verdict: keep the last decision for the grace period.
    if (facts.complete === false) return unreachable();
    const decision = evaluateAccess(options.access, facts);
    if (decision.allowed) {
      await sessions.setAccess(state, { roles: decision.roles, checkedAt: now, okAt: now });
      return true;
    }
    deny(decision, session, session.user);
    logger.info(`labgate: session ${session.id} lost access (${decision.failed})`);
    await endState(state, 'access-lost');
    return false;
  }

  const guardDecisions = new Map<string, { decision: Decision; at: number }>();

  /** A policy or one rule, normalised once, with the key its decisions are cached under. */
  function compile(input: Policy | string): { policy: NormalisedPolicy; key: string } {
    const policy = normalisePolicy(typeof input === 'string' ? { allow: [input], require: [] } : input);
    return { policy, key: JSON.stringify(policy) };
  }

  /** A decision for the session made within the re-check interval, or undefined. */
  function decided(sessionId: string, compiled: { key: string }): Decision | undefined {
    const cached = guardDecisions.get(`${sessionId} ${compiled.key}`);
    return cached && options.now() - cached.at < options.recheckInterval * 1000 ? cached.decision : undefined;
  }

  async function checkAccess(given: Session | string, input: Policy | string): Promise<Decision> {
    return decide(await stateFor(given, 'checkAccess'), compile(input));
  }

  async function decide(
    state: SessionState,
    { policy: normalised, key: policyKey }: { policy: NormalisedPolicy; key: string },
  ): Promise<Decision> {
    const { session } = state;
    const key = `${session.id} ${policyKey}`;
    const now = options.now();
    const cached = decided(session.id, { key: policyKey });
    if (cached) return cached;
    const tokens = await sessions.tokens(state);
    const api = apiFor(({ forceRefresh }) => getAccessToken(session, forceRefresh));
    let facts: AccessFacts;
    try {
      facts = await fetchAccessFacts({
        api,
        user: session.user,
        policy: normalised,
        scopes: tokens.scope.split(' '),
        now,
        userinfo: async () => true,
        fresh: true,
      });
    } catch (error) {
      if (error instanceof TokenRejected) {
        await endState(state, 'token-invalid');
        throw new LabgateError('session_required', 'GitLab refused the token');
      }
      throw error;
    }
    const decision = evaluateAccess(normalised, facts);
    if (facts.complete !== false) {
      if (guardDecisions.size >= 10_000) guardDecisions.delete(guardDecisions.keys().next().value!);
      guardDecisions.set(key, { decision, at: now });
    }
    if (!decision.allowed) deny(decision, session, session.user);
    return decision;
  }

  /** A guard compiled once from its rule (see {@link Labgate.guard}). */
  function guard(rule: GuardRule = {}): Guard {
    const { role, api = false } = rule;
    if (role !== undefined && (typeof role !== 'string' || role === ''))
      throw new TypeError('labgate: a guard role is a non-empty string');
    // A bad rule is a mistake in the app: refuse it when the guard is made, not on a request.
    const compiled = rule.access === undefined ? null : compile(rule.access);
    const forbidden = (detail: string, request: GuardRequest): Response =>
      errorAnswer(
        new LabgateError('access_forbidden', `access refused: ${detail}`, { detail }),
        request.accept,
        request.target.split('?')[0]!,
      );
    return {
      check(request): GuardOutcome | Promise<GuardOutcome> {
        const { session } = request;
        if (!session) {
          return !api && isNavigation(request) ? signInRedirect(signInUrl(request.target)) : signInRequired();
        }
        if (role !== undefined && !session.user.roles.includes(role))
          return forbidden(`This page needs the role “${role}”.`, request);
        if (compiled === null) return null;
        const known = decided(session.id, compiled);
        if (known) return known.allowed ? null : forbidden(accessFailureText(known.failed), request);
        return stateFor(session, 'a guard')
          .then((state) => decide(state, compiled))
          .then(
            (decision) => (decision.allowed ? null : forbidden(accessFailureText(decision.failed), request)),
            (error: unknown) => errorAnswer(error, request.accept, request.target.split('?')[0]!),
          );
      },
    };
  }

  function signInUrl(returnTo?: string): string {
    const target = safeReturnTo(returnTo, options.origin, '');
    return target ? `${prefix}/login?returnTo=${encodeURIComponent(target)}` : `${prefix}/login`;
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
    const server = await provider();
    const userId = await storeCall(() => store.get(`identity-user:${server.issuer} ${gitlabUserId}`));
    if (userId === null) return Response.json({ rechecked: 0 });
    const records = await sessions.ofUser(userId);
    let ended = 0;
    for (const state of records) {
      remember(state);
      for (const key of guardDecisions.keys())
        if (key.startsWith(`${state.session.id} `)) guardDecisions.delete(key);
      if (!(await recheck(state))) ended++;
    }
    logger.info(
      // The event name comes from the payload (docs/security.md, LOG-1).
      `labgate: webhook "${logText(payload['event_name'] ?? payload['object_kind'] ?? 'event', 64)}" re-checked ${records.length} session(s), ${ended} ended`,
    );
    return Response.json({ rechecked: records.length, ended });
  }

  const refreshing = new Map<string, Promise<string>>();

  /**
   * A GitLab access token for a session. Fresh tokens come straight from the session (no store round
   * trip). One that expires within `refreshMargin` is refreshed: once per session in this process
   * (single-flight), and once across processes (a lock in the store); a process that loses the race
   * re-reads the rotated pair instead of spending the single-use refresh token again.
   */
  async function getAccessToken(given: Session | string, force: boolean): Promise<string> {
    const state = await stateFor(given, 'getAccessToken');
    const { session } = state;
    const tokens = await sessions.tokens(state);
    if (!force && tokens.expiresAt - options.refreshMargin * 1000 > options.now()) return tokens.accessToken;
    if (!tokens.refreshToken) {
      if (tokens.expiresAt > options.now()) return tokens.accessToken;
      await endState(state, 'token-invalid');
      throw new LabgateError('session_required', 'the GitLab token expired and there is no refresh token');
    }
    let pending = refreshing.get(session.id);
    if (!pending) {
      pending = refreshLocked(state, tokens, force).finally(() => refreshing.delete(session.id));
      refreshing.set(session.id, pending);
    }
    return pending;
  }

  async function endState(
    state: SessionState,
    reason: LabgateEvents['session.ended']['reason'],
  ): Promise<void> {
    await sessions.end(state);
    events.emit('session.ended', { sessionId: state.session.id, userId: state.session.userId, reason });
  }

  // The lock must outlive the slowest refresh its holder may still be doing (discovery, three tries
  // and a JWKS fetch of up to requestTimeout each, up to 10 s of waits between the tries): expired
  // early, it lets another process spend the same single-use refresh token, and one gets invalid_grant.
  const LOCK_TTL_MS = 5 * options.requestTimeout + 15_000;

  async function refreshLocked(state: SessionState, seen: TokenSet, force: boolean): Promise<string> {
    const lock = `refresh-lock:${state.session.id}`;
    const owner = randomToken(12);
    // How long a request waits on another process's refresh before giving up (the lock lives longer).
    const deadline = options.now() + 15_000 + options.requestTimeout;
    let wait = 25;
    for (;;) {
      if (await storeCall(() => store.add(lock, owner, LOCK_TTL_MS))) break;
      // Another process is refreshing: its new pair is what we want, not a refresh of our own.
      if (!(await sessions.reload(state)))
        throw new LabgateError('session_required', 'the session has ended');
      const current = await sessions.tokens(state);
      if (current.refreshToken !== seen.refreshToken) return current.accessToken;
      if (options.now() > deadline) {
        if (seen.expiresAt > options.now()) return seen.accessToken;
        throw new LabgateError('gitlab_unreachable', 'another process holds the token refresh for too long');
      }
      await new Promise((resolve) => setTimeout(resolve, wait));
      wait = Math.min(wait * 2, 500);
    }
    try {
      // Re-read under the lock: the pair may have rotated since this process last looked.
      if (!(await sessions.reload(state)))
        throw new LabgateError('session_required', 'the session has ended');
      const current = await sessions.tokens(state);
      if (current.refreshToken !== seen.refreshToken) return current.accessToken;
      if (!force && current.expiresAt - options.refreshMargin * 1000 > options.now())
        return current.accessToken;
      return await refreshOnce(state, current);
    } finally {
      const holder = await store.get(lock).catch(() => null);
      if (holder === owner) await store.delete(lock).catch(() => undefined);
    }
  }

  const RETRY_DELAYS_MS = [200, 1000];

  /** Spends the refresh token once (transient failures retried with bounded backoff), stores the new pair. */
  async function refreshOnce(state: SessionState, tokens: TokenSet): Promise<string> {
    const server = await provider();
    let result: oauth.TokenEndpointResponse | undefined;
    let last: unknown;
    for (let attempt = 0; attempt <= RETRY_DELAYS_MS.length && !result; attempt++) {
      let response: Response | undefined;
      try {
        response = await oauth.refreshTokenGrantRequest(
          server.server,
          server.client,
          server.clientAuth,
          tokens.refreshToken!,
          server.http,
        );
        syncClock(server, options.now);
        result = await oauth.processRefreshTokenResponse(server.server, server.client, response);
      } catch (error) {
        last = error;
        const code =
          error instanceof oauth.ResponseBodyError
            ? error.error
            : error instanceof oauth.WWWAuthenticateChallengeError
              ? error.cause.find((c) => c.parameters['error'])?.parameters['error']
              : undefined;
        if (code === 'invalid_client') {
          // The app's own credentials are wrong: a configuration error, not this user's. Keep sessions.
          logger.error(
            'labgate: GitLab refused the client credentials during a token refresh: check GITLAB_CLIENT_SECRET',
          );
          if (tokens.expiresAt > options.now()) return tokens.accessToken;
          throw new LabgateError('gitlab_error', 'GitLab refused the client credentials', { cause: error });
        }
        if (code === 'invalid_grant') {
          await endState(state, 'token-invalid');
          throw new LabgateError('session_required', 'GitLab refused the refresh token; sign in again', {
            cause: error,
          });
        }
        // An answer the guarded fetch refused (not JSON, a member named twice) comes as an error of
        // the request itself, without a response: its status says whether GitLab took the grant.
        const refusedStatus = refusedAnswerStatus(error);
        if (response?.ok || (refusedStatus !== null && refusedStatus < 300)) {
          // GitLab took the grant, so the refresh token is spent (and, on current GitLab, the old
          // access token with it): retrying could only be refused. The answer does not validate.
          await endState(state, 'token-invalid');
          throw new LabgateError('session_required', "GitLab's answer to the token refresh is invalid", {
            cause: toLabgateError(error, 'gitlab_error', 'token refresh'),
          });
        }
        if (refusedStatus !== null) break;
        const status = response?.status ?? 0;
        // A 4xx other than 429 will not get better by retrying.
        if (status >= 400 && status < 500 && status !== 429) break;
        if (attempt < RETRY_DELAYS_MS.length) {
          // Read from the response: a 429 with a plain-text body is no ResponseBodyError.
          const retryAfter = Number(response?.headers.get('retry-after') ?? NaN);
          const delay =
            Number.isFinite(retryAfter) && retryAfter > 0
              ? Math.min(retryAfter * 1000, 5000)
              : RETRY_DELAYS_MS[attempt]!;
          await new Promise((resolve) => setTimeout(resolve, delay));
        }
      }
    }
    if (!result) {
      // A transient failure keeps the current token while it is still valid.
      if (tokens.expiresAt > options.now()) return tokens.accessToken;
      throw toLabgateError(last, 'gitlab_error', 'token refresh');
    }
    const claims = oauth.getValidatedIdTokenClaims(result) as Record<string, unknown> | undefined;
    if (claims) {
      // A refreshed ID token must name the same user, and be as valid as the first.
      if (claims['sub'] !== state.session.user.sub || claims['iss'] !== state.session.user.issuer) {
        await endState(state, 'token-invalid');
        throw new LabgateError('session_required', 'the refreshed ID token names another user');
      }
      await checkIdToken(server, options, result.id_token!, claims, result.access_token).catch(
        async (error: unknown) => {
          // The refresh token is spent: the session cannot go on without the pair just refused.
          await endState(state, 'token-invalid');
          throw error;
        },
      );
    }
    const next: TokenSet = {
      accessToken: result.access_token,
      refreshToken: result.refresh_token ?? null,
      expiresAt: options.now() + (typeof result.expires_in === 'number' ? result.expires_in : 300) * 1000,
      scope: result.scope ?? tokens.scope,
    };
    // Stored before it is used: the old refresh token is already dead at GitLab.
    await sessions.updateTokens(state, next);
    // Access is re-checked at every refresh: the next request of this session asks GitLab again.
    if (state.access) await sessions.setAccess(state, { ...state.access, checkedAt: 0 });
    events.emit('token.refreshed', {
      sessionId: state.session.id,
      userId: state.session.userId,
      expiresAt: next.expiresAt,
    });
    return next.accessToken;
  }

  return {
    handle,
    getSession: (request) => fromCookies(request.headers.get('cookie')),
    sessionOf: (header) => {
      const known = cachedSession(header);
      return known === undefined ? fromCookies(header) : known;
    },
    guard,
    getAccessToken: (session, opts = {}) => getAccessToken(session, opts.forceRefresh === true),
    on: (name, handler) => events.on(name, handler),
    gitlab(session) {
      const id = typeof session === 'string' ? session : session?.id;
      if (typeof id !== 'string') throw new TypeError('labgate: gitlab() takes a session or a session id');
      return apiFor(({ forceRefresh }) => getAccessToken(id, forceRefresh));
    },
    checkAccess,
    async checkToken(accessToken) {
      const response = await guarded(`${options.gitlabUrl.href.replace(/\/+$/, '')}/oauth/token/info`, {
        headers: { authorization: `Bearer ${accessToken}`, accept: 'application/json' },
      }).catch((error: unknown) => {
        throw toLabgateError(error, 'gitlab_error', 'token check');
      });
      if (response.status === 401 || response.status === 400) {
        await response.body?.cancel();
        return { active: false, scopes: [], expiresIn: null, userId: null, clientId: null };
      }
      if (!response.ok)
        throw new LabgateError('gitlab_error', `token check: GitLab answered ${response.status}`);
      const info = (await response.json()) as {
        scope?: unknown;
        expires_in?: unknown;
        resource_owner_id?: unknown;
        application?: { uid?: unknown };
      };
      return {
        active: true,
        scopes: Array.isArray(info.scope)
          ? info.scope.map(String)
          : String(info.scope ?? '')
              .split(' ')
              .filter(Boolean),
        expiresIn: typeof info.expires_in === 'number' ? info.expires_in : null,
        userId: typeof info.resource_owner_id === 'number' ? info.resource_owner_id : null,
        clientId: typeof info.application?.uid === 'string' ? info.application.uid : null,
      };
    },
    async refreshToken(refreshToken) {
      const server = await provider();
      try {
        const response = await oauth.refreshTokenGrantRequest(
          server.server,
          server.client,
          server.clientAuth,
          refreshToken,
          server.http,
        );
        syncClock(server, options.now);
        const result = await oauth.processRefreshTokenResponse(server.server, server.client, response);
        return {
          accessToken: result.access_token,
          refreshToken: result.refresh_token ?? null,
          expiresAt: options.now() + (typeof result.expires_in === 'number' ? result.expires_in : 300) * 1000,
          scope: result.scope ?? '',
        };
      } catch (error) {
        throw toLabgateError(error, 'token_exchange_failed', 'token refresh');
      }
    },
    async revokeToken(token) {
      const server = await provider();
      if (!server.server.revocation_endpoint)
        throw new LabgateError('gitlab_error', 'GitLab announces no revocation endpoint');
      try {
        const response = await oauth.revocationRequest(
          server.server,
          server.client,
          server.clientAuth,
          token,
          server.http,
        );
        await oauth.processRevocationResponse(response);
      } catch (error) {
        throw toLabgateError(error, 'gitlab_error', 'token revocation');
      }
    },
    async endSession(session) {
      const state = await stateFor(session, 'endSession').catch((error: unknown) => {
        // Ending a session that has already ended is done.
        if (isLabgateError(error) && error.code === 'session_required') return null;
        throw error;
      });
      if (state) await sessions.end(state);
    },
    async listSessions(session) {
      return sessions.list(await stateFor(session, 'listSessions'));
    },
    async signOutEverywhere(session) {
      await signOut(await stateFor(session, 'signOutEverywhere'), true);
    },
    errorResponse: (error, request) => errorResponse(error, request, new URL(request.url).pathname),
    signInUrl,
    ready: async () => {
      await provider();
    },
    options,
    store,
  };
}
