/**
 * Access policies as data, and the pure decision over them (docs/access.md, "Deciding yourself"):
 * who may sign in (`allow` rules, any one suffices), what must hold for everyone (`require`), and
 * which roles a signed-in user gets. Fetching the facts (memberships, the user's flags) is separate
 * I/O.
 *
 * Matching follows docs/security.md, ACCESS-1 to ACCESS-11: whole GitLab full paths (`acme/team`
 * never matches `acme/team-evil`), compared case-insensitively as GitLab routes are unique
 * case-insensitively, subgroups only on whole segments, rules by numeric id against recycled paths
 * (ACCESS-5), and every unknown or unreadable fact fails closed.
 *
 * @example
 * ```ts
 * const policy = parsePolicy({ allow: 'group:acme/platform>=developer', require: 'active,2fa' });
 * const decision = evaluateAccess(policy, facts);
 * if (!decision.allowed) console.log(decision.failed, decision.reasons);
 * ```
 */

// ─── Types ──────────────────────────────────────────────────────────────────────────────────────

/**
 * GitLab's names for its access levels (`Gitlab::Access`), lower case with underscores as the API
 * and `doc/api/members.md` write them.
 *
 * @example
 * ```ts
 * const level: AccessLevelName = 'developer'; // 30
 * ```
 */
export type AccessLevelName =
  | 'minimal_access'
  | 'guest'
  | 'planner'
  | 'reporter'
  | 'developer'
  | 'maintainer'
  | 'owner';

/**
 * GitLab's access levels by name (`Gitlab::Access`). `0` (no access) and `60` (instance admin) are
 * not levels a rule can ask for.
 *
 * @see https://docs.gitlab.com/api/members/#roles
 * @example
 * ```ts
 * ACCESS_LEVELS.developer; // 30
 * ```
 */
export const ACCESS_LEVELS: Readonly<Record<AccessLevelName, number>> = Object.freeze({
  minimal_access: 5,
  guest: 10,
  planner: 15,
  reporter: 20,
  developer: 30,
  maintainer: 40,
  owner: 50,
});

/**
 * A minimum access level in a rule: a GitLab level name or its number.
 *
 * @example
 * ```ts
 * const a: AccessLevel = 'maintainer';
 * const b: AccessLevel = 40; // the same
 * ```
 */
export type AccessLevel = AccessLevelName | number;

/**
 * Membership of a group (named by full path): effective membership, whether direct, inherited
 * from an ancestor group or through a group share. `minAccessLevel` defaults to `guest`; members
 * with `minimal_access` count only when the rule asks for `minimal_access`. `includeSubgroups`
 * (default true) lets membership of a subgroup count (`acme/platform/infra` for `acme/platform`),
 * on whole path segments only.
 *
 * Paths can be recycled when a group is renamed or deleted (docs/security.md, ACCESS-5): prefer
 * {@link GroupIdRule} where strangers could register the freed path.
 *
 * @example
 * ```ts
 * const rule: GroupRule = { group: 'acme/platform', minAccessLevel: 'developer' };
 * ```
 */
export interface GroupRule {
  group: string;
  minAccessLevel?: AccessLevel;
  includeSubgroups?: boolean;
}

/**
 * Membership of one project (named by full path; projects have no subgroups), at least
 * `minAccessLevel` (default `guest`). The level is the effective one, group memberships included.
 *
 * @example
 * ```ts
 * const rule: ProjectRule = { project: 'acme/app', minAccessLevel: 'maintainer' };
 * ```
 */
export interface ProjectRule {
  project: string;
  minAccessLevel?: AccessLevel;
}

/**
 * One GitLab username, compared case-insensitively. Usernames can be changed and re-registered
 * (docs/security.md, ISSUER-5): use this for a few named people, never as an identity key.
 *
 * @example
 * ```ts
 * const rule: UserRule = { user: 'alice' };
 * ```
 */
export interface UserRule {
  user: string;
}

/**
 * The domain of the user's **verified** email. `@acme.com` and `acme.com` mean exactly `acme.com`
 * (never `evilacme.com`, never `mail.acme.com`); `.acme.com` means its subdomains only
 * (`mail.acme.com`, not `acme.com` itself: list both to admit both). At least two labels.
 *
 * @example
 * ```ts
 * const rule: EmailDomainRule = { emailDomain: '@acme.com' };
 * ```
 */
export interface EmailDomainRule {
  emailDomain: string;
}

/**
 * {@link GroupRule} by GitLab's numeric group id, which survives renames and cannot be recycled
 * (docs/security.md, ACCESS-5). Subgroups count (by default) below the path the facts give for that id.
 *
 * @example
 * ```ts
 * const rule: GroupIdRule = { groupId: 42, minAccessLevel: 'developer' };
 * ```
 */
export interface GroupIdRule {
  groupId: number;
  minAccessLevel?: AccessLevel;
  includeSubgroups?: boolean;
}

/**
 * {@link ProjectRule} by GitLab's numeric project id (docs/security.md, ACCESS-5).
 *
 * @example
 * ```ts
 * const rule: ProjectIdRule = { projectId: 7, minAccessLevel: 'reporter' };
 * ```
 */
export interface ProjectIdRule {
  projectId: number;
  minAccessLevel?: AccessLevel;
}

/**
 * One access rule. A rule object has exactly the keys of one of its forms: an unknown key (a typo
 * such as `minAcessLevel`) makes the policy invalid rather than silently more permissive.
 *
 * @example
 * ```ts
 * const rules: Rule[] = [{ group: 'acme/platform' }, { user: 'alice' }, { emailDomain: 'acme.com' }];
 * ```
 */
export type Rule = GroupRule | ProjectRule | UserRule | EmailDomainRule | GroupIdRule | ProjectIdRule;

/**
 * What must hold for every user, whatever rule admits them:
 * `active` (GitLab account state is `active`), `2fa` (two-factor authentication on),
 * `confirmed-email` (the released email is verified), `human` (not a bot), `internal` (not an
 * external user). A fact GitLab did not release fails the requirement.
 *
 * @example
 * ```ts
 * const require: Requirement[] = ['active', '2fa'];
 * ```
 */
export type Requirement = '2fa' | 'confirmed-email' | 'human' | 'internal' | 'active';

/**
 * An access policy. Rules may be given as {@link Rule} objects or as strings in the
 * `LABGATE_ALLOW` grammar (`'group:acme/platform>=maintainer'`; see {@link parseRule}).
 *
 * - `allow`: any one rule suffices; absent or empty admits everyone with a GitLab account.
 * - `require`: every one must hold; default `['active']`; `[]` requires nothing.
 * - `roles`: role name → rule(s); a role is granted when any of its rules matches (a string may list
 *   alternatives with `|`). Roles are only granted to users who are allowed.
 *
 * @example
 * ```ts
 * const policy: Policy = {
 *   allow: ['group:acme'],
 *   require: ['active', '2fa'],
 *   roles: { admin: 'group:acme/platform>=maintainer', editor: { project: 'acme/app', minAccessLevel: 'developer' } },
 * };
 * ```
 */
export interface Policy {
  allow?: readonly (Rule | string)[];
  require?: readonly Requirement[];
  roles?: Readonly<Record<string, Rule | string | readonly (Rule | string)[]>>;
}

/**
 * A policy with every string parsed and every default applied, as {@link normalisePolicy} returns it.
 *
 * @example
 * ```ts
 * normalisePolicy({}); // { allow: [], require: ['active'], roles: {} }
 * ```
 */
export interface NormalisedPolicy {
  allow: Rule[];
  require: Requirement[];
  roles: Record<string, Rule[]>;
}

/**
 * One membership as the I/O layer read it. `accessLevel` is the effective level (direct, inherited
 * or through a share, already capped by the share's maximum). `expiresAt` is GitLab's `expires_at`
 * (a date such as `2025-01-31`, taken as 00:00 UTC that day, or an ISO timestamp).
 *
 * @example
 * ```ts
 * const m: MembershipFact = { id: 42, fullPath: 'acme/platform', accessLevel: 30, expiresAt: null };
 * ```
 */
export interface MembershipFact {
  id?: number;
  fullPath: string;
  accessLevel: number;
  expiresAt?: string | null;
}

/**
 * The user's flags as GitLab released them; `null` where it did not (the scopes did not allow it).
 *
 * @example
 * ```ts
 * const user: UserFacts = {
 *   username: 'alice', email: 'alice@acme.com', emailVerified: true, state: 'active',
 *   bot: false, external: false, twoFactorEnabled: true,
 * };
 * ```
 */
export interface UserFacts {
  username: string;
  email: string | null;
  emailVerified: boolean;
  state: string | null;
  bot: boolean | null;
  external: boolean | null;
  twoFactorEnabled: boolean | null;
  /** `/api/v4/user`'s `confirmed_at` is set; `false` fails `confirmed-email` even with a verified email. */
  confirmed?: boolean | null;
}

/**
 * Everything {@link evaluateAccess} decides on, fetched by the I/O layer. `now` (epoch ms) is needed
 * for memberships with an expiry date: without it they do not count. `complete: false` says some
 * membership could not be read, and then rules on memberships fail closed.
 *
 * @example
 * ```ts
 * const facts: AccessFacts = {
 *   user: { username: 'alice', email: 'alice@acme.com', emailVerified: true, state: 'active',
 *           bot: false, external: false, twoFactorEnabled: true },
 *   groups: [{ id: 42, fullPath: 'acme/platform', accessLevel: 30 }],
 *   projects: [],
 *   now: Date.now(),
 * };
 * ```
 */
export interface AccessFacts {
  user: UserFacts;
  groups: MembershipFact[];
  projects: MembershipFact[];
  now?: number;
  complete?: boolean;
}

/**
 * Why a user was denied, for the 403 page: the first failed requirement, no matching rule, the
 * memberships could not be read, or the policy or facts were malformed. Never names the user's groups.
 *
 * @example
 * ```ts
 * const failed: AccessFailure = '2fa';
 * ```
 */
export type AccessFailure =
  | Requirement
  | 'no-rule-matched'
  | 'memberships-unavailable'
  | 'invalid-policy'
  | 'invalid-facts';

/**
 * The outcome of {@link evaluateAccess}. `reasons` explain each step in English for logs and
 * administrators (they name the rules' paths and the user's level there, never the user's other
 * groups); `failed` is set only when denied. `roles` is sorted, and empty when denied.
 *
 * @example
 * ```ts
 * const d: Decision = {
 *   allowed: true,
 *   roles: ['editor'],
 *   reasons: ['requirement active: met', 'allowed: member of acme/platform with developer (≥ reporter)'],
 * };
 * ```
 */
export interface Decision {
  allowed: boolean;
  roles: string[];
  reasons: string[];
  failed?: AccessFailure;
}

// ─── Access levels ──────────────────────────────────────────────────────────────────────────────

const LEVEL_NAMES = Object.keys(ACCESS_LEVELS) as AccessLevelName[];
const LEVEL_NUMBERS = new Set(Object.values(ACCESS_LEVELS));
const DEFAULT_MIN_LEVEL = ACCESS_LEVELS.guest;
const LEVELS_HELP = `${LEVEL_NAMES.join(', ')} or ${[...LEVEL_NUMBERS].join(', ')}`;

function levelOrError(value: unknown): number | string {
  if (typeof value === 'number') {
    return LEVEL_NUMBERS.has(value) ? value : `unknown access level ${value}`;
  }
  if (typeof value === 'string') {
    const text = value.trim();
    if (/^[0-9]+$/.test(text)) return levelOrError(Number(text));
    const name = text.toLowerCase().replace(/[- ]/g, '_');
    if (Object.hasOwn(ACCESS_LEVELS, name)) return ACCESS_LEVELS[name as AccessLevelName];
    return `unknown access level ${quote(value)}`;
  }
  return `an access level must be a name or a number, not ${quote(value)}`;
}

/**
 * The number of a GitLab access level given by name (case-insensitive; `minimal-access` is accepted
 * for `minimal_access`) or number. Throws a `TypeError` for anything else, including `0` (no access)
 * and `60` (admin), which no rule can ask for.
 *
 * @example
 * ```ts
 * accessLevelOf('developer'); // 30
 * accessLevelOf(40); // 40
 * accessLevelOf('root'); // throws TypeError
 * ```
 */
export function accessLevelOf(level: AccessLevel): number {
  const result = levelOrError(level);
  if (typeof result === 'string') throw new TypeError(`labgate: ${result}; use ${LEVELS_HELP}`);
  return result;
}

/** GitLab's name for a level in reasons; levels outside the table are shown by number. */
function levelName(level: number): string {
  const name = LEVEL_NAMES.find((n) => ACCESS_LEVELS[n] === level);
  if (name) return name;
  if (level === 0) return 'no_access';
  if (level === 60) return 'admin';
  return `level ${level}`;
}

// ─── Rules: validation and compilation ─────────────────────────────────────────────────────────

/** A rule checked and reduced to what matching needs. Paths and names are ASCII-lower-cased. */
type Compiled =
  | { kind: 'group'; text: string; display: string; path: string[]; min: number; subgroups: boolean }
  | { kind: 'group-id'; text: string; id: number; min: number; subgroups: boolean }
  | { kind: 'project'; text: string; display: string; path: string[]; min: number }
  | { kind: 'project-id'; text: string; id: number; min: number }
  | { kind: 'user'; text: string; username: string }
  | { kind: 'email'; text: string; domain: string; subdomains: boolean };

type MembershipKind = 'group' | 'group-id' | 'project' | 'project-id';

const isMembershipRule = (rule: Compiled): boolean => rule.kind !== 'user' && rule.kind !== 'email';

const RULE_FORMS =
  'group:PATH[>=LEVEL], group-exact:PATH[>=LEVEL] (no subgroups), group-id:ID[>=LEVEL], ' +
  'group-id-exact:ID[>=LEVEL], project:PATH[>=LEVEL], project-id:ID[>=LEVEL], email:@DOMAIN, ' +
  `email:.DOMAIN (subdomains), user:USERNAME; LEVEL is ${LEVELS_HELP}`;

const REQUIREMENTS: readonly Requirement[] = ['active', '2fa', 'confirmed-email', 'human', 'internal'];
const ROLE_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}$/;

// GitLab paths and usernames are ASCII ([A-Za-z0-9_.-], not starting with '-'). Lower-casing only
// ASCII keeps characters such as the Kelvin sign (U+212A, which toLowerCase() turns into 'k') from
// ever comparing equal to an ASCII rule.
const asciiLower = (value: string): string => value.replace(/[A-Z]/g, (c) => c.toLowerCase());
const SEGMENT = /^[A-Za-z0-9_.][A-Za-z0-9_.-]*$/;
const USERNAME = /^[A-Za-z0-9_.][A-Za-z0-9_.-]*$/;
const LABEL = /^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/;
const MAX_PATH = 1024;

function quote(value: unknown): string {
  const text = typeof value === 'string' ? value : String(value);
  return JSON.stringify(text.length > 100 ? `${text.slice(0, 100)}…` : text);
}

function rulePath(value: unknown, what: 'group' | 'project'): string[] | string {
  if (typeof value !== 'string') return `a ${what} path must be a string`;
  const path = value.trim();
  if (path.length === 0 || path.length > MAX_PATH) return `${quote(value)} is not a ${what} path`;
  const segments = path.split('/');
  if (!segments.every((s) => SEGMENT.test(s) && s !== '.' && s !== '..')) {
    return `${quote(value)} is not a ${what} full path (segments of letters, digits, _ . -, joined by /)`;
  }
  if (what === 'project' && segments.length < 2) {
    return `${quote(value)} is not a project full path (a project lives in a namespace: group/project)`;
  }
  return segments.map(asciiLower);
}

function ruleId(value: unknown, what: string): number | string {
  return typeof value === 'number' && Number.isSafeInteger(value) && value > 0
    ? value
    : `${what} must be a positive integer, not ${quote(value)}`;
}

function ruleDomain(value: unknown): { domain: string; subdomains: boolean } | string {
  if (typeof value !== 'string') return 'an email domain must be a string';
  let text = value.trim();
  if (text.startsWith('@')) text = text.slice(1);
  if (text.includes('@'))
    return `${quote(value)} is an address, not a domain: write email:@DOMAIN or user:USERNAME`;
  if (text.startsWith('*.')) return `${quote(value)}: write .DOMAIN (leading dot) for subdomains`;
  const subdomains = text.startsWith('.');
  if (subdomains) text = text.slice(1);
  const domain = asciiLower(text);
  const labels = domain.split('.');
  if (labels.length < 2 || !labels.every((l) => LABEL.test(l))) {
    return `${quote(value)} is not an email domain such as @acme.com or .acme.com`;
  }
  return { domain, subdomains };
}

const ALLOWED_KEYS: Record<string, readonly string[]> = {
  group: ['group', 'minAccessLevel', 'includeSubgroups'],
  groupId: ['groupId', 'minAccessLevel', 'includeSubgroups'],
  project: ['project', 'minAccessLevel'],
  projectId: ['projectId', 'minAccessLevel'],
  user: ['user'],
  emailDomain: ['emailDomain'],
};

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

/** Checks a rule object (not a string) and compiles it; a string result is the problem. */
function compileObject(rule: unknown): Compiled | string {
  if (!isRecord(rule)) return `a rule must be an object or a string, not ${quote(rule)}`;
  // Keys set to undefined count as absent (exactOptionalPropertyTypes forbids them in TS anyway).
  const keys = Object.keys(rule).filter((k) => rule[k] !== undefined);
  const kinds = keys.filter((k) => Object.hasOwn(ALLOWED_KEYS, k));
  if (kinds.length !== 1) {
    return `a rule needs exactly one of ${Object.keys(ALLOWED_KEYS).join(', ')} (got ${quote(keys.join(', '))})`;
  }
  const kind = kinds[0]!;
  // An unknown key (a typo such as minAcessLevel) must not leave a rule more permissive than meant.
  const extra = keys.filter((k) => !ALLOWED_KEYS[kind]!.includes(k));
  if (extra.length > 0) return `a ${kind} rule has no ${extra.map((k) => quote(k)).join(', ')}`;

  let min = DEFAULT_MIN_LEVEL;
  let level = '';
  if (rule['minAccessLevel'] !== undefined) {
    const n = levelOrError(rule['minAccessLevel']);
    if (typeof n === 'string') return `${n}; use ${LEVELS_HELP}`;
    min = n;
    level = `>=${levelName(n)}`;
  }
  let subgroups = true;
  if (rule['includeSubgroups'] !== undefined) {
    if (typeof rule['includeSubgroups'] !== 'boolean') return 'includeSubgroups must be true or false';
    subgroups = rule['includeSubgroups'];
  }
  const exact = subgroups ? '' : '-exact';
  switch (kind) {
    case 'group': {
      const path = rulePath(rule['group'], 'group');
      if (typeof path === 'string') return path;
      const display = (rule['group'] as string).trim();
      return { kind, text: `group${exact}:${display}${level}`, display, path, min, subgroups };
    }
    case 'project': {
      const path = rulePath(rule['project'], 'project');
      if (typeof path === 'string') return path;
      const display = (rule['project'] as string).trim();
      return { kind, text: `project:${display}${level}`, display, path, min };
    }
    case 'groupId': {
      const id = ruleId(rule['groupId'], 'groupId');
      if (typeof id === 'string') return id;
      return { kind: 'group-id', text: `group-id${exact}:${id}${level}`, id, min, subgroups };
    }
    case 'projectId': {
      const id = ruleId(rule['projectId'], 'projectId');
      if (typeof id === 'string') return id;
      return { kind: 'project-id', text: `project-id:${id}${level}`, id, min };
    }
    case 'user': {
      const value = rule['user'];
      const name = typeof value === 'string' ? value.trim().replace(/^@/, '') : '';
      if (!USERNAME.test(name) || name.length > 255) return `${quote(value)} is not a GitLab username`;
      return { kind: 'user', text: `user:${name}`, username: asciiLower(name) };
    }
    default: {
      const domain = ruleDomain(rule['emailDomain']);
      if (typeof domain === 'string') return domain;
      const text = `email:${domain.subdomains ? '.' : '@'}${domain.domain}`;
      return { kind: 'email', text, ...domain };
    }
  }
}

/** Parses one rule string; a string result is the problem (without the accepted forms). */
function parseRuleOrError(text: string): Rule | string {
  const token = text.trim();
  const colon = token.indexOf(':');
  if (colon <= 0) return `${quote(text)} is not a rule`;
  const kind = token.slice(0, colon).trim().toLowerCase();
  let target = token.slice(colon + 1).trim();
  let level: string | undefined;
  const at = target.indexOf('>=');
  if (at >= 0) {
    level = target.slice(at + 2).trim();
    target = target.slice(0, at).trim();
    if (level === '') return `${quote(text)} has >= without a level`;
  }
  if (/[<>=!]/.test(target) || (level !== undefined && /[<>=!]/.test(level))) {
    return `${quote(text)}: only >= LEVEL is supported as a comparison`;
  }
  if (target === '') return `${quote(text)} names nothing after ${quote(`${kind}:`)}`;
  const withLevel = <T extends object>(rule: T): T | string => {
    if (level === undefined) return rule;
    const n = levelOrError(level);
    if (typeof n === 'string') return `${quote(text)}: ${n}`;
    return { ...rule, minAccessLevel: levelName(n) as AccessLevelName };
  };
  const id = (): number | string =>
    /^[1-9][0-9]*$/.test(target) && Number.isSafeInteger(Number(target))
      ? Number(target)
      : `${quote(text)}: ${quote(target)} is not a numeric id`;
  let rule: Rule | string;
  switch (kind) {
    case 'group':
    case 'group-exact': {
      const exact: Partial<GroupRule> = kind === 'group-exact' ? { includeSubgroups: false } : {};
      rule = withLevel<GroupRule>({ group: target, ...exact });
      break;
    }
    case 'group-id':
    case 'group-id-exact': {
      const n = id();
      if (typeof n === 'string') return n;
      const exact: Partial<GroupIdRule> = kind === 'group-id-exact' ? { includeSubgroups: false } : {};
      rule = withLevel<GroupIdRule>({ groupId: n, ...exact });
      break;
    }
    case 'project':
      rule = withLevel<ProjectRule>({ project: target });
      break;
    case 'project-id': {
      const n = id();
      if (typeof n === 'string') return n;
      rule = withLevel<ProjectIdRule>({ projectId: n });
      break;
    }
    case 'user':
    case 'email':
      if (level !== undefined) return `${quote(text)}: ${kind} rules take no access level`;
      rule = kind === 'user' ? { user: target } : { emailDomain: target };
      break;
    default:
      return `${quote(text)} has an unknown kind ${quote(kind)}`;
  }
  if (typeof rule === 'string') return rule;
  // The same checks as for rule objects, so both ways of writing a rule accept the same things.
  const checked = compileObject(rule);
  return typeof checked === 'string' ? `${quote(text)}: ${checked}` : rule;
}

/**
 * Parses one rule in the `LABGATE_ALLOW` grammar: `group:PATH`, `group:PATH>=LEVEL` (subgroups
 * included), `group-exact:PATH[>=LEVEL]` (the group itself only), `group-id:ID[>=LEVEL]`,
 * `group-id-exact:ID[>=LEVEL]`, `project:PATH[>=LEVEL]`, `project-id:ID[>=LEVEL]`, `email:@DOMAIN`
 * (or `email:DOMAIN`), `email:.DOMAIN` (subdomains), `user:USERNAME`. LEVEL is a GitLab level name
 * (case-insensitive) or number; it is returned as a name. Whitespace around the parts is ignored.
 * Throws a `TypeError` naming the token and the accepted forms.
 *
 * @example
 * ```ts
 * parseRule('group:acme/platform>=30'); // { group: 'acme/platform', minAccessLevel: 'developer' }
 * parseRule('email:@acme.com'); // { emailDomain: 'acme.com' }
 * ```
 */
export function parseRule(text: string): Rule {
  return parseRuleIn(text, 'rule');
}

function parseRuleIn(text: unknown, where: string): Rule {
  if (typeof text !== 'string') throw new TypeError(`labgate: ${where}: a rule must be a string`);
  const rule = parseRuleOrError(text);
  if (typeof rule === 'string') throw new TypeError(`labgate: ${where}: ${rule}; accepted: ${RULE_FORMS}`);
  if ('emailDomain' in rule) {
    // Stored without the '@' so formatRule and the object form agree.
    const domain = ruleDomain(rule.emailDomain) as { domain: string; subdomains: boolean };
    return { emailDomain: domain.subdomains ? `.${domain.domain}` : domain.domain };
  }
  if ('user' in rule) return { user: rule.user.replace(/^@/, '') };
  return rule;
}

function compileInput(input: unknown): Compiled | string {
  if (typeof input === 'string') {
    const rule = parseRuleOrError(input);
    return typeof rule === 'string' ? rule : compileObject(rule);
  }
  return compileObject(input);
}

/**
 * The textual form of a rule, in the grammar {@link parseRule} reads (for messages and logs):
 * `parseRule(formatRule(rule))` gives the rule back with levels as names. Never throws: a malformed
 * rule gives `(invalid rule)`.
 *
 * @example
 * ```ts
 * formatRule({ group: 'acme/platform', minAccessLevel: 40 }); // 'group:acme/platform>=maintainer'
 * formatRule({ group: 'acme', includeSubgroups: false }); // 'group-exact:acme'
 * ```
 */
export function formatRule(rule: Rule): string {
  try {
    const compiled = compileObject(rule);
    return typeof compiled === 'string' ? '(invalid rule)' : compiled.text;
  } catch {
    return '(invalid rule)';
  }
}

// ─── Policies ───────────────────────────────────────────────────────────────────────────────────

interface CompiledPolicy {
  allow: Compiled[];
  require: Requirement[];
  roles: [string, Compiled[]][];
}

function compileRoleValue(value: unknown): Compiled[] | string {
  const items: unknown[] =
    typeof value === 'string' ? value.split('|') : Array.isArray(value) ? value : [value];
  if (items.length === 0) return 'a role needs at least one rule';
  const rules: Compiled[] = [];
  for (const item of items) {
    const rule = compileInput(item);
    if (typeof rule === 'string') return rule;
    rules.push(rule);
  }
  return rules;
}

function compilePolicy(policy: unknown): CompiledPolicy | string {
  if (!isRecord(policy)) return 'a policy must be an object';
  const unknownKeys = Object.keys(policy).filter(
    (k) => policy[k] !== undefined && !['allow', 'require', 'roles'].includes(k),
  );
  if (unknownKeys.length > 0) return `a policy has no ${unknownKeys.map((k) => quote(k)).join(', ')}`;
  const allow: Compiled[] = [];
  if (policy['allow'] !== undefined) {
    if (!Array.isArray(policy['allow'])) return 'allow must be an array of rules';
    for (const item of policy['allow']) {
      const rule = compileInput(item);
      if (typeof rule === 'string') return `allow: ${rule}`;
      allow.push(rule);
    }
  }
  let require: Requirement[] = ['active'];
  if (policy['require'] !== undefined) {
    if (!Array.isArray(policy['require'])) return 'require must be an array of requirements';
    const bad = policy['require'].find((r) => !REQUIREMENTS.includes(r as Requirement));
    if (bad !== undefined) {
      return `require: unknown requirement ${quote(bad)}; accepted: ${REQUIREMENTS.join(', ')}`;
    }
    require = [...new Set(policy['require'] as Requirement[])];
  }
  const roles: [string, Compiled[]][] = [];
  if (policy['roles'] !== undefined) {
    const value = policy['roles'];
    if (!isRecord(value)) return 'roles must be an object of role name to rules';
    for (const name of Object.keys(value).sort()) {
      if (!ROLE_NAME.test(name)) {
        return `roles: ${quote(name)} is not a role name (letters, digits, _ . : -, at most 64)`;
      }
      const rules = compileRoleValue(value[name]);
      if (typeof rules === 'string') return `roles: ${name}: ${rules}`;
      roles.push([name, rules]);
    }
  }
  return { allow, require, roles };
}

/**
 * Checks a policy written in code and returns it with strings parsed and defaults applied. Throws a
 * `TypeError` on anything malformed (an unknown requirement, a rule with a misspelt key, a bad
 * path), so a bad policy stops the app at startup instead of being half-applied.
 *
 * @example
 * ```ts
 * normalisePolicy({ allow: ['group:acme>=developer'] });
 * // { allow: [{ group: 'acme', minAccessLevel: 'developer' }], require: ['active'], roles: {} }
 * ```
 */
export function normalisePolicy(policy: Policy): NormalisedPolicy {
  const compiled = compilePolicy(policy);
  if (typeof compiled === 'string') throw new TypeError(`labgate: policy: ${compiled}`);
  const toRule = (item: Rule | string, where: string): Rule =>
    typeof item === 'string' ? parseRuleIn(item, where) : item;
  const allow = (policy.allow ?? []).map((item) => toRule(item, 'allow'));
  const roles: Record<string, Rule[]> = {};
  for (const [name] of compiled.roles) {
    const value = policy.roles![name]!;
    const items = typeof value === 'string' ? value.split('|') : Array.isArray(value) ? value : [value];
    roles[name] = items.map((item: Rule | string) => toRule(item, `roles: ${name}`));
  }
  return { allow, require: compiled.require, roles };
}

function splitList(value: string, separator: string, where: string): string[] {
  const items = value.split(separator).map((item) => item.trim());
  if (items.some((item) => item === '')) {
    throw new TypeError(`labgate: ${where}: empty entry in ${quote(value)} (a stray ${quote(separator)}?)`);
  }
  return items;
}

/**
 * Reads the policy from its environment strings:
 *
 * - `allow` (`LABGATE_ALLOW`): comma-separated rules, any one suffices, in the grammar of
 *   {@link parseRule}: `group:acme/platform>=developer,user:alice,email:@acme.com`.
 * - `require` (`LABGATE_REQUIRE`): comma-separated {@link Requirement}s (case-insensitive), or `none`.
 * - `roles`: `NAME=RULE|RULE;NAME=RULE`, e.g. `admin=group:acme/platform>=maintainer;editor=project:acme/app>=developer`.
 *
 * Empty or blank strings count as unset (defaults apply). Anything else malformed, including an
 * empty entry such as a trailing comma, throws a `TypeError` naming the bad token and the accepted forms.
 *
 * @example
 * ```ts
 * parsePolicy({ allow: 'group:acme/platform>=developer, user:alice', require: 'active,2fa' });
 * // { allow: [{ group: 'acme/platform', minAccessLevel: 'developer' }, { user: 'alice' }], require: ['active', '2fa'] }
 * ```
 */
export function parsePolicy(env: { allow?: string; require?: string; roles?: string }): Policy {
  if (!isRecord(env)) throw new TypeError('labgate: parsePolicy takes { allow?, require?, roles? } strings');
  const policy: { allow?: Rule[]; require?: Requirement[]; roles?: Record<string, Rule[]> } = {};
  const present = (key: 'allow' | 'require' | 'roles'): string | undefined => {
    const value = env[key];
    if (value === undefined) return undefined;
    if (typeof value !== 'string') throw new TypeError(`labgate: parsePolicy: ${key} must be a string`);
    return value.trim() === '' ? undefined : value;
  };
  const allow = present('allow');
  if (allow !== undefined) {
    policy.allow = splitList(allow, ',', 'LABGATE_ALLOW').map((item) => parseRuleIn(item, 'LABGATE_ALLOW'));
  }
  const require = present('require');
  if (require !== undefined) {
    const items = splitList(require, ',', 'LABGATE_REQUIRE').map((item) => item.toLowerCase());
    if (items.includes('none')) {
      if (items.length > 1)
        throw new TypeError('labgate: LABGATE_REQUIRE: none cannot be combined with others');
      policy.require = [];
    } else {
      for (const item of items) {
        if (!REQUIREMENTS.includes(item as Requirement)) {
          throw new TypeError(
            `labgate: LABGATE_REQUIRE: unknown requirement ${quote(item)}; accepted: ${REQUIREMENTS.join(', ')} or none`,
          );
        }
      }
      policy.require = [...new Set(items as Requirement[])];
    }
  }
  const roles = present('roles');
  if (roles !== undefined) {
    const result: Record<string, Rule[]> = {};
    for (const entry of splitList(roles, ';', 'roles')) {
      const eq = entry.indexOf('=');
      const name = eq > 0 ? entry.slice(0, eq).trim() : '';
      if (!ROLE_NAME.test(name)) {
        throw new TypeError(
          `labgate: roles: ${quote(entry)} is not NAME=RULE[|RULE…] (NAME of letters, digits, _ . : -); ` +
            `e.g. admin=group:acme/platform>=maintainer;editor=project:acme/app>=developer`,
        );
      }
      if (Object.hasOwn(result, name))
        throw new TypeError(`labgate: roles: role ${quote(name)} is given twice`);
      result[name] = splitList(entry.slice(eq + 1), '|', `roles: ${name}`).map((item) =>
        parseRuleIn(item, `roles: ${name}`),
      );
    }
    policy.roles = result;
  }
  return policy;
}

/**
 * Whether deciding on this policy needs the user's group or project memberships: any group,
 * project, group-id or project-id rule in `allow` or in `roles`. Throws a `TypeError` on a
 * malformed policy.
 *
 * @example
 * ```ts
 * needsMemberships({ allow: ['user:alice'] }); // false
 * needsMemberships({ roles: { admin: 'group:acme' } }); // true
 * ```
 */
export function needsMemberships(policy: Policy): boolean {
  const compiled = compileOrThrow(policy);
  return [...compiled.allow, ...compiled.roles.flatMap(([, rules]) => rules)].some(isMembershipRule);
}

/**
 * The OAuth scopes the I/O layer must request for this policy: `openid` always; `email` for
 * email-domain rules and `confirmed-email` (so the claim is the verified primary email);
 * `read_api` for rules GitLab's `groups` claim cannot answer (a group rule with a level, and every
 * project, group-id and project-id rule: the claim has paths only, no levels or ids); otherwise
 * `read_user` when a requirement reads `/api/v4/user` (`active`, `2fa`, `human`, `internal`, so
 * also for the default `['active']`), since unknown facts fail closed. Throws a `TypeError` on a
 * malformed policy.
 *
 * @example
 * ```ts
 * scopesForPolicy({ allow: ['group:acme>=developer'] }); // ['openid', 'read_api']
 * scopesForPolicy({ allow: ['email:@acme.com'], require: [] }); // ['openid', 'email']
 * ```
 */
export function scopesForPolicy(policy: Policy): string[] {
  const compiled = compileOrThrow(policy);
  const rules = [...compiled.allow, ...compiled.roles.flatMap(([, r]) => r)];
  const scopes = ['openid'];
  if (rules.some((r) => r.kind === 'email') || compiled.require.includes('confirmed-email')) {
    scopes.push('email');
  }
  const api = rules.some(
    (r) =>
      r.kind === 'project' ||
      r.kind === 'project-id' ||
      r.kind === 'group-id' ||
      (r.kind === 'group' && r.min !== DEFAULT_MIN_LEVEL),
  );
  if (api) scopes.push('read_api');
  else if (compiled.require.some((r) => r !== 'confirmed-email')) scopes.push('read_user');
  return scopes;
}

function compileOrThrow(policy: Policy): CompiledPolicy {
  const compiled = compilePolicy(policy);
  if (typeof compiled === 'string') throw new TypeError(`labgate: policy: ${compiled}`);
  return compiled;
}

// ─── The decision ───────────────────────────────────────────────────────────────────────────────

interface Membership {
  id: number | null;
  path: string[];
  display: string;
  level: number;
  expiresAt: unknown;
}

/** Memberships with a readable path and level; anything else is dropped (it can only deny). */
function memberships(list: unknown): Membership[] | null {
  if (!Array.isArray(list)) return null;
  const result: Membership[] = [];
  for (const item of list) {
    if (!isRecord(item)) continue;
    const { fullPath, accessLevel, id } = item;
    if (typeof fullPath !== 'string' || fullPath.length === 0 || fullPath.length > MAX_PATH) continue;
    const path = fullPath.split('/');
    if (path.some((s) => s === '' || /\s/.test(s))) continue;
    if (typeof accessLevel !== 'number' || !Number.isFinite(accessLevel)) continue;
    result.push({
      id: typeof id === 'number' && Number.isSafeInteger(id) ? id : null,
      path: path.map(asciiLower),
      display: fullPath,
      level: accessLevel,
      expiresAt: item['expiresAt'],
    });
  }
  return result;
}

/** True when `path` is `base` or (with subgroups) below it, on whole segments. */
function within(base: string[], path: string[], subgroups: boolean): boolean {
  if (path.length < base.length || (!subgroups && path.length !== base.length)) return false;
  return base.every((segment, i) => path[i] === segment);
}

/** `live`: counts now; otherwise why not. */
function liveness(m: Membership, now: number | undefined): 'live' | 'expired' | 'no-clock' {
  if (m.expiresAt === undefined || m.expiresAt === null) return 'live';
  if (now === undefined) return 'no-clock';
  // A date-only `expires_at` (GitLab's format) parses as 00:00 UTC; unparseable counts as expired.
  const at = typeof m.expiresAt === 'string' ? Date.parse(m.expiresAt) : Number.NaN;
  return Number.isFinite(at) && at > now ? 'live' : 'expired';
}

interface Match {
  matched: boolean;
  /** For a match: what matched (`member of acme/platform with developer (≥ reporter)`); else why not. */
  why: string;
}

interface World {
  user: Record<string, unknown>;
  groups: Membership[] | null;
  projects: Membership[] | null;
  now: number | undefined;
}

/** Where a membership that matched sits, named by the rule's own path or id and what is below it. */
function describe(rule: Compiled & { kind: MembershipKind }, m: Membership): string {
  switch (rule.kind) {
    case 'group':
      return m.path.length > rule.path.length ? `${m.display}, a subgroup of ${rule.display},` : m.display;
    case 'project':
      return `project ${m.display}`;
    case 'group-id':
      return m.id === rule.id
        ? `group ${rule.id} (${m.display})`
        : `${m.display}, a subgroup of group ${rule.id},`;
    case 'project-id':
      return `project ${rule.id} (${m.display})`;
  }
}

function matchMembership(rule: Compiled & { kind: MembershipKind }, world: World): Match {
  const list = rule.kind === 'group' || rule.kind === 'group-id' ? world.groups : world.projects;
  if (list === null) return { matched: false, why: 'memberships could not be read' };
  let candidates: Membership[];
  switch (rule.kind) {
    case 'group':
      candidates = list.filter((m) => within(rule.path, m.path, rule.subgroups));
      break;
    case 'project':
      candidates = list.filter((m) => within(rule.path, m.path, false));
      break;
    default: {
      const own = list.filter((m) => m.id === rule.id);
      // Facts that disagree on the path of one id are not trusted to find its subgroups.
      if (new Set(own.map((m) => m.path.join('/'))).size > 1) {
        return { matched: false, why: `conflicting paths for ${rule.kind} ${rule.id}` };
      }
      candidates = own;
      if (rule.kind === 'group-id' && rule.subgroups && own.length > 0) {
        const base = own[0]!.path;
        candidates = [
          ...own,
          ...list.filter((m) => m.path.length > base.length && within(base, m.path, true)),
        ];
      }
    }
  }
  if (candidates.length === 0) return { matched: false, why: 'no membership' };
  const states = candidates.map((m) => ({ m, state: liveness(m, world.now) }));
  const live = states.filter((s) => s.state === 'live').map((s) => s.m);
  const passing = live.filter((m) => m.level >= rule.min).sort((a, b) => b.level - a.level);
  const best = passing[0];
  if (best) {
    return {
      matched: true,
      why: `member of ${describe(rule, best)} with ${levelName(best.level)} (≥ ${levelName(rule.min)})`,
    };
  }
  if (live.length === 0) {
    return {
      matched: false,
      why: states.some((s) => s.state === 'no-clock')
        ? 'membership has an expiry date and no clock was given'
        : 'membership expired',
    };
  }
  const highest = Math.max(...live.map((m) => m.level));
  return { matched: false, why: `highest level ${levelName(highest)}, below ${levelName(rule.min)}` };
}

function matchRule(rule: Compiled, world: World): Match {
  const { user } = world;
  switch (rule.kind) {
    case 'user': {
      const name = user['username'];
      return typeof name === 'string' && asciiLower(name) === rule.username
        ? { matched: true, why: `username ${rule.username}` }
        : { matched: false, why: 'another username' };
    }
    case 'email': {
      if (user['emailVerified'] !== true) return { matched: false, why: 'email not verified' };
      const email = user['email'];
      const at = typeof email === 'string' ? email.lastIndexOf('@') : -1;
      if (typeof email !== 'string' || at <= 0) return { matched: false, why: 'no email' };
      const domain = asciiLower(email.slice(at + 1));
      const labels = domain.split('.');
      const ok =
        labels.every((l) => LABEL.test(l)) &&
        (rule.subdomains ? domain.endsWith(`.${rule.domain}`) : domain === rule.domain);
      return ok
        ? { matched: true, why: `verified email in ${rule.subdomains ? '.' : ''}${rule.domain}` }
        : { matched: false, why: 'email in another domain' };
    }
    default:
      return matchMembership(rule, world);
  }
}

const UNKNOWN = 'unknown, fails closed; reading it needs the read_user or read_api scope';

function checkRequirement(requirement: Requirement, user: Record<string, unknown>): string | null {
  switch (requirement) {
    case 'active': {
      const state = user['state'];
      if (state === 'active') return null;
      return typeof state === 'string' && state !== ''
        ? `account state is ${quote(state)}`
        : `account state ${UNKNOWN}`;
    }
    case '2fa': {
      const on = user['twoFactorEnabled'];
      if (on === true) return null;
      return on === false ? 'two-factor authentication is off' : `two-factor authentication ${UNKNOWN}`;
    }
    case 'confirmed-email':
      if (user['emailVerified'] !== true) return 'email not verified';
      return user['confirmed'] === false ? 'account email not confirmed' : null;
    case 'human': {
      const bot = user['bot'];
      if (bot === false) return null;
      return bot === true ? 'account is a bot' : `bot flag ${UNKNOWN}`;
    }
    case 'internal': {
      const external = user['external'];
      if (external === false) return null;
      return external === true ? 'account is external' : `external flag ${UNKNOWN}`;
    }
  }
}

function deny(failed: AccessFailure, reasons: string[]): Decision {
  return { allowed: false, roles: [], reasons, failed };
}

/**
 * Decides whether a user may sign in, and with which roles, from a policy and the facts the I/O
 * layer read. Pure and total: it never throws, and malformed input denies.
 *
 * Order: every requirement must hold (unknown facts fail); then, when `allow` has rules, one must
 * match. A group rule matches an effective membership of the group or (unless
 * `includeSubgroups: false`) of a subgroup, compared on whole paths case-insensitively, at or above
 * `minAccessLevel` (default `guest`), not expired at `now`. When `facts.complete` is false, rules on
 * memberships deny rather than guess ("GitLab memberships could not be read"); user and email rules
 * still work. Roles are granted to allowed users whose facts match any of the role's rules.
 *
 * @example
 * ```ts
 * const decision = evaluateAccess(
 *   { allow: ['group:acme/platform>=reporter'], roles: { admin: 'group:acme/platform>=maintainer' } },
 *   { user, groups: [{ fullPath: 'acme/platform', accessLevel: 30 }], projects: [], now: Date.now() },
 * );
 * // { allowed: true, roles: [], reasons: [..., 'allowed: member of acme/platform with developer (≥ reporter)'] }
 * ```
 */
export function evaluateAccess(policy: Policy, facts: AccessFacts): Decision {
  let compiled: CompiledPolicy | string;
  try {
    compiled = compilePolicy(policy);
  } catch {
    compiled = 'the policy could not be read';
  }
  if (typeof compiled === 'string') return deny('invalid-policy', [`denied: invalid policy (${compiled})`]);
  try {
    return decide(compiled, facts);
  } catch {
    // Only reachable through hostile objects (throwing getters, proxies): deny rather than throw.
    return deny('invalid-facts', ['denied: the facts could not be read']);
  }
}

function decide(policy: CompiledPolicy, facts: unknown): Decision {
  if (!isRecord(facts) || !isRecord(facts['user'])) {
    return deny('invalid-facts', ['denied: no facts about the user']);
  }
  const user = facts['user'];
  const now = typeof facts['now'] === 'number' && Number.isFinite(facts['now']) ? facts['now'] : undefined;
  const incomplete = facts['complete'] === false;
  const world: World = {
    user,
    groups: incomplete ? null : memberships(facts['groups']),
    projects: incomplete ? null : memberships(facts['projects']),
    now,
  };
  const reasons: string[] = [];

  let failed: Requirement | undefined;
  for (const requirement of policy.require) {
    const problem = checkRequirement(requirement, user);
    if (problem === null) reasons.push(`requirement ${requirement}: met`);
    else {
      reasons.push(`denied: requires ${requirement} (${problem})`);
      failed ??= requirement;
    }
  }
  if (failed !== undefined) return deny(failed, reasons);

  const unreadable = (rule: Compiled): boolean =>
    isMembershipRule(rule) &&
    (rule.kind === 'group' || rule.kind === 'group-id' ? world.groups === null : world.projects === null);

  if (policy.allow.length === 0) {
    reasons.push('allowed: no allow rules (everyone with a GitLab account)');
  } else if (policy.allow.some(unreadable)) {
    // Fail closed as a whole, even if a user or email rule would match: the facts are suspect.
    reasons.push('denied: GitLab memberships could not be read');
    return deny('memberships-unavailable', reasons);
  } else {
    let allowed = false;
    for (const rule of policy.allow) {
      const match = matchRule(rule, world);
      if (match.matched) {
        reasons.push(`allowed: ${match.why}`);
        allowed = true;
        break;
      }
      reasons.push(`rule ${rule.text}: no match (${match.why})`);
    }
    if (!allowed) {
      reasons.push('denied: no rule matched');
      return deny('no-rule-matched', reasons);
    }
  }

  const roles: string[] = [];
  for (const [name, rules] of policy.roles) {
    let granted: Match | undefined;
    let skipped = false;
    for (const rule of rules) {
      if (unreadable(rule)) {
        skipped = true;
        continue;
      }
      const match = matchRule(rule, world);
      if (match.matched) {
        granted = match;
        break;
      }
    }
    if (granted) {
      roles.push(name);
      reasons.push(`role ${name}: ${granted.why}`);
    } else {
      reasons.push(
        `role ${name}: not granted (${skipped ? 'GitLab memberships could not be read' : 'no rule matched'})`,
      );
    }
  }
  return { allowed: true, roles, reasons };
}

const FAILURE_TEXT: Record<AccessFailure, string> = {
  active: 'Your GitLab account is not active.',
  '2fa': 'This requires two-factor authentication on your GitLab account.',
  'confirmed-email': 'This requires a verified email address on your GitLab account.',
  human: 'Bot accounts are not admitted.',
  internal: 'External GitLab users are not admitted.',
  'no-rule-matched': 'Your GitLab account lacks the group or project membership this requires.',
  'memberships-unavailable': 'Your GitLab memberships could not be read right now. Try again in a moment.',
  'invalid-policy': 'The access rules could not be applied.',
  'invalid-facts': 'The access rules could not be applied.',
};

/**
 * A sentence for the person refused: which requirement failed, never the user's other groups.
 * @example
 * ```ts
 * accessFailureText('2fa'); // 'This requires two-factor authentication on your GitLab account.'
 * ```
 */
export function accessFailureText(failed: AccessFailure | undefined): string {
  return FAILURE_TEXT[failed ?? 'no-rule-matched'];
}
