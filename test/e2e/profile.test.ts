/**
 * The reference app's profile page in a real browser when GitLab does not simply answer: a token that
 * GitLab ended before labgate's clock says so (read again after one refresh), and a page that names
 * the real cause of a failure (`insufficient_scope` only when GitLab says so).
 */
import type { Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { launchChromium, type RunningChromium, skipBrowserTests } from './browser.js';
import {
  authorize,
  enterPassword,
  listedProjects,
  openGitLabSignIn,
  type Stack,
  startStack,
  text,
} from './stack.js';

async function signInAlice(page: Page, stack: Stack): Promise<void> {
  await openGitLabSignIn(page, stack);
  await enterPassword(page, 'alice');
  await authorize(page, stack);
}

describe.skipIf(skipBrowserTests)(
  'the profile page when GitLab ends a token early',
  { timeout: 60_000 },
  () => {
    let stack: Stack;
    let browser: RunningChromium | undefined;

    beforeAll(async () => {
      stack = await startStack();
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

    it('still lists the projects after GitLab expired every access token, with exactly one refresh', async () => {
      const { page } = browser!;
      const { control } = stack.gitlab;
      await signInAlice(page, stack);
      expect(await listedProjects(page)).toContain('Acme / App');

      control.clearRequests();
      const clock = control.now().getTime();
      expect(control.expireAccessTokens()).toBe(1);
      // Only GitLab's side moved: its clock did not, and labgate's (the real one) never does here.
      expect(Math.abs(control.now().getTime() - clock)).toBeLessThan(5_000);

      await page.goto(`${stack.origin}/profile`);
      expect(await listedProjects(page)).toContain('Acme / App');
      expect(await page.getByTestId('projects-error').count()).toBe(0);
      const refreshes = control.requests({ path: '/oauth/token', grantType: 'refresh_token' });
      expect(refreshes.map((r) => r.status)).toEqual([200]);
      // The expired token was refused, then the renewed one read the list.
      expect(control.requests({ path: '/api/v4/projects' }).map((r) => r.status)).toEqual([401, 200]);

      // The renewed token is a live one: the next page needs no refresh.
      control.clearRequests();
      await page.reload();
      expect(await listedProjects(page)).toContain('Acme / App');
      expect(control.requests({ grantType: 'refresh_token' })).toHaveLength(0);
    });

    it('names GitLab refusing the renewed token too, without blaming the scope', async () => {
      const { page } = browser!;
      const { control } = stack.gitlab;
      await signInAlice(page, stack);
      control.clearRequests();
      control.injectFault({
        path: '/api/v4/projects',
        status: 401,
        contentType: 'application/json',
        body: '{"message":"401 Unauthorized"}',
        times: 2,
      });
      await page.goto(`${stack.origin}/profile`);
      const problem = await text(page, 'projects-error');
      expect(problem).toContain('GitLab refused the app’s token');
      expect(problem).not.toMatch(/scope/);
      expect(control.requests({ grantType: 'refresh_token' })).toHaveLength(1);
    });

    it('says GitLab could not be reached when the connection drops', async () => {
      const { page } = browser!;
      await signInAlice(page, stack);
      // Until cleared: fetch sends a GET again by itself when a reused connection drops.
      stack.gitlab.control.injectFault({ path: '/api/v4/projects', drop: true });
      await page.goto(`${stack.origin}/profile`);
      const problem = await text(page, 'projects-error');
      expect(problem).toContain('GitLab could not be reached');
      expect(problem).not.toMatch(/scope/);
      expect(await page.getByTestId('projects').count()).toBe(0);
    });

    it('gives GitLab’s own answer to a 403 that is not about the scope', async () => {
      const { page } = browser!;
      await signInAlice(page, stack);
      stack.gitlab.control.injectFault({
        path: '/api/v4/projects',
        status: 403,
        contentType: 'application/json',
        body: '{"message":"403 Forbidden"}',
        times: 1,
      });
      await page.goto(`${stack.origin}/profile`);
      const problem = await text(page, 'projects-error');
      expect(problem).toContain('GitLab answered 403: 403 Forbidden.');
      expect(problem).not.toMatch(/insufficient_scope|read_api/);
    });

    it('sends the user to sign in again when GitLab refuses the refresh token too', async () => {
      const { page } = browser!;
      const { control } = stack.gitlab;
      await signInAlice(page, stack);
      // Revoked at GitLab: the access token and its refresh token are both dead.
      expect(control.revokeUserTokens('alice')).toBe(1);
      control.clearRequests();
      await page.goto(`${stack.origin}/profile`);
      // Still signed in at GitLab, but the app's token is revoked: GitLab asks for consent again.
      await page.getByTestId('authorization-button').waitFor();
      expect(control.requests({ grantType: 'refresh_token' }).map((r) => r.status)).toEqual([400]);
      await authorize(page, stack);
      expect(await listedProjects(page)).toContain('Acme / App');
    });
  },
);

describe.skipIf(skipBrowserTests)(
  'the profile page of a sign-in without read_api',
  { timeout: 60_000 },
  () => {
    let stack: Stack;
    let browser: RunningChromium | undefined;

    beforeAll(async () => {
      stack = await startStack({ scopes: 'openid profile email read_user' });
      browser = await launchChromium();
    });
    afterAll(async () => {
      await browser?.close();
      await stack?.close();
    });

    it('names insufficient_scope, as GitLab says', async () => {
      const { page } = browser!;
      await signInAlice(page, stack);
      expect(await text(page, 'name')).toBe('Alice Liddell');
      expect(await page.getByTestId('projects').count()).toBe(0);
      const problem = await text(page, 'projects-error');
      expect(problem).toContain('insufficient_scope');
      expect(problem).toContain('read_api');
      const [call] = stack.gitlab.control.requests({ path: '/api/v4/projects' });
      expect(call?.status).toBe(403);
      // A 403 is no reason to renew the token.
      expect(stack.gitlab.control.requests({ grantType: 'refresh_token' })).toHaveLength(0);
    });
  },
);
