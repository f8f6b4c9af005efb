/**
 * The GitLab API client (`labgate.gitlab(session)`) and the token toolkit (`checkToken`,
 * `refreshToken`, `revokeToken`), against an emulated GitLab under a relative URL root (`/gitlab`,
 * the emulator's `basePath` in docs/emulator.md). Every request labgate sends goes through a
 * `fetch` wrapper that records it, so the tests see what went on the wire: the token in
 * `Authorization: Bearer` only (docs/security.md, USERINFO-2), never in a URL.
 */
import { Gitlab } from '@gitbeaker/rest';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createGitLabClient, GitLabApiError, LabgateError, type Session } from '../../src/core/index.js';
import {
  demoFixtures,
  type Fixtures,
  type RunningEmulator,
  startEmulator,
} from '../../src/emulator/index.js';
import { createHarness, type Harness, type HarnessOptions } from '../core/harness.js';
import { refreshGrants, sessionOf, settle, signedIn } from './support.js';

const GROUPS = 45;

/** The demo fixtures plus gina, a member of 45 groups of her own. */
function fixtures(): Fixtures {
  const base = demoFixtures();
  const groups = Array.from({ length: GROUPS }, (_, i) => ({
    id: 5000 + i,
    fullPath: `gina-team-${String(i + 1).padStart(2, '0')}`,
    name: `Gina team ${i + 1}`,
    visibility: 'private' as const,
  }));
  return {
    ...base,
    users: [
      ...(base.users ?? []),
      { id: 500, username: 'gina', name: 'Gina Groups', password: 'gina-password', email: 'gina@acme.test' },
    ],
    groups: [...(base.groups ?? []), ...groups],
    memberships: [
      ...(base.memberships ?? []),
      ...groups.map((g) => ({ user: 'gina', group: g.fullPath, accessLevel: 'developer' as const })),
    ],
  } as Fixtures;
}

let gitlab: RunningEmulator;
beforeAll(async () => {
  gitlab = await startEmulator({ basePath: '/gitlab', fixtures: fixtures() });
});
afterAll(() => gitlab.close());
beforeEach(() => gitlab.control.reset());

interface Sent {
  url: string;
  authorization: string | null;
}

/**
 * labgate with `read_api`, whose every request to GitLab is recorded; `answer` may answer one
 * itself instead of GitLab (a proxy in between).
 */
function harness(
  options: HarnessOptions = {},
  answer: (request: Request) => Response | undefined = () => undefined,
): { h: Harness; sent: Sent[] } {
  const sent: Sent[] = [];
  const h = createHarness(gitlab, {
    scopes: 'openid profile email read_api',
    ...options,
    fetch: async (input, init) => {
      const request = new Request(input, init);
      sent.push({ url: request.url, authorization: request.headers.get('authorization') });
      return answer(request) ?? fetch(request);
    },
  });
  return { h, sent };
}

async function signedInSession(h: Harness, user = 'alice'): Promise<{ cookie: string; session: Session }> {
  const cookie = await signedIn(h, user);
  const session = await sessionOf(h.labgate, cookie);
  // Sign-in itself reads /api/v4/user: the tests count from here.
  gitlab.control.clearRequests();
  return { cookie, session };
}

/** Statuses GitLab answered on one API path, in order. */
function apiStatuses(path: string): number[] {
  return gitlab.control.requests({ path }).map((r) => r.status);
}

describe('the API client', () => {
  it('uses the sub-path of the GitLab URL', async () => {
    const { h, sent } = harness();
    const { session } = await signedInSession(h);
    const api = h.labgate.gitlab(session);
    expect(gitlab.url).toMatch(/\/gitlab$/);
    expect(api.apiUrl).toBe(`${gitlab.url}/api/v4`);
    const me = await api.get<{ username: string }>('/user');
    expect(me.username).toBe('alice');
    expect(sent.at(-1)!.url).toBe(`${gitlab.url}/api/v4/user`);
    expect(apiStatuses('/api/v4/user').at(-1)).toBe(200);
    // Nothing was sent outside the relative URL root.
    for (const { url } of sent) expect(new URL(url).pathname.startsWith('/gitlab/')).toBe(true);
  });

  it('sends the token as Authorization: Bearer, never in a URL', async () => {
    const { h, sent } = harness();
    const { session } = await signedInSession(h);
    const api = h.labgate.gitlab(session);
    const token = await h.labgate.getAccessToken(session);
    sent.length = 0;
    await api.get('/user');
    await api.get('/groups', { per_page: 5, search: 'acme' });
    for await (const _ of api.paginate('/groups', { per_page: 1 })) break;
    expect(sent.length).toBe(3);
    for (const request of sent) {
      expect(request.authorization).toBe(`Bearer ${token}`);
      expect(request.url).not.toContain(token);
      expect(new URL(request.url).searchParams.has('access_token')).toBe(false);
      expect(new URL(request.url).searchParams.has('private_token')).toBe(false);
    }
  });

  it('the grant revoked at GitLab → the session ends on the next use (401, one refresh, invalid_grant)', async () => {
    const { h } = harness();
    const { cookie, session } = await signedInSession(h);
    const api = h.labgate.gitlab(session);
    await api.get('/user');
    expect(gitlab.control.revokeUserTokens('alice')).toBeGreaterThan(0);

    const outcome = await settle(api.get('/user'));
    expect(outcome).toHaveProperty('error');
    const error = (outcome as { error: unknown }).error;
    expect(error).toBeInstanceOf(LabgateError);
    expect((error as LabgateError).code).toBe('session_required');
    expect(apiStatuses('/api/v4/user')).toEqual([200, 401]); // no retry without a new token
    expect(refreshGrants(gitlab)).toBe(1);
    expect(await h.labgate.sessionOf(cookie)).toBeNull();
    expect(await h.labgate.store.getSession(session.id)).toBeNull();
  });

  it('a token that expired early at GitLab (its clock ahead) → 401, refresh, the retry succeeds', async () => {
    // labgate believes 45 s are left (outside its 30 s margin); GitLab's clock is 50 s ahead, so
    // for GitLab the token expired 5 s ago. 50 s is within the ID-token clock tolerance (60 s): the
    // refreshed ID token, issued by GitLab's clock, is still accepted.
    const { h } = harness({ refreshMargin: 30 });
    const { session } = await signedInSession(h);
    const api = h.labgate.gitlab(session);
    const before = await h.labgate.getAccessToken(session);
    h.clock.advance(7200 - 45);
    gitlab.control.advanceClock(7200 + 5);

    const me = await api.get<{ username: string }>('/user');
    expect(me.username).toBe('alice');
    expect(apiStatuses('/api/v4/user')).toEqual([401, 200]);
    expect(refreshGrants(gitlab)).toBe(1);
    expect(await h.labgate.getAccessToken(session)).not.toBe(before);
  });

  it('concurrent calls meeting that 401 share one refresh, even the one whose 401 comes late', async () => {
    const { h } = harness({ refreshMargin: 30 });
    const { session } = await signedInSession(h);
    const api = h.labgate.gitlab(session);
    h.clock.advance(7200 - 45);
    gitlab.control.advanceClock(7200 + 5);
    // The first call to arrive is answered (401) only after the others have refreshed and retried.
    gitlab.control.injectFault({ path: '/api/v4/user', delayMs: 300, times: 1 });
    const users = await Promise.all(Array.from({ length: 5 }, () => api.get<{ username: string }>('/user')));
    expect(users.map((u) => u.username)).toEqual(Array(5).fill('alice'));
    expect(refreshGrants(gitlab)).toBe(1);
    expect(apiStatuses('/api/v4/user').filter((s) => s === 401)).toHaveLength(5);
  });

  it('a 429 on the retry after a 401 is retried without a second refresh', async () => {
    let calls = Number.NEGATIVE_INFINITY; // counting starts after sign-in
    const { h } = harness({ refreshMargin: 30 }, (request) =>
      new URL(request.url).pathname.endsWith('/api/v4/user') && ++calls === 2
        ? new Response('Retry later', { status: 429, headers: { 'retry-after': '0' } })
        : undefined,
    );
    const { session } = await signedInSession(h);
    calls = 0;
    h.clock.advance(7200 - 45);
    gitlab.control.advanceClock(7200 + 5);
    const me = await h.labgate.gitlab(session).get<{ username: string }>('/user');
    expect(me.username).toBe('alice');
    expect(calls).toBe(3);
    expect(apiStatuses('/api/v4/user')).toEqual([401, 200]);
    expect(refreshGrants(gitlab)).toBe(1);
  });

  it('a caller’s own Authorization or Accept header replaces, never joins, labgate’s', async () => {
    const { h, sent } = harness();
    const { session } = await signedInSession(h);
    const token = await h.labgate.getAccessToken(session);
    sent.length = 0;
    const me = await h.labgate.gitlab(session).request<{ username: string }>('GET', '/user', {
      headers: { Authorization: 'Basic YTpi', Accept: '*/*' },
    });
    expect(me.username).toBe('alice');
    expect(sent.map((r) => r.authorization)).toEqual([`Bearer ${token}`]);
    expect(refreshGrants(gitlab)).toBe(0);
  });

  it('a 429 with Retry-After is retried after the wait', async () => {
    const { h } = harness();
    const { session } = await signedInSession(h);
    const api = h.labgate.gitlab(session);
    gitlab.control.injectFault({ path: '/api/v4/*', retryAfter: 1, times: 1 });
    const started = performance.now();
    const me = await api.get<{ username: string }>('/user');
    const elapsed = performance.now() - started;
    expect(me.username).toBe('alice');
    expect(apiStatuses('/api/v4/user')).toEqual([429, 200]);
    expect(elapsed).toBeGreaterThanOrEqual(950);
    expect(elapsed).toBeLessThan(5000);
  });

  it('429s are retried a bounded number of times; a Retry-After beyond the bound is not waited for', async () => {
    const { h } = harness();
    const { session } = await signedInSession(h);
    const api = h.labgate.gitlab(session);
    gitlab.control.injectFault({ path: '/api/v4/*', status: 429, retryAfter: 0, times: 10 });
    const many = await settle(api.get('/user'));
    expect((many as { error: unknown }).error).toBeInstanceOf(GitLabApiError);
    expect(((many as { error: unknown }).error as GitLabApiError).status).toBe(429);
    expect(apiStatuses('/api/v4/user')).toEqual([429, 429, 429]);

    gitlab.control.clearFaults();
    gitlab.control.clearRequests();
    gitlab.control.injectFault({ path: '/api/v4/*', retryAfter: 3600, times: 1 });
    const started = performance.now();
    const long = await settle(api.get('/user'));
    expect(performance.now() - started).toBeLessThan(1000);
    expect(((long as { error: unknown }).error as GitLabApiError).status).toBe(429);
    expect(apiStatuses('/api/v4/user')).toEqual([429]);
  });

  it(`paginate yields all ${GROUPS} groups of a member, 20 a page, following x-next-page`, async () => {
    const { h, sent } = harness();
    const { session } = await signedInSession(h, 'gina');
    const api = h.labgate.gitlab(session);
    sent.length = 0;
    const paths: string[] = [];
    for await (const group of api.paginate<{ full_path: string }>('/groups', { per_page: 20 })) {
      paths.push(group.full_path);
    }
    expect(paths).toHaveLength(GROUPS);
    expect(new Set(paths).size).toBe(GROUPS);
    expect(paths.every((p) => p.startsWith('gina-team-'))).toBe(true);
    expect(sent.map((r) => new URL(r.url).searchParams.get('page'))).toEqual(['1', '2', '3']);
    expect(sent.every((r) => new URL(r.url).searchParams.get('per_page') === '20')).toBe(true);
  });

  it('a 404 is a GitLabApiError with the status and GitLab’s message, and no token anywhere', async () => {
    const { h } = harness();
    const { session } = await signedInSession(h);
    const api = h.labgate.gitlab(session);
    const token = await h.labgate.getAccessToken(session);
    const outcome = await settle(api.get('/groups/no-such-group', { with_projects: false }));
    const error = (outcome as { error: unknown }).error as GitLabApiError;
    expect(error).toBeInstanceOf(GitLabApiError);
    expect(error.status).toBe(404);
    expect(error.method).toBe('GET');
    expect(error.path).toBe('/groups/no-such-group');
    expect(error.gitlabMessage).toBe('404 Group Not Found');
    expect(error.message).toContain('404 Group Not Found');
    expect(error.message).not.toContain('with_projects'); // no query string
    for (const text of [error.message, error.stack ?? '', JSON.stringify(error), String(error)]) {
      expect(text).not.toContain(token);
    }
  });

  it("names GitLab's OAuth error: insufficient_scope on a 403, invalid_token on a 401", async () => {
    const { h } = harness();
    const scopeless = gitlab.control.mintToken({ user: 'alice', scopes: ['openid'] });
    const client = createGitLabClient({
      gitlabUrl: h.gitlab.url,
      getToken: async () => scopeless.access_token,
    });
    const refused = (await settle(client.get('/projects'))) as { error: GitLabApiError };
    expect(refused.error.status).toBe(403);
    expect(refused.error.error).toBe('insufficient_scope');
    const expiring = gitlab.control.mintToken({ user: 'alice', scopes: ['read_api'] });
    gitlab.control.expireAccessTokens();
    const expired = createGitLabClient({
      gitlabUrl: h.gitlab.url,
      getToken: async () => expiring.access_token,
    });
    const rejected = (await settle(expired.get('/user'))) as { error: GitLabApiError };
    expect([rejected.error.status, rejected.error.error]).toEqual([401, 'invalid_token']);
    // GitLab's plain 401 for a token it does not know names no OAuth error.
    const unknown = createGitLabClient({ gitlabUrl: h.gitlab.url, getToken: async () => 'not-a-token' });
    const plain = (await settle(unknown.get('/user'))) as { error: GitLabApiError };
    expect([plain.error.status, plain.error.error]).toEqual([401, null]);
  });

  it('@gitbeaker/rest with oauthToken: () => getAccessToken(session) keeps working after expiry', async () => {
    const { h } = harness();
    const { session } = await signedInSession(h);
    const api = new Gitlab({ host: gitlab.url, oauthToken: () => h.labgate.getAccessToken(session) });
    expect((await api.Users.showCurrentUser()).username).toBe('alice');
    expect(refreshGrants(gitlab)).toBe(0);

    gitlab.control.advanceClock(7201);
    h.clock.advance(7201);
    expect((await api.Users.showCurrentUser()).username).toBe('alice');
    expect(refreshGrants(gitlab)).toBe(1);
    expect(apiStatuses('/api/v4/user')).toEqual([200, 200]);
  });
});

describe('the token toolkit', () => {
  const app = () => gitlab.applications[0]!;

  it('checkToken: an active token’s scopes, remaining lifetime, user and client', async () => {
    const { h } = harness();
    const minted = gitlab.control.mintToken({ user: 'alice', scopes: ['openid', 'read_api'] });
    const check = await h.labgate.checkToken(minted.access_token);
    expect(check).toEqual({
      active: true,
      scopes: ['openid', 'read_api'],
      expiresIn: expect.any(Number),
      userId: 1,
      clientId: app().uid,
    });
    expect(check.expiresIn).toBeGreaterThan(7100);
    expect(check.expiresIn).toBeLessThanOrEqual(7200);
  });

  it('checkToken: a revoked, an expired and an unknown token are inactive', async () => {
    const { h } = harness();
    const inactive = { active: false, scopes: [], expiresIn: null, userId: null, clientId: null };
    const revoked = gitlab.control.mintToken({ user: 'alice' });
    await h.labgate.revokeToken(revoked.access_token);
    expect(await h.labgate.checkToken(revoked.access_token)).toEqual(inactive);

    const expiring = gitlab.control.mintToken({ user: 'alice' });
    expect((await h.labgate.checkToken(expiring.access_token)).active).toBe(true);
    gitlab.control.advanceClock(7201);
    expect(await h.labgate.checkToken(expiring.access_token)).toEqual(inactive);
    expect(await h.labgate.checkToken('f'.repeat(64))).toEqual(inactive);
  });

  it('refreshToken rotates: a new pair works, the old refresh token is spent', async () => {
    const { h } = harness();
    const minted = gitlab.control.mintToken({ user: 'alice' });
    const next = await h.labgate.refreshToken(minted.refresh_token);
    expect(next.accessToken).not.toBe(minted.access_token);
    expect(next.refreshToken).not.toBe(minted.refresh_token);
    expect(next.scope).toBe(minted.scope);
    expect(Math.abs(next.expiresAt - (h.clock.now() + 7200 * 1000))).toBeLessThan(5000);
    expect((await h.labgate.checkToken(next.accessToken)).active).toBe(true);
    expect((await h.labgate.checkToken(minted.access_token)).active).toBe(false);
    const again = await settle(h.labgate.refreshToken(minted.refresh_token));
    expect((again as { error: unknown }).error).toBeInstanceOf(LabgateError);
  });

  it('revokeToken kills both tokens of a pair', async () => {
    const { h } = harness();
    const minted = gitlab.control.mintToken({ user: 'alice' });
    await h.labgate.revokeToken(minted.access_token);
    expect((await h.labgate.checkToken(minted.access_token)).active).toBe(false);
    const refreshed = await settle(h.labgate.refreshToken(minted.refresh_token));
    expect((refreshed as { error: unknown }).error).toBeInstanceOf(LabgateError);
    expect(gitlab.control.requests({ path: '/oauth/revoke' }).map((r) => r.status)).toEqual([200]);

    // And by its refresh token: the access token dies with it.
    const other = gitlab.control.mintToken({ user: 'alice' });
    await h.labgate.revokeToken(other.refresh_token);
    expect((await h.labgate.checkToken(other.access_token)).active).toBe(false);
  });
});
