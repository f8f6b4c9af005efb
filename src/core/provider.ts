/**
 * The connection to one GitLab instance: discovery (OpenID Connect, or plain OAuth on instances
 * without it), the outgoing-request guard (timeouts, size caps, no redirects), and the translation of
 * `oauth4webapi`'s errors into {@link LabgateError} codes.
 */
import { compactVerify, importJWK, type JWK } from 'jose';
import * as oauth from 'oauth4webapi';
import { readCapped } from './body.js';
import { fromBase64Url } from './crypto.js';
import { LabgateError, type LabgateErrorCode } from './errors.js';
import { parseStrictJson, repeatedMember, StrictJsonError } from './json.js';
import { logText } from './log.js';
import type { ResolvedOptions } from './options.js';

/** What every oauth4webapi request of labgate carries. */
export interface HttpOptions {
  // biome-ignore lint/suspicious/noExplicitAny: oauth4webapi types each call's fetch options differently
  [oauth.customFetch]: (url: string, options: oauth.CustomFetchOptions<any, any>) => Promise<Response>;
  [oauth.allowInsecureRequests]?: boolean;
}

/** A GitLab instance as discovered. */
export interface Provider {
  /** The OIDC issuer (GitLab's base URL, with its sub-path). */
  issuer: string;
  server: oauth.AuthorizationServer;
  client: oauth.Client;
  clientAuth: oauth.ClientAuth;
  /** `oidc` when the instance is an OpenID provider; `oauth` for old instances without discovery. */
  kind: 'oidc' | 'oauth';
  /** Options for every oauth4webapi request: the guarded fetch, http for loopback. */
  http: HttpOptions;
  /** The REST API base, `…/api/v4`. */
  apiUrl: string;
  /** The guarded fetch (timeouts, size cap, no redirects) for requests oauth4webapi does not make. */
  fetch: typeof fetch;
  /** The issuer's signing keys, as last fetched from `jwks_uri`. */
  jwks: JwksCache;
}

/** The cached JWKS of one issuer (times from the injected clock). */
export interface JwksCache {
  keys: JWK[] | null;
  fetchedAt: number;
  pending: Promise<JWK[]> | null;
}

/**
 * Errors that mean a connection closed under a request before any of GitLab's answer arrived: typically
 * an idle keep-alive connection that GitLab (or a proxy in front of it) closed just as it was reused.
 * undici reports them as `TypeError: fetch failed` with the socket error as `cause`.
 */
const RESET_CODES = new Set(['UND_ERR_SOCKET', 'ECONNRESET', 'EPIPE']);

/**
 * Whether a rejected `fetch` failed because the connection was reset or closed before an answer
 * arrived (undici's `UND_ERR_SOCKET`, `ECONNRESET`, `EPIPE`). Timeouts, refused connections and DNS
 * failures are not resets: retrying them would only double the wait.
 *
 * @example
 * ```ts
 * try { return await fetch(url); }
 * catch (error) { if (method === 'GET' && isConnectionReset(error)) return await fetch(url); throw error; }
 * ```
 */
export function isConnectionReset(error: unknown): boolean {
  if (!(error instanceof TypeError)) return false;
  // The socket error may itself wrap the system error (`SocketError` → `ECONNRESET`).
  let cause: unknown = error.cause;
  for (let depth = 0; depth < 3 && typeof cause === 'object' && cause !== null; depth++) {
    const code = (cause as { code?: unknown }).code;
    if (typeof code === 'string' && RESET_CODES.has(code)) return true;
    cause = (cause as { cause?: unknown }).cause;
  }
  return false;
}

/** Statuses of the answers the guard refused, by the error it threw (see {@link refusedAnswerStatus}). */
const refused = new WeakMap<object, number>();

function refuse(response: Response, error: LabgateError): LabgateError {
  refused.set(error, response.status);
  return error;
}

/**
 * The HTTP status GitLab answered with, when `error` is the guard refusing that answer (too large, not
 * JSON, a member name twice, a malformed ID token); `null` when GitLab's answer never arrived. A refused
 * `2xx` from the token endpoint means GitLab took the grant: the code or refresh token is spent.
 *
 * @example
 * ```ts
 * const status = refusedAnswerStatus(error);
 * if (status !== null && status < 300) endSession(); // the refresh token is spent, do not retry
 * ```
 */
export function refusedAnswerStatus(error: unknown): number | null {
  return typeof error === 'object' && error !== null ? (refused.get(error) ?? null) : null;
}

function mediaType(response: Response): string {
  return (response.headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
}

/** `application/json` and the `+json` types (`application/jwk-set+json`). */
function isJsonType(type: string): boolean {
  return type === 'application/json' || (type.startsWith('application/') && type.endsWith('+json'));
}

/** The path of a GitLab URL for an error message (never its query string). */
function pathOf(url: string | URL): string {
  try {
    return logText(new URL(url).pathname, 100);
  } catch {
    return 'GitLab';
  }
}

/**
 * Wraps `fetch` so that every request to GitLab has a timeout, a capped body, never follows a redirect
 * (credentials must not be replayed to another host), and never yields a JSON answer in which an object
 * names a member twice. An idempotent request (`GET`, `HEAD`) whose connection was reset before any
 * answer arrived is sent once more, within the same timeout; a `POST` never is (a code or a refresh
 * token is single-use) and neither is a timeout.
 *
 * @example
 * ```ts
 * const guarded = guardFetch({ fetch, requestTimeout: 10_000, maxResponseBytes: 512 * 1024 });
 * const response = await guarded('https://gitlab.example.com/oauth/discovery/keys');
 * ```
 */
export function guardFetch(
  options: Pick<ResolvedOptions, 'fetch' | 'requestTimeout' | 'maxResponseBytes'>,
): typeof fetch {
  return async (input, init = {}) => {
    const timeout = AbortSignal.timeout(options.requestTimeout);
    const signal = init.signal ? AbortSignal.any([init.signal, timeout]) : timeout;
    const method = (init.method ?? (input instanceof Request ? input.method : 'GET')).toUpperCase();
    const send = () => options.fetch(input, { ...init, signal, redirect: 'manual' });
    let response: Response;
    try {
      response = await send();
    } catch (error) {
      // A rejected fetch carries no answer: for an idempotent request, sending it again is safe.
      if ((method !== 'GET' && method !== 'HEAD') || signal.aborted || !isConnectionReset(error)) throw error;
      response = await send();
    }
    const url = input instanceof Request ? input.url : input;
    if (!response.body) return response;
    const body = await readCapped(response, options.maxResponseBytes, () =>
      refuse(
        response,
        new LabgateError(
          'gitlab_error',
          `GitLab's response is larger than ${options.maxResponseBytes} bytes`,
        ),
      ),
    );
    const size = body.byteLength;
    if (size > 0 && isJsonType(mediaType(response))) {
      // Not JSON at all is left to the reader, which refuses it with its own, more precise error.
      const text = new TextDecoder().decode(body);
      let member: string | null = null;
      try {
        JSON.parse(text);
        member = repeatedMember(text);
      } catch {}
      if (member !== null) {
        throw refuse(
          response,
          new LabgateError(
            'gitlab_error',
            `GitLab's answer from ${pathOf(url)} names the member ${JSON.stringify(logText(member, 64))} twice`,
          ),
        );
      }
    }
    const nullBody = response.status === 204 || response.status === 304;
    return new Response(nullBody ? null : body, {
      status: response.status,
      statusText: response.statusText,
      headers: response.headers,
    });
  };
}

/**
 * Refuses an ID token whose header or payload names a member twice (RFC 7515 §5.2, RFC 7519 §4), before
 * oauth4webapi reads either. A token that is not a three-part JWS of JSON is left to oauth4webapi.
 */
function checkIdTokenMembers(idToken: string): void {
  const parts = idToken.split('.');
  if (parts.length !== 3) return;
  for (const [index, part] of ['header', 'payload'].entries()) {
    let text: string;
    try {
      text = new TextDecoder().decode(fromBase64Url(parts[index]!));
      JSON.parse(text);
    } catch {
      continue;
    }
    const member = repeatedMember(text);
    if (member !== null) {
      throw new LabgateError(
        'id_token_invalid',
        `the ID token ${part} names the member ${JSON.stringify(logText(member, 64))} twice`,
      );
    }
  }
}

/**
 * What every answer to an oauth4webapi request must be, beyond the guard's rules: a `2xx` with a body is
 * JSON (oauth4webapi parses any body as JSON whatever its type, and GitLab always answers
 * `application/json`), and an ID token in a token response has no member twice.
 */
async function checkOAuthAnswer(response: Response, url: string, tokenEndpoint: boolean): Promise<void> {
  if (!response.ok) return;
  const text = await response.clone().text();
  if (text === '') return;
  const type = mediaType(response);
  if (!isJsonType(type)) {
    throw refuse(
      response,
      new LabgateError(
        'gitlab_error',
        `GitLab answered ${pathOf(url)} with ${response.status} and Content-Type ${JSON.stringify(logText(response.headers.get('content-type') ?? '', 100))}, not JSON`,
      ),
    );
  }
  if (!tokenEndpoint) return;
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return;
  }
  const idToken = (body as { id_token?: unknown } | null)?.id_token;
  if (typeof idToken === 'string') {
    try {
      checkIdTokenMembers(idToken);
    } catch (error) {
      throw refuse(response, error as LabgateError);
    }
  }
}

/** Maps any failure of a call to GitLab to a {@link LabgateError}. */
export function toLabgateError(error: unknown, fallback: LabgateErrorCode, what: string): LabgateError {
  if (error instanceof LabgateError) return error;
  if (error instanceof oauth.ResponseBodyError) {
    // GitLab's OAuth error body; its description is GitLab's text, never a secret.
    return new LabgateError(
      fallback,
      `${what}: GitLab answered ${error.status} ${logText(error.error, 64)}`,
      {
        cause: error,
      },
    );
  }
  if (error instanceof oauth.WWWAuthenticateChallengeError) {
    // Doorkeeper puts a challenge on token-endpoint errors too (`invalid_grant`, `invalid_client`):
    // only `invalid_token` (or a bare challenge) from a resource means GitLab refuses the account's token.
    const oauthError = error.cause.find((challenge) => challenge.parameters['error'])?.parameters['error'];
    if (oauthError !== undefined && oauthError !== 'invalid_token') {
      return new LabgateError(
        fallback,
        `${what}: GitLab answered ${error.status} ${logText(oauthError, 64)}`,
        {
          cause: error,
        },
      );
    }
    return new LabgateError('account_unavailable', `${what}: GitLab refused the token (${error.status})`, {
      cause: error,
    });
  }
  if (error instanceof oauth.OperationProcessingError) {
    const code = error.code ?? '';
    if (
      code === oauth.JWT_TIMESTAMP_CHECK ||
      code === oauth.JWT_CLAIM_COMPARISON ||
      code === oauth.KEY_SELECTION ||
      /signature|JWT|ID Token|nonce/i.test(error.message)
    ) {
      return new LabgateError('id_token_invalid', `${what}: ${logText(error.message)}`, { cause: error });
    }
    return new LabgateError('gitlab_error', `${what}: ${logText(error.message)}`, { cause: error });
  }
  if (error instanceof oauth.UnsupportedOperationError) {
    // An ID token with `crit` extensions or JWE encryption is an invalid ID token, not a GitLab outage.
    const code = /JWT|JWE/.test(error.message) ? 'id_token_invalid' : 'gitlab_error';
    return new LabgateError(code, `${what}: ${logText(error.message)}`, { cause: error });
  }
  if (error instanceof DOMException && (error.name === 'TimeoutError' || error.name === 'AbortError')) {
    return new LabgateError('gitlab_unreachable', `${what}: GitLab did not answer in time`, { cause: error });
  }
  if (error instanceof TypeError) {
    const code = (error.cause as { code?: unknown } | undefined)?.code;
    return new LabgateError(
      'gitlab_unreachable',
      `${what}: ${logText(error.message)}${typeof code === 'string' ? ` (${logText(code, 40)})` : ''}`,
      { cause: error },
    );
  }
  return new LabgateError(fallback, `${what}: ${logText(error instanceof Error ? error.message : error)}`, {
    cause: error,
  });
}

function checkEndpoints(server: oauth.AuthorizationServer, issuer: URL): void {
  for (const key of [
    'authorization_endpoint',
    'token_endpoint',
    'userinfo_endpoint',
    'jwks_uri',
    'revocation_endpoint',
  ] as const) {
    const value = server[key];
    if (value === undefined) continue;
    const url = new URL(value);
    const schemeOk = url.protocol === 'https:' || (url.protocol === 'http:' && issuer.protocol === 'http:');
    if (!schemeOk || url.host !== issuer.host) {
      throw new LabgateError(
        'discovery_failed',
        `GitLab's ${key} (${logText(url.origin, 100)}) is not on the issuer's origin ${issuer.origin}`,
      );
    }
  }
}

/** Discovers a GitLab instance: OIDC discovery, else plain OAuth endpoints under the base URL. */
export async function discover(options: ResolvedOptions): Promise<Provider> {
  const issuer = new URL(options.gitlabUrl.href.replace(/\/+$/, ''));
  const insecure = issuer.protocol === 'http:';
  const guarded = guardFetch(options);
  // Known once discovered; the token endpoint's answers are the ones that carry an ID token.
  let tokenEndpoint: string | null = null;
  const http: HttpOptions = {
    [oauth.customFetch]: async (url, init) => {
      const response = await guarded(url, init as RequestInit);
      await checkOAuthAnswer(response, url, url === tokenEndpoint);
      return response;
    },
  };
  if (insecure) http[oauth.allowInsecureRequests] = true;
  let server: oauth.AuthorizationServer;
  let kind: Provider['kind'] = 'oidc';
  let response: Response;
  try {
    response = await oauth.discoveryRequest(issuer, { ...http, algorithm: 'oidc' });
  } catch (error) {
    throw toLabgateError(error, 'discovery_failed', 'OpenID Connect discovery');
  }
  if (response.status === 404) {
    await response.body?.cancel();
    // Old self-managed GitLab without OpenID Connect: the OAuth endpoints sit at fixed paths.
    kind = 'oauth';
    const base = issuer.href.replace(/\/+$/, '');
    server = {
      issuer: base,
      authorization_endpoint: `${base}/oauth/authorize`,
      token_endpoint: `${base}/oauth/token`,
      revocation_endpoint: `${base}/oauth/revoke`,
    };
    options.logger.warn(
      `labgate: ${base} has no OpenID Connect discovery; signing in with plain OAuth and /api/v4/user`,
    );
  } else {
    try {
      server = await oauth.processDiscoveryResponse(issuer, response);
    } catch (error) {
      // A document for another issuer is a configuration problem, not a passing GitLab error.
      if (error instanceof oauth.OperationProcessingError && error.code === oauth.JSON_ATTRIBUTE_COMPARISON) {
        throw new LabgateError('discovery_failed', `OpenID Connect discovery: ${error.message}`, {
          cause: error,
        });
      }
      throw toLabgateError(error, 'discovery_failed', 'OpenID Connect discovery');
    }
    // oauth4webapi compares the issuer after URL normalisation; the rule is exact string equality.
    if (server.issuer !== issuer.href.replace(/\/+$/, '')) {
      throw new LabgateError(
        'discovery_failed',
        `GitLab's discovery names the issuer ${JSON.stringify(logText(server.issuer, 100))}, not ${JSON.stringify(issuer.href.replace(/\/+$/, ''))}`,
      );
    }
    checkEndpoints(server, issuer);
  }
  // oauth4webapi sends token requests to `new URL(token_endpoint).href`.
  tokenEndpoint = server.token_endpoint === undefined ? null : new URL(server.token_endpoint).href;
  const client: oauth.Client = {
    client_id: options.clientId,
    [oauth.clockTolerance]: options.clockTolerance,
  };
  return {
    issuer: server.issuer,
    server,
    client,
    clientAuth: options.clientSecret ? oauth.ClientSecretPost(options.clientSecret) : oauth.None(),
    kind,
    http,
    apiUrl: `${issuer.href.replace(/\/+$/, '')}/api/v4`,
    fetch: guarded,
    jwks: { keys: null, fetchedAt: 0, pending: null },
  };
}

/** How long fetched signing keys are trusted before they are fetched again. */
const JWKS_TTL_MS = 5 * 60_000;
/** An unknown `kid` refetches the keys, but not more than once a minute (fail closed in between). */
const JWKS_REFETCH_MS = 60_000;

async function fetchJwks(provider: Provider, now: () => number): Promise<JWK[]> {
  const cache = provider.jwks;
  cache.pending ??= (async () => {
    const uri = provider.server.jwks_uri;
    if (!uri) throw new LabgateError('discovery_failed', 'GitLab publishes no jwks_uri');
    let response: Response;
    try {
      response = await provider.fetch(uri, { headers: { accept: 'application/json' } });
    } catch (error) {
      throw toLabgateError(error, 'gitlab_error', 'JWKS');
    }
    // The guard has already refused a key set that names a member twice.
    const type = response.headers.get('content-type') ?? '';
    let body: unknown;
    try {
      body =
        response.status === 200 && /^application\/(?:jwk-set\+)?json\b/i.test(type)
          ? await response.json()
          : null;
    } catch {
      body = null;
    }
    const keys = (body as { keys?: unknown } | null)?.keys;
    if (!Array.isArray(keys)) {
      throw new LabgateError('gitlab_error', `GitLab's JWKS answered ${response.status} without a key set`);
    }
    cache.keys = keys.filter((k): k is JWK => typeof k === 'object' && k !== null && !Array.isArray(k));
    cache.fetchedAt = now();
    return cache.keys;
  })().finally(() => {
    cache.pending = null;
  });
  return cache.pending;
}

function candidates(keys: JWK[], kid: string | undefined): JWK[] {
  return keys.filter(
    (k) =>
      k.kty === 'RSA' &&
      (k.use === undefined || k.use === 'sig') &&
      (k.alg === undefined || k.alg === 'RS256') &&
      (kid === undefined || k.kid === kid),
  );
}

/**
 * Verifies the ID token's RS256 signature with the issuer's published keys (docs/errors.md, `id_token_invalid`).
 * Keys named in the token (`jku`, `jwk`, `x5u`, `x5c`) are never used. Without a `kid` the token must
 * match exactly one key; with several candidates it is refused.
 */
export async function verifyIdTokenSignature(
  provider: Provider,
  idToken: string,
  now: () => number,
): Promise<void> {
  let header: { alg?: unknown; kid?: unknown };
  try {
    header = parseStrictJson(new TextDecoder().decode(fromBase64Url(idToken.split('.')[0] ?? ''))) as {
      alg?: unknown;
      kid?: unknown;
    };
  } catch (error) {
    throw new LabgateError(
      'id_token_invalid',
      error instanceof StrictJsonError && error.reason === 'duplicate'
        ? `the ID token header names the member ${JSON.stringify(logText(error.member, 64))} twice`
        : 'the ID token header is not JSON',
    );
  }
  if (typeof header !== 'object' || header === null)
    throw new LabgateError('id_token_invalid', 'the ID token header is not a JSON object');
  if (header.alg !== 'RS256')
    throw new LabgateError('id_token_invalid', 'the ID token is not signed with RS256');
  if (header.kid !== undefined && typeof header.kid !== 'string')
    throw new LabgateError('id_token_invalid', 'the ID token names a malformed key');
  const kid = header.kid as string | undefined;
  const cache = provider.jwks;
  let keys =
    cache.keys !== null && now() - cache.fetchedAt < JWKS_TTL_MS
      ? cache.keys
      : await fetchJwks(provider, now);
  let found = candidates(keys, kid);
  if (found.length === 0 && now() - cache.fetchedAt >= JWKS_REFETCH_MS) {
    keys = await fetchJwks(provider, now);
    found = candidates(keys, kid);
  }
  if (found.length !== 1) {
    throw new LabgateError(
      'id_token_invalid',
      found.length === 0
        ? 'no published GitLab key matches the ID token'
        : 'the ID token names no key and GitLab publishes several',
    );
  }
  let key: CryptoKey | Uint8Array;
  try {
    key = await importJWK(found[0]!, 'RS256');
  } catch (cause) {
    throw new LabgateError('id_token_invalid', 'GitLab published an unusable signing key', { cause });
  }
  try {
    await compactVerify(idToken, key, { algorithms: ['RS256'] });
  } catch (cause) {
    throw new LabgateError('id_token_invalid', 'the ID token signature does not verify', { cause });
  }
}

/** Aligns oauth4webapi's clock with the injected one before a time-sensitive check. */
export function syncClock(provider: Provider, now: () => number): void {
  provider.client[oauth.clockSkew] = Math.round((now() - Date.now()) / 1000);
}
