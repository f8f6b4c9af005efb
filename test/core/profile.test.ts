/**
 * `normaliseProfile`: what becomes the session user, from the ID token, userinfo and /api/v4/user.
 * Types are checked, an email is verified only when GitLab says so (docs/security.md, USERINFO-4),
 * groups fail closed (USERINFO-3).
 */
import { describe, expect, it } from 'vitest';
import { normaliseProfile } from '../../src/core/profile.js';

const issuer = 'https://gitlab.example.com';
const claims = { sub: '42', email: 'a@example.com', email_verified: true, preferred_username: 'ada' };

describe('the email (USERINFO-4)', () => {
  const cases: [string, Parameters<typeof normaliseProfile>[0], string | null, boolean][] = [
    ['verified in the ID token', { issuer, claims }, 'a@example.com', true],
    [
      'userinfo says unverified',
      { issuer, claims, userinfo: { sub: '42', email_verified: false } },
      'a@example.com',
      false,
    ],
    [
      'no email_verified at all (a public email)',
      { issuer, claims: { sub: '42', email: 'a@example.com' } },
      'a@example.com',
      false,
    ],
    [
      'email_verified as the string "true"',
      { issuer, claims: { sub: '42', email: 'a@x', email_verified: 'true' } },
      'a@x',
      false,
    ],
    [
      'from /api/v4/user of a confirmed account',
      { issuer, apiUser: { id: 42, email: 'b@x', confirmed_at: '2024-01-01T00:00:00Z' } },
      'b@x',
      true,
    ],
    [
      'from /api/v4/user of an unconfirmed account',
      { issuer, apiUser: { id: 42, email: 'b@x', confirmed_at: null } },
      'b@x',
      false,
    ],
    ['none released', { issuer, claims: { sub: '42' } }, null, false],
    ['an empty string', { issuer, claims: { sub: '42', email: '', email_verified: true } }, null, false],
  ];
  it.each(cases)('%s', (_name, input, email, verified) => {
    const user = normaliseProfile(input);
    expect(user.email).toBe(email);
    expect(user.emailVerified).toBe(verified);
  });
});

describe('the subject (ISSUER-5, IDTOKEN-6)', () => {
  it('is the ID token’s string sub, with the issuer beside it', () => {
    expect(normaliseProfile({ issuer, claims })).toMatchObject({
      sub: '42',
      id: 42,
      issuer,
      username: 'ada',
    });
  });
  it('comes from /api/v4/user’s numeric id without OpenID Connect', () => {
    expect(normaliseProfile({ issuer, apiUser: { id: 7, username: 'u' } })).toMatchObject({
      sub: '7',
      id: 7,
    });
  });
  it('is required', () => {
    expect(() => normaliseProfile({ issuer, claims: { email: 'a@x' } })).toThrow();
    expect(() => normaliseProfile({ issuer, apiUser: { id: '7' } })).toThrow();
  });
  it('never comes from the username or the email', () => {
    expect(() =>
      normaliseProfile({ issuer, userinfo: { preferred_username: 'ada', email: 'a@x' } }),
    ).toThrow();
  });
});

describe('groups (USERINFO-3)', () => {
  const cases: [string, unknown, string[]][] = [
    ['a list of paths', ['acme', 'acme/platform'], ['acme', 'acme/platform']],
    ['duplicates collapse', ['acme', 'acme'], ['acme']],
    ['a number inside refuses the whole list', ['acme', 42], []],
    ['an empty string refuses the whole list', ['acme', ''], []],
    ['a path over 255 characters refuses the whole list', ['acme', 'a'.repeat(256)], []],
    ['over 2,000 entries refuses the whole list', Array.from({ length: 2001 }, (_, i) => `g${i}`), []],
    ['a string instead of a list', 'acme', []],
    ['an object', { acme: true }, []],
  ];
  it.each(cases)('%s', (_name, groups, expected) => {
    expect(normaliseProfile({ issuer, claims, userinfo: { sub: '42', groups } }).groups).toEqual(expected);
  });
  it('2,000 entries are kept', () => {
    const groups = Array.from({ length: 2000 }, (_, i) => `g${i}`);
    expect(normaliseProfile({ issuer, claims, userinfo: { sub: '42', groups } }).groups).toHaveLength(2000);
  });
  it('fall back to groups_direct of the ID token without userinfo', () => {
    expect(normaliseProfile({ issuer, claims: { ...claims, groups_direct: ['acme/x'] } }).groups).toEqual([
      'acme/x',
    ]);
  });
});

describe('other fields keep their types', () => {
  it('booleans only when booleans, strings only when non-empty strings', () => {
    const user = normaliseProfile({
      issuer,
      claims,
      apiUser: { id: 42, bot: 'no', external: 1, two_factor_enabled: true, created_at: 5, avatar_url: '' },
    });
    expect(user).toMatchObject({
      bot: null,
      external: null,
      twoFactorEnabled: true,
      createdAt: null,
      avatarUrl: null,
    });
  });
});
