/**
 * Sessions (docs/security.md, the SESSION and COOKIE rules): what the cookie and the store hold,
 * hostile cookies, rotation at sign-in, sign-out with CSRF protection and token revocation, cookie
 * mode, token refresh, the cache bound, idle and absolute expiry, secret rotation and a failing store.
 */
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  KeyRing,
  type Labgate,
  LabgateError,
  MemoryStore,
  type Session,
  type Store,
} from '../../src/core/index.js';
import { type RunningEmulator, startEmulator } from '../../src/emulator/index.js';
import {
  APP,
  Clock,
  createHarness,
  errorCode,
  type Harness,
  type HarnessOptions,
  login,
  rewriteJson,
  sessionSetCookie,
  signIn,
  testSecret,
} from './harness.js';

let gitlab: RunningEmulator;
beforeAll(async () => {
  gitlab = await startEmulator();
});
afterAll(() => gitlab.close());
beforeEach(() => gitlab.control.reset());

/** Signs in and returns the `name=value` of the session cookie. */
async function signedIn(
  h: Harness,
  user = 'alice',
): Promise<{ cookie: string; browser: ReturnType<Harness['browser']> }> {
  const { callback, browser } = await signIn(h, { user });
  expect(callback.status, callback.body).toBe(303);
  const name = h.labgate.options.secure ? '__Host-labgate' : 'labgate';
  return { cookie: sessionSetCookie(callback.headers, name)!.split(';')[0]!, browser };
}

function sessionOf(labgate: Labgate, cookie: string): Promise<Session | null> {
  return labgate.getSession(new Request(`${APP}/`, { headers: { cookie } }));
}

async function tokenInfoStatus(accessToken: string): Promise<number> {
  const response = await fetch(`${gitlab.url}/oauth/token/info`, {
    headers: { authorization: `Bearer ${accessToken}` },
  });
  await response.body?.cancel();
  return response.status;
}

function logout(h: Harness, cookie: string, headers: Record<string, string> = {}, query = '') {
  return h.labgate.handle(
    new Request(`${APP}/auth/logout${query}`, { method: 'POST', headers: { cookie, ...headers } }),
  );
}

describe('hostile cookies are no session, never an error', () => {
  let h: Harness;
  let real: string;
  beforeAll(async () => {
    gitlab.control.reset();
    h = createHarness(gitlab);
    real = (await signedIn(h)).cookie;
  });

  const value = () => real.slice('labgate='.length);
  const [id, secret] = [() => value().split('.')[0]!, () => value().split('.')[1]!];
  const cases: [string, () => string][] = [
    ['no value', () => 'labgate='],
    ['garbage', () => 'labgate=garbage'],
    ['a dot only', () => 'labgate=.'],
    ['truncated', () => real.slice(0, -5)],
    ['the id alone', () => `labgate=${id()}`],
    ['a forged secret', () => `labgate=${id()}.${'A'.repeat(43)}`],
    [
      'a secret one character off',
      () => `labgate=${id()}.${secret().slice(0, -1)}${secret().endsWith('A') ? 'B' : 'A'}`,
    ],
    ['an unknown id', () => `labgate=${'B'.repeat(22)}.${secret()}`],
    ['a third part', () => `${real}.extra`],
    ['oversized (64 KiB)', () => `labgate=${'x'.repeat(64 * 1024)}`],
    ['DEL and non-ASCII bytes', () => 'labgate=\u007f\u00ff\u00e9.\u00e9'],
    ['quoted', () => `labgate="${value()}"`],
    ['percent-encoded', () => `labgate=${encodeURIComponent(value()).replace('.', '%2E')}`],
    ['a malformed header', () => ';;;=;labgate;==labgate=='],
    ['the same cookie twice (COOKIE-6)', () => `${real}; ${real}`],
    [
      'a tossed duplicate before the real one (COOKIE-6)',
      () => `labgate=${'C'.repeat(22)}.${'D'.repeat(43)}; ${real}`,
    ],
    ['the real one under another name', () => `labgate2=${value()}; xlabgate=${value()}`],
  ];
  it('the real cookie is a session (the baseline)', async () => {
    expect((await sessionOf(h.labgate, real))?.user.username).toBe('alice');
  });
  for (const [name, cookie] of cases) {
    it(name, async () => {
      await expect(sessionOf(h.labgate, cookie())).resolves.toBeNull();
      expect(await h.labgate.sessionOf(cookie())).toBeNull();
      const response = await h.labgate.handle(
        new Request(`${APP}/auth/session`, { headers: { cookie: cookie() } }),
      );
      expect(response!.status).toBe(401);
    });
  }
});

describe('the server-side session', () => {
  it('keeps only a SHA-256 hash of the cookie’s secret in the store', async () => {
    const h = createHarness(gitlab);
    const { cookie } = await signedIn(h);
    const [id, secret] = cookie.slice('labgate='.length).split('.') as [string, string];
    expect(secret).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const record = await h.labgate.store.getSession(id);
    expect(record!.id).toBe(id);
    expect(record!.identity).toBe(`${gitlab.url} 1`);
    expect(record!.secretHash).toBe(createHash('sha256').update(secret).digest('base64url'));
    const fields = JSON.stringify(record);
    expect(fields).not.toContain(secret);
    expect(Object.values(record!)).not.toContain(secret);
  });

  it('is a new session at every sign-in, even in the same browser', async () => {
    const h = createHarness(gitlab);
    const { cookie, browser } = await signedIn(h);
    const first = await sessionOf(h.labgate, cookie);
    const again = await signIn(h, { browser });
    const second = sessionSetCookie(again.callback.headers)!.split(';')[0]!;
    expect(second).not.toBe(cookie);
    expect((await sessionOf(h.labgate, second))!.id).not.toBe(first!.id);
    expect(second.split('.')[0]).not.toBe(cookie.split('.')[0]);
  });

  it('ends the session the browser had before signing in again (SESSION-2)', async () => {
    const h = createHarness(gitlab, { sessionCacheTtl: 0 });
    const { cookie, browser } = await signedIn(h);
    await signIn(h, { browser });
    expect(await sessionOf(h.labgate, cookie)).toBeNull();
  });

  it('ends after the idle timeout, is extended by use, and ends at the absolute limit (SESSION-3)', async () => {
    // Access re-checks are out of this test's way: it moves labgate's clock only, not GitLab's.
    const h = createHarness(gitlab, {
      sessionIdleTimeout: 3600,
      touchInterval: 60,
      sessionMaxAge: 4 * 3600,
      recheckInterval: 24 * 3600,
    });
    const { cookie } = await signedIn(h);
    h.clock.advance(3000);
    expect(await sessionOf(h.labgate, cookie)).not.toBeNull(); // touched: idle end moves to +6600
    h.clock.advance(3000);
    expect(await sessionOf(h.labgate, cookie)).not.toBeNull(); // +6000, touched again
    h.clock.advance(3000);
    expect(await sessionOf(h.labgate, cookie)).not.toBeNull(); // +9000
    h.clock.advance(3000);
    expect(await sessionOf(h.labgate, cookie)).not.toBeNull(); // +12000, before the 14400 limit
    h.clock.advance(2500);
    expect(await sessionOf(h.labgate, cookie)).toBeNull(); // +14500: past the absolute limit

    const idle = createHarness(gitlab, { sessionIdleTimeout: 3600 });
    const other = await signedIn(idle);
    idle.clock.advance(3601);
    expect(await sessionOf(idle.labgate, other.cookie)).toBeNull();
  });

  it('a store that fails makes getSession throw store_unavailable and pages answer 503, never 500', async () => {
    const broken = new MemoryStore();
    const h = createHarness(gitlab, { store: broken });
    const { cookie } = await signedIn(h);
    for (const method of ['getSession', 'setSession', 'add', 'put', 'get', 'touchSession'] as const) {
      (broken as unknown as Record<string, unknown>)[method] = () =>
        Promise.reject(new Error('ECONNREFUSED'));
    }
    const fresh = createHarness(gitlab, { store: broken as Store, secret: h.secret });
    await expect(sessionOf(fresh.labgate, cookie)).rejects.toMatchObject({ code: 'store_unavailable' });
    const page = await fresh.labgate.handle(new Request(`${APP}/auth/session`, { headers: { cookie } }));
    expect(page!.status).toBe(503);
    expect(await page!.text()).not.toContain('ECONNREFUSED');
  });
});

describe('sign-out', () => {
  it('with this site’s Origin: 303, session gone, cookie cleared, GitLab token revoked', async () => {
    const h = createHarness(gitlab);
    const { cookie } = await signedIn(h);
    const session = await sessionOf(h.labgate, cookie);
    const accessToken = await h.labgate.getAccessToken(session!);
    expect(await tokenInfoStatus(accessToken)).toBe(200);

    const response = await logout(h, cookie, { origin: APP }, '?returnTo=%2Fbye');
    expect(response!.status).toBe(303);
    expect(response!.headers.get('location')).toBe('/bye');
    expect(response!.headers.get('cache-control')).toBe('no-store');
    expect(response!.headers.getSetCookie()).toEqual(['labgate=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0']);
    expect(await sessionOf(h.labgate, cookie)).toBeNull();
    expect(await h.labgate.store.getSession(session!.id)).toBeNull();
    expect(gitlab.control.requests({ path: '/oauth/revoke' }).map((r) => r.status)).toEqual([200]);
    expect(await tokenInfoStatus(accessToken)).toBe(401);
  });

  it('with Sec-Fetch-Site: same-origin and no Origin is allowed', async () => {
    const h = createHarness(gitlab);
    const { cookie } = await signedIn(h);
    const response = await logout(h, cookie, { 'sec-fetch-site': 'same-origin' });
    expect(response!.status).toBe(303);
    expect(await sessionOf(h.labgate, cookie)).toBeNull();
  });

  it('from the confirmation page’s form, with returnTo in the body validated (REDIRECT-4)', async () => {
    const h = createHarness(gitlab);
    const { cookie } = await signedIn(h);
    const response = await h.labgate.handle(
      new Request(`${APP}/auth/logout`, {
        method: 'POST',
        headers: { cookie, origin: APP, 'content-type': 'application/x-www-form-urlencoded' },
        body: 'returnTo=%2F%2Fevil.example',
      }),
    );
    expect(response!.status).toBe(303);
    expect(response!.headers.get('location')).toBe('/');
  });

  const refused: [string, Record<string, string>][] = [
    ['no Origin and no Sec-Fetch-Site', {}],
    ['a foreign Origin', { origin: 'https://evil.example' }],
    ['Origin: null', { origin: 'null' }],
    ['an Origin on another port', { origin: 'http://127.0.0.1:3001' }],
    ['an Origin on https', { origin: 'https://127.0.0.1:3000' }],
    ['Sec-Fetch-Site: cross-site', { 'sec-fetch-site': 'cross-site' }],
    ['Sec-Fetch-Site: same-site (a sibling subdomain)', { 'sec-fetch-site': 'same-site' }],
    [
      'a foreign Origin with Sec-Fetch-Site: same-origin',
      { origin: 'https://evil.example', 'sec-fetch-site': 'same-origin' },
    ],
  ];
  for (const [name, headers] of refused) {
    it(`with ${name} → 403 csrf_rejected, still signed in`, async () => {
      const h = createHarness(gitlab);
      const { cookie } = await signedIn(h);
      const response = await logout(h, cookie, headers);
      expect(response!.status).toBe(403);
      expect(errorCode({ body: await response!.text() })).toBe('csrf_rejected');
      expect(response!.headers.getSetCookie()).toEqual([]);
      expect(await sessionOf(h.labgate, cookie)).not.toBeNull();
      expect(gitlab.control.requests({ path: '/oauth/revoke' })).toHaveLength(0);
    });
  }

  it('GET shows a confirmation page with a POST form and signs nobody out', async () => {
    const h = createHarness(gitlab);
    const { cookie, browser } = await signedIn(h);
    const page = await browser.get(`${APP}/auth/logout`);
    expect(page.status).toBe(200);
    expect(page.headers.get('cache-control')).toBe('no-store');
    expect(page.forms).toEqual([expect.objectContaining({ method: 'post', action: `${APP}/auth/logout` })]);
    expect(page.headers.getSetCookie()).toEqual([]);
    expect(await sessionOf(h.labgate, cookie)).not.toBeNull();
    // Submitting it from the page (the browser sends this site's Origin) signs out.
    const done = await browser.request(page.forms[0]!.action, { method: 'POST', headers: { origin: APP } });
    expect(done.status).toBe(303);
    expect(await sessionOf(h.labgate, cookie)).toBeNull();
  });

  it('other methods → 405', async () => {
    const h = createHarness(gitlab);
    const response = await h.labgate.handle(new Request(`${APP}/auth/logout`, { method: 'DELETE' }));
    expect(response!.status).toBe(405);
    expect(response!.headers.get('allow')).toContain('POST');
  });

  for (const [name, fault] of [
    ['down', { path: '/oauth/revoke', drop: true }],
    ['slow', { path: '/oauth/revoke', delayMs: 2000 }],
  ] as const) {
    it(`while GitLab is ${name} still signs out, quickly (TOKEN-6)`, async () => {
      const h = createHarness(gitlab, { requestTimeout: 300 });
      const { cookie } = await signedIn(h);
      gitlab.control.injectFault(fault);
      const started = performance.now();
      const response = await logout(h, cookie, { origin: APP });
      expect(performance.now() - started).toBeLessThan(1500);
      expect(response!.status).toBe(303);
      expect(await sessionOf(h.labgate, cookie)).toBeNull();
      expect(h.logs.some((l) => l.startsWith('warn ') && l.includes('revoking'))).toBe(true);
    });
  }

  it('without a session still answers 303 and clears the cookie', async () => {
    const h = createHarness(gitlab);
    const response = await logout(h, 'labgate=garbage', { origin: APP });
    expect(response!.status).toBe(303);
    expect(response!.headers.getSetCookie()[0]).toContain('Max-Age=0');
  });

  it('endSession ends a session from the app', async () => {
    const h = createHarness(gitlab);
    const { cookie } = await signedIn(h);
    await h.labgate.endSession((await sessionOf(h.labgate, cookie))!);
    expect(await sessionOf(h.labgate, cookie)).toBeNull();
  });
});

describe('cookie mode', () => {
  it('signs in with the whole session sealed in the cookie: no groups, no token in clear (SESSION-8, TOKEN-1)', async () => {
    const tokens: string[] = [];
    const h = createHarness(gitlab, {
      sessionMode: 'cookie',
      intercept: async (url, response) => {
        if (url.endsWith('/oauth/token')) {
          const body = (await response.clone().json()) as Record<string, string>;
          tokens.push(body['access_token']!, body['refresh_token']!);
        }
        return response;
      },
    });
    const { cookie, browser } = await signedIn(h);
    const value = cookie.slice('labgate='.length);
    expect(cookie.length).toBeLessThanOrEqual(4000);
    const ring = await KeyRing.fromSecret(h.secret);
    const payload = JSON.parse((await ring.open(value, 'session', 'labgate'))!.plaintext);
    expect(payload.user.username).toBe('alice');
    expect(payload.user.groups).toEqual([]);
    expect(tokens).toHaveLength(2);
    for (const token of tokens) {
      expect(value).not.toContain(token);
      expect(JSON.stringify(payload)).not.toContain(token);
    }
    // TOKEN-2: sealed with a fresh nonce each time: the same plaintext never seals the same.
    expect(await ring.seal('x', 'session')).not.toBe(await ring.seal('x', 'session'));
    const me = await browser.get(`${APP}/auth/session`);
    expect(me.status).toBe(200);
    expect(JSON.parse(me.body).user).toMatchObject({ sub: '1', username: 'alice', groups: [] });
    const session = (await sessionOf(h.labgate, cookie))!;
    expect(await h.labgate.store.getSession(session.id)).toBeNull(); // nothing server-side
    expect(await h.labgate.getAccessToken(session)).toBe(tokens[0]);
  });

  it('sign-out ends the session: the same cookie replayed afterwards is no session (SESSION-8)', async () => {
    const h = createHarness(gitlab, { sessionMode: 'cookie' });
    const { cookie } = await signedIn(h);
    expect((await logout(h, cookie, { origin: APP }))!.status).toBe(303);
    expect(await sessionOf(h.labgate, cookie)).toBeNull();
    const replay = await h.labgate.handle(new Request(`${APP}/auth/session`, { headers: { cookie } }));
    expect(replay!.status).toBe(401);
    // Another labgate instance sharing the store refuses it too.
    const other = createHarness(gitlab, { sessionMode: 'cookie', store: h.labgate.store, secret: h.secret });
    expect(await sessionOf(other.labgate, cookie)).toBeNull();
  });

  // sessions.ts #openCookie reads the sign-out tombstone with `.catch(() => null)`: while the store is
  // down, a signed-out cookie is a session again (fail open). Server mode fails closed
  // (store_unavailable). See the report; flip to `it` once fixed.
  it('a signed-out cookie stays signed out while the store is down (SESSION-8, fail closed)', async () => {
    const store = new MemoryStore();
    const h = createHarness(gitlab, { sessionMode: 'cookie', store, sessionCacheTtl: 0 });
    const { cookie } = await signedIn(h);
    expect((await logout(h, cookie, { origin: APP }))!.status).toBe(303);
    store.get = () => Promise.reject(new Error('ECONNREFUSED'));
    const outcome = await sessionOf(h.labgate, cookie).catch((error: unknown) => error);
    expect(outcome === null || (outcome as LabgateError).code === 'store_unavailable').toBe(true);
  });

  it('enforces the absolute expiry itself, whatever the browser keeps (SESSION-3)', async () => {
    const h = createHarness(gitlab, { sessionMode: 'cookie', sessionMaxAge: 3600 });
    const { cookie } = await signedIn(h);
    h.clock.advance(3599);
    expect(await sessionOf(h.labgate, cookie)).not.toBeNull();
    h.clock.advance(2);
    expect(await sessionOf(h.labgate, cookie)).toBeNull();
  });

  it('refuses a transaction cookie or a sealed token pasted in as the session (COOKIE-8)', async () => {
    const h = createHarness(gitlab, { sessionMode: 'cookie' });
    const { page } = await login(h, h.browser());
    const tx = page.headers.getSetCookie()[0]!.split(';')[0]!.split('=')[1]!;
    expect(await sessionOf(h.labgate, `labgate=${tx}`)).toBeNull();
    const ring = await KeyRing.fromSecret(h.secret);
    const now = h.clock.now();
    const payload = JSON.stringify({
      v: 1,
      id: 'x',
      userId: 'u',
      user: {},
      tokens: '',
      createdAt: now,
      expiresAt: 9e15,
    });
    expect(await sessionOf(h.labgate, `labgate=${await ring.seal(payload, 'token', 'labgate')}`)).toBeNull();
    expect(await sessionOf(h.labgate, `labgate=${await ring.seal(payload, 'session', 'other')}`)).toBeNull();
    // The same payload sealed for the session purpose and name does open: the purpose is what refused it.
    expect(
      await sessionOf(h.labgate, `labgate=${await ring.seal(payload, 'session', 'labgate')}`),
    ).not.toBeNull();
  });

  it('refuses a session too large for one cookie instead of chunking or truncating it (COOKIE-9)', async () => {
    const h = createHarness(gitlab, {
      sessionMode: 'cookie',
      intercept: async (url, response) =>
        url.endsWith('/oauth/userinfo')
          ? rewriteJson(response, (b) => ({ ...b, name: 'n'.repeat(5000) }))
          : response,
    });
    const { callback } = await signIn(h);
    expect(callback.status).toBe(503);
    expect(errorCode(callback)).toBe('store_unavailable');
    expect(callback.headers.getSetCookie().every((c) => c.length < 4096)).toBe(true);
    expect(sessionSetCookie(callback.headers)).toBeUndefined();
  });

  it('garbage, truncated and oversized cookies are no session', async () => {
    const h = createHarness(gitlab, { sessionMode: 'cookie' });
    const { cookie } = await signedIn(h);
    for (const bad of [
      'labgate=x',
      cookie.slice(0, -3),
      `labgate=${'A'.repeat(5000)}`,
      `${cookie}; ${cookie}`,
    ]) {
      await expect(sessionOf(h.labgate, bad)).resolves.toBeNull();
    }
  });
});

describe('GitLab tokens', () => {
  async function expire(h: Harness) {
    gitlab.control.advanceClock(7200);
    h.clock.advance(7200);
  }
  const refreshes = () =>
    gitlab.control.requests({ path: '/oauth/token', grantType: 'refresh_token' }).length;

  it('are refreshed when expired, and the rotated refresh token is used next time (TOKEN-4)', async () => {
    const h = createHarness(gitlab);
    const { cookie } = await signedIn(h);
    const before = await h.labgate.getAccessToken((await sessionOf(h.labgate, cookie))!);
    expect(await h.labgate.getAccessToken((await sessionOf(h.labgate, cookie))!)).toBe(before);
    expect(refreshes()).toBe(0);

    await expire(h);
    const session = (await sessionOf(h.labgate, cookie))!;
    const after = await h.labgate.getAccessToken(session);
    expect(after).not.toBe(before);
    expect(refreshes()).toBe(1);
    expect(await tokenInfoStatus(after)).toBe(200);
    expect(await tokenInfoStatus(before)).toBe(401);
    expect(await h.labgate.getAccessToken(session)).toBe(after);
    // The store holds the new tokens: a later request (cache expired) gets them without refreshing.
    h.clock.advance(10);
    expect(await h.labgate.getAccessToken((await sessionOf(h.labgate, cookie))!)).toBe(after);
    expect(refreshes()).toBe(1);

    await expire(h);
    const third = await h.labgate.getAccessToken((await sessionOf(h.labgate, cookie))!);
    expect(third).not.toBe(after);
    expect(refreshes()).toBe(2);
  });

  // TOKEN-5: GitLab (Doorkeeper) answers invalid_grant with a WWW-Authenticate challenge, so
  // oauth4webapi throws WWWAuthenticateChallengeError, which labgate.ts's getAccessToken does not
  // recognise (it checks ResponseBodyError only): the session survives a dead refresh token.
  // See the report for the fix; flip these two to `it` once fixed.
  it('refused with invalid_grant end the session (TOKEN-5)', async () => {
    const h = createHarness(gitlab);
    const { cookie } = await signedIn(h);
    const session = (await sessionOf(h.labgate, cookie))!;
    gitlab.control.revokeUserTokens('alice');
    await expire(h);
    const failure = await h.labgate.getAccessToken(session).catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(LabgateError);
    expect((failure as LabgateError).code).toBe('session_required');
    expect(await sessionOf(h.labgate, cookie)).toBeNull();
    expect(await h.labgate.store.getSession(session.id)).toBeNull();
    expect(refreshes()).toBe(1);
  });

  it('of a blocked user end the session at the next refresh', async () => {
    const h = createHarness(gitlab, { recheckInterval: 24 * 3600 });
    const { cookie } = await signedIn(h);
    const session = (await sessionOf(h.labgate, cookie))!;
    gitlab.control.blockUser('alice');
    await expire(h);
    await expect(h.labgate.getAccessToken(session)).rejects.toMatchObject({ code: 'session_required' });
    expect(await sessionOf(h.labgate, cookie)).toBeNull();
  });

  it('of a blocked user end the session at the next access re-check, without a refresh', async () => {
    const h = createHarness(gitlab, { recheckInterval: 60 });
    const { cookie } = await signedIn(h);
    gitlab.control.blockUser('alice');
    h.clock.advance(61);
    expect(await sessionOf(h.labgate, cookie)).toBeNull();
  });

  it('are kept while GitLab is briefly down and still valid', async () => {
    const h = createHarness(gitlab, { requestTimeout: 300 });
    const { cookie } = await signedIn(h);
    const session = (await sessionOf(h.labgate, cookie))!;
    const token = await h.labgate.getAccessToken(session);
    h.clock.advance(7200 - 30); // within the refresh margin, not yet expired
    gitlab.control.injectFault({ path: '/oauth/token', drop: true });
    expect(await h.labgate.getAccessToken(session)).toBe(token);
    expect(await sessionOf(h.labgate, cookie)).not.toBeNull();
  });

  // TOKEN-4: refresh tokens are single-use; two concurrent requests must share one refresh. labgate.ts
  // sends both, the loser gets invalid_grant and the session is ended. Flip to `it` once fixed.
  it('are refreshed once for concurrent requests (TOKEN-4)', async () => {
    const h = createHarness(gitlab);
    const { cookie } = await signedIn(h);
    await expire(h);
    const session = (await sessionOf(h.labgate, cookie))!;
    const [a, b] = await Promise.all([h.labgate.getAccessToken(session), h.labgate.getAccessToken(session)]);
    expect(a).toBe(b);
    expect(refreshes()).toBe(1);
    expect(await sessionOf(h.labgate, cookie)).not.toBeNull();
  });

  // In cookie mode the refreshed tokens live only in this process's cache: once it expires, the
  // cookie's old (rotated, dead) refresh token is used and GitLab ends the session. Flip once fixed.
  it('refreshed in cookie mode survive the session cache (TOKEN-4)', async () => {
    const h = createHarness(gitlab, { sessionMode: 'cookie' });
    const { cookie } = await signedIn(h);
    await expire(h);
    const fresh = await h.labgate.getAccessToken((await sessionOf(h.labgate, cookie))!);
    h.clock.advance(10);
    expect(await h.labgate.getAccessToken((await sessionOf(h.labgate, cookie))!)).toBe(fresh);
  });
});

describe('the session cache', () => {
  it('serves a session ended by another instance for at most sessionCacheTtl seconds', async () => {
    const h = createHarness(gitlab, { sessionCacheTtl: 5 });
    const { cookie } = await signedIn(h);
    const session = (await sessionOf(h.labgate, cookie))!;
    await h.labgate.store.deleteSession(session.id); // what another instance's sign-out does
    h.clock.advance(4);
    expect((await sessionOf(h.labgate, cookie))?.id).toBe(session.id);
    h.clock.advance(1.5);
    expect(await sessionOf(h.labgate, cookie)).toBeNull();
  });

  it('with sessionCacheTtl 0 asks the store every time', async () => {
    const h = createHarness(gitlab, { sessionCacheTtl: 0 });
    const { cookie } = await signedIn(h);
    const session = (await sessionOf(h.labgate, cookie))!;
    await h.labgate.store.deleteSession(session.id);
    expect(await sessionOf(h.labgate, cookie)).toBeNull();
  });

  it('forgets a session ended in this process at once', async () => {
    const h = createHarness(gitlab, { sessionCacheTtl: 5 });
    const { cookie } = await signedIn(h);
    expect((await logout(h, cookie, { origin: APP }))!.status).toBe(303);
    expect(await sessionOf(h.labgate, cookie)).toBeNull();
  });
});

describe('secret rotation (TOKEN-3)', () => {
  async function rotated(mode: 'server' | 'cookie') {
    const a = testSecret();
    const b = testSecret();
    const clock = new Clock();
    const store = new MemoryStore({ now: clock.now });
    const base: HarnessOptions = { sessionMode: mode, store, clock, sessionCacheTtl: 0 };
    const old = createHarness(gitlab, { ...base, secret: a });
    const { cookie } = await signedIn(old);
    const token = await old.labgate.getAccessToken((await sessionOf(old.labgate, cookie))!);
    return {
      cookie,
      token,
      both: createHarness(gitlab, { ...base, secret: [b, a] }),
      newOnly: createHarness(gitlab, { ...base, secret: `${b}` }),
    };
  }

  for (const mode of ['server', 'cookie'] as const) {
    it(`${mode} mode: a session sealed under A opens with [B, A], tokens included`, async () => {
      const { cookie, token, both } = await rotated(mode);
      const session = await sessionOf(both.labgate, cookie);
      expect(session?.user.username).toBe('alice');
      expect(await both.labgate.getAccessToken(session!)).toBe(token);
      expect(
        (await both.labgate.handle(new Request(`${APP}/auth/session`, { headers: { cookie } })))!.status,
      ).toBe(200);
    });
  }

  it('cookie mode: with [B] only, the old cookie is no session (401, never 500)', async () => {
    const { cookie, newOnly } = await rotated('cookie');
    expect(await sessionOf(newOnly.labgate, cookie)).toBeNull();
    expect(
      (await newOnly.labgate.handle(new Request(`${APP}/auth/session`, { headers: { cookie } })))!.status,
    ).toBe(401);
  });

  it('server mode: with [B] only, the tokens sealed under A cannot be used: session_required, never a crash', async () => {
    const { cookie, newOnly } = await rotated('server');
    const session = await sessionOf(newOnly.labgate, cookie);
    // The cookie holds no sealed value in server mode (id.secret, checked against the store's hash),
    // so the session itself is found; its GitLab tokens cannot be opened.
    await expect(newOnly.labgate.getAccessToken(session!)).rejects.toMatchObject({
      code: 'session_required',
    });
    const response = await newOnly.labgate.handle(
      new Request(`${APP}/auth/session`, { headers: { cookie } }),
    );
    expect(response!.status).toBeLessThan(500);
  });
});
