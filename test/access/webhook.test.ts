/**
 * `POST /auth/webhooks/gitlab`: a GitLab group or project member event, or a system hook, with the
 * configured secret in `X-Gitlab-Token`, re-checks the affected user's sessions at once (no clock
 * advance), on top of the interval. A wrong or missing token is 401, no configured secret is 404,
 * a body that is not JSON is 400, and an event without `user_id` is ignored with 200.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createLabgate, type Labgate, MemoryStore } from '../../src/core/index.js';
import { type RunningEmulator, startEmulator } from '../../src/emulator/index.js';
import { APP, Clock, type Harness, testSecret } from '../core/harness.js';
import { ALL_SCOPES, harness, recordEvents, sessionOf, signedIn } from './helpers.js';

let gitlab: RunningEmulator;
beforeAll(async () => {
  gitlab = await startEmulator();
});
afterAll(() => gitlab.close());
beforeEach(() => gitlab.control.reset());

const SECRET = 'gitlab-webhook-secret-token';
const POLICY = {
  allow: ['group:acme/platform>=developer', 'user:alice'],
  roles: { lead: 'group:acme/platform>=maintainer' },
};

/** GitLab's group member event, as a group webhook (`Member Hook`) sends it for bob (id 2). */
function memberEvent(eventName: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    created_at: '2025-06-15T12:00:00Z',
    updated_at: '2025-06-15T12:00:00Z',
    group_name: 'Platform',
    group_path: 'platform',
    group_id: 11,
    user_username: 'bob',
    user_name: 'Bob Builder',
    user_email: 'bob@acme.test',
    user_id: 2,
    group_access: 'Developer',
    group_plan: null,
    expires_at: null,
    event_name: eventName,
    ...extra,
  };
}

/** Posts to the webhook route of `labgate` as GitLab does. */
async function post(
  labgate: Labgate,
  body: string | Record<string, unknown>,
  headers: Record<string, string> = { 'x-gitlab-token': SECRET },
  method = 'POST',
): Promise<{ status: number; json: Record<string, unknown> | null; headers: Headers }> {
  const response = (await labgate.handle(
    new Request(`${APP}/auth/webhooks/gitlab`, {
      method,
      headers: {
        'content-type': 'application/json',
        'x-gitlab-event': 'Member Hook',
        'user-agent': 'GitLab/17.6.0',
        accept: 'application/json',
        ...headers,
      },
      ...(method === 'GET' ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
    }),
  ))!;
  const text = await response.text();
  let json: Record<string, unknown> | null = null;
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    json = null;
  }
  return { status: response.status, json, headers: response.headers };
}

function withHook(options: Parameters<typeof harness>[1] = {}): Harness {
  // A day between re-checks: only the webhook can make labgate ask GitLab before then.
  return harness(gitlab, { access: POLICY, recheckInterval: 24 * 3600, webhookSecret: SECRET, ...options });
}

describe('a member event with the right token', () => {
  it('ends the session of a user removed in GitLab at once', async () => {
    const h = withHook();
    const events = recordEvents(h.labgate, 'session.ended', 'access.denied');
    const cookie = await signedIn(h, 'bob');
    const session = (await sessionOf(h.labgate, cookie))!;
    gitlab.control.removeMembership({ user: 'bob', group: 'acme/platform' });
    // Without the event the session stands: the next re-check is a day away.
    expect(await sessionOf(h.labgate, cookie)).not.toBeNull();

    const answer = await post(h.labgate, memberEvent('user_remove_from_group'));
    expect(answer.status).toBe(200);
    expect(answer.json).toEqual({ rechecked: 1, ended: 1 });
    // No clock advanced: the session is gone now, here and in the store.
    expect(await sessionOf(h.labgate, cookie)).toBeNull();
    expect(await h.labgate.store.getSession(session.id)).toBeNull();
    expect(events.of('session.ended')).toEqual([
      { sessionId: session.id, userId: session.userId, reason: 'access-lost' },
    ]);
    expect(events.of('access.denied').map((e) => e.reason)).toEqual(['no-rule-matched']);
  });

  it('keeps the session of a user who still has access, and updates the roles', async () => {
    const h = withHook();
    const cookie = await signedIn(h, 'bob');
    expect((await sessionOf(h.labgate, cookie))!.user.roles).toEqual([]);
    gitlab.control.setMembership({ user: 'bob', group: 'acme/platform', accessLevel: 'maintainer' });
    const answer = await post(
      h.labgate,
      memberEvent('user_update_for_group', { group_access: 'Maintainer' }),
    );
    expect(answer.json).toEqual({ rechecked: 1, ended: 0 });
    // The new decision is stored at once; this instance's session cache (≤ 5 s) may serve the
    // previous roles until it expires, as another instance's cache would. No re-check is due.
    gitlab.control.clearRequests();
    h.clock.advance(5.1);
    expect((await sessionOf(h.labgate, cookie))?.user.roles).toEqual(['lead']);
    expect(gitlab.control.requests()).toEqual([]);
  });

  it('re-checks every session of the user, and only that user', async () => {
    const h = withHook();
    const first = await signedIn(h, 'bob');
    const second = await signedIn(h, 'bob');
    const alice = await signedIn(h, 'alice');
    gitlab.control.removeMembership({ user: 'bob', group: 'acme/platform' });
    gitlab.control.clearRequests();
    const answer = await post(h.labgate, memberEvent('user_remove_from_group'));
    expect(answer.json).toEqual({ rechecked: 2, ended: 2 });
    expect(await sessionOf(h.labgate, first)).toBeNull();
    expect(await sessionOf(h.labgate, second)).toBeNull();
    expect(await sessionOf(h.labgate, alice)).not.toBeNull();
    // GitLab was asked about bob only (user id 2).
    const members = gitlab.control.requests().filter((r) => r.path.includes('/members/all/'));
    expect(members.length).toBeGreaterThan(0);
    expect(members.every((r) => r.path.endsWith('/members/all/2'))).toBe(true);
  });

  it('a system hook for a blocked user ends the session', async () => {
    const h = withHook();
    const cookie = await signedIn(h, 'bob');
    gitlab.control.blockUser('bob');
    const answer = await post(
      h.labgate,
      { event_name: 'user_failed_login', name: 'Bob Builder', username: 'bob', user_id: 2, state: 'blocked' },
      { 'x-gitlab-token': SECRET, 'x-gitlab-event': 'System Hook' },
    );
    expect(answer.json).toEqual({ rechecked: 1, ended: 1 });
    expect(await sessionOf(h.labgate, cookie)).toBeNull();
  });

  it('logs one line per event, the event name escaped and bounded', async () => {
    const h = withHook();
    await signedIn(h, 'bob');
    await post(h.labgate, memberEvent('user_update_for_group\nlabgate: forged line <b>'));
    const lines = h.logs.filter((l) => l.includes('webhook'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(
      'webhook "user_update_for_group\\nlabgate: forged line <b>" re-checked 1 session(s)',
    );
    expect(lines[0]).not.toContain('\n');
    await post(h.labgate, memberEvent('x'.repeat(500)));
    expect(h.logs.filter((l) => l.includes('webhook'))[1]).toContain(`webhook "${'x'.repeat(64)}…"`);
  });

  it('a user with no session here is answered 200 with nothing re-checked', async () => {
    const h = withHook();
    await signedIn(h, 'alice');
    const answer = await post(h.labgate, memberEvent('user_add_to_group', { user_id: 9999 }));
    expect(answer.status).toBe(200);
    expect(answer.json).toEqual({ rechecked: 0 });
  });

  it('another instance sharing the store drops the ended session within its 5 s cache', async () => {
    const store = new MemoryStore();
    const secret = testSecret();
    const a = withHook({ store, secret });
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
      recheckInterval: 24 * 3600,
      webhookSecret: SECRET,
      now: clockB.now,
      logger: false,
    });
    const cookie = await signedIn(a, 'bob');
    // B serves (and caches) the session; its access is not due for a day.
    expect(await sessionOf(b, cookie)).not.toBeNull();
    gitlab.control.removeMembership({ user: 'bob', group: 'acme/platform' });
    expect((await post(a.labgate, memberEvent('user_remove_from_group'))).json).toEqual({
      rechecked: 1,
      ended: 1,
    });
    expect(await sessionOf(a.labgate, cookie)).toBeNull();
    let after = 0;
    while ((await sessionOf(b, cookie)) !== null) {
      expect(after, 'B still serves the session 5 s after it ended').toBeLessThanOrEqual(5);
      clockB.advance(1);
      a.clock.advance(1);
      after++;
    }
  });
});

describe('refused or ignored deliveries', () => {
  it('a wrong or missing X-Gitlab-Token is 401 and re-checks nothing', async () => {
    const h = withHook();
    const cookie = await signedIn(h, 'bob');
    gitlab.control.removeMembership({ user: 'bob', group: 'acme/platform' });
    gitlab.control.clearRequests();
    for (const headers of [
      { 'x-gitlab-token': 'wrong' },
      { 'x-gitlab-token': `${SECRET}x` },
      { 'x-gitlab-token': SECRET.toUpperCase() },
      { 'x-gitlab-token': '' },
      {},
      // GitLab sends the token only in X-Gitlab-Token, never as a bearer token.
      { authorization: `Bearer ${SECRET}` },
    ]) {
      const answer = await post(h.labgate, memberEvent('user_remove_from_group'), headers);
      expect(answer.status, JSON.stringify(headers)).toBe(401);
    }
    expect(gitlab.control.requests().filter((r) => r.path.startsWith('/api/'))).toEqual([]);
    expect(await sessionOf(h.labgate, cookie)).not.toBeNull();
  });

  it('without webhookSecret the route does not exist (404)', async () => {
    const h = harness(gitlab, { access: POLICY });
    const answer = await post(h.labgate, memberEvent('user_remove_from_group'));
    expect(answer.status).toBe(404);
    // Not even with an empty token, which a missing secret must never accept.
    expect(
      (await post(h.labgate, memberEvent('user_remove_from_group'), { 'x-gitlab-token': '' })).status,
    ).toBe(404);
  });

  it('a body that is not JSON is 400', async () => {
    const h = withHook();
    for (const body of ['not json', '{"user_id": 2', '']) {
      const answer = await post(h.labgate, body);
      expect(answer.status, body).toBe(400);
    }
  });

  it('a payload without a numeric user_id is 200 and ignored', async () => {
    const h = withHook();
    const cookie = await signedIn(h, 'bob');
    gitlab.control.removeMembership({ user: 'bob', group: 'acme/platform' });
    for (const payload of [
      { object_kind: 'push', event_name: 'push', user_username: 'bob' },
      memberEvent('user_remove_from_group', { user_id: '2' }),
      memberEvent('user_remove_from_group', { user_id: null }),
    ]) {
      const answer = await post(h.labgate, payload);
      expect(answer.status).toBe(200);
      expect(answer.json).toEqual({ rechecked: 0, ignored: true });
    }
    expect(await sessionOf(h.labgate, cookie)).not.toBeNull();
  });

  it('only POST: GET is 405 with Allow', async () => {
    const h = withHook();
    const answer = await post(h.labgate, '', { 'x-gitlab-token': SECRET }, 'GET');
    expect(answer.status).toBe(405);
    expect(answer.headers.get('allow')).toBe('POST');
  });
});
