/**
 * The signed-in user's profile, normalised from what GitLab released: the ID token, userinfo and,
 * when the scopes allow, `/api/v4/user`. Types are checked; nothing unverified becomes `emailVerified`.
 */
import type { SessionUser } from './store.js';

type Json = Record<string, unknown>;

const str = (value: unknown): string | null => (typeof value === 'string' && value !== '' ? value : null);
const bool = (value: unknown): boolean | null => (typeof value === 'boolean' ? value : null);

const MAX_GROUPS = 2000;

function groupList(value: unknown): string[] {
  if (!Array.isArray(value)) return [];
  // A list that is not all short strings is refused whole: a bad list must never grant access.
  if (
    value.length > MAX_GROUPS ||
    !value.every((g) => typeof g === 'string' && g.length > 0 && g.length <= 255)
  )
    return [];
  return [...new Set(value as string[])];
}

/**
 * Builds the session user. `claims` are the validated ID-token claims (absent on instances without
 * OpenID Connect), `userinfo` the userinfo response (its `sub` already checked against the ID token),
 * `apiUser` the body of `/api/v4/user` when it was read.
 */
export function normaliseProfile(input: {
  issuer: string;
  claims?: Json;
  userinfo?: Json;
  apiUser?: Json;
}): SessionUser {
  const claims = input.claims ?? {};
  const info = input.userinfo ?? {};
  const api = input.apiUser ?? {};
  const pick = (...values: unknown[]): string | null => {
    for (const value of values) {
      const s = str(value);
      if (s !== null) return s;
    }
    return null;
  };
  const sub = pick(claims['sub'], info['sub']) ?? (typeof api['id'] === 'number' ? String(api['id']) : null);
  if (sub === null) throw new TypeError('GitLab released no subject');
  // The OIDC email claim carries its own verification flag; /api/v4/user's email is the primary one,
  // verified when the account's email is confirmed.
  let email = pick(info['email'], claims['email']);
  let emailVerified =
    email !== null && (bool(info['email_verified']) ?? bool(claims['email_verified'])) === true;
  if (email === null && str(api['email'])) {
    email = str(api['email']);
    emailVerified = str(api['confirmed_at']) !== null;
  }
  const username =
    pick(
      info['preferred_username'],
      claims['preferred_username'],
      info['nickname'],
      claims['nickname'],
      api['username'],
    ) ?? '';
  return {
    sub,
    issuer: input.issuer,
    id: Number(sub),
    username,
    name: pick(info['name'], claims['name'], api['name']) ?? username,
    email,
    emailVerified,
    avatarUrl: pick(api['avatar_url'], info['picture'], claims['picture']),
    webUrl: pick(api['web_url'], info['profile'], claims['profile']),
    createdAt: str(api['created_at']),
    lastSignInAt: str(api['last_sign_in_at']),
    state: str(api['state']),
    bot: bool(api['bot']),
    external: bool(api['external']),
    twoFactorEnabled: bool(api['two_factor_enabled']),
    groups: groupList(info['groups'] ?? claims['groups_direct']),
    roles: [],
  };
}
