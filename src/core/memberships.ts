/**
 * The I/O half of access control: reads from GitLab the facts a policy needs — the user's state and,
 * for membership rules, the user's effective level in each group and project the policy names (and, for
 * rules that include subgroups, in the subgroups the user belongs to). `evaluateAccess` decides.
 *
 * Effective levels come from `/members/all/:user_id`, which counts direct, inherited and invited
 * (shared, capped) memberships, as GitLab computes them.
 */
import {
  type AccessFacts,
  type MembershipFact,
  type NormalisedPolicy,
  needsMemberships,
  type Rule,
} from './access.js';
import { GitLabApiError, type GitLabClient } from './gitlab.js';
import type { SessionUser } from './store.js';

const CONCURRENCY = 4;
const API_SCOPES = ['read_api', 'api'];
const USER_SCOPES = ['read_user', 'read_api', 'api'];

/** Thrown when GitLab says the token is no longer good: the session must end. */
export class TokenRejected extends Error {
  override name = 'TokenRejected';
}

async function inBatches<T, R>(items: readonly T[], run: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (let i = 0; i < items.length; i += CONCURRENCY)
    out.push(...(await Promise.all(items.slice(i, i + CONCURRENCY).map(run))));
  return out;
}

function rulesOf(policy: NormalisedPolicy): Rule[] {
  return [...policy.allow, ...Object.values(policy.roles).flat()];
}

const lower = (value: string) => value.replace(/[A-Z]/g, (c) => c.toLowerCase());

/**
 * The level of a membership answer, 0 for "not a member": 404 (not a member, or the group is not
 * visible to the user), and 403 (a private group the user can see, as the parent of one of their
 * subgroups, but has no access to: GitLab's `authorize_read_source_member!`). A 403 for a missing
 * scope is not an answer about the membership and is thrown.
 */
async function memberLevel(api: GitLabClient, path: string): Promise<number> {
  try {
    const member = await api.get<{ access_level?: unknown }>(path);
    return typeof member.access_level === 'number' ? member.access_level : 0;
  } catch (error) {
    if (error instanceof GitLabApiError) {
      if (error.status === 404) return 0;
      // A 403 for a token that lacks a scope is not an answer about the user's access.
      if (error.status === 403 && error.error !== 'insufficient_scope') return 0;
    }
    throw error;
  }
}

/**
 * Reads the facts `policy` needs for `user`. Never throws for a GitLab that is down: the facts come
 * back with `complete: false` and the decision fails closed. Throws {@link TokenRejected} when GitLab
 * answers 401 after a refresh.
 */
export async function fetchAccessFacts(input: {
  api: GitLabClient;
  user: SessionUser;
  policy: NormalisedPolicy;
  scopes: readonly string[];
  now: number;
  /** Reads `/oauth/userinfo` (proves the account is active when `/api/v4/user` is out of scope). */
  userinfo: () => Promise<boolean>;
  /** The user's profile was read from GitLab just now (at sign-in): do not read it again. */
  fresh?: boolean;
}): Promise<AccessFacts> {
  const { api, user, policy, scopes } = input;
  let complete = true;
  const facts: AccessFacts = {
    user: {
      username: user.username,
      email: user.email,
      emailVerified: user.emailVerified,
      state: user.state,
      bot: user.bot,
      external: user.external,
      twoFactorEnabled: user.twoFactorEnabled,
    },
    groups: [],
    projects: [],
    now: input.now,
  };
  const rejected = (error: unknown) => error instanceof GitLabApiError && error.status === 401;

  if (input.fresh) {
    // Signing in proved the account active (GitLab's userinfo refuses blocked accounts).
    facts.user.state ??= 'active';
  } else if (scopes.some((s) => USER_SCOPES.includes(s))) {
    try {
      const me = await api.get<Record<string, unknown>>('/user');
      facts.user.state = typeof me['state'] === 'string' ? me['state'] : null;
      facts.user.bot = typeof me['bot'] === 'boolean' ? me['bot'] : null;
      facts.user.external = typeof me['external'] === 'boolean' ? me['external'] : null;
      facts.user.twoFactorEnabled =
        typeof me['two_factor_enabled'] === 'boolean' ? me['two_factor_enabled'] : null;
      facts.user.confirmed = typeof me['confirmed_at'] === 'string' ? true : null;
    } catch (error) {
      if (rejected(error)) throw new TokenRejected('GitLab refused the token');
      // GitLab answers 403 for blocked and deactivated accounts.
      if (error instanceof GitLabApiError && error.status === 403) {
        facts.user.state = /deactivated/i.test(error.gitlabMessage ?? '') ? 'deactivated' : 'blocked';
      } else {
        complete = false;
        facts.user.state = null;
      }
    }
  } else {
    // GitLab's userinfo refuses blocked and deactivated accounts, so a 200 means active.
    try {
      facts.user.state = (await input.userinfo()) ? 'active' : 'blocked';
    } catch {
      complete = false;
      facts.user.state = null;
    }
  }

  // A blocked or deactivated account reaches nothing: GitLab refuses every call its token makes, and
  // those refusals are an answer (no memberships), not an outage to ride out.
  const inactive = facts.user.state === 'blocked' || facts.user.state === 'deactivated';
  if (needsMemberships(policy) && !inactive) {
    if (!scopes.some((s) => API_SCOPES.includes(s))) {
      // Without read_api only the userinfo claim is there: direct groups and their subgroups.
      facts.groups = user.groups.map((fullPath) => ({ fullPath, accessLevel: 10 }));
    } else {
      try {
        const { groups, projects } = await readMemberships(api, user.id, rulesOf(policy));
        facts.groups = groups;
        facts.projects = projects;
      } catch (error) {
        if (rejected(error)) throw new TokenRejected('GitLab refused the token');
        complete = false;
      }
    }
  }
  facts.complete = complete;
  return facts;
}

async function readMemberships(
  api: GitLabClient,
  userId: number,
  rules: readonly Rule[],
): Promise<{ groups: MembershipFact[]; projects: MembershipFact[] }> {
  const groupTargets = new Map<string, { id?: number; fullPath?: string }>();
  const projectTargets = new Map<string, { id?: number; fullPath?: string }>();
  let subgroups = false;
  for (const rule of rules) {
    if ('group' in rule) groupTargets.set(lower(rule.group), { fullPath: rule.group });
    if ('groupId' in rule) groupTargets.set(`#${rule.groupId}`, { id: rule.groupId });
    if ('project' in rule) projectTargets.set(lower(rule.project), { fullPath: rule.project });
    if ('projectId' in rule) projectTargets.set(`#${rule.projectId}`, { id: rule.projectId });
    if (('group' in rule || 'groupId' in rule) && rule.includeSubgroups !== false) subgroups = true;
  }

  // Rules by id need the current path (for subgroups) and prove the group still exists.
  const groupFacts = await inBatches(
    [...groupTargets.values()],
    async (target): Promise<MembershipFact | null> => {
      let { id, fullPath } = target;
      if (id !== undefined) {
        try {
          const group = await api.get<{ id: number; full_path: string }>(`/groups/${id}`);
          fullPath = group.full_path;
        } catch (error) {
          if (error instanceof GitLabApiError && error.status === 404) return null;
          throw error;
        }
      }
      const ref = id ?? encodeURIComponent(fullPath!);
      const accessLevel = await memberLevel(api, `/groups/${ref}/members/all/${userId}`);
      return { ...(id !== undefined ? { id } : {}), fullPath: fullPath!, accessLevel };
    },
  );
  const groups = groupFacts.filter((g): g is MembershipFact => g !== null);

  if (subgroups) {
    // The user's groups below a rule's group: their own effective level there may be higher. The
    // plain list (no min_access_level, which counts direct memberships only) also holds the groups
    // reached through a share; members/all then gives the level, 0 where there is none.
    const known = new Set(groups.map((g) => lower(g.fullPath)));
    const roots = groups.map((g) => `${lower(g.fullPath)}/`);
    const below: { id: number; full_path: string }[] = [];
    for await (const group of api.paginate<{ id: number; full_path: string }>('/groups')) {
      const path = lower(group.full_path);
      if (!known.has(path) && roots.some((root) => path.startsWith(root))) below.push(group);
    }
    groups.push(
      ...(await inBatches(below, async (group) => ({
        id: group.id,
        fullPath: group.full_path,
        accessLevel: await memberLevel(api, `/groups/${group.id}/members/all/${userId}`),
      }))),
    );
  }

  const projectFacts = await inBatches(
    [...projectTargets.values()],
    async (target): Promise<MembershipFact | null> => {
      let { id, fullPath } = target;
      if (id !== undefined) {
        try {
          const project = await api.get<{ id: number; path_with_namespace: string }>(`/projects/${id}`);
          fullPath = project.path_with_namespace;
        } catch (error) {
          if (error instanceof GitLabApiError && error.status === 404) return null;
          throw error;
        }
      }
      const ref = id ?? encodeURIComponent(fullPath!);
      const accessLevel = await memberLevel(api, `/projects/${ref}/members/all/${userId}`);
      return { ...(id !== undefined ? { id } : {}), fullPath: fullPath!, accessLevel };
    },
  );
  return { groups, projects: projectFacts.filter((p): p is MembershipFact => p !== null) };
}
