import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  createEmulatorServer,
  type Fixtures,
  type RunningEmulator,
  startEmulator,
} from '../../src/emulator/index.js';

type Obj = Record<string, unknown>;

interface Answer<T> {
  status: number;
  headers: Headers;
  body: T;
}

let gitlab: RunningEmulator;
beforeAll(async () => {
  gitlab = await startEmulator();
});
afterAll(() => gitlab.close());
beforeEach(() => gitlab.control.reset());

function token(user: string, scopes: string[] = ['read_api']): string {
  return gitlab.control.mintToken({ user, scopes }).access_token;
}

async function api<T = Obj>(
  path: string,
  auth?: string,
  headers: Record<string, string> = {},
  on: RunningEmulator = gitlab,
): Promise<Answer<T>> {
  const res = await fetch(`${on.url}/api/v4${path}`, {
    headers: auth === undefined ? headers : { authorization: `Bearer ${auth}`, ...headers },
  });
  return { status: res.status, headers: res.headers, body: (await res.json()) as T };
}

const paths = (groups: Obj[]) => groups.map((g) => g['full_path']);
const daysAgo = (days: number) => new Date(gitlab.control.now().getTime() - days * 86_400_000).toISOString();

describe('GET /user', () => {
  it('answers the UserPublic entity, in GitLab order, for a normal user', async () => {
    const { status, headers, body } = await api('/user', token('alice', ['read_user']));
    expect(status).toBe(200);
    expect(headers.get('content-type')).toBe('application/json');
    expect(Object.keys(body)).toEqual([
      'id',
      'username',
      'name',
      'state',
      'locked',
      'avatar_url',
      'web_url',
      'created_at',
      'bio',
      'location',
      'public_email',
      'skype',
      'linkedin',
      'twitter',
      'discord',
      'website_url',
      'organization',
      'job_title',
      'pronouns',
      'bot',
      'work_information',
      'followers',
      'following',
      'local_time',
      'last_sign_in_at',
      'confirmed_at',
      'last_activity_on',
      'email',
      'theme_id',
      'color_scheme_id',
      'projects_limit',
      'current_sign_in_at',
      'identities',
      'can_create_group',
      'can_create_project',
      'two_factor_enabled',
      'external',
      'private_profile',
      'commit_email',
      'shared_runners_minutes_limit',
      'extra_shared_runners_minutes_limit',
    ]);
    expect(body).toMatchObject({
      id: 1,
      username: 'alice',
      name: 'Alice Liddell',
      state: 'active',
      locked: false,
      avatar_url: `${gitlab.url}/uploads/-/system/user/avatar/1/avatar.png`,
      web_url: `${gitlab.url}/alice`,
      created_at: '2023-03-14T09:26:53.000Z',
      public_email: 'alice@acme.test',
      website_url: 'https://alice.acme.test',
      email: 'alice@acme.test',
      last_sign_in_at: '2026-11-20T08:00:00.000Z',
      two_factor_enabled: false,
      external: false,
    });
    expect(body).not.toHaveProperty('is_admin');
  });

  it('gives the primary email even when there is no public email, and reports two-factor', async () => {
    const { body } = await api('/user', token('carol', ['read_user']));
    expect(body).toMatchObject({ email: 'carol@acme.test', public_email: '', two_factor_enabled: true });
  });

  it('adds is_admin and the admin fields only for an administrator', async () => {
    const { status, body } = await api('/user', token('root', ['read_user']));
    expect(status).toBe(200);
    expect(body).toMatchObject({
      id: 9,
      username: 'root',
      is_admin: true,
      note: null,
      using_license_seat: false,
    });
    expect(Object.keys(body).indexOf('is_admin')).toBeGreaterThan(Object.keys(body).indexOf('commit_email'));
  });

  it('accepts read_api and api as well as read_user', async () => {
    expect((await api('/user', token('bob', ['read_api']))).status).toBe(200);
    expect((await api('/user', token('bob', ['api']))).status).toBe(200);
  });

  it('takes the token from ?access_token= and ?bearer_token=, but never from PRIVATE-TOKEN', async () => {
    const value = token('bob', ['read_user']);
    expect((await api(`/user?access_token=${value}`)).body).toMatchObject({ username: 'bob' });
    expect((await api(`/user?bearer_token=${value}`)).body).toMatchObject({ username: 'bob' });
    // /groups serves anonymous callers, so only the failed PAT lookup can make this a 401.
    expect((await api('/groups')).status).toBe(200);
    const pat = await api('/groups', undefined, { 'private-token': value });
    expect(pat).toMatchObject({ status: 401, body: { message: '401 Unauthorized' } });
    expect((await api(`/groups?private_token=${value}`)).status).toBe(401);
  });
});

describe('authentication errors', () => {
  it('answers 401 without a token', async () => {
    const { status, headers, body } = await api('/user');
    expect(status).toBe(401);
    expect(body).toEqual({ message: '401 Unauthorized' });
    expect(headers.get('www-authenticate')).toBeNull();
  });

  it('answers 401 for an unknown token', async () => {
    const { status, body } = await api('/groups', 'f'.repeat(64));
    expect(status).toBe(401);
    expect(body).toEqual({ message: '401 Unauthorized' });
  });

  it('answers invalid_token for a revoked token, with the OAuth 2.0 realm', async () => {
    const value = token('alice');
    expect(gitlab.control.revokeUserTokens('alice')).toBe(1);
    const { status, headers, body } = await api('/user', value);
    const description = 'Token was revoked. You have to re-authorize from the user.';
    expect(status).toBe(401);
    expect(body).toEqual({ error: 'invalid_token', error_description: description });
    expect(headers.get('www-authenticate')).toBe(
      `Bearer realm="Protected by OAuth 2.0", error="invalid_token", error_description="${description}"`,
    );
  });

  it('answers invalid_token for an expired token', async () => {
    const value = token('alice');
    expect((await api('/user', value)).status).toBe(200);
    gitlab.control.advanceClock(7201);
    const { status, headers, body } = await api('/user', value);
    const description = 'Token is expired. You can either do re-authorization or token refresh.';
    expect(status).toBe(401);
    expect(body).toEqual({ error: 'invalid_token', error_description: description });
    expect(headers.get('www-authenticate')).toBe(
      `Bearer realm="Protected by OAuth 2.0", error="invalid_token", error_description="${description}"`,
    );
  });

  it('answers insufficient_scope with the scopes the endpoint accepts', async () => {
    const openid = token('alice', ['openid']);
    const groups = await api('/groups', openid);
    expect(groups.status).toBe(403);
    expect(groups.body).toEqual({
      error: 'insufficient_scope',
      error_description: 'The request requires higher privileges than provided by the access token.',
      scope: 'api read_api',
    });
    expect(groups.headers.get('www-authenticate')).toBeNull();
    // `APIGuard#scopes_registered_for_endpoint`: the endpoint class's own scopes (`API::Users`:
    // read_user) come before those of `API::API` (api, read_api).
    for (const path of ['/user', '/users/1', '/version']) {
      const user = await api(path, openid);
      expect(user.status).toBe(403);
      expect(user.body).toEqual({
        error: 'insufficient_scope',
        error_description: 'The request requires higher privileges than provided by the access token.',
        scope: 'read_user api read_api',
      });
    }
  });

  it('refuses group and member calls to a read_user token', async () => {
    const readUser = token('alice', ['read_user']);
    expect((await api('/groups', readUser)).body).toMatchObject({ error: 'insufficient_scope' });
    expect((await api('/groups/acme/members/all/1', readUser)).status).toBe(403);
  });

  it('answers 403 for a blocked user', async () => {
    const { status, body } = await api('/user', token('dave'));
    expect(status).toBe(403);
    expect(body).toEqual({ message: '403 Forbidden - Your account has been blocked.' });
  });

  it('answers 403 as soon as a user is blocked through the control API', async () => {
    const value = token('bob');
    expect((await api('/groups', value)).status).toBe(200);
    gitlab.control.blockUser('bob');
    expect((await api('/groups', value)).body).toEqual({
      message: '403 Forbidden - Your account has been blocked.',
    });
  });

  it('answers 403 for a deactivated user', async () => {
    const value = token('erin');
    gitlab.control.setUserState('erin', 'deactivated');
    const { status, body } = await api('/user', value);
    expect(status).toBe(403);
    expect((body as { message: string }).message).toMatch(
      /^403 Forbidden - Your account has been deactivated by your administrator\./,
    );
  });

  it('checks the scope before the user state', async () => {
    const { status, body } = await api('/groups', token('dave', ['openid']));
    expect(status).toBe(403);
    expect(body).toMatchObject({ error: 'insufficient_scope' });
  });
});

describe('older-GitLab refresh rotation', () => {
  it('revokes the replaced refresh token on the first API use of its successor', async () => {
    const emulator = createEmulatorServer({ refreshTokenRotation: 'on-first-use' });
    await new Promise<void>((resolve) => emulator.server.listen(0, '127.0.0.1', resolve));
    const origin = `http://127.0.0.1:${(emulator.server.address() as AddressInfo).port}`;
    emulator.setOrigin(origin);
    try {
      const old = emulator.control.mintToken({ user: 'bob', scopes: ['read_api'] });
      const next = emulator.control.mintToken({ user: 'bob', scopes: ['read_api'] });
      const successor = emulator.state.tokenByAccess(next.access_token)!;
      successor.previousRefreshToken = old.refresh_token;
      expect(emulator.state.tokenByRefresh(old.refresh_token)?.revokedAt).toBeNull();
      const res = await fetch(`${origin}/api/v4/user`, {
        headers: { authorization: `Bearer ${next.access_token}` },
      });
      expect(res.status).toBe(200);
      expect(emulator.state.tokenByRefresh(old.refresh_token)?.revokedAt).not.toBeNull();
      expect(successor.previousRefreshToken).toBeNull();
    } finally {
      await new Promise<void>((resolve) => {
        emulator.server.close(() => resolve());
        emulator.server.closeAllConnections();
      });
    }
  });
});

describe('GET /version', () => {
  it('answers with a read_user token', async () => {
    const { status, body } = await api('/version', token('bob', ['read_user']));
    expect(status).toBe(200);
    expect(body).toMatchObject({
      version: '17.9.0-ee',
      kas: { enabled: false, externalUrl: null, version: null },
      enterprise: true,
    });
  });

  it('needs a token', async () => {
    expect((await api('/version')).status).toBe(401);
  });
});

describe('GET /users/:id', () => {
  it('shows another user without private fields', async () => {
    const { status, body } = await api('/users/2', token('alice'));
    expect(status).toBe(200);
    expect(body).toMatchObject({ id: 2, username: 'bob', created_at: '2024-06-01T12:00:00.000Z' });
    expect(body).not.toHaveProperty('email');
    expect(body).not.toHaveProperty('is_admin');
  });

  it("hides a blocked user's profile", async () => {
    const { body } = await api('/users/4', token('alice'));
    expect(body).toMatchObject({ username: 'dave', state: 'blocked' });
    expect(body).not.toHaveProperty('created_at');
  });

  it('answers 404 User Not Found and 400 for a non-numeric id', async () => {
    expect(await api('/users/999', token('alice'))).toMatchObject({
      status: 404,
      body: { message: '404 User Not Found' },
    });
    expect(await api('/users/bob', token('alice'))).toMatchObject({
      status: 400,
      body: { error: 'id is invalid' },
    });
  });
});

describe('GET /groups', () => {
  it('lists the groups of a member, with the ancestors GitLab adds, by name', async () => {
    const { status, body } = await api<Obj[]>('/groups', token('bob'));
    expect(status).toBe(200);
    expect(paths(body)).toEqual(['acme', 'acme/platform/infra', 'acme/platform']);
    expect(body[0]).not.toHaveProperty('access_level');
  });

  it('includes groups shared with a group of the user', async () => {
    const { body } = await api<Obj[]>('/groups', token('grace'));
    expect(paths(body)).toEqual(['acme', 'acme/platform/infra', 'partners', 'acme/platform']);
  });

  it('answers the Group entity', async () => {
    const { body } = await api<Obj[]>('/groups?search=platform%2Finfra', token('bob'));
    expect(body).toHaveLength(1);
    expect(body[0]).toMatchObject({
      id: 12,
      web_url: `${gitlab.url}/groups/acme/platform/infra`,
      name: 'Infrastructure',
      path: 'infra',
      visibility: 'private',
      full_name: 'Acme / Platform / Infrastructure',
      full_path: 'acme/platform/infra',
      created_at: '2024-01-15T09:30:00.000Z',
      parent_id: 11,
      organization_id: 1,
      shared_runners_setting: 'enabled',
      ldap_cn: null,
      marked_for_deletion_on: null,
    });
  });

  it('applies min_access_level to direct memberships and their descendants', async () => {
    const alice = token('alice');
    const bob = token('bob');
    const grace = token('grace');
    expect(paths((await api<Obj[]>('/groups?min_access_level=50', alice)).body)).toEqual([
      'acme',
      'acme/platform/infra',
      'acme/marketing',
      'acme/platform',
    ]);
    expect(paths((await api<Obj[]>('/groups?min_access_level=40', alice)).body)).toContain('opensource');
    expect(paths((await api<Obj[]>('/groups?min_access_level=30', bob)).body)).toEqual([
      'acme/platform/infra',
      'acme/platform',
    ]);
    expect((await api<Obj[]>('/groups?min_access_level=40', bob)).body).toEqual([]);
    // A share never satisfies min_access_level: grace reaches acme/platform only through partners.
    expect(paths((await api<Obj[]>('/groups?min_access_level=30', grace)).body)).toEqual(['partners']);
  });

  it('refuses a min_access_level that is not an access level', async () => {
    expect(await api('/groups?min_access_level=35', token('bob'))).toMatchObject({
      status: 400,
      body: { error: 'min_access_level does not have a valid value' },
    });
  });

  it('adds public and internal groups with all_available, internal only for non-external users', async () => {
    expect(paths((await api<Obj[]>('/groups?all_available=true', token('bob'))).body)).toEqual([
      'acme',
      'acme/platform/infra',
      'acme/marketing',
      'opensource',
      'acme/platform',
    ]);
    expect(paths((await api<Obj[]>('/groups?all_available=true', token('erin'))).body)).toEqual([
      'acme',
      'opensource',
    ]);
  });

  it('lists every group to an administrator, and public groups to anonymous callers', async () => {
    expect((await api<Obj[]>('/groups', token('root'))).body).toHaveLength(6);
    expect(paths((await api<Obj[]>('/groups')).body)).toEqual(['opensource']);
  });

  it('filters top_level_only and orders by id or path, ties on id', async () => {
    const alice = token('alice');
    expect(paths((await api<Obj[]>('/groups?top_level_only=true', alice)).body)).toEqual([
      'acme',
      'opensource',
    ]);
    const byId = (await api<Obj[]>('/groups?order_by=id&sort=desc', alice)).body.map((g) => g['id']);
    expect(byId).toEqual([30, 13, 12, 11, 10]);
    expect(await api('/groups?order_by=size', alice)).toMatchObject({
      status: 400,
      body: { error: 'order_by does not have a valid value' },
    });
  });

  it('reflects a removed membership at once', async () => {
    const bob = token('bob');
    expect((await api<Obj[]>('/groups?min_access_level=30', bob)).body).toHaveLength(2);
    expect(gitlab.control.removeMembership({ user: 'bob', group: 'acme/platform' })).toBe(true);
    expect((await api<Obj[]>('/groups?min_access_level=30', bob)).body).toEqual([]);
    expect(await api('/groups/acme%2Fplatform/members/all/2', bob)).toMatchObject({
      status: 404,
      body: { message: '404 Group Not Found' },
    });
  });

  it('ignores an expired membership', async () => {
    gitlab.control.setMembership({
      user: 'bob',
      group: 'acme/platform',
      accessLevel: 'developer',
      expiresAt: daysAgo(1),
    });
    expect((await api<Obj[]>('/groups?min_access_level=10', token('bob'))).body).toEqual([]);
  });
});

describe('GET /groups/:id', () => {
  it('finds a group by id, by encoded full path, and by path in any case', async () => {
    const alice = token('alice');
    for (const id of ['11', 'acme%2Fplatform', 'ACME%2FPlatform']) {
      const { status, body } = await api(`/groups/${id}`, alice);
      expect(status).toBe(200);
      expect(body).toMatchObject({ id: 11, full_path: 'acme/platform', full_name: 'Acme / Platform' });
    }
  });

  it('lists the groups shared into it that the caller may see, and its projects', async () => {
    const { body } = await api('/groups/acme%2Fplatform', token('grace'));
    expect(body['shared_with_groups']).toEqual([
      {
        group_id: 20,
        group_name: 'Partners',
        group_full_path: 'partners',
        group_access_level: 30,
        expires_at: null,
      },
    ]);
    expect((body['projects'] as Obj[]).map((p) => p['path_with_namespace'])).toEqual(['acme/platform/api']);
    // partners is private and alice has no access to it: GitLab hides the link from her.
    expect((await api('/groups/acme%2Fplatform', token('alice'))).body['shared_with_groups']).toEqual([]);
    const hidden = await api('/groups/acme%2Fplatform?with_projects=false', token('alice'));
    expect(hidden.body).not.toHaveProperty('projects');
  });

  it('answers 404 Group Not Found for a missing or invisible group', async () => {
    expect(await api('/groups/nope', token('alice'))).toMatchObject({
      status: 404,
      body: { message: '404 Group Not Found' },
    });
    expect((await api('/groups/partners', token('bob'))).body).toEqual({ message: '404 Group Not Found' });
    expect((await api('/groups/acme')).body).toEqual({ message: '404 Group Not Found' });
    expect((await api('/groups/opensource')).status).toBe(200);
  });

  it('answers 404 for an unencoded path, which is no route', async () => {
    expect((await api('/groups/acme/platform', token('alice'))).status).toBe(404);
  });
});

describe('GET /groups/:id/subgroups', () => {
  it('lists the direct children the caller may see', async () => {
    const { status, body } = await api<Obj[]>('/groups/acme/subgroups', token('alice'));
    expect(status).toBe(200);
    expect(paths(body)).toEqual(['acme/marketing', 'acme/platform']);
    expect(paths((await api<Obj[]>('/groups/acme/subgroups', token('bob'))).body)).toEqual(['acme/platform']);
  });

  it('answers 404 when the parent is invisible', async () => {
    expect((await api('/groups/partners/subgroups', token('bob'))).body).toEqual({
      message: '404 Group Not Found',
    });
  });
});

describe('group membership', () => {
  it('answers the Member entity with the effective level', async () => {
    const { status, body } = await api('/groups/acme%2Fplatform/members/all/2', token('bob'));
    expect(status).toBe(200);
    expect(Object.keys(body)).toEqual([
      'id',
      'username',
      'name',
      'state',
      'locked',
      'avatar_url',
      'web_url',
      'access_level',
      'created_at',
      'expires_at',
      'membership_state',
    ]);
    expect(body).toMatchObject({
      id: 2,
      username: 'bob',
      access_level: 30,
      expires_at: null,
      membership_state: 'active',
      web_url: `${gitlab.url}/bob`,
    });
  });

  it('inherits access into subgroups, but not as a direct member', async () => {
    const bob = token('bob');
    expect((await api('/groups/acme%2Fplatform%2Finfra/members/all/2', bob)).body).toMatchObject({
      access_level: 30,
    });
    expect(await api('/groups/acme%2Fplatform%2Finfra/members/2', bob)).toMatchObject({
      status: 404,
      body: { message: '404 Not found' },
    });
    expect((await api('/groups/acme%2Fplatform/members/2', bob)).body).toMatchObject({ access_level: 30 });
  });

  it('caps access through a group share at the share level, in the group and below', async () => {
    const grace = token('grace');
    expect((await api('/groups/partners/members/all/6', grace)).body).toMatchObject({ access_level: 40 });
    expect((await api('/groups/acme%2Fplatform/members/all/6', grace)).body).toMatchObject({
      access_level: 30,
    });
    expect((await api('/groups/acme%2Fplatform%2Finfra/members/all/6', grace)).body).toMatchObject({
      access_level: 30,
    });
    gitlab.control.setShare({ sharedWith: 'partners', group: 'acme/platform', accessLevel: 'reporter' });
    expect((await api('/groups/acme%2Fplatform/members/all/6', grace)).body).toMatchObject({
      access_level: 20,
    });
  });

  it('counts an expired share for nothing', async () => {
    gitlab.control.setShare({
      sharedWith: 'partners',
      group: 'acme/platform',
      accessLevel: 'developer',
      expiresAt: daysAgo(1),
    });
    const grace = token('grace');
    expect((await api('/groups/acme%2Fplatform/members/all/6', token('alice'))).body).toEqual({
      message: '404 Not found',
    });
    expect((await api('/groups/acme%2Fplatform', grace)).body).toEqual({ message: '404 Group Not Found' });
    expect(paths((await api<Obj[]>('/groups', grace)).body)).toEqual(['acme', 'partners']);
  });

  it('takes the highest of direct, inherited and shared access', async () => {
    gitlab.control.setMembership({ user: 'grace', group: 'acme/platform/infra', accessLevel: 'guest' });
    const grace = token('grace');
    expect((await api('/groups/acme%2Fplatform%2Finfra/members/all/6', grace)).body).toMatchObject({
      access_level: 30,
    });
    expect((await api('/groups/acme%2Fplatform%2Finfra/members/6', grace)).body).toMatchObject({
      access_level: 10,
    });
  });

  it('answers 404 Not found for a non-member and 400 for a non-numeric user id', async () => {
    const alice = token('alice');
    expect(await api('/groups/acme/members/all/6', alice)).toMatchObject({
      status: 404,
      body: { message: '404 Not found' },
    });
    expect(await api('/groups/acme/members/all/999', alice)).toMatchObject({ status: 404 });
    expect(await api('/groups/acme/members/all/bob', alice)).toMatchObject({
      status: 400,
      body: { error: 'user_id is invalid' },
    });
  });

  it('hides the members of a private group the caller sees only through its projects', async () => {
    const bob = token('bob');
    expect((await api('/groups/acme', bob)).status).toBe(200);
    expect(await api('/groups/acme/members/all/2', bob)).toMatchObject({
      status: 403,
      body: { message: '403 Forbidden' },
    });
  });

  it('lists effective members with their highest level', async () => {
    const { status, headers, body } = await api<Obj[]>('/groups/acme%2Fplatform/members/all', token('alice'));
    expect(status).toBe(200);
    expect(headers.get('x-total')).toBe(String(body.length));
    expect(body.map((m) => [m['username'], m['access_level']])).toEqual([
      ['alice', 50],
      ['bob', 30],
      ['dave', 30],
      ['grace', 30],
      ['deploy-bot', 40],
    ]);
  });
});

describe('GET /projects', () => {
  it('lists the projects a user is a member of, newest first, ties on id', async () => {
    const { status, body } = await api<Obj[]>('/projects?membership=true', token('bob'));
    expect(status).toBe(200);
    expect(body.map((p) => p['path_with_namespace'])).toEqual([
      'acme/platform/infra/terraform',
      'acme/platform/api',
      'acme/app',
    ]);
  });

  it('counts shares for membership and min_access_level', async () => {
    const grace = token('grace');
    const member = (await api<Obj[]>('/projects?membership=true&order_by=id&sort=asc', grace)).body;
    expect(member.map((p) => p['id'])).toEqual([100, 101, 102, 104]);
    const developer = (await api<Obj[]>('/projects?min_access_level=30&order_by=id&sort=asc', grace)).body;
    expect(developer.map((p) => p['id'])).toEqual([101, 102, 104]);
  });

  it('lists visible projects by default: membership, internal and public', async () => {
    const { body } = await api<Obj[]>('/projects?order_by=id&sort=asc', token('bob'));
    expect(body.map((p) => p['id'])).toEqual([100, 101, 102, 103, 105]);
  });

  it('answers the simple entity with simple=true, and to anonymous callers', async () => {
    const simple = (await api<Obj[]>('/projects?simple=true&membership=true', token('bob'))).body;
    expect(simple[0]).not.toHaveProperty('permissions');
    expect(simple[0]).not.toHaveProperty('visibility');
    const anonymous = (await api<Obj[]>('/projects')).body;
    expect(anonymous.map((p) => p['path_with_namespace'])).toEqual(['opensource/labgate-demo']);
  });

  it('gives a personal project a user namespace', async () => {
    const { body } = await api<Obj[]>('/projects?owned=true', token('alice'));
    const dotfiles = body.find((p) => p['path_with_namespace'] === 'alice/dotfiles');
    expect(dotfiles).toMatchObject({
      name_with_namespace: 'Alice Liddell / dotfiles',
      namespace: {
        kind: 'user',
        path: 'alice',
        full_path: 'alice',
        parent_id: null,
        web_url: `${gitlab.url}/alice`,
      },
      owner: { id: 1, username: 'alice' },
      permissions: { project_access: { access_level: 50, notification_level: 3 }, group_access: null },
    });
  });
});

describe('GET /projects/:id', () => {
  it('answers the project entity with URLs and namespace', async () => {
    const { status, body } = await api('/projects/acme%2Fapp', token('bob'));
    expect(status).toBe(200);
    const host = new URL(gitlab.url).hostname;
    expect(body).toMatchObject({
      id: 100,
      name: 'App',
      name_with_namespace: 'Acme / App',
      path_with_namespace: 'acme/app',
      default_branch: 'main',
      ssh_url_to_repo: `git@${host}:acme/app.git`,
      http_url_to_repo: `${gitlab.url}/acme/app.git`,
      web_url: `${gitlab.url}/acme/app`,
      visibility: 'private',
      namespace: { id: 10, kind: 'group', full_path: 'acme', web_url: `${gitlab.url}/groups/acme` },
      shared_with_groups: [
        { group_id: 20, group_name: 'Partners', group_full_path: 'partners', group_access_level: 20 },
      ],
      permissions: { project_access: { access_level: 20, notification_level: 3 }, group_access: null },
    });
  });

  it('gives null permissions for access that comes only through a share', async () => {
    const { status, body } = await api('/projects/acme%2Fplatform%2Fapi', token('grace'));
    expect(status).toBe(200);
    expect(body['permissions']).toEqual({ project_access: null, group_access: null });
    const viaProjectShare = await api('/projects/100', token('grace'));
    expect(viaProjectShare.body['permissions']).toEqual({ project_access: null, group_access: null });
  });

  it("reports an ancestor group's membership for one project, but not in lists", async () => {
    const bob = token('bob');
    const one = await api('/projects/acme%2Fplatform%2Finfra%2Fterraform', bob);
    expect(one.body['permissions']).toEqual({
      project_access: null,
      group_access: { access_level: 30, notification_level: 3 },
    });
    const list = await api<Obj[]>('/projects?membership=true', bob);
    const terraform = list.body.find((p) => p['id'] === 102);
    expect(terraform?.['permissions']).toEqual({ project_access: null, group_access: null });
    const api101 = list.body.find((p) => p['id'] === 101);
    expect(api101?.['permissions']).toEqual({
      project_access: null,
      group_access: { access_level: 30, notification_level: 3 },
    });
  });

  it('answers 404 Project Not Found for a missing or invisible project', async () => {
    expect(await api('/projects/acme%2Fnope', token('bob'))).toMatchObject({
      status: 404,
      body: { message: '404 Project Not Found' },
    });
    expect((await api('/projects/partners%2Fportal', token('bob'))).body).toEqual({
      message: '404 Project Not Found',
    });
  });
});

describe('project membership', () => {
  it('counts direct, inherited and shared access', async () => {
    const alice = token('alice');
    expect((await api('/projects/acme%2Fapp/members/all/1', alice)).body).toMatchObject({ access_level: 50 });
    expect((await api('/projects/acme%2Fapp/members/all/2', alice)).body).toMatchObject({ access_level: 20 });
    expect((await api('/projects/acme%2Fapp/members/all/6', alice)).body).toMatchObject({ access_level: 20 });
    expect((await api('/projects/acme%2Fplatform%2Fapi/members/all/6', alice)).body).toMatchObject({
      access_level: 30,
    });
  });

  it('distinguishes direct membership', async () => {
    const alice = token('alice');
    expect((await api('/projects/acme%2Fapp/members/2', alice)).body).toMatchObject({ access_level: 20 });
    expect(await api('/projects/acme%2Fapp/members/1', alice)).toMatchObject({
      status: 404,
      body: { message: '404 Not found' },
    });
  });

  it('ignores an expired project share', async () => {
    gitlab.control.setShare({
      sharedWith: 'partners',
      project: 'acme/app',
      accessLevel: 'reporter',
      expiresAt: daysAgo(1),
    });
    expect((await api('/projects/acme%2Fapp/members/all/6', token('alice'))).body).toEqual({
      message: '404 Not found',
    });
    expect((await api('/projects/acme%2Fapp', token('grace'))).body).toEqual({
      message: '404 Project Not Found',
    });
  });
});

describe('pagination', () => {
  const many: Fixtures = {
    users: [{ username: 'pat', name: 'Pat Many', password: 'pat-password', email: 'pat@example.test' }],
    groups: Array.from({ length: 45 }, (_, i) => ({ fullPath: `team-${String(i + 1).padStart(2, '0')}` })),
    memberships: Array.from({ length: 45 }, (_, i) => ({
      user: 'pat',
      group: `team-${String(i + 1).padStart(2, '0')}`,
      accessLevel: 'developer' as const,
    })),
    applications: [
      {
        name: 'app',
        clientId: 'client',
        clientSecret: 'secret',
        redirectUris: ['http://127.0.0.1/cb'],
        scopes: ['read_api'],
      },
    ],
  };
  let big: RunningEmulator;
  let pat: string;
  beforeAll(async () => {
    big = await startEmulator({ fixtures: many });
    pat = big.control.mintToken({ user: 'pat', scopes: ['read_api'] }).access_token;
  });
  afterAll(() => big.close());

  const list = (query: string) => api<Obj[]>(`/groups${query}`, pat, {}, big);
  const link = (query: string) => `<${big.url}/api/v4/groups?${query}>`;

  it('pages 20 at a time with GitLab headers and links', async () => {
    const first = await list('?min_access_level=30');
    expect(first.body).toHaveLength(20);
    expect(first.body[0]).toMatchObject({ full_path: 'team-01' });
    expect(
      Object.fromEntries(
        ['x-page', 'x-per-page', 'x-next-page', 'x-prev-page', 'x-total', 'x-total-pages'].map((h) => [
          h,
          first.headers.get(h),
        ]),
      ),
    ).toEqual({
      'x-page': '1',
      'x-per-page': '20',
      'x-next-page': '2',
      'x-prev-page': '',
      'x-total': '45',
      'x-total-pages': '3',
    });
    expect(first.headers.get('link')).toBe(
      [
        `${link('min_access_level=30&page=2&per_page=20')}; rel="next"`,
        `${link('min_access_level=30&page=1&per_page=20')}; rel="first"`,
        `${link('min_access_level=30&page=3&per_page=20')}; rel="last"`,
      ].join(', '),
    );

    const last = await list('?min_access_level=30&page=3');
    expect(last.body.map((g) => g['full_path'])).toEqual([
      'team-41',
      'team-42',
      'team-43',
      'team-44',
      'team-45',
    ]);
    expect(last.headers.get('x-next-page')).toBe('');
    expect(last.headers.get('x-prev-page')).toBe('2');
    expect(last.headers.get('link')).toBe(
      [
        `${link('min_access_level=30&page=2&per_page=20')}; rel="prev"`,
        `${link('min_access_level=30&page=1&per_page=20')}; rel="first"`,
        `${link('min_access_level=30&page=3&per_page=20')}; rel="last"`,
      ].join(', '),
    );
  });

  it('returns every group exactly once across pages', async () => {
    const seen: unknown[] = [];
    let page: string | null = '1';
    while (page) {
      const answer: Answer<Obj[]> = await list(`?per_page=10&page=${page}`);
      seen.push(...answer.body.map((g) => g['id']));
      page = answer.headers.get('x-next-page') || null;
    }
    expect(seen).toHaveLength(45);
    expect(new Set(seen).size).toBe(45);
  });

  it('caps per_page at 100 and keeps the requested value in links', async () => {
    const { body, headers } = await list('?per_page=500');
    expect(body).toHaveLength(45);
    expect(headers.get('x-per-page')).toBe('100');
    expect(headers.get('x-total-pages')).toBe('1');
    expect(headers.get('link')).toBe(
      `${link('page=1&per_page=500')}; rel="first", ${link('page=1&per_page=500')}; rel="last"`,
    );
  });

  it('falls back as Kaminari does, and refuses what Grape refuses', async () => {
    expect((await list('?per_page=-5')).headers.get('x-per-page')).toBe('20');
    const zero = await list('?page=0');
    expect(zero.headers.get('x-page')).toBe('1');
    const beyond = await list('?page=9');
    expect(beyond.body).toEqual([]);
    expect(beyond.headers.get('x-next-page')).toBe('');
    expect(beyond.headers.get('x-prev-page')).toBe('');
    expect(await list('?per_page=0')).toMatchObject({
      status: 400,
      body: { error: 'per_page has a value not allowed' },
    });
    expect(await list('?page=abc')).toMatchObject({ status: 400, body: { error: 'page is invalid' } });
  });

  it('keeps route parameters in the links, as Grape params do', async () => {
    const { headers } = await api<Obj[]>('/groups/acme%2Fplatform/members/all?per_page=2', token('alice'));
    expect(headers.get('x-total')).toBe('5');
    expect(headers.get('link')).toContain(
      `<${gitlab.url}/api/v4/groups/acme%2Fplatform/members/all?id=acme%2Fplatform&page=2&per_page=2>; rel="next"`,
    );
  });
});

describe('relative URL root', () => {
  let rooted: RunningEmulator;
  beforeAll(async () => {
    rooted = await startEmulator({ basePath: '/gitlab' });
  });
  afterAll(() => rooted.close());

  it('puts the base path in every URL it builds', async () => {
    expect(new URL(rooted.url).pathname).toBe('/gitlab');
    const bob = rooted.control.mintToken({ user: 'bob', scopes: ['read_api'] }).access_token;
    const me = await api('/user', bob, {}, rooted);
    expect(me.body['web_url']).toBe(`${rooted.url}/bob`);
    const groups = await api<Obj[]>('/groups?per_page=1', bob, {}, rooted);
    expect(groups.body[0]?.['web_url']).toBe(`${rooted.url}/groups/acme`);
    expect(groups.headers.get('link')).toContain(
      `<${rooted.url}/api/v4/groups?page=2&per_page=1>; rel="next"`,
    );
    rooted.control.setUserState('bob', 'deactivated');
    expect((await api('/user', bob, {}, rooted)).body['message']).toMatch(
      new RegExp(`reactivate your account at ${rooted.url}$`),
    );
  });
});
