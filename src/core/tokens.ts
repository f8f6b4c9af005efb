/**
 * The GitLab token lifecycle, each step written once: a session's access token (refreshed before it
 * expires, single-flight in this process, locked across processes through the store), the refresh
 * grant, revocation, and GitLab's word on a token. GitLab tokens last two hours and each refresh token
 * works once (docs/security.md, TOKEN-3): the loser of a refresh race re-reads the rotated pair instead
 * of spending the refresh token again.
 */
import * as oauth from 'oauth4webapi';
import { randomToken } from './crypto.js';
import { LabgateError } from './errors.js';
import { refusedAnswerStatus, syncClock, toLabgateError } from './provider.js';
import type { Runtime } from './runtime.js';
import type { Session, SessionState } from './sessions.js';
import { checkIdToken } from './signin.js';
import type { TokenSet } from './store.js';

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

/** The token lifecycle of one instance. */
export interface Tokens {
  /** The session's access token, refreshed first when due (or always, with `force`). */
  accessToken(state: SessionState, force: boolean): Promise<string>;
  /** Spends a refresh token (no session involved) and returns the new pair. */
  refresh(refreshToken: string): Promise<TokenSet>;
  /** Revokes a pair at GitLab, best effort: sign-out never fails because GitLab is slow or down. */
  revokeQuietly(tokens: TokenSet, session?: Session): Promise<void>;
  /** Revokes a token at GitLab; rejects when GitLab does not take it. */
  revoke(token: string): Promise<void>;
  /** Asks GitLab about an access token (`/oauth/token/info`). */
  check(accessToken: string): Promise<TokenCheck>;
}

const RETRY_DELAYS_MS = [200, 1000];

/** The token lifecycle on a runtime. */
export function createTokens(rt: Runtime): Tokens {
  const { options, store, sessions, events, provider } = rt;
  const { logger } = options;
  const refreshing = new Map<string, Promise<string>>();
  // The lock must outlive the slowest refresh its holder may still be doing (discovery, three tries
  // and a JWKS fetch of up to requestTimeout each, up to 10 s of waits between the tries): expired
  // early, it lets another process spend the same single-use refresh token, and one gets invalid_grant.
  const LOCK_TTL_MS = 5 * options.requestTimeout + 15_000;

  /** The refresh grant, one request; `answered` sees GitLab's raw answer before it is validated. */
  async function grant(
    refreshToken: string,
    answered: (response: Response) => void = () => {},
  ): Promise<oauth.TokenEndpointResponse> {
    const server = await provider();
    const response = await oauth.refreshTokenGrantRequest(
      server.server,
      server.client,
      server.clientAuth,
      refreshToken,
      server.http,
    );
    answered(response);
    syncClock(server, options.now);
    return oauth.processRefreshTokenResponse(server.server, server.client, response);
  }

  function tokenSet(result: oauth.TokenEndpointResponse, scope: string): TokenSet {
    return {
      accessToken: result.access_token,
      refreshToken: result.refresh_token ?? null,
      expiresAt: options.now() + (typeof result.expires_in === 'number' ? result.expires_in : 300) * 1000,
      scope: result.scope ?? scope,
    };
  }

  /** The revocation request (either token of a pair revokes both). */
  async function revokeAt(token: string, hint?: 'refresh_token' | 'access_token', timeout?: number) {
    const server = await provider();
    if (!server.server.revocation_endpoint) return false;
    const response = await oauth.revocationRequest(server.server, server.client, server.clientAuth, token, {
      ...server.http,
      ...(hint ? { additionalParameters: { token_type_hint: hint } } : {}),
      ...(timeout ? { signal: AbortSignal.timeout(timeout) } : {}),
    });
    await oauth.processRevocationResponse(response);
    return true;
  }

  async function accessToken(state: SessionState, force: boolean): Promise<string> {
    const { session } = state;
    const tokens = await sessions.tokens(state);
    if (!force && tokens.expiresAt - options.refreshMargin * 1000 > options.now()) return tokens.accessToken;
    if (!tokens.refreshToken) {
      if (tokens.expiresAt > options.now()) return tokens.accessToken;
      await rt.endState(state, 'token-invalid');
      throw new LabgateError('session_required', 'the GitLab token expired and there is no refresh token');
    }
    let pending = refreshing.get(session.id);
    if (!pending) {
      pending = refreshLocked(state, tokens, force).finally(() => refreshing.delete(session.id));
      refreshing.set(session.id, pending);
    }
    return pending;
  }

  async function refreshLocked(state: SessionState, seen: TokenSet, force: boolean): Promise<string> {
    const lock = `refresh-lock:${state.session.id}`;
    const owner = randomToken(12);
    // How long a request waits on another process's refresh before giving up (the lock lives longer).
    const deadline = options.now() + 15_000 + options.requestTimeout;
    let wait = 25;
    for (;;) {
      if (await rt.storeCall(() => store.add(lock, owner, LOCK_TTL_MS))) break;
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

  /** Spends the refresh token once (transient failures retried with bounded backoff), stores the new pair. */
  async function refreshOnce(state: SessionState, tokens: TokenSet): Promise<string> {
    let result: oauth.TokenEndpointResponse | undefined;
    let last: unknown;
    for (let attempt = 0; attempt <= RETRY_DELAYS_MS.length && !result; attempt++) {
      let response: Response | undefined;
      try {
        result = await grant(tokens.refreshToken!, (answer) => {
          response = answer;
        });
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
          await rt.endState(state, 'token-invalid');
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
          await rt.endState(state, 'token-invalid');
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
          const retryAfter = Number(response?.headers.get('retry-after') ?? Number.NaN);
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
        await rt.endState(state, 'token-invalid');
        throw new LabgateError('session_required', 'the refreshed ID token names another user');
      }
      await checkIdToken(await provider(), options, result.id_token!, claims, result.access_token).catch(
        async (error: unknown) => {
          // The refresh token is spent: the session cannot go on without the pair just refused.
          await rt.endState(state, 'token-invalid');
          throw error;
        },
      );
    }
    const next = tokenSet(result, tokens.scope);
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
    accessToken,
    async refresh(refreshToken) {
      try {
        return tokenSet(await grant(refreshToken), '');
      } catch (error) {
        throw toLabgateError(error, 'token_exchange_failed', 'token refresh');
      }
    },
    async revokeQuietly(tokens, session) {
      try {
        const token = tokens.refreshToken ?? tokens.accessToken;
        const hint = tokens.refreshToken ? 'refresh_token' : 'access_token';
        if ((await revokeAt(token, hint, 3000)) && session)
          events.emit('token.revoked', { sessionId: session.id, userId: session.userId });
      } catch (error) {
        logger.warn(
          `labgate: revoking the GitLab token failed: ${toLabgateError(error, 'gitlab_error', 'revocation').code}`,
        );
      }
    },
    async revoke(token) {
      let revoked: boolean;
      try {
        revoked = await revokeAt(token);
      } catch (error) {
        throw toLabgateError(error, 'gitlab_error', 'token revocation');
      }
      if (!revoked) throw new LabgateError('gitlab_error', 'GitLab announces no revocation endpoint');
    },
    async check(accessToken) {
      const response = await rt
        .guarded(`${options.gitlabUrl.href.replace(/\/+$/, '')}/oauth/token/info`, {
          headers: { authorization: `Bearer ${accessToken}`, accept: 'application/json' },
        })
        .catch((error: unknown) => {
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
  };
}
