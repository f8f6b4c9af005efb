/**
 * Sign-in at the HTTP boundary (`labgate.handle`) against the emulated GitLab: the authorization
 * request, the callback's checks in order, several tabs, expiry, replay, open redirects, ID-token
 * binding (nonce, audience, keys) and the headers of every answer. docs/security.md: the
 * sign-in rules (SIGNIN to USERINFO) and the SESSION and COOKIE rules.
 */
import { generateKeyPairSync } from 'node:crypto';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { KeyRing } from '../../src/core/index.js';
import { demoFixtures, type RunningEmulator, startEmulator } from '../../src/emulator/index.js';
import { codeFlow } from '../emulator/browser.js';
import {
  APP,
  authorize,
  CALLBACK,
  Clock,
  codeExchanges,
  createHarness,
  errorCode,
  expectNoLeaks,
  type Harness,
  login,
  rewriteJson,
  sessionSetCookie,
  signIn,
} from './harness.js';

let gitlab: RunningEmulator;
beforeAll(async () => {
  gitlab = await startEmulator();
});
afterAll(() => gitlab.close());
beforeEach(() => gitlab.control.reset());

const B64URL_256 = /^[A-Za-z0-9_-]{43}$/;

function txCookies(h: Harness, browser: ReturnType<Harness['browser']>): string[] {
  return browser.jar
    .cookies(new URL(h.labgate.options.origin).hostname)
    .map((c) => c.name)
    .filter((n) => n.includes('labgate-tx-'));
}

/** A callback request with exactly this cookie header (a replay, or a browser that is not the user's). */
function callbackRequest(url: string, cookie: string | null): Request {
  return new Request(url, cookie === null ? {} : { headers: { cookie } });
}

describe('a full sign-in', () => {
  it('ends in a 303 to returnTo with an HttpOnly, SameSite=Lax session cookie and a profile', async () => {
    const h = createHarness(gitlab, { scopes: 'openid profile email read_user' });
    const { callback, browser } = await signIn(h, { returnTo: '/projects?tab=1#top' });
    expect(callback.status, callback.body).toBe(303);
    expect(callback.headers.get('location')).toBe('/projects?tab=1#top');
    expect(callback.body).toBe('');
    const cookie = sessionSetCookie(callback.headers)!;
    expect(cookie).toMatch(/^labgate=[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+; /);
    expect(cookie).toContain('; Path=/');
    expect(cookie).toContain('; HttpOnly');
    expect(cookie).toContain('; SameSite=Lax');
    expect(cookie).not.toMatch(/;\s*Secure/i);
    expect(cookie).not.toMatch(/;\s*Domain=/i);

    const me = await browser.get(`${APP}/auth/session`);
    expect(me.status).toBe(200);
    expect(me.headers.get('cache-control')).toBe('no-store');
    const { user } = JSON.parse(me.body) as { user: Record<string, unknown> };
    expect(user).toMatchObject({
      sub: '1',
      issuer: gitlab.url,
      id: 1,
      username: 'alice',
      name: 'Alice Liddell',
      email: 'alice@acme.test',
      emailVerified: true,
      webUrl: `${gitlab.url}/alice`,
      createdAt: '2023-03-14T09:26:53.000Z',
      state: 'active',
      bot: false,
      external: false,
      twoFactorEnabled: false,
    });
    expect(user['avatarUrl']).toMatch(/^https?:\/\//);
    expect(user['lastSignInAt']).toMatch(/^\d{4}-\d\d-\d\dT/);
    expect(user['groups']).toEqual(expect.arrayContaining(['acme', 'acme/platform']));
    // ISSUER-5: the GitLab account of the session is (issuer, sub), never a username or email.
    const id = sessionSetCookie(callback.headers)!.split('=')[1]!.split('.')[0]!;
    expect((await h.labgate.store.getSession(id))?.identity).toBe(`${gitlab.url} 1`);
  });

  it('signs in a user with two-factor authentication', async () => {
    const { totp } = await import('../emulator/browser.js');
    const h = createHarness(gitlab);
    const { callback } = await signIn(h, {
      user: 'carol',
      otp: totp('JBSWY3DPEHPK3PXP', gitlab.control.now().getTime()),
    });
    expect(callback.status, callback.body).toBe(303);
    const me = await h.labgate.getSession(
      new Request(`${APP}/`, { headers: { cookie: sessionSetCookie(callback.headers)!.split(';')[0]! } }),
    );
    expect(me?.user.username).toBe('carol');
  });

  it('on https names the cookies __Host-, marks them Secure and registers the https redirect URI', async () => {
    const fixtures = demoFixtures();
    fixtures.applications![0]!.redirectUris.push('https://app.example.test/auth/callback');
    const secure = await startEmulator({ fixtures });
    try {
      const h = createHarness(secure, { url: 'https://app.example.test' });
      const browser = h.browser();
      const { page, authorizeUrl } = await login(h, browser, '/x');
      expect(authorizeUrl.searchParams.get('redirect_uri')).toBe('https://app.example.test/auth/callback');
      const tx = page.headers.getSetCookie();
      expect(tx).toHaveLength(1);
      expect(tx[0]).toMatch(
        /^__Host-labgate-tx-[A-Za-z0-9_-]{16}=[A-Za-z0-9_-]+; Path=\/; HttpOnly; SameSite=Lax; Secure; Max-Age=600$/,
      );
      const callbackUrl = await authorize(h, browser, authorizeUrl.href);
      expect(callbackUrl.startsWith('https://app.example.test/auth/callback?')).toBe(true);
      const callback = await browser.get(callbackUrl);
      expect(callback.status, callback.body).toBe(303);
      const cookies = callback.headers.getSetCookie();
      const session = cookies.find((c) => c.startsWith('__Host-labgate='))!;
      expect(session).toMatch(/^__Host-labgate=[^;]+; Path=\/; HttpOnly; SameSite=Lax; Secure; Max-Age=\d+$/);
      // The transaction cookie is cleared with the same prefix and attributes.
      expect(cookies.find((c) => c.startsWith('__Host-labgate-tx-'))).toMatch(
        /=; Path=\/; .*Secure; Max-Age=0$/,
      );
      // A plain `labgate` cookie (tossed in by a sibling) is not the session on https.
      const value = session.split(';')[0]!.slice('__Host-labgate='.length);
      expect(await h.labgate.sessionOf(`labgate=${value}`)).toBeNull();
      expect(await h.labgate.sessionOf(`__Host-labgate=${value}`)).not.toBeNull();
    } finally {
      await secure.close();
    }
  });

  it('never leaks the code, tokens, client secret, state, nonce or verifier into pages or logs', async () => {
    const seen: string[] = [];
    const h = createHarness(gitlab, {
      scopes: 'openid profile email read_user',
      intercept: async (url, response, init) => {
        if (url.endsWith('/oauth/token')) {
          const form = new URLSearchParams(String(init?.body ?? ''));
          for (const name of ['code', 'code_verifier', 'client_secret'])
            if (form.get(name)) seen.push(form.get(name)!);
          const body = (await response.clone().json()) as Record<string, string>;
          seen.push(body['access_token']!, body['refresh_token']!, body['id_token']!);
        }
        return response;
      },
    });
    const { callback, callbackUrl, authorizeUrl, browser } = await signIn(h);
    expect(callback.status).toBe(303);
    const params = new URL(callbackUrl).searchParams;
    seen.push(
      params.get('code')!,
      authorizeUrl.searchParams.get('state')!,
      authorizeUrl.searchParams.get('nonce')!,
    );
    seen.push(gitlab.applications[0]!.secret);
    // An error page too, and sign-out with its revocation.
    await browser.get(`${CALLBACK}?${params}`);
    await browser.request(`${APP}/auth/logout`, { method: 'POST', headers: { origin: APP } });
    // code, verifier, client secret, access/refresh/ID token, state, nonce (code and secret seen twice).
    expect(new Set(seen.filter(Boolean)).size).toBe(8);
    expect(h.logs.some((l) => l.includes('signed in'))).toBe(true);
    expectNoLeaks(h, seen);
  });
});

describe('the authorization request', () => {
  it('carries response_type=code, the fixed redirect URI, least scopes, state, nonce and an S256 challenge', async () => {
    const h = createHarness(gitlab);
    const browser = h.browser();
    const { page, authorizeUrl: a } = await login(h, browser, '/private/path');
    expect(`${a.origin}${a.pathname}`).toBe(`${gitlab.url}/oauth/authorize`);
    expect([...a.searchParams.keys()].sort()).toEqual(
      [
        'client_id',
        'code_challenge',
        'code_challenge_method',
        'nonce',
        'redirect_uri',
        'response_type',
        'scope',
        'state',
      ].sort(),
    );
    expect(a.searchParams.get('client_id')).toBe(gitlab.applications[0]!.uid);
    expect(a.searchParams.get('response_type')).toBe('code');
    expect(a.searchParams.get('redirect_uri')).toBe(CALLBACK);
    expect(a.searchParams.get('scope')).toBe('openid profile email');
    expect(a.searchParams.get('code_challenge_method')).toBe('S256');
    expect(a.searchParams.get('state')).toMatch(B64URL_256);
    expect(a.searchParams.get('nonce')).toMatch(B64URL_256);
    expect(a.searchParams.get('code_challenge')).toMatch(B64URL_256);
    expect(a.searchParams.get('state')).not.toBe(a.searchParams.get('nonce'));
    // REDIRECT-3: returnTo travels in the sealed transaction, not in the URL.
    expect(a.href).not.toContain('private');
    expect(page.headers.get('cache-control')).toBe('no-store');
    expect(page.headers.get('referrer-policy')).toBe('no-referrer');
    // The transaction cookie is sealed: neither state nor returnTo can be read from it.
    const [tx] = page.headers.getSetCookie();
    expect(tx).toMatch(
      /^labgate-tx-[A-Za-z0-9_-]{16}=[A-Za-z0-9_-]+; Path=\/; HttpOnly; SameSite=Lax; Max-Age=600$/,
    );
    const value = tx!.split(';')[0]!.split('=')[1]!;
    const decoded = Buffer.from(value, 'base64url').toString('latin1');
    expect(decoded).not.toContain(a.searchParams.get('state'));
    expect(decoded).not.toContain('private');

    // Fresh values for every transaction.
    const { authorizeUrl: b } = await login(h, browser);
    for (const name of ['state', 'nonce', 'code_challenge'])
      expect(b.searchParams.get(name)).not.toBe(a.searchParams.get(name));
  });

  it('derives the redirect URI from configuration, never from Host or X-Forwarded-*', async () => {
    const h = createHarness(gitlab);
    const response = await h.labgate.handle(
      new Request('http://evil.example/auth/login', {
        headers: { host: 'evil.example', 'x-forwarded-host': 'evil.example', 'x-forwarded-proto': 'https' },
      }),
    );
    expect(response?.status).toBe(302);
    const target = new URL(response!.headers.get('location')!);
    expect(target.searchParams.get('redirect_uri')).toBe(CALLBACK);
    expect(target.origin).toBe(new URL(gitlab.url).origin);
  });

  it('ignores any issuer or endpoint a user puts in the login URL', async () => {
    const h = createHarness(gitlab);
    const response = await h.labgate.handle(
      new Request(
        `${APP}/auth/login?issuer=https://evil.example&gitlabUrl=https://evil.example&redirect_uri=https://evil.example/cb&scope=api`,
      ),
    );
    const target = new URL(response!.headers.get('location')!);
    expect(`${target.origin}${target.pathname}`).toBe(`${gitlab.url}/oauth/authorize`);
    expect(target.searchParams.get('redirect_uri')).toBe(CALLBACK);
    expect(target.searchParams.get('scope')).toBe('openid profile email');
  });

  it('sends this browser’s verifier with the configured redirect URI and client_secret_post (SIGNIN-4, SIGNIN-7)', async () => {
    const tokenForms: URLSearchParams[] = [];
    const h = createHarness(gitlab, {
      intercept: async (url, response, init) => {
        if (url.endsWith('/oauth/token')) tokenForms.push(new URLSearchParams(String(init?.body)));
        return response;
      },
    });
    const browser = h.browser();
    const first = await login(h, browser);
    const second = await login(h, browser);
    const secondCb = await authorize(h, browser, second.authorizeUrl.href);
    const firstCb = await authorize(h, browser, first.authorizeUrl.href);
    expect((await browser.get(firstCb)).status).toBe(303);
    expect((await browser.get(secondCb)).status).toBe(303);
    expect(tokenForms).toHaveLength(2);
    const { createHash } = await import('node:crypto');
    for (const [form, started] of [
      [tokenForms[0]!, first],
      [tokenForms[1]!, second],
    ] as const) {
      const verifier = form.get('code_verifier')!;
      expect(verifier).toMatch(/^[A-Za-z0-9._~-]{43,128}$/);
      expect(createHash('sha256').update(verifier).digest('base64url')).toBe(
        started.authorizeUrl.searchParams.get('code_challenge'),
      );
      expect(verifier).not.toBe(started.authorizeUrl.searchParams.get('state'));
      expect(verifier).not.toBe(started.authorizeUrl.searchParams.get('nonce'));
      expect(form.get('redirect_uri')).toBe(CALLBACK);
      expect(form.get('grant_type')).toBe('authorization_code');
      expect(form.get('client_secret')).toBe(gitlab.applications[0]!.secret);
    }
    expect(tokenForms[0]!.get('code_verifier')).not.toBe(tokenForms[1]!.get('code_verifier'));
  });
});

describe('the authorization response', () => {
  it('never yields tokens or a session from its own parameters (CALLBACK-4)', async () => {
    const h = createHarness(gitlab);
    const browser = h.browser();
    const { authorizeUrl } = await login(h, browser);
    const callbackUrl = await authorize(h, browser, authorizeUrl.href);
    const state = new URL(callbackUrl).searchParams.get('state')!;
    for (const injected of ['access_token=injected-token&token_type=bearer', 'id_token=e30.e30.x']) {
      for (const url of [`${CALLBACK}?state=${state}&${injected}`, `${callbackUrl}&${injected}`]) {
        const response = await h.labgate.handle(callbackRequest(url, browser.jar.header(callbackUrl)));
        expect(response!.status, url).toBe(400);
        expect(errorCode({ body: await response!.text() })).toBe('callback_invalid');
        expect(sessionSetCookie(response!.headers)).toBeUndefined();
      }
    }
    expect(codeExchanges(gitlab)).toBe(0);
  });

  it('builds no cookie attribute from request input (COOKIE-7)', async () => {
    const h = createHarness(gitlab);
    const response = await h.labgate.handle(
      new Request(
        `${APP}/auth/login?returnTo=${encodeURIComponent('/x; Domain=evil.example; SameSite=None')}`,
        {
          headers: { cookie: 'labgate-tx-x; Domain=evil.example=1' },
        },
      ),
    );
    for (const cookie of response!.headers.getSetCookie()) {
      expect(cookie).not.toMatch(/evil|SameSite=None|Domain/i);
    }
  });
});

describe('several tabs', () => {
  it('completes two sign-ins started in the same browser, in reverse order', async () => {
    const h = createHarness(gitlab);
    const browser = h.browser();
    const a = await login(h, browser, '/a');
    const b = await login(h, browser, '/b');
    expect(txCookies(h, browser)).toHaveLength(2);
    const cbA = await authorize(h, browser, a.authorizeUrl.href);
    const cbB = await authorize(h, browser, b.authorizeUrl.href);
    const second = await browser.get(cbB);
    expect(second.status, second.body).toBe(303);
    expect(second.headers.get('location')).toBe('/b');
    const first = await browser.get(cbA);
    expect(first.status, first.body).toBe(303);
    expect(first.headers.get('location')).toBe('/a');
    expect(txCookies(h, browser)).toHaveLength(0);
  });

  it('keeps at most 3 transaction cookies: a 4th sign-in clears the oldest', async () => {
    const h = createHarness(gitlab);
    const browser = h.browser();
    const started = [];
    const names: string[][] = [];
    for (let i = 0; i < 4; i++) {
      started.push(await login(h, browser, `/tab${i}`));
      names.push(txCookies(h, browser));
      h.clock.advance(1);
    }
    expect(names.map((n) => n.length)).toEqual([1, 2, 3, 3]);
    // COOKIE-9: each cookie well under 4 KiB, the three together under 6 KiB.
    const jar = browser.jar.header(`${APP}/auth/callback`);
    expect(jar.length).toBeLessThan(6 * 1024);
    for (const { page } of started)
      for (const c of page.headers.getSetCookie()) expect(c.length).toBeLessThan(4000);
    const oldest = names[0]![0]!;
    expect(names[3]).not.toContain(oldest);
    const fourth = started[3]!.page.headers.getSetCookie();
    expect(fourth.filter((c) => c.includes('Max-Age=0'))).toEqual([expect.stringMatching(`^${oldest}=;`)]);
    expect(fourth.filter((c) => c.includes('Max-Age=600'))).toHaveLength(1);
    // The evicted flow cannot finish; the newest ones still can.
    const lost = await browser.get(await authorize(h, browser, started[0]!.authorizeUrl.href));
    expect(lost.status).toBe(400);
    expect(errorCode(lost)).toBe('transaction_missing');
    const kept = await browser.get(await authorize(h, browser, started[1]!.authorizeUrl.href));
    expect(kept.status, kept.body).toBe(303);
    expect(kept.headers.get('location')).toBe('/tab1');
  });

  it('drops transaction cookies that no longer open instead of counting them', async () => {
    const h = createHarness(gitlab);
    const response = await h.labgate.handle(
      new Request(`${APP}/auth/login`, {
        headers: { cookie: 'labgate-tx-AAAAAAAAAAAAAAAA=garbage; labgate-tx-BBBBBBBBBBBBBBBB=x' },
      }),
    );
    const cookies = response!.headers.getSetCookie();
    expect(cookies).toContain('labgate-tx-AAAAAAAAAAAAAAAA=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0');
    expect(cookies).toContain('labgate-tx-BBBBBBBBBBBBBBBB=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0');
  });
});

describe('the callback refuses', () => {
  it('an expired transaction (after 10 minutes) with 400 transaction_missing', async () => {
    const h = createHarness(gitlab);
    const browser = h.browser();
    const { authorizeUrl } = await login(h, browser);
    const callbackUrl = await authorize(h, browser, authorizeUrl.href);
    h.clock.advance(601);
    const page = await browser.get(callbackUrl);
    expect(page.status).toBe(400);
    expect(errorCode(page)).toBe('transaction_missing');
    expect(page.body).toContain('This sign-in link expired');
    expect(
      page.headers.getSetCookie().some((c) => c.startsWith('labgate-tx-') && c.includes('Max-Age=0')),
    ).toBe(true);
    expect(codeExchanges(gitlab)).toBe(0);
  });

  it('nothing within the 10 minutes', async () => {
    const h = createHarness(gitlab);
    const browser = h.browser();
    const { authorizeUrl } = await login(h, browser);
    const callbackUrl = await authorize(h, browser, authorizeUrl.href);
    h.clock.advance(540);
    gitlab.control.advanceClock(540);
    const page = await browser.get(callbackUrl);
    expect(page.status, page.body).toBe(303);
  });

  it('a replayed callback (same URL, same cookie) without a second token request', async () => {
    const h = createHarness(gitlab);
    const browser = h.browser();
    const { authorizeUrl } = await login(h, browser);
    const callbackUrl = await authorize(h, browser, authorizeUrl.href);
    const cookie = browser.jar.header(callbackUrl);
    const first = await h.labgate.handle(callbackRequest(callbackUrl, cookie));
    expect(first!.status).toBe(303);
    // The transaction cookie is deleted by the first answer (COOKIE-2).
    expect(
      first!.headers.getSetCookie().some((c) => c.startsWith('labgate-tx-') && c.includes('Max-Age=0')),
    ).toBe(true);
    const again = await h.labgate.handle(callbackRequest(callbackUrl, cookie));
    expect(again!.status).toBe(400);
    expect(errorCode({ body: await again!.text() })).toBe('transaction_invalid');
    expect(sessionSetCookie(again!.headers)).toBeUndefined();
    expect(codeExchanges(gitlab)).toBe(1);
  });

  it('a state from another browser’s sign-in (login CSRF), and leaves that sign-in usable', async () => {
    const h = createHarness(gitlab);
    const victim = h.browser();
    const attacker = h.browser();
    await login(h, victim); // the victim has a transaction of their own
    const { authorizeUrl } = await login(h, attacker);
    const attackerCallback = await authorize(h, attacker, authorizeUrl.href, { user: 'bob' });
    const page = await victim.get(attackerCallback);
    expect(page.status).toBe(400);
    expect(errorCode(page)).toBe('transaction_missing');
    expect(sessionSetCookie(page.headers)).toBeUndefined();
    expect(codeExchanges(gitlab)).toBe(0);
    // A callback with no cookie at all is refused the same way.
    const bare = await h.labgate.handle(callbackRequest(attackerCallback, null));
    expect(bare!.status).toBe(400);
    // The attacker's own flow was not burnt by the refused attempts.
    expect((await attacker.get(attackerCallback)).status).toBe(303);
  });

  it('a transaction cookie tampered with or moved to another state', async () => {
    const h = createHarness(gitlab);
    const browser = h.browser();
    const { authorizeUrl } = await login(h, browser);
    const callbackUrl = await authorize(h, browser, authorizeUrl.href);
    const [name, value] = browser.jar.header(callbackUrl).split('=') as [string, string];
    const flipped = `${value.slice(0, 30)}${value[30] === 'A' ? 'B' : 'A'}${value.slice(31)}`;
    const tampered = await h.labgate.handle(callbackRequest(callbackUrl, `${name}=${flipped}`));
    expect(tampered!.status).toBe(400);
    expect(errorCode({ body: await tampered!.text() })).toBe('transaction_invalid');
    // The same sealed value under another flow's cookie name does not open (the name is bound in).
    const other = await login(h, h.browser());
    const otherCallback = `${CALLBACK}?code=x&state=${other.authorizeUrl.searchParams.get('state')}`;
    const otherName = other.page.headers.getSetCookie()[0]!.split('=')[0]!;
    const moved = await h.labgate.handle(callbackRequest(otherCallback, `${otherName}=${value}`));
    expect(moved!.status).toBe(400);
    expect(errorCode({ body: await moved!.text() })).toBe('transaction_invalid');
    expect(codeExchanges(gitlab)).toBe(0);
  });

  it('a transaction cookie sent twice', async () => {
    const h = createHarness(gitlab);
    const browser = h.browser();
    const { authorizeUrl } = await login(h, browser);
    const callbackUrl = await authorize(h, browser, authorizeUrl.href);
    const cookie = browser.jar.header(callbackUrl);
    const response = await h.labgate.handle(callbackRequest(callbackUrl, `${cookie}; ${cookie}`));
    expect(response!.status).toBe(400);
    expect(codeExchanges(gitlab)).toBe(0);
  });

  describe('malformed parameters before any token request', () => {
    let h: Harness;
    let browser: ReturnType<Harness['browser']>;
    let state: string;
    let code: string;
    beforeEach(async () => {
      h = createHarness(gitlab);
      browser = h.browser();
      const { authorizeUrl } = await login(h, browser);
      const params = new URL(await authorize(h, browser, authorizeUrl.href)).searchParams;
      state = params.get('state')!;
      code = params.get('code')!;
      expect(state).toBe(authorizeUrl.searchParams.get('state'));
    });

    const cases: [string, () => string, string][] = [
      ['no state', () => `code=${code}`, 'transaction_invalid'],
      ['an empty state', () => `code=${code}&state=`, 'transaction_invalid'],
      ['no code', () => `state=${state}`, 'callback_invalid'],
      ['an empty code', () => `state=${state}&code=`, 'callback_invalid'],
      ['state=a&state=b', () => `code=${code}&state=${state}&state=other`, 'callback_invalid'],
      ['the same state twice', () => `code=${code}&state=${state}&state=${state}`, 'callback_invalid'],
      ['two codes', () => `code=${code}&code=${code}x&state=${state}`, 'callback_invalid'],
      [
        'two iss',
        () => `code=${code}&state=${state}&iss=${gitlab.url}&iss=${gitlab.url}`,
        'callback_invalid',
      ],
      ['two errors', () => `error=a&error=b&state=${state}`, 'callback_invalid'],
      ['a code over 1 KiB', () => `code=${'c'.repeat(1025)}&state=${state}`, 'callback_invalid'],
      ['a state over 512 bytes', () => `code=${code}&state=${'s'.repeat(513)}`, 'callback_invalid'],
      ['a URL over 8 KiB', () => `code=${code}&state=${state}&pad=${'p'.repeat(8200)}`, 'callback_invalid'],
      ['a control character', () => `code=${code}%00&state=${state}`, 'callback_invalid'],
      ['a newline in state', () => `code=${code}&state=${state}%0A`, 'callback_invalid'],
      [
        'an iss of another issuer',
        () => `code=${code}&state=${state}&iss=https%3A%2F%2Fevil.example`,
        'callback_invalid',
      ],
      [
        'an iss with a trailing slash',
        () => `code=${code}&state=${state}&iss=${encodeURIComponent(`${gitlab.url}/`)}`,
        'callback_invalid',
      ],
      [
        'a code and an error together',
        () => `code=${code}&error=server_error&state=${state}`,
        'authorization_failed',
      ],
      [
        'an error other than access_denied',
        () => `error=invalid_scope&state=${state}`,
        'authorization_failed',
      ],
    ];
    for (const [name, query, code_] of cases) {
      it(`${name} → 400 ${code_}`, async () => {
        const page = await browser.get(`${CALLBACK}?${query()}`);
        expect(page.status, page.body).toBe(400);
        expect(errorCode(page)).toBe(code_);
        expect(page.headers.get('cache-control')).toBe('no-store');
        expect(page.headers.get('referrer-policy')).toBe('no-referrer');
        expect(sessionSetCookie(page.headers)).toBeUndefined();
        expect(codeExchanges(gitlab)).toBe(0);
      });
    }

    it('accepts an iss equal to the issuer', async () => {
      const page = await browser.get(
        `${CALLBACK}?code=${code}&state=${state}&iss=${encodeURIComponent(gitlab.url)}`,
      );
      expect(page.status, page.body).toBe(303);
    });

    it('ignores a fragment', async () => {
      const page = await browser.get(`${CALLBACK}?code=${code}&state=${state}#access_token=injected`);
      expect(page.status, page.body).toBe(303);
    });
  });

  it('the user’s Deny with 403 access_denied, and never shows GitLab’s error text or error_uri', async () => {
    const h = createHarness(gitlab);
    const browser = h.browser();
    const { authorizeUrl } = await login(h, browser);
    const callbackUrl = await authorize(h, browser, authorizeUrl.href, { deny: true });
    expect(new URL(callbackUrl).searchParams.get('error')).toBe('access_denied');
    const decorated = `${callbackUrl}&error_uri=https%3A%2F%2Fevil.example%2Fhelp`.replace(
      /error_description=[^&]*/,
      'error_description=%3Cscript%3Ealert(1)%3C%2Fscript%3E',
    );
    const page = await browser.get(decorated);
    expect(page.status).toBe(403);
    expect(errorCode(page)).toBe('access_denied');
    expect(page.body).toContain('GitLab refused access');
    expect(page.body).not.toContain('<script>alert');
    expect(page.body).not.toContain('evil.example');
    expect(page.body).not.toMatch(/<script|src=|https?:\/\//i);
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
    // CALLBACK-2: the state is spent and the transaction cookie deleted even though the answer was an error.
    expect(
      page.headers.getSetCookie().some((c) => c.startsWith('labgate-tx-') && c.includes('Max-Age=0')),
    ).toBe(true);
    expect(codeExchanges(gitlab)).toBe(0);
  });

  it('POST with 405 (CALLBACK-6)', async () => {
    const h = createHarness(gitlab);
    const response = await h.labgate.handle(
      new Request(`${CALLBACK}?code=a&state=b`, { method: 'POST', body: 'code=a&state=b' }),
    );
    expect(response!.status).toBe(405);
    expect(response!.headers.get('allow')).toMatch(/GET/);
    expect(response!.headers.get('allow')).not.toMatch(/POST/);
  });
});

describe('accounts GitLab will not sign in', () => {
  it('a blocked user never reaches the callback', async () => {
    const h = createHarness(gitlab);
    const browser = h.browser();
    const { authorizeUrl } = await login(h, browser);
    const { passwordOf } = await import('../emulator/browser.js');
    const outcome = await browser.signInAndAuthorize({
      url: gitlab.url,
      authorizeUrl: authorizeUrl.href,
      login: 'dave',
      password: passwordOf(gitlab, 'dave'),
    });
    expect(outcome.kind).toBe('page');
    expect(outcome.page.body).toContain('blocked');
    expect(h.responses.filter((r) => r.url.includes('/auth/callback'))).toHaveLength(0);
  });

  it('a user blocked between consent and callback gets 403 account_unavailable and no session', async () => {
    const h = createHarness(gitlab);
    const browser = h.browser();
    const { authorizeUrl } = await login(h, browser);
    const callbackUrl = await authorize(h, browser, authorizeUrl.href, { user: 'bob' });
    gitlab.control.blockUser('bob');
    const page = await browser.get(callbackUrl);
    expect(page.status).toBe(403);
    expect(errorCode(page)).toBe('account_unavailable');
    expect(sessionSetCookie(page.headers)).toBeUndefined();
    expect(gitlab.control.requests({ path: '/oauth/userinfo' }).map((r) => r.status)).toEqual([401]);
  });

  it('an unconfirmed user is stopped at GitLab', async () => {
    const h = createHarness(gitlab);
    const browser = h.browser();
    const { authorizeUrl } = await login(h, browser);
    const { passwordOf } = await import('../emulator/browser.js');
    const outcome = await browser.signInAndAuthorize({
      url: gitlab.url,
      authorizeUrl: authorizeUrl.href,
      login: 'frank',
      password: passwordOf(gitlab, 'frank'),
    });
    expect(outcome.kind).toBe('page');
    expect(codeExchanges(gitlab)).toBe(0);
  });
});

describe('returnTo', () => {
  const hostile = [
    '//evil.example',
    'https://evil.example',
    '/\\evil.example',
    '/%2F%2Fevil.example',
    '/\t/evil',
    'javascript:alert(1)',
    '/../x',
    '\\\\evil.example',
    '/%5Cevil.example',
    'http:/evil.example',
    '/.//evil.example',
    '/%2e//evil.example',
  ];
  it.each(hostile)('%j ends at /', async (value) => {
    const h = createHarness(gitlab);
    const { callback } = await signIn(h, { returnTo: value });
    expect(callback.status, callback.body).toBe(303);
    expect(callback.headers.get('location')).toBe('/');
  });

  it('keeps a same-origin path with its query', async () => {
    const h = createHarness(gitlab);
    const { callback } = await signIn(h, { returnTo: '/projects/acme%2Fapp?sort=asc' });
    expect(callback.headers.get('location')).toBe('/projects/acme%2Fapp?sort=asc');
  });

  it('signInUrl only builds same-origin targets', () => {
    const h = createHarness(gitlab);
    expect(h.labgate.signInUrl('/me')).toBe('/auth/login?returnTo=%2Fme');
    expect(h.labgate.signInUrl('//evil.example')).toBe('/auth/login');
    expect(h.labgate.signInUrl()).toBe('/auth/login');
  });
});

describe('the ID token', () => {
  /** labgate whose token responses get their ID token replaced by `swap()`. */
  function swapping(swap: () => string | undefined) {
    return createHarness(gitlab, {
      intercept: async (url, response) => {
        if (!url.endsWith('/oauth/token')) return response;
        const replacement = swap();
        return replacement === undefined
          ? response
          : rewriteJson(response, (b) => ({ ...b, id_token: replacement }));
      },
    });
  }

  async function refused(h: Harness, options: { user?: string } = {}) {
    const { callback } = await signIn(h, options);
    expect(callback.status, callback.body).toBe(502);
    expect(errorCode(callback)).toBe('id_token_invalid');
    expect(sessionSetCookie(callback.headers)).toBeUndefined();
    // IDTOKEN-5: no token is used before the ID token passed: no userinfo, no API call.
    expect(gitlab.control.requests({ path: '/oauth/userinfo' })).toHaveLength(0);
    expect(gitlab.control.requests({ path: '/api/v4/user' })).toHaveLength(0);
  }

  it('with another nonce is refused (IDTOKEN-5)', async () => {
    const { tokens } = await codeFlow(gitlab, {
      nonce: 'a-nonce-of-another-login',
      scope: 'openid profile email',
    });
    gitlab.control.clearRequests();
    await refused(swapping(() => tokens.id_token));
  });

  it('without a nonce is refused (IDTOKEN-5)', async () => {
    const { tokens } = await codeFlow(gitlab, { scope: 'openid profile email' });
    gitlab.control.clearRequests();
    await refused(swapping(() => tokens.id_token));
  });

  it('replayed from an earlier sign-in of labgate is refused (IDTOKEN-5)', async () => {
    let captured: string | undefined;
    let replay = false;
    const h = createHarness(gitlab, {
      intercept: async (url, response) => {
        if (!url.endsWith('/oauth/token')) return response;
        if (replay) return rewriteJson(response, (b) => ({ ...b, id_token: captured }));
        captured = ((await response.clone().json()) as { id_token: string }).id_token;
        return response;
      },
    });
    expect((await signIn(h)).callback.status).toBe(303);
    replay = true;
    gitlab.control.clearRequests();
    await refused(h);
  });

  it('issued to another client (wrong aud) is refused (IDTOKEN-3)', async () => {
    let nonce = '';
    let other: string | undefined;
    const h = swapping(() => other);
    const browser = h.browser();
    const { authorizeUrl } = await login(h, browser);
    nonce = authorizeUrl.searchParams.get('nonce')!;
    const callbackUrl = await authorize(h, browser, authorizeUrl.href);
    // The public demo app gets an ID token for the same user with the same nonce.
    other = (await codeFlow(gitlab, { app: 1, nonce, scope: 'openid profile email' })).tokens.id_token;
    gitlab.control.clearRequests();
    const page = await browser.get(callbackUrl);
    expect(page.status).toBe(502);
    expect(errorCode(page)).toBe('id_token_invalid');
    expect(gitlab.control.requests({ path: '/oauth/userinfo' })).toHaveLength(0);
  });

  it('signed by a key GitLab never published is refused (IDTOKEN-1)', async () => {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    let forged: string | undefined;
    const h = createHarness(gitlab, {
      intercept: async (url, response) => {
        if (!url.endsWith('/oauth/token')) return response;
        const body = (await response.clone().json()) as { id_token: string };
        const [header, payload] = body.id_token.split('.');
        const claims = JSON.parse(Buffer.from(payload!, 'base64url').toString());
        const { kid } = JSON.parse(Buffer.from(header!, 'base64url').toString());
        forged = await new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid }).sign(privateKey);
        return rewriteJson(response, (b) => ({ ...b, id_token: forged }));
      },
    });
    await refused(h);
    expect(forged).toBeDefined();
  });

  it('with alg none or HS256 keyed with the client secret is refused (IDTOKEN-1)', async () => {
    for (const alg of ['none', 'HS256'] as const) {
      gitlab.control.reset();
      const h = createHarness(gitlab, {
        intercept: async (url, response) => {
          if (!url.endsWith('/oauth/token')) return response;
          const body = (await response.clone().json()) as { id_token: string };
          const claims = JSON.parse(Buffer.from(body.id_token.split('.')[1]!, 'base64url').toString());
          const token =
            alg === 'none'
              ? `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.`
              : await new SignJWT(claims)
                  .setProtectedHeader({ alg: 'HS256' })
                  .sign(new TextEncoder().encode(gitlab.applications[0]!.secret));
          return rewriteJson(response, (b) => ({ ...b, id_token: token }));
        },
      });
      const { callback } = await signIn(h);
      expect(callback.status, alg).toBe(502);
      expect(sessionSetCookie(callback.headers)).toBeUndefined();
    }
  });

  it('as a JWE (5 parts) is refused (IDTOKEN-1)', async () => {
    const h = createHarness(gitlab, {
      intercept: async (url, response) =>
        url.endsWith('/oauth/token')
          ? rewriteJson(response, (b) => ({ ...b, id_token: 'eyJhbGciOiJkaXIifQ.a.b.c.d' }))
          : response,
    });
    const { callback } = await signIn(h);
    expect(callback.status).toBe(502);
    expect(errorCode(callback)).toBe('id_token_invalid');
    expect(sessionSetCookie(callback.headers)).toBeUndefined();
  });

  it('missing from the token response is refused (EXCHANGE-3)', async () => {
    const h = createHarness(gitlab, {
      intercept: async (url, response) =>
        url.endsWith('/oauth/token')
          ? rewriteJson(response, ({ id_token: _drop, ...rest }) => rest)
          : response,
    });
    const { callback } = await signIn(h);
    expect(callback.status).toBe(502);
    expect(sessionSetCookie(callback.headers)).toBeUndefined();
  });

  it('signed by a key rotated in mid-flow validates once the key set may be refetched (IDTOKEN-9)', async () => {
    const clock = new Clock();
    const h = createHarness(gitlab, { clock });
    expect((await signIn(h)).callback.status).toBe(303);
    const keySets = () => gitlab.control.requests({ path: '/oauth/discovery/keys' }).length;
    expect(keySets()).toBe(1);
    // A second sign-in within the cache's life does not fetch the keys again.
    expect((await signIn(h)).callback.status).toBe(303);
    expect(keySets()).toBe(1);

    // GitLab rotates its key between the authorization and the token request…
    const browser = h.browser();
    let started = await login(h, browser);
    let callbackUrl = await authorize(h, browser, started.authorizeUrl.href);
    gitlab.control.rotateSigningKey({ retire: true });
    // …and within a minute of the last fetch labgate does not refetch: it fails closed.
    const early = await browser.get(callbackUrl);
    expect(early.status).toBe(502);
    expect(errorCode(early)).toBe('id_token_invalid');
    expect(keySets()).toBe(1);

    // A minute later an unknown kid refetches the keys once, and the new key verifies.
    clock.advance(61);
    gitlab.control.advanceClock(61);
    started = await login(h, browser);
    callbackUrl = await authorize(h, browser, started.authorizeUrl.href);
    gitlab.control.rotateSigningKey({ retire: true });
    const late = await browser.get(callbackUrl);
    expect(late.status, late.body).toBe(303);
    expect(keySets()).toBe(2);
  });

  it('is verified with the keys GitLab publishes, skipping unusable entries (IDTOKEN-9)', async () => {
    const h = createHarness(gitlab, {
      intercept: async (url, response) =>
        url.endsWith('/oauth/discovery/keys')
          ? rewriteJson(response, (b) => ({
              keys: [
                { kty: 'oct', k: 'c2VjcmV0', kid: 'symmetric' },
                { kty: 'RSA', use: 'enc', kid: 'encryption', n: 'AQAB', e: 'AQAB' },
                'not a key',
                ...(b['keys'] as unknown[]),
              ],
            }))
          : response,
    });
    expect((await signIn(h)).callback.status).toBe(303);
  });

  it('cannot be checked while the key set is unreachable: 502, no session (IDTOKEN-9)', async () => {
    gitlab.control.injectFault({ path: '/oauth/discovery/keys', status: 500 });
    const h = createHarness(gitlab);
    const { callback } = await signIn(h);
    expect(callback.status).toBe(502);
    expect(sessionSetCookie(callback.headers)).toBeUndefined();
  });
});

describe('mix-up defences', () => {
  it('requires iss when GitLab advertises RFC 9207 support (ISSUER-4)', async () => {
    const h = createHarness(gitlab, {
      intercept: async (url, response) =>
        url.endsWith('/.well-known/openid-configuration')
          ? rewriteJson(response, (b) => ({ ...b, authorization_response_iss_parameter_supported: true }))
          : response,
    });
    const browser = h.browser();
    const { authorizeUrl } = await login(h, browser);
    const callbackUrl = await authorize(h, browser, authorizeUrl.href);
    const cookie = browser.jar.header(callbackUrl);
    const without = await h.labgate.handle(callbackRequest(callbackUrl, cookie));
    expect(without!.status).toBe(400);
    expect(codeExchanges(gitlab)).toBe(0);
    // The first attempt spent the state (CALLBACK-2), so a correct response needs a new flow.
    const next = await login(h, browser);
    const good = await authorize(h, browser, next.authorizeUrl.href);
    const withIss = await browser.get(`${good}&iss=${encodeURIComponent(gitlab.url)}`);
    expect(withIss.status, withIss.body).toBe(303);
  });

  it('refuses a transaction that another GitLab started, with no token request at either (ISSUER-3)', async () => {
    const other = await startEmulator();
    try {
      const secret = createHarness(gitlab).secret;
      const a = createHarness(gitlab, { secret });
      const b = createHarness(other, { secret, clientId: gitlab.applications[0]!.uid });
      const browser = a.browser();
      const { authorizeUrl } = await login(a, browser);
      const callbackUrl = await authorize(a, browser, authorizeUrl.href);
      const response = await b.labgate.handle(callbackRequest(callbackUrl, browser.jar.header(callbackUrl)));
      expect(response!.status).toBe(400);
      expect(errorCode({ body: await response!.text() })).toBe('transaction_invalid');
      expect(codeExchanges(gitlab)).toBe(0);
      expect(codeExchanges(other)).toBe(0);
    } finally {
      await other.close();
    }
  });

  it('refuses a discovery document naming another issuer, even by a trailing slash (ISSUER-1)', async () => {
    for (const issuer of [`${gitlab.url}/`, 'https://evil.example']) {
      const h = createHarness(gitlab, {
        intercept: async (url, response) =>
          url.endsWith('/.well-known/openid-configuration')
            ? rewriteJson(response, (b) => ({ ...b, issuer }))
            : response,
      });
      const response = await h.labgate.handle(new Request(`${APP}/auth/login`));
      expect(response!.status, issuer).toBe(502);
      expect(errorCode({ body: await response!.text() })).toBe('discovery_failed');
    }
  });

  it('refuses endpoints off the issuer’s origin (ISSUER-2)', async () => {
    for (const key of ['authorization_endpoint', 'token_endpoint', 'userinfo_endpoint', 'jwks_uri']) {
      const h = createHarness(gitlab, {
        intercept: async (url, response) =>
          url.endsWith('/.well-known/openid-configuration')
            ? rewriteJson(response, (b) => ({ ...b, [key]: 'https://evil.example/x' }))
            : response,
      });
      const response = await h.labgate.handle(new Request(`${APP}/auth/login`));
      expect(response!.status, key).toBe(502);
    }
  });
});

describe('the token and userinfo responses', () => {
  function tokenRewrite(change: (b: Record<string, unknown>) => Record<string, unknown>) {
    return createHarness(gitlab, {
      intercept: async (url, response) =>
        url.endsWith('/oauth/token') ? rewriteJson(response, change) : response,
    });
  }

  const bad: [string, (b: Record<string, unknown>) => Record<string, unknown>][] = [
    ['an empty access token', (b) => ({ ...b, access_token: '' })],
    ['no access token', ({ access_token: _a, ...b }) => b],
    ['token_type mac', (b) => ({ ...b, token_type: 'mac' })],
    ['token_type DPoP', (b) => ({ ...b, token_type: 'DPoP' })],
    ['expires_in "abc"', (b) => ({ ...b, expires_in: 'abc' })],
    ['a granted scope without openid', (b) => ({ ...b, scope: 'profile email' })],
    ['an error member with status 200', () => ({ error: 'invalid_grant' })],
  ];
  it.each(bad)('with %s is refused with no session (EXCHANGE-3)', async (_name, change) => {
    const { callback } = await signIn(tokenRewrite(change));
    expect(callback.status).toBeGreaterThanOrEqual(400);
    expect(callback.status).toBeLessThan(600);
    expect(callback.status).not.toBe(500);
    expect(sessionSetCookie(callback.headers)).toBeUndefined();
  });

  it('a code GitLab refuses (already redeemed) → 400 token_exchange_failed, not a blocked account', async () => {
    const h = createHarness(gitlab, {
      intercept: async (url, response, init) => {
        if (!url.endsWith('/oauth/token')) return response;
        await response.body?.cancel();
        return fetch(url, init); // the same code again: GitLab's own invalid_grant, with its challenge
      },
    });
    const { callback } = await signIn(h);
    expect(callback.status).toBe(400);
    expect(errorCode(callback)).toBe('token_exchange_failed');
    expect(sessionSetCookie(callback.headers)).toBeUndefined();
  });

  it('accepts bearer in any case and ignores unknown members (EXCHANGE-3)', async () => {
    const { callback } = await signIn(tokenRewrite((b) => ({ ...b, token_type: 'BEARER', extra: { x: 1 } })));
    expect(callback.status, callback.body).toBe(303);
  });

  it('userinfo naming another subject fails the sign-in (USERINFO-1)', async () => {
    const h = createHarness(gitlab, {
      intercept: async (url, response) =>
        url.endsWith('/oauth/userinfo') ? rewriteJson(response, (b) => ({ ...b, sub: '2' })) : response,
    });
    const { callback } = await signIn(h);
    expect(callback.status).toBe(502);
    expect(sessionSetCookie(callback.headers)).toBeUndefined();
  });

  it('sends the access token only in the Authorization header (USERINFO-2)', async () => {
    const calls: { url: string; authorization: string | null }[] = [];
    const h = createHarness(gitlab, {
      scopes: 'openid profile email read_user',
      intercept: async (url, response, init) => {
        calls.push({ url, authorization: new Headers(init?.headers).get('authorization') });
        return response;
      },
    });
    expect((await signIn(h)).callback.status).toBe(303);
    const resourceCalls = calls.filter(
      (c) => c.url.endsWith('/oauth/userinfo') || c.url.includes('/api/v4/'),
    );
    expect(resourceCalls.map((c) => new URL(c.url).pathname)).toEqual(['/oauth/userinfo', '/api/v4/user']);
    for (const call of resourceCalls) {
      expect(call.authorization).toMatch(/^Bearer [0-9a-f]{64}$/);
      expect(new URL(call.url).search).toBe('');
    }
  });

  it('keeps groups only when GitLab sends a list of short strings (USERINFO-3)', async () => {
    const h = createHarness(gitlab, {
      intercept: async (url, response) =>
        url.endsWith('/oauth/userinfo')
          ? rewriteJson(response, (b) => ({ ...b, groups: ['acme', 42] }))
          : response,
    });
    const { browser, callback } = await signIn(h);
    expect(callback.status).toBe(303);
    const me = JSON.parse((await browser.get(`${APP}/auth/session`)).body);
    expect(me.user.groups).toEqual([]);
  });
});

describe('sessions from sign-in', () => {
  it('store the GitLab tokens sealed: no token in clear in the store (TOKEN-1)', async () => {
    const h = createHarness(gitlab);
    const { callback } = await signIn(h);
    const cookie = sessionSetCookie(callback.headers)!.split(';')[0]!;
    const session = await h.labgate.sessionOf(cookie);
    const accessToken = await h.labgate.getAccessToken(session!);
    const record = await h.labgate.store.getSession(session!.id);
    const ring = await KeyRing.fromSecret(h.secret);
    const opened = await ring.open(record!.tokens, 'token', record!.id);
    const tokens = JSON.parse(opened!.plaintext) as { accessToken: string; refreshToken: string };
    expect(tokens.accessToken).toBe(accessToken);
    const stored = JSON.stringify(record);
    expect(stored).not.toContain(tokens.accessToken);
    expect(stored).not.toContain(tokens.refreshToken);
  });
});
