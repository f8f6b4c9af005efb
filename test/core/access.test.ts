/**
 * Access decisions (docs/security.md, ACCESS-1 to ACCESS-11, ISSUER-5, USERINFO-4): `evaluateAccess`,
 * a pure function, as a table (levels, case, nesting, whole paths, shares and caps, expiry, account
 * state, bots, external users, 2FA, email domains, ids, incomplete facts, roles), the policy grammar
 * of LABGATE_ALLOW / LABGATE_REQUIRE, the scopes a policy needs, and a seeded property test of path
 * matching.
 */
import { describe, expect, it } from 'vitest';
import {
  ACCESS_LEVELS,
  type AccessFacts,
  type AccessFailure,
  accessLevelOf,
  evaluateAccess,
  formatRule,
  type MembershipFact,
  needsMemberships,
  normalisePolicy,
  type Policy,
  parsePolicy,
  parseRule,
  type Rule,
  scopesForPolicy,
  type UserFacts,
} from '../../src/core/access.js';

const NOW = Date.parse('2025-06-15T12:00:00Z');
const DAY = 86_400_000;
const iso = (ms: number): string => new Date(ms).toISOString();

function user(over: Partial<UserFacts> = {}): UserFacts {
  return {
    username: 'alice',
    email: 'alice@acme.com',
    emailVerified: true,
    state: 'active',
    bot: false,
    external: false,
    twoFactorEnabled: true,
    ...over,
  };
}

const m = (fullPath: string, accessLevel: number, extra: Partial<MembershipFact> = {}): MembershipFact => ({
  fullPath,
  accessLevel,
  ...extra,
});

function facts(over: Partial<AccessFacts> = {}): AccessFacts {
  return { user: user(), groups: [], projects: [], now: NOW, ...over };
}

const groups = (...list: MembershipFact[]): AccessFacts => facts({ groups: list });
const projects = (...list: MembershipFact[]): AccessFacts => facts({ projects: list });
const allow = (...rules: (Rule | string)[]): Policy => ({ allow: rules });

interface Case {
  name: string;
  policy: Policy;
  facts: AccessFacts;
  allowed: boolean;
  failed?: AccessFailure;
}

const ok = (name: string, policy: Policy, f: AccessFacts): Case => ({
  name,
  policy,
  facts: f,
  allowed: true,
});
const no = (
  name: string,
  policy: Policy,
  f: AccessFacts,
  failed: AccessFailure = 'no-rule-matched',
): Case => ({
  name,
  policy,
  facts: f,
  allowed: false,
  failed,
});

const L = ACCESS_LEVELS;
const platform = { group: 'acme/platform' };
const dev = { group: 'acme/platform', minAccessLevel: 'developer' } as const;

const cases: Case[] = [
  // Access levels: boundaries, defaults, guest vs minimal_access, owner
  ok('default minimum: a guest counts', allow(platform), groups(m('acme/platform', L.guest))),
  no('default minimum: minimal_access does not count', allow(platform), groups(m('acme/platform', 5))),
  ok(
    'minimal_access counts when the rule asks for it',
    allow({ group: 'acme/platform', minAccessLevel: 'minimal_access' }),
    groups(m('acme/platform', 5)),
  ),
  no('no access (0) never counts', allow(platform), groups(m('acme/platform', 0))),
  ok('>=developer: exactly developer', allow(dev), groups(m('acme/platform', 30))),
  no('>=developer: reporter is one below', allow(dev), groups(m('acme/platform', 20))),
  no('>=developer: planner', allow(dev), groups(m('acme/platform', 15))),
  ok(
    '>=planner: exactly planner',
    allow({ group: 'acme/platform', minAccessLevel: 'planner' }),
    groups(m('acme/platform', 15)),
  ),
  no(
    '>=reporter: planner is below',
    allow({ group: 'acme/platform', minAccessLevel: 'reporter' }),
    groups(m('acme/platform', 15)),
  ),
  ok(
    '>=owner: owner',
    allow({ group: 'acme/platform', minAccessLevel: 'owner' }),
    groups(m('acme/platform', 50)),
  ),
  no(
    '>=owner: maintainer',
    allow({ group: 'acme/platform', minAccessLevel: 'owner' }),
    groups(m('acme/platform', 40)),
  ),
  ok(
    '>=maintainer: owner is above',
    allow({ group: 'acme/platform', minAccessLevel: 'maintainer' }),
    groups(m('acme/platform', 50)),
  ),
  ok(
    'a level given as a number',
    allow({ group: 'acme/platform', minAccessLevel: 30 }),
    groups(m('acme/platform', 30)),
  ),
  ok('a level given as a string rule', allow('group:acme/platform>=30'), groups(m('acme/platform', 40))),
  ok(
    'an admin level (60) passes >=owner',
    allow('group:acme/platform>=owner'),
    groups(m('acme/platform', 60)),
  ),
  no(
    'a level that is not a number never counts',
    allow(platform),
    groups({ fullPath: 'acme/platform', accessLevel: '50' as unknown as number }),
  ),
  no('NaN level', allow(platform), groups(m('acme/platform', Number.NaN))),

  // Case: GitLab routes are unique case-insensitively (ACCESS-1)
  ok('rule in mixed case', allow({ group: 'ACME/Platform' }), groups(m('acme/platform', 30))),
  ok('fact in upper case', allow(platform), groups(m('ACME/PLATFORM', 30))),
  ok('project path case', allow('project:Acme/App'), projects(m('acme/app', 30))),
  ok('username case', allow('user:ALICE'), facts()),
  ok('email domain case', allow('email:@ACME.com'), facts({ user: user({ email: 'Alice@Acme.COM' }) })),
  no(
    'Kelvin sign (U+212A) in a fact never folds to an ASCII k',
    allow({ group: 'kcme' }),
    groups(m('\u212Acme', 50)),
  ),

  // Nesting: subgroups count by default, whole segments only
  ok('a subgroup counts by default', allow(platform), groups(m('acme/platform/infra', 30))),
  ok('a deep subgroup counts', allow(platform), groups(m('acme/platform/a/b/c', 10))),
  no(
    'includeSubgroups: false, a subgroup does not count',
    allow({ group: 'acme/platform', includeSubgroups: false }),
    groups(m('acme/platform/infra', 50)),
  ),
  ok(
    'includeSubgroups: false, the group itself counts',
    allow({ group: 'acme/platform', includeSubgroups: false }),
    groups(m('acme/platform', 10)),
  ),
  no(
    'group-exact: in the string form',
    allow('group-exact:acme/platform'),
    groups(m('acme/platform/infra', 50)),
  ),
  no('a parent group never counts for a subgroup rule', allow(platform), groups(m('acme', 50))),
  no('a sibling group does not count', allow(platform), groups(m('acme/other', 50))),
  no(
    'a subgroup below the minimum does not count',
    allow(dev),
    groups(m('acme/platform/infra', 20), m('elsewhere', 50)),
  ),

  // Whole-path matching (ACCESS-1)
  no('acme/team never matches acme/team-evil', allow('group:acme/team'), groups(m('acme/team-evil', 50))),
  no('acme/team never matches acme/teamx/y', allow('group:acme/team'), groups(m('acme/teamx/y', 50))),
  ok('acme/team matches acme/team/x', allow('group:acme/team'), groups(m('acme/team/x', 30))),
  no('acme never matches acme-evil/team', allow('group:acme'), groups(m('acme-evil/team', 50))),
  no(
    'acme/team never matches evil/acme/team (a suffix)',
    allow('group:acme/team'),
    groups(m('evil/acme/team', 50)),
  ),
  no('a fact with a trailing slash is ignored', allow('group-exact:acme/team'), groups(m('acme/team/', 50))),
  no('a fact with an empty segment is ignored', allow('group:acme'), groups(m('acme//team', 50))),
  no('a group rule ignores project memberships', allow('group:acme/team'), projects(m('acme/team', 50))),

  // Projects: exact paths, no subgroup concept
  ok('project: exact path', allow('project:acme/app>=maintainer'), projects(m('acme/app', 40))),
  no(
    'project: acme/app never matches acme/app-evil',
    allow('project:acme/app'),
    projects(m('acme/app-evil', 50)),
  ),
  no('project: nothing below a project counts', allow('project:acme/app'), projects(m('acme/app/x', 50))),
  no('project: below the minimum', allow('project:acme/app>=maintainer'), projects(m('acme/app', 30))),
  no(
    'project rule ignores group memberships',
    allow('project:acme/app'),
    groups(m('acme/app', 50), m('acme', 50)),
  ),

  // Shares and caps: the facts carry the effective level, already capped by the share
  no(
    'a share capped at reporter does not pass >=developer',
    allow(dev),
    groups(m('acme/platform', L.reporter)),
  ),
  ok('a share capped at developer passes >=developer', allow(dev), groups(m('acme/platform', L.developer))),
  ok(
    'the highest of several memberships counts (capped share + direct)',
    allow(dev),
    groups(m('acme/platform', 20), m('acme/platform', 40)),
  ),

  // Expiry
  no('an expired membership', allow(platform), groups(m('acme/platform', 50, { expiresAt: iso(NOW - DAY) }))),
  no(
    'expiring exactly now counts as expired',
    allow(platform),
    groups(m('acme/platform', 50, { expiresAt: iso(NOW) })),
  ),
  ok(
    'expiring tomorrow still counts',
    allow(platform),
    groups(m('acme/platform', 30, { expiresAt: iso(NOW + DAY) })),
  ),
  ok(
    'a date-only expires_at in the future',
    allow(platform),
    groups(m('acme/platform', 30, { expiresAt: '2025-06-16' })),
  ),
  no(
    'a date-only expires_at of today (00:00 UTC)',
    allow(platform),
    groups(m('acme/platform', 30, { expiresAt: '2025-06-15' })),
  ),
  no(
    'an expiry date without a clock does not count',
    allow(platform),
    facts({
      groups: [m('acme/platform', 50, { expiresAt: iso(NOW + DAY) })],
      now: undefined as unknown as number,
    }),
  ),
  ok('no expiry needs no clock', allow(platform), {
    user: user(),
    groups: [m('acme/platform', 30)],
    projects: [],
  }),
  no(
    'an unparseable expiry counts as expired',
    allow(platform),
    groups(m('acme/platform', 50, { expiresAt: 'soon' })),
  ),
  ok(
    'an expired share beside a live direct membership',
    allow(dev),
    groups(m('acme/platform', 50, { expiresAt: iso(NOW - 1) }), m('acme/platform', 30, { expiresAt: null })),
  ),
  no(
    'an expired subgroup membership',
    allow(platform),
    groups(m('acme/platform/infra', 50, { expiresAt: iso(NOW - DAY) })),
  ),
  no(
    'an expired project membership',
    allow('project:acme/app'),
    projects(m('acme/app', 50, { expiresAt: '2020-01-01' })),
  ),

  // Account state (requirement active, the default)
  no('blocked', {}, facts({ user: user({ state: 'blocked' }) }), 'active'),
  no('deactivated', {}, facts({ user: user({ state: 'deactivated' }) }), 'active'),
  no('banned', {}, facts({ user: user({ state: 'banned' }) }), 'active'),
  no('unknown state fails closed', {}, facts({ user: user({ state: null }) }), 'active'),
  no('state in another case is not active', {}, facts({ user: user({ state: 'Active' }) }), 'active'),
  no(
    'blocked with a matching group rule',
    allow(platform),
    facts({ user: user({ state: 'blocked' }), groups: [m('acme/platform', 50)] }),
    'active',
  ),
  ok('require: [] requires nothing', { require: [] }, facts({ user: user({ state: null }) })),
  ok('active is the default', {}, facts()),

  // Bots
  no('a bot with require human', { require: ['human'] }, facts({ user: user({ bot: true }) }), 'human'),
  no('unknown bot flag fails human', { require: ['human'] }, facts({ user: user({ bot: null }) }), 'human'),
  ok('a human', { require: ['human'] }, facts()),
  ok('a bot without the human requirement', {}, facts({ user: user({ bot: true }) })),

  // External users
  no(
    'an external user with require internal',
    { require: ['internal'] },
    facts({ user: user({ external: true }) }),
    'internal',
  ),
  no(
    'unknown external flag fails internal',
    { require: ['internal'] },
    facts({ user: user({ external: null }) }),
    'internal',
  ),
  ok('an internal user', { require: ['internal'] }, facts()),

  // 2FA
  no('2FA off', { require: ['2fa'] }, facts({ user: user({ twoFactorEnabled: false }) }), '2fa'),
  no('2FA unknown', { require: ['2fa'] }, facts({ user: user({ twoFactorEnabled: null }) }), '2fa'),
  ok('2FA on', { require: ['active', '2fa'] }, facts()),
  no(
    'the first failed requirement is reported, in policy order',
    { require: ['2fa', 'human'] },
    facts({ user: user({ twoFactorEnabled: false, bot: true }) }),
    '2fa',
  ),
  no(
    'requirements come before rules',
    { allow: ['user:alice'], require: ['internal'] },
    facts({ user: user({ external: true }) }),
    'internal',
  ),

  // Confirmed email
  no(
    'unverified email',
    { require: ['confirmed-email'] },
    facts({ user: user({ emailVerified: false }) }),
    'confirmed-email',
  ),
  no(
    'verified email but an unconfirmed account',
    { require: ['confirmed-email'] },
    facts({ user: user({ confirmed: false }) }),
    'confirmed-email',
  ),
  ok('verified email', { require: ['confirmed-email'] }, facts({ user: user({ confirmed: true }) })),

  // Email domains: verified only, exact, no suffix attacks
  ok('verified email in the domain', allow('email:@acme.com'), facts()),
  ok('domain written without @', allow({ emailDomain: 'acme.com' }), facts()),
  no(
    'unverified email in the domain',
    allow('email:@acme.com'),
    facts({ user: user({ emailVerified: false }) }),
  ),
  no(
    'suffix attack: evilacme.com',
    allow('email:@acme.com'),
    facts({ user: user({ email: 'mallory@evilacme.com' }) }),
  ),
  no(
    'suffix attack: acme.com.evil.com',
    allow('email:@acme.com'),
    facts({ user: user({ email: 'm@acme.com.evil.com' }) }),
  ),
  no(
    'a subdomain does not match the exact form',
    allow('email:@acme.com'),
    facts({ user: user({ email: 'a@mail.acme.com' }) }),
  ),
  ok(
    'a subdomain matches the .acme.com form',
    allow('email:.acme.com'),
    facts({ user: user({ email: 'a@mail.acme.com' }) }),
  ),
  ok(
    'a deeper subdomain matches .acme.com',
    allow('email:.acme.com'),
    facts({ user: user({ email: 'a@x.eu.acme.com' }) }),
  ),
  no(
    'the apex does not match .acme.com',
    allow('email:.acme.com'),
    facts({ user: user({ email: 'a@acme.com' }) }),
  ),
  no(
    'evilacme.com does not match .acme.com',
    allow('email:.acme.com'),
    facts({ user: user({ email: 'a@evilacme.com' }) }),
  ),
  no('no email', allow('email:@acme.com'), facts({ user: user({ email: null }) })),
  no(
    'an email with trailing junk',
    allow('email:@acme.com'),
    facts({ user: user({ email: 'a@acme.com ' }) }),
  ),
  no(
    'an email with a trailing dot',
    allow('email:@acme.com'),
    facts({ user: user({ email: 'a@acme.com.' }) }),
  ),
  no(
    'an email without a local part',
    allow('email:@acme.com'),
    facts({ user: user({ email: '@acme.com' }) }),
  ),

  // Users
  ok('a username rule', allow('user:alice'), facts()),
  no('another username', allow('user:alice'), facts({ user: user({ username: 'alice2' }) })),
  no('a username prefix is not enough', allow('user:alice2'), facts()),

  // Rules by id (ACCESS-5)
  ok('group id', allow({ groupId: 42 }), groups(m('acme/platform', 30, { id: 42 }))),
  no('a recycled path with another id', allow({ groupId: 42 }), groups(m('acme/platform', 50, { id: 99 }))),
  no('a fact without an id never matches an id rule', allow('group-id:42'), groups(m('acme/platform', 50))),
  ok(
    'group id: a subgroup below the path the facts give for the id',
    allow('group-id:42>=developer'),
    groups(m('acme/platform', 10, { id: 42 }), m('acme/platform/infra', 30, { id: 43 })),
  ),
  no(
    'group id exact: a subgroup does not count',
    allow('group-id-exact:42>=developer'),
    groups(m('acme/platform', 10, { id: 42 }), m('acme/platform/infra', 30, { id: 43 })),
  ),
  no(
    'group id below the minimum',
    allow('group-id:42>=maintainer'),
    groups(m('acme/platform', 30, { id: 42 })),
  ),
  no(
    'group id: facts disagreeing on the path of the id',
    allow('group-id:42'),
    groups(m('acme/platform', 30, { id: 42 }), m('other/place', 30, { id: 42 })),
  ),
  ok('project id', allow('project-id:7>=reporter'), projects(m('acme/app', 20, { id: 7 }))),
  no('another project id', allow('project-id:7'), projects(m('acme/app', 50, { id: 8 }))),

  // Incomplete facts fail closed
  no(
    'incomplete, a group rule',
    allow(platform),
    facts({ groups: [m('acme/platform', 50)], complete: false }),
    'memberships-unavailable',
  ),
  no(
    'incomplete, a user rule beside a group rule that would not even be needed',
    allow('user:alice', platform),
    facts({ complete: false }),
    'memberships-unavailable',
  ),
  ok('incomplete, the allow list is empty', {}, facts({ complete: false })),
  ok(
    'incomplete, only user and email rules',
    allow('user:bob', 'email:@acme.com'),
    facts({ complete: false }),
  ),
  no(
    'groups that are not a list, with a group rule',
    allow(platform),
    facts({ groups: null as unknown as MembershipFact[] }),
    'memberships-unavailable',
  ),
  no(
    'incomplete facts and a failed requirement: the requirement is reported',
    allow(platform),
    facts({ complete: false, user: user({ state: 'blocked' }) }),
    'active',
  ),
  ok(
    'complete: true is the same as absent',
    allow(platform),
    facts({ groups: [m('acme/platform', 10)], complete: true }),
  ),

  // Empty allow lists admit everyone (who meets the requirements)
  ok('allow absent', {}, facts()),
  ok('allow empty', { allow: [] }, facts()),
  ok('allow empty, no memberships at all', { allow: [] }, facts({ groups: [], projects: [] })),
  no(
    'one of several rules must match: none does',
    allow('user:bob', 'email:@corp.example', dev),
    groups(m('acme/platform', 20)),
  ),
  ok(
    'one of several rules must match: the last does',
    allow('user:bob', 'email:@corp.example', dev),
    groups(m('acme/platform', 30)),
  ),

  // Malformed policies and facts deny, never throw
  no('an unknown rule string', allow('grp:acme'), facts(), 'invalid-policy'),
  no(
    'an unknown requirement (never silently dropped)',
    { require: ['mfa' as '2fa'] },
    facts(),
    'invalid-policy',
  ),
  no(
    'a misspelt key in a rule object',
    allow({ group: 'acme/platform', minAcessLevel: 'owner' } as unknown as Rule),
    groups(m('acme/platform', 10)),
    'invalid-policy',
  ),
  no('allow given as a string', { allow: 'group:acme' as unknown as Rule[] }, facts(), 'invalid-policy'),
  no(
    'an invalid level in a rule object',
    allow({ group: 'acme', minAccessLevel: 25 }),
    groups(m('acme', 50)),
    'invalid-policy',
  ),
  no(
    'a project rule with includeSubgroups',
    allow({ project: 'acme/app', includeSubgroups: true } as Rule),
    facts(),
    'invalid-policy',
  ),
  no('a bad role', { roles: { admin: 'nonsense' } }, facts(), 'invalid-policy'),
  no('facts missing', {}, null as unknown as AccessFacts, 'invalid-facts'),
  no('facts without a user', {}, { groups: [], projects: [] } as unknown as AccessFacts, 'invalid-facts'),
];

describe('evaluateAccess', () => {
  it('has a table of 60+ cases', () => {
    expect(cases.length).toBeGreaterThanOrEqual(60);
    expect(new Set(cases.map((c) => c.name)).size).toBe(cases.length);
  });

  it.each(cases)('$name', ({ policy, facts: f, allowed, failed }) => {
    const decision = evaluateAccess(policy, f);
    expect(decision.allowed).toBe(allowed);
    expect(decision.failed).toBe(failed);
    expect(decision.reasons.length).toBeGreaterThan(0);
    if (!allowed) expect(decision.roles).toEqual([]);
    if (allowed) expect('failed' in decision).toBe(false);
  });
});

describe('roles', () => {
  const roles = {
    admin: 'group:acme/platform>=maintainer',
    editor: 'project:acme/app>=developer',
    viewer: ['group:acme', { user: 'carol' }],
    auditor: 'user:dave|email:@audit.example',
  } satisfies Policy['roles'];

  const rows: [string, Policy, AccessFacts, boolean, string[]][] = [
    [
      'several roles, sorted by name',
      { roles },
      facts({ groups: [m('acme/platform', 40)], projects: [m('acme/app', 30)] }),
      true,
      ['admin', 'editor', 'viewer'],
    ],
    ['a role below its level', { roles }, facts({ groups: [m('acme/platform', 30)] }), true, ['viewer']],
    ['no roles', { roles }, facts(), true, []],
    [
      'a role from a list (user rule)',
      { roles },
      facts({ user: user({ username: 'carol' }) }),
      true,
      ['viewer'],
    ],
    [
      'a role from | alternatives',
      { roles },
      facts({ user: user({ email: 'x@audit.example' }) }),
      true,
      ['auditor'],
    ],
    [
      'roles need the requirements too',
      { roles, require: ['2fa'] },
      facts({ user: user({ twoFactorEnabled: false }), groups: [m('acme/platform', 50)] }),
      false,
      [],
    ],
    [
      'a denied user gets no roles',
      { allow: ['user:bob'], roles },
      facts({ groups: [m('acme/platform', 50)] }),
      false,
      [],
    ],
    [
      'incomplete facts grant no membership roles, but user roles',
      { allow: ['user:carol'], roles },
      facts({ user: user({ username: 'carol' }), groups: [m('acme/platform', 50)], complete: false }),
      true,
      ['viewer'],
    ],
    [
      'roles given as rule objects',
      { roles: { ops: { groupId: 42, minAccessLevel: 'developer' } } },
      facts({ groups: [m('acme/ops', 30, { id: 42 })] }),
      true,
      ['ops'],
    ],
    [
      'an expired membership grants no role',
      { roles },
      facts({ groups: [m('acme/platform', 50, { expiresAt: iso(NOW - DAY) })] }),
      true,
      [],
    ],
    [
      'roles from parsePolicy',
      parsePolicy({
        roles: 'admin=group:acme/platform>=maintainer;editor=project:acme/app>=developer|user:alice',
      }),
      facts(),
      true,
      ['editor'],
    ],
  ];

  it.each(rows)('%s', (_name, policy, f, allowed, expected) => {
    const decision = evaluateAccess(policy, f);
    expect(decision.allowed).toBe(allowed);
    expect(decision.roles).toEqual(expected);
  });

  it('explains each role', () => {
    const decision = evaluateAccess({ roles }, facts({ groups: [m('acme/platform', 40)] }));
    expect(decision.reasons).toContain('role admin: member of acme/platform with maintainer (≥ maintainer)');
    expect(decision.reasons).toContain('role editor: not granted (no rule matched)');
  });
});

describe('reasons and failed', () => {
  const secretGroups = [m('secret/skunkworks', 50), m('acme/platform-evil', 50), m('hr/layoffs', 40)];

  it('says which membership allowed the user', () => {
    const decision = evaluateAccess(allow('group:acme/platform>=reporter'), groups(m('acme/platform', 30)));
    expect(decision).toEqual({
      allowed: true,
      roles: [],
      reasons: ['requirement active: met', 'allowed: member of acme/platform with developer (≥ reporter)'],
    });
  });

  it('names a subgroup, a project and an id', () => {
    const reasonOf = (policy: Policy, f: AccessFacts) => evaluateAccess(policy, f).reasons.at(-1);
    expect(reasonOf(allow(platform), groups(m('acme/platform/infra', 30)))).toBe(
      'allowed: member of acme/platform/infra, a subgroup of acme/platform, with developer (≥ guest)',
    );
    expect(reasonOf(allow('project:acme/app>=maintainer'), projects(m('acme/app', 50)))).toBe(
      'allowed: member of project acme/app with owner (≥ maintainer)',
    );
    expect(reasonOf(allow('group-id:42'), groups(m('acme/platform', 10, { id: 42 })))).toBe(
      'allowed: member of group 42 (acme/platform) with guest (≥ guest)',
    );
    expect(reasonOf(allow('user:Alice'), facts())).toBe('allowed: username alice');
    expect(reasonOf(allow('email:@acme.com'), facts())).toBe('allowed: verified email in acme.com');
    expect(reasonOf({}, facts())).toBe('allowed: no allow rules (everyone with a GitLab account)');
  });

  it('names the failed requirement', () => {
    const decision = evaluateAccess(
      { require: ['active', '2fa'] },
      facts({ user: user({ twoFactorEnabled: false }) }),
    );
    expect(decision.failed).toBe('2fa');
    expect(decision.reasons).toEqual([
      'requirement active: met',
      'denied: requires 2fa (two-factor authentication is off)',
    ]);
  });

  it('says that an unknown fact fails closed', () => {
    const decision = evaluateAccess({}, facts({ user: user({ state: null }) }));
    expect(decision.reasons[0]).toMatch(/^denied: requires active \(account state unknown, fails closed/);
  });

  it('explains a rule that did not match by its level, without naming other groups', () => {
    const decision = evaluateAccess(allow(dev), groups(m('acme/platform', 20), ...secretGroups));
    expect(decision.failed).toBe('no-rule-matched');
    expect(decision.reasons).toEqual([
      'requirement active: met',
      'rule group:acme/platform>=developer: no match (highest level reporter, below developer)',
      'denied: no rule matched',
    ]);
  });

  it.each([
    ['a denial', allow('group:acme/platform>=owner', 'project:acme/app', 'user:bob')],
    ['an allowed user', allow('email:@acme.com')],
    ['roles', { roles: { admin: 'group:acme/platform' } } satisfies Policy],
    ['a failed requirement', { require: ['2fa'] } satisfies Policy],
  ])('never leaks the user’s other groups: %s', (_name, policy) => {
    const decision = evaluateAccess(policy, {
      ...groups(m('acme/platform', 10), ...secretGroups),
      user: user({ twoFactorEnabled: false }),
    });
    const text = JSON.stringify(decision);
    for (const secret of ['skunkworks', 'platform-evil', 'layoffs', 'secret/', 'hr/']) {
      expect(text).not.toContain(secret);
    }
  });

  it('explains expiry and incomplete facts', () => {
    const expired = evaluateAccess(
      allow(platform),
      groups(m('acme/platform', 50, { expiresAt: '2020-01-01' })),
    );
    expect(expired.reasons).toContain('rule group:acme/platform: no match (membership expired)');
    const incomplete = evaluateAccess(allow(platform), facts({ complete: false }));
    expect(incomplete.reasons).toContain('denied: GitLab memberships could not be read');
    expect(incomplete.failed).toBe('memberships-unavailable');
  });

  it('explains an invalid policy', () => {
    const decision = evaluateAccess({ require: ['mfa' as '2fa'] }, facts());
    expect(decision.failed).toBe('invalid-policy');
    expect(decision.reasons[0]).toContain('"mfa"');
  });
});

describe('evaluateAccess is total', () => {
  const junk: unknown[] = [
    null,
    undefined,
    0,
    'x',
    [],
    {},
    { allow: [null] },
    { allow: [[]] },
    { allow: [{}] },
    { allow: [{ group: 42 }] },
    { allow: [{ groupId: 'x' }] },
    { allow: [{ user: '' }] },
    { roles: null },
    { roles: { admin: [] } },
    { roles: { 'bad name': 'user:a' } },
    { require: 'active' },
    { require: [null] },
    { extra: true },
  ];
  const junkFacts: unknown[] = [
    null,
    {},
    { user: null },
    { user: {} },
    { user: { username: 5, email: 7, emailVerified: 'yes', state: 1 }, groups: 'x', projects: {} },
    {
      user: user(),
      groups: [null, 1, 'acme', { fullPath: 5 }, { fullPath: 'a', accessLevel: 'x' }],
      projects: [{}],
    },
    {
      user: user(),
      groups: [{ fullPath: 'acme/platform', accessLevel: 50, expiresAt: 5 }],
      projects: [],
      now: 'x',
    },
    new Proxy(
      {},
      {
        get() {
          throw new Error('hostile');
        },
      },
    ),
  ];

  it('never throws and denies odd input', () => {
    for (const policy of junk) {
      for (const f of junkFacts) {
        const decision = evaluateAccess(policy as Policy, f as AccessFacts);
        expect(typeof decision.allowed).toBe('boolean');
        expect(Array.isArray(decision.reasons)).toBe(true);
      }
    }
    expect(evaluateAccess({}, junkFacts[3] as AccessFacts).allowed).toBe(false);
    expect(evaluateAccess({ allow: [{}] as Rule[] }, facts()).failed).toBe('invalid-policy');
    expect(evaluateAccess({ roles: { admin: [] } }, facts()).failed).toBe('invalid-policy');
    expect(evaluateAccess({}, junkFacts[7] as AccessFacts).failed).toBe('invalid-facts');
  });
});

describe('parsePolicy', () => {
  const valid: [string, Rule][] = [
    ['group:acme/platform', { group: 'acme/platform' }],
    ['group:acme/platform>=developer', { group: 'acme/platform', minAccessLevel: 'developer' }],
    ['group:acme/platform>=30', { group: 'acme/platform', minAccessLevel: 'developer' }],
    ['group:acme/platform>=Maintainer', { group: 'acme/platform', minAccessLevel: 'maintainer' }],
    ['group:acme>=minimal-access', { group: 'acme', minAccessLevel: 'minimal_access' }],
    ['  group : acme/platform  >=  owner ', { group: 'acme/platform', minAccessLevel: 'owner' }],
    ['GROUP:acme', { group: 'acme' }],
    [
      'group-exact:acme/platform>=reporter',
      { group: 'acme/platform', includeSubgroups: false, minAccessLevel: 'reporter' },
    ],
    ['project:acme/app>=maintainer', { project: 'acme/app', minAccessLevel: 'maintainer' }],
    ['project:acme/sub/app', { project: 'acme/sub/app' }],
    ['group-id:42>=developer', { groupId: 42, minAccessLevel: 'developer' }],
    ['group-id-exact:42', { groupId: 42, includeSubgroups: false }],
    ['project-id:7', { projectId: 7 }],
    ['project-id:7>=20', { projectId: 7, minAccessLevel: 'reporter' }],
    ['email:@acme.com', { emailDomain: 'acme.com' }],
    ['email:acme.com', { emailDomain: 'acme.com' }],
    ['email:@ACME.Com', { emailDomain: 'acme.com' }],
    ['email:.acme.com', { emailDomain: '.acme.com' }],
    ['email:@.acme.com', { emailDomain: '.acme.com' }],
    ['user:alice', { user: 'alice' }],
    ['user:@alice', { user: 'alice' }],
    ['user:a.b-c_d', { user: 'a.b-c_d' }],
    ['group:my.group/_x-y', { group: 'my.group/_x-y' }],
  ];

  it.each(valid)('reads %j', (text, rule) => {
    expect(parsePolicy({ allow: text })).toEqual({ allow: [rule] });
    expect(parseRule(text)).toEqual(rule);
  });

  it('reads a list, any one suffices, with whitespace', () => {
    expect(parsePolicy({ allow: ' group:acme/platform>=developer , user:alice,email:@acme.com ' })).toEqual({
      allow: [
        { group: 'acme/platform', minAccessLevel: 'developer' },
        { user: 'alice' },
        { emailDomain: 'acme.com' },
      ],
    });
  });

  it('treats empty strings as unset', () => {
    expect(parsePolicy({})).toEqual({});
    expect(parsePolicy({ allow: '', require: '  ', roles: '' })).toEqual({});
  });

  const invalid: [string, RegExp][] = [
    ['grp:acme', /unknown kind "grp"/],
    ['acme/platform', /is not a rule/],
    [':acme', /is not a rule/],
    ['group:', /names nothing/],
    ['group:acme=developer', /only >= LEVEL/],
    ['group:acme>developer', /only >= LEVEL/],
    ['group:acme<=developer', /only >= LEVEL/],
    ['group:acme>=', />= without a level/],
    ['group:acme>=root', /unknown access level "root"/],
    ['group:acme>=25', /unknown access level 25/],
    ['group:acme>=0', /unknown access level 0/],
    ['group:acme>=60', /unknown access level 60/],
    ['group:acme>=developer>=owner', /only >= LEVEL/],
    ['group:/acme', /not a group full path/],
    ['group:acme/', /not a group full path/],
    ['group:acme//x', /not a group full path/],
    ['group:acme/../x', /not a group full path/],
    ['group:ac me', /not a group full path/],
    ['group:acme/*', /not a group full path/],
    ['group:-acme', /not a group full path/],
    ['project:acme', /lives in a namespace/],
    ['group-id:abc', /not a numeric id/],
    ['group-id:0', /not a numeric id/],
    ['group-id:-4', /not a numeric id/],
    ['project-id:1.5', /not a numeric id/],
    ['project-id:99999999999999999999', /not a numeric id/],
    ['user:', /names nothing/],
    ['user:al ice', /not a GitLab username/],
    ['user:alice>=developer', /take no access level/],
    ['email:alice@acme.com', /an address, not a domain/],
    ['email:@acme', /not an email domain/],
    ['email:.com', /not an email domain/],
    ['email:*.acme.com', /leading dot/],
    ['email:@acme..com', /not an email domain/],
    ['email:@-acme.com', /not an email domain/],
    ['email:@acme.com>=developer', /take no access level/],
  ];

  it.each(invalid)('refuses %j with a TypeError naming it and the accepted forms', (text, problem) => {
    let error: unknown;
    try {
      parsePolicy({ allow: `user:bob,${text}` });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(TypeError);
    const message = (error as TypeError).message;
    expect(message).toContain('LABGATE_ALLOW');
    expect(message).toContain(JSON.stringify(text.trim()));
    expect(message).toMatch(problem);
    expect(message).toContain('accepted: group:PATH[>=LEVEL]');
    expect(() => parseRule(text)).toThrow(TypeError);
  });

  it.each([',', 'user:bob,', ',user:bob', 'user:bob,,user:carol', ' , '])(
    'refuses an empty entry in %j',
    (text) => {
      expect(() => parsePolicy({ allow: text })).toThrow(/LABGATE_ALLOW: empty entry/);
    },
  );

  it('reads LABGATE_REQUIRE', () => {
    expect(parsePolicy({ require: 'active' })).toEqual({ require: ['active'] });
    expect(parsePolicy({ require: ' 2FA , confirmed-email,human,internal,active,2fa' })).toEqual({
      require: ['2fa', 'confirmed-email', 'human', 'internal', 'active'],
    });
    expect(parsePolicy({ require: 'none' })).toEqual({ require: [] });
  });

  it.each([
    ['mfa', /unknown requirement "mfa"; accepted: active, 2fa, confirmed-email, human, internal or none/],
    ['active,bots', /unknown requirement "bots"/],
    ['none,2fa', /none cannot be combined/],
    ['active,', /empty entry/],
  ])('refuses LABGATE_REQUIRE=%j', (text, problem) => {
    expect(() => parsePolicy({ require: text })).toThrow(TypeError);
    expect(() => parsePolicy({ require: text })).toThrow(problem);
  });

  it('reads roles', () => {
    expect(
      parsePolicy({
        roles: 'admin=group:acme/platform>=maintainer; editor = project:acme/app>=developer | user:alice',
      }),
    ).toEqual({
      roles: {
        admin: [{ group: 'acme/platform', minAccessLevel: 'maintainer' }],
        editor: [{ project: 'acme/app', minAccessLevel: 'developer' }, { user: 'alice' }],
      },
    });
  });

  it.each([
    ['group:acme/platform>=maintainer', /not NAME=RULE/],
    ['=user:alice', /not NAME=RULE/],
    ['bad name=user:alice', /not NAME=RULE/],
    ['admin=user:alice;admin=user:bob', /given twice/],
    ['admin=', /roles: admin: empty entry/],
    ['admin=user:alice|', /roles: admin: empty entry/],
    ['admin=user:alice;', /empty entry/],
    ['admin=grp:x', /roles: admin: "grp:x" has an unknown kind/],
  ])('refuses roles %j', (text, problem) => {
    expect(() => parsePolicy({ roles: text })).toThrow(TypeError);
    expect(() => parsePolicy({ roles: text })).toThrow(problem);
  });

  it('refuses non-string values', () => {
    expect(() => parsePolicy({ allow: 5 as unknown as string })).toThrow(TypeError);
    expect(() => parsePolicy(null as unknown as Parameters<typeof parsePolicy>[0])).toThrow(TypeError);
  });
});

describe('formatRule', () => {
  it.each([
    [{ group: 'acme/platform' }, 'group:acme/platform'],
    [{ group: 'acme/platform', minAccessLevel: 40 }, 'group:acme/platform>=maintainer'],
    [
      { group: 'Acme/Platform', minAccessLevel: 'developer', includeSubgroups: false },
      'group-exact:Acme/Platform>=developer',
    ],
    [{ group: 'acme', includeSubgroups: true }, 'group:acme'],
    [{ project: 'acme/app', minAccessLevel: 'maintainer' }, 'project:acme/app>=maintainer'],
    [{ groupId: 42, minAccessLevel: 30 }, 'group-id:42>=developer'],
    [{ groupId: 42, includeSubgroups: false }, 'group-id-exact:42'],
    [{ projectId: 7 }, 'project-id:7'],
    [{ user: 'alice' }, 'user:alice'],
    [{ emailDomain: '@acme.com' }, 'email:@acme.com'],
    [{ emailDomain: 'ACME.com' }, 'email:@acme.com'],
    [{ emailDomain: '.acme.com' }, 'email:.acme.com'],
  ] as [Rule, string][])('formats %j as %s and parses back', (rule, text) => {
    expect(formatRule(rule)).toBe(text);
    expect(formatRule(parseRule(text))).toBe(text);
  });

  it('never throws', () => {
    expect(formatRule({} as Rule)).toBe('(invalid rule)');
    expect(formatRule(null as unknown as Rule)).toBe('(invalid rule)');
    expect(formatRule({ group: 'a', minAccessLevel: 'root' } as unknown as Rule)).toBe('(invalid rule)');
  });
});

describe('normalisePolicy', () => {
  it('parses strings and applies the defaults', () => {
    expect(normalisePolicy({})).toEqual({ allow: [], require: ['active'], roles: {} });
    expect(
      normalisePolicy({
        allow: ['group:acme>=developer', { user: 'alice' }],
        require: [],
        roles: { admin: 'group:acme>=owner|user:root', viewer: { group: 'acme' } },
      }),
    ).toEqual({
      allow: [{ group: 'acme', minAccessLevel: 'developer' }, { user: 'alice' }],
      require: [],
      roles: {
        admin: [{ group: 'acme', minAccessLevel: 'owner' }, { user: 'root' }],
        viewer: [{ group: 'acme' }],
      },
    });
  });

  it.each([
    [{ allow: [{ group: 'acme', minAcessLevel: 'owner' }] }, /group rule has no "minAcessLevel"/],
    [{ allow: [{ group: 'acme', user: 'alice' }] }, /exactly one of/],
    [{ allow: [{ group: 'acme', includeSubgroups: 'no' }] }, /includeSubgroups must be true or false/],
    [
      { allow: [{ group: 'acme', minAccessLevel: 'boss' }] },
      /unknown access level "boss"; use minimal_access/,
    ],
    [{ allow: [{ projectId: 0 }] }, /projectId must be a positive integer/],
    [{ allow: ['group:'] }, /names nothing/],
    [{ require: ['2FA'] }, /unknown requirement "2FA"/],
    [{ roles: { 'a,b': 'user:x' } }, /not a role name/],
    [{ roles: { admin: [] } }, /at least one rule/],
    [{ allows: ['user:x'] }, /a policy has no "allows"/],
  ])('refuses %j with a TypeError', (policy, problem) => {
    expect(() => normalisePolicy(policy as Policy)).toThrow(TypeError);
    expect(() => normalisePolicy(policy as Policy)).toThrow(problem);
  });
});

describe('accessLevelOf', () => {
  it.each([
    ['minimal_access', 5],
    ['guest', 10],
    ['planner', 15],
    ['reporter', 20],
    ['developer', 30],
    ['maintainer', 40],
    ['owner', 50],
    [30, 30],
    ['Developer', 30],
  ] as const)('%j is %d', (level, n) => {
    expect(accessLevelOf(level as 'guest')).toBe(n);
  });

  it.each([0, 60, 25, -1, 'root', ''])('refuses %j', (level) => {
    expect(() => accessLevelOf(level as 'guest')).toThrow(TypeError);
  });
});

describe('scopesForPolicy and needsMemberships', () => {
  const rows: [string, Policy, string[], boolean][] = [
    ['the default policy reads the account state', {}, ['openid', 'read_user'], false],
    ['nothing required, nothing allowed', { require: [] }, ['openid'], false],
    ['user rules only', { allow: ['user:alice'], require: [] }, ['openid'], false],
    [
      'email rules need the verified primary email',
      { allow: ['email:@acme.com'], require: [] },
      ['openid', 'email'],
      false,
    ],
    [
      'a group rule without a level: the groups claim suffices',
      { allow: ['group:acme'], require: [] },
      ['openid'],
      true,
    ],
    ['an explicit >=guest is the default', { allow: ['group:acme>=guest'], require: [] }, ['openid'], true],
    [
      'a group rule with a level',
      { allow: ['group:acme>=developer'], require: [] },
      ['openid', 'read_api'],
      true,
    ],
    [
      'minimal_access needs levels too',
      { allow: ['group:acme>=minimal_access'], require: [] },
      ['openid', 'read_api'],
      true,
    ],
    ['a project rule', { allow: ['project:acme/app'], require: [] }, ['openid', 'read_api'], true],
    ['a group id rule', { allow: [{ groupId: 4 }], require: [] }, ['openid', 'read_api'], true],
    ['a project id rule', { allow: ['project-id:4'], require: [] }, ['openid', 'read_api'], true],
    ['read_api also reads /api/v4/user', { allow: ['project:acme/app'] }, ['openid', 'read_api'], true],
    [
      'a role rule counts',
      { roles: { admin: 'group:acme>=owner' }, require: [] },
      ['openid', 'read_api'],
      true,
    ],
    ['confirmed-email needs email', { require: ['confirmed-email'] }, ['openid', 'email'], false],
    ['2fa reads /api/v4/user', { require: ['2fa'] }, ['openid', 'read_user'], false],
    [
      'everything',
      { allow: ['email:@acme.com', 'group-id:1'], require: ['active', 'confirmed-email'] },
      ['openid', 'email', 'read_api'],
      true,
    ],
  ];

  it.each(rows)('%s', (_name, policy, scopes, memberships) => {
    expect(scopesForPolicy(policy)).toEqual(scopes);
    expect(needsMemberships(policy)).toBe(memberships);
  });

  it('throws a TypeError on a malformed policy', () => {
    expect(() => scopesForPolicy({ allow: ['nope'] })).toThrow(TypeError);
    expect(() => needsMemberships({ require: ['x' as '2fa'] })).toThrow(TypeError);
  });
});

describe('property: a rule only ever matches its own path or what is below it', () => {
  // mulberry32: a small seeded PRNG, so a failure reproduces.
  function prng(seed: number): () => number {
    let a = seed >>> 0;
    return () => {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }
  // Few, confusable segments so that near misses (prefixes, suffixes, case) are common.
  const SEGMENTS = [
    'acme',
    'ACME',
    'acme-evil',
    'acm',
    'team',
    'Team',
    'team-x',
    'teamx',
    'a',
    'a.b',
    'a_b',
    'x',
  ];

  function randomPath(next: () => number, max: number): string {
    const length = 1 + Math.floor(next() * max);
    return Array.from({ length }, () => SEGMENTS[Math.floor(next() * SEGMENTS.length)]!).join('/');
  }

  // The oracle, written differently from the implementation: on whole lower-cased strings.
  const lower = (s: string) => s.toLowerCase();
  const oracle = (rule: string, path: string, subgroups: boolean) =>
    lower(path) === lower(rule) || (subgroups && lower(path).startsWith(`${lower(rule)}/`));

  it.each([1, 2, 3, 42, 2025])('seed %d: 500 random rules against random group lists', (seed) => {
    const next = prng(seed);
    for (let i = 0; i < 500; i++) {
      const rule = randomPath(next, 3);
      const subgroups = next() < 0.6;
      const list = Array.from({ length: Math.floor(next() * 5) }, () =>
        m(randomPath(next, 4), 5 + Math.floor(next() * 50)),
      );
      const minLevel = [10, 20, 30, 40, 50][Math.floor(next() * 5)]!;
      const decision = evaluateAccess(
        { allow: [{ group: rule, includeSubgroups: subgroups, minAccessLevel: minLevel }], require: [] },
        facts({ groups: list }),
      );
      const expected = list.some((g) => g.accessLevel >= minLevel && oracle(rule, g.fullPath, subgroups));
      expect(
        decision.allowed,
        `${rule} (subgroups ${subgroups}, >=${minLevel}) vs ${JSON.stringify(list)}`,
      ).toBe(expected);
      // Whatever the outcome, groups outside the rule's subtree are never named.
      const foreign = `zz${seed}x${i}/hidden`;
      const withForeign = evaluateAccess(
        { allow: [{ group: rule, includeSubgroups: subgroups, minAccessLevel: minLevel }], require: [] },
        facts({ groups: [m(foreign, 50), ...list] }),
      );
      expect(withForeign.allowed).toBe(expected);
      expect(withForeign.reasons.join('\n')).not.toContain(foreign);
    }
  });
});
