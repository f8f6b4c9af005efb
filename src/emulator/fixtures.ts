/**
 * The fixture format of the GitLab emulator, and its normalisation into the emulator's model.
 *
 * A fixture file is one JSON document (schema: `fixtures.schema.json` beside this file). Everything is
 * addressed by human names (usernames, full paths) so that files stay readable; numeric ids are
 * optional and assigned in file order when absent.
 */

/** GitLab's access levels by name, as `Gitlab::Access` defines them. */
export const ACCESS_LEVELS = {
  no_access: 0,
  minimal_access: 5,
  guest: 10,
  planner: 15,
  reporter: 20,
  developer: 30,
  maintainer: 40,
  owner: 50,
} as const;

/** A GitLab access level name (`developer`) or number (`30`). */
export type AccessLevelInput = keyof typeof ACCESS_LEVELS | number;

/** A user as written in a fixture file. */
export interface FixtureUser {
  id?: number;
  username: string;
  name: string;
  /** Password for the sign-in form. */
  password: string;
  /** Primary email. */
  email: string;
  /** Public email shown on the profile; absent or empty means none. */
  publicEmail?: string;
  /** Whether the primary email is confirmed (default true). */
  confirmed?: boolean;
  avatarUrl?: string;
  websiteUrl?: string;
  state?: 'active' | 'blocked' | 'deactivated';
  locked?: boolean;
  bot?: boolean;
  external?: boolean;
  admin?: boolean;
  /** Two-factor authentication: a base32 TOTP secret and/or recovery codes. */
  twoFactor?: { totpSecret?: string; recoveryCodes?: string[] };
  createdAt?: string;
  lastSignInAt?: string;
}

/** A group as written in a fixture file; the parent is derived from the full path. */
export interface FixtureGroup {
  id?: number;
  fullPath: string;
  name?: string;
  description?: string;
  visibility?: 'private' | 'internal' | 'public';
  createdAt?: string;
}

/** A project as written in a fixture file; its namespace (a group or a username) comes from the full path. */
export interface FixtureProject {
  id?: number;
  fullPath: string;
  name?: string;
  description?: string;
  visibility?: 'private' | 'internal' | 'public';
  defaultBranch?: string;
  createdAt?: string;
}

/** A direct membership of a user in a group or a project. */
export interface FixtureMembership {
  user: string;
  group?: string;
  project?: string;
  accessLevel: AccessLevelInput;
  expiresAt?: string | null;
}

/** A group invited into a group or a project (`group_group_links`, `project_group_links`). */
export interface FixtureShare {
  /** The invited group: its members gain access. */
  sharedWith: string;
  group?: string;
  project?: string;
  /** The maximum access level the share grants. */
  accessLevel: AccessLevelInput;
  expiresAt?: string | null;
}

/** A registered OAuth application. */
export interface FixtureApplication {
  id?: number;
  name: string;
  clientId: string;
  clientSecret: string;
  redirectUris: string[];
  scopes: string[];
  confidential?: boolean;
  trusted?: boolean;
  /** Registered through `/oauth/register`: PKCE is then mandatory. */
  dynamic?: boolean;
}

/** The whole fixture document. */
export interface Fixtures {
  users?: FixtureUser[];
  groups?: FixtureGroup[];
  projects?: FixtureProject[];
  memberships?: FixtureMembership[];
  shares?: FixtureShare[];
  applications?: FixtureApplication[];
}

export type Visibility = 'private' | 'internal' | 'public';

export interface User {
  id: number;
  username: string;
  name: string;
  password: string;
  email: string;
  publicEmail: string;
  confirmedAt: string | null;
  avatarUrl: string | null;
  websiteUrl: string;
  state: 'active' | 'blocked' | 'deactivated';
  locked: boolean;
  bot: boolean;
  external: boolean;
  admin: boolean;
  totpSecret: string | null;
  recoveryCodes: string[];
  createdAt: string;
  lastSignInAt: string | null;
  currentSignInAt: string | null;
}

export interface Group {
  id: number;
  name: string;
  path: string;
  fullPath: string;
  parentId: number | null;
  description: string;
  visibility: Visibility;
  createdAt: string;
}

export interface Project {
  id: number;
  name: string;
  path: string;
  fullPath: string;
  /** The owning group, or null for a personal project. */
  groupId: number | null;
  /** The owning user of a personal project. */
  ownerId: number | null;
  description: string;
  visibility: Visibility;
  defaultBranch: string;
  createdAt: string;
}

export interface Membership {
  userId: number;
  source: 'group' | 'project';
  sourceId: number;
  accessLevel: number;
  expiresAt: string | null;
  createdAt: string;
}

export interface Share {
  sharedWithGroupId: number;
  target: 'group' | 'project';
  targetId: number;
  accessLevel: number;
  expiresAt: string | null;
}

export interface Application {
  id: number;
  name: string;
  uid: string;
  secret: string;
  redirectUris: string[];
  scopes: string[];
  confidential: boolean;
  trusted: boolean;
  dynamic: boolean;
}

/** The emulator's data model after normalisation. */
export interface Model {
  users: User[];
  groups: Group[];
  projects: Project[];
  memberships: Membership[];
  shares: Share[];
  applications: Application[];
}

/** Thrown for a fixture document that does not describe a consistent GitLab. */
export class FixtureError extends Error {
  override name = 'FixtureError';
}

const EPOCH = '2024-01-15T09:30:00.000Z';

/** Resolves an access level name or number, or throws a {@link FixtureError}. */
export function parseAccessLevel(value: unknown, where: string): number {
  if (typeof value === 'number' && Object.values(ACCESS_LEVELS).includes(value as never)) return value;
  if (typeof value === 'string') {
    const key = value.toLowerCase().replace(/[\s-]/g, '_') as keyof typeof ACCESS_LEVELS;
    if (key in ACCESS_LEVELS) return ACCESS_LEVELS[key];
  }
  throw new FixtureError(
    `${where}: access level ${JSON.stringify(value)} is not one of ${Object.keys(ACCESS_LEVELS).join(', ')} or their numbers`,
  );
}

function lastSegment(fullPath: string): string {
  return fullPath.slice(fullPath.lastIndexOf('/') + 1);
}

function parentPath(fullPath: string): string | null {
  const at = fullPath.lastIndexOf('/');
  return at === -1 ? null : fullPath.slice(0, at);
}

function requireString(value: unknown, where: string): string {
  if (typeof value !== 'string' || value === '')
    throw new FixtureError(`${where} must be a non-empty string`);
  return value;
}

const PATH_SEGMENT = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;

function requirePath(value: unknown, where: string): string {
  const path = requireString(value, where);
  if (!path.split('/').every((segment) => PATH_SEGMENT.test(segment))) {
    throw new FixtureError(`${where}: ${JSON.stringify(path)} is not a valid GitLab path`);
  }
  return path;
}

/**
 * Turns a fixture document into the emulator's model, checking every reference.
 * @throws {FixtureError} when a reference is dangling, a name is duplicated or a value is malformed.
 */
export function normaliseFixtures(input: Fixtures): Model {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new FixtureError('fixtures must be a JSON object');
  }
  const model: Model = { users: [], groups: [], projects: [], memberships: [], shares: [], applications: [] };
  let nextId = 1;
  const takeId = (explicit: number | undefined, used: Set<number>, where: string): number => {
    if (explicit !== undefined) {
      if (!Number.isInteger(explicit) || explicit <= 0)
        throw new FixtureError(`${where}: id must be a positive integer`);
      if (used.has(explicit)) throw new FixtureError(`${where}: id ${explicit} is used twice`);
      used.add(explicit);
      return explicit;
    }
    while (used.has(nextId)) nextId++;
    used.add(nextId);
    return nextId;
  };

  const userIds = new Set<number>();
  const usernames = new Map<string, User>();
  for (const [i, u] of (input.users ?? []).entries()) {
    const where = `users[${i}]`;
    const username = requirePath(u.username, `${where}.username`);
    if (username.includes('/')) throw new FixtureError(`${where}.username must not contain "/"`);
    if (usernames.has(username.toLowerCase()))
      throw new FixtureError(`${where}: username ${username} is used twice`);
    const user: User = {
      id: takeId(u.id, userIds, where),
      username,
      name: requireString(u.name, `${where}.name`),
      password: requireString(u.password, `${where}.password`),
      email: requireString(u.email, `${where}.email`),
      publicEmail: u.publicEmail ?? '',
      confirmedAt: u.confirmed === false ? null : (u.createdAt ?? EPOCH),
      avatarUrl: u.avatarUrl ?? null,
      websiteUrl: u.websiteUrl ?? '',
      state: u.state ?? 'active',
      locked: u.locked ?? false,
      bot: u.bot ?? false,
      external: u.external ?? false,
      admin: u.admin ?? false,
      totpSecret: u.twoFactor?.totpSecret ?? null,
      recoveryCodes: [...(u.twoFactor?.recoveryCodes ?? [])],
      createdAt: u.createdAt ?? EPOCH,
      lastSignInAt: u.lastSignInAt ?? null,
      currentSignInAt: u.lastSignInAt ?? null,
    };
    if (!['active', 'blocked', 'deactivated'].includes(user.state)) {
      throw new FixtureError(`${where}.state must be active, blocked or deactivated`);
    }
    usernames.set(username.toLowerCase(), user);
    model.users.push(user);
  }

  // Namespaces (groups and users) share one path space, as in GitLab.
  const groupIds = new Set<number>();
  const groupsByPath = new Map<string, Group>();
  const groups = [...(input.groups ?? [])].map((g, i) => ({ g, i }));
  groups.sort((a, b) => a.g.fullPath.split('/').length - b.g.fullPath.split('/').length);
  for (const { g, i } of groups) {
    const where = `groups[${i}]`;
    const fullPath = requirePath(g.fullPath, `${where}.fullPath`);
    const key = fullPath.toLowerCase();
    if (groupsByPath.has(key) || (!fullPath.includes('/') && usernames.has(key))) {
      throw new FixtureError(`${where}: path ${fullPath} is taken`);
    }
    const parent = parentPath(fullPath);
    const parentGroup = parent === null ? null : groupsByPath.get(parent.toLowerCase());
    if (parent !== null && !parentGroup)
      throw new FixtureError(`${where}: parent group ${parent} is not defined`);
    const group: Group = {
      id: takeId(g.id, groupIds, where),
      name: g.name ?? lastSegment(fullPath),
      path: lastSegment(fullPath),
      fullPath,
      parentId: parentGroup ? parentGroup.id : null,
      description: g.description ?? '',
      visibility: g.visibility ?? 'private',
      createdAt: g.createdAt ?? EPOCH,
    };
    groupsByPath.set(key, group);
    model.groups.push(group);
  }
  model.groups.sort((a, b) => a.id - b.id);

  const projectIds = new Set<number>();
  const projectsByPath = new Map<string, Project>();
  for (const [i, p] of (input.projects ?? []).entries()) {
    const where = `projects[${i}]`;
    const fullPath = requirePath(p.fullPath, `${where}.fullPath`);
    const namespace = parentPath(fullPath);
    if (namespace === null)
      throw new FixtureError(`${where}: ${fullPath} needs a namespace (group/path or user/path)`);
    const group = groupsByPath.get(namespace.toLowerCase());
    const owner = namespace.includes('/') ? undefined : usernames.get(namespace.toLowerCase());
    if (!group && !owner)
      throw new FixtureError(`${where}: namespace ${namespace} is neither a group nor a user`);
    if (projectsByPath.has(fullPath.toLowerCase()))
      throw new FixtureError(`${where}: ${fullPath} is defined twice`);
    const project: Project = {
      id: takeId(p.id, projectIds, where),
      name: p.name ?? lastSegment(fullPath),
      path: lastSegment(fullPath),
      fullPath,
      groupId: group ? group.id : null,
      ownerId: group ? null : owner!.id,
      description: p.description ?? '',
      visibility: p.visibility ?? 'private',
      defaultBranch: p.defaultBranch ?? 'main',
      createdAt: p.createdAt ?? EPOCH,
    };
    projectsByPath.set(fullPath.toLowerCase(), project);
    model.projects.push(project);
  }

  const target = (
    entry: { group?: string | undefined; project?: string | undefined },
    where: string,
  ): { kind: 'group' | 'project'; id: number } => {
    if ((entry.group === undefined) === (entry.project === undefined)) {
      throw new FixtureError(`${where} needs exactly one of "group" or "project"`);
    }
    if (entry.group !== undefined) {
      const group = groupsByPath.get(entry.group.toLowerCase());
      if (!group) throw new FixtureError(`${where}: group ${entry.group} is not defined`);
      return { kind: 'group', id: group.id };
    }
    const project = projectsByPath.get(String(entry.project).toLowerCase());
    if (!project) throw new FixtureError(`${where}: project ${entry.project} is not defined`);
    return { kind: 'project', id: project.id };
  };

  for (const [i, m] of (input.memberships ?? []).entries()) {
    const where = `memberships[${i}]`;
    const user = usernames.get(String(m.user).toLowerCase());
    if (!user) throw new FixtureError(`${where}: user ${m.user} is not defined`);
    const { kind, id } = target(m, where);
    if (model.memberships.some((x) => x.userId === user.id && x.source === kind && x.sourceId === id)) {
      throw new FixtureError(`${where}: ${m.user} is already a direct member there`);
    }
    model.memberships.push({
      userId: user.id,
      source: kind,
      sourceId: id,
      accessLevel: parseAccessLevel(m.accessLevel, `${where}.accessLevel`),
      expiresAt: m.expiresAt ?? null,
      createdAt: EPOCH,
    });
  }

  for (const [i, s] of (input.shares ?? []).entries()) {
    const where = `shares[${i}]`;
    const invited = groupsByPath.get(String(s.sharedWith).toLowerCase());
    if (!invited) throw new FixtureError(`${where}: group ${s.sharedWith} is not defined`);
    const { kind, id } = target(s, where);
    if (kind === 'group' && id === invited.id)
      throw new FixtureError(`${where}: a group cannot be shared with itself`);
    model.shares.push({
      sharedWithGroupId: invited.id,
      target: kind,
      targetId: id,
      accessLevel: parseAccessLevel(s.accessLevel, `${where}.accessLevel`),
      expiresAt: s.expiresAt ?? null,
    });
  }

  const appIds = new Set<number>();
  for (const [i, a] of (input.applications ?? []).entries()) {
    const where = `applications[${i}]`;
    if (!Array.isArray(a.redirectUris) || a.redirectUris.length === 0) {
      throw new FixtureError(`${where}.redirectUris must list at least one URI`);
    }
    if (!Array.isArray(a.scopes) || a.scopes.length === 0)
      throw new FixtureError(`${where}.scopes must not be empty`);
    const uid = requireString(a.clientId, `${where}.clientId`);
    if (model.applications.some((x) => x.uid === uid))
      throw new FixtureError(`${where}: clientId is used twice`);
    model.applications.push({
      id: takeId(a.id, appIds, where),
      name: requireString(a.name, `${where}.name`),
      uid,
      secret: requireString(a.clientSecret, `${where}.clientSecret`),
      redirectUris: a.redirectUris.map((u, j) => requireString(u, `${where}.redirectUris[${j}]`)),
      scopes: [...a.scopes],
      confidential: a.confidential ?? true,
      trusted: a.trusted ?? false,
      dynamic: a.dynamic ?? false,
    });
  }
  return model;
}
