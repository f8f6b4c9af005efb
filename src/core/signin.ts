/**
 * Sign-in: the authorization request and the callback, every sign-in rule of docs/security.md
 * (SIGNIN, CALLBACK, ISSUER, EXCHANGE, IDTOKEN, USERINFO) in order.
 * The transaction (state, PKCE verifier, nonce, returnTo, issuer, redirect URI) lives in a sealed,
 * short-lived cookie bound to this browser; one cookie per flow, so several tabs can sign in at once.
 */
import * as oauth from 'oauth4webapi';
import { clearCookie, parseCookieHeader, serializeCookie } from './cookies.js';
import { type KeyRing, sha256, timingSafeEqual, toBase64Url } from './crypto.js';
import { LabgateError } from './errors.js';
import { logText } from './log.js';
import type { ResolvedOptions } from './options.js';
import { normaliseProfile } from './profile.js';
import { type Provider, syncClock, toLabgateError, verifyIdTokenSignature } from './provider.js';
import { safeRedirect } from './redirects.js';
import type { SessionUser, Store, TokenSet } from './store.js';

/** The sign-in transaction, sealed in its cookie. */
interface Transaction {
  v: 1;
  state: string;
  verifier: string;
  nonce: string | null;
  returnTo: string;
  issuer: string;
  redirectUri: string;
  createdAt: number;
  expiresAt: number;
  /** The session that asked to link the account signing in to its user (`POST /auth/link`). */
  link?: string;
}

/** How long a sign-in may take, from the click to the callback. */
export const TRANSACTION_LIFETIME_MS = 10 * 60 * 1000;
const MAX_TRANSACTIONS = 3;
const MAX_CALLBACK_URL = 8 * 1024;
const MAX_CODE = 1024;
const MAX_STATE = 512;
const API_SCOPES = ['read_user', 'read_api', 'api'];
const MAX_ID_TOKEN = 16 * 1024;
const MAX_ID_TOKEN_AGE_S = 300;

/** What the sign-in needs from the rest of labgate. */
export interface SignInContext {
  options: ResolvedOptions;
  store: Store;
  keys: () => Promise<KeyRing>;
  provider: () => Promise<Provider>;
}

function transactionPrefix(options: ResolvedOptions): string {
  return `${options.cookieName}-tx-`;
}

async function transactionCookieName(options: ResolvedOptions, state: string): Promise<string> {
  return `${transactionPrefix(options)}${(await sha256(state)).slice(0, 16)}`;
}

/**
 * The transaction cookies a `Cookie` header holds: only names of labgate's own pattern (its prefix and
 * 16 base64url characters), so a `Set-Cookie` labgate sends never echoes a name a client made up
 * (docs/security.md, COOKIE-4).
 */
function transactionCookies(options: ResolvedOptions, header: string | null): [string, string][] {
  const pattern = new RegExp(`^${transactionPrefix(options)}[A-Za-z0-9_-]{16}$`);
  return [...parseCookieHeader(header).cookies].filter(([name]) => pattern.test(name));
}

/**
 * `GET /auth/login?returnTo=/path`: answers the redirect to GitLab with a new transaction cookie.
 * With `link`, the transaction records the session that asked to link the account about to sign in.
 */
export async function startSignIn(
  ctx: SignInContext,
  request: Request,
  start: { returnTo: string | null; link?: string } = {
    returnTo: new URL(request.url).searchParams.get('returnTo'),
  },
): Promise<Response> {
  const { options } = ctx;
  const returnTo = safeRedirect(start.returnTo, options.origin, options.redirectDomains);
  const provider = await ctx.provider();
  const keys = await ctx.keys();
  const now = options.now();
  const oidc = provider.kind === 'oidc';
  const transaction: Transaction = {
    v: 1,
    state: oauth.generateRandomState(),
    verifier: oauth.generateRandomCodeVerifier(),
    nonce: oidc ? oauth.generateRandomNonce() : null,
    returnTo,
    issuer: provider.issuer,
    redirectUri: options.redirectUri,
    createdAt: now,
    expiresAt: now + TRANSACTION_LIFETIME_MS,
    ...(start.link === undefined ? {} : { link: start.link }),
  };
  const scopes = oidc
    ? options.scopes
    : // Without OpenID Connect the identity comes from /api/v4/user, which needs read_user.
      [
        ...options.scopes.filter((s) => !['openid', 'profile', 'email'].includes(s)),
        ...(options.scopes.some((s) => API_SCOPES.includes(s)) ? [] : ['read_user']),
      ];
  const target = new URL(provider.server.authorization_endpoint!);
  target.searchParams.set('client_id', options.clientId);
  target.searchParams.set('redirect_uri', options.redirectUri);
  target.searchParams.set('response_type', 'code');
  target.searchParams.set('scope', scopes.join(' '));
  target.searchParams.set('state', transaction.state);
  if (transaction.nonce) target.searchParams.set('nonce', transaction.nonce);
  target.searchParams.set('code_challenge', await oauth.calculatePKCECodeChallenge(transaction.verifier));
  target.searchParams.set('code_challenge_method', 'S256');

  const headers = new Headers({
    location: target.href,
    'cache-control': 'no-store',
    'referrer-policy': 'no-referrer',
  });
  // Keep at most MAX_TRANSACTIONS flows per browser: drop the oldest so cookies never pile up.
  const open: { name: string; createdAt: number }[] = [];
  for (const [name, value] of transactionCookies(options, request.headers.get('cookie'))) {
    const opened = await keys.open(value, 'transaction', name);
    const createdAt = opened ? (JSON.parse(opened.plaintext) as Transaction).createdAt : 0;
    if (!opened || createdAt + TRANSACTION_LIFETIME_MS <= now)
      headers.append('set-cookie', clearCookie(name, { secure: options.secure }));
    else open.push({ name, createdAt });
  }
  open.sort((a, b) => a.createdAt - b.createdAt);
  for (const { name } of open.slice(0, Math.max(0, open.length - (MAX_TRANSACTIONS - 1)))) {
    headers.append('set-cookie', clearCookie(name, { secure: options.secure }));
  }
  const name = await transactionCookieName(options, transaction.state);
  const sealed = await keys.seal(JSON.stringify(transaction), 'transaction', name);
  headers.append(
    'set-cookie',
    serializeCookie(name, sealed, { secure: options.secure, maxAge: TRANSACTION_LIFETIME_MS / 1000 }),
  );
  return new Response(null, { status: 302, headers });
}

/** The parameters of the callback URL, refused when duplicated, oversized or not printable. */
function callbackParameters(url: URL): URLSearchParams {
  if (url.href.length > MAX_CALLBACK_URL)
    throw new LabgateError('callback_invalid', 'the callback URL is too long');
  const params = url.searchParams;
  for (const name of ['code', 'state', 'error', 'iss', 'error_description']) {
    if (params.getAll(name).length > 1)
      throw new LabgateError('callback_invalid', `the callback repeats "${name}"`);
  }
  for (const [name, value] of params) {
    // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
    if (/[\u0000-\u001f\u007f]/.test(name) || /[\u0000-\u001f\u007f]/.test(value))
      throw new LabgateError('callback_invalid', `"${logText(name, 64)}" holds control characters`);
  }
  // CALLBACK-4: tokens never come from the authorization response (implicit/hybrid, or injected).
  if (params.has('access_token') || params.has('id_token'))
    throw new LabgateError('callback_invalid', 'the callback carries tokens');
  if ((params.get('code') ?? '').length > MAX_CODE)
    throw new LabgateError('callback_invalid', 'the code is too long');
  if ((params.get('state') ?? '').length > MAX_STATE)
    throw new LabgateError('callback_invalid', 'the state is too long');
  return params;
}

/** Result of a completed callback. */
export interface CompletedSignIn {
  user: SessionUser;
  tokens: TokenSet;
  returnTo: string;
  /** The session that asked to link this account to its user, when the flow began at `/auth/link`. */
  link: string | null;
}

/**
 * `GET /auth/callback`: checks the response against this browser's transaction, exchanges the code,
 * validates the ID token, reads the profile. The transaction cookie is cleared whatever the outcome:
 * `clear` receives its `Set-Cookie` before any check can fail.
 */
export async function completeSignIn(
  ctx: SignInContext,
  request: Request,
  clear: (setCookie: string) => void,
): Promise<CompletedSignIn> {
  const { options } = ctx;
  let cleared = false;
  const clearOne = (name: string) => {
    cleared = true;
    clear(clearCookie(name, { secure: options.secure }));
  };
  try {
    return await callback(ctx, request, clearOne);
  } catch (error) {
    // Refused before its transaction was found (no state, or a state this browser did not start): when
    // the browser holds one transaction, that is the flow that came back, and it has ended. With several
    // (tabs signing in at once) it cannot be told which, and the others must go on; they expire.
    if (!cleared) {
      const open = transactionCookies(options, request.headers.get('cookie'));
      if (open.length === 1) clearOne(open[0]![0]);
    }
    throw error;
  }
}

async function callback(
  ctx: SignInContext,
  request: Request,
  clear: (name: string) => void,
): Promise<CompletedSignIn> {
  const { options, store } = ctx;
  const url = new URL(request.url);
  // The state first, so that even a callback refused for its other parameters clears its transaction.
  const states = url.searchParams.getAll('state');
  const name =
    states.length === 1 && states[0]!.length <= MAX_STATE && states[0] !== ''
      ? await transactionCookieName(options, states[0]!)
      : null;
  const { cookies, duplicated } = parseCookieHeader(request.headers.get('cookie'));
  const sealed = name === null ? undefined : cookies.get(name);
  if (name !== null && sealed !== undefined) clear(name);
  const params = callbackParameters(url);
  const state = params.get('state');
  if (!state || name === null) throw new LabgateError('transaction_invalid', 'the callback carries no state');
  if (!sealed)
    throw new LabgateError('transaction_missing', 'no sign-in transaction for this state in this browser');
  if (duplicated.has(name))
    throw new LabgateError('transaction_invalid', 'the transaction cookie was sent twice');
  const keys = await ctx.keys();
  const opened = await keys.open(sealed, 'transaction', name);
  if (!opened) throw new LabgateError('transaction_invalid', 'the transaction cookie cannot be opened');
  const transaction = JSON.parse(opened.plaintext) as Transaction;
  if (transaction.v !== 1 || !timingSafeEqual(transaction.state, state)) {
    throw new LabgateError('transaction_invalid', 'the state does not match this browser’s transaction');
  }
  if (transaction.expiresAt <= options.now())
    throw new LabgateError('transaction_missing', 'the sign-in transaction expired');
  const provider = await ctx.provider();
  if (transaction.issuer !== provider.issuer || transaction.redirectUri !== options.redirectUri) {
    throw new LabgateError(
      'transaction_invalid',
      'the transaction belongs to another GitLab or redirect URI',
    );
  }
  // State is single-use across every instance that shares the store.
  let fresh: boolean;
  try {
    fresh = await store.add(`state:${await sha256(state)}`, '1', TRANSACTION_LIFETIME_MS);
  } catch (error) {
    throw new LabgateError('store_unavailable', 'the store failed while checking the state', {
      cause: error,
    });
  }
  if (!fresh) throw new LabgateError('transaction_invalid', 'this sign-in response was already used');

  const error = params.get('error');
  if (error !== null) {
    throw new LabgateError(
      error === 'access_denied' ? 'access_denied' : 'authorization_failed',
      `GitLab answered the authorization request with "${logText(error, 64)}"`,
    );
  }
  const iss = params.get('iss');
  if (iss !== null && iss !== provider.issuer)
    throw new LabgateError('callback_invalid', 'the response names another issuer');
  // RFC 9207: an issuer that promises `iss` and omits it may be a mix-up; no token request then.
  if (iss === null && provider.server.authorization_response_iss_parameter_supported === true)
    throw new LabgateError('callback_invalid', 'the response names no issuer');
  if (!params.get('code')) throw new LabgateError('callback_invalid', 'the callback carries no code');

  let result: oauth.TokenEndpointResponse;
  try {
    const checked = oauth.validateAuthResponse(provider.server, provider.client, params, transaction.state);
    const response = await oauth.authorizationCodeGrantRequest(
      provider.server,
      provider.client,
      provider.clientAuth,
      checked,
      transaction.redirectUri,
      transaction.verifier,
      provider.http,
    );
    syncClock(provider, options.now);
    result = await oauth.processAuthorizationCodeResponse(provider.server, provider.client, response, {
      ...(transaction.nonce ? { expectedNonce: transaction.nonce, requireIdToken: true } : {}),
    });
  } catch (cause) {
    throw toLabgateError(cause, 'token_exchange_failed', 'the code exchange');
  }
  if (result.token_type.toLowerCase() !== 'bearer')
    throw new LabgateError('gitlab_error', 'GitLab issued a token that is not a Bearer token');
  const granted = (result.scope ?? options.scopes.join(' ')).split(' ');
  if (provider.kind === 'oidc' && !granted.includes('openid'))
    throw new LabgateError('gitlab_error', 'GitLab did not grant the openid scope');

  const claims =
    provider.kind === 'oidc'
      ? (oauth.getValidatedIdTokenClaims(result) as Record<string, unknown>)
      : undefined;
  if (claims) await checkIdToken(provider, options, String(result.id_token), claims, result.access_token);
  let userinfo: Record<string, unknown> | undefined;
  if (claims) {
    try {
      const response = await oauth.userInfoRequest(
        provider.server,
        provider.client,
        result.access_token,
        provider.http,
      );
      userinfo = (await oauth.processUserInfoResponse(
        provider.server,
        provider.client,
        String(claims['sub']),
        response,
      )) as Record<string, unknown>;
    } catch (cause) {
      throw toLabgateError(cause, 'gitlab_error', 'userinfo');
    }
  }
  let apiUser: Record<string, unknown> | undefined;
  if (!claims || granted.some((s) => API_SCOPES.includes(s))) {
    apiUser = await readApiUser(provider, result.access_token);
    if (claims && String(apiUser['id']) !== String(claims['sub'])) {
      throw new LabgateError('id_token_invalid', '/api/v4/user names another user than the ID token');
    }
  }
  let user: SessionUser;
  try {
    user = normaliseProfile({
      issuer: provider.issuer,
      ...(claims ? { claims } : {}),
      ...(userinfo ? { userinfo } : {}),
      ...(apiUser ? { apiUser } : {}),
    });
  } catch (cause) {
    throw new LabgateError('gitlab_error', 'GitLab released no usable identity', { cause });
  }
  const expiresIn = typeof result.expires_in === 'number' ? result.expires_in : 300;
  return {
    user,
    tokens: {
      accessToken: result.access_token,
      refreshToken: result.refresh_token ?? null,
      expiresAt: options.now() + expiresIn * 1000,
      scope: granted.join(' '),
    },
    returnTo: safeRedirect(transaction.returnTo, options.origin, options.redirectDomains),
    link: typeof transaction.link === 'string' ? transaction.link : null,
  };
}

/**
 * What oauth4webapi leaves to the relying party (docs/security.md, IDTOKEN-1 to IDTOKEN-10): the
 * signature (IDTOKEN-1), an audience of exactly this client and `azp` (IDTOKEN-3), `iat` bounds
 * (IDTOKEN-4), a non-empty string `sub` (IDTOKEN-6), a size bound (IDTOKEN-7), `at_hash` when present
 * (IDTOKEN-8). Runs before any token is used; also meant for the ID token of a refresh response
 * (IDTOKEN-10), next to the check that its `sub` is the session's.
 */
export async function checkIdToken(
  provider: Provider,
  options: ResolvedOptions,
  idToken: string,
  claims: Record<string, unknown>,
  accessToken: string,
): Promise<void> {
  if (idToken.length > MAX_ID_TOKEN) throw new LabgateError('id_token_invalid', 'the ID token is too large');
  const aud = claims['aud'];
  const audiences = Array.isArray(aud) ? aud : [aud];
  if (audiences.length !== 1 || audiences[0] !== options.clientId)
    throw new LabgateError('id_token_invalid', 'the ID token is not meant for this client alone');
  if (claims['azp'] !== undefined && claims['azp'] !== options.clientId)
    throw new LabgateError('id_token_invalid', 'the ID token was issued to another party');
  if (typeof claims['sub'] !== 'string' || claims['sub'] === '')
    throw new LabgateError('id_token_invalid', 'the ID token has no subject');
  const now = options.now() / 1000;
  const iat = claims['iat'];
  if (
    typeof iat !== 'number' ||
    iat > now + options.clockTolerance ||
    now - iat > MAX_ID_TOKEN_AGE_S + options.clockTolerance
  ) {
    throw new LabgateError('id_token_invalid', 'the ID token was issued at an implausible time');
  }
  // IDTOKEN-8: `at_hash`, when present, binds the ID token to this access token (left half of its SHA-256).
  if (claims['at_hash'] !== undefined) {
    const digest = new Uint8Array(
      await crypto.subtle.digest('SHA-256', new TextEncoder().encode(accessToken)),
    ).slice(0, 16);
    if (typeof claims['at_hash'] !== 'string' || !timingSafeEqual(claims['at_hash'], toBase64Url(digest)))
      throw new LabgateError('id_token_invalid', 'the ID token belongs to another access token');
  }
  await verifyIdTokenSignature(provider, idToken, options.now);
}

async function readApiUser(provider: Provider, accessToken: string): Promise<Record<string, unknown>> {
  let response: Response;
  try {
    response = await oauth.protectedResourceRequest(
      accessToken,
      'GET',
      new URL(`${provider.apiUrl}/user`),
      new Headers({ accept: 'application/json' }),
      null,
      provider.http,
    );
  } catch (cause) {
    throw toLabgateError(cause, 'gitlab_error', '/api/v4/user');
  }
  if (response.status === 401 || response.status === 403) {
    await response.body?.cancel();
    throw new LabgateError('account_unavailable', `/api/v4/user answered ${response.status}`);
  }
  let body: unknown;
  try {
    body = response.ok ? await response.json() : undefined;
  } catch {
    body = undefined;
  }
  if (
    !body ||
    typeof body !== 'object' ||
    Array.isArray(body) ||
    typeof (body as { id?: unknown }).id !== 'number'
  ) {
    throw new LabgateError('gitlab_error', `/api/v4/user answered ${response.status} without a user`);
  }
  return body as Record<string, unknown>;
}
