/**
 * What the access suites share: a labgate with an access policy against the emulator (through the
 * core harness, so its clock is the test's), a sign-in as a named fixture user (with the TOTP for
 * users with two-factor authentication), both clocks advanced together, the events labgate emitted,
 * and the detail sentence of labgate's 403 page.
 */
import { expect } from 'vitest';
import type { Labgate, LabgateEventName, LabgateEvents, Session } from '../../src/core/index.js';
import type { RunningEmulator } from '../../src/emulator/index.js';
import {
  APP,
  createHarness,
  errorCode,
  type Harness,
  type HarnessOptions,
  sessionSetCookie,
  signIn,
} from '../core/harness.js';
import { decodeEntities, totp } from '../emulator/browser.js';

/** Every scope a policy can need; the demo application is registered for all of them. */
export const ALL_SCOPES = 'openid profile email read_user read_api';

/** carol's TOTP secret in the demo fixtures. */
export const CAROL_TOTP_SECRET = 'JBSWY3DPEHPK3PXP';

/** labgate against `gitlab` with every scope, silent unless the test reads `h.logs`. */
export function harness(gitlab: RunningEmulator, options: HarnessOptions = {}): Harness {
  return createHarness(gitlab, { scopes: ALL_SCOPES, ...options });
}

/** The outcome of one sign-in: the callback's status and body, and the session cookie when it succeeded. */
export interface SignedIn {
  status: number;
  body: string;
  /** `labgate=…` for a `Cookie` header, or null when no session was created. */
  cookie: string | null;
  /** The `data-testid="error-detail"` sentence of a 403 page, or null. */
  detail: string | null;
  /** The error code of labgate's page, or null. */
  code: string | null;
}

/** Signs `user` in through GitLab's pages, with a fresh TOTP for users who have two-factor authentication. */
export async function signInAs(h: Harness, user: string, secret?: string): Promise<SignedIn> {
  const otp = secret === undefined ? {} : { otp: totp(secret, h.gitlab.control.now().getTime()) };
  const { callback } = await signIn(h, { user, ...otp });
  const set = sessionSetCookie(callback.headers);
  return {
    status: callback.status,
    body: callback.body,
    cookie: set ? set.split(';')[0]! : null,
    detail: detailOf(callback.body),
    code: errorCode(callback),
  };
}

/** Signs `user` in and expects a session; returns its cookie. */
export async function signedIn(h: Harness, user: string, secret?: string): Promise<string> {
  const result = await signInAs(h, user, secret);
  expect(result.status, `${user}: ${result.detail ?? result.body.slice(0, 500)}`).toBe(303);
  expect(result.cookie).not.toBeNull();
  return result.cookie!;
}

/** The detail sentence on labgate's error page, entities decoded. */
export function detailOf(body: string): string | null {
  const match = /<p data-testid="error-detail">([^<]*)<\/p>/.exec(body);
  return match ? decodeEntities(match[1]!) : null;
}

/** `labgate.getSession` for a cookie. */
export function sessionOf(labgate: Labgate, cookie: string): Promise<Session | null> {
  return labgate.getSession(new Request(`${APP}/`, { headers: { cookie } }));
}

/** Moves labgate's clock and the emulator's together. */
export function advance(h: Harness, seconds: number): void {
  h.clock.advance(seconds);
  h.gitlab.control.advanceClock(seconds);
}

/** Records the events of `names` that `labgate` emits, in order. */
export function recordEvents(labgate: Labgate, ...names: LabgateEventName[]) {
  const seen: { name: LabgateEventName; event: LabgateEvents[LabgateEventName] }[] = [];
  for (const name of names) labgate.on(name, (event) => void seen.push({ name, event }));
  return {
    all: seen,
    of<E extends LabgateEventName>(name: E): LabgateEvents[E][] {
      return seen.filter((s) => s.name === name).map((s) => s.event as LabgateEvents[E]);
    },
  };
}

/** The sentence labgate's 403 page shows when no rule matched. */
export const NO_RULE_MATCHED = 'Your GitLab account lacks the group or project membership this requires.';

/**
 * Asserts that a page names none of `names` (the user's groups and projects: full paths, last
 * segments and display names), whatever the case.
 */
export function expectNoneOf(body: string, names: readonly string[]): void {
  const text = body.toLowerCase();
  for (const name of names) {
    expect(text.includes(name.toLowerCase()), `the page names ${JSON.stringify(name)}:\n${body}`).toBe(false);
  }
}
