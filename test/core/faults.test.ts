/**
 * GitLab failing in every way the emulator can fail: each ends in a clean 4xx/5xx page (never 500,
 * never a stack trace, never GitLab's own body), within labgate's request timeout, without retrying
 * the single-use code (docs/security.md, EXCHANGE-1, EXCHANGE-2, LOG-3, IDTOKEN-9).
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type FaultSpec, type RunningEmulator, startEmulator } from '../../src/emulator/index.js';
import {
  APP,
  authorize,
  codeExchanges,
  createHarness,
  errorCode,
  type Harness,
  login,
  sessionSetCookie,
} from './harness.js';

let gitlab: RunningEmulator;
beforeAll(async () => {
  gitlab = await startEmulator();
});
afterAll(() => gitlab.close());
beforeEach(() => gitlab.control.reset());

const TIMEOUT_MS = 300;
/** Well below the 2 s the slow faults wait: an answer after this means labgate waited for GitLab. */
const BOUND_MS = 1500;
const MARKER = 'GITLAB-BODY-MARKER-7f3a';

function harness(extra: Parameters<typeof createHarness>[1] = {}): Harness {
  return createHarness(gitlab, { requestTimeout: TIMEOUT_MS, ...extra });
}

/** Signs in up to the callback, then injects `fault` and times the callback. */
async function callbackWithFault(h: Harness, fault: FaultSpec) {
  const browser = h.browser();
  const { authorizeUrl } = await login(h, browser);
  const callbackUrl = await authorize(h, browser, authorizeUrl.href);
  gitlab.control.injectFault(fault);
  const started = performance.now();
  const page = await browser.get(callbackUrl);
  return { page, elapsed: performance.now() - started, browser, callbackUrl };
}

function expectCleanErrorPage(page: { status: number; body: string; headers: Headers }, status: number) {
  expect(page.status, page.body).toBe(status);
  expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
  expect(page.headers.get('cache-control')).toBe('no-store');
  expect(page.headers.get('referrer-policy')).toBe('no-referrer');
  expect(page.body).toMatch(/reference <code>[A-Za-z0-9_-]{8}<\/code>/);
  expect(page.body).not.toContain(MARKER);
  expect(page.body).not.toMatch(
    /Whoops|Retry later|\bat [\w.<>]+ \(|node:internal|TypeError|OperationProcessingError/,
  );
  expect(sessionSetCookie(page.headers)).toBeUndefined();
}

describe('the token endpoint', () => {
  const cases: [string, FaultSpec, number, string][] = [
    ['a 500 with GitLab’s HTML error page', { path: '/oauth/token', status: 500 }, 502, 'gitlab_error'],
    [
      'a 502 whose body is not JSON',
      { path: '/oauth/token', status: 502, body: MARKER, contentType: 'text/plain' },
      502,
      'gitlab_error',
    ],
    [
      'a 200 HTML page',
      {
        path: '/oauth/token',
        status: 200,
        body: `<html><body>${MARKER}</body></html>`,
        contentType: 'text/html',
      },
      502,
      'gitlab_error',
    ],
    [
      'a 200 JSON error (passport-oauth2 CVE-2021-41580)',
      {
        path: '/oauth/token',
        status: 200,
        body: JSON.stringify({ error: MARKER }),
        contentType: 'application/json',
      },
      502,
      'gitlab_error',
    ],
    ['a dropped connection', { path: '/oauth/token', drop: true }, 502, 'gitlab_unreachable'],
    ['a 429 throttle', { path: '/oauth/token', status: 429, retryAfter: 30 }, 502, 'gitlab_error'],
    [
      'a 400 invalid_grant',
      {
        path: '/oauth/token',
        status: 400,
        body: JSON.stringify({ error: 'invalid_grant', error_description: MARKER }),
        contentType: 'application/json',
      },
      400,
      'token_exchange_failed',
    ],
    [
      'a response of 600 KiB',
      {
        path: '/oauth/token',
        status: 200,
        body: `{"x":"${'a'.repeat(600 * 1024)}"}`,
        contentType: 'application/json',
      },
      502,
      'gitlab_error',
    ],
  ];
  for (const [name, fault, status, code] of cases) {
    it(`${name} → ${status} ${code}, one token request, no session`, async () => {
      const h = harness();
      const { page, elapsed } = await callbackWithFault(h, fault);
      expectCleanErrorPage(page, status);
      expect(errorCode(page)).toBe(code);
      expect(elapsed).toBeLessThan(BOUND_MS);
      // EXCHANGE-2: a code is single-use: never retried, never replayed.
      // (A faulted request logs no grant type.)
      expect(gitlab.control.requests({ path: '/oauth/token' })).toHaveLength(1);
      expect(h.logs.join('\n')).not.toContain(MARKER);
    });
  }

  it('slower than requestTimeout → 502 gitlab_unreachable after the timeout, not after GitLab', async () => {
    const h = harness();
    const { page, elapsed } = await callbackWithFault(h, {
      path: '/oauth/token',
      delayMs: 2000,
      status: 500,
    });
    expectCleanErrorPage(page, 502);
    expect(errorCode(page)).toBe('gitlab_unreachable');
    expect(elapsed).toBeGreaterThanOrEqual(TIMEOUT_MS - 20);
    expect(elapsed).toBeLessThan(BOUND_MS);
  });

  it('a redirect is not followed: credentials never reach another URL (EXCHANGE-1)', async () => {
    const h = harness();
    const { page } = await callbackWithFault(h, {
      path: '/oauth/token',
      status: 307,
      headers: { location: `${gitlab.url}/trap` },
    });
    expect(page.status).toBe(502);
    expect(gitlab.control.requests({ path: '/trap' })).toHaveLength(0);
  });

  it('a streamed body over the cap without Content-Length is refused too (EXCHANGE-1)', async () => {
    const h = harness({
      maxResponseBytes: 64 * 1024,
      intercept: async (url, response) => {
        if (!url.endsWith('/oauth/token')) return response;
        await response.body?.cancel();
        const chunk = new TextEncoder().encode('x'.repeat(16 * 1024));
        let sent = 0;
        const body = new ReadableStream<Uint8Array>({
          pull(controller) {
            if (sent++ < 100) controller.enqueue(chunk);
            else controller.close();
          },
        });
        return new Response(body, { status: 200, headers: { 'content-type': 'application/json' } });
      },
    });
    const browser = h.browser();
    const { authorizeUrl } = await login(h, browser);
    const page = await browser.get(await authorize(h, browser, authorizeUrl.href));
    expectCleanErrorPage(page, 502);
  });

  it('answers Accept: application/json with {error, message, reference} and logs the same reference', async () => {
    const h = harness();
    const browser = h.browser();
    const { authorizeUrl } = await login(h, browser);
    const callbackUrl = await authorize(h, browser, authorizeUrl.href);
    gitlab.control.injectFault({ path: '/oauth/token', status: 500 });
    const response = await browser.request(callbackUrl, { headers: { accept: 'application/json' } });
    expect(response.status).toBe(502);
    expect(response.headers.get('content-type')).toMatch(/^application\/json/);
    expect(response.headers.get('cache-control')).toBe('no-store');
    const body = JSON.parse(response.body) as Record<string, string>;
    expect(Object.keys(body).sort()).toEqual(['error', 'message', 'reference']);
    expect(body['error']).toBe('gitlab_error');
    expect(body['message']).toBe('GitLab answered with an error');
    expect(
      h.logs.filter((l) => l.startsWith('error ') && l.includes(`reference ${body['reference']}`)),
    ).toHaveLength(1);
  });
});

describe('discovery', () => {
  it('failing → 502 on /auth/login; retried no sooner than 5 s later, then signs in', async () => {
    gitlab.control.injectFault({ path: '/.well-known/openid-configuration', status: 500 });
    const h = harness();
    const discoveries = () => gitlab.control.requests({ path: '/.well-known/openid-configuration' }).length;
    const first = await h.labgate.handle(new Request(`${APP}/auth/login`));
    expect(first!.status).toBe(502);
    expectCleanErrorPage({ status: first!.status, headers: first!.headers, body: await first!.text() }, 502);
    expect(discoveries()).toBe(1);
    gitlab.control.clearFaults();
    // Within 5 s labgate does not hammer GitLab.
    h.clock.advance(4);
    expect((await h.labgate.handle(new Request(`${APP}/auth/login`)))!.status).toBe(502);
    expect(discoveries()).toBe(1);
    await expect(h.labgate.ready()).rejects.toMatchObject({ code: 'gitlab_unreachable' });
    h.clock.advance(2);
    const later = await h.labgate.handle(new Request(`${APP}/auth/login`));
    expect(later!.status).toBe(302);
    expect(discoveries()).toBe(2);
    // Once discovered, it is not fetched again.
    await h.labgate.handle(new Request(`${APP}/auth/login`));
    expect(discoveries()).toBe(2);
  });

  for (const [name, fault] of [
    ['slow', { path: '/.well-known/openid-configuration', delayMs: 2000 }],
    ['dropped', { path: '/.well-known/openid-configuration', drop: true }],
    ['HTML', { path: '/.well-known/openid-configuration', status: 200, body: '<html></html>' }],
    [
      'oversized',
      {
        path: '/.well-known/openid-configuration',
        status: 200,
        body: `{"x":"${'a'.repeat(600 * 1024)}"}`,
        contentType: 'application/json',
      },
    ],
    [
      'redirected',
      {
        path: '/.well-known/openid-configuration',
        status: 302,
        headers: { location: 'http://127.0.0.1:1/' },
      },
    ],
  ] as [string, FaultSpec][]) {
    it(`${name} → 502 within the timeout`, async () => {
      gitlab.control.injectFault(fault);
      const h = harness();
      const started = performance.now();
      const response = await h.labgate.handle(new Request(`${APP}/auth/login`));
      expect(performance.now() - started).toBeLessThan(BOUND_MS);
      expectCleanErrorPage(
        { status: response!.status, headers: response!.headers, body: await response!.text() },
        502,
      );
    });
  }

  it('`ready()` rejects with a LabgateError while GitLab is down, and resolves once it is up', async () => {
    gitlab.control.injectFault({ path: '/.well-known/openid-configuration', drop: true });
    const h = harness();
    await expect(h.labgate.ready()).rejects.toMatchObject({
      name: 'LabgateError',
      code: 'gitlab_unreachable',
    });
    gitlab.control.clearFaults();
    h.clock.advance(6);
    await expect(h.labgate.ready()).resolves.toBeUndefined();
  });
});

describe('userinfo and the API', () => {
  for (const [name, fault, code] of [
    ['userinfo 500', { path: '/oauth/userinfo', status: 500 }, 'gitlab_error'],
    ['userinfo dropped', { path: '/oauth/userinfo', drop: true }, 'gitlab_unreachable'],
    ['userinfo slow', { path: '/oauth/userinfo', delayMs: 2000 }, 'gitlab_unreachable'],
    [
      'userinfo oversized',
      {
        path: '/oauth/userinfo',
        status: 200,
        body: `{"sub":"${'1'.repeat(600 * 1024)}"}`,
        contentType: 'application/json',
      },
      'gitlab_error',
    ],
    ['/api/v4/user 500', { path: '/api/v4/user', status: 500 }, 'gitlab_error'],
  ] as [string, FaultSpec, string][]) {
    it(`${name} → 502 ${code}`, async () => {
      const h = harness({ scopes: 'openid profile email read_user' });
      const { page, elapsed } = await callbackWithFault(h, fault);
      expectCleanErrorPage(page, 502);
      expect(errorCode(page)).toBe(code);
      expect(elapsed).toBeLessThan(BOUND_MS);
      expect(codeExchanges(gitlab)).toBe(1);
    });
  }
});
