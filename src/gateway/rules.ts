/**
 * The gateway's path rules, compiled once at start-up: per-route access rules (longest prefix wins),
 * requests that need no sign-in (oauth2-proxy's `skip_auth_routes`, and `--skip` prefixes), API routes
 * that get 401 instead of a redirect, and the per-request constraints of `/oauth2/auth`'s query. All
 * of them match the one normalised path of docs/security.md, GATEWAY-3 (see `normaliseTarget`).
 */
import { normalisePolicy, type Policy } from '../core/access.js';
import { isUnderPrefix } from './paths.js';

/** A per-route rule: requests whose normalised path starts with `prefix` (whole segments) need one of `allow`. */
export interface RouteRule {
  /** `/admin` matches `/admin` and `/admin/…`, not `/administrator`. The longest prefix wins. */
  prefix: string;
  /** Rules in the `LABGATE_ALLOW` grammar, any one suffices (`group:acme/platform>=maintainer`). */
  allow: string[];
}

/**
 * A route that needs no sign-in, in oauth2-proxy's `skip_auth_routes` syntax: `METHOD=regex`,
 * `METHOD!=regex`, `regex` or `!=regex`, matched against the path only (query and fragment stripped),
 * unanchored as Go's `regexp.MatchString` is. `!=` negates the path match, as oauth2-proxy's
 * `isAllowedPath` does: `GET!=^/api/` skips every GET whose path does not match `^/api/`.
 */
export interface SkipRule {
  /** Upper-case method, or null for any method. */
  method: string | null;
  /** `!=`: the rule matches requests (of `method`, or any method) whose path does NOT match `pattern`. */
  negate: boolean;
  /** The regular expression's source, as written. */
  pattern: string;
}

/** The rules a gateway decides paths by (the parts of its configuration that name paths). */
export interface RuleSet {
  routes: RouteRule[];
  skipRoutes: SkipRule[];
  skipPrefixes: string[];
  apiRoutes: string[];
}

/** The path rules of a gateway, ready to ask; see {@link compileRules}. */
export interface CompiledRules {
  /** The route rule whose prefix covers `path` on whole segments, the longest one; null if none. */
  routeFor(path: string): RouteRule | null;
  /** Whether a request needs no sign-in: a `skip_auth_routes` rule or a skip prefix matches. */
  skips(method: string, path: string): boolean;
  /** Whether `path` is an API route (`api_routes`): 401, never a redirect to sign in. */
  isApi(path: string): boolean;
}

interface CompiledSkip {
  method: string | null;
  negate: boolean;
  regex: RegExp;
}

/**
 * Compiles a regular expression written for Go's RE2 (oauth2-proxy's syntax) into a JavaScript one
 * with the same meaning, or throws a `TypeError` naming it. A leading `(?i)` becomes the `i` flag and
 * `(?P<name>` a named group; other inline flags have no JavaScript equivalent and are refused. The
 * `u` flag makes JavaScript refuse, rather than silently misread, RE2 escapes it lacks (`\z`, `\Q`).
 */
function compileGoRegex(source: string, where: string): RegExp {
  const fail = (why: string): never => {
    throw new TypeError(`labgate: ${where} ${JSON.stringify(source)} ${why}`);
  };
  let body = source;
  let flags = 'u';
  if (body.startsWith('(?i)')) {
    body = body.slice(4);
    flags += 'i';
  }
  let out = '';
  let inClass = false;
  for (let i = 0; i < body.length; i++) {
    const c = body[i]!;
    if (c === '\\') {
      out += body.slice(i, i + 2);
      i++;
    } else if (inClass) {
      if (c === ']') inClass = false;
      out += c;
    } else if (c === '[') {
      inClass = true;
      out += c;
    } else if (body.startsWith('(?P<', i)) {
      out += '(?<';
      i += 3;
    } else if (/^\(\?[a-zA-Z-]+[):]/.test(body.slice(i))) {
      fail('uses an inline flag group: only a leading (?i) is supported');
    } else {
      out += c;
    }
  }
  try {
    return new RegExp(out, flags);
  } catch (error) {
    return fail(`is not a valid regular expression (${(error as Error).message})`);
  }
}

/**
 * Compiles the route, skip and API rules of a configuration once. Regular expressions are matched
 * unanchored against the normalised path, as Go's `MatchString` does in oauth2-proxy (write `^/public/`
 * to anchor). Throws a `TypeError` naming an invalid regular expression.
 *
 * `skips` follows oauth2-proxy's `buildRoutesAllowlist` and `isAllowedRoute`: a rule applies to its
 * method (any method when it has none) and matches when its regular expression matches the path, or,
 * with `!=`, when it does **not** match (`GET!=^/api/` skips every GET outside `/api/`; `!=^/private/`
 * skips every request outside `/private/`). Skip prefixes match on whole segments. Methods are compared
 * upper-case; paths case-sensitively.
 *
 * @example
 * ```ts
 * const rules = compileRules({
 *   routes: [{ prefix: '/admin', allow: ['group:acme/platform>=maintainer'] }],
 *   skipRoutes: [{ method: 'GET', negate: false, pattern: '^/public/' }],
 *   skipPrefixes: ['/healthz'],
 *   apiRoutes: ['^/api/'],
 * });
 * rules.routeFor('/admin/users')?.prefix; // '/admin'
 * rules.skips('GET', '/public/logo.png'); // true
 * rules.isApi('/api/v1/items'); // true
 * ```
 */
export function compileRules(config: RuleSet): CompiledRules {
  // Longest prefix first; equal prefixes keep their configured order.
  const routes = [...config.routes].sort(
    (a, b) => b.prefix.replace(/\/+$/, '').length - a.prefix.replace(/\/+$/, '').length,
  );
  const skipRoutes: CompiledSkip[] = config.skipRoutes.map((rule) => ({
    method: rule.method === null ? null : rule.method.toUpperCase(),
    negate: rule.negate,
    regex: compileGoRegex(rule.pattern, 'skip_auth_routes:'),
  }));
  const skipPrefixes = [...config.skipPrefixes];
  const apiRoutes = config.apiRoutes.map((pattern) => compileGoRegex(pattern, 'api_routes:'));
  return {
    routeFor: (path) => routes.find((route) => isUnderPrefix(path, route.prefix)) ?? null,
    skips: (method, path) => {
      const upper = method.toUpperCase();
      return (
        skipRoutes.some(
          (rule) => (rule.method === null || rule.method === upper) && rule.regex.test(path) !== rule.negate,
        ) || skipPrefixes.some((prefix) => isUnderPrefix(path, prefix))
      );
    },
    isApi: (path) => apiRoutes.some((regex) => regex.test(path)),
  };
}

/**
 * The access constraints a `/oauth2/auth` query adds for one protected location, on top of the
 * app-wide policy: every policy must pass (each with any one of its rules), and the verified email
 * must be one of `emails` unless that is null. A failure is answered 403 (reference: oauth2-proxy's
 * `AuthOnly`, which uses 403 here to avoid redirect loops in sub-request setups).
 */
export interface QueryConstraints {
  policies: Policy[];
  /** Lower-cased emails of `allowed_emails`, or null when the query names none. */
  emails: string[] | null;
}

// Each rule may cost GitLab API calls, and the query can come from anyone who reaches the gateway.
const MAX_RULES = 100;

function entries(params: URLSearchParams, key: string): string[] {
  return params
    .getAll(key)
    .flatMap((value) => value.split(','))
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '');
}

/**
 * Reads the per-location constraints of a `/oauth2/auth` query (docs/security.md, GATEWAY-5), as
 * oauth2-proxy's `allowed_groups`, `allowed_email_domains` and `allowed_emails` (comma lists; repeated
 * keys merge; empty entries are ignored) plus labgate's `allow` (rules in the `LABGATE_ALLOW` grammar):
 *
 * - `allowed_groups`: one policy; `acme/team` becomes `group-exact:acme/team` (as oauth2-proxy's
 *   GitLab groups: the group itself, inherited membership included, not members of its subgroups
 *   only), and `project:acme/app` becomes `project:acme/app>=reporter` (oauth2-proxy's default level 20);
 * - `allowed_email_domains`: one policy of `email:@DOMAIN` rules; `.DOMAIN` and `*.DOMAIN` admit the
 *   domain and its subdomains; a `*` entry admits any domain (no policy);
 * - `allow`: one policy with those rules;
 * - `allowed_emails`: `emails`, lower-cased, for the caller to compare with the verified email.
 *
 * Every policy has `require: []`: the app-wide policy already applies its requirements. Returns a
 * `TypeError` (never throws) naming the bad value, for the caller to answer 400; its message contains
 * client input, so log it through `logText`.
 *
 * @example
 * ```ts
 * parsePolicyParams(new URLSearchParams('allowed_groups=acme,project:acme/app&allowed_emails=Ann@Acme.com'));
 * // { policies: [{ allow: [group-exact acme, project acme/app >= reporter], require: [] }], emails: ['ann@acme.com'] }
 * ```
 */
export function parsePolicyParams(params: URLSearchParams): QueryConstraints | TypeError {
  const lists: [string, string[]][] = [];
  const groups = entries(params, 'allowed_groups');
  if (groups.length > 0) {
    lists.push([
      'allowed_groups',
      groups.map((g) => (g.startsWith('project:') ? `${g}>=reporter` : `group-exact:${g}`)),
    ]);
  }
  const domains = entries(params, 'allowed_email_domains');
  if (domains.length > 0 && !domains.includes('*')) {
    lists.push([
      'allowed_email_domains',
      domains.flatMap((d) => {
        const sub = /^\*?\.(.*)$/.exec(d);
        return sub ? [`email:@${sub[1]}`, `email:.${sub[1]}`] : [`email:@${d}`];
      }),
    ]);
  }
  const allow = entries(params, 'allow');
  if (allow.length > 0) lists.push(['allow', allow]);
  const policies: Policy[] = [];
  for (const [key, rules] of lists) {
    if (rules.length > MAX_RULES) return new TypeError(`labgate: ${key}: more than ${MAX_RULES} entries`);
    try {
      policies.push({ allow: normalisePolicy({ allow: rules, require: [] }).allow, require: [] });
    } catch (error) {
      return new TypeError(
        `labgate: ${key}: ${(error as Error).message.replace(/^labgate: (policy: )?(allow: )?/, '')}`,
      );
    }
  }
  const emails = entries(params, 'allowed_emails').map((email) => email.toLowerCase());
  return { policies, emails: emails.length > 0 ? emails : null };
}
