/**
 * `getAccessToken` in one process, against the emulated GitLab: a fresh token costs nothing (no
 * store call, no GitLab call), a token within `refreshMargin` is refreshed before it expires,
 * concurrent callers share one refresh (single-flight), two labgate instances on one store share
 * one refresh (the lock) and the loser re-reads the rotated pair, under both refresh-token rotation
 * behaviours GitLab has shipped (the emulator's `refreshTokenRotation` in docs/emulator.md).
 * `invalid_grant` ends the session; a GitLab that fails for a while does not; `Retry-After` is
 * honoured within a bound. Lifecycle events carry ids, never tokens.
 *
 * labgate's clock (`Clock`) and the emulator's (`advanceClock`) move together unless a test says so.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  type Labgate,
  LabgateError,
  type LabgateEventName,
  type LabgateEvents,
  MemoryStore,
} from '../../src/core/index.js';
import type { EmulatorServer, RunningEmulator } from '../../src/emulator/index.js';
import {
  APP,
  Clock,
  createHarness,
  errorCode,
  type Harness,
  type HarnessOptions,
  rewriteJson,
  signIn,
  startEmulatorWithState,
  testSecret,
} from '../core/harness.js';
import {
  countingStore,
  gitlabRequests,
  refreshGrants,
  sessionOf,
  settle,
  signedIn,
  tokenActive,
  tokenErrors,
} from './support.js';

let gitlab: RunningEmulator;
let emulator: EmulatorServer;
beforeAll(async () => {
  ({ gitlab, emulator } = await startEmulatorWithState());
});
afterAll(() => gitlab.close());
beforeEach(() => gitlab.control.reset());

const LIFETIME = 7200;

/** Both clocks past the access token's end. */
function expire(h: Harness): void {
  gitlab.control.advanceClock(LIFETIME + 1);
  h.clock.advance(LIFETIME + 1);
}

/** Token-endpoint requests that a fault answered instead of GitLab. */
function faultedTokenRequests(): number {
  return gitlab.control.requests({ path: '/oauth/token' }).filter((r) => r.fault !== undefined).length;
}

type Recorded = { [E in LabgateEventName]: { name: E; event: LabgateEvents[E] } }[LabgateEventName];

/** Records every lifecycle event of a labgate, in order. */
function recordEvents(labgate: Labgate): Recorded[] {
  const seen: Recorded[] = [];
  const names: LabgateEventName[] = [
    'session.created',
    'session.ended',
    'token.refreshed',
    'token.revoked',
    'signin.failed',
    'access.denied',
  ];
  for (const name of names) labgate.on(name, (event) => void seen.push({ name, event } as Recorded));
  return seen;
}

function harness(options: HarnessOptions = {}): { h: Harness; calls: string[] } {
  const clock = options.clock ?? new Clock();
  const { store, calls } = countingStore(options.store ?? new MemoryStore({ now: clock.now }));
  return { h: createHarness(gitlab, { ...options, clock, store }), calls };
}

describe('a fresh token', () => {
  it('is returned with no store call and no GitLab call, up to the refresh margin', async () => {
    const { h, calls } = harness();
    const cookie = await signedIn(h);
    const session = await sessionOf(h.labgate, cookie);
    const token = await h.labgate.getAccessToken(session);
    calls.length = 0;
    gitlab.control.clearRequests();

    const tokens = await Promise.all(Array.from({ length: 100 }, () => h.labgate.getAccessToken(session)));
    for (let i = 0; i < 100; i++) tokens.push(await h.labgate.getAccessToken(session));
    // One second outside the default 120 s margin: still fresh.
    h.clock.advance(LIFETIME - 121);
    tokens.push(await h.labgate.getAccessToken(session));

    expect(new Set(tokens)).toEqual(new Set([token]));
    expect(calls).toEqual([]);
    expect(gitlabRequests(gitlab)).toBe(0);
    expect(await tokenActive(gitlab, token)).toBe(true);
  });
});

describe('a token within the refresh margin', () => {
  it('is refreshed before it expires; the old pair dies at GitLab, the new one works', async () => {
    const { h } = harness();
    const events = recordEvents(h.labgate);
    const cookie = await signedIn(h);
    const session = await sessionOf(h.labgate, cookie);
    const before = await h.labgate.getAccessToken(session);

    gitlab.control.advanceClock(LIFETIME - 60);
    h.clock.advance(LIFETIME - 60); // 60 s left at both clocks: within the 120 s margin
    expect(await tokenActive(gitlab, before)).toBe(true);
    const after = await h.labgate.getAccessToken(session);

    expect(after).not.toBe(before);
    expect(refreshGrants(gitlab)).toBe(1);
    expect(await tokenActive(gitlab, after)).toBe(true);
    expect(await tokenActive(gitlab, before)).toBe(false);
    const refreshed = events.filter((e) => e.name === 'token.refreshed');
    expect(refreshed).toHaveLength(1);
    // The new expiry is GitLab's expires_in from labgate's now.
    const { expiresAt } = refreshed[0]!.event as LabgateEvents['token.refreshed'];
    expect(Math.abs(expiresAt - (h.clock.now() + LIFETIME * 1000))).toBeLessThan(5000);
    // The next request (another cache, the store) gets the new pair without a second refresh.
    h.clock.advance(10);
    expect(await h.labgate.getAccessToken(await sessionOf(h.labgate, cookie))).toBe(after);
    expect(refreshGrants(gitlab)).toBe(1);
  });

  it('follows refreshMargin: 600 s refreshes at 500 s left, not at 700 s', async () => {
    const { h } = harness({ refreshMargin: 600 });
    const session = await sessionOf(h.labgate, await signedIn(h));
    const first = await h.labgate.getAccessToken(session);
    gitlab.control.advanceClock(LIFETIME - 700);
    h.clock.advance(LIFETIME - 700);
    expect(await h.labgate.getAccessToken(session)).toBe(first);
    expect(refreshGrants(gitlab)).toBe(0);
    gitlab.control.advanceClock(200);
    h.clock.advance(200);
    expect(await h.labgate.getAccessToken(session)).not.toBe(first);
    expect(refreshGrants(gitlab)).toBe(1);
  });

  it('forceRefresh refreshes a fresh token, once for concurrent callers', async () => {
    const { h } = harness();
    const session = await sessionOf(h.labgate, await signedIn(h));
    const first = await h.labgate.getAccessToken(session);
    const forced = await Promise.all(
      Array.from({ length: 10 }, () => h.labgate.getAccessToken(session, { forceRefresh: true })),
    );
    expect(new Set(forced).size).toBe(1);
    expect(forced[0]).not.toBe(first);
    expect(refreshGrants(gitlab)).toBe(1);
  });
});

describe.each(['immediate', 'on-first-use'] as const)('refresh-token rotation %s', (rotation) => {
  beforeEach(() => {
    gitlab.control.setBehaviour({ refreshTokenRotation: rotation });
  });

  it('50 concurrent calls on an expired token: one refresh_token grant, one new token for all', async () => {
    const { h, calls } = harness();
    const session = await sessionOf(h.labgate, await signedIn(h));
    const old = await h.labgate.getAccessToken(session);
    expire(h);
    calls.length = 0;

    const tokens = await Promise.all(Array.from({ length: 50 }, () => h.labgate.getAccessToken(session)));

    expect(new Set(tokens).size).toBe(1);
    expect(tokens[0]).not.toBe(old);
    expect(refreshGrants(gitlab)).toBe(1);
    expect(tokenErrors(gitlab)).toBe(0);
    // Single-flight inside the process: one attempt at the cross-process lock.
    expect(calls.filter((c) => c === 'add')).toHaveLength(1);
    expect(await tokenActive(gitlab, tokens[0]!)).toBe(true);
  });

  it('two instances on one store race: one refresh, the loser reads the rotated pair', async () => {
    const clock = new Clock();
    const store = new MemoryStore({ now: clock.now });
    const secret = testSecret();
    const a = createHarness(gitlab, { clock, store, secret });
    const b = createHarness(gitlab, { clock, store, secret });
    const cookie = await signedIn(a);
    const [sa, sb] = [await sessionOf(a.labgate, cookie), await sessionOf(b.labgate, cookie)];
    const old = await a.labgate.getAccessToken(sa);
    expect(await b.labgate.getAccessToken(sb)).toBe(old);
    const refreshedBy: string[] = [];
    a.labgate.on('token.refreshed', () => void refreshedBy.push('a'));
    b.labgate.on('token.refreshed', () => void refreshedBy.push('b'));

    for (let round = 1; round <= 2; round++) {
      gitlab.control.advanceClock(LIFETIME + 1);
      clock.advance(LIFETIME + 1);
      // GitLab answers slowly, so the loser waits on the lock a while before re-reading.
      gitlab.control.injectFault({ path: '/oauth/token', delayMs: 150, times: 1 });
      const calls = Array.from({ length: 40 }, (_, i) =>
        i % 2 ? b.labgate.getAccessToken(sb) : a.labgate.getAccessToken(sa),
      );
      const tokens = await Promise.all(calls);
      expect(new Set(tokens).size, `round ${round}`).toBe(1);
      expect(tokens[0]).not.toBe(old);
      expect(refreshGrants(gitlab), `round ${round}`).toBe(round);
      expect(refreshedBy, `round ${round}`).toHaveLength(round);
      // The new token is used at GitLab (under on-first-use this is what retires the old refresh token).
      expect(await tokenActive(gitlab, tokens[0]!)).toBe(true);
    }
    expect(tokenErrors(gitlab)).toBe(0);
    expect(await store.getSession(sa.id)).not.toBeNull();
  });
});

describe('the cross-process lock', () => {
  it('outlives a slow refresh: a second instance 16 s later waits and re-reads, never spends the token again', async () => {
    const clock = new Clock();
    const store = new MemoryStore({ now: clock.now });
    const secret = testSecret();
    const a = createHarness(gitlab, { clock, store, secret });
    const b = createHarness(gitlab, { clock, store, secret });
    const cookie = await signedIn(a);
    const [sa, sb] = [await sessionOf(a.labgate, cookie), await sessionOf(b.labgate, cookie)];
    gitlab.control.advanceClock(LIFETIME + 1);
    clock.advance(LIFETIME + 1);
    // GitLab takes its time over A's refresh (a brownout: up to 3 tries of requestTimeout each)…
    gitlab.control.injectFault({ path: '/oauth/token', delayMs: 400, times: 1 });
    const before = gitlab.control.requests({ path: '/oauth/token' }).length;
    const first = a.labgate.getAccessToken(sa);
    await expect.poll(() => gitlab.control.requests({ path: '/oauth/token' }).length).toBe(before + 1);
    // …and 16 s pass meanwhile at both clocks: still within what A's refresh may take.
    gitlab.control.advanceClock(16);
    clock.advance(16);
    const second = b.labgate.getAccessToken(sb);
    const [ta, tb] = await Promise.all([settle(first), settle(second)]);
    expect(ta).toHaveProperty('value');
    expect(tb).toEqual(ta);
    expect(refreshGrants(gitlab)).toBe(1);
    expect(tokenErrors(gitlab)).toBe(0);
    expect(await store.getSession(sa.id)).not.toBeNull();
  });
});

describe('sign-out after another instance refreshed', () => {
  it('revokes the live pair at GitLab, not the rotated one this instance had cached', async () => {
    const clock = new Clock();
    const store = new MemoryStore({ now: clock.now });
    const secret = testSecret();
    const a = createHarness(gitlab, { clock, store, secret });
    const b = createHarness(gitlab, { clock, store, secret });
    const cookie = await signedIn(a);
    const sa = await sessionOf(a.labgate, cookie);
    const old = await a.labgate.getAccessToken(sa);
    await sessionOf(b.labgate, cookie); // B caches the session (for up to 5 s) with this pair
    const live = await a.labgate.getAccessToken(sa, { forceRefresh: true });
    expect(live).not.toBe(old);
    expect(refreshGrants(gitlab)).toBe(1);

    const logout = await b.labgate.handle(
      new Request(`${APP}/auth/logout`, { method: 'POST', headers: { cookie, origin: APP } }),
    );
    expect(logout!.status).toBe(303);
    expect(await store.getSession(sa.id)).toBeNull();
    expect(await tokenActive(gitlab, live)).toBe(false);
  });
});

describe('a refresh GitLab refuses (invalid_grant)', () => {
  it('ends the session: session_required, the record gone, session.ended with token-invalid', async () => {
    const { h } = harness();
    const events = recordEvents(h.labgate);
    const cookie = await signedIn(h);
    const session = await sessionOf(h.labgate, cookie);
    expect(gitlab.control.revokeUserTokens('alice')).toBeGreaterThan(0);
    expire(h);

    const outcomes = await Promise.all(
      Array.from({ length: 5 }, () => settle(h.labgate.getAccessToken(session))),
    );
    for (const outcome of outcomes) {
      expect(outcome).toHaveProperty('error');
      const error = (outcome as { error: unknown }).error;
      expect(error).toBeInstanceOf(LabgateError);
      expect((error as LabgateError).code).toBe('session_required');
    }
    expect(refreshGrants(gitlab)).toBe(1); // invalid_grant is final: never retried
    expect(await h.labgate.store.getSession(session.id)).toBeNull();
    expect(await h.labgate.sessionOf(cookie)).toBeNull();
    expect(events.filter((e) => e.name === 'session.ended').map((e) => e.event)).toEqual([
      { sessionId: session.id, userId: session.userId, reason: 'token-invalid' },
    ]);
  });
});

describe('a refresh that fails for a while (500)', () => {
  it('keeps the valid token and the session; after expiry fails without ending the session; recovers', async () => {
    const { h } = harness();
    const events = recordEvents(h.labgate);
    const cookie = await signedIn(h);
    const session = await sessionOf(h.labgate, cookie);
    const token = await h.labgate.getAccessToken(session);
    gitlab.control.injectFault({ path: '/oauth/token', status: 500, times: 10 });

    gitlab.control.advanceClock(LIFETIME - 60);
    h.clock.advance(LIFETIME - 60); // within the margin, still valid
    expect(await h.labgate.getAccessToken(session)).toBe(token);
    const attempts = faultedTokenRequests();
    expect(attempts).toBeGreaterThanOrEqual(2); // retried…
    expect(attempts).toBeLessThanOrEqual(3); // …a bounded number of times
    expect(await h.labgate.store.getSession(session.id)).not.toBeNull();
    expect(await tokenActive(gitlab, token)).toBe(true);

    gitlab.control.advanceClock(61);
    h.clock.advance(61); // expired at both clocks
    const failed = await settle(h.labgate.getAccessToken(session));
    expect(failed).toHaveProperty('error');
    const error = (failed as { error: unknown }).error as LabgateError;
    expect(error).toBeInstanceOf(LabgateError);
    expect(['gitlab_error', 'gitlab_unreachable']).toContain(error.code);
    expect(faultedTokenRequests()).toBeLessThanOrEqual(2 * attempts);
    expect(await h.labgate.store.getSession(session.id)).not.toBeNull();
    expect(events.filter((e) => e.name === 'session.ended')).toEqual([]);

    // GitLab is back: the same cookie is a session again, and its token is refreshed once.
    gitlab.control.clearFaults();
    expect(await h.labgate.sessionOf(cookie)).not.toBeNull();
    const fresh = await h.labgate.getAccessToken(session);
    expect(fresh).not.toBe(token);
    expect(refreshGrants(gitlab)).toBe(1);
    expect(tokenErrors(gitlab)).toBe(0);
  });
});

describe('a refresh GitLab accepted but whose answer does not validate', () => {
  it('spends the refresh token once (no retry that GitLab must refuse) and ends the session', async () => {
    const { h } = harness({
      intercept: async (url, response, init) => {
        if (!url.endsWith('/oauth/token') || !String(init?.body).includes('grant_type=refresh_token'))
          return response;
        // An ID token for another client: oauth4webapi refuses the whole answer.
        return rewriteJson(response, (body) => {
          const [header, payload, signature] = String(body['id_token']).split('.');
          const claims = {
            ...JSON.parse(Buffer.from(payload!, 'base64url').toString()),
            aud: 'another-client',
          };
          return {
            ...body,
            id_token: `${header}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${signature}`,
          };
        });
      },
    });
    const events = recordEvents(h.labgate);
    const cookie = await signedIn(h);
    const session = await sessionOf(h.labgate, cookie);
    expire(h);
    const outcome = await settle(h.labgate.getAccessToken(session));
    expect(outcome).toHaveProperty('error');
    expect(((outcome as { error: unknown }).error as LabgateError).code).toBe('session_required');
    expect(refreshGrants(gitlab)).toBe(1);
    expect(tokenErrors(gitlab)).toBe(0);
    expect(await h.labgate.sessionOf(cookie)).toBeNull();
    expect(events.filter((e) => e.name === 'session.ended').map((e) => e.event)).toEqual([
      { sessionId: session.id, userId: session.userId, reason: 'token-invalid' },
    ]);
  });
});

describe('a refresh answered 429 with Retry-After', () => {
  it('waits the Retry-After (1 s) once, then refreshes', async () => {
    const { h } = harness();
    const session = await sessionOf(h.labgate, await signedIn(h));
    const old = await h.labgate.getAccessToken(session);
    expire(h);
    gitlab.control.injectFault({ path: '/oauth/token', status: 429, retryAfter: 1, times: 1 });
    const started = performance.now();
    const token = await h.labgate.getAccessToken(session);
    const elapsed = performance.now() - started;
    expect(token).not.toBe(old);
    expect(faultedTokenRequests()).toBe(1);
    expect(refreshGrants(gitlab)).toBe(1);
    // Longer than labgate's own first backoff (200 ms): the header was read.
    expect(elapsed).toBeGreaterThanOrEqual(950);
    expect(elapsed).toBeLessThan(4000);
  });

  it('bounds a huge Retry-After (an hour) to a few seconds', async () => {
    const { h } = harness();
    const session = await sessionOf(h.labgate, await signedIn(h));
    expire(h);
    gitlab.control.injectFault({ path: '/oauth/token', status: 429, retryAfter: 3600, times: 1 });
    const started = performance.now();
    await h.labgate.getAccessToken(session);
    const elapsed = performance.now() - started;
    // Honoured up to the bound (5 s), not beyond it.
    expect(elapsed).toBeGreaterThanOrEqual(4500);
    expect(elapsed).toBeLessThan(8000);
    expect(refreshGrants(gitlab)).toBe(1);
  }, 15_000);
});

describe('lifecycle events', () => {
  it('session.created, token.refreshed, session.ended + token.revoked; never a token', async () => {
    const { h } = harness();
    const events = recordEvents(h.labgate);
    const cookie = await signedIn(h);
    const session = await sessionOf(h.labgate, cookie);
    expect(events).toEqual([
      {
        name: 'session.created',
        event: {
          sessionId: session.id,
          userId: session.userId,
          issuer: gitlab.url,
          sub: '1',
          username: 'alice',
        },
      },
    ]);

    await h.labgate.getAccessToken(session);
    expire(h);
    await h.labgate.getAccessToken(session);
    expect(events.slice(1)).toEqual([
      {
        name: 'token.refreshed',
        event: { sessionId: session.id, userId: session.userId, expiresAt: expect.any(Number) },
      },
    ]);

    const logout = await h.labgate.handle(
      new Request(`${APP}/auth/logout`, { method: 'POST', headers: { cookie, origin: APP } }),
    );
    expect(logout!.status).toBe(303);
    expect(events.slice(2)).toEqual([
      {
        name: 'session.ended',
        event: { sessionId: session.id, userId: session.userId, reason: 'signed-out' },
      },
      { name: 'token.revoked', event: { sessionId: session.id, userId: session.userId } },
    ]);

    // No event carries a token GitLab issued, or the cookie's secret.
    const everything = JSON.stringify(events);
    const secrets = emulator.state.tokens.flatMap((t) => [t.accessToken, t.refreshToken]);
    expect(secrets.length).toBeGreaterThanOrEqual(4);
    for (const secret of [...secrets, cookie.split('.')[1]!]) expect(everything).not.toContain(secret);
  });

  it('signin.failed on a denied consent, with the code and reference of the page', async () => {
    const { h } = harness();
    const events = recordEvents(h.labgate);
    const { callback } = await signIn(h, { deny: true });
    expect(callback.status).toBeGreaterThanOrEqual(400);
    expect(events).toEqual([
      {
        name: 'signin.failed',
        event: { code: errorCode(callback), reference: callback.headers.get('x-labgate-reference') },
      },
    ]);
    expect(errorCode(callback)).toBeTruthy();
  });

  it('a handler that throws or rejects is logged and ignored; on() returns an unsubscribe', async () => {
    const { h } = harness();
    let calls = 0;
    const stop = h.labgate.on('token.refreshed', () => {
      calls++;
    });
    h.labgate.on('token.refreshed', () => {
      throw new Error('handler bug');
    });
    h.labgate.on('token.refreshed', async () => {
      throw new Error('async handler bug');
    });
    const session = await sessionOf(h.labgate, await signedIn(h));
    expire(h);
    const first = await h.labgate.getAccessToken(session);
    expect(calls).toBe(1);
    stop();
    expect(await h.labgate.getAccessToken(session, { forceRefresh: true })).not.toBe(first);
    expect(calls).toBe(1);
    await expect
      .poll(() => h.logs.filter((l) => l.includes('token.refreshed handler failed')).length)
      .toBe(4);
  });
});
