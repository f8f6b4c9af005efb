import { readFileSync } from 'node:fs';
import Ajv2020 from 'ajv/dist/2020.js';
import { describe, expect, it } from 'vitest';
import { FixtureError, type Fixtures, normaliseFixtures } from '../../src/emulator/fixtures.js';
import { demoFixtures, startEmulator } from '../../src/emulator/index.js';

const schema = JSON.parse(
  readFileSync(new URL('../../src/emulator/fixtures.schema.json', import.meta.url), 'utf8'),
);
const validate = new Ajv2020.default({ allErrors: true }).compile(schema);

const base = (): Fixtures => ({
  users: [{ username: 'ann', name: 'Ann', password: 'pw', email: 'ann@x.test' }],
  groups: [{ fullPath: 'org' }, { fullPath: 'org/team' }],
  projects: [{ fullPath: 'org/team/app' }, { fullPath: 'ann/notes' }],
  memberships: [{ user: 'ann', group: 'org', accessLevel: 'developer' }],
  shares: [],
  applications: [
    {
      name: 'app',
      clientId: 'id',
      clientSecret: 's',
      redirectUris: ['http://127.0.0.1/cb'],
      scopes: ['openid'],
    },
  ],
});

describe('fixtures', () => {
  it('the demo fixtures follow the schema and normalise', () => {
    const demo = demoFixtures();
    expect(validate(demo), JSON.stringify(validate.errors)).toBe(true);
    const model = normaliseFixtures(demo);
    expect(model.users.map((u) => u.username)).toContain('alice');
    expect(model.groups.find((g) => g.fullPath === 'acme/platform/infra')?.parentId).toBe(11);
  });

  it('the schema refuses what the loader refuses', () => {
    expect(validate({ users: [{ username: 'x' }] })).toBe(false);
    expect(validate({ memberships: [{ user: 'a', group: 'g', project: 'p', accessLevel: 30 }] })).toBe(false);
    expect(validate({ memberships: [{ user: 'a', group: 'g', accessLevel: 31 }] })).toBe(false);
    expect(validate({ unknown: [] })).toBe(false);
  });

  it('derives parents, namespaces and ids, and accepts level names and numbers', () => {
    const fixtures = base();
    fixtures.memberships!.push({ user: 'ann', project: 'org/team/app', accessLevel: 40 });
    const model = normaliseFixtures(fixtures);
    const [org, team] = model.groups;
    expect(team!.parentId).toBe(org!.id);
    expect(model.projects[0]!.groupId).toBe(team!.id);
    expect(model.projects[1]!.ownerId).toBe(model.users[0]!.id);
    expect(model.memberships.map((m) => m.accessLevel)).toEqual([30, 40]);
  });

  const broken: Array<[string, (f: Fixtures) => void, RegExp]> = [
    ['a duplicate username', (f) => f.users!.push({ ...f.users![0]!, username: 'ANN' }), /used twice/],
    [
      'a group whose parent is missing',
      (f) => f.groups!.push({ fullPath: 'nope/child' }),
      /parent group nope/,
    ],
    [
      'a project in no namespace',
      (f) => f.projects!.push({ fullPath: 'ghost/app' }),
      /neither a group nor a user/,
    ],
    [
      'a membership of an unknown user',
      (f) => f.memberships!.push({ user: 'zed', group: 'org', accessLevel: 10 }),
      /user zed/,
    ],
    [
      'an unknown access level',
      (f) => f.memberships!.push({ user: 'ann', group: 'org/team', accessLevel: 'boss' as never }),
      /access level/,
    ],
    [
      'a membership naming both targets',
      (f) => f.memberships!.push({ user: 'ann', group: 'org', project: 'org/team/app', accessLevel: 10 }),
      /exactly one/,
    ],
    [
      'a share of a group with itself',
      (f) => f.shares!.push({ sharedWith: 'org', group: 'org', accessLevel: 30 }),
      /itself/,
    ],
    ['an application without redirect URIs', (f) => (f.applications![0]!.redirectUris = []), /redirectUris/],
    ['an invalid path', (f) => f.groups!.push({ fullPath: 'org/has space' }), /not a valid GitLab path/],
  ];
  for (const [what, mutate, message] of broken) {
    it(`refuses ${what}`, () => {
      const fixtures = base();
      mutate(fixtures);
      expect(() => normaliseFixtures(fixtures)).toThrow(FixtureError);
      expect(() => normaliseFixtures(fixtures)).toThrow(message);
    });
  }

  it('startEmulator refuses broken fixtures before listening', async () => {
    const fixtures = base();
    fixtures.memberships!.push({ user: 'zed', group: 'org', accessLevel: 10 });
    await expect(startEmulator({ fixtures })).rejects.toThrow(FixtureError);
  });
});
