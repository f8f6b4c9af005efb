/**
 * The flows people click, in a real browser: the reference app of examples/express signed in through
 * the GitLab emulator's own pages (sign-in, two-factor, consent, the auto-approve "Redirecting"
 * page), the profile it shows, sign-out, and a refusal at the consent page.
 */
import { mkdir } from 'node:fs/promises';
import type { Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { launchChromium, type RunningChromium, skipBrowserTests, totp } from './browser.js';
import {
  authorize,
  enterPassword,
  listedProjects,
  openGitLabSignIn,
  type Stack,
  startStack,
  text,
} from './stack.js';

const ARTIFACTS = new URL('./artifacts/', import.meta.url);
const CAROL_TOTP_SECRET = 'JBSWY3DPEHPK3PXP';

/** The top-level documents the page loaded, as `STATUS METHOD URL`, to tell which pages a flow went through. */
function recordNavigations(page: Page): string[] {
  const seen: string[] = [];
  page.on('response', (response) => {
    const request = response.request();
    if (request.isNavigationRequest() && request.frame() === page.mainFrame())
      seen.push(`${response.status()} ${request.method()} ${response.url()}`);
  });
  return seen;
}

/** The whole first sign-in of alice and her profile page. */
async function signInAliceAndCheckProfile(page: Page, stack: Stack): Promise<void> {
  await openGitLabSignIn(page, stack);
  await enterPassword(page, 'alice');
  await authorize(page, stack);
  expect(await page.title()).toBe('Alice Liddell · labgate example');
  expect(await text(page, 'name')).toBe('Alice Liddell');
  expect(await text(page, 'username')).toBe('@alice');
  expect(await text(page, 'email')).toMatch(/^alice@acme\.test\s+verified$/);
  expect(await page.getByTestId('email').locator('.badge').textContent()).toBe('verified');
  const webUrl = page.getByTestId('web-url');
  expect(await webUrl.textContent()).toBe(`${stack.gitlab.url}/alice`);
  expect(await webUrl.getAttribute('href')).toBe(`${stack.gitlab.url}/alice`);
  expect(await text(page, 'created-at')).toContain('14 March 2023');
  // GitLab's last_sign_in_at is the sign-in before the current one: the fixtures' date.
  expect(await text(page, 'last-sign-in')).toContain('20 November 2026');
  expect(await listedProjects(page)).toContain('Acme / App');
}

describe.skipIf(skipBrowserTests)('sign-in in a real browser (chromium)', { timeout: 60_000 }, () => {
  let stack: Stack;
  let browser: RunningChromium | undefined;

  beforeAll(async () => {
    stack = await startStack();
    await mkdir(ARTIFACTS, { recursive: true });
  });
  afterAll(() => stack?.close());
  beforeEach(async () => {
    stack.gitlab.control.reset();
    browser = await launchChromium();
  });
  afterEach(async () => {
    await browser?.close();
    browser = undefined;
  });

  it('signs alice in, shows her profile, signs out, and signs in again', async () => {
    const { context, page } = browser!;
    await signInAliceAndCheckProfile(page, stack);
    const lastSignIn = await text(page, 'last-sign-in');
    await page.screenshot({ path: new URL('profile.png', ARTIFACTS).pathname, fullPage: true });

    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.waitForURL(`${stack.origin}/`);
    expect(await text(page, 'sign-in')).toBe('Sign in with GitLab');
    expect(await page.evaluate(async () => (await fetch('/auth/session')).status)).toBe(401);
    expect(stack.gitlab.control.requests({ path: '/oauth/revoke' })).toHaveLength(1);

    // Still signed in at GitLab, so no password; but signing out revoked the app's token, and
    // GitLab skips consent only for a live one: the consent page again.
    stack.gitlab.control.clearRequests();
    await page.getByTestId('sign-in').click();
    await authorize(page, stack);
    expect(await text(page, 'name')).toBe('Alice Liddell');
    expect(await text(page, 'last-sign-in')).toBe(lastSignIn);
    expect(stack.gitlab.control.requests({ path: '/users/sign_in' })).toHaveLength(0);

    // The app's session ends without a sign-out (its cookie is gone), the token at GitLab lives on:
    // GitLab answers the authorize request with its 200 "Redirecting" page, which the browser
    // leaves by its script for the callback. No password, no consent.
    await context.clearCookies({ name: 'labgate' });
    await page.goto(`${stack.origin}/`);
    const navigations = recordNavigations(page);
    stack.gitlab.control.clearRequests();
    await page.getByTestId('sign-in').click();
    await page.waitForURL(`${stack.origin}/profile`);
    expect(await text(page, 'name')).toBe('Alice Liddell');
    expect(stack.gitlab.control.requests({ path: '/oauth/authorize', method: 'POST' })).toHaveLength(0);
    expect(stack.gitlab.control.requests({ path: '/users/sign_in' })).toHaveLength(0);
    const authorizeAt = navigations.findIndex((n) =>
      n.startsWith(`200 GET ${stack.gitlab.url}/oauth/authorize?`),
    );
    expect(authorizeAt, navigations.join('\n')).toBeGreaterThan(-1);
    expect(navigations[authorizeAt + 1], navigations.join('\n')).toMatch(
      new RegExp(`^303 GET ${stack.origin}/auth/callback\\?`),
    );
  });

  it('signs carol in with her two-factor code', async () => {
    const { page } = browser!;
    await openGitLabSignIn(page, stack);
    await enterPassword(page, 'carol');
    await page.getByTestId('two-fa-code-field').waitFor();
    expect(await page.title()).toBe('Two-factor authentication · GitLab');
    await page
      .getByTestId('two-fa-code-field')
      .fill(totp(CAROL_TOTP_SECRET, stack.gitlab.control.now().getTime()));
    await page.getByTestId('verify-code-button').click();
    await authorize(page, stack);
    expect(await text(page, 'name')).toBe('Carol Danvers');
    expect(await text(page, 'username')).toBe('@carol');
    expect(await text(page, 'email')).toContain('carol@acme.test');
    expect(await text(page, 'created-at')).toContain('29 February 2024');
  });

  it('shows labgate’s error page when the user denies access at GitLab', async () => {
    const { page } = browser!;
    await openGitLabSignIn(page, stack);
    await enterPassword(page, 'alice');
    const callback = page.waitForResponse((r) => r.url().startsWith(`${stack.origin}/auth/callback?`));
    await page.getByTestId('deny-button').click();
    expect((await callback).status()).toBe(403);
    await page.waitForURL((url) => url.href.startsWith(`${stack.origin}/auth/callback?`));
    expect(await page.title()).toBe('GitLab refused access');
    expect(await page.getByRole('heading', { level: 1 }).textContent()).toBe('GitLab refused access');
    const again = page.getByRole('link', { name: 'Start again' });
    expect(await again.isVisible()).toBe(true);
    expect(await page.locator('.code code').first().textContent()).toBe('access_denied');
    // The error page's CSP allows no fetch from it: ask with the browser's cookies from outside.
    expect((await browser!.context.request.get(`${stack.origin}/auth/session`)).status()).toBe(401);
    // "Start again" leads back to GitLab, where the user is still signed in: straight to consent.
    await again.click();
    await page.getByTestId('authorization-button').waitFor();
  });
});

describe.skipIf(skipBrowserTests)(
  'sign-in through a GitLab under a relative URL root',
  { timeout: 60_000 },
  () => {
    let stack: Stack;
    let browser: RunningChromium | undefined;

    beforeAll(async () => {
      stack = await startStack({ emulator: { basePath: '/gitlab' } });
      browser = await launchChromium();
    });
    afterAll(async () => {
      await browser?.close();
      await stack?.close();
    });

    it('signs alice in at /gitlab/users/sign_in and shows her profile', async () => {
      const { page } = browser!;
      expect(stack.gitlab.url).toMatch(/\/gitlab$/);
      const signInPage = page.waitForResponse((r) => r.url().includes('/gitlab/users/sign_in'));
      await signInAliceAndCheckProfile(page, stack);
      expect(new URL((await signInPage).url()).pathname).toBe('/gitlab/users/sign_in');
      expect(page.url()).toBe(`${stack.origin}/profile`);
      // The request log names paths from GitLab's root, without the relative URL root.
      expect(stack.gitlab.control.requests({ path: '/users/sign_in', method: 'POST' })).toHaveLength(1);
    });
  },
);
