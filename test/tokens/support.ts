/**
 * What the token suites share: a signed-in session through the emulator, a store that counts every
 * call made to it, and the counts read from the emulator's request log (which is the oracle here:
 * it records what reached GitLab, whatever labgate believes it sent).
 */
import { expect } from 'vitest';
import type { Labgate, Session, Store } from '../../src/core/index.js';
import type { RunningEmulator } from '../../src/emulator/index.js';
import { type Harness, sessionSetCookie, signIn } from '../core/harness.js';

/** Signs `user` in through GitLab's pages; returns the `name=value` of the session cookie. */
export async function signedIn(h: Harness, user = 'alice'): Promise<string> {
  const { callback } = await signIn(h, { user });
  expect(callback.status, callback.body).toBe(303);
  return sessionSetCookie(callback.headers)!.split(';')[0]!;
}

/** The session of a cookie, as the app gets it on a request. */
export async function sessionOf(labgate: Labgate, cookie: string): Promise<Session> {
  const session = await labgate.sessionOf(cookie);
  if (!session) throw new Error('the cookie is no session');
  return session;
}

/** A store that records the name of every method called on it. */
export function countingStore(inner: Store): { store: Store; calls: string[] } {
  const calls: string[] = [];
  const store = new Proxy(inner, {
    get(target, name, receiver) {
      const value = Reflect.get(target, name, receiver);
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        calls.push(String(name));
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { store, calls };
}

/** `refresh_token` grants that reached GitLab's token endpoint (faulted requests never do). */
export function refreshGrants(gitlab: RunningEmulator): number {
  return gitlab.control.requests({ path: '/oauth/token', grantType: 'refresh_token' }).length;
}

/** Token-endpoint answers with status 400: `invalid_grant` and its kin, which must never happen in a race. */
export function tokenErrors(gitlab: RunningEmulator): number {
  return gitlab.control.requests({ path: '/oauth/token' }).filter((r) => r.status === 400).length;
}

/** Requests of any kind that reached the emulator (the control API excluded). */
export function gitlabRequests(gitlab: RunningEmulator): number {
  return gitlab.control.requests().filter((r) => !r.path.startsWith('/-/emulator/')).length;
}

/** What a promise settled to, for asserting on rejections without try/catch. */
export async function settle<T>(promise: Promise<T>): Promise<{ value: T } | { error: unknown }> {
  try {
    return { value: await promise };
  } catch (error) {
    return { error };
  }
}

/** Whether GitLab still takes an access token (`/oauth/token/info`). */
export async function tokenActive(gitlab: RunningEmulator, accessToken: string): Promise<boolean> {
  const response = await fetch(`${gitlab.url}/oauth/token/info`, {
    headers: { authorization: `Bearer ${accessToken}` },
  });
  await response.body?.cancel();
  return response.status === 200;
}
