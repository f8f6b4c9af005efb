/**
 * GitLab's OAuth 2.0 provider (Doorkeeper as GitLab configures it): the browser sign-in, consent and
 * auto-approval, the token endpoint with every grant GitLab enables, revocation, token info,
 * introspection and the device grant. Every error answers with GitLab's status, body and page.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { Env } from './env.js';
import type { Application, User } from './fixtures.js';
import { html, json, type Reply, type RequestContext, type Router, redirect } from './http.js';
import { bearerToken, createIdToken, doorkeeperErrorHeaders, SERVER_SCOPES, tokenProblem } from './oidc.js';
import {
  consentPage,
  deviceCodePage,
  deviceConfirmPage,
  formPostPage,
  homePage,
  messagePage,
  oauthErrorPage,
  redirectingPage,
  rejectedPage,
  signInPage,
  twoFactorPage,
} from './pages.js';
import {
  type BrowserSession,
  CODE_LIFETIME,
  DEVICE_CODE_LIFETIME,
  DEVICE_POLL_INTERVAL,
  hexToken,
  safeEqual,
  type Token,
} from './state.js';
import { verifyTotp } from './totp.js';

/** Doorkeeper's (and GitLab's) error descriptions. */
export const DESCRIPTIONS = {
  invalid_client:
    'Client authentication failed due to unknown client, no client authentication included, or unsupported authentication method.',
  unauthorized_client: 'The client is not authorized to perform this request using this method.',
  invalid_grant:
    'The provided authorization grant is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client.',
  invalid_redirect_uri: 'The redirect URI included is not valid.',
  unsupported_response_type: 'The authorization server does not support this response type.',
  unsupported_response_mode: 'The authorization server does not support this response mode.',
  invalid_scope: 'The requested scope is invalid, unknown, or malformed.',
  invalid_code_challenge: 'Code challenge is required.',
  invalid_code_challenge_method: 'The code_challenge_method must be one of plain, S256.',
  unsupported_grant_type: 'The authorization grant type is not supported by the authorization server.',
  access_denied: 'The resource owner or authorization server denied the request.',
  unconfirmed_email: 'Verify the email address in your account profile before you sign in.',
  login_required: 'The authorization server requires end-user authentication.',
  consent_required: 'The authorization server requires end-user consent.',
  invalid_prompt:
    'The request is missing a required parameter, includes an unsupported parameter value, or is otherwise malformed.',
  authorization_pending:
    "The authorization request is still pending as the end user hasn't yet completed the user-interaction steps.",
  slow_down:
    'The authorization request is still pending and polling should continue, but the interval must be increased.',
  expired_token: 'The device_code has expired, and the device authorization session has concluded.',
  revoke_forbidden: 'You are not authorized to revoke this token',
} as const;

const missing = (name: string) => `Missing required parameter: ${name}.`;

const SESSION_COOKIE = '_gitlab_session';
const KNOWN_PROMPTS = ['none', 'login', 'consent', 'select_account', 'create'];
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

// ---------------------------------------------------------------------------------------------
// Redirect URIs (Doorkeeper's URIChecker)

const LOOPBACK_V4 = /^127(?:\.\d{1,3}){3}$/;

function isLoopbackLiteral(hostname: string): boolean {
  return LOOPBACK_V4.test(hostname) || hostname === '[::1]';
}

function parseRedirect(raw: string): URL | null {
  if (/\s/.test(raw) || !/^[A-Za-z][A-Za-z0-9+.-]*:/.test(raw)) return null;
  // Opaque URIs (`urn:x`, `mailto:a`) are refused: after the scheme comes a path starting with "/".
  if (!/^[A-Za-z][A-Za-z0-9+.-]*:\//.test(raw)) return null;
  try {
    const url = new URL(raw);
    if ((url.protocol === 'http:' || url.protocol === 'https:') && !url.hostname) return null;
    if (raw.includes('#')) return null;
    return url;
  } catch {
    return null;
  }
}

function queryPairs(url: URL): string[] {
  return url.search.replace(/^\?/, '').split('&').filter(Boolean).sort();
}

/** Doorkeeper's `URIChecker.matches?`: query ignored unless registered, loopback port ignored, rest exact. */
export function redirectUriMatches(requested: string, registered: string): boolean {
  const a = parseRedirect(requested);
  const b = parseRedirect(registered);
  if (!a || !b) return false;
  if (b.search) {
    const x = queryPairs(a);
    const y = queryPairs(b);
    if (x.length !== y.length || x.some((pair, i) => pair !== y[i])) return false;
  }
  const samePort = a.port === b.port || (isLoopbackLiteral(a.hostname) && isLoopbackLiteral(b.hostname));
  return (
    a.protocol === b.protocol &&
    a.username === b.username &&
    a.password === b.password &&
    a.hostname === b.hostname &&
    samePort &&
    (a.pathname || '/') === (b.pathname || '/')
  );
}

/** Appends parameters to a redirect URI's query (or fragment), as Doorkeeper's URIBuilder does. */
function withParams(uri: string, params: Record<string, string>, mode: 'query' | 'fragment'): string {
  const encoded = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== '')).toString();
  if (mode === 'fragment') return `${uri}#${encoded}`;
  return `${uri}${uri.includes('?') ? '&' : '?'}${encoded}`;
}

// ---------------------------------------------------------------------------------------------
// Browser sessions at the emulated GitLab

interface SessionHandle {
  session: BrowserSession;
  cookie: string | null;
}

function cookieFor(env: Env, id: string): string {
  return `${SESSION_COOKIE}=${id}; path=${env.basePath || '/'}; HttpOnly; SameSite=Lax`;
}

function loadSession(env: Env, ctx: RequestContext): SessionHandle {
  const id = ctx.cookies.get(SESSION_COOKIE);
  const existing = id ? env.state.sessions.get(id) : undefined;
  if (existing) return { session: existing, cookie: null };
  const session: BrowserSession = {
    id: randomBytes(16).toString('hex'),
    csrfToken: randomBytes(32).toString('base64url'),
    userId: null,
    otpUserId: null,
    returnTo: null,
  };
  env.state.sessions.set(session.id, session);
  return { session, cookie: cookieFor(env, session.id) };
}

/** Devise renews the session id at sign-in; the CSRF token is renewed too. */
function renewSession(env: Env, handle: SessionHandle): void {
  env.state.sessions.delete(handle.session.id);
  handle.session.id = randomBytes(16).toString('hex');
  handle.session.csrfToken = randomBytes(32).toString('base64url');
  env.state.sessions.set(handle.session.id, handle.session);
  handle.cookie = cookieFor(env, handle.session.id);
}

function withCookie(reply: Reply, handle: SessionHandle): Reply {
  if (handle.cookie) reply.headers = { ...reply.headers, 'set-cookie': handle.cookie };
  return reply;
}

function csrfValid(ctx: RequestContext, session: BrowserSession): boolean {
  // Rails reads `form_authenticity_param` from `params`: the query counts as well as the body.
  const sent = ctx.param('authenticity_token') ?? (ctx.headers['x-csrf-token'] as string | undefined) ?? '';
  return sent !== '' && safeEqual(sent, session.csrfToken);
}

const flashes = new WeakMap<BrowserSession, string>();

function signedInUser(env: Env, session: BrowserSession): User | undefined {
  const user = session.userId === null ? undefined : env.state.userById(session.userId);
  if (user && user.state !== 'active') {
    session.userId = null;
    return undefined;
  }
  return user;
}

// ---------------------------------------------------------------------------------------------
// Pre-authorization (Doorkeeper's PreAuthorization, in its order)

interface PreAuth {
  app: Application;
  redirectUri: string;
  responseType: string;
  responseMode: 'query' | 'fragment' | 'form_post';
  scopes: string[];
  state: string;
  nonce: string;
  codeChallenge: string;
  codeChallengeMethod: string;
  prompt: string;
  maxAge: string;
}

type PreAuthResult = { ok: true; pre: PreAuth } | { ok: false; description: string };

function preAuthorize(env: Env, read: (name: string) => string | undefined): PreAuthResult {
  const fail = (description: string): PreAuthResult => ({ ok: false, description });
  const clientId = read('client_id') ?? '';
  if (!clientId) return fail(missing('client_id'));
  const app = env.state.appByUid(clientId);
  if (!app) return fail(DESCRIPTIONS.invalid_client);
  const redirectUri = read('redirect_uri') ?? '';
  if (!redirectUri || !app.redirectUris.some((registered) => redirectUriMatches(redirectUri, registered))) {
    return fail(DESCRIPTIONS.invalid_redirect_uri);
  }
  const responseType = read('response_type') ?? '';
  if (!responseType) return fail(missing('response_type'));
  if (responseType !== 'code') return fail(DESCRIPTIONS.unsupported_response_type);
  const responseMode = read('response_mode') || 'query';
  if (responseMode !== 'query' && responseMode !== 'fragment' && responseMode !== 'form_post') {
    return fail(DESCRIPTIONS.unsupported_response_mode);
  }
  const rawScope = read('scope');
  // Scopes split on spaces only; tabs and newlines are refused; no scope means the default, `api`.
  const scopes = rawScope === undefined || rawScope.trim() === '' ? ['api'] : rawScope.trim().split(/ +/);
  if (
    /[\t\r\n]/.test(rawScope ?? '') ||
    !scopes.every((s) => SERVER_SCOPES.includes(s) && app.scopes.includes(s))
  ) {
    return fail(DESCRIPTIONS.invalid_scope);
  }
  const codeChallenge = read('code_challenge') ?? '';
  const codeChallengeMethod = read('code_challenge_method') ?? '';
  const pkceRequired = app.dynamic || (env.state.behaviour.pkce === 'public' && !app.confidential);
  if (pkceRequired && !codeChallenge) return fail(DESCRIPTIONS.invalid_code_challenge);
  if (codeChallenge && codeChallengeMethod !== 'plain' && codeChallengeMethod !== 'S256') {
    return fail(DESCRIPTIONS.invalid_code_challenge_method);
  }
  return {
    ok: true,
    pre: {
      app,
      redirectUri,
      responseType,
      responseMode,
      scopes: [...new Set(scopes)],
      state: read('state') ?? '',
      nonce: read('nonce') ?? '',
      codeChallenge,
      codeChallengeMethod: codeChallenge ? codeChallengeMethod : '',
      prompt: read('prompt') ?? '',
      maxAge: read('max_age') ?? '',
    },
  };
}

/** Sends the authorization response to the client in the requested response mode. */
function respondToClient(pre: PreAuth, params: Record<string, string>, as: 'redirect' | 'page'): Reply {
  const all = { ...params, state: pre.state };
  if (pre.responseMode === 'form_post') {
    return html(
      200,
      formPostPage(pre.redirectUri, Object.fromEntries(Object.entries(all).filter(([, v]) => v !== ''))),
    );
  }
  const target = withParams(pre.redirectUri, all, pre.responseMode);
  return as === 'page' ? html(200, redirectingPage(target)) : redirect(target);
}

function createGrant(env: Env, pre: PreAuth, user: User): string {
  const code = hexToken();
  env.state.grants.set(code, {
    code,
    appId: pre.app.id,
    userId: user.id,
    redirectUri: pre.redirectUri,
    scopes: pre.scopes,
    nonce: pre.nonce || null,
    codeChallenge: pre.codeChallenge || null,
    codeChallengeMethod: pre.codeChallengeMethod || null,
    createdAt: env.state.nowSeconds(),
    revoked: false,
  });
  return code;
}

/** A non-revoked token of the same app and user with exactly these scopes (expired ones count). */
function hasMatchingToken(env: Env, app: Application, user: User, scopes: string[]): boolean {
  const wanted = [...scopes].sort().join(' ');
  return env.state.tokens.some(
    (t) =>
      t.appId === app.id &&
      t.userId === user.id &&
      t.revokedAt === null &&
      [...t.scopes].sort().join(' ') === wanted,
  );
}

function fields(pre: PreAuth) {
  return {
    client_id: pre.app.uid,
    redirect_uri: pre.redirectUri,
    state: pre.state,
    response_type: pre.responseType,
    response_mode: pre.responseMode === 'query' ? '' : pre.responseMode,
    scope: pre.scopes.join(' '),
    nonce: pre.nonce,
    code_challenge: pre.codeChallenge,
    code_challenge_method: pre.codeChallengeMethod,
  };
}

// ---------------------------------------------------------------------------------------------
// The token endpoint

function tokenError(error: keyof typeof DESCRIPTIONS | 'invalid_request', description?: string): Reply {
  const text = description ?? DESCRIPTIONS[error as keyof typeof DESCRIPTIONS];
  const status = error === 'invalid_client' || error === 'unauthorized_client' ? 401 : 400;
  return json(status, { error, error_description: text }, doorkeeperErrorHeaders(error, text));
}

interface ClientCredentials {
  uid: string;
  secret: string;
  present: boolean;
}

/** Doorkeeper's credentials: HTTP Basic first (base64 only, never form-url-decoded), then the body. */
function clientCredentials(ctx: RequestContext): ClientCredentials {
  const header = ctx.headers.authorization ?? '';
  const basic = /^Basic (.*)/m.exec(header);
  if (basic) {
    const decoded = Buffer.from(basic[1]!, 'base64').toString('utf8');
    const at = decoded.indexOf(':');
    const uid = at === -1 ? decoded : decoded.slice(0, at);
    const secret = at === -1 ? '' : decoded.slice(at + 1);
    if (uid) return { uid, secret, present: true };
  }
  // `Credentials.from_params` reads `request.parameters`: query and body merged, the query winning.
  const uid = ctx.param('client_id') ?? '';
  const secret = ctx.param('client_secret') ?? '';
  return { uid, secret, present: uid !== '' };
}

/** `Application.by_uid_and_secret`: public apps may omit the secret; a wrong secret never passes. */
function authenticateClient(env: Env, credentials: ClientCredentials): Application | undefined {
  if (!credentials.present) return undefined;
  const app = env.state.appByUid(credentials.uid);
  if (!app) return undefined;
  if (!credentials.secret) return app.confidential ? undefined : app;
  return safeEqual(credentials.secret, app.secret) ? app : undefined;
}

function tokenResponse(env: Env, token: Token, nonce: string | null): Reply {
  const body: Record<string, unknown> = {
    access_token: token.accessToken,
    token_type: 'Bearer',
    expires_in: Math.max(0, token.createdAt + token.expiresIn - env.state.nowSeconds()),
    refresh_token: token.refreshToken,
    scope: token.scopes.join(' '),
    created_at: token.createdAt,
  };
  if (token.scopes.includes('openid')) body['id_token'] = createIdToken(env, token, nonce);
  return json(200, body, { 'cache-control': 'no-store, no-cache', pragma: 'no-cache' });
}

function pkceMatches(verifier: string, challenge: string | null, method: string | null): boolean {
  if (challenge === null) return verifier === '';
  if (method === 'S256') return createHash('sha256').update(verifier).digest('base64url') === challenge;
  return verifier === challenge;
}

function authorizationCodeGrant(env: Env, ctx: RequestContext): Reply {
  const { state } = env;
  const code = ctx.param('code') ?? '';
  const credentials = clientCredentials(ctx);
  const verifier = ctx.param('code_verifier') ?? '';
  const named = state.appByUid(credentials.uid);
  if (named?.dynamic && !verifier) {
    // GitLab's own `render json:` in `Oauth::TokensController`, before Doorkeeper: no cache headers.
    return json(400, {
      error: 'invalid_request',
      error_description: 'PKCE code_verifier is required for dynamic OAuth applications',
    });
  }
  if (!code) return tokenError('invalid_request', missing('code'));
  const grant = state.grants.get(code);
  if (grant?.codeChallenge && !verifier) return tokenError('invalid_request', missing('code_verifier'));
  const redirectUri = ctx.param('redirect_uri') ?? '';
  if (!redirectUri) return tokenError('invalid_request', missing('redirect_uri'));
  const app = authenticateClient(env, credentials);
  if (!app) return tokenError('invalid_client');
  if (
    !grant ||
    grant.revoked ||
    grant.appId !== app.id ||
    state.nowSeconds() > grant.createdAt + CODE_LIFETIME ||
    !redirectUriMatches(redirectUri, grant.redirectUri) ||
    !pkceMatches(verifier, grant.codeChallenge, grant.codeChallengeMethod)
  ) {
    return tokenError('invalid_grant');
  }
  grant.revoked = true;
  const token = state.issueToken(app, grant.userId, grant.scopes);
  return tokenResponse(env, token, grant.nonce);
}

function refreshTokenGrant(env: Env, ctx: RequestContext): Reply {
  const { state } = env;
  const value = ctx.param('refresh_token') ?? '';
  if (!value) return tokenError('invalid_request', missing('refresh_token'));
  const old = state.tokenByRefresh(value);
  if (!old || old.revokedAt !== null) return tokenError('invalid_grant');
  const credentials = clientCredentials(ctx);
  const app = authenticateClient(env, credentials);
  if (credentials.present && !app) return tokenError('invalid_client');
  if (!app || app.id !== old.appId) return tokenError('invalid_grant');
  const user = state.userById(old.userId);
  if (user?.state !== 'active') return tokenError('invalid_grant');
  const requested = ctx.param('scope');
  const scopes = requested ? requested.trim().split(/ +/) : old.scopes;
  if (!scopes.every((s) => old.scopes.includes(s))) return tokenError('invalid_scope');
  let previous: string | null = null;
  if (state.behaviour.refreshTokenRotation === 'immediate') state.revoke(old);
  else previous = old.refreshToken;
  const token = state.issueToken(app, old.userId, scopes, previous);
  return tokenResponse(env, token, null);
}

function passwordGrant(env: Env, ctx: RequestContext): Reply {
  const { state } = env;
  const credentials = clientCredentials(ctx);
  const app = authenticateClient(env, credentials);
  if (credentials.present && !app) return tokenError('invalid_client');
  const user = state.userByLogin(ctx.param('username') ?? '');
  const password = ctx.param('password') ?? '';
  if (!user || !safeEqual(password, user.password) || user.totpSecret !== null || user.state !== 'active') {
    return tokenError('invalid_grant');
  }
  const requested = ctx.param('scope');
  const scopes = requested ? requested.trim().split(/ +/) : ['api'];
  if (!app || !scopes.every((s) => app.scopes.includes(s))) {
    return app ? tokenError('invalid_scope') : tokenError('invalid_client');
  }
  return tokenResponse(env, state.issueToken(app, user.id, scopes), null);
}

function deviceCodeGrant(env: Env, ctx: RequestContext): Reply {
  const { state } = env;
  const credentials = clientCredentials(ctx);
  const app = authenticateClient(env, credentials);
  if (!app) return tokenError('invalid_client');
  const deviceCode = ctx.param('device_code') ?? '';
  if (!deviceCode) return tokenError('invalid_request', missing('device_code'));
  const grant = state.deviceGrants.get(deviceCode);
  if (!grant || grant.appId !== app.id) return tokenError('invalid_grant');
  const now = state.nowSeconds();
  if (now > grant.createdAt + DEVICE_CODE_LIFETIME) {
    state.deviceGrants.delete(deviceCode);
    return tokenError('expired_token');
  }
  if (grant.denied) {
    state.deviceGrants.delete(deviceCode);
    return tokenError('access_denied');
  }
  if (grant.lastPollingAt !== null && now - grant.lastPollingAt < DEVICE_POLL_INTERVAL)
    return tokenError('slow_down');
  grant.lastPollingAt = now;
  if (grant.userId === null) return tokenError('authorization_pending');
  state.deviceGrants.delete(deviceCode);
  return tokenResponse(env, state.issueToken(app, grant.userId, grant.scopes), null);
}

function tokenEndpoint(env: Env, ctx: RequestContext): Reply {
  const grantType = ctx.param('grant_type') ?? '';
  switch (grantType) {
    case '':
      return tokenError('invalid_request', missing('grant_type'));
    case 'authorization_code':
      return authorizationCodeGrant(env, ctx);
    case 'refresh_token':
      return refreshTokenGrant(env, ctx);
    case 'password':
      return passwordGrant(env, ctx);
    case DEVICE_GRANT:
      return deviceCodeGrant(env, ctx);
    case 'client_credentials':
      return tokenError('unauthorized_client');
    default:
      return tokenError('unsupported_grant_type');
  }
}

// ---------------------------------------------------------------------------------------------
// Revocation, token info, introspection, device authorization

function revokeEndpoint(env: Env, ctx: RequestContext): Reply {
  const { state } = env;
  const value = ctx.param('token') ?? '';
  const hint = ctx.param('token_type_hint');
  const token =
    hint === 'refresh_token'
      ? (state.tokenByRefresh(value) ?? state.tokenByAccess(value))
      : (state.tokenByAccess(value) ?? state.tokenByRefresh(value));
  // RFC 7009: an unknown token is answered as if it were revoked.
  if (!token) return json(200, {});
  const app = state.appById(token.appId);
  const client = authenticateClient(env, clientCredentials(ctx));
  if (app?.confidential && client?.id !== app.id) {
    return json(403, { error: 'unauthorized_client', error_description: DESCRIPTIONS.revoke_forbidden });
  }
  // Doorkeeper keeps the pair in one row: revoking either token revokes both.
  state.revoke(token);
  return json(200, {});
}

function tokenInfo(env: Env, ctx: RequestContext): Reply {
  const token = env.state.tokenByAccess(bearerToken(ctx) ?? '');
  if (tokenProblem(env, token) !== null || !token) {
    // `Oauth::TokenInfoController` answers `InvalidTokenResponse.new` without a reason, so an expired
    // or revoked token is "invalid" here too, with the error headers of `ErrorResponse`.
    const description = 'The access token is invalid';
    return json(
      401,
      { error: 'invalid_token', error_description: description, state: 'unauthorized' },
      doorkeeperErrorHeaders('invalid_token', description),
    );
  }
  env.state.markUsed(token);
  const expiresIn = token.createdAt + token.expiresIn - env.state.nowSeconds();
  return json(200, {
    resource_owner_id: token.userId,
    scope: token.scopes,
    expires_in: expiresIn,
    application: { uid: env.state.appById(token.appId)?.uid ?? null },
    created_at: token.createdAt,
    scopes: token.scopes,
    expires_in_seconds: expiresIn,
  });
}

function introspect(env: Env, ctx: RequestContext): Reply {
  const { state } = env;
  const client = authenticateClient(env, clientCredentials(ctx));
  const bearer = state.tokenByAccess(bearerToken(ctx) ?? '');
  const caller =
    client ?? (bearer && tokenProblem(env, bearer) === null ? state.appById(bearer.appId) : undefined);
  if (!caller) return tokenError('invalid_client');
  const value = ctx.param('token') ?? '';
  if (!value) return tokenError('invalid_request', missing('token'));
  const token = state.tokenByAccess(value) ?? state.tokenByRefresh(value);
  // Doorkeeper's default: only tokens of the calling application can be introspected.
  if (!token || tokenProblem(env, token) !== null || token.appId !== caller.id)
    return json(200, { active: false });
  // Doorkeeper's response, which GitLab does not customise: no `sub`, no `username`.
  return json(200, {
    active: true,
    scope: token.scopes.join(' '),
    client_id: caller.uid,
    token_type: 'Bearer',
    exp: token.createdAt + token.expiresIn,
    iat: token.createdAt,
  });
}

function userCode(): string {
  const alphabet = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ';
  const bytes = randomBytes(8);
  return Array.from(bytes, (b) => alphabet[b % alphabet.length]).join('');
}

function authorizeDevice(env: Env, ctx: RequestContext): Reply {
  const app = authenticateClient(env, clientCredentials(ctx));
  if (!app) return tokenError('invalid_client');
  const scope = ctx.param('scope');
  const scopes = scope ? scope.trim().split(/ +/) : ['api'];
  const grant = {
    deviceCode: hexToken(),
    userCode: userCode(),
    appId: app.id,
    scopes,
    createdAt: env.state.nowSeconds(),
    lastPollingAt: null,
    userId: null,
    denied: false,
  };
  env.state.deviceGrants.set(grant.deviceCode, grant);
  // The gem builds the verification URI from the request's host and drops the relative URL root.
  const origin = new URL(env.baseUrl).origin;
  return json(
    200,
    {
      device_code: grant.deviceCode,
      user_code: grant.userCode,
      verification_uri: `${origin}/oauth/device`,
      verification_uri_complete: `${origin}/oauth/device?user_code=${grant.userCode}`,
      expires_in: DEVICE_CODE_LIFETIME,
      interval: DEVICE_POLL_INTERVAL,
    },
    { 'cache-control': 'no-store', pragma: 'no-cache' },
  );
}

// ---------------------------------------------------------------------------------------------
// Routes

/** Registers the OAuth provider and the browser pages. */
export function registerOAuthRoutes(router: Router, env: Env): void {
  const { state } = env;
  const signInUrl = env.basePath ? `${env.basePath}/users/sign_in` : '/users/sign_in';
  const fullPath = (ctx: RequestContext) => `${ctx.url.pathname}${ctx.url.search}`;

  const requireSignIn = (ctx: RequestContext, handle: SessionHandle): Reply => {
    handle.session.returnTo = fullPath(ctx);
    return withCookie(redirect(env.url('/users/sign_in')), handle);
  };

  router.on('GET', '/', (ctx) => {
    const handle = loadSession(env, ctx);
    const user = signedInUser(env, handle.session);
    if (!user) return withCookie(redirect(env.url('/users/sign_in')), handle);
    return withCookie(
      html(
        200,
        homePage({
          name: user.name,
          username: user.username,
          signOutAction: env.url('/users/sign_out'),
          csrfToken: handle.session.csrfToken,
        }),
      ),
      handle,
    );
  });

  router.on('GET', '/users/sign_in', (ctx) => {
    const handle = loadSession(env, ctx);
    if (signedInUser(env, handle.session)) return withCookie(redirect(env.url('/')), handle);
    const message = flashes.get(handle.session) ?? null;
    flashes.delete(handle.session);
    return withCookie(
      html(200, signInPage({ action: signInUrl, csrfToken: handle.session.csrfToken, flash: message })),
      handle,
    );
  });

  router.on('POST', '/users/sign_in', (ctx) => {
    const handle = loadSession(env, ctx);
    const { session } = handle;
    if (!csrfValid(ctx, session)) return withCookie(html(422, rejectedPage()), handle);
    const succeed = (user: User): Reply => {
      session.otpUserId = null;
      session.userId = user.id;
      // Devise's trackable: the previous sign-in, or this one on the very first.
      user.lastSignInAt = user.currentSignInAt ?? state.now().toISOString();
      user.currentSignInAt = state.now().toISOString();
      renewSession(env, handle);
      const target = session.returnTo ?? env.url('/');
      session.returnTo = null;
      return withCookie(
        redirect(target.startsWith('/') ? `${new URL(env.baseUrl).origin}${target}` : target),
        handle,
      );
    };
    const otp = ctx.form.get('user[otp_attempt]');
    if (otp !== null && session.otpUserId !== null) {
      const user = state.userById(session.otpUserId);
      if (!user || user.state === 'blocked') {
        session.otpUserId = null;
        return withCookie(redirect(env.url('/users/sign_in')), handle);
      }
      const recovery = user.recoveryCodes.indexOf(otp.trim());
      if (recovery !== -1) {
        user.recoveryCodes.splice(recovery, 1);
        return succeed(user);
      }
      if (user.totpSecret && verifyTotp(user.totpSecret, otp, state.now().getTime())) return succeed(user);
      return withCookie(
        html(
          200,
          twoFactorPage({
            action: signInUrl,
            csrfToken: session.csrfToken,
            flash: 'Invalid two-factor code.',
          }),
        ),
        handle,
      );
    }
    const login = ctx.form.get('user[login]') ?? '';
    const password = ctx.form.get('user[password]') ?? '';
    const user = state.userByLogin(login);
    const fail = (message: string) => {
      flashes.set(session, message);
      return withCookie(redirect(env.url('/users/sign_in')), handle);
    };
    if (!user || !safeEqual(password, user.password)) return fail('Invalid login or password.');
    if (user.state === 'blocked') {
      return fail(
        'Your account has been blocked. Please contact your GitLab administrator if you think this is an error.',
      );
    }
    if (user.locked) return fail('Your account is locked.');
    // Signing in reactivates a deactivated user, as GitLab does.
    if (user.state === 'deactivated') user.state = 'active';
    if (user.totpSecret !== null || user.recoveryCodes.length > 0) {
      session.otpUserId = user.id;
      return withCookie(
        html(200, twoFactorPage({ action: signInUrl, csrfToken: session.csrfToken, flash: null })),
        handle,
      );
    }
    return succeed(user);
  });

  router.on('POST', '/users/sign_out', (ctx) => {
    const handle = loadSession(env, ctx);
    if (!csrfValid(ctx, handle.session)) return withCookie(html(422, rejectedPage()), handle);
    handle.session.userId = null;
    renewSession(env, handle);
    return withCookie(redirect(env.url('/users/sign_in')), handle);
  });

  router.on('GET', '/oauth/authorize', (ctx) => {
    const handle = loadSession(env, ctx);
    const user = signedInUser(env, handle.session);
    const result = preAuthorize(env, (name) => ctx.query.get(name) ?? undefined);
    const openid = result.ok && result.pre.scopes.includes('openid');
    const prompts = result.ok ? [...new Set(result.pre.prompt.split(' ').filter(Boolean))] : [];
    // doorkeeper-openid_connect refuses `none` with anything else, and any value it does not know.
    const badPrompt =
      (prompts.includes('none') && prompts.length > 1) || prompts.some((p) => !KNOWN_PROMPTS.includes(p));
    if (result.ok && openid && badPrompt) {
      return withCookie(
        respondToClient(
          result.pre,
          { error: 'invalid_request', error_description: DESCRIPTIONS.invalid_prompt },
          'redirect',
        ),
        handle,
      );
    }
    if (!user) {
      if (result.ok && openid && prompts.includes('none')) {
        return withCookie(
          respondToClient(
            result.pre,
            { error: 'login_required', error_description: DESCRIPTIONS.login_required },
            'redirect',
          ),
          handle,
        );
      }
      return requireSignIn(ctx, handle);
    }
    if (user.confirmedAt === null)
      return withCookie(html(200, oauthErrorPage(DESCRIPTIONS.unconfirmed_email)), handle);
    if (!result.ok) return withCookie(html(200, oauthErrorPage(result.description)), handle);
    const { pre } = result;
    const matching = hasMatchingToken(env, pre.app, user, pre.scopes);
    const skip = pre.app.trusted || (pre.app.confidential && matching);
    if (openid) {
      // Ruby's `max_age.to_i`: only "0" or a positive number asks for re-authentication.
      const maxAge = Number.parseInt(pre.maxAge, 10);
      const signedInAt = user.currentSignInAt ? Date.parse(user.currentSignInAt) : 0;
      const tooOld =
        (pre.maxAge === '0' || maxAge > 0) && state.now().getTime() - signedInAt > Math.max(1, maxAge) * 1000;
      // The gem's consent check counts a matching token of a public app too; GitLab then still
      // renders the consent page for it below.
      if (prompts.includes('none') && !pre.app.trusted && !matching) {
        return withCookie(
          respondToClient(
            pre,
            { error: 'consent_required', error_description: DESCRIPTIONS.consent_required },
            'redirect',
          ),
          handle,
        );
      }
      if (prompts.includes('login') || tooOld) {
        // GitLab signs the user out entirely and comes back here without `login` in `prompt`.
        handle.session.userId = null;
        const again = new URL(ctx.url.href);
        const rest = prompts.filter((p) => p !== 'login');
        if (rest.length > 0) again.searchParams.set('prompt', rest.join(' '));
        else again.searchParams.delete('prompt');
        handle.session.returnTo = `${again.pathname}${again.search}`;
        return withCookie(redirect(env.url('/users/sign_in')), handle);
      }
    }
    // `prompt=consent` is an OIDC parameter: without `openid` it is ignored.
    if (skip && !(openid && prompts.includes('consent'))) {
      const code = createGrant(env, pre, user);
      return withCookie(
        respondToClient(pre, { code }, state.behaviour.autoApprove === 'page' ? 'page' : 'redirect'),
        handle,
      );
    }
    return withCookie(
      html(
        200,
        consentPage({
          action: env.url('/oauth/authorize'),
          csrfToken: handle.session.csrfToken,
          appName: pre.app.name,
          admin: user.admin,
          scopes: pre.scopes,
          fields: fields(pre),
        }),
      ),
      handle,
    );
  });

  const decide = (approve: boolean) => (ctx: RequestContext) => {
    const handle = loadSession(env, ctx);
    const user = signedInUser(env, handle.session);
    if (!user) return requireSignIn(ctx, handle);
    if (!csrfValid(ctx, handle.session)) return withCookie(html(422, rejectedPage()), handle);
    // Doorkeeper builds the pre-authorization from Rails' `params`: fields in the form's action URL
    // count as well as those in the body, and win over them.
    const result = preAuthorize(env, (name) => ctx.param(name));
    if (!result.ok) return withCookie(html(200, oauthErrorPage(result.description)), handle);
    if (!approve) {
      return withCookie(
        respondToClient(
          result.pre,
          { error: 'access_denied', error_description: DESCRIPTIONS.access_denied },
          'redirect',
        ),
        handle,
      );
    }
    const code = createGrant(env, result.pre, user);
    return withCookie(respondToClient(result.pre, { code }, 'redirect'), handle);
  };
  router.on('POST', '/oauth/authorize', decide(true));
  router.on('DELETE', '/oauth/authorize', decide(false));

  router.on('POST', '/oauth/token', (ctx) => tokenEndpoint(env, ctx));
  router.on('POST', '/oauth/revoke', (ctx) => revokeEndpoint(env, ctx));
  router.on('GET', '/oauth/token/info', (ctx) => tokenInfo(env, ctx));
  router.on('POST', '/oauth/introspect', (ctx) => introspect(env, ctx));
  router.on('POST', '/oauth/authorize_device', (ctx) => authorizeDevice(env, ctx));

  router.on('GET', '/oauth/device', (ctx) => {
    const handle = loadSession(env, ctx);
    if (!signedInUser(env, handle.session)) return requireSignIn(ctx, handle);
    return withCookie(
      html(
        200,
        deviceCodePage({
          action: env.url('/oauth/device'),
          csrfToken: handle.session.csrfToken,
          flash: null,
          userCode: ctx.query.get('user_code') ?? '',
        }),
      ),
      handle,
    );
  });
  router.on('POST', '/oauth/device', (ctx) => {
    const handle = loadSession(env, ctx);
    const user = signedInUser(env, handle.session);
    if (!user) return requireSignIn(ctx, handle);
    if (!csrfValid(ctx, handle.session)) return withCookie(html(422, rejectedPage()), handle);
    const code = (ctx.form.get('user_code') ?? '').trim().toUpperCase();
    const grant = [...state.deviceGrants.values()].find((g) => g.userCode === code);
    const live =
      grant &&
      state.nowSeconds() <= grant.createdAt + DEVICE_CODE_LIFETIME &&
      grant.userId === null &&
      !grant.denied;
    if (!grant || !live) {
      return withCookie(
        html(
          200,
          deviceCodePage({
            action: env.url('/oauth/device'),
            csrfToken: handle.session.csrfToken,
            flash: 'The code is invalid or has expired.',
            userCode: code,
          }),
        ),
        handle,
      );
    }
    const decision = ctx.form.get('decision');
    if (decision === 'authorize' || decision === 'deny') {
      if (decision === 'authorize') grant.userId = user.id;
      else grant.denied = true;
      return withCookie(
        html(
          200,
          messagePage(
            decision === 'authorize' ? 'Device authorized' : 'Device denied',
            decision === 'authorize' ? 'You can return to your device.' : 'The request was denied.',
          ),
        ),
        handle,
      );
    }
    const app = state.appById(grant.appId)!;
    return withCookie(
      html(
        200,
        deviceConfirmPage({
          action: env.url('/oauth/device'),
          csrfToken: handle.session.csrfToken,
          appName: app.name,
          userCode: code,
          scopes: grant.scopes,
        }),
      ),
      handle,
    );
  });

  router.on('GET', '/:username', (ctx) => {
    const user = state.userByLogin(ctx.params['username'] ?? '');
    if (!user || user.username.toLowerCase() !== (ctx.params['username'] ?? '').toLowerCase()) {
      return html(404, messagePage('Not Found', 'Page Not Found'));
    }
    return html(200, messagePage(user.name, `@${user.username}`));
  });
}
