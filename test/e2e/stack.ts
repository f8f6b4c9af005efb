/**
 * The stack the browser tests click through: the GitLab emulator and the reference app of
 * examples/express on a real loopback port, and the steps of a sign-in at the emulator's pages.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
// The same specifier as the example's own imports, so that both share one copy of labgate (and its
// error classes) however the package resolves.
import { createLabgate } from 'labgate';
import type { Page } from 'playwright-core';
import { expect } from 'vitest';
import { createApp } from '../../examples/express/app.js';
import { type EmulatorOptions, type RunningEmulator, startEmulator } from '../../src/emulator/index.js';

/** The scopes the reference app asks for (README). */
export const SCOPES = 'openid profile email read_user read_api';

/** The emulator and the reference app on a real loopback port, signed in through it. */
export interface Stack {
  gitlab: RunningEmulator;
  /** The app's origin, `http://127.0.0.1:<port>`. */
  origin: string;
  close(): Promise<void>;
}

/**
 * Starts the emulator and the reference app.
 * @example
 * ```ts
 * const stack = await startStack({ scopes: 'openid profile email' });
 * ```
 */
export async function startStack(
  options: { emulator?: EmulatorOptions; scopes?: string } = {},
): Promise<Stack> {
  const gitlab = await startEmulator(options.emulator ?? {});
  // Listen first: the app's origin (and so its redirect URI) is only known once the port is.
  const server: Server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const app = gitlab.applications[0]!;
  const auth = createLabgate({
    gitlabUrl: gitlab.url,
    clientId: app.uid,
    clientSecret: app.secret,
    url: origin,
    secret: randomBytes(32).toString('base64url'),
    scopes: options.scopes ?? SCOPES,
    logger: false,
  });
  server.on('request', createApp(auth));
  return {
    gitlab,
    origin,
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      await gitlab.close();
    },
  };
}

/** The trimmed text of the element with this `data-testid`. */
export const text = async (page: Page, testId: string): Promise<string> =>
  ((await page.getByTestId(testId).textContent()) ?? '').trim();

/** From the app's home page to GitLab's sign-in page; checks that it is GitLab's. */
export async function openGitLabSignIn(page: Page, stack: Stack): Promise<void> {
  await page.goto(`${stack.origin}/`);
  await page.getByTestId('sign-in').click();
  await page.waitForURL((url) => url.href.startsWith(`${stack.gitlab.url}/users/sign_in`));
  expect(await page.title()).toBe('Sign in · GitLab');
}

/** Types a demo user's password (`<name>-password`) at GitLab's sign-in page. */
export async function enterPassword(page: Page, username: string): Promise<void> {
  await page.getByTestId('username-field').fill(username);
  await page.getByTestId('password-field').fill(`${username}-password`);
  await page.getByTestId('sign-in-button').click();
}

/** Approves the application at GitLab's consent page and waits for the app's profile page. */
export async function authorize(page: Page, stack: Stack): Promise<void> {
  await page.getByTestId('authorization-button').waitFor();
  expect(await page.title()).toBe('Authorize application · GitLab');
  await page.getByTestId('authorization-button').click();
  await page.waitForURL(`${stack.origin}/profile`);
}

/** The project names the profile page lists. */
export async function listedProjects(page: Page): Promise<string[]> {
  return (await page.getByTestId('projects').locator('li a').allTextContents()).map((p) => p.trim());
}
