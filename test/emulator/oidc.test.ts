/**
 * The emulator's OpenID Connect side against GitLab's wire format (docs/emulator.md, Fidelity):
 * discovery, JWKS, ID tokens verified with jose, userinfo and its failures.
 */
import { createHash } from 'node:crypto';
import { createRemoteJWKSet, decodeProtectedHeader, type JWTPayload, jwtVerify } from 'jose';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { demoFixtures, type RunningEmulator, startEmulator } from '../../src/emulator/index.js';
import { codeFlow, postForm, type TokenSet } from './browser.js';

const OWNER = 'https://gitlab.org/claims/groups/owner';
const MAINTAINER = 'https://gitlab.org/claims/groups/maintainer';
const DEVELOPER = 'https://gitlab.org/claims/groups/developer';

let gitlab: RunningEmulator;
let app: RunningEmulator['applications'][number];

beforeAll(async () => {
  gitlab = await startEmulator();
  app = gitlab.applications[0]!;
});
afterAll(() => gitlab.close());
beforeEach(() => gitlab.control.reset());

// ---------------------------------------------------------------------------------------------
// Helpers

interface Jwk {
  kty: string;
  kid: string;
  e: string;
  n: string;
  use: string;
  alg: string;
}

async function jwks(): Promise<{ res: Response; keys: Jwk[] }> {
  const res = await fetch(`${gitlab.url}/oauth/discovery/keys`);
  return { res, keys: ((await res.json()) as { keys: Jwk[] }).keys };
}

/** RFC 7638 §3: SHA-256 over the required members in lexicographic order, no whitespace. */
function thumbprint(key: Jwk): string {
  return createHash('sha256')
    .update(`{"e":"${key.e}","kty":"${key.kty}","n":"${key.n}"}`)
    .digest('base64url');
}

/** Verifies an ID token against the published JWKS (a fresh key set, so no cache hides a rotation). */
async function verify(idToken: string): Promise<JWTPayload> {
  const keySet = createRemoteJWKSet(new URL(`${gitlab.url}/oauth/discovery/keys`));
  const { payload } = await jwtVerify(idToken, keySet, {
    issuer: gitlab.url,
    audience: app.uid,
    algorithms: ['RS256'],
    currentDate: gitlab.control.now(),
  });
  return payload;
}

/** An ID token for a user and scopes, obtained through a refresh (which always carries one). */
async function idTokenFor(user: string, scopes: string[]): Promise<string> {
  const { refresh_token } = gitlab.control.mintToken({ user, scopes });
  const res = await postForm(`${gitlab.url}/oauth/token`, {
    grant_type: 'refresh_token',
    refresh_token,
    client_id: app.uid,
    client_secret: app.secret,
  });
  expect(res.status).toBe(200);
  const { id_token } = (await res.json()) as TokenSet;
  expect(id_token).toBeDefined();
  return id_token!;
}

function userinfo(accessToken?: string, init: RequestInit = {}): Promise<Response> {
  return fetch(`${gitlab.url}/oauth/userinfo`, {
    ...init,
    headers: accessToken === undefined ? {} : { authorization: `Bearer ${accessToken}` },
  });
}

async function userinfoOf(user: string, scopes = ['openid']): Promise<Record<string, unknown>> {
  const res = await userinfo(gitlab.control.mintToken({ user, scopes }).access_token);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toBe('application/json; charset=utf-8');
  return (await res.json()) as Record<string, unknown>;
}

/** Doorkeeper's `head 401`: no body, the reason in `WWW-Authenticate`. */
async function expectUnauthorized(res: Response, description: string) {
  expect(res.status).toBe(401);
  expect(await res.text()).toBe('');
  expect(res.headers.get('www-authenticate')).toBe(
    `Bearer realm="Doorkeeper", error="invalid_token", error_description="${description}"`,
  );
  expect(res.headers.get('cache-control')).toBe('no-store, no-cache');
  expect(res.headers.get('pragma')).toBeNull();
}

const sorted = (value: unknown) => [...(value as string[])].sort();

// ---------------------------------------------------------------------------------------------

describe('discovery', () => {
  it("serves GitLab's discovery document, keys in order", async () => {
    const res = await fetch(`${gitlab.url}/.well-known/openid-configuration`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/json; charset=utf-8');
    const doc = (await res.json()) as Record<string, unknown>;
    const base = gitlab.url;
    const expected: Record<string, unknown> = {
      issuer: base,
      authorization_endpoint: `${base}/oauth/authorize`,
      token_endpoint: `${base}/oauth/token`,
      revocation_endpoint: `${base}/oauth/revoke`,
      introspection_endpoint: `${base}/oauth/introspect`,
      userinfo_endpoint: `${base}/oauth/userinfo`,
      jwks_uri: `${base}/oauth/discovery/keys`,
      scopes_supported: [
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
        'user:*',
      ],
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
      claims_supported: [
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
        OWNER,
        MAINTAINER,
        DEVELOPER,
        'project_path',
        'ci_config_ref_uri',
        'ref_path',
        'sha',
        'environment',
        'jti',
      ],
      code_challenge_methods_supported: ['plain', 'S256'],
    };
    expect(Object.keys(doc)).toEqual(Object.keys(expected));
    // The order of scopes_supported is unconfirmed: compare it as a set.
    expect(sorted(doc['scopes_supported'])).toEqual(sorted(expected['scopes_supported']));
    expect({ ...doc, scopes_supported: null }).toEqual({ ...expected, scopes_supported: null });
    // The device grant is the literal flow name, and neither logout nor the device endpoint is advertised.
    expect(doc['grant_types_supported']).toContain('device_code');
    expect(doc['grant_types_supported']).not.toContain('urn:ietf:params:oauth:grant-type:device_code');
    expect(doc).not.toHaveProperty('end_session_endpoint');
    expect(doc).not.toHaveProperty('device_authorization_endpoint');
  });
});

describe('JWKS', () => {
  it('publishes at least two RSA keys whose kid is the RFC 7638 thumbprint', async () => {
    const { res, keys } = await jwks();
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('max-age=86400, public, must-revalidate, no-transform');
    expect(keys.length).toBeGreaterThanOrEqual(2);
    for (const key of keys) {
      expect(Object.keys(key).sort()).toEqual(['alg', 'e', 'kid', 'kty', 'n', 'use']);
      expect(key).toMatchObject({ kty: 'RSA', e: 'AQAB', use: 'sig', alg: 'RS256' });
      expect(key.kid).toBe(thumbprint(key));
    }
    expect(new Set(keys.map((k) => k.kid)).size).toBe(keys.length);
    expect(keys.map((k) => k.kid)).toContain(gitlab.control.signingKeyId());
  });
});

describe('ID token', () => {
  it('verifies with jose and carries the current claim set', async () => {
    const { tokens } = await codeFlow(gitlab, {
      scope: 'openid profile email read_user',
      nonce: 'n-0S6_WzA2Mj',
    });
    const idToken = tokens.id_token!;
    expect(decodeProtectedHeader(idToken)).toEqual({
      typ: 'JWT',
      kid: gitlab.control.signingKeyId(),
      alg: 'RS256',
    });
    const claims = await verify(idToken);
    expect(Object.keys(claims).sort()).toEqual(
      [
        'iss',
        'sub',
        'aud',
        'exp',
        'iat',
        'nonce',
        'auth_time',
        'sub_legacy',
        'name',
        'nickname',
        'preferred_username',
        'website',
        'profile',
        'picture',
        'email',
        'email_verified',
        'groups_direct',
      ].sort(),
    );
    expect(claims).toMatchObject({
      iss: gitlab.url,
      sub: '1',
      aud: app.uid,
      nonce: 'n-0S6_WzA2Mj',
      name: 'Alice Liddell',
      nickname: 'alice',
      preferred_username: 'alice',
      website: 'https://alice.acme.test',
      profile: `${gitlab.url}/alice`,
      email: 'alice@acme.test',
      email_verified: true,
    });
    expect(typeof claims.sub).toBe('string');
    expect(typeof claims.aud).toBe('string');
    expect(claims.exp! - claims.iat!).toBe(120);
    expect(Math.abs(claims.iat! - gitlab.control.now().getTime() / 1000)).toBeLessThan(5);
    // auth_time is the sign-in that just happened.
    expect(Math.abs((claims['auth_time'] as number) - claims.iat!)).toBeLessThan(5);
    expect(claims['sub_legacy']).toMatch(/^[0-9a-f]{64}$/);
    expect(claims['picture']).toMatch(/^https?:\/\//);
    expect(sorted(claims['groups_direct'])).toEqual(['acme', 'opensource']);
    expect(claims).not.toHaveProperty('groups');
    expect(claims).not.toHaveProperty(OWNER);
    expect(claims).not.toHaveProperty('azp');
  });

  it('leaves the profile claims out with the legacy claim set', async () => {
    gitlab.control.setBehaviour({ idTokenClaims: 'legacy' });
    const claims = await verify(await idTokenFor('alice', ['openid', 'email']));
    for (const claim of ['name', 'nickname', 'preferred_username', 'website', 'profile', 'picture']) {
      expect(claims).not.toHaveProperty(claim);
    }
    expect(claims).toMatchObject({ sub: '1', email: 'alice@acme.test', email_verified: true });
    expect(claims['sub_legacy']).toMatch(/^[0-9a-f]{64}$/);
    expect(sorted(claims['groups_direct'])).toEqual(['acme', 'opensource']);
  });

  it('applies the email rules: primary with the email scope, else the public email, else none', async () => {
    const aliceOpenid = await verify(await idTokenFor('alice', ['openid']));
    expect(aliceOpenid).toMatchObject({ email: 'alice@acme.test', email_verified: true });

    const bobOpenid = await verify(await idTokenFor('bob', ['openid']));
    expect(bobOpenid.sub).toBe('2');
    expect(bobOpenid).not.toHaveProperty('email');
    expect(bobOpenid).not.toHaveProperty('email_verified');

    const bobEmail = await verify(await idTokenFor('bob', ['openid', 'email']));
    expect(bobEmail).toMatchObject({ email: 'bob@acme.test', email_verified: true });
  });

  it('signs with a rotated key, which the JWKS lists beside the old one', async () => {
    const before = await idTokenFor('alice', ['openid']);
    const oldKid = gitlab.control.signingKeyId();
    const newKid = gitlab.control.rotateSigningKey();
    expect(newKid).not.toBe(oldKid);
    const after = await idTokenFor('alice', ['openid']);
    expect(decodeProtectedHeader(after).kid).toBe(newKid);
    const kids = (await jwks()).keys.map((k) => k.kid);
    expect(kids).toContain(newKid);
    expect(kids).toContain(oldKid);
    await verify(after);
    await verify(before);

    gitlab.control.rotateSigningKey({ retire: true });
    expect((await jwks()).keys.map((k) => k.kid)).not.toContain(oldKid);
    await expect(verify(before)).rejects.toThrow();
  });
});

describe('userinfo', () => {
  it('answers the claims with groups and role claims (alice: owner and maintainer)', async () => {
    const body = await userinfoOf('alice', ['openid', 'email']);
    expect(Object.keys(body).sort()).toEqual(
      [
        'sub',
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
        OWNER,
        MAINTAINER,
      ].sort(),
    );
    expect(body).toMatchObject({
      sub: '1',
      name: 'Alice Liddell',
      nickname: 'alice',
      preferred_username: 'alice',
      email: 'alice@acme.test',
      email_verified: true,
      website: 'https://alice.acme.test',
      profile: `${gitlab.url}/alice`,
      [OWNER]: ['acme'],
      [MAINTAINER]: ['opensource'],
    });
    // Direct groups and all their descendants.
    expect(sorted(body['groups'])).toEqual(
      ['acme', 'acme/marketing', 'acme/platform', 'acme/platform/infra', 'opensource'].sort(),
    );
    const idClaims = await verify(await idTokenFor('alice', ['openid']));
    expect(body['sub_legacy']).toBe(idClaims['sub_legacy']);
  });

  it('lists role claims for exact direct levels only and omits empty ones', async () => {
    const bob = await userinfoOf('bob');
    expect(sorted(bob['groups'])).toEqual(['acme/platform', 'acme/platform/infra']);
    expect(bob[DEVELOPER]).toEqual(['acme/platform']);
    expect(bob).not.toHaveProperty(OWNER);
    expect(bob).not.toHaveProperty(MAINTAINER);
    expect(bob).not.toHaveProperty('email');
    expect(bob).not.toHaveProperty('email_verified');

    // carol is a guest of acme/marketing: a group, but no role claim.
    const carol = await userinfoOf('carol');
    expect(carol['groups']).toEqual(['acme/marketing']);
    for (const claim of [OWNER, MAINTAINER, DEVELOPER]) expect(carol).not.toHaveProperty(claim);

    // erin is only a project member: `groups` stays, empty.
    expect((await userinfoOf('erin'))['groups']).toEqual([]);
  });

  it('answers POST and ?access_token= too', async () => {
    const { access_token } = gitlab.control.mintToken({ user: 'alice', scopes: ['openid'] });
    expect((await userinfo(access_token, { method: 'POST' })).status).toBe(200);
    expect((await fetch(`${gitlab.url}/oauth/userinfo?access_token=${access_token}`)).status).toBe(200);
  });

  it('answers head 401 with the reason for a missing, unknown, expired or revoked token', async () => {
    await expectUnauthorized(await userinfo(), 'The access token is invalid');
    await expectUnauthorized(await userinfo('f'.repeat(64)), 'The access token is invalid');

    const revoked = gitlab.control.mintToken({ user: 'alice', scopes: ['openid'] });
    expect(gitlab.control.revokeUserTokens('alice')).toBe(1);
    await expectUnauthorized(await userinfo(revoked.access_token), 'The access token was revoked');

    const expired = gitlab.control.mintToken({ user: 'alice', scopes: ['openid'] });
    gitlab.control.advanceClock(7201);
    await expectUnauthorized(await userinfo(expired.access_token), 'The access token expired');
  });

  it('answers head 403 insufficient_scope for a token without openid', async () => {
    const { access_token } = gitlab.control.mintToken({ user: 'alice', scopes: ['read_user'] });
    const res = await userinfo(access_token);
    expect(res.status).toBe(403);
    expect(await res.text()).toBe('');
    // Doorkeeper 5.8.1 `ForbiddenTokenResponse#headers` deletes `WWW-Authenticate`; `head 403` keeps
    // the rest of `ErrorResponse#headers` but `Content-Type`.
    expect(res.headers.get('www-authenticate')).toBeNull();
    expect(res.headers.get('cache-control')).toBe('no-store, no-cache');
    expect(res.headers.get('pragma')).toBeNull();
  });

  it('refuses the token of a blocked user', async () => {
    const { access_token } = gitlab.control.mintToken({ user: 'alice', scopes: ['openid'] });
    expect((await userinfo(access_token)).status).toBe(200);
    gitlab.control.blockUser('alice');
    expect((await userinfo(access_token)).status).toBe(401);
  });
});

describe('CORS', () => {
  it.each([
    '/oauth/token',
    '/oauth/revoke',
    '/oauth/userinfo',
    '/oauth/discovery/keys',
    '/.well-known/openid-configuration',
  ])('answers the preflight on %s for any origin', async (path) => {
    const res = await fetch(`${gitlab.url}${path}`, {
      method: 'OPTIONS',
      headers: {
        origin: 'https://spa.example',
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'authorization',
      },
    });
    expect(res.status).toBeGreaterThanOrEqual(200);
    expect(res.status).toBeLessThan(300);
    expect(res.headers.get('access-control-allow-origin')).toBe('*');
    expect(res.headers.get('access-control-allow-credentials')).toBeNull();
  });

  it('lets a browser read the token response', async () => {
    const res = await postForm(
      `${gitlab.url}/oauth/token`,
      { grant_type: 'refresh_token', refresh_token: 'x' },
      { origin: 'https://spa.example' },
    );
    expect(res.status).toBe(400);
    expect(res.headers.get('access-control-allow-origin')).toBe('*');
  });
});

describe('avatars', () => {
  it('serves each user an avatar of its own, offline, at the URL the API and claims name', async () => {
    const gitlab = await startEmulator();
    try {
      const token = gitlab.control.mintToken({ user: 'alice', scopes: ['openid', 'read_user'] }).access_token;
      const me = (await (
        await fetch(`${gitlab.url}/api/v4/user`, { headers: { authorization: `Bearer ${token}` } })
      ).json()) as {
        avatar_url: string;
      };
      expect(me.avatar_url.startsWith(gitlab.url)).toBe(true);
      const png = await fetch(me.avatar_url);
      expect(png.headers.get('content-type')).toBe('image/png');
      const bytes = new Uint8Array(await png.arrayBuffer());
      expect([...bytes.slice(1, 4)].map((b) => String.fromCharCode(b)).join('')).toBe('PNG');
      const other = new Uint8Array(
        await (await fetch(`${gitlab.url}/uploads/-/system/user/avatar/2/avatar.png`)).arrayBuffer(),
      );
      expect(Buffer.from(other).equals(Buffer.from(bytes))).toBe(false);
      expect((await fetch(`${gitlab.url}/uploads/-/system/user/avatar/999/avatar.png`)).status).toBe(404);
    } finally {
      await gitlab.close();
    }
  });
});

describe('website', () => {
  // GitLab's claim is `user.full_website_url if user.website_url.present?`, and `full_website_url`
  // prepends `http://` unless the stored value matches `%r{\Ahttps?://}` (case-sensitive).
  const cases: Array<[user: string, stored: string, claim: string | undefined]> = [
    ['alice', 'https://alice.acme.test', 'https://alice.acme.test'],
    ['bob', 'bob.example/~bob', 'http://bob.example/~bob'],
    ['carol', 'http://carol.example', 'http://carol.example'],
    ['erin', 'HTTPS://erin.example', 'http://HTTPS://erin.example'],
    ['grace', 'ftp://grace.example', 'http://ftp://grace.example'],
    ['root', '   ', undefined],
  ];
  let site: RunningEmulator;
  beforeAll(async () => {
    const fixtures = demoFixtures();
    for (const [username, stored] of cases) {
      fixtures.users!.find((u) => u.username === username)!.websiteUrl = stored;
    }
    site = await startEmulator({ fixtures });
  });
  afterAll(() => site.close());

  it('makes the website absolute in userinfo and in the ID token, as full_website_url does', async () => {
    const siteApp = site.applications[0]!;
    for (const [username, , claim] of cases) {
      const { access_token, refresh_token } = site.control.mintToken({
        user: username,
        scopes: ['openid', 'profile'],
      });
      const info = await fetch(`${site.url}/oauth/userinfo`, {
        headers: { authorization: `Bearer ${access_token}` },
      });
      expect(info.status).toBe(200);
      expect(((await info.json()) as Record<string, unknown>)['website'], username).toBe(claim);

      // A refresh always carries an ID token.
      const refreshed = await postForm(`${site.url}/oauth/token`, {
        grant_type: 'refresh_token',
        refresh_token,
        client_id: siteApp.uid,
        client_secret: siteApp.secret,
      });
      expect(refreshed.status, username).toBe(200);
      const { id_token } = (await refreshed.json()) as TokenSet;
      const payload = JSON.parse(Buffer.from(id_token!.split('.')[1]!, 'base64url').toString('utf8'));
      expect(payload['website'], username).toBe(claim);
    }
  });

  it('keeps the stored value in the API, which GitLab does not rewrite', async () => {
    const { access_token } = site.control.mintToken({ user: 'bob', scopes: ['read_user'] });
    const me = await fetch(`${site.url}/api/v4/user`, {
      headers: { authorization: `Bearer ${access_token}` },
    });
    expect(((await me.json()) as { website_url: string }).website_url).toBe('bob.example/~bob');
  });
});
