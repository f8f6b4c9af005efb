/**
 * The gateway's path rules (docs/security.md, GATEWAY-3, GATEWAY-5): per-route rules by longest
 * prefix, oauth2-proxy's `skip_auth_routes` as its `buildRoutesAllowlist` reads them, `api_routes`,
 * Go regular expression syntax, and the `/oauth2/auth` query constraints, decided by the core's
 * `evaluateAccess` so that a mapping that admits too much fails here.
 */
import { describe, expect, it } from 'vitest';
import { type AccessFacts, evaluateAccess, type MembershipFact } from '../../src/core/access.js';
import type { SkipRule } from '../../src/gateway/config.js';
import { compileRules, parsePolicyParams, type QueryConstraints } from '../../src/gateway/rules.js';

const none = { routes: [], skipRoutes: [], skipPrefixes: [], apiRoutes: [] };
const skip = (method: string | null, negate: boolean, pattern: string): SkipRule => ({
  method,
  negate,
  pattern,
});

describe('routeFor: longest prefix on whole segments', () => {
  const rules = compileRules({
    ...none,
    routes: [
      { prefix: '/', allow: ['group:acme'] },
      { prefix: '/admin', allow: ['group:acme/platform>=maintainer'] },
      { prefix: '/admin/billing/', allow: ['user:alice'] },
      { prefix: '/api', allow: ['group:acme/api'] },
    ],
  });
  const cases: [string, string][] = [
    ['/admin', '/admin'],
    ['/admin/', '/admin'],
    ['/admin/users', '/admin'],
    ['/administrator', '/'],
    ['/Admin', '/'],
    ['/admin/billing', '/admin/billing/'],
    ['/admin/billing/x', '/admin/billing/'],
    ['/admin/billingx', '/admin'],
    ['/api/v1', '/api'],
    ['/apis', '/'],
    ['/', '/'],
  ];
  it.each(cases)('%s → %s', (path, prefix) => {
    expect(rules.routeFor(path)?.prefix).toBe(prefix);
  });

  it('the longest prefix wins whatever the configured order', () => {
    const reversed = compileRules({
      ...none,
      routes: [
        { prefix: '/admin', allow: ['user:bob'] },
        { prefix: '/admin/billing', allow: ['user:alice'] },
      ],
    });
    expect(reversed.routeFor('/admin/billing/1')?.allow).toEqual(['user:alice']);
  });

  it('no route covers a path: null', () => {
    const only = compileRules({ ...none, routes: [{ prefix: '/admin', allow: ['user:alice'] }] });
    expect(only.routeFor('/public')).toBeNull();
    expect(only.routeFor('/administrator')).toBeNull();
  });
});

describe('skips: skip_auth_routes as oauth2-proxy reads them', () => {
  const rules = compileRules({
    ...none,
    skipRoutes: [
      skip('GET', false, '^/public/'),
      skip('POST', true, '^/hooks/'),
      skip(null, false, '/healthz$'),
      skip('put', false, '^/upload$'),
    ],
  });
  const cases: [string, string, string, boolean][] = [
    ['METHOD=regex: that method', 'GET', '/public/logo.png', true],
    ['METHOD=regex: the method is compared upper-case', 'get', '/public/logo.png', true],
    ['METHOD=regex: another method', 'PATCH', '/public/logo.png', false],
    ['METHOD=regex: another path', 'GET', '/private/x', false],
    ['a lower-case configured method is upper-cased', 'PUT', '/upload', true],
    ['METHOD!=regex: that method, a path the regex does NOT match', 'POST', '/api/items', true],
    ['METHOD!=regex: that method, a path the regex matches', 'POST', '/hooks/deploy', false],
    ['METHOD!=regex: another method, whatever the path', 'GET', '/api/items', false],
    ['plain regex: any method', 'DELETE', '/svc/healthz', true],
    ['plain regex is unanchored at the start', 'GET', '/deep/down/healthz', true],
    ['plain regex: the $ anchor holds', 'GET', '/healthz/more', false],
    ['paths are case-sensitive', 'GET', '/Public/logo.png', false],
  ];
  it.each(cases)('%s (%s %s → %s)', (_name, method, path, expected) => {
    expect(rules.skips(method, path)).toBe(expected);
  });

  it('!=regex: any method, every path the regex does not match', () => {
    const negated = compileRules({ ...none, skipRoutes: [skip(null, true, '^/private/')] });
    expect(negated.skips('GET', '/public')).toBe(true);
    expect(negated.skips('POST', '/other/x')).toBe(true);
    expect(negated.skips('GET', '/private/x')).toBe(false);
    expect(negated.skips('DELETE', '/private/')).toBe(false);
  });

  it('an unanchored regex matches anywhere in the path, as Go MatchString does', () => {
    const loose = compileRules({ ...none, skipRoutes: [skip(null, false, '/public')] });
    expect(loose.skips('GET', '/private/public')).toBe(true);
    expect(loose.skips('GET', '/private')).toBe(false);
  });

  it('skip prefixes match whole segments only', () => {
    const prefixes = compileRules({ ...none, skipPrefixes: ['/healthz', '/static/'] });
    expect(prefixes.skips('GET', '/healthz')).toBe(true);
    expect(prefixes.skips('POST', '/healthz/live')).toBe(true);
    expect(prefixes.skips('GET', '/healthzx')).toBe(false);
    expect(prefixes.skips('GET', '/static')).toBe(true);
    expect(prefixes.skips('GET', '/static/app.js')).toBe(true);
    expect(prefixes.skips('GET', '/staticky')).toBe(false);
    expect(prefixes.skips('GET', '/')).toBe(false);
  });

  it('nothing configured: nothing skips', () => {
    expect(compileRules(none).skips('GET', '/')).toBe(false);
  });
});

describe('isApi: api_routes, unanchored', () => {
  const rules = compileRules({ ...none, apiRoutes: ['^/api/', '\\.json$'] });
  it.each([
    ['/api/items', true],
    ['/api', false],
    ['/data/report.json', true],
    ['/data/report.json/x', false],
    ['/app', false],
  ] as const)('%s → %s', (path, expected) => {
    expect(rules.isApi(path)).toBe(expected);
  });
});

describe('Go regular expression syntax', () => {
  it('a leading (?i) becomes the i flag', () => {
    const rules = compileRules({
      ...none,
      skipRoutes: [skip(null, false, '(?i)^/public/')],
      apiRoutes: ['(?i)^/API/'],
    });
    expect(rules.skips('GET', '/PUBLIC/x')).toBe(true);
    expect(rules.skips('GET', '/public/x')).toBe(true);
    expect(rules.isApi('/api/v1')).toBe(true);
  });

  it('(?P<name>…) named groups are accepted', () => {
    const rules = compileRules({ ...none, apiRoutes: ['^/v(?P<version>[0-9]+)/'] });
    expect(rules.isApi('/v2/items')).toBe(true);
    expect(rules.isApi('/vx/items')).toBe(false);
  });

  it('escaped parentheses and classes are not mistaken for groups', () => {
    const rules = compileRules({ ...none, apiRoutes: ['^/a\\(\\?i\\)$', '^/b[(?i)]$'] });
    expect(rules.isApi('/a(?i)')).toBe(true);
    expect(rules.isApi('/b?')).toBe(true);
  });

  it.each([
    ['(?s) not leading', '^/a(?i)b'],
    ['(?s)', '(?s)^/a.b'],
    ['(?m)', '(?m)^/a$'],
    ['(?U)', '(?U)^/a+'],
    ['a scoped flag group', '^/(?i:admin)'],
    ['(?i) twice', '(?i)(?i)^/a'],
  ])('other inline flags are refused: %s', (_name, pattern) => {
    expect(() => compileRules({ ...none, apiRoutes: [pattern] })).toThrow(
      new TypeError(
        `labgate: api_routes: ${JSON.stringify(pattern)} uses an inline flag group: only a leading (?i) is supported`,
      ),
    );
  });

  it.each([
    ['an unclosed group', '^/(a'],
    ['an unclosed class', '^/[a'],
    ['a lone quantifier', '*/a'],
    ['RE2 \\z (no JavaScript meaning)', '^/a\\z'],
    ['RE2 \\Q…\\E quoting', '\\Q/a.b\\E'],
    ['a POSIX class', '^/[[:alpha:]]+$'],
  ])('an invalid regular expression throws a TypeError naming it: %s', (_name, pattern) => {
    expect(() => compileRules({ ...none, skipRoutes: [skip('GET', false, pattern)] })).toThrow(TypeError);
    expect(() => compileRules({ ...none, skipRoutes: [skip('GET', false, pattern)] })).toThrow(
      `skip_auth_routes: ${JSON.stringify(pattern)}`,
    );
  });
});

// ─── /oauth2/auth query constraints ─────────────────────────────────────────────────────────────

const NOW = Date.parse('2025-06-15T12:00:00Z');
const m = (fullPath: string, accessLevel: number): MembershipFact => ({ fullPath, accessLevel });

function person(
  over: { email?: string; groups?: MembershipFact[]; projects?: MembershipFact[] } = {},
): AccessFacts {
  return {
    user: {
      username: 'alice',
      email: over.email ?? 'alice@acme.com',
      emailVerified: true,
      state: 'active',
      bot: false,
      external: false,
      twoFactorEnabled: false,
    },
    groups: over.groups ?? [],
    projects: over.projects ?? [],
    now: NOW,
  };
}

function constraints(query: string): QueryConstraints {
  const result = parsePolicyParams(new URLSearchParams(query));
  if (result instanceof TypeError) throw result;
  return result;
}

/** Every policy must pass: the caller's AND across kinds. */
function admits(query: string, facts: AccessFacts): boolean {
  return constraints(query).policies.every((policy) => evaluateAccess(policy, facts).allowed);
}

describe('parsePolicyParams', () => {
  it('no constraints: no policies, no emails', () => {
    expect(constraints('')).toEqual({ policies: [], emails: null });
    expect(constraints('allowed_groups=&allowed_emails=,&rd=/x')).toEqual({ policies: [], emails: null });
  });

  it('allowed_groups: one policy, any group suffices, require: []', () => {
    const { policies } = constraints('allowed_groups=acme/platform,acme/ops');
    expect(policies).toEqual([
      {
        allow: [
          { group: 'acme/platform', includeSubgroups: false },
          { group: 'acme/ops', includeSubgroups: false },
        ],
        require: [],
      },
    ]);
  });

  it('allowed_groups: members of the group pass, inherited members too, others are refused', () => {
    const q = 'allowed_groups=acme/platform';
    expect(admits(q, person({ groups: [m('acme/platform', 10)] }))).toBe(true);
    expect(admits(q, person({ groups: [m('acme/ops', 50)] }))).toBe(false);
    expect(admits(q, person({ groups: [m('acme/platform-evil', 50)] }))).toBe(false);
    expect(admits(q, person())).toBe(false);
  });

  it('allowed_groups: a member of a subgroup only is refused, as with oauth2-proxy', () => {
    expect(admits('allowed_groups=acme', person({ groups: [m('acme/platform', 50)] }))).toBe(false);
  });

  it('allowed_groups: project:PATH needs reporter (oauth2-proxy level 20)', () => {
    const q = 'allowed_groups=project:acme/app';
    expect(constraints(q).policies[0]!.allow).toEqual([{ project: 'acme/app', minAccessLevel: 'reporter' }]);
    expect(admits(q, person({ projects: [m('acme/app', 20)] }))).toBe(true);
    expect(admits(q, person({ projects: [m('acme/app', 10)] }))).toBe(false);
  });

  it('repeated keys merge, entries are trimmed, empty entries ignored', () => {
    const { policies } = constraints('allowed_groups=acme/a,&allowed_groups=%20acme/b%20,,acme/c');
    expect(policies).toHaveLength(1);
    expect(policies[0]!.allow).toHaveLength(3);
    expect(admits('allowed_groups=acme/a&allowed_groups=acme/b', person({ groups: [m('acme/b', 30)] }))).toBe(
      true,
    );
  });

  it('allowed_email_domains: one policy of exact domains', () => {
    const q = 'allowed_email_domains=acme.com,example.org';
    expect(constraints(q).policies).toEqual([
      { allow: [{ emailDomain: 'acme.com' }, { emailDomain: 'example.org' }], require: [] },
    ]);
    expect(admits(q, person({ email: 'bob@example.org' }))).toBe(true);
    expect(admits(q, person({ email: 'bob@mail.acme.com' }))).toBe(false);
    expect(admits(q, person({ email: 'bob@evilacme.com' }))).toBe(false);
  });

  it.each(['.acme.com', '*.acme.com'])(
    'allowed_email_domains=%s admits the domain and its subdomains',
    (d) => {
      const q = `allowed_email_domains=${d}`;
      expect(admits(q, person({ email: 'bob@acme.com' }))).toBe(true);
      expect(admits(q, person({ email: 'bob@mail.acme.com' }))).toBe(true);
      expect(admits(q, person({ email: 'bob@evilacme.com' }))).toBe(false);
    },
  );

  it('allowed_email_domains with * admits any domain: no policy', () => {
    expect(constraints('allowed_email_domains=acme.com,*').policies).toEqual([]);
  });

  it('allow: labgate rules, one policy', () => {
    const q = 'allow=group:acme/platform>=maintainer,user:bob';
    expect(constraints(q).policies).toEqual([
      { allow: [{ group: 'acme/platform', minAccessLevel: 'maintainer' }, { user: 'bob' }], require: [] },
    ]);
    expect(admits(q, person({ groups: [m('acme/platform', 40)] }))).toBe(true);
    expect(admits(q, person({ groups: [m('acme/platform', 30)] }))).toBe(false);
  });

  it('kinds combine with AND: each must pass', () => {
    const q = 'allowed_groups=acme&allowed_email_domains=acme.com&allow=user:alice';
    expect(constraints(q).policies).toHaveLength(3);
    expect(admits(q, person({ groups: [m('acme', 30)] }))).toBe(true);
    expect(admits(q, person({ groups: [m('acme', 30)], email: 'alice@other.com' }))).toBe(false);
    expect(admits(q, person({ email: 'alice@acme.com' }))).toBe(false);
  });

  it('allowed_emails: lower-cased, merged, for the caller', () => {
    expect(constraints('allowed_emails=Ann@Acme.com,bob@acme.com&allowed_emails=CAROL@x.org')).toEqual({
      policies: [],
      emails: ['ann@acme.com', 'bob@acme.com', 'carol@x.org'],
    });
  });

  it.each([
    ['allow', 'allow=group:acme,nonsense:x', 'nonsense:x'],
    ['allow', 'allow=group:acme>=superuser', 'group:acme>=superuser'],
    ['allowed_groups', 'allowed_groups=acme/../x', 'acme/../x'],
    ['allowed_groups', 'allowed_groups=project:', 'project:'],
    ['allowed_email_domains', 'allowed_email_domains=not a domain', 'not a domain'],
  ])('a malformed %s value is returned as a TypeError naming it (%s)', (key, query, bad) => {
    const result = parsePolicyParams(new URLSearchParams(query));
    expect(result).toBeInstanceOf(TypeError);
    expect((result as TypeError).message).toContain(`labgate: ${key}: `);
    expect((result as TypeError).message).toContain(bad);
  });

  it('too many rules in one kind is refused, since each may cost GitLab calls', () => {
    const many = Array.from({ length: 101 }, (_, i) => `acme/g${i}`).join(',');
    const result = parsePolicyParams(new URLSearchParams(`allowed_groups=${many}`));
    expect(result).toBeInstanceOf(TypeError);
    expect(constraints(`allowed_groups=${many.split(',').slice(0, 100).join(',')}`).policies).toHaveLength(1);
  });
});
