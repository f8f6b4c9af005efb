/**
 * What the core suites share: an emulated GitLab, a labgate whose clock and logger the test holds,
 * an app `fetch` that sends the app's origin to `labgate.handle` in process, and the user's walk
 * through GitLab's sign-in and consent pages. Every labgate response is recorded, so a test can
 * check that no page, header or log line ever carries a credential.
 */
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { expect } from 'vitest';
import { createLabgate, type Labgate, type LabgateOptions } from '../../src/core/index.js';
import {
  createEmulatorServer,
  type EmulatorOptions,
  type EmulatorServer,
  type RunningEmulator,
} from '../../src/emulator/index.js';
import { Browser, formWith, type Page, passwordOf, redirectingLink } from '../emulator/browser.js';

/** The demo app's origin: app 0 of the demo fixtures registers `${APP}/auth/callback`. */
export const APP = 'http://127.0.0.1:3000';
export const CALLBACK = `${APP}/auth/callback`;

/** A fresh `LABGATE_SECRET`: 32 random bytes, base64url. */
export function testSecret(): string {
  return randomBytes(32).toString('base64url');
}

/** An injectable clock that follows real time, plus whatever the test advanced it by. */
export class Clock {
  #offsetMs = 0;
  readonly now = (): number => Date.now() + this.#offsetMs;
  advance(seconds: number): void {
    this.#offsetMs += seconds * 1000;
  }
}

/** One labgate response, as recorded by the app fetch. */
export interface Recorded {
  method: string;
  url: string;
  status: number;
  headers: Headers;
  body: string;
}

/** Rewrites a GitLab response on its way to labgate (a misbehaving or malicious GitLab). */
export type Intercept = (url: string, response: Response, init: RequestInit | undefined) => Promise<Response>;

/** A test's labgate, its emulator and everything the test observes. */
export interface Harness {
  gitlab: RunningEmulator;
  labgate: Labgate;
  secret: string | string[];
  clock: Clock;
  /** Every log line, prefixed with its level. */
  logs: string[];
  /** Every response labgate gave through {@link Harness.fetch}. */
  responses: Recorded[];
  /** The app's fetch: requests to labgate's origin go to `labgate.handle`, others to the network. */
  fetch: typeof fetch;
  /** A new scripted browser on {@link Harness.fetch}. */
  browser(): Browser;
}

export interface HarnessOptions extends Partial<LabgateOptions> {
  /** Rewrites GitLab's answers; without it labgate uses the default `fetch`. */
  intercept?: Intercept;
  clock?: Clock;
}

function urlOf(input: RequestInfo | URL): string {
  return typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
}

/** Creates labgate for app 0 of the demo fixtures (or `options.clientId`) against `gitlab`. */
export function createHarness(gitlab: RunningEmulator, options: HarnessOptions = {}): Harness {
  const { intercept, clock = new Clock(), ...rest } = options;
  const app = gitlab.applications[0]!;
  const logs: string[] = [];
  const responses: Recorded[] = [];
  const secret = (rest.secret as string | string[] | undefined) ?? testSecret();
  const labgate = createLabgate({
    gitlabUrl: gitlab.url,
    clientId: app.uid,
    clientSecret: app.secret,
    url: APP,
    now: clock.now,
    logger: {
      info: (m) => logs.push(`info ${m}`),
      warn: (m) => logs.push(`warn ${m}`),
      error: (m) => logs.push(`error ${m}`),
    },
    ...(intercept
      ? {
          fetch: async (input: RequestInfo | URL, init?: RequestInit) =>
            intercept(urlOf(input), await fetch(input, init), init),
        }
      : {}),
    ...rest,
    secret,
  });
  const origin = labgate.options.origin;
  const appFetch: typeof fetch = async (input, init) => {
    const request = new Request(input, init);
    if (new URL(request.url).origin !== origin) return fetch(request);
    const response = (await labgate.handle(request)) ?? new Response('the app', { status: 200 });
    responses.push({
      method: request.method,
      url: request.url,
      status: response.status,
      headers: response.headers,
      body: await response.clone().text(),
    });
    return response;
  };
  return {
    gitlab,
    labgate,
    secret,
    clock,
    logs,
    responses,
    fetch: appFetch,
    browser: () => new Browser({ fetch: appFetch }),
  };
}

export interface AuthorizeOptions {
  user?: string;
  /** Click Deny on the consent page instead of Authorize. */
  deny?: boolean;
  otp?: string;
}

/**
 * Walks from labgate's redirect to GitLab through sign-in and consent, as the user does, and returns
 * the callback URL GitLab sends the browser to (not requested yet).
 */
export async function authorize(
  h: Harness,
  browser: Browser,
  authorizeUrl: string,
  options: AuthorizeOptions = {},
): Promise<string> {
  const user = options.user ?? 'alice';
  const outcome = await browser.signInAndAuthorize({
    url: h.gitlab.url,
    authorizeUrl,
    login: user,
    password: passwordOf(h.gitlab, user),
    ...(options.otp === undefined ? {} : { otp: options.otp }),
  });
  if (outcome.kind === 'consent') {
    const answer = await browser.submit(
      formWith(outcome.page, { testId: options.deny ? 'deny-button' : 'authorization-button' }),
    );
    if (!answer.location) throw new Error(`consent gave ${answer.status}: ${answer.body.slice(0, 500)}`);
    return answer.location;
  }
  if (options.deny) throw new Error('GitLab skipped the consent page; cannot deny');
  if (outcome.kind === 'redirect') return outcome.location;
  return redirectingLink(outcome.page);
}

/** `GET /auth/login` in `browser`; returns the page and the authorize URL it redirects to. */
export async function login(
  h: Harness,
  browser: Browser,
  returnTo?: string,
): Promise<{ page: Page; authorizeUrl: URL }> {
  const query = returnTo === undefined ? '' : `?returnTo=${encodeURIComponent(returnTo)}`;
  const page = await browser.get(`${h.labgate.options.origin}/auth/login${query}`);
  expect(page.status, page.body).toBe(302);
  return { page, authorizeUrl: new URL(page.location!) };
}

/** A whole sign-in; returns the callback's answer. */
export async function signIn(
  h: Harness,
  options: AuthorizeOptions & { browser?: Browser; returnTo?: string } = {},
): Promise<{ browser: Browser; callback: Page; callbackUrl: string; authorizeUrl: URL }> {
  const browser = options.browser ?? h.browser();
  const { authorizeUrl } = await login(h, browser, options.returnTo);
  const callbackUrl = await authorize(h, browser, authorizeUrl.href, options);
  const callback = await browser.get(callbackUrl);
  return { browser, callback, callbackUrl, authorizeUrl };
}

/** Token requests GitLab received for the authorization code grant. */
export function codeExchanges(gitlab: RunningEmulator): number {
  return gitlab.control.requests({ path: '/oauth/token', grantType: 'authorization_code' }).length;
}

/** The error code on a labgate error page (`Error <code>x</code>`), or null. */
export function errorCode(page: { body: string }): string | null {
  return /Error <code>([a-z_]+)<\/code>/.exec(page.body)?.[1] ?? null;
}

/** The session cookie's `Set-Cookie`, or undefined. */
export function sessionSetCookie(headers: Headers, name = 'labgate'): string | undefined {
  return headers.getSetCookie().find((c) => c.startsWith(`${name}=`) && !c.startsWith(`${name}=;`));
}

/**
 * Asserts that none of `secrets` appears in a log line, a response body, or any response header
 * other than the `Location` of `/auth/login` (which must carry state and nonce to GitLab).
 */
export function expectNoLeaks(h: Harness, secrets: readonly string[]): void {
  const wanted = secrets.filter((s) => s.length >= 8);
  expect(wanted.length).toBeGreaterThan(0);
  for (const line of h.logs) {
    for (const secret of wanted)
      expect(line.includes(secret), `log line leaks a secret: ${line}`).toBe(false);
  }
  for (const r of h.responses) {
    const loginRedirect = new URL(r.url).pathname.endsWith('/login');
    const headerText = [...r.headers]
      .filter(([name]) => !(loginRedirect && name === 'location'))
      .map(([name, value]) => `${name}: ${value}`)
      .join('\n');
    for (const secret of wanted) {
      expect(r.body.includes(secret), `${r.method} ${r.url} body leaks a secret`).toBe(false);
      expect(headerText.includes(secret), `${r.method} ${r.url} headers leak a secret`).toBe(false);
    }
  }
}

/** An emulator started from its server parts, so a test can reach its signing keys (a "compromised GitLab"). */
export async function startEmulatorWithState(
  options: Omit<EmulatorOptions, 'port' | 'host'> = {},
): Promise<{ gitlab: RunningEmulator; emulator: EmulatorServer }> {
  const emulator = createEmulatorServer(options);
  const { server } = emulator;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const { port } = server.address() as AddressInfo;
  emulator.setOrigin(`http://127.0.0.1:${port}`);
  const gitlab: RunningEmulator = {
    url: `http://127.0.0.1:${port}`,
    control: emulator.control,
    get applications() {
      return structuredClone(emulator.state.model.applications);
    },
    get users() {
      return structuredClone(emulator.state.model.users);
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
  return { gitlab, emulator };
}

/** The JSON body of a GitLab response, re-served with changes (drops the stale length). */
export async function rewriteJson(
  response: Response,
  change: (body: Record<string, unknown>) => Record<string, unknown>,
): Promise<Response> {
  const body = (await response.json()) as Record<string, unknown>;
  const headers = new Headers(response.headers);
  headers.delete('content-length');
  return new Response(JSON.stringify(change(body)), { status: response.status, headers });
}
