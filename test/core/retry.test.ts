/**
 * A connection that GitLab (or a proxy in front of it) closes without answering — what a request
 * sent on an idle keep-alive connection just closed meets — is not an outage: idempotent requests
 * (discovery, JWKS, userinfo, `/api/v4/user`, the REST client's GETs) are sent once more. A second
 * drop fails cleanly with `gitlab_unreachable`; a POST (the single-use code or refresh token) and a
 * timeout are never sent again. The emulator's fault API drops the connection (`drop: true`).
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createGitLabClient, GitLabApiError } from '../../src/core/gitlab.js';
import { isConnectionReset } from '../../src/core/provider.js';
import { type RunningEmulator, startEmulator } from '../../src/emulator/index.js';
import type { Browser, Page } from '../emulator/browser.js';
import { APP, authorize, createHarness, type Harness } from './harness.js';

/** `/auth/login` in a new browser, whatever it answers. */
async function login(h: Harness): Promise<{ browser: Browser; page: Page }> {
  const browser = h.browser();
  return { browser, page: await browser.get(`${APP}/auth/login`) };
}

/** A whole sign-in, with `beforeCallback` run just before the browser returns to labgate. */
async function signIn(h: Harness, beforeCallback: () => void = () => {}) {
  const { browser, page } = await login(h);
  expect(page.status, page.body).toBe(302);
  const callbackUrl = await authorize(h, browser, page.location!);
  beforeCallback();
  return browser.get(callbackUrl);
}

function errorCode(page: { body: string }): string | null {
  return /Error <code>([a-z_]+)<\/code>/.exec(page.body)?.[1] ?? null;
}

function sessionCookie(headers: Headers): string | undefined {
  return headers.getSetCookie().find((c) => /^labgate=[^;]/.test(c));
}

let gitlab: RunningEmulator;
beforeAll(async () => {
  gitlab = await startEmulator();
});
afterAll(() => gitlab.close());
beforeEach(() => gitlab.control.reset());

/** The requests GitLab received on `path`: `0` for a dropped one, else the status it answered. */
function statuses(path: string, method?: string): number[] {
  return gitlab.control.requests({ path, ...(method ? { method } : {}) }).map((r) => r.status);
}

describe('isConnectionReset', () => {
  const failed = (code: string) =>
    new TypeError('fetch failed', { cause: Object.assign(new Error('x'), { code }) });

  it('names the errors of a connection closed before an answer', () => {
    expect(isConnectionReset(failed('UND_ERR_SOCKET'))).toBe(true);
    expect(isConnectionReset(failed('ECONNRESET'))).toBe(true);
    expect(isConnectionReset(failed('EPIPE'))).toBe(true);
    const nested = new TypeError('fetch failed', {
      cause: Object.assign(new Error('other side closed'), {
        code: 'UND_ERR_OTHER',
        cause: Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }),
      }),
    });
    expect(isConnectionReset(nested)).toBe(true);
  });

  it('leaves out timeouts, refused connections, DNS failures and other errors', () => {
    for (const code of [
      'UND_ERR_CONNECT_TIMEOUT',
      'UND_ERR_HEADERS_TIMEOUT',
      'ECONNREFUSED',
      'ENOTFOUND',
      'ETIMEDOUT',
    ])
      expect(isConnectionReset(failed(code)), code).toBe(false);
    expect(isConnectionReset(new DOMException('timed out', 'TimeoutError'))).toBe(false);
    expect(isConnectionReset(Object.assign(new Error('x'), { code: 'ECONNRESET' }))).toBe(false);
    expect(isConnectionReset(new TypeError('fetch failed'))).toBe(false);
  });

  it('is what undici reports for a connection the emulator drops', async () => {
    gitlab.control.injectFault({ path: '/oauth/userinfo', drop: true, times: 1 });
    const error = await fetch(`${gitlab.url}/oauth/userinfo`).catch((e: unknown) => e);
    expect(isConnectionReset(error)).toBe(true);
  });
});

describe('one dropped connection is sent again, a second fails cleanly', () => {
  it('userinfo', async () => {
    const h = createHarness(gitlab);
    const once = await signIn(h, () =>
      gitlab.control.injectFault({ path: '/oauth/userinfo', drop: true, times: 1 }),
    );
    expect(once.status, once.body).toBe(303);
    expect(sessionCookie(once.headers)).toBeDefined();
    expect(statuses('/oauth/userinfo')).toEqual([0, 200]);

    gitlab.control.clearRequests();
    const twice = await signIn(h, () =>
      gitlab.control.injectFault({ path: '/oauth/userinfo', drop: true, times: 2 }),
    );
    expect(twice.status, twice.body).toBe(502);
    expect(errorCode(twice)).toBe('gitlab_unreachable');
    expect(sessionCookie(twice.headers)).toBeUndefined();
    expect(statuses('/oauth/userinfo')).toEqual([0, 0]);
  });

  it('the JWKS', async () => {
    const once = await signIn(createHarness(gitlab), () =>
      gitlab.control.injectFault({ path: '/oauth/discovery/keys', drop: true, times: 1 }),
    );
    expect(once.status, once.body).toBe(303);
    expect(statuses('/oauth/discovery/keys')).toEqual([0, 200]);

    gitlab.control.clearRequests();
    // A new labgate: the first one holds the keys in its cache.
    const twice = await signIn(createHarness(gitlab), () =>
      gitlab.control.injectFault({ path: '/oauth/discovery/keys', drop: true, times: 2 }),
    );
    expect(twice.status, twice.body).toBe(502);
    expect(errorCode(twice)).toBe('gitlab_unreachable');
    expect(sessionCookie(twice.headers)).toBeUndefined();
    expect(statuses('/oauth/discovery/keys')).toEqual([0, 0]);
    expect(statuses('/oauth/userinfo')).toEqual([]);
  });

  it('OpenID Connect discovery', async () => {
    const path = '/.well-known/openid-configuration';
    gitlab.control.injectFault({ path, drop: true, times: 1 });
    const once = await login(createHarness(gitlab));
    expect(once.page.status, once.page.body).toBe(302);
    expect(statuses(path)).toEqual([0, 200]);

    gitlab.control.clearRequests();
    gitlab.control.injectFault({ path, drop: true, times: 2 });
    const h = createHarness(gitlab);
    const twice = await login(h);
    expect(twice.page.status, twice.page.body).toBe(502);
    expect(errorCode(twice.page)).toBe('gitlab_unreachable');
    expect(statuses(path)).toEqual([0, 0]);
    // The line says what failed and how, and that is all.
    expect(h.logs.join('\n')).toMatch(
      /gitlab_unreachable: OpenID Connect discovery: fetch failed \(UND_ERR_SOCKET\)/,
    );
  });

  it('/api/v4/user during the sign-in', async () => {
    const scopes = 'openid profile email read_api';
    const once = await signIn(createHarness(gitlab, { scopes }), () =>
      gitlab.control.injectFault({ path: '/api/v4/user', drop: true, times: 1 }),
    );
    expect(once.status, once.body).toBe(303);
    expect(statuses('/api/v4/user')).toEqual([0, 200]);

    gitlab.control.clearRequests();
    const twice = await signIn(createHarness(gitlab, { scopes }), () =>
      gitlab.control.injectFault({ path: '/api/v4/user', drop: true, times: 2 }),
    );
    expect(twice.status, twice.body).toBe(502);
    expect(errorCode(twice)).toBe('gitlab_unreachable');
    expect(statuses('/api/v4/user')).toEqual([0, 0]);
  });

  it('a GET of the REST API client', async () => {
    const minted = gitlab.control.mintToken({ user: 'alice', scopes: ['read_api'] });
    const api = createGitLabClient({ gitlabUrl: gitlab.url, getToken: async () => minted.access_token });
    gitlab.control.injectFault({ path: '/api/v4/user', drop: true, times: 1 });
    await expect(api.get('/user')).resolves.toMatchObject({ username: 'alice' });
    expect(statuses('/api/v4/user')).toEqual([0, 200]);

    gitlab.control.clearRequests();
    gitlab.control.injectFault({ path: '/api/v4/groups', drop: true, times: 1 });
    const groups: unknown[] = [];
    for await (const group of api.paginate('/groups')) groups.push(group);
    expect(groups.length).toBeGreaterThan(0);
    expect(statuses('/api/v4/groups')).toEqual([0, 200]);

    gitlab.control.clearRequests();
    gitlab.control.injectFault({ path: '/api/v4/user', drop: true, times: 2 });
    const error = (await api.get('/user').catch((e: unknown) => e)) as GitLabApiError;
    expect(error).toBeInstanceOf(GitLabApiError);
    expect(error.status).toBe(0);
    expect(error.message).not.toContain(minted.access_token);
    expect(statuses('/api/v4/user')).toEqual([0, 0]);
  });

  it('the session’s API client, through labgate', async () => {
    const h = createHarness(gitlab, { scopes: 'openid profile email read_api' });
    const callback = await signIn(h);
    expect(callback.status, callback.body).toBe(303);
    const cookie = sessionCookie(callback.headers)!.split(';')[0]!;
    const session = await h.labgate.sessionOf(cookie);
    expect(session).not.toBeNull();
    gitlab.control.clearRequests();
    gitlab.control.injectFault({ path: '/api/v4/user', drop: true, times: 1 });
    await expect(h.labgate.gitlab(session!).get('/user')).resolves.toMatchObject({ username: 'alice' });
    expect(statuses('/api/v4/user')).toEqual([0, 200]);
  });
});

describe('never sent again', () => {
  it('the code exchange (a POST of a single-use code)', async () => {
    const h = createHarness(gitlab);
    const callback = await signIn(h, () =>
      gitlab.control.injectFault({ path: '/oauth/token', drop: true, times: 1 }),
    );
    expect(callback.status, callback.body).toBe(502);
    expect(errorCode(callback)).toBe('gitlab_unreachable');
    expect(sessionCookie(callback.headers)).toBeUndefined();
    expect(gitlab.control.requests({ path: '/oauth/token' })).toHaveLength(1);
  });

  it('a refresh through labgate.refreshToken (a POST of a single-use refresh token)', async () => {
    const h = createHarness(gitlab);
    const minted = gitlab.control.mintToken({ user: 'alice', scopes: ['openid', 'read_user'] });
    await h.labgate.ready();
    gitlab.control.injectFault({ path: '/oauth/token', drop: true, times: 1 });
    await expect(h.labgate.refreshToken(minted.refresh_token)).rejects.toMatchObject({
      code: 'gitlab_unreachable',
    });
    expect(gitlab.control.requests({ path: '/oauth/token' })).toHaveLength(1);
  });

  it('a POST of the REST API client', async () => {
    const minted = gitlab.control.mintToken({ user: 'alice', scopes: ['api'] });
    const api = createGitLabClient({ gitlabUrl: gitlab.url, getToken: async () => minted.access_token });
    gitlab.control.injectFault({ path: '/api/v4/projects', method: 'POST', drop: true, times: 1 });
    const error = (await api
      .request('POST', '/projects', { body: { name: 'x' } })
      .catch((e: unknown) => e)) as GitLabApiError;
    expect(error).toBeInstanceOf(GitLabApiError);
    expect(error.status).toBe(0);
    expect(statuses('/api/v4/projects', 'POST')).toEqual([0]);
  });

  it('a GET that timed out', async () => {
    // The fault holds only the first request: a second one would be answered at once.
    const h = createHarness(gitlab, { requestTimeout: 300 });
    const callback = await signIn(h, () =>
      gitlab.control.injectFault({ path: '/oauth/userinfo', delayMs: 1500, times: 1 }),
    );
    expect(callback.status, callback.body).toBe(502);
    expect(errorCode(callback)).toBe('gitlab_unreachable');
    expect(gitlab.control.requests({ path: '/oauth/userinfo' })).toHaveLength(1);

    const minted = gitlab.control.mintToken({ user: 'alice', scopes: ['read_api'] });
    const api = createGitLabClient({
      gitlabUrl: gitlab.url,
      getToken: async () => minted.access_token,
      timeout: 300,
    });
    gitlab.control.injectFault({ path: '/api/v4/user', delayMs: 1500, times: 1 });
    const error = (await api.get('/user').catch((e: unknown) => e)) as GitLabApiError;
    expect(error).toBeInstanceOf(GitLabApiError);
    expect(error.status).toBe(0);
    expect(gitlab.control.requests({ path: '/api/v4/user' })).toHaveLength(1);
  });
});

describe('an emulator that closes idle keep-alive connections after a second', () => {
  let closing: RunningEmulator;
  beforeAll(async () => {
    closing = await startEmulator({ keepAliveTimeout: 1000 });
  });
  afterAll(() => closing.close());

  it('serves sign-ins, userinfo and API reads without an unreachable GitLab', async () => {
    const h = createHarness(closing, { scopes: 'openid profile email read_api' });
    for (let round = 0; round < 3; round++) {
      const callback = await signIn(h);
      expect(callback.status, callback.body).toBe(303);
      const cookie = sessionCookie(callback.headers)!.split(';')[0]!;
      const session = await h.labgate.sessionOf(cookie);
      await expect(h.labgate.gitlab(session!).get('/user')).resolves.toMatchObject({ username: 'alice' });
    }
    expect(h.logs.filter((l) => l.includes('gitlab_unreachable'))).toEqual([]);
  });
});
