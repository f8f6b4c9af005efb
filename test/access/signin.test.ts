/**
 * Access decided at sign-in, against the emulated GitLab (docs/access.md; docs/security.md,
 * ACCESS-1 to ACCESS-11; memberships as docs/emulator.md, "Effective access", describes them):
 * every rule kind admits a user who holds it and refuses one who does not with a 403 page that says
 * what failed and never lists the user's other groups; requirements (2fa, human, internal); roles
 * in `/auth/session`; group-into-group and group-into-project shares with their cap and expiry; a
 * user in 45 (and 105) subgroups, which only pagination of `/groups` finds; the GitLab token of a
 * refused sign-in revoked; the startup check of scopes; the policy read from the environment.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createLabgate, type LabgateOptions, optionsFromEnv, type Policy } from '../../src/core/index.js';
import { type Fixtures, type RunningEmulator, startEmulator } from '../../src/emulator/index.js';
import { APP, testSecret } from '../core/harness.js';
import {
  ALL_SCOPES,
  CAROL_TOTP_SECRET,
  expectNoneOf,
  harness,
  NO_RULE_MATCHED,
  recordEvents,
  signedIn,
  signInAs,
} from './helpers.js';

let gitlab: RunningEmulator;
beforeAll(async () => {
  gitlab = await startEmulator();
});
afterAll(() => gitlab.close());
beforeEach(() => gitlab.control.reset());

/** The TOTP secret of the users who have two-factor authentication in the demo fixtures. */
const SECRETS: Record<string, string> = { carol: CAROL_TOTP_SECRET };

/** Every group and project path (and display name) of each demo user: none may appear on a refusal. */
const NAMES_OF: Record<string, string[]> = {
  alice: ['acme', 'Acme', 'opensource', 'Open Source', 'dotfiles'],
  bob: ['acme/platform', 'Platform', 'acme/app', 'infra'],
  carol: ['acme/app', 'acme/marketing', 'Marketing'],
  erin: ['acme/app', 'acme/platform/infra', 'Infrastructure'],
  grace: ['partners', 'Partners', 'acme/platform', 'acme/app', 'portal'],
  'deploy-bot': ['acme/platform', 'Platform'],
};

interface RuleCase {
  name: string;
  policy: Policy;
  allowed: string;
  refused: string;
  /** Extra set-up before the sign-ins. */
  arrange?: () => void;
}

const cases: RuleCase[] = [
  {
    name: 'group path with subgroups: a member of a subgroup only',
    policy: { allow: ['group:acme/platform'] },
    arrange: () =>
      gitlab.control.setMembership({ user: 'erin', group: 'acme/platform/infra', accessLevel: 20 }),
    allowed: 'erin',
    refused: 'carol',
  },
  {
    name: 'group path with subgroups: a direct member',
    policy: { allow: ['group:acme/platform'] },
    allowed: 'bob',
    refused: 'carol',
  },
  {
    name: 'group path without subgroups (group-exact): an inherited member counts',
    policy: { allow: ['group-exact:acme/platform'] },
    allowed: 'alice',
    refused: 'erin',
    arrange: () =>
      gitlab.control.setMembership({ user: 'erin', group: 'acme/platform/infra', accessLevel: 'owner' }),
  },
  {
    name: 'group without subgroups, object form: a subgroup member is refused',
    policy: { allow: [{ group: 'acme/platform', includeSubgroups: false }] },
    arrange: () =>
      gitlab.control.setMembership({ user: 'erin', group: 'acme/platform/infra', accessLevel: 50 }),
    allowed: 'bob',
    refused: 'erin',
  },
  {
    name: 'group with a minimum level: exactly at the boundary',
    policy: { allow: ['group:acme/platform>=developer'] },
    allowed: 'bob',
    refused: 'carol',
  },
  {
    name: 'group with a minimum level: one level below the boundary',
    policy: { allow: ['group:acme/platform>=maintainer'] },
    allowed: 'alice',
    refused: 'bob',
  },
  {
    name: 'project with a minimum level',
    policy: { allow: ['project:acme/app>=maintainer'] },
    allowed: 'carol',
    refused: 'bob',
  },
  {
    name: 'project: a user with only a group elsewhere',
    policy: { allow: ['project:acme/app'] },
    allowed: 'erin',
    refused: 'grace',
    // grace's share into acme/app is removed: partners and acme/platform remain, neither is acme/app.
    arrange: () => gitlab.control.removeShare({ sharedWith: 'partners', project: 'acme/app' }),
  },
  { name: 'user', policy: { allow: ['user:alice'] }, allowed: 'alice', refused: 'bob' },
  { name: 'user, case-insensitive', policy: { allow: ['user:ALICE'] }, allowed: 'alice', refused: 'bob' },
  {
    name: 'verified email domain',
    policy: { allow: ['email:@acme.test'] },
    allowed: 'bob',
    refused: 'grace',
  },
  {
    name: 'verified email domain: a subdomain is another domain',
    policy: { allow: ['email:@acme.test'] },
    allowed: 'carol',
    refused: 'deploy-bot',
  },
  {
    name: 'verified email subdomains (email:.DOMAIN): the domain itself is not a subdomain',
    policy: { allow: ['email:.acme.test'] },
    allowed: 'deploy-bot',
    refused: 'bob',
  },
  {
    name: 'group id (acme/platform is 11)',
    policy: { allow: ['group-id:11>=developer'] },
    allowed: 'bob',
    refused: 'carol',
  },
  {
    name: 'project id (acme/app is 100)',
    policy: { allow: ['project-id:100>=maintainer'] },
    allowed: 'carol',
    refused: 'bob',
  },
];

describe('each rule kind admits the member and refuses the others', () => {
  for (const c of cases) {
    it(c.name, async () => {
      c.arrange?.();
      const h = harness(gitlab, { access: c.policy });
      const denied = recordEvents(h.labgate, 'access.denied', 'session.created', 'signin.failed');

      const ok = await signInAs(h, c.allowed, SECRETS[c.allowed]);
      expect(ok.status, ok.detail ?? ok.body).toBe(303);
      expect(ok.cookie).not.toBeNull();

      const no = await signInAs(h, c.refused, SECRETS[c.refused]);
      expect(no.status).toBe(403);
      expect(no.code).toBe('access_forbidden');
      expect(no.detail).toBe(NO_RULE_MATCHED);
      expect(no.cookie).toBeNull();
      expect(no.body).toContain('Access denied');
      expectNoneOf(no.body, NAMES_OF[c.refused] ?? []);
      expect(denied.of('access.denied')).toEqual([
        { sessionId: null, userId: null, username: c.refused, reason: 'no-rule-matched' },
      ]);
      expect(denied.of('session.created').map((e) => e.username)).toEqual([c.allowed]);
      expect(denied.of('signin.failed').map((e) => e.code)).toEqual(['access_forbidden']);
    });
  }

  it('the first rule that matches is enough (a list of several kinds)', async () => {
    const h = harness(gitlab, {
      access: { allow: ['user:nobody', 'project:acme/app>=maintainer', 'email:@partners.test'] },
    });
    await signedIn(h, 'grace');
    await signedIn(h, 'carol', CAROL_TOTP_SECRET);
    expect((await signInAs(h, 'bob')).status).toBe(403);
  });
});

describe('requirements', () => {
  it('2fa: carol (with her TOTP) passes, alice is refused', async () => {
    const h = harness(gitlab, { access: { require: ['active', '2fa'] } });
    await signedIn(h, 'carol', CAROL_TOTP_SECRET);
    const alice = await signInAs(h, 'alice');
    expect(alice.status).toBe(403);
    expect(alice.code).toBe('access_forbidden');
    expect(alice.detail).toBe('This requires two-factor authentication on your GitLab account.');
    expectNoneOf(alice.body, NAMES_OF['alice']!);
  });

  it('human: deploy-bot is refused, alice passes', async () => {
    const h = harness(gitlab, { access: { allow: ['group:acme/platform'], require: ['active', 'human'] } });
    await signedIn(h, 'alice');
    const bot = await signInAs(h, 'deploy-bot');
    expect(bot.status).toBe(403);
    expect(bot.detail).toBe('Bot accounts are not admitted.');
    expectNoneOf(bot.body, ['acme/platform', 'Platform']);
  });

  it('internal: erin (external) is refused, bob passes', async () => {
    const h = harness(gitlab, { access: { require: ['active', 'internal'] } });
    await signedIn(h, 'bob');
    const erin = await signInAs(h, 'erin');
    expect(erin.status).toBe(403);
    expect(erin.detail).toBe('External GitLab users are not admitted.');
    expectNoneOf(erin.body, NAMES_OF['erin']!);
  });

  it('a failed requirement is reported before the rules, even for a user a rule admits', async () => {
    const h = harness(gitlab, { access: { allow: ['user:alice'], require: ['2fa'] } });
    const alice = await signInAs(h, 'alice');
    expect(alice.status).toBe(403);
    expect(alice.detail).toBe('This requires two-factor authentication on your GitLab account.');
  });
});

describe('roles', () => {
  const policy: Policy = {
    allow: ['group:acme'],
    roles: {
      owner: 'group:acme>=owner',
      developer: 'group:acme/platform>=developer',
      reader: 'project:acme/app>=reporter',
      partner: 'group:partners',
    },
  };

  async function rolesOf(user: string, secret?: string): Promise<unknown> {
    const h = harness(gitlab, { access: policy });
    const cookie = await signedIn(h, user, secret);
    const response = (await h.labgate.handle(new Request(`${APP}/auth/session`, { headers: { cookie } })))!;
    expect(response.status).toBe(200);
    return ((await response.json()) as { user: { roles: unknown } }).user.roles;
  }

  it('are granted from effective memberships and shown in /auth/session', async () => {
    // alice owns acme: inherited owner of acme/platform and of the project acme/app.
    expect(await rolesOf('alice')).toEqual(['developer', 'owner', 'reader']);
    // bob: developer of acme/platform, reporter of acme/app.
    expect(await rolesOf('bob')).toEqual(['developer', 'reader']);
    // carol: maintainer of acme/app, guest of acme/marketing (so allowed by group:acme).
    expect(await rolesOf('carol', CAROL_TOTP_SECRET)).toEqual(['reader']);
  });

  it('are the same on the Session object the app gets', async () => {
    const h = harness(gitlab, { access: policy });
    const cookie = await signedIn(h, 'bob');
    const session = await h.labgate.getSession(new Request(`${APP}/`, { headers: { cookie } }));
    expect(session?.user.roles).toEqual(['developer', 'reader']);
  });
});

describe('shares count as GitLab computes effective access', () => {
  it('a group shared into a group: grace passes >=developer, the cap refuses >=maintainer', async () => {
    // grace is maintainer of partners; partners is invited into acme/platform as developer.
    const dev = harness(gitlab, { access: { allow: ['group:acme/platform>=developer'] } });
    await signedIn(dev, 'grace');
    const maint = harness(gitlab, { access: { allow: ['group:acme/platform>=maintainer'] } });
    const capped = await signInAs(maint, 'grace');
    expect(capped.status).toBe(403);
    expect(capped.detail).toBe(NO_RULE_MATCHED);
    expectNoneOf(capped.body, NAMES_OF['grace']!);
  });

  it('a subgroup reached only through a share counts for a rule on its ancestor', async () => {
    // grace belongs to nothing under acme herself; partners is invited into acme/platform as developer.
    await signedIn(harness(gitlab, { access: { allow: ['group:acme>=developer'] } }), 'grace');
    const exact = await signInAs(
      harness(gitlab, {
        access: { allow: [{ group: 'acme', minAccessLevel: 'developer', includeSubgroups: false }] },
      }),
      'grace',
    );
    expect(exact.status).toBe(403);
  });

  it('a group shared into a project: grace passes project:acme/app>=reporter, not >=developer', async () => {
    await signedIn(harness(gitlab, { access: { allow: ['project:acme/app>=reporter'] } }), 'grace');
    const above = await signInAs(
      harness(gitlab, { access: { allow: ['project:acme/app>=developer'] } }),
      'grace',
    );
    expect(above.status).toBe(403);
  });

  it('an expired group share counts for nothing', async () => {
    gitlab.control.setShare({
      sharedWith: 'partners',
      group: 'acme/platform',
      accessLevel: 'developer',
      expiresAt: '2020-01-01',
    });
    const h = harness(gitlab, { access: { allow: ['group:acme/platform'] } });
    const grace = await signInAs(h, 'grace');
    expect(grace.status).toBe(403);
    expect(grace.detail).toBe(NO_RULE_MATCHED);
    // The same share without expiry admits her: the refusal was the expiry.
    gitlab.control.setShare({
      sharedWith: 'partners',
      group: 'acme/platform',
      accessLevel: 'developer',
      expiresAt: null,
    });
    await signedIn(h, 'grace');
  });

  it('an expired project share counts for nothing', async () => {
    gitlab.control.setShare({
      sharedWith: 'partners',
      project: 'acme/app',
      accessLevel: 'reporter',
      expiresAt: '2020-01-01',
    });
    const h = harness(gitlab, { access: { allow: ['project:acme/app'] } });
    expect((await signInAs(h, 'grace')).status).toBe(403);
  });

  it('a removed share refuses the next sign-in', async () => {
    gitlab.control.removeShare({ sharedWith: 'partners', group: 'acme/platform' });
    const h = harness(gitlab, { access: { allow: ['group:acme/platform'] } });
    expect((await signInAs(h, 'grace')).status).toBe(403);
  });
});

/** Fixtures with one user who is in `count` subgroups of `big` (not of `big` itself). */
function bigFixtures(count: number): Fixtures {
  const pad = (n: number) => String(n).padStart(3, '0');
  const groups = [{ fullPath: 'big', name: 'Big' }];
  const memberships: NonNullable<Fixtures['memberships']> = [];
  for (let i = 1; i <= count; i++) {
    groups.push({ fullPath: `big/g${pad(i)}`, name: `G${pad(i)}` });
    // Guest everywhere except in the last subgroup, in GitLab's order (by name): developer there.
    memberships.push({ user: 'many', group: `big/g${pad(i)}`, accessLevel: i === count ? 30 : 10 });
  }
  return {
    users: [
      { username: 'many', name: 'Many Groups', password: 'many-password', email: 'many@big.test' },
      { username: 'none', name: 'No Groups', password: 'none-password', email: 'none@big.test' },
    ],
    groups,
    memberships,
    applications: [
      {
        name: 'app',
        clientId: 'big-app',
        clientSecret: 'big-secret',
        redirectUris: [`${APP}/auth/callback`],
        scopes: ['openid', 'profile', 'email', 'read_user', 'read_api'],
        confidential: true,
      },
    ],
  };
}

describe('a user in many groups (pagination of /groups)', () => {
  for (const count of [45, 105]) {
    describe(`${count} subgroups`, () => {
      let big: RunningEmulator;
      beforeAll(async () => {
        big = await startEmulator({ fixtures: bigFixtures(count) });
      });
      afterAll(() => big.close());

      /** labgate on `big`, recording the `/groups` list requests it makes (with their query). */
      function bigHarness(policy: Policy) {
        const lists: URL[] = [];
        const h = harness(big, {
          access: policy,
          intercept: async (url, response) => {
            const u = new URL(url);
            if (u.pathname === '/api/v4/groups') lists.push(u);
            return response;
          },
        });
        return { h, lists };
      }

      it('passes group:big>=developer through the last subgroup only', async () => {
        const { h, lists } = bigHarness({ allow: ['group:big>=developer'] });
        await signedIn(h, 'many');
        // Every page was read: GitLab gives 20 a page by default, at most 100.
        const pages = lists.map((u) => u.searchParams.get('page'));
        const perPage = Number(lists[0]?.searchParams.get('per_page') ?? 20);
        expect(pages.length).toBe(Math.ceil(count / Math.min(perPage, 100)));
        expect(new Set(pages).size).toBe(pages.length);
        expect((await signInAs(h, 'none')).status).toBe(403);
      });

      it('passes group:big (any subgroup) and a rule on the last subgroup by path', async () => {
        const last = `big/g${String(count).padStart(3, '0')}`;
        await signedIn(bigHarness({ allow: ['group:big'] }).h, 'many');
        await signedIn(bigHarness({ allow: [`group:${last}>=developer`] }).h, 'many');
        expect((await signInAs(bigHarness({ allow: [`group:${last}>=maintainer`] }).h, 'many')).status).toBe(
          403,
        );
      });
    });
  }
});

describe('a refused sign-in', () => {
  it('revokes the GitLab token it was given', async () => {
    const h = harness(gitlab, { access: { allow: ['group:acme/platform>=developer'] } });
    gitlab.control.clearRequests();
    const carol = await signInAs(h, 'carol', CAROL_TOTP_SECRET);
    expect(carol.status).toBe(403);
    const revocations = gitlab.control.requests({ path: '/oauth/revoke' });
    expect(revocations.map((r) => r.status)).toEqual([200]);
    // No live token of carol's is left for the application.
    expect(gitlab.control.revokeUserTokens('carol', gitlab.applications[0]!.uid)).toBe(0);
  });

  it('an allowed sign-in keeps its token', async () => {
    const h = harness(gitlab, { access: { allow: ['group:acme/platform>=developer'] } });
    gitlab.control.clearRequests();
    await signedIn(h, 'bob');
    expect(gitlab.control.requests({ path: '/oauth/revoke' })).toEqual([]);
    expect(gitlab.control.revokeUserTokens('bob', gitlab.applications[0]!.uid)).toBe(1);
  });
});

describe('startup checks', () => {
  const base = (): LabgateOptions => {
    const app = gitlab.applications[0]!;
    return {
      gitlabUrl: gitlab.url,
      clientId: app.uid,
      clientSecret: app.secret,
      url: APP,
      secret: testSecret(),
      logger: false,
    };
  };

  it('a policy that needs read_api without it in the scopes is a TypeError', () => {
    for (const rule of [
      'group:acme>=developer',
      'project:acme/app',
      'group-id:11',
      'project-id:100>=reporter',
    ]) {
      expect(
        () =>
          createLabgate({ ...base(), scopes: 'openid profile email read_user', access: { allow: [rule] } }),
        rule,
      ).toThrow(TypeError);
      expect(() =>
        createLabgate({ ...base(), scopes: 'openid profile email read_user', access: { allow: [rule] } }),
      ).toThrow(/read_api/);
    }
    // A role that needs it counts as well.
    expect(() =>
      createLabgate({
        ...base(),
        scopes: 'openid profile email read_user',
        access: { roles: { admin: 'project:acme/app>=maintainer' } },
      }),
    ).toThrow(/read_api/);
    // With read_api (or api) it starts.
    expect(() =>
      createLabgate({ ...base(), scopes: ALL_SCOPES, access: { allow: ['group:acme>=developer'] } }),
    ).not.toThrow();
    expect(() =>
      createLabgate({ ...base(), scopes: 'openid api', access: { allow: ['project:acme/app'] } }),
    ).not.toThrow();
  });

  it('a malformed policy is a TypeError', () => {
    expect(() => createLabgate({ ...base(), scopes: ALL_SCOPES, access: { allow: ['grup:acme'] } })).toThrow(
      TypeError,
    );
    expect(() =>
      createLabgate({
        ...base(),
        scopes: ALL_SCOPES,
        access: { allow: [{ group: 'acme', minAcessLevel: 30 } as never] },
      }),
    ).toThrow(TypeError);
  });
});

describe('optionsFromEnv', () => {
  it('LABGATE_ALLOW / REQUIRE / RECHECK / WEBHOOK_SECRET make a working labgate', async () => {
    const app = gitlab.applications[0]!;
    const options = optionsFromEnv({
      GITLAB_URL: gitlab.url,
      GITLAB_CLIENT_ID: app.uid,
      GITLAB_CLIENT_SECRET: app.secret,
      GITLAB_SCOPES: ALL_SCOPES,
      LABGATE_URL: APP,
      LABGATE_SECRET: testSecret(),
      LABGATE_ALLOW: 'group:acme/platform>=developer, user:carol',
      LABGATE_REQUIRE: 'active,human',
      LABGATE_RECHECK: '30s',
      LABGATE_WEBHOOK_SECRET: 'hook-secret',
    });
    expect(options.access).toEqual({
      allow: [{ group: 'acme/platform', minAccessLevel: 'developer' }, { user: 'carol' }],
      require: ['active', 'human'],
    });
    const h = harness(gitlab, options);
    expect(h.labgate.options.recheckInterval).toBe(30);
    expect(h.labgate.options.webhookSecret).toBe('hook-secret');
    await signedIn(h, 'bob');
    await signedIn(h, 'carol', CAROL_TOTP_SECRET);
    // alice owns acme: she is an inherited owner of acme/platform.
    await signedIn(h, 'alice');
    const bot = await signInAs(h, 'deploy-bot');
    expect(bot.status).toBe(403);
    expect(bot.detail).toBe('Bot accounts are not admitted.');
    const erin = await signInAs(h, 'erin');
    expect(erin.status).toBe(403);
    expect(erin.detail).toBe(NO_RULE_MATCHED);
  });

  it('an env policy that needs read_api without the scope stops the start', () => {
    const app = gitlab.applications[0]!;
    const options = optionsFromEnv({
      GITLAB_URL: gitlab.url,
      GITLAB_CLIENT_ID: app.uid,
      GITLAB_CLIENT_SECRET: app.secret,
      GITLAB_SCOPES: 'openid profile email',
      LABGATE_URL: APP,
      LABGATE_SECRET: testSecret(),
      LABGATE_ALLOW: 'group:acme/platform>=developer',
    });
    expect(() => createLabgate({ ...options, logger: false })).toThrow(/read_api/);
  });
});
