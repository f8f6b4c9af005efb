/**
 * OpenID Connect as GitLab serves it: discovery, JWKS, ID tokens and userinfo, with GitLab's claims
 * split between ID token and userinfo as GitLab splits them.
 */
import { createHash, randomBytes, sign } from 'node:crypto';
import { directAccess, directGroups, membershipGroups } from './access.js';
import { avatarUrl } from './avatar.js';
import type { Env } from './env.js';
import type { User } from './fixtures.js';
import { json, type Reply, type RequestContext, type Router } from './http.js';
import type { Token } from './state.js';

/** The scopes a GitLab instance offers (`scopes_supported`), default scope `api` first. */
export const SERVER_SCOPES = [
  'api',
  'read_api',
  'read_user',
  'create_runner',
  'manage_runner',
  'k8s_proxy',
  'self_rotate',
  'read_repository',
  'write_repository',
  'read_registry',
  'write_registry',
  'read_virtual_registry',
  'write_virtual_registry',
  'read_observability',
  'write_observability',
  'ai_features',
  'sudo',
  'admin_mode',
  'read_service_ping',
  'openid',
  'profile',
  'email',
  'ai_workflows',
];

const CLAIMS_SUPPORTED = [
  'iss',
  'sub',
  'aud',
  'exp',
  'iat',
  'sub_legacy',
  'name',
  'nickname',
  'preferred_username',
  'email',
  'email_verified',
  'website',
  'profile',
  'picture',
  'groups',
  'groups_direct',
  'https://gitlab.org/claims/groups/owner',
  'https://gitlab.org/claims/groups/maintainer',
  'https://gitlab.org/claims/groups/developer',
  'project_path',
  'ci_config_ref_uri',
  'ref_path',
  'sha',
  'environment',
  'jti',
];

// Stands in for Rails' secret_key_base in `sub_legacy`: fixed for the life of one emulator.
const SECRET_KEY_BASE = randomBytes(32).toString('hex');

/** Drops `null`, `undefined` and `""` and keeps `[]`, as doorkeeper-openid_connect's `as_json` does. */
function compact(claims: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(claims).filter(([, v]) => v !== null && v !== undefined && v !== ''),
  );
}

/** `email` and `email_verified`: the primary email with the `email` scope, else the public email, else neither. */
function emailClaims(user: User, scopes: string[]): Record<string, unknown> {
  if (scopes.includes('email')) return { email: user.email, email_verified: user.confirmedAt !== null };
  if (user.publicEmail) return { email: user.publicEmail, email_verified: true };
  return {};
}

/**
 * GitLab's claim `website`: `user.full_website_url if user.website_url.present?`, where
 * `full_website_url` prepends `http://` unless the value starts with `http://` or `https://`
 * (case-sensitive, `%r{\Ahttps?://}`), so `HTTPS://x` and `ftp://x` get it too.
 */
export function fullWebsiteUrl(websiteUrl: string | null | undefined): string | undefined {
  // Ruby's `present?`: nil, empty and whitespace-only are blank.
  if (!websiteUrl || /^\s*$/.test(websiteUrl)) return undefined;
  return /^https?:\/\//.test(websiteUrl) ? websiteUrl : `http://${websiteUrl}`;
}

function profileClaims(env: Env, user: User): Record<string, unknown> {
  return {
    name: user.name,
    nickname: user.username,
    preferred_username: user.username,
    website: fullWebsiteUrl(user.websiteUrl),
    profile: env.url(`/${user.username}`),
    picture: avatarUrl(env, user),
  };
}

function signJwt(env: Env, payload: Record<string, unknown>): string {
  const key = env.state.keys[0]!;
  const header = Buffer.from(JSON.stringify({ typ: 'JWT', kid: key.kid, alg: 'RS256' })).toString(
    'base64url',
  );
  const body = Buffer.from(JSON.stringify(payload)).toString('base64url');
  const signature = sign('sha256', Buffer.from(`${header}.${body}`), key.privateKey).toString('base64url');
  return `${header}.${body}.${signature}`;
}

/** Issues the ID token of a token response; `nonce` only on the authorization-code grant. */
export function createIdToken(env: Env, token: Token, nonce: string | null): string {
  const { state } = env;
  const user = state.userById(token.userId)!;
  const app = state.appById(token.appId)!;
  const iat = state.nowSeconds();
  const authTime = user.currentSignInAt ? Math.floor(Date.parse(user.currentSignInAt) / 1000) : iat;
  const legacy = state.behaviour.idTokenClaims === 'legacy';
  const claims = compact({
    iss: env.baseUrl,
    sub: String(user.id),
    aud: app.uid,
    exp: iat + state.behaviour.idTokenLifetime,
    iat,
    nonce: nonce ?? undefined,
    auth_time: authTime,
    sub_legacy: subLegacy(user),
    ...(legacy ? {} : profileClaims(env, user)),
    ...emailClaims(user, token.scopes),
    groups_direct: directGroups(state.model, user.id, state.now()).map((g) => g.fullPath),
  });
  return signJwt(env, claims);
}

function subLegacy(user: User): string {
  return createHash('sha256').update(`${user.id}-${SECRET_KEY_BASE}`).digest('hex');
}

/** Reads the token of a request as Doorkeeper does: `Authorization: Bearer`, `access_token` or `bearer_token`. */
export function bearerToken(ctx: RequestContext): string | undefined {
  const header = ctx.headers.authorization;
  if (header) {
    const match = /^Bearer\s+(.+)$/i.exec(header);
    if (match) return match[1]!.trim();
  }
  return ctx.param('access_token') ?? ctx.param('bearer_token');
}

/**
 * Doorkeeper's `ErrorResponse#headers` (v5.8.1): `Cache-Control: no-store, no-cache` and the
 * `WWW-Authenticate` challenge, but no `Pragma`; only `TokenResponse#headers`, the success, adds
 * `Pragma: no-cache`. (`Content-Type` is left to the reply.)
 * @example
 * ```ts
 * json(401, body, doorkeeperErrorHeaders('invalid_token', 'The access token is invalid'));
 * ```
 */
export function doorkeeperErrorHeaders(error: string, description: string): Record<string, string> {
  return {
    'cache-control': 'no-store, no-cache',
    'www-authenticate': `Bearer realm="Doorkeeper", error="${error}", error_description="${description}"`,
  };
}

/** Doorkeeper's description of why a token is not acceptable, or null when it is. */
export function tokenProblem(env: Env, token: Token | undefined): string | null {
  if (!token) return 'The access token is invalid';
  if (token.revokedAt !== null) return 'The access token was revoked';
  if (env.state.isExpired(token)) return 'The access token expired';
  return null;
}

function userinfo(env: Env, ctx: RequestContext): Reply {
  const { state } = env;
  const token = state.tokenByAccess(bearerToken(ctx) ?? '');
  let problem = tokenProblem(env, token);
  const user = token && state.userById(token.userId);
  // `User.active.find_by` finds no blocked or deactivated user: newer gems answer invalid_token.
  if (!problem && user?.state !== 'active') problem = 'The access token is invalid';
  // `doorkeeper_authorize!` answers `head` with the error's headers, less `Content-Type`.
  if (problem || !token || !user) {
    return { status: 401, headers: doorkeeperErrorHeaders('invalid_token', problem ?? '') };
  }
  state.markUsed(token);
  if (!token.scopes.includes('openid')) {
    // `ForbiddenTokenResponse#headers` deletes `WWW-Authenticate`: only `Cache-Control` is left.
    return { status: 403, headers: { 'cache-control': 'no-store, no-cache' } };
  }
  const now = state.now();
  const atLevel = (level: number) =>
    directGroups(state.model, user.id, now)
      .filter((g) => directAccess(state.model, user.id, 'group', g.id, now) === level)
      .map((g) => g.fullPath);
  const roleClaims: Record<string, string[]> = {};
  for (const [role, level] of [
    ['owner', 50],
    ['maintainer', 40],
    ['developer', 30],
  ] as const) {
    const paths = atLevel(level);
    if (paths.length > 0) roleClaims[`https://gitlab.org/claims/groups/${role}`] = paths;
  }
  return json(
    200,
    compact({
      sub: String(user.id),
      sub_legacy: subLegacy(user),
      ...profileClaims(env, user),
      ...emailClaims(user, token.scopes),
      groups: membershipGroups(state.model, user.id, now).map((g) => g.fullPath),
      ...roleClaims,
    }),
  );
}

/** The discovery document, keys in GitLab's order. */
export function discoveryDocument(env: Env): Record<string, unknown> {
  return {
    issuer: env.baseUrl,
    authorization_endpoint: env.url('/oauth/authorize'),
    token_endpoint: env.url('/oauth/token'),
    revocation_endpoint: env.url('/oauth/revoke'),
    introspection_endpoint: env.url('/oauth/introspect'),
    userinfo_endpoint: env.url('/oauth/userinfo'),
    jwks_uri: env.url('/oauth/discovery/keys'),
    // `user:*` is GitLab's dynamic scope: advertised, but never requested literally.
    scopes_supported: [...SERVER_SCOPES, 'user:*'],
    response_types_supported: ['code'],
    response_modes_supported: ['query', 'fragment', 'form_post'],
    grant_types_supported: [
      'authorization_code',
      'password',
      'client_credentials',
      'device_code',
      'refresh_token',
    ],
    token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post'],
    subject_types_supported: ['public'],
    id_token_signing_alg_values_supported: ['RS256'],
    claim_types_supported: ['normal'],
    claims_supported: CLAIMS_SUPPORTED,
    code_challenge_methods_supported: ['plain', 'S256'],
  };
}

/** Registers discovery, JWKS and userinfo. */
export function registerOidcRoutes(router: Router, env: Env): void {
  router.on('GET', '/.well-known/openid-configuration', () => json(200, discoveryDocument(env)));
  router.on('GET', '/.well-known/oauth-authorization-server', () => {
    const {
      userinfo_endpoint: _u,
      subject_types_supported: _s,
      id_token_signing_alg_values_supported: _i,
      claim_types_supported: _c,
      claims_supported: _cl,
      ...rest
    } = discoveryDocument(env);
    return json(200, rest);
  });
  router.on('GET', '/.well-known/webfinger', (ctx) => {
    const resource = ctx.query.get('resource');
    if (!resource) return json(400, { error: 'invalid_request' });
    return json(200, {
      subject: resource,
      links: [{ rel: 'http://openid.net/specs/connect/1.0/issuer', href: `${env.baseUrl}/` }],
    });
  });
  router.on('GET', '/oauth/discovery/keys', () =>
    json(
      200,
      { keys: env.state.keys.map((k) => k.jwk) },
      { 'cache-control': 'max-age=86400, public, must-revalidate, no-transform' },
    ),
  );
  router.on(['GET', 'POST'], '/oauth/userinfo', (ctx) => userinfo(env, ctx));
}
