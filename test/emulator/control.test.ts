/**
 * The control API over HTTP, as a test in another process or language would use it.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type RunningEmulator, startEmulator } from '../../src/emulator/index.js';

let gitlab: RunningEmulator;

beforeAll(async () => {
  gitlab = await startEmulator();
});
afterAll(() => gitlab.close());
beforeEach(() => gitlab.control.reset());

async function control(method: string, path: string, body?: unknown) {
  const res = await fetch(`${gitlab.url}/-/emulator${path}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? null : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> & unknown[] };
}

async function mint(user: string, scopes = ['read_api', 'openid']): Promise<string> {
  const { body } = await control('POST', '/tokens', { user, scopes });
  return body['access_token'] as string;
}

async function api(path: string, token: string) {
  return fetch(`${gitlab.url}/api/v4${path}`, { headers: { authorization: `Bearer ${token}` } });
}

describe('control API', () => {
  it('describes the emulator: clock, behaviour and model', async () => {
    const { status, body } = await control('GET', '/');
    expect(status).toBe(200);
    expect(body['behaviour']).toMatchObject({
      autoApprove: 'page',
      refreshTokenRotation: 'immediate',
      pkce: 'public',
    });
    expect((body['model'] as { users: unknown[] }).users.length).toBeGreaterThan(3);
  });

  it('advances and sets the clock, which expires tokens', async () => {
    const before = Date.parse((await control('GET', '/clock')).body['now'] as string);
    const token = await mint('alice');
    expect((await api('/user', token)).status).toBe(200);
    const { body } = await control('POST', '/clock', { advance: 7201 });
    expect(Date.parse(body['now'] as string) - before).toBeGreaterThanOrEqual(7201_000);
    const expired = await api('/user', token);
    expect(expired.status).toBe(401);
    expect(await expired.json()).toMatchObject({ error: 'invalid_token' });
    const set = await control('POST', '/clock', { set: '2030-01-01T00:00:00Z' });
    expect(set.body['now']).toMatch(/^2030-01-01T00:00:0/);
    expect((await control('POST', '/clock', { advance: 'soon' })).status).toBe(400);
  });

  it('rotates the signing key: the new kid signs and is published', async () => {
    const { body } = await control('POST', '/keys/rotate', {});
    const jwks = (await (await fetch(`${gitlab.url}/oauth/discovery/keys`)).json()) as {
      keys: { kid: string }[];
    };
    expect(jwks.keys[0]!.kid).toBe(body['kid']);
    expect(jwks.keys.length).toBe(3);
    await control('POST', '/keys/rotate', { retire: true });
    const after = (await (await fetch(`${gitlab.url}/oauth/discovery/keys`)).json()) as {
      keys: { kid: string }[];
    };
    expect(after.keys.map((k) => k.kid)).not.toContain(body['kid']);
    expect(after.keys.length).toBe(2);
  });

  it('injects, lists and clears faults; the control API itself is never faulted', async () => {
    const added = await control('POST', '/faults', { path: '/api/v4/*', status: 503, times: 2 });
    expect(added.status).toBe(200);
    await control('POST', '/faults', { path: '/-/emulator/*', status: 500 });
    const token = await mint('alice');
    expect((await api('/user', token)).status).toBe(503);
    expect((await control('GET', '/faults')).body.length).toBe(2);
    expect((await api('/user', token)).status).toBe(503);
    expect((await api('/user', token)).status).toBe(200);
    await control('DELETE', '/faults');
    expect((await control('GET', '/faults')).body).toEqual([]);
    const { body } = await control('POST', '/faults', { path: '/api/v4/user', status: 500 });
    await control('DELETE', `/faults/${body['id']}`);
    expect((await api('/user', token)).status).toBe(200);
  });

  it('answers a 429 fault as GitLab throttles', async () => {
    await control('POST', '/faults', { path: '/api/v4/user', retryAfter: 30, times: 1 });
    const res = await api('/user', await mint('alice'));
    expect(res.status).toBe(429);
    expect(res.headers.get('retry-after')).toBe('30');
    expect(await res.text()).toBe('Retry later\n');
  });

  it('refuses malformed faults with 400', async () => {
    expect((await control('POST', '/faults', { path: 'no-slash' })).status).toBe(400);
    expect((await control('POST', '/faults', { path: '/x', status: 999 })).status).toBe(400);
    expect((await control('POST', '/faults', { path: '/x', times: 0 })).status).toBe(400);
  });

  it('records requests without secrets, filters and clears them', async () => {
    await control('DELETE', '/requests');
    const token = await mint('alice');
    await fetch(`${gitlab.url}/oauth/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'refresh_token',
        refresh_token: 'nope',
        client_id: gitlab.applications[0]!.uid,
      }),
    });
    await api(`/user?access_token=${token}`, token);
    const all = await control('GET', '/requests');
    expect(JSON.stringify(all.body)).not.toContain(token);
    const tokenCalls = await control('GET', '/requests?path=/oauth/token&grantType=refresh_token');
    expect(tokenCalls.body).toHaveLength(1);
    expect(tokenCalls.body[0]).toMatchObject({
      method: 'POST',
      status: 400,
      clientId: gitlab.applications[0]!.uid,
    });
    await control('DELETE', '/requests');
    expect((await control('GET', '/requests?path=/oauth/token')).body).toEqual([]);
  });

  it('adds, changes and removes memberships, effective at once', async () => {
    const token = await mint('erin');
    expect((await api('/groups/acme%2Fplatform/members/all/5', token)).status).toBe(404);
    await control('POST', '/memberships', { user: 'erin', group: 'acme/platform', accessLevel: 'reporter' });
    const added = await api('/groups/acme%2Fplatform/members/all/5', token);
    expect(((await added.json()) as { access_level: number }).access_level).toBe(20);
    await control('POST', '/memberships', { user: 'erin', group: 'acme/platform', accessLevel: 40 });
    const changed = await api('/groups/acme%2Fplatform/members/all/5', token);
    expect(((await changed.json()) as { access_level: number }).access_level).toBe(40);
    expect((await control('DELETE', '/memberships', { user: 'erin', group: 'acme/platform' })).body).toEqual({
      removed: true,
    });
    expect((await api('/groups/acme%2Fplatform/members/all/5', token)).status).toBe(404);
  });

  it('refuses unknown users, targets and levels with 404 and 400', async () => {
    expect(
      (await control('POST', '/memberships', { user: 'nobody', group: 'acme', accessLevel: 10 })).status,
    ).toBe(404);
    expect(
      (await control('POST', '/memberships', { user: 'bob', group: 'nowhere', accessLevel: 10 })).status,
    ).toBe(404);
    expect(
      (await control('POST', '/memberships', { user: 'bob', group: 'acme', accessLevel: 'king' })).status,
    ).toBe(400);
    expect((await control('POST', '/memberships', { user: 'bob', accessLevel: 10 })).status).toBe(400);
  });

  it('adds and removes shares, capped at the share level', async () => {
    const token = await mint('grace');
    await control('POST', '/shares', {
      sharedWith: 'partners',
      group: 'acme/marketing',
      accessLevel: 'guest',
    });
    const shared = await api('/groups/acme%2Fmarketing/members/all/6', token);
    expect(((await shared.json()) as { access_level: number }).access_level).toBe(10);
    expect(
      (await control('DELETE', '/shares', { sharedWith: 'partners', group: 'acme/marketing' })).body,
    ).toEqual({
      removed: true,
    });
    expect((await api('/groups/acme%2Fmarketing/members/all/6', token)).status).toBe(404);
  });

  it('blocks and unblocks users; blocked users are refused by the API', async () => {
    const token = await mint('bob');
    await control('POST', '/users/bob/block');
    const blocked = await api('/user', token);
    expect(blocked.status).toBe(403);
    expect(await blocked.json()).toEqual({ message: '403 Forbidden - Your account has been blocked.' });
    await control('POST', '/users/bob/unblock');
    expect((await api('/user', token)).status).toBe(200);
    expect((await control('POST', '/users/bob/state', { state: 'frozen' })).status).toBe(400);
    expect((await control('POST', '/users/nobody/block')).status).toBe(404);
  });

  it("revokes a user's tokens", async () => {
    const token = await mint('alice');
    const { body } = await control('POST', '/users/alice/revoke-tokens', {});
    expect(body['revoked']).toBe(1);
    const res = await api('/user', token);
    expect(res.status).toBe(401);
    expect(((await res.json()) as { error_description: string }).error_description).toMatch(/revoked/);
  });

  it('mints tokens in GitLab’s token-response shape', async () => {
    const { status, body } = await control('POST', '/tokens', { user: 'bob', scopes: 'read_user openid' });
    expect(status).toBe(200);
    expect(body).toMatchObject({ token_type: 'Bearer', expires_in: 7200, scope: 'read_user openid' });
    expect(body['access_token']).toMatch(/^[0-9a-f]{64}$/);
    expect(body['refresh_token']).toMatch(/^[0-9a-f]{64}$/);
  });

  it('changes behaviour and refuses unknown values', async () => {
    const { body } = await control('POST', '/behaviour', { refreshTokenRotation: 'on-first-use' });
    expect(body['refreshTokenRotation']).toBe('on-first-use');
    expect((await control('POST', '/behaviour', { autoApprove: 'sometimes' })).status).toBe(400);
    expect((await control('GET', '/behaviour')).body['refreshTokenRotation']).toBe('on-first-use');
  });

  it('resets to the fixtures: memberships, tokens, clock and behaviour', async () => {
    const token = await mint('alice');
    await control('DELETE', '/memberships', { user: 'alice', group: 'acme' });
    await control('POST', '/clock', { advance: 86_400 });
    await control('POST', '/behaviour', { autoApprove: 'redirect' });
    await control('POST', '/reset');
    expect((await api('/user', token)).status).toBe(401);
    const model = (await control('GET', '/')).body as unknown as {
      behaviour: { autoApprove: string };
      now: string;
      model: { memberships: { userId: number; sourceId: number }[] };
    };
    expect(model.behaviour.autoApprove).toBe('page');
    expect(Math.abs(Date.parse(model.now) - Date.now())).toBeLessThan(60_000);
    expect(model.model.memberships.some((m) => m.userId === 1 && m.sourceId === 10)).toBe(true);
  });
});
