/**
 * Options: misuse throws `TypeError` when labgate is created (never at the first request), the
 * environment table of README.md ("Configuration"), GitLab under a sub-path, and instances without
 * OpenID Connect.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createLabgate, type LabgateOptions, optionsFromEnv } from '../../src/core/index.js';
import { type RunningEmulator, startEmulator } from '../../src/emulator/index.js';
import { APP, authorize, CALLBACK, createHarness, errorCode, login, signIn, testSecret } from './harness.js';

let gitlab: RunningEmulator;
beforeAll(async () => {
  gitlab = await startEmulator();
});
afterAll(() => gitlab.close());
beforeEach(() => gitlab.control.reset());

const SECRET = testSecret();

function base(overrides: Partial<LabgateOptions> = {}): LabgateOptions {
  return {
    gitlabUrl: 'https://gitlab.example.com',
    clientId: 'client',
    url: 'https://app.example.com',
    secret: SECRET,
    logger: false,
    ...overrides,
  };
}

function warnings(overrides: Partial<LabgateOptions>): string[] {
  const lines: string[] = [];
  createLabgate(
    base({
      ...overrides,
      logger: { info: () => {}, warn: (m) => lines.push(m), error: (m) => lines.push(m) },
    }),
  );
  return lines;
}

describe('createLabgate throws TypeError for', () => {
  const cases: [string, Partial<LabgateOptions> | (() => unknown)][] = [
    ['no options', () => createLabgate(undefined as unknown as LabgateOptions)],
    [
      'a missing clientId',
      () => createLabgate({ ...base(), clientId: undefined } as unknown as LabgateOptions),
    ],
    ['an empty clientId', { clientId: '  ' }],
    ['a missing url', () => createLabgate({ ...base(), url: undefined } as unknown as LabgateOptions)],
    ['a url that is not a URL', { url: 'app.example.com' }],
    ['a url that is not http(s)', { url: 'ftp://app.example.com' }],
    ['a url with a path', { url: 'https://app.example.com/app' }],
    ['a url with a query', { url: 'https://app.example.com/?x=1' }],
    ['a url with a fragment', { url: 'https://app.example.com/#x' }],
    ['a url with credentials', { url: 'https://user:pw@app.example.com' }],
    ['a cookieName with a space', { cookieName: 'my cookie' }],
    ['a cookieName that brings its own prefix', { cookieName: '__Host-x' }],
    ['a redirect domain with a scheme', { redirectDomains: ['https://docs.example.com'] }],
    ['a gitlabUrl that is not a URL', { gitlabUrl: 'gitlab' }],
    ['a javascript: gitlabUrl', { gitlabUrl: 'javascript:alert(1)' }],
    ['a gitlabUrl with a query', { gitlabUrl: 'https://gitlab.example.com/?a=1' }],
    ['an http GitLab on a network host', { gitlabUrl: 'http://gitlab.example.com' }],
    ['an http GitLab on a look-alike of localhost', { gitlabUrl: 'http://localhost.evil.example' }],
    ['an http GitLab on a look-alike of 127.0.0.1', { gitlabUrl: 'http://127.0.0.1.nip.io' }],
    ['an http GitLab on a private address', { gitlabUrl: 'http://10.0.0.5' }],
    ['a missing secret', () => createLabgate({ ...base(), secret: undefined } as unknown as LabgateOptions)],
    ['an empty secret', { secret: '' }],
    ['an empty secret list', { secret: [] }],
    ['a short secret (31 bytes)', { secret: Buffer.alloc(31, 7).toString('base64url') }],
    ['a secret that is not base64url', { secret: `${'!'.repeat(40)}` }],
    ['a short second secret in the list', { secret: [SECRET, 'c2hvcnQ'] }],
    ['a short second secret in a comma list', { secret: `${SECRET},c2hvcnQ` }],
    ['a prefix with a query', { prefix: '/auth?x' }],
    ['a prefix with a space', { prefix: '/a b' }],
    ['a prefix of /', { prefix: '/' }],
    ['an empty prefix', { prefix: '' }],
    ['a prefix with a scheme', { prefix: 'https://evil.example/auth' }],
    ['empty scopes', { scopes: '  ' }],
    ['an unknown sessionMode', { sessionMode: 'jwt' as 'cookie' }],
    ['sessionCacheTtl above 5', { sessionCacheTtl: 6 }],
    ['a negative sessionCacheTtl', { sessionCacheTtl: -1 }],
    ['a zero requestTimeout', { requestTimeout: 0 }],
    ['a NaN sessionMaxAge', { sessionMaxAge: Number.NaN }],
    ['a negative clockTolerance', { clockTolerance: -5 }],
  ];
  for (const [name, overrides] of cases) {
    it(name, () => {
      const run = typeof overrides === 'function' ? overrides : () => createLabgate(base(overrides));
      expect(run).toThrow(TypeError);
    });
  }

  it('a message that names the problem and never echoes a secret', () => {
    const secret = Buffer.alloc(20, 9).toString('base64url');
    let message = '';
    try {
      createLabgate(base({ secret }));
    } catch (error) {
      message = (error as Error).message;
    }
    expect(message).toMatch(/32/);
    expect(message).not.toContain(secret);
    expect(() => createLabgate(base({ clientId: '' }))).toThrow(/clientId/);
    expect(() => createLabgate(base({ url: 'https://a.example/x' }))).toThrow(/url/);
  });
});

describe('createLabgate accepts', () => {
  it('a cookieName, sent as __Host-<name> on https and as given on http', () => {
    expect(createLabgate({ ...base(), cookieName: '_oauth2_proxy' }).options.cookieName).toBe(
      '__Host-_oauth2_proxy',
    );
    expect(
      createLabgate({ ...base(), url: 'http://127.0.0.1:4180', cookieName: 'gw' }).options.cookieName,
    ).toBe('gw');
    expect(createLabgate(base()).options.cookieName).toBe('__Host-labgate');
  });

  it('https everywhere, silently', () => {
    expect(warnings({})).toEqual([]);
  });

  it.each(['http://127.0.0.1:8080', 'http://localhost', 'http://gitlab.localhost', 'http://[::1]:3999'])(
    'http GitLab on loopback %s, with a warning',
    (gitlabUrl) => {
      const lines = warnings({ gitlabUrl });
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/plain http.*loopback/);
    },
  );

  it('http GitLab elsewhere only with dangerouslyAllowInsecureHttp, which logs a DANGER warning', () => {
    const lines = warnings({ gitlabUrl: 'http://gitlab.example.com', dangerouslyAllowInsecureHttp: true });
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^labgate: DANGER: /);
  });

  it('secrets as a list or comma-separated, newest first', () => {
    expect(() => createLabgate(base({ secret: [SECRET, testSecret()] }))).not.toThrow();
    expect(() => createLabgate(base({ secret: `${SECRET}, ${testSecret()}` }))).not.toThrow();
  });

  it('a url with a trailing slash, and derives the redirect URI from it alone', () => {
    const labgate = createLabgate(base({ url: 'https://app.example.com/', prefix: 'sign-in/' }));
    expect(labgate.options.origin).toBe('https://app.example.com');
    expect(labgate.options.prefix).toBe('/sign-in');
    expect(labgate.options.redirectUri).toBe('https://app.example.com/sign-in/callback');
    expect(labgate.options.secure).toBe(true);
  });

  it('defaults that match the public contract', () => {
    const { gitlabUrl: _default, ...rest } = base();
    const labgate = createLabgate(rest);
    expect(labgate.options.gitlabUrl.href).toBe('https://gitlab.com/');
    expect(labgate.options.scopes).toEqual(['openid', 'profile', 'email']);
    expect(labgate.options.prefix).toBe('/auth');
    expect(labgate.options.sessionMode).toBe('server');
    expect(labgate.options.clockTolerance).toBe(60);
    expect(labgate.options.sessionCacheTtl).toBe(5);
  });

  it('creation contacts nobody: GitLab may be down when the app starts', () => {
    const calls: string[] = [];
    createLabgate(
      base({
        fetch: async (input) => {
          calls.push(String(input));
          return new Response(null, { status: 500 });
        },
      }),
    );
    expect(calls).toEqual([]);
  });
});

describe('optionsFromEnv', () => {
  it('maps the environment table of the README', () => {
    const secretA = testSecret();
    const secretB = testSecret();
    const options = optionsFromEnv({
      GITLAB_URL: 'https://gitlab.example.com/gitlab',
      GITLAB_CLIENT_ID: 'the-id',
      GITLAB_CLIENT_SECRET: 'the-secret',
      GITLAB_SCOPES: 'openid profile email read_api',
      LABGATE_URL: 'https://app.example.com',
      LABGATE_SECRET: `${secretA},${secretB}`,
      PORT: '8080',
    });
    expect(options).toEqual({
      gitlabUrl: 'https://gitlab.example.com/gitlab',
      clientId: 'the-id',
      clientSecret: 'the-secret',
      scopes: 'openid profile email read_api',
      url: 'https://app.example.com',
      secret: `${secretA},${secretB}`,
    });
    const labgate = createLabgate({ ...options, logger: false });
    expect(labgate.options.scopes).toEqual(['openid', 'profile', 'email', 'read_api']);
    expect(labgate.options.redirectUri).toBe('https://app.example.com/auth/callback');
    expect(labgate.options.gitlabUrl.href).toBe('https://gitlab.example.com/gitlab');
  });

  it('defaults LABGATE_URL to http://localhost:PORT (3000) and leaves GitLab to its default', () => {
    expect(optionsFromEnv({ GITLAB_CLIENT_ID: 'x', LABGATE_SECRET: SECRET, PORT: '8080' })).toEqual({
      clientId: 'x',
      url: 'http://localhost:8080',
      secret: SECRET,
    });
    expect(optionsFromEnv({}).url).toBe('http://localhost:3000');
  });

  it('gives options that createLabgate refuses when the required variables are missing', () => {
    expect(() => createLabgate({ ...optionsFromEnv({ LABGATE_SECRET: SECRET }), logger: false })).toThrow(
      /GITLAB_CLIENT_ID/,
    );
    expect(() => createLabgate({ ...optionsFromEnv({ GITLAB_CLIENT_ID: 'x' }), logger: false })).toThrow(
      /LABGATE_SECRET/,
    );
  });
});

describe('routes', () => {
  it('answers only below the prefix', async () => {
    const h = createHarness(gitlab, { prefix: '/sso' });
    for (const path of ['/', '/auth/login', '/ssox', '/other/sso/login'])
      expect(await h.labgate.handle(new Request(`${APP}${path}`)), path).toBeNull();
    expect((await h.labgate.handle(new Request(`${APP}/sso/nothing`)))!.status).toBe(404);
    const response = await h.labgate.handle(new Request(`${APP}/sso/login`));
    expect(response!.status).toBe(302);
    expect(new URL(response!.headers.get('location')!).searchParams.get('redirect_uri')).toBe(
      `${APP}/sso/callback`,
    );
  });

  it('/auth/session without a session → 401 session_required (JSON for API clients)', async () => {
    const h = createHarness(gitlab);
    const response = await h.labgate.handle(
      new Request(`${APP}/auth/session`, { headers: { accept: 'application/json' } }),
    );
    expect(response!.status).toBe(401);
    expect(await response!.json()).toMatchObject({ error: 'session_required' });
  });
});

describe('GitLab under a sub-path', () => {
  let sub: RunningEmulator;
  beforeAll(async () => {
    sub = await startEmulator({ basePath: '/gitlab' });
  });
  afterAll(() => sub.close());
  beforeEach(() => sub.control.reset());

  for (const suffix of ['', '/']) {
    it(`signs in with gitlabUrl ${suffix ? 'ending in /' : 'as given'}; the issuer ends with /gitlab`, async () => {
      const h = createHarness(sub, {
        gitlabUrl: `${sub.url}${suffix}`,
        scopes: 'openid profile email read_user',
      });
      const { callback, authorizeUrl, browser } = await signIn(h);
      expect(authorizeUrl.pathname).toBe('/gitlab/oauth/authorize');
      expect(callback.status, callback.body).toBe(303);
      const { user } = JSON.parse((await browser.get(`${APP}/auth/session`)).body);
      expect(user.issuer).toBe(sub.url);
      expect(user.issuer.endsWith('/gitlab')).toBe(true);
      expect(user.webUrl).toBe(`${sub.url}/alice`);
      expect(sub.control.requests({ path: '/api/v4/user' })).toHaveLength(1);
    });
  }
});

describe('GitLab without OpenID Connect (plain OAuth fallback)', () => {
  beforeEach(() => {
    gitlab.control.injectFault({ path: '/.well-known/openid-configuration', status: 404, body: '' });
  });

  it('signs in through /api/v4/user, asking for read_user and no nonce; issuer = the GitLab URL', async () => {
    const h = createHarness(gitlab);
    const { callback, authorizeUrl, browser } = await signIn(h);
    expect(authorizeUrl.searchParams.get('scope')).toBe('read_user');
    expect(authorizeUrl.searchParams.has('nonce')).toBe(false);
    expect(authorizeUrl.searchParams.get('code_challenge_method')).toBe('S256');
    expect(authorizeUrl.searchParams.get('state')).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(authorizeUrl.searchParams.get('redirect_uri')).toBe(CALLBACK);
    expect(callback.status, callback.body).toBe(303);
    const { user } = JSON.parse((await browser.get(`${APP}/auth/session`)).body);
    expect(user).toMatchObject({
      sub: '1',
      issuer: gitlab.url,
      username: 'alice',
      name: 'Alice Liddell',
      email: 'alice@acme.test',
      emailVerified: true,
      createdAt: '2023-03-14T09:26:53.000Z',
    });
    expect(gitlab.control.requests({ path: '/api/v4/user' })).toHaveLength(1);
    expect(gitlab.control.requests({ path: '/oauth/userinfo' })).toHaveLength(0);
    expect(gitlab.control.requests({ path: '/oauth/discovery/keys' })).toHaveLength(0);
    expect(h.logs.some((l) => l.startsWith('warn ') && l.includes('no OpenID Connect'))).toBe(true);
  });

  it('keeps an API scope the app asked for instead of adding read_user', async () => {
    const h = createHarness(gitlab, { scopes: 'openid profile email read_api' });
    const { authorizeUrl } = await login(h, h.browser());
    expect(authorizeUrl.searchParams.get('scope')).toBe('read_api');
  });

  it('a blocked account is refused at /api/v4/user (403 account_unavailable)', async () => {
    const h = createHarness(gitlab);
    const browser = h.browser();
    const { authorizeUrl } = await login(h, browser);
    const callbackUrl = await authorize(h, browser, authorizeUrl.href, { user: 'bob' });
    gitlab.control.blockUser('bob');
    const page = await browser.get(callbackUrl);
    expect(page.status).toBe(403);
    expect(errorCode(page)).toBe('account_unavailable');
  });
});
