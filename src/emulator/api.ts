/**
 * The emulator's REST API v4: the calls that sign-in and access control need (`/user`, `/users/:id`,
 * `/version`, groups, projects and their members), with GitLab's authentication errors, entities,
 * visibility rules and offset pagination; and the admin Applications API's create call
 * (`POST /applications`), which `labgate init` uses on a self-managed instance.
 *
 * Behaviour follows GitLab's source as read for this emulator (`lib/api/*`, `GroupsFinder`,
 * `ProjectsFinder`, `User#authorized_groups`, `GroupPolicy`, `Entities::*`); where GitLab's answer
 * depends on features the emulator does not model, the quiet default of a fresh instance is used.
 */
import { ancestry, directAccess, groupAccess, inForce, projectAccess } from './access.js';
import { avatarUrl } from './avatar.js';
import type { Env } from './env.js';
import type { Group, Model, Project, User } from './fixtures.js';
import { json, type Reply, type RequestContext, type Router } from './http.js';
import { SERVER_SCOPES } from './oidc.js';
import { hexToken } from './state.js';

/** What `GET /api/v4/version` answers. */
const VERSION = {
  version: '17.9.0-ee',
  revision: '3a3e5d1f0c7',
  kas: { enabled: false, externalUrl: null, version: null },
  enterprise: true,
} as const;

/** `API::API` allows `api` always and `read_api` for GET/HEAD; every route here is GET. */
const API_SCOPES = ['api', 'read_api'] as const;
/**
 * `API::Users` (and `API::Version`) add `read_user`. `APIGuard#scopes_registered_for_endpoint` lists
 * the endpoint class's own scopes before those of `API::API`, and the 403 `insufficient_scope` body
 * names them in that order: `read_user api read_api`.
 */
const USER_SCOPES = ['read_user', 'api', 'read_api'] as const;

/** `Gitlab::Access.all_values` in EE 17.9: guest to owner, planner, and minimal access. */
const ACCESS_VALUES = [10, 15, 20, 30, 40, 50, 5];
const GUEST = 10;
const REPORTER = 20;
const DEVELOPER = 30;
const OWNER = 50;

const MAX_PER_PAGE = 100;
const DEFAULT_PER_PAGE = 20;

/** User namespaces are not part of the fixture model; their ids are derived so they never meet a group's. */
const USER_NAMESPACE_BASE = 1_000_000;

const REALM = 'Protected by OAuth 2.0';
const EXPIRED = 'Token is expired. You can either do re-authorization or token refresh.';
const REVOKED = 'Token was revoked. You have to re-authorize from the user.';
const INSUFFICIENT_SCOPE = 'The request requires higher privileges than provided by the access token.';

/** A reply that ends the request early, thrown from helpers and answered by the route wrapper. */
class ApiError extends Error {
  constructor(readonly reply: Reply) {
    super(`API error ${reply.status}`);
  }
}

/** A JSON reply with the bare content type GitLab's API sends. */
function reply(status: number, body: unknown, headers: Record<string, string> = {}): Reply {
  return json(status, body, { 'content-type': 'application/json', ...headers });
}

function fail(status: number, body: unknown, headers: Record<string, string> = {}): never {
  throw new ApiError(reply(status, body, headers));
}

const unauthorized = () => fail(401, { message: '401 Unauthorized' });
const forbidden = (reason?: string) =>
  fail(403, { message: reason ? `403 Forbidden - ${reason}` : '403 Forbidden' });
const notFound = (what?: string) => fail(404, { message: what ? `404 ${what} Not Found` : '404 Not found' });

/** rack-oauth2's `Bearer::Unauthorized`, as `API::APIGuard` raises it for an expired or revoked token. */
function invalidToken(description: string): never {
  return fail(
    401,
    { error: 'invalid_token', error_description: description },
    {
      'www-authenticate': `Bearer realm="${REALM}", error="invalid_token", error_description="${description}"`,
    },
  );
}

/** One API call: who asks, against which model, at what time. */
interface Call {
  env: Env;
  ctx: RequestContext;
  user: User | null;
  model: Model;
  now: Date;
}

// ---------------------------------------------------------------------------------------------
// Authentication (`API::APIGuard`, `Gitlab::Auth::AuthFinders`)

/** Doorkeeper's `access_token_methods`: `?access_token=`, then `Authorization: Bearer`, then `?bearer_token=`. */
function oauthTokenFrom(ctx: RequestContext): string | undefined {
  const param = (name: string) => ctx.query.getAll(name).at(-1) || undefined;
  const fromParam = param('access_token');
  if (fromParam) return fromParam;
  const header = ctx.headers.authorization;
  if (header && /^Bearer /i.test(header)) {
    const value = header.replace(/^Bearer /i, '');
    if (value) return value;
  }
  return param('bearer_token');
}

/**
 * Finds the caller, or throws GitLab's answer: 401 for a missing (when required), unknown, expired or
 * revoked token, 403 for a token without one of `scopes` and for a blocked or deactivated user.
 */
function authenticate(env: Env, ctx: RequestContext, scopes: readonly string[]): User | null {
  const { state } = env;
  const value = oauthTokenFrom(ctx);
  if (value === undefined) {
    // There are no personal access tokens here, so the PAT lookup fails for any value sent.
    const pat = ctx.query.getAll('private_token').at(-1) || ctx.headers['private-token'];
    if (pat) unauthorized();
    return null;
  }
  const token = state.tokenByAccess(value);
  if (!token) return unauthorized();
  // Doorkeeper revokes the previous refresh token on the first lookup, before any validation.
  state.markUsed(token);
  // `AccessTokenValidationService#validate`: expiry, then revocation, then scopes.
  if (state.isExpired(token)) invalidToken(EXPIRED);
  if (token.revokedAt !== null) invalidToken(REVOKED);
  if (!token.scopes.some((scope) => scopes.includes(scope))) {
    fail(403, {
      error: 'insufficient_scope',
      error_description: INSUFFICIENT_SCOPE,
      scope: scopes.join(' '),
    });
  }
  const user = state.userById(token.userId);
  if (!user) return unauthorized();
  // `Gitlab::Auth::UserAccessDeniedReason#rejection_message`.
  if (user.state === 'blocked') forbidden('Your account has been blocked.');
  if (user.state === 'deactivated') {
    forbidden(
      `Your account has been deactivated by your administrator. Please log back in from a web browser to reactivate your account at ${env.baseUrl}`,
    );
  }
  return user;
}

// ---------------------------------------------------------------------------------------------
// Parameters (Grape's coercion and validation messages)

const TRUE_VALUES = new Set(['1', 'on', 't', 'true', 'y', 'yes']);
const FALSE_VALUES = new Set(['0', 'off', 'f', 'false', 'n', 'no']);

/** Reads query parameters as Grape declares them, collecting its validation errors. */
class Params {
  readonly errors: string[] = [];
  readonly #ctx: RequestContext;

  constructor(ctx: RequestContext) {
    this.#ctx = ctx;
  }

  /** The last value sent (as Rails' params), or undefined when absent or empty. */
  raw(name: string): string | undefined {
    const value = this.#ctx.query.getAll(name).at(-1);
    return value === undefined || value === '' ? undefined : value;
  }

  int(name: string): number | undefined {
    const value = this.raw(name);
    if (value === undefined) return undefined;
    if (!/^\s*[+-]?\d+\s*$/.test(value)) {
      this.errors.push(`${name} is invalid`);
      return undefined;
    }
    return Number.parseInt(value, 10);
  }

  intIn(name: string, values: readonly number[]): number | undefined {
    const value = this.int(name);
    if (value !== undefined && !values.includes(value)) {
      this.errors.push(`${name} does not have a valid value`);
      return undefined;
    }
    return value;
  }

  bool(name: string): boolean | undefined {
    const value = this.raw(name)?.toLowerCase();
    if (value === undefined) return undefined;
    if (TRUE_VALUES.has(value)) return true;
    if (FALSE_VALUES.has(value)) return false;
    this.errors.push(`${name} is invalid`);
    return undefined;
  }

  oneOf<T extends string>(name: string, values: readonly T[], fallback: T): T {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    if (!(values as readonly string[]).includes(value)) {
      this.errors.push(`${name} does not have a valid value`);
      return fallback;
    }
    return value as T;
  }

  /** An integer array, as `name[]=1&name[]=2` or a comma-separated `name=1,2`. */
  intList(name: string): number[] | undefined {
    const values = [...this.#ctx.query.getAll(`${name}[]`), ...this.#ctx.query.getAll(name)]
      .flatMap((v) => v.split(','))
      .map((v) => v.trim())
      .filter(Boolean);
    if (values.length === 0) return undefined;
    if (!values.every((v) => /^[+-]?\d+$/.test(v))) {
      this.errors.push(`${name} is invalid`);
      return undefined;
    }
    return values.map(Number);
  }

  /** Answers 400 with every error found, joined as Grape joins them. */
  check(): void {
    if (this.errors.length > 0) fail(400, { error: this.errors.join(', ') });
  }
}

/** Route parameters that Grape declares as `Integer`. */
function integerParam(ctx: RequestContext, name: string): number {
  const value = ctx.params[name] ?? '';
  if (!/^\s*[+-]?\d+\s*$/.test(value)) fail(400, { error: `${name} is invalid` });
  return Number.parseInt(value, 10);
}

// ---------------------------------------------------------------------------------------------
// Pagination (`Gitlab::Pagination::OffsetPagination`, Kaminari)

interface Page {
  page: number;
  perPage: number;
}

function readPage(params: Params): Page {
  const page = params.int('page') ?? 1;
  const perPage = params.int('per_page') ?? DEFAULT_PER_PAGE;
  if (perPage === 0) params.errors.push('per_page has a value not allowed');
  return { page, perPage };
}

/** Ruby's `CGI.escape`, which `Hash#to_query` uses. */
function cgiEscape(value: string): string {
  return encodeURIComponent(value)
    .replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
    .replace(/%20/g, '+');
}

/**
 * One page of `items` with GitLab's headers. Links carry every request parameter, route parameters
 * (`id`) included, sorted as `Hash#to_query` sorts them; `per_page` is repeated as requested.
 */
function paginate<T>(call: Call, items: T[], page: Page, present: (item: T) => unknown): Reply {
  // Kaminari ignores a negative `per` and caps at `max_per_page`; a page below 1 is page 1.
  const limit = page.perPage < 0 ? DEFAULT_PER_PAGE : Math.min(page.perPage, MAX_PER_PAGE);
  const current = Math.max(1, page.page);
  const kaminariPages = Math.ceil(items.length / limit);
  const outOfRange = current > kaminariPages;
  const prev = current > 1 && !outOfRange ? current - 1 : null;
  const next = current < kaminariPages && !outOfRange ? current + 1 : null;
  const totalPages = Math.max(kaminariPages, 1);

  const base = new Map<string, string>();
  for (const [key, value] of call.ctx.query) base.set(key, value);
  for (const [key, value] of Object.entries(call.ctx.params)) base.set(key, value);
  base.set('per_page', String(page.perPage));
  const href = (target: number) => {
    const query = new Map(base).set('page', String(target));
    const pairs = [...query].map(([k, v]) => `${cgiEscape(k)}=${cgiEscape(v)}`).sort();
    return `<${call.env.url(call.ctx.path)}?${pairs.join('&')}>`;
  };
  const links: string[] = [];
  if (prev !== null) links.push(`${href(prev)}; rel="prev"`);
  if (next !== null) links.push(`${href(next)}; rel="next"`);
  links.push(`${href(1)}; rel="first"`, `${href(totalPages)}; rel="last"`);

  const slice = items.slice((current - 1) * limit, current * limit);
  return reply(200, slice.map(present), {
    'x-per-page': String(limit),
    'x-page': String(current),
    'x-next-page': next === null ? '' : String(next),
    'x-prev-page': prev === null ? '' : String(prev),
    link: links.join(', '),
    'x-total': String(items.length),
    'x-total-pages': String(totalPages),
  });
}

// ---------------------------------------------------------------------------------------------
// Formatting

/** Rails' JSON timestamps: ISO 8601 with milliseconds, in UTC. */
function iso(value: string | null): string | null {
  return value === null ? null : new Date(value).toISOString();
}

/** A `date` column (`expires_at`, `last_activity_on`). */
function day(value: string | null): string | null {
  return value === null ? null : new Date(value).toISOString().slice(0, 10);
}

function fullName(model: Model, group: Group): string {
  return ancestry(model, group.id)
    .reverse()
    .map((g) => g.name)
    .join(' / ');
}

function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

// ---------------------------------------------------------------------------------------------
// Users

/** `UserSafe` + `UserBasic`. */
function userBasic(env: Env, user: User) {
  return {
    id: user.id,
    username: user.username,
    name: user.name,
    state: user.state,
    locked: user.locked,
    avatar_url: avatarUrl(env, user),
    web_url: env.url(`/${user.username}`),
  };
}

/** `UserPolicy#read_user_profile`: hidden for blocked and unconfirmed users, except to themselves and admins. */
function canReadProfile(viewer: User | null, user: User): boolean {
  if (viewer && (viewer.id === user.id || viewer.admin)) return true;
  return user.state !== 'blocked' && user.confirmedAt !== null;
}

/** `Entities::User`: the public profile. */
function userEntity(env: Env, viewer: User | null, user: User, options: { isFollowed: boolean }) {
  const profile = canReadProfile(viewer, user);
  return {
    ...userBasic(env, user),
    ...(profile ? { created_at: iso(user.createdAt) } : {}),
    bio: '',
    location: null,
    public_email: user.publicEmail,
    skype: '',
    linkedin: '',
    twitter: '',
    discord: '',
    website_url: user.websiteUrl,
    organization: '',
    job_title: '',
    pronouns: null,
    bot: user.bot,
    work_information: null,
    ...(profile ? { followers: 0, following: 0 } : {}),
    ...(profile && options.isFollowed && viewer ? { is_followed: false } : {}),
    local_time: null,
  };
}

/** `Entities::UserPublic` (what `/user` answers to a non-admin), and `UserWithAdmin` on top for admins. */
function userPublicEntity(env: Env, user: User, options: { admin: boolean }) {
  const entity = {
    ...userEntity(env, user, user, { isFollowed: false }),
    last_sign_in_at: iso(user.lastSignInAt),
    confirmed_at: iso(user.confirmedAt),
    last_activity_on: day(user.currentSignInAt ?? user.lastSignInAt),
    email: user.email,
    theme_id: 3,
    color_scheme_id: 1,
    projects_limit: 100000,
    current_sign_in_at: iso(user.currentSignInAt),
    identities: [],
    can_create_group: !user.external,
    can_create_project: !user.external,
    two_factor_enabled: user.totpSecret !== null,
    external: user.external,
    private_profile: false,
    commit_email: user.email,
    shared_runners_minutes_limit: null,
    extra_shared_runners_minutes_limit: null,
  };
  if (!options.admin) return entity;
  return {
    ...entity,
    is_admin: user.admin,
    note: null,
    namespace_id: USER_NAMESPACE_BASE + user.id,
    created_by: null,
    email_reset_offered_at: null,
    using_license_seat: false,
    is_auditor: false,
    provisioned_by_group_id: null,
    enterprise_group_id: null,
    enterprise_group_associated_at: null,
  };
}

// ---------------------------------------------------------------------------------------------
// Visibility (`GroupPolicy#read_group`, `ProjectPolicy#read_project`)

function descendsFrom(model: Model, groupId: number, ancestorId: number): boolean {
  return ancestry(model, groupId).some((g) => g.id === ancestorId);
}

function projectVisible(call: Call, project: Project): boolean {
  const { user } = call;
  if (project.visibility === 'public') return true;
  if (!user) return false;
  if (user.admin) return true;
  if (project.visibility === 'internal' && !user.external) return true;
  return projectAccess(call.model, user.id, project, call.now) >= GUEST;
}

function groupVisible(call: Call, group: Group): boolean {
  const { user, model } = call;
  if (group.visibility === 'public') return true;
  if (!user) return false;
  if (user.admin) return true;
  if (group.visibility === 'internal' && !user.external) return true;
  // EE lets minimal-access members read the group too.
  if (groupAccess(model, user.id, group.id, call.now) > 0) return true;
  // `has_projects`: a project the user can see in the group or below makes the group readable.
  return model.projects.some(
    (p) => p.groupId !== null && descendsFrom(model, p.groupId, group.id) && projectVisible(call, p),
  );
}

/** `find_group!`: a numeric id, or a full path matched case-insensitively; 404 when missing or unreadable. */
function findGroup(call: Call, id: string): Group {
  const { groups } = call.model;
  const group = /^-?\d+$/.test(id)
    ? groups.find((g) => g.id === Number(id))
    : groups.find((g) => g.fullPath.toLowerCase() === id.toLowerCase());
  if (!group || !groupVisible(call, group)) return notFound('Group');
  return group;
}

/** `find_project!`, the same way. */
function findProject(call: Call, id: string): Project {
  const { projects } = call.model;
  const project = /^-?\d+$/.test(id)
    ? projects.find((p) => p.id === Number(id))
    : projects.find((p) => p.fullPath.toLowerCase() === id.toLowerCase());
  if (!project || !projectVisible(call, project)) return notFound('Project');
  return project;
}

// ---------------------------------------------------------------------------------------------
// Groups

function groupEntity(call: Call, group: Group) {
  return {
    id: group.id,
    web_url: call.env.url(`/groups/${group.fullPath}`),
    name: group.name,
    path: group.path,
    description: group.description,
    visibility: group.visibility,
    share_with_group_lock: false,
    require_two_factor_authentication: false,
    two_factor_grace_period: 48,
    project_creation_level: 'developer',
    auto_devops_enabled: null,
    subgroup_creation_level: 'maintainer',
    emails_disabled: false,
    emails_enabled: true,
    mentions_disabled: null,
    lfs_enabled: true,
    math_rendering_limits_enabled: true,
    lock_math_rendering_limits_enabled: false,
    default_branch: null,
    default_branch_protection: 2,
    default_branch_protection_defaults: {
      allowed_to_push: [{ access_level: 40 }],
      allow_force_push: false,
      allowed_to_merge: [{ access_level: 40 }],
    },
    avatar_url: null,
    request_access_enabled: true,
    full_name: fullName(call.model, group),
    full_path: group.fullPath,
    created_at: iso(group.createdAt),
    parent_id: group.parentId,
    organization_id: 1,
    shared_runners_setting: 'enabled',
    ldap_cn: null,
    ldap_access: null,
    wiki_access_level: 'enabled',
    marked_for_deletion_on: null,
  };
}

/** `Entities::GroupDetail`: the group, the groups invited into it, and (by default) its projects. */
function groupDetailEntity(call: Call, group: Group, withProjects: boolean) {
  const { model, now } = call;
  const sharedWith = model.shares
    .filter((s) => s.target === 'group' && s.targetId === group.id && inForce(s.expiresAt, now))
    .flatMap((s) => {
      const invited = model.groups.find((g) => g.id === s.sharedWithGroupId);
      // `shared_with_group_links_visible_to_user`
      return invited && groupVisible(call, invited)
        ? [
            {
              group_id: invited.id,
              group_name: invited.name,
              group_full_path: invited.fullPath,
              group_access_level: s.accessLevel,
              expires_at: day(s.expiresAt),
            },
          ]
        : [];
    });
  const entity: Record<string, unknown> = {
    ...groupEntity(call, group),
    shared_with_groups: sharedWith,
  };
  if (group.parentId === null) entity['prevent_sharing_groups_outside_hierarchy'] = false;
  if (withProjects) {
    const own = model.projects.filter((p) => p.groupId === group.id && projectVisible(call, p));
    const shared = model.projects.filter(
      (p) =>
        projectVisible(call, p) &&
        model.shares.some(
          (s) =>
            s.target === 'project' &&
            s.targetId === p.id &&
            s.sharedWithGroupId === group.id &&
            inForce(s.expiresAt, now),
        ),
    );
    // GroupProjectsFinder::DEFAULT_PROJECTS_LIMIT
    entity['projects'] = own.slice(0, 100).map((p) => projectEntity(call, p, 'full'));
    entity['shared_projects'] = shared.slice(0, 100).map((p) => projectEntity(call, p, 'full'));
  }
  return entity;
}

function withDescendants(model: Model, ids: Iterable<number>): Set<number> {
  const roots = new Set(ids);
  return new Set(
    model.groups.filter((g) => ancestry(model, g.id).some((a) => roots.has(a.id))).map((g) => g.id),
  );
}

function withAncestors(model: Model, ids: Iterable<number>): Set<number> {
  const out = new Set<number>();
  for (const id of ids) for (const g of ancestry(model, id)) out.add(g.id);
  return out;
}

/** `User#groups`: direct memberships of guest or above. */
function directGroupIds(call: Call, user: User, minimum = GUEST): number[] {
  return call.model.groups
    .filter((g) => directAccess(call.model, user.id, 'group', g.id, call.now) >= minimum)
    .map((g) => g.id);
}

/**
 * `GroupsFinder#get_groups_for_user`: `authorized_groups` (direct groups and their descendants, groups
 * of authorized projects and their ancestors, groups shared with a direct group and their descendants)
 * with their ancestors, plus the direct groups and their descendants.
 */
function groupsForUser(call: Call, user: User): Set<number> {
  const { model, now } = call;
  const direct = directGroupIds(call, user);
  const directSet = new Set(direct);
  const fromProjects = model.projects
    .filter((p) => p.groupId !== null && projectAccess(model, user.id, p, now) >= GUEST)
    .map((p) => p.groupId as number);
  const shared = model.shares
    .filter((s) => s.target === 'group' && directSet.has(s.sharedWithGroupId) && inForce(s.expiresAt, now))
    .map((s) => s.targetId);
  const authorized = new Set([
    ...withDescendants(model, direct),
    ...withAncestors(model, fromProjects),
    ...withDescendants(model, shared),
  ]);
  return withAncestors(model, authorized);
}

interface GroupQuery {
  allAvailable: boolean | undefined;
  owned: boolean;
  minAccessLevel: number | undefined;
  topLevelOnly: boolean;
  parent: Group | null;
  search: string | undefined;
  skipGroups: number[];
  orderBy: 'name' | 'path' | 'id' | 'similarity';
  sort: 'asc' | 'desc';
}

function readGroupQuery(params: Params): Omit<GroupQuery, 'parent'> {
  return {
    allAvailable: params.bool('all_available'),
    owned: params.bool('owned') ?? false,
    minAccessLevel: params.intIn('min_access_level', ACCESS_VALUES),
    topLevelOnly: params.bool('top_level_only') ?? false,
    search: params.raw('search'),
    skipGroups: params.intList('skip_groups') ?? [],
    orderBy: params.oneOf('order_by', ['name', 'path', 'id', 'similarity'] as const, 'name'),
    sort: params.oneOf('sort', ['asc', 'desc'] as const, 'asc'),
  };
}

/** `Group.search(query, include_parents: true)`: the full path or full name; under 3 characters, exact only. */
function matchesSearch(candidates: string[], query: string): boolean {
  const q = query.toLowerCase();
  return candidates.some((c) => (q.length >= 3 ? c.toLowerCase().includes(q) : c.toLowerCase() === q));
}

/** `API::Groups#find_groups` and `GroupsFinder#execute`, ordered as `order_groups` orders. */
function findGroups(call: Call, query: GroupQuery): Group[] {
  const { model, user } = call;
  // Non-admins default to their own groups; admins to every group.
  const allAvailable = query.allAvailable ?? user?.admin === true;
  let ids: Set<number>;
  if (user && query.owned) {
    ids = new Set(
      model.groups
        .filter((g) => directAccess(model, user.id, 'group', g.id, call.now) === OWNER)
        .map((g) => g.id),
    );
  } else if (user && query.minAccessLevel !== undefined) {
    // Only direct memberships at that level and their descendants: shares and ancestors do not count.
    ids = withDescendants(model, directGroupIds(call, user, Math.max(query.minAccessLevel, GUEST)));
  } else if (user?.admin && allAvailable) {
    ids = new Set(model.groups.map((g) => g.id));
  } else {
    ids = user ? groupsForUser(call, user) : new Set();
    if (!user || allAvailable) {
      for (const g of model.groups) {
        if (g.visibility === 'public' || (user && !user.external && g.visibility === 'internal'))
          ids.add(g.id);
      }
    }
  }
  let groups = model.groups.filter((g) => ids.has(g.id));
  if (query.topLevelOnly) groups = groups.filter((g) => g.parentId === null);
  else if (query.parent) {
    const parentId = query.parent.id;
    groups = groups.filter((g) => g.parentId === parentId);
  }
  if (query.search !== undefined) {
    const search = query.search;
    groups = groups.filter((g) => matchesSearch([g.fullPath, fullName(model, g)], search));
  }
  if (query.skipGroups.length > 0) groups = groups.filter((g) => !query.skipGroups.includes(g.id));
  const direction = query.sort === 'desc' ? -1 : 1;
  const key = query.orderBy === 'similarity' ? 'name' : query.orderBy;
  return groups.sort((a, b) => {
    const primary = key === 'id' ? a.id - b.id : compareText(a[key], b[key]);
    // `order_options["id"] ||= "asc"`: ties break on ascending id whatever the direction.
    return primary !== 0 ? primary * direction : a.id - b.id;
  });
}

// ---------------------------------------------------------------------------------------------
// Projects

type ProjectView = 'basic' | 'full' | 'single' | 'list';

function projectOwner(call: Call, project: Project): User | undefined {
  return project.ownerId === null ? undefined : call.model.users.find((u) => u.id === project.ownerId);
}

function namespaceEntity(call: Call, project: Project) {
  const { env, model } = call;
  const group = project.groupId === null ? undefined : model.groups.find((g) => g.id === project.groupId);
  if (group) {
    return {
      id: group.id,
      name: group.name,
      path: group.path,
      kind: 'group',
      full_path: group.fullPath,
      parent_id: group.parentId,
      avatar_url: null,
      web_url: env.url(`/groups/${group.fullPath}`),
    };
  }
  const owner = projectOwner(call, project)!;
  return {
    id: USER_NAMESPACE_BASE + owner.id,
    name: owner.name,
    path: owner.username,
    kind: 'user',
    full_path: owner.username,
    parent_id: null,
    avatar_url: avatarUrl(env, owner),
    web_url: env.url(`/${owner.username}`),
  };
}

/** `ProjectPolicy#read_code`: reporters and above, or anyone who may see a public or internal project. */
function canReadCode(call: Call, project: Project): boolean {
  const { user } = call;
  if (project.visibility === 'public') return true;
  if (!user) return false;
  if (user.admin || (project.visibility === 'internal' && !user.external)) return true;
  return projectAccess(call.model, user.id, project, call.now) >= REPORTER;
}

/**
 * `permissions`: the caller's own membership records, never inherited through a share. For one project
 * GitLab takes the highest membership in the project's group or its ancestors (`highest_group_member`);
 * in lists, only a membership of the project's own group.
 */
function permissionsEntity(call: Call, project: Project, view: 'single' | 'list') {
  const { model, now } = call;
  const user = call.user!;
  const direct = directAccess(model, user.id, 'project', project.id, now);
  const projectLevel = project.ownerId === user.id ? Math.max(direct, OWNER) : direct;
  let groupLevel = 0;
  if (project.groupId !== null) {
    const chain =
      view === 'single' ? ancestry(model, project.groupId) : ancestry(model, project.groupId).slice(0, 1);
    for (const g of chain)
      groupLevel = Math.max(groupLevel, directAccess(model, user.id, 'group', g.id, now));
  }
  const access = (level: number) => (level > 0 ? { access_level: level, notification_level: 3 } : null);
  return { project_access: access(projectLevel), group_access: access(groupLevel) };
}

/** `BasicProjectDetails`, `Project` (`full`), and `ProjectWithAccess` (`single`, `list`). */
function projectEntity(call: Call, project: Project, view: ProjectView): Record<string, unknown> {
  const { env, model, now, user } = call;
  const namespace = namespaceEntity(call, project);
  const readCode = canReadCode(call, project);
  const host = new URL(env.baseUrl).hostname;
  const basic: Record<string, unknown> = {
    id: project.id,
    description: project.description,
    name: project.name,
    name_with_namespace: `${project.groupId === null ? namespace.name : fullName(model, model.groups.find((g) => g.id === project.groupId)!)} / ${project.name}`,
    path: project.path,
    path_with_namespace: project.fullPath,
    created_at: iso(project.createdAt),
    ...(readCode ? { default_branch: project.defaultBranch } : {}),
    tag_list: [],
    topics: [],
    ssh_url_to_repo: `git@${host}:${project.fullPath}.git`,
    http_url_to_repo: env.url(`/${project.fullPath}.git`),
    web_url: env.url(`/${project.fullPath}`),
    // The emulated repositories are empty: no README.
    ...(readCode ? { readme_url: null, forks_count: 0 } : {}),
    avatar_url: null,
    star_count: 0,
    last_activity_at: iso(project.createdAt),
    namespace,
  };
  if (view === 'basic') return basic;
  const api = (path: string) => env.url(`/api/v4/projects/${project.id}${path}`);
  const owner = projectOwner(call, project);
  const level = user ? projectAccess(model, user.id, project, now) : 0;
  const sharedWith = model.shares
    .filter((s) => s.target === 'project' && s.targetId === project.id && inForce(s.expiresAt, now))
    .flatMap((s) => {
      const invited = model.groups.find((g) => g.id === s.sharedWithGroupId);
      return invited
        ? [
            {
              group_id: invited.id,
              group_name: invited.name,
              group_full_path: invited.fullPath,
              group_access_level: s.accessLevel,
              expires_at: day(s.expiresAt),
            },
          ]
        : [];
    });
  const full: Record<string, unknown> = {
    ...basic,
    _links: {
      self: api(''),
      issues: api('/issues'),
      merge_requests: api('/merge_requests'),
      repo_branches: api('/repository/branches'),
      labels: api('/labels'),
      events: api('/events'),
      members: api('/members'),
      cluster_agents: api('/cluster_agents'),
    },
    packages_enabled: true,
    empty_repo: true,
    archived: false,
    visibility: project.visibility,
    ...(owner ? { owner: userBasic(env, owner) } : {}),
    resolve_outdated_diff_discussions: false,
    repository_object_format: 'sha1',
    issues_enabled: true,
    merge_requests_enabled: true,
    wiki_enabled: true,
    jobs_enabled: true,
    snippets_enabled: true,
    container_registry_enabled: false,
    service_desk_enabled: false,
    can_create_merge_request_in: level >= DEVELOPER || user?.admin === true,
    issues_access_level: 'enabled',
    repository_access_level: 'enabled',
    merge_requests_access_level: 'enabled',
    forking_access_level: 'enabled',
    wiki_access_level: 'enabled',
    builds_access_level: 'enabled',
    snippets_access_level: 'enabled',
    pages_access_level: project.visibility === 'public' ? 'enabled' : 'private',
    analytics_access_level: 'enabled',
    container_registry_access_level: 'disabled',
    security_and_compliance_access_level: 'private',
    releases_access_level: 'enabled',
    environments_access_level: 'enabled',
    feature_flags_access_level: 'enabled',
    infrastructure_access_level: 'enabled',
    monitor_access_level: 'enabled',
    emails_disabled: false,
    emails_enabled: true,
    shared_runners_enabled: true,
    lfs_enabled: true,
    creator_id: project.ownerId,
    import_status: 'none',
    open_issues_count: 0,
    ci_default_git_depth: 20,
    public_jobs: true,
    shared_with_groups: sharedWith,
    only_allow_merge_if_pipeline_succeeds: false,
    allow_merge_on_skipped_pipeline: null,
    request_access_enabled: true,
    only_allow_merge_if_all_discussions_are_resolved: false,
    remove_source_branch_after_merge: true,
    printing_merge_request_link_enabled: true,
    merge_method: 'merge',
    squash_option: 'default_off',
    autoclose_referenced_issues: true,
  };
  if (view === 'full' || !user) return full;
  return { ...full, permissions: permissionsEntity(call, project, view) };
}

interface ProjectQuery {
  membership: boolean;
  owned: boolean;
  minAccessLevel: number | undefined;
  search: string | undefined;
  simple: boolean;
  orderBy: 'id' | 'name' | 'path' | 'created_at' | 'updated_at' | 'last_activity_at';
  sort: 'asc' | 'desc';
}

/** `ProjectsFinder` for `GET /projects`: owned, then `min_access_level`, then membership, else all visible. */
function findProjects(call: Call, query: ProjectQuery): Project[] {
  const { model, user, now } = call;
  const level = (p: Project) => (user ? projectAccess(model, user.id, p, now) : 0);
  let projects: Project[];
  if (!user) projects = model.projects.filter((p) => p.visibility === 'public');
  else if (query.owned) projects = model.projects.filter((p) => level(p) === OWNER);
  else if (query.minAccessLevel !== undefined) {
    const minimum = Math.max(query.minAccessLevel, GUEST);
    projects = model.projects.filter((p) => level(p) >= minimum);
  } else if (query.membership) projects = model.projects.filter((p) => level(p) >= GUEST);
  else projects = model.projects.filter((p) => projectVisible(call, p));
  if (query.search !== undefined) {
    const search = query.search;
    projects = projects.filter((p) => matchesSearch([p.name, p.path, p.description], search));
  }
  const direction = query.sort === 'desc' ? -1 : 1;
  const value = (p: Project): string | number => {
    switch (query.orderBy) {
      case 'id':
        return p.id;
      case 'name':
        return p.name;
      case 'path':
        return p.path;
      default:
        return Date.parse(p.createdAt);
    }
  };
  return projects.sort((a, b) => {
    const x = value(a);
    const y = value(b);
    const primary =
      typeof x === 'number' && typeof y === 'number' ? x - y : compareText(String(x), String(y));
    // Ties break on id in the same direction.
    return (primary !== 0 ? primary : a.id - b.id) * direction;
  });
}

// ---------------------------------------------------------------------------------------------
// Members (`MembersFinder`, `GroupMembersFinder`, `Entities::Member`)

/** One way a user holds access: a membership record, possibly capped by a share. */
interface MemberRecord {
  userId: number;
  accessLevel: number;
  createdAt: string;
  expiresAt: string | null;
  /** 0 direct, 1 inherited, 2 through a share: the tie-break among equal levels. */
  rank: number;
}

function membershipRecords(
  call: Call,
  source: 'group' | 'project',
  sourceId: number,
  rank: number,
  cap = Number.POSITIVE_INFINITY,
): MemberRecord[] {
  return call.model.memberships
    .filter(
      (m) =>
        m.source === source && m.sourceId === sourceId && m.accessLevel > 0 && inForce(m.expiresAt, call.now),
    )
    .map((m) => ({
      userId: m.userId,
      accessLevel: Math.min(m.accessLevel, cap),
      createdAt: m.createdAt,
      expiresAt: m.expiresAt,
      rank,
    }));
}

/** Direct, inherited, and invited (capped) members of a group, as `access.ts` counts them. */
function groupRecords(call: Call, group: Group, direct: boolean, viaShare = false): MemberRecord[] {
  const { model, now } = call;
  const chain = ancestry(model, group.id);
  const records = chain.flatMap((g, i) =>
    direct && i > 0 ? [] : membershipRecords(call, 'group', g.id, viaShare ? 2 : i === 0 ? 0 : 1),
  );
  if (direct || viaShare) return records;
  for (const share of model.shares) {
    if (share.target !== 'group' || !inForce(share.expiresAt, now)) continue;
    if (!chain.some((g) => g.id === share.targetId)) continue;
    const invited = model.groups.find((g) => g.id === share.sharedWithGroupId);
    if (!invited) continue;
    // Group shares are not transitive: members of the invited group itself, direct or inherited.
    for (const r of groupRecords(call, invited, false, true)) {
      records.push({ ...r, accessLevel: Math.min(r.accessLevel, share.accessLevel), rank: 2 });
    }
  }
  return records;
}

function projectRecords(call: Call, project: Project, direct: boolean): MemberRecord[] {
  const { model, now } = call;
  const records = membershipRecords(call, 'project', project.id, 0);
  // The owner of a personal project holds an owner membership of it.
  if (
    project.ownerId !== null &&
    !records.some((r) => r.userId === project.ownerId && r.accessLevel >= OWNER)
  ) {
    records.push({
      userId: project.ownerId,
      accessLevel: OWNER,
      createdAt: project.createdAt,
      expiresAt: null,
      rank: 0,
    });
  }
  if (direct) return records;
  if (project.groupId !== null) {
    const group = model.groups.find((g) => g.id === project.groupId);
    if (group)
      records.push(...groupRecords(call, group, false).map((r) => ({ ...r, rank: Math.max(r.rank, 1) })));
  }
  for (const share of model.shares) {
    if (share.target !== 'project' || share.targetId !== project.id || !inForce(share.expiresAt, now))
      continue;
    const invited = model.groups.find((g) => g.id === share.sharedWithGroupId);
    if (!invited) continue;
    // Members of a group invited into a project include those who reach that group through a group share.
    for (const r of groupRecords(call, invited, false)) {
      records.push({ ...r, accessLevel: Math.min(r.accessLevel, share.accessLevel), rank: 2 });
    }
  }
  return records;
}

/** The highest record per user (`order(access_level: :desc).find_by!`), direct before inherited before shared. */
function highestPerUser(records: MemberRecord[]): MemberRecord[] {
  const best = new Map<number, MemberRecord>();
  for (const r of records) {
    const current = best.get(r.userId);
    if (
      !current ||
      r.accessLevel > current.accessLevel ||
      (r.accessLevel === current.accessLevel && r.rank < current.rank)
    ) {
      best.set(r.userId, r);
    }
  }
  return [...best.values()].sort((a, b) => a.userId - b.userId);
}

function memberEntity(call: Call, record: MemberRecord) {
  const user = call.model.users.find((u) => u.id === record.userId)!;
  return {
    ...userBasic(call.env, user),
    access_level: record.accessLevel,
    created_at: iso(record.createdAt),
    expires_at: day(record.expiresAt),
    membership_state: 'active',
  };
}

/** `authorize_read_source_member!`: a private group's members are hidden from those without access to it. */
function authorizeGroupMembers(call: Call, group: Group): void {
  const { user } = call;
  if (group.visibility !== 'private' || user?.admin) return;
  if (!user || groupAccess(call.model, user.id, group.id, call.now) === 0) forbidden();
}

function membersList(call: Call, records: MemberRecord[]): Reply {
  const params = new Params(call.ctx);
  const query = params.raw('query');
  const userIds = params.intList('user_ids');
  const page = readPage(params);
  params.check();
  let members = highestPerUser(records).filter((r) => call.model.users.some((u) => u.id === r.userId));
  if (userIds) members = members.filter((r) => userIds.includes(r.userId));
  if (query !== undefined) {
    const q = query.toLowerCase();
    members = members.filter((r) => {
      const u = call.model.users.find((x) => x.id === r.userId)!;
      return [u.username, u.name, u.email].some((v) => v.toLowerCase().includes(q));
    });
  }
  return paginate(call, members, page, (r) => memberEntity(call, r));
}

function memberOne(call: Call, userId: number, records: MemberRecord[]): Reply {
  const record = highestPerUser(records).find((r) => r.userId === userId);
  if (!record || !call.model.users.some((u) => u.id === userId)) return notFound();
  return reply(200, memberEntity(call, record));
}

// ---------------------------------------------------------------------------------------------
// Routes

interface RouteOptions {
  scopes: readonly string[];
  /** Whether a request without any token is served (public resources only). */
  anonymous: boolean;
}

/**
 * Registers the REST API v4 routes under `/api/v4`.
 * @example
 * ```ts
 * const router = new Router();
 * registerApiRoutes(router, env);
 * // GET /api/v4/groups?min_access_level=30 with `Authorization: Bearer <token>`
 * ```
 * @see https://docs.gitlab.com/api/rest/
 */
export function registerApiRoutes(router: Router, env: Env): void {
  const get = (path: string, options: RouteOptions, handler: (call: Call) => Reply) => {
    router.on('GET', `/api/v4${path}`, (ctx) => {
      try {
        const user = authenticate(env, ctx, options.scopes);
        if (!user && !options.anonymous) unauthorized();
        return handler({ env, ctx, user, model: env.state.model, now: env.state.now() });
      } catch (error) {
        if (error instanceof ApiError) return error.reply;
        throw error;
      }
    });
  };
  const user = { scopes: USER_SCOPES, anonymous: false };
  const publicUser = { scopes: USER_SCOPES, anonymous: true };
  const api = { scopes: API_SCOPES, anonymous: true };

  get('/user', user, (call) => {
    const me = call.user!;
    return reply(200, userPublicEntity(env, me, { admin: me.admin }));
  });

  get('/users/:id', publicUser, (call) => {
    const id = integerParam(call.ctx, 'id');
    const target = call.model.users.find((u) => u.id === id);
    if (!target) return notFound('User');
    if (call.user?.admin) {
      return reply(200, {
        ...userPublicEntity(env, target, { admin: true }),
        current_sign_in_ip: null,
        last_sign_in_ip: null,
      });
    }
    return reply(200, userEntity(env, call.user, target, { isFollowed: true }));
  });

  get('/version', user, () => reply(200, VERSION));

  const listGroups = (call: Call, parent: Group | null) => {
    const params = new Params(call.ctx);
    const query = readGroupQuery(params);
    const page = readPage(params);
    params.check();
    // As in GitLab, `top_level_only` wins over the parent of `/subgroups`.
    const groups = findGroups(call, { ...query, parent });
    return paginate(call, groups, page, (g) => groupEntity(call, g));
  };

  get('/groups', api, (call) => listGroups(call, null));

  get('/groups/:id', api, (call) => {
    const params = new Params(call.ctx);
    const withProjects = params.bool('with_projects') ?? true;
    params.check();
    const group = findGroup(call, call.ctx.params['id'] ?? '');
    return reply(200, groupDetailEntity(call, group, withProjects));
  });

  get('/groups/:id/subgroups', api, (call) => listGroups(call, findGroup(call, call.ctx.params['id'] ?? '')));

  // `members/all` first: the router takes the first pattern that matches. `all` counts inherited and
  // invited members; the plain form only direct ones.
  for (const [suffix, direct] of [
    ['/members/all', false],
    ['/members', true],
  ] as const) {
    const records = (call: Call) => {
      const group = findGroup(call, call.ctx.params['id'] ?? '');
      authorizeGroupMembers(call, group);
      return groupRecords(call, group, direct);
    };
    get(`/groups/:id${suffix}`, api, (call) => membersList(call, records(call)));
    get(`/groups/:id${suffix}/:user_id`, api, (call) => {
      const userId = integerParam(call.ctx, 'user_id');
      return memberOne(call, userId, records(call));
    });
  }

  get('/projects', api, (call) => {
    const params = new Params(call.ctx);
    const query: ProjectQuery = {
      membership: params.bool('membership') ?? false,
      owned: params.bool('owned') ?? false,
      minAccessLevel: params.intIn('min_access_level', ACCESS_VALUES),
      search: params.raw('search'),
      simple: params.bool('simple') ?? false,
      orderBy: params.oneOf(
        'order_by',
        ['id', 'name', 'path', 'created_at', 'updated_at', 'last_activity_at'] as const,
        'created_at',
      ),
      sort: params.oneOf('sort', ['asc', 'desc'] as const, 'desc'),
    };
    const page = readPage(params);
    params.check();
    const view: ProjectView = query.simple || !call.user ? 'basic' : 'list';
    return paginate(call, findProjects(call, query), page, (p) => projectEntity(call, p, view));
  });

  get('/projects/:id', api, (call) => {
    const project = findProject(call, call.ctx.params['id'] ?? '');
    return reply(200, projectEntity(call, project, call.user ? 'single' : 'basic'));
  });

  for (const [suffix, direct] of [
    ['/members/all', false],
    ['/members', true],
  ] as const) {
    const records = (call: Call) =>
      projectRecords(call, findProject(call, call.ctx.params['id'] ?? ''), direct);
    get(`/projects/:id${suffix}`, api, (call) => membersList(call, records(call)));
    get(`/projects/:id${suffix}/:user_id`, api, (call) => {
      const userId = integerParam(call.ctx, 'user_id');
      return memberOne(call, userId, records(call));
    });
  }

  // `API::Applications`: admins only, and a write, so `read_api` does not do (`API::API` allows it for
  // GET and HEAD only).
  router.on('POST', '/api/v4/applications', (ctx) => {
    try {
      const caller = authenticate(env, ctx, ['api']);
      if (!caller) return unauthorized();
      if (!caller.admin) return forbidden();
      return createApplication(env, ctx);
    } catch (error) {
      if (error instanceof ApiError) return error.reply;
      throw error;
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Applications (`API::Applications`, Doorkeeper's `RedirectUriValidator`)

/** GitLab's `forbid_redirect_uri`: schemes that could run script in the browser. */
const FORBIDDEN_SCHEMES = new Set(['data:', 'vbscript:', 'javascript:']);

/** The validation messages Doorkeeper gives one registered redirect URI, in its order. */
function redirectUriErrors(raw: string): string[] {
  if (!/^[A-Za-z][A-Za-z0-9+.-]*:/.test(raw)) {
    return raw.startsWith('/') ? ['must be an absolute URI.'] : ['must specify a scheme.'];
  }
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return ['must be a valid URI.'];
  }
  const errors: string[] = [];
  if (FORBIDDEN_SCHEMES.has(url.protocol.toLowerCase())) errors.push('is forbidden by the server.');
  if (raw.includes('#')) errors.push('cannot contain a fragment.');
  if ((url.protocol === 'http:' || url.protocol === 'https:') && !url.hostname)
    errors.push('must be a valid URI.');
  return errors;
}

/**
 * `POST /api/v4/applications`: Grape's parameter errors first (400 `{"error": "name is missing, …"}`),
 * then the model's validation (400 `{"message": {"redirect_uri": [...]}}`), then 201 with
 * `Entities::ApplicationWithSecret`; the secret is shown this once, as GitLab stores only its hash.
 */
function createApplication(env: Env, ctx: RequestContext): Reply {
  const errors: string[] = [];
  const name = ctx.param('name');
  const redirectUri = ctx.param('redirect_uri');
  const scopes = ctx.param('scopes');
  if (name === undefined) errors.push('name is missing');
  if (redirectUri === undefined) errors.push('redirect_uri is missing');
  if (scopes === undefined) errors.push('scopes is missing');
  if (scopes === undefined || scopes.trim() === '') errors.push('scopes is empty');
  const rawConfidential = ctx.param('confidential');
  let confidential = true;
  if (rawConfidential !== undefined && rawConfidential !== '' && rawConfidential !== 'null') {
    const value = rawConfidential.toLowerCase();
    if (TRUE_VALUES.has(value)) confidential = true;
    else if (FALSE_VALUES.has(value)) confidential = false;
    else errors.push('confidential is invalid');
  }
  if (errors.length > 0) return reply(400, { error: errors.join(', ') });

  const invalid: Record<string, string[]> = {};
  if (name!.trim() === '') invalid['name'] = ["can't be blank"];
  const uris = redirectUri!.split(/\s+/).filter(Boolean);
  const uriErrors = uris.length === 0 ? ["can't be blank"] : uris.flatMap(redirectUriErrors);
  if (uriErrors.length > 0) invalid['redirect_uri'] = [...new Set(uriErrors)];
  const scopeList = scopes!.split(/\s+/).filter(Boolean);
  if (!scopeList.every((scope) => SERVER_SCOPES.includes(scope))) {
    invalid['scopes'] = ["doesn't match configured on the server."];
  }
  if (Object.keys(invalid).length > 0) return reply(400, { message: invalid });

  const { applications } = env.state.model;
  const application = {
    id: applications.reduce((max, a) => Math.max(max, a.id), 0) + 1,
    name: name!,
    uid: hexToken(),
    secret: `gloas-${hexToken()}`,
    redirectUris: uris,
    scopes: scopeList,
    confidential,
    trusted: false,
    dynamic: false,
  };
  applications.push(application);
  return reply(201, {
    id: application.id,
    application_id: application.uid,
    application_name: application.name,
    secret: application.secret,
    callback_url: redirectUri!,
    confidential: application.confidential,
  });
}
