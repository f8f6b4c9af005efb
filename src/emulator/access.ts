/**
 * Effective access as GitLab computes it: direct memberships, memberships inherited from ancestor
 * groups, and access through groups invited into a group or a project, capped at the share's level.
 * Expired memberships and shares count for nothing.
 */
import type { Group, Model, Project } from './fixtures.js';

/** True while a membership or share with this `expiresAt` (a date, GitLab's `expires_at`) is in force. */
export function inForce(expiresAt: string | null, now: Date): boolean {
  // GitLab expires a membership at the start of its expires_at date.
  return expiresAt === null || Date.parse(expiresAt) > now.getTime();
}

/** The group and its ancestors, nearest first. */
export function ancestry(model: Model, groupId: number): Group[] {
  const chain: Group[] = [];
  let group = model.groups.find((g) => g.id === groupId);
  while (group) {
    chain.push(group);
    const parentId: number | null = group.parentId;
    group = parentId === null ? undefined : model.groups.find((g) => g.id === parentId);
  }
  return chain;
}

/** The highest direct membership level of a user in a group or project, or 0. */
export function directAccess(
  model: Model,
  userId: number,
  source: 'group' | 'project',
  id: number,
  now: Date,
): number {
  let level = 0;
  for (const m of model.memberships) {
    if (m.userId === userId && m.source === source && m.sourceId === id && inForce(m.expiresAt, now)) {
      level = Math.max(level, m.accessLevel);
    }
  }
  return level;
}

/** Direct or inherited access to a group, without shares: what makes someone a member of an invited group. */
export function memberAccess(model: Model, userId: number, groupId: number, now: Date): number {
  let level = 0;
  for (const group of ancestry(model, groupId))
    level = Math.max(level, directAccess(model, userId, 'group', group.id, now));
  return level;
}

/** A user's effective access level to a group (0 when none). */
export function groupAccess(model: Model, userId: number, groupId: number, now: Date): number {
  const chain = ancestry(model, groupId);
  let level = memberAccess(model, userId, groupId, now);
  for (const share of model.shares) {
    if (share.target !== 'group' || !inForce(share.expiresAt, now)) continue;
    if (!chain.some((g) => g.id === share.targetId)) continue;
    // Group shares are not transitive: only members of the invited group itself (direct or inherited) count.
    const invited = memberAccess(model, userId, share.sharedWithGroupId, now);
    level = Math.max(level, Math.min(invited, share.accessLevel));
  }
  return level;
}

/** A user's effective access level to a project (0 when none). */
export function projectAccess(model: Model, userId: number, project: Project, now: Date): number {
  let level = directAccess(model, userId, 'project', project.id, now);
  if (project.ownerId === userId) level = Math.max(level, 50);
  if (project.groupId !== null) level = Math.max(level, groupAccess(model, userId, project.groupId, now));
  for (const share of model.shares) {
    if (share.target !== 'project' || share.targetId !== project.id || !inForce(share.expiresAt, now))
      continue;
    // Members of a group invited into a project include those who reach that group through a group share.
    const invited = groupAccess(model, userId, share.sharedWithGroupId, now);
    level = Math.max(level, Math.min(invited, share.accessLevel));
  }
  return level;
}

/** The groups of which the user is a direct member (`user.groups`, the `groups_direct` claim). */
export function directGroups(model: Model, userId: number, now: Date): Group[] {
  return model.groups.filter((g) => directAccess(model, userId, 'group', g.id, now) > 0);
}

/** Direct groups plus all their descendants (`membership_groups`, the userinfo `groups` claim). */
export function membershipGroups(model: Model, userId: number, now: Date): Group[] {
  const direct = new Set(directGroups(model, userId, now).map((g) => g.id));
  return model.groups.filter((g) => ancestry(model, g.id).some((a) => direct.has(a.id)));
}
