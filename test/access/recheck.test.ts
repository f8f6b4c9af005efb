/**
 * Continuous authorization (docs/access.md, "When access is checked"; docs/security.md, ACCESS-6):
 * a session's access is re-checked against GitLab once `recheckInterval` has passed and after every
 * token refresh, so a user removed or blocked in GitLab loses access within the interval, on every
 * instance; while GitLab cannot be reached the last decision holds for `accessGracePeriod`, then
 * the session ends (fail closed); a role change shows up at the next re-check. Clocks are advanced,
 * never waited for.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createLabgate, type Labgate, MemoryStore } from '../../src/core/index.js';
import { type RunningEmulator, startEmulator } from '../../src/emulator/index.js';
import { APP, Clock, testSecret } from '../core/harness.js';
import { ALL_SCOPES, advance, harness, recordEvents, sessionOf, signedIn } from './helpers.js';

let gitlab: RunningEmulator;
beforeAll(async () => {
  gitlab = await startEmulator();
});
afterAll(() => gitlab.close());
beforeEach(() => gitlab.control.reset());

const POLICY = { allow: ['group:acme/platform>=developer'] };
const INTERVAL = 60;

/** `GET /auth/session` for a cookie: the status and, on 200, the user. */
async function authSession(labgate: Labgate, cookie: string) {
  const response = (await labgate.handle(
    new Request(`${APP}/auth/session`, { headers: { cookie, accept: 'application/json' } }),
  ))!;
  const body = (await response.json()) as { user?: { username: string; roles: string[] } };
  return { status: response.status, user: body.user ?? null };
}

describe('a user removed from the group during a live session', () => {
  it('keeps the session until the interval has passed, then loses it (session.ended access-lost)', async () => {
    const h = harness(gitlab, { access: POLICY, recheckInterval: INTERVAL });
    const events = recordEvents(h.labgate, 'session.ended', 'access.denied');
    const cookie = await signedIn(h, 'bob');
    const session = (await sessionOf(h.labgate, cookie))!;
    expect(session.user.username).toBe('bob');

    expect(gitlab.control.removeMembership({ user: 'bob', group: 'acme/platform' })).toBe(true);
    advance(h, INTERVAL - 5);
    // Not yet re-checked: the last decision stands (and GitLab was not asked).
    gitlab.control.clearRequests();
    expect((await sessionOf(h.labgate, cookie))?.id).toBe(session.id);
    expect(gitlab.control.requests().filter((r) => r.path.startsWith('/api/'))).toEqual([]);
    expect(events.all).toEqual([]);

    advance(h, 5);
    expect(await sessionOf(h.labgate, cookie)).toBeNull();
    expect(gitlab.control.requests().some((r) => r.path.startsWith('/api/v4/groups/'))).toBe(true);
    expect(events.of('session.ended')).toEqual([
      { sessionId: session.id, userId: session.userId, reason: 'access-lost' },
    ]);
    expect(events.of('access.denied')).toEqual([
      { sessionId: session.id, userId: session.userId, username: 'bob', reason: 'no-rule-matched' },
    ]);
    // Gone from the store, not only from this answer; /auth/session says 401.
    expect(await h.labgate.store.getSession(session.id)).toBeNull();
    expect((await authSession(h.labgate, cookie)).status).toBe(401);
  });

  it('a user who is still a member keeps the session across many intervals', async () => {
    const h = harness(gitlab, { access: POLICY, recheckInterval: INTERVAL });
    const events = recordEvents(h.labgate, 'session.ended');
    const cookie = await signedIn(h, 'bob');
    gitlab.control.clearRequests();
    for (let i = 0; i < 5; i++) {
      advance(h, INTERVAL + 1);
      expect(await sessionOf(h.labgate, cookie)).not.toBeNull();
    }
    // Each interval asked GitLab once (the user, then the membership).
    expect(gitlab.control.requests({ path: '/api/v4/groups/acme%2Fplatform/members/all/2' })).toHaveLength(5);
    expect(events.all).toEqual([]);
  });

  it('/auth/session re-checks too: it answers 401 once access is lost', async () => {
    const h = harness(gitlab, { access: POLICY, recheckInterval: INTERVAL });
    const cookie = await signedIn(h, 'bob');
    const id = cookie.slice('labgate='.length).split('.')[0]!;
    expect((await authSession(h.labgate, cookie)).status).toBe(200);
    gitlab.control.removeMembership({ user: 'bob', group: 'acme/platform' });
    advance(h, INTERVAL + 1);
    // Asked only through /auth/session (as a single-page app does), never through getSession.
    expect((await authSession(h.labgate, cookie)).status).toBe(401);
    expect(await h.labgate.store.getSession(id)).toBeNull();
  });

  it('a lower level than the rule needs ends the session too', async () => {
    const h = harness(gitlab, { access: POLICY, recheckInterval: INTERVAL });
    const cookie = await signedIn(h, 'bob');
    gitlab.control.setMembership({ user: 'bob', group: 'acme/platform', accessLevel: 'reporter' });
    advance(h, INTERVAL + 1);
    expect(await sessionOf(h.labgate, cookie)).toBeNull();
  });

  it('a share removed from the group ends the session of a member through the share', async () => {
    const h = harness(gitlab, { access: POLICY, recheckInterval: INTERVAL });
    const cookie = await signedIn(h, 'grace');
    gitlab.control.removeShare({ sharedWith: 'partners', group: 'acme/platform' });
    advance(h, INTERVAL + 1);
    expect(await sessionOf(h.labgate, cookie)).toBeNull();
  });
});

describe('a blocked user', () => {
  it('loses the session at the next re-check', async () => {
    const h = harness(gitlab, { access: POLICY, recheckInterval: INTERVAL });
    const events = recordEvents(h.labgate, 'session.ended', 'access.denied');
    const cookie = await signedIn(h, 'bob');
    const session = (await sessionOf(h.labgate, cookie))!;
    gitlab.control.blockUser('bob');
    advance(h, 10);
    expect(await sessionOf(h.labgate, cookie)).not.toBeNull();
    advance(h, INTERVAL);
    expect(await sessionOf(h.labgate, cookie)).toBeNull();
    expect(events.of('session.ended')).toEqual([
      { sessionId: session.id, userId: session.userId, reason: 'access-lost' },
    ]);
    expect(events.of('access.denied').map((e) => e.reason)).toEqual(['active']);
  });

  it('loses the session even with a policy that admits everyone (the default requires active)', async () => {
    const h = harness(gitlab, { recheckInterval: INTERVAL });
    const cookie = await signedIn(h, 'alice');
    gitlab.control.blockUser('alice');
    advance(h, INTERVAL + 1);
    expect(await sessionOf(h.labgate, cookie)).toBeNull();
  });
});

describe('GitLab unreachable during a re-check', () => {
  const GRACE = 300;

  for (const fault of [
    { name: '503', spec: { path: '/api/v4/*', status: 503 } },
    { name: 'dropped connections', spec: { path: '/api/v4/*', drop: true } },
  ]) {
    it(`(${fault.name}) keeps the session within accessGracePeriod, then ends it`, async () => {
      const h = harness(gitlab, {
        access: POLICY,
        recheckInterval: INTERVAL,
        accessGracePeriod: GRACE,
        requestTimeout: 2000,
      });
      const events = recordEvents(h.labgate, 'session.ended');
      const cookie = await signedIn(h, 'bob');
      const session = (await sessionOf(h.labgate, cookie))!;
      gitlab.control.injectFault(fault.spec);

      advance(h, INTERVAL + 1);
      expect((await sessionOf(h.labgate, cookie))?.id).toBe(session.id);
      const tried = gitlab.control.requests().filter((r) => r.fault !== undefined).length;
      expect(tried).toBeGreaterThan(0);
      // The removal that happens meanwhile cannot be seen; the last decision holds.
      gitlab.control.removeMembership({ user: 'bob', group: 'acme/platform' });
      advance(h, GRACE - INTERVAL - 10);
      expect((await sessionOf(h.labgate, cookie))?.id).toBe(session.id);
      expect(gitlab.control.requests().filter((r) => r.fault !== undefined).length).toBeGreaterThan(tried);
      expect(events.all).toEqual([]);

      // More than the grace period since GitLab last answered: fail closed.
      advance(h, 20);
      expect(await sessionOf(h.labgate, cookie)).toBeNull();
      expect(events.of('session.ended')).toEqual([
        { sessionId: session.id, userId: session.userId, reason: 'access-lost' },
      ]);
      // GitLab back does not bring the session back.
      gitlab.control.clearFaults();
      gitlab.control.setMembership({ user: 'bob', group: 'acme/platform', accessLevel: 'developer' });
      expect(await sessionOf(h.labgate, cookie)).toBeNull();
    });
  }

  it('GitLab back within the grace period: the session goes on, and the period starts again', async () => {
    const h = harness(gitlab, { access: POLICY, recheckInterval: INTERVAL, accessGracePeriod: GRACE });
    const cookie = await signedIn(h, 'bob');
    const fault = gitlab.control.injectFault({ path: '/api/v4/*', status: 503 });
    advance(h, INTERVAL + 1);
    expect(await sessionOf(h.labgate, cookie)).not.toBeNull();
    advance(h, GRACE - INTERVAL - 10);
    gitlab.control.clearFaults(fault);
    expect(await sessionOf(h.labgate, cookie)).not.toBeNull();
    // A whole grace period later (outage again), the session stands: GitLab answered in between.
    gitlab.control.injectFault({ path: '/api/v4/*', status: 503 });
    advance(h, GRACE - 10);
    expect(await sessionOf(h.labgate, cookie)).not.toBeNull();
    advance(h, 20);
    expect(await sessionOf(h.labgate, cookie)).toBeNull();
  });

  it('a removal while GitLab is down is applied as soon as it answers again', async () => {
    const h = harness(gitlab, { access: POLICY, recheckInterval: INTERVAL, accessGracePeriod: GRACE });
    const cookie = await signedIn(h, 'bob');
    gitlab.control.injectFault({ path: '/api/v4/*', status: 503 });
    gitlab.control.removeMembership({ user: 'bob', group: 'acme/platform' });
    advance(h, INTERVAL + 1);
    expect(await sessionOf(h.labgate, cookie)).not.toBeNull();
    gitlab.control.clearFaults();
    // The failed re-check is retried 30 s later, not a whole interval later.
    advance(h, 31);
    expect(await sessionOf(h.labgate, cookie)).toBeNull();
  });
});

describe('roles follow GitLab', () => {
  it('a promotion shows up in user.roles after the re-check', async () => {
    const h = harness(gitlab, {
      access: { allow: ['group:acme/platform'], roles: { admin: 'group:acme/platform>=maintainer' } },
      recheckInterval: INTERVAL,
    });
    const cookie = await signedIn(h, 'bob');
    expect((await sessionOf(h.labgate, cookie))!.user.roles).toEqual([]);
    expect((await authSession(h.labgate, cookie)).user?.roles).toEqual([]);

    gitlab.control.setMembership({ user: 'bob', group: 'acme/platform', accessLevel: 'maintainer' });
    advance(h, 10);
    expect((await sessionOf(h.labgate, cookie))!.user.roles).toEqual([]);
    advance(h, INTERVAL);
    expect((await sessionOf(h.labgate, cookie))!.user.roles).toEqual(['admin']);
    expect((await authSession(h.labgate, cookie)).user?.roles).toEqual(['admin']);

    // And a demotion takes the role away again.
    gitlab.control.setMembership({ user: 'bob', group: 'acme/platform', accessLevel: 'developer' });
    advance(h, INTERVAL + 1);
    expect((await sessionOf(h.labgate, cookie))!.user.roles).toEqual([]);
  });
});

describe('a token refresh', () => {
  it('forces a re-check before the interval has passed', async () => {
    const h = harness(gitlab, { access: POLICY, recheckInterval: 24 * 3600 });
    const events = recordEvents(h.labgate, 'session.ended', 'token.refreshed');
    const cookie = await signedIn(h, 'bob');
    gitlab.control.removeMembership({ user: 'bob', group: 'acme/platform' });
    // The token expires (2 h), far within the 24 h interval: no re-check by time.
    advance(h, 7200);
    const session = (await sessionOf(h.labgate, cookie))!;
    expect(session).not.toBeNull();
    await h.labgate.getAccessToken(session);
    expect(events.of('token.refreshed')).toHaveLength(1);
    expect(await sessionOf(h.labgate, cookie)).toBeNull();
    expect(events.of('session.ended').map((e) => e.reason)).toEqual(['access-lost']);
  });

  it('keeps a session that still has access', async () => {
    const h = harness(gitlab, { access: POLICY, recheckInterval: 24 * 3600 });
    const cookie = await signedIn(h, 'bob');
    advance(h, 7200);
    await h.labgate.getAccessToken((await sessionOf(h.labgate, cookie))!);
    gitlab.control.clearRequests();
    expect(await sessionOf(h.labgate, cookie)).not.toBeNull();
    // The re-check did happen (GitLab was asked) and passed.
    expect(gitlab.control.requests({ path: '/api/v4/groups/acme%2Fplatform/members/all/2' })).toHaveLength(1);
  });
});

describe('across instances (two processes sharing one store)', () => {
  /** Two labgates of one app: same secret, same store, each with its own clock (advanced together). */
  function twoInstances() {
    const store = new MemoryStore();
    const secret = testSecret();
    const a = harness(gitlab, { access: POLICY, recheckInterval: INTERVAL, store, secret });
    const clockB = new Clock();
    const app = gitlab.applications[0]!;
    const b = createLabgate({
      gitlabUrl: gitlab.url,
      clientId: app.uid,
      clientSecret: app.secret,
      url: APP,
      secret,
      store,
      scopes: ALL_SCOPES,
      access: POLICY,
      recheckInterval: INTERVAL,
      now: clockB.now,
      logger: false,
    });
    const step = (seconds: number) => {
      advance(a, seconds);
      clockB.advance(seconds);
    };
    return { a, b, step };
  }

  it('a removal noticed by one re-check is seen by the other within its 5 s cache', async () => {
    const { a, b, step } = twoInstances();
    const cookie = await signedIn(a, 'bob');
    const session = (await sessionOf(b, cookie))!;
    expect(session.user.username).toBe('bob');

    gitlab.control.removeMembership({ user: 'bob', group: 'acme/platform' });
    step(INTERVAL - 2);
    // B reads (and caches) the session just before the interval ends.
    expect((await sessionOf(b, cookie))?.id).toBe(session.id);
    step(3);
    expect(await sessionOf(a.labgate, cookie)).toBeNull();
    // B, which cached the session a second ago, drops it within its cache bound (≤ 5 s).
    let after = 0;
    while ((await sessionOf(b, cookie)) !== null) {
      expect(after, 'B still serves the session after 5 s').toBeLessThan(5);
      step(1);
      after++;
    }
  });

  it('every instance loses access within the interval, whichever asks first', async () => {
    const { a, b, step } = twoInstances();
    const cookie = await signedIn(a, 'bob');
    expect(await sessionOf(b, cookie)).not.toBeNull();
    gitlab.control.removeMembership({ user: 'bob', group: 'acme/platform' });
    step(INTERVAL + 1);
    // Only B is asked: it re-checks and ends the session in the shared store.
    expect(await sessionOf(b, cookie)).toBeNull();
    step(5.5);
    expect(await sessionOf(a.labgate, cookie)).toBeNull();
  });

  it('a successful re-check by one instance spares the other a call to GitLab', async () => {
    const { a, b, step } = twoInstances();
    const cookie = await signedIn(a, 'bob');
    step(INTERVAL + 1);
    gitlab.control.clearRequests();
    expect(await sessionOf(a.labgate, cookie)).not.toBeNull();
    const calls = gitlab.control.requests().length;
    expect(calls).toBeGreaterThan(0);
    // B loads the session after A's re-check: the decision comes from the store.
    expect(await sessionOf(b, cookie)).not.toBeNull();
    expect(gitlab.control.requests()).toHaveLength(calls);
  });
});
