/**
 * The gateway's configuration: read from flags, the environment of README.md's "Configuration"
 * table, and oauth2-proxy's own names where they mean the same (`OAUTH2_PROXY_*` variables and the
 * keys of its TOML config file, already parsed by the command line). Every option is checked at once;
 * an oauth2-proxy option labgate does not support is named, never silently ignored (docs/gateway.md,
 * "Coming from oauth2-proxy").
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import {
  formatRule,
  normalisePolicy,
  parsePolicy,
  parseRule,
  type Requirement,
  type Rule,
  scopesForPolicy,
} from '../core/access.js';
import { fromBase64Url, parseSecrets, toBase64Url } from '../core/crypto.js';
import type { LabgateOptions } from '../core/index.js';
import { logText } from '../core/log.js';
import { isLoopbackHost, optionsFromEnv, parseDuration, resolveOptions } from '../core/options.js';
import { parseRedirectDomains } from '../core/redirects.js';
import { envNameOf, PROXY_OPTIONS, type ProxyOption, TLS } from './oauth2-proxy.js';
import { normaliseTarget } from './paths.js';
import { compileRules, type RouteRule, type SkipRule } from './rules.js';

export type { RouteRule, SkipRule } from './rules.js';

/** A host and port to listen on. */
export interface ListenAddress {
  host: string;
  port: number;
}

/** The signed identity assertion sent to the upstream (docs/gateway.md, "Signed identity"). */
export interface AssertionConfig {
  /** Request header carrying the JWT (default `X-Labgate-Assertion`). */
  header: string;
  /** `aud` of the JWT (default: the upstream's origin). */
  audience: string;
  /** Lifetime in seconds (default 60, at most 300). */
  ttl: number;
}

/** Everything the gateway runs on, resolved and checked. */
export interface GatewayConfig {
  /** Options of the core: credentials, GitLab, public URL, secret, scopes, app-wide policy, re-check interval, cookie name, redirect domains. The prefix is always `/oauth2`. */
  labgate: Omit<LabgateOptions, 'store'>;
  /** `LABGATE_STORE`: `sqlite:PATH`, `postgres://…`, `redis://…` or `memory:`. */
  store: string;
  /** The app behind the gateway (`--upstream`, oauth2-proxy `upstreams`: exactly one http(s) URL). */
  upstream: URL;
  /** Where the gateway listens (`--listen`, oauth2-proxy `http_address`; default 127.0.0.1:4180). */
  listen: ListenAddress;
  /** Where Prometheus metrics are served (`--metrics-address`, oauth2-proxy `metrics_address`), or null. */
  metricsAddress: ListenAddress | null;
  /** Per-route rules (`--route '/admin=group:acme/platform>=maintainer'`), longest prefix first. */
  routes: RouteRule[];
  /** oauth2-proxy `skip_auth_routes`. */
  skipRoutes: SkipRule[];
  /** `--skip /healthz`: path prefixes (whole segments) that need no sign-in. */
  skipPrefixes: string[];
  /** oauth2-proxy `api_routes`: regex sources matched against the path; such requests get 401, never a redirect. */
  apiRoutes: string[];
  /** oauth2-proxy `email_domains`: the verified email's domain must be one of these; null for any (`*`). */
  emailDomains: string[] | null;
  /** oauth2-proxy `reverse_proxy`: honour `X-Forwarded-*` from trusted proxies. */
  reverseProxy: boolean;
  /** oauth2-proxy `trusted_proxy_ips` (CIDRs) allowed to send `X-Forwarded-*`; loopback by default. */
  trustedProxies: string[];
  /** oauth2-proxy `whitelist_domains`: hosts an absolute `rd` may point to. */
  whitelistDomains: string[];
  /** oauth2-proxy `set_xauthrequest`: `X-Auth-Request-*` on `/oauth2/auth` answers. */
  setXAuthRequest: boolean;
  /** oauth2-proxy `pass_access_token`: the GitLab access token upstream (and in `X-Auth-Request-Access-Token`). */
  passAccessToken: boolean;
  /** oauth2-proxy `pass_user_headers` (default true): `X-Forwarded-User`, `-Email`, `-Groups`, `-Preferred-Username`. */
  passUserHeaders: boolean;
  /** oauth2-proxy `prefer_email_to_user`: `X-Forwarded-User` is the email and `-Email` is not sent. */
  preferEmailToUser: boolean;
  /** oauth2-proxy `skip_auth_preflight`: `OPTIONS` requests pass without a session. */
  skipAuthPreflight: boolean;
  /** oauth2-proxy `force_json_errors`: never redirect, always 401 JSON. */
  forceJsonErrors: boolean;
  /** oauth2-proxy `skip_provider_button`: `/oauth2/sign_in` goes straight to GitLab instead of showing its one button. */
  skipProviderButton: boolean;
  /** The signed identity assertion, or null (`--assertion`, `LABGATE_ASSERTION`). */
  assertion: AssertionConfig | null;
  /** Origins a WebSocket upgrade may come from (default: the gateway's public origin). */
  websocketOrigins: string[];
  /** Milliseconds the upstream has to answer (headers) before 504 (default 30 000). */
  upstreamTimeout: number;
  /** Milliseconds a shutdown waits for in-flight requests before closing them (default 10 000). */
  shutdownTimeout: number;
}

/** Where configuration comes from; later sources in this list lose to earlier ones. */
export interface GatewaySources {
  /** Parsed command-line flags (names without `--`, as `node:util` `parseArgs` returns them). */
  flags: Record<string, string | boolean | string[] | undefined>;
  /** The environment (`process.env`). */
  env: Record<string, string | undefined>;
  /** An oauth2-proxy TOML config file, parsed (`--config`). */
  file?: Record<string, unknown> | undefined;
}

/** A resolved configuration, or every error found; warnings either way. */
export type GatewayConfigResult =
  | { ok: true; config: GatewayConfig; warnings: string[] }
  | { ok: false; errors: string[]; warnings: string[] };

/** labgate's own flags, as `node:util` `parseArgs` options. */
const LABGATE_FLAGS = {
  upstream: { type: 'string', multiple: true },
  listen: { type: 'string' },
  'metrics-address': { type: 'string' },
  route: { type: 'string', multiple: true },
  skip: { type: 'string', multiple: true },
  'skip-route': { type: 'string', multiple: true },
  'api-route': { type: 'string', multiple: true },
  assertion: { type: 'boolean' },
  'websocket-origin': { type: 'string', multiple: true },
  'upstream-timeout': { type: 'string' },
  config: { type: 'string' },
} as const;

// Flags whose values may themselves hold commas (rules, regular expressions): one value per flag.
const UNSPLIT_FLAGS = new Set(['route', 'skip', 'skip-route', 'websocket-origin']);

/** A `node:util` `parseArgs` option. */
export interface FlagSpec {
  type: 'string' | 'boolean';
  multiple?: boolean;
}

/**
 * Every flag the gateway reads: labgate's own (`--upstream`, `--route`, …, `--config`) and oauth2-proxy's
 * (`--client-id`, `--gitlab-group`, …; lists repeatable), as `parseArgs` options. oauth2-proxy's boolean
 * flags are strings here, so that `--reverse-proxy=false` parses; see {@link OAUTH2_PROXY_BOOLEAN_FLAGS}.
 *
 * @example
 * ```ts
 * const { values } = parseArgs({ args, options: GATEWAY_FLAGS, strict: true });
 * ```
 */
export const GATEWAY_FLAGS: Readonly<Record<string, FlagSpec>> = (() => {
  const flags: Record<string, FlagSpec> = {};
  for (const spec of Object.values(PROXY_OPTIONS)) {
    if (spec.flag === '') continue;
    flags[spec.flag] = spec.kind === 'list' ? { type: 'string', multiple: true } : { type: 'string' };
  }
  return { ...flags, ...LABGATE_FLAGS };
})();

/**
 * oauth2-proxy's boolean flags. Go's flag package reads a bare `--reverse-proxy` as true and
 * `--reverse-proxy=false` as false; the command line rewrites a bare one to `--reverse-proxy=true`
 * before parsing.
 *
 * @example
 * ```ts
 * const args = argv.map((a) => (OAUTH2_PROXY_BOOLEAN_FLAGS.has(a.slice(2)) ? `${a}=true` : a));
 * ```
 */
export const OAUTH2_PROXY_BOOLEAN_FLAGS: ReadonlySet<string> = new Set(
  Object.values(PROXY_OPTIONS)
    .filter((spec) => spec.kind === 'bool')
    .map((spec) => spec.flag),
);

// Flags the command line reads itself; the configuration ignores them.
const COMMAND_FLAGS = new Set([
  'config',
  'help',
  'config-test',
  'user',
  'url',
  'method',
  'group',
  'project',
  'email',
]);

// ─── Reading values from the three sources ───────────────────────────────────────────────────────

type Level = 'flag' | 'env' | 'file';
const LEVELS: readonly Level[] = ['flag', 'env', 'file'];

/** Names of one option in each source, in the order they are tried within a source. */
interface Names {
  flag?: readonly string[];
  env?: readonly string[];
  file?: readonly string[];
}

/** A value found, with the name the user wrote it under (`--client-id`, `GITLAB_CLIENT_ID`, `client_id (config file)`). */
interface Found {
  level: Level;
  key: string;
  name: string;
  value: unknown;
}

interface Context {
  flags: GatewaySources['flags'];
  env: GatewaySources['env'];
  file: Record<string, unknown>;
  errors: string[];
  warnings: string[];
}

function proxy(key: string): Names {
  const spec = PROXY_OPTIONS[key]!;
  return { flag: spec.flag === '' ? [] : [spec.flag], env: [envNameOf(key)], file: [key] };
}

function names(...all: Names[]): Names {
  const merged: { flag: string[]; env: string[]; file: string[] } = { flag: [], env: [], file: [] };
  for (const one of all) {
    for (const level of LEVELS) {
      for (const name of one[level] ?? []) if (!merged[level].includes(name)) merged[level].push(name);
    }
  }
  return merged;
}

function labelOf(level: Level, key: string): string {
  return level === 'flag' ? `--${key}` : level === 'env' ? key : `${key} (config file)`;
}

function present(level: Level, value: unknown): boolean {
  if (value === undefined || value === null) return false;
  if (level === 'env' && value === '') return false;
  if (Array.isArray(value) && level === 'flag') return value.length > 0;
  return true;
}

/** Everything given for an option at the first source (flags, then environment, then file) that has any. */
function find(ctx: Context, wanted: Names): Found[] {
  for (const level of LEVELS) {
    const found: Found[] = [];
    for (const key of wanted[level] ?? []) {
      const value = level === 'flag' ? ctx.flags[key] : level === 'env' ? ctx.env[key] : ctx.file[key];
      if (present(level, value)) found.push({ level, key, name: labelOf(level, key), value });
    }
    if (found.length > 0) return found;
  }
  return [];
}

/** The one value of a single-valued option; a second name set in the same source is named (never its value). */
function single(ctx: Context, wanted: Names): Found | undefined {
  const [first, ...others] = find(ctx, wanted);
  if (first === undefined) return undefined;
  const differing = others.filter((other) => String(other.value) !== String(first.value));
  if (differing.length > 0) {
    ctx.warnings.push(
      `${first.name} and ${differing.map((o) => o.name).join(', ')} are both set; ${first.name} is used`,
    );
  }
  return first;
}

/** Text for a message: control characters escaped, length bounded, quoted. */
function show(value: unknown): string {
  return `"${logText(typeof value === 'string' ? value : JSON.stringify(value), 120)}"`;
}

function asText(ctx: Context, found: Found): string | undefined {
  const value = Array.isArray(found.value) && found.level === 'flag' ? found.value.at(-1) : found.value;
  if (typeof value === 'string') return value.trim();
  ctx.errors.push(`${found.name} must be a string`);
  return undefined;
}

const TRUE = new Set(['1', 't', 'true']);
const FALSE = new Set(['0', 'f', 'false']);

/** Go's `strconv.ParseBool`, which oauth2-proxy's flags and variables go through. */
function asBool(ctx: Context, found: Found): boolean | undefined {
  const value = Array.isArray(found.value) && found.level === 'flag' ? found.value.at(-1) : found.value;
  if (typeof value === 'boolean') return value;
  if (typeof value === 'string') {
    const text = value.trim().toLowerCase();
    if (TRUE.has(text)) return true;
    if (FALSE.has(text)) return false;
  }
  ctx.errors.push(`${found.name} must be true or false, not ${show(value)}`);
  return undefined;
}

/**
 * The entries of a list option. Flags may repeat and, as oauth2-proxy's (pflag `StringSlice`), split on
 * commas; variables split on commas (oauth2-proxy's docs, "Environment variables"); the config file
 * gives an array, or a string that viper splits on white space.
 */
function asList(ctx: Context, found: readonly Found[]): string[] {
  const out: string[] = [];
  for (const one of found) {
    const items = Array.isArray(one.value) ? one.value : [one.value];
    for (const item of items) {
      if (typeof item !== 'string') {
        ctx.errors.push(`${one.name} must be a list of strings, not ${show(item)}`);
        continue;
      }
      const parts =
        one.level === 'file' && !Array.isArray(one.value)
          ? item.split(/\s+/)
          : one.level === 'flag' && UNSPLIT_FLAGS.has(one.key)
            ? [item]
            : item.split(',');
      for (const part of parts) if (part.trim() !== '') out.push(part.trim());
    }
  }
  return out;
}

const GO_UNITS: Record<string, number> = {
  ns: 1e-9,
  us: 1e-6,
  µs: 1e-6,
  μs: 1e-6,
  ms: 1e-3,
  s: 1,
  m: 60,
  h: 3600,
};

/** Seconds of a Go duration (`168h0m0s`, `1h30m`, `500ms`, `0`), or null. */
export function parseGoDuration(text: string): number | null {
  const value = text.trim();
  if (value === '0') return 0;
  const unit = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/y;
  let total = 0;
  let at = 0;
  for (let match = unit.exec(value); match !== null; match = unit.exec(value)) {
    total += Number(match[1]) * GO_UNITS[match[2]!]!;
    at = unit.lastIndex;
  }
  return at > 0 && at === value.length ? total : null;
}

/**
 * Seconds of a duration written the labgate way (`30s`, `5m`, `1h`, a number of seconds) or the Go way
 * (`168h0m0s`). A TOML number is refused: viper would read it as nanoseconds.
 */
function asDuration(ctx: Context, found: Found, zero = false): number | undefined {
  const text = typeof found.value === 'string' ? found.value : undefined;
  if (text !== undefined) {
    const go = parseGoDuration(text);
    if (go !== null && (zero || go > 0)) return go;
    try {
      return parseDuration(text, found.name);
    } catch {
      // Reported below, with both forms.
    }
  }
  ctx.errors.push(
    `${found.name} must be a ${zero ? '' : 'positive '}duration such as "30s", "5m" or "168h0m0s", not ${show(found.value)}`,
  );
  return undefined;
}

/** A core `TypeError` message without its `labgate: ` prefix. */
function reason(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).replace(/^labgate: /, '');
}

// ─── Checks of single values ─────────────────────────────────────────────────────────────────────

/** `HOST:PORT`, `[::1]:PORT`, `:PORT` (every interface) or oauth2-proxy's `http://HOST:PORT`. */
function parseListen(ctx: Context, found: Found): ListenAddress | undefined {
  const text = asText(ctx, found);
  if (text === undefined) return undefined;
  if (/^(unix|fd):/i.test(text)) {
    ctx.errors.push(`${found.name}: unix sockets and file descriptors are not supported; give HOST:PORT`);
    return undefined;
  }
  if (/^https:\/\//i.test(text)) {
    ctx.errors.push(`${found.name}: ${TLS}; give HOST:PORT`);
    return undefined;
  }
  const bare = text.replace(/^http:\/\//i, '');
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]*)):(\d{1,5})$/.exec(bare);
  const port = match ? Number(match[3]) : Number.NaN;
  const host = match ? (match[1] ?? match[2]!) : '';
  if (!match || port > 65535 || (match[1] !== undefined && isIP(host) !== 6)) {
    ctx.errors.push(`${found.name} ${show(text)} is not HOST:PORT (such as 127.0.0.1:4180)`);
    return undefined;
  }
  return { host: host === '' ? '0.0.0.0' : host, port };
}

/** An `http(s)` origin (`https://app.example.com`, a trailing `/` allowed), or undefined after an error. */
function parseOrigin(ctx: Context, name: string, text: string, what: string): string | undefined {
  let url: URL | null = null;
  try {
    url = new URL(text);
  } catch {
    // Reported below.
  }
  if (
    url === null ||
    (url.protocol !== 'http:' && url.protocol !== 'https:') ||
    (url.pathname !== '/' && url.pathname !== '') ||
    url.search !== '' ||
    url.hash !== '' ||
    url.username !== '' ||
    url.password !== '' ||
    /[?#]$/.test(text)
  ) {
    ctx.errors.push(
      `${name} ${show(text)} is not ${what}: an origin such as https://app.example.com, without a path`,
    );
    return undefined;
  }
  return url.origin;
}

/** A path prefix as the gateway matches it: normalised as requests are (GATEWAY-3), no trailing `/`. */
function parsePrefix(ctx: Context, name: string, text: string): string | undefined {
  const target = text.startsWith('/') && !/[?#]/.test(text) ? normaliseTarget(text) : null;
  if (target === null) {
    ctx.errors.push(`${name}: ${show(text)} is not a path prefix such as /admin`);
    return undefined;
  }
  const prefix = target.path.length > 1 ? target.path.replace(/\/+$/, '') : target.path;
  if (prefix === '/oauth2' || prefix.startsWith('/oauth2/')) {
    ctx.errors.push(`${name}: ${show(text)} is under /oauth2, the gateway's own endpoints`);
    return undefined;
  }
  return prefix;
}

/** Checks a regular expression the way the gateway compiles it (Go syntax, see `compileRules`). */
function checkRegex(ctx: Context, name: string, rule: SkipRule): boolean {
  try {
    compileRules({ routes: [], skipRoutes: [rule], skipPrefixes: [], apiRoutes: [] });
    return true;
  } catch (error) {
    ctx.errors.push(`${name}: ${reason(error).replace(/^skip_auth_routes: /, '')}`);
    return false;
  }
}

/**
 * One `skip_auth_routes` entry. oauth2-proxy (`buildRoutesAllowlist`) splits every entry at its first
 * `=` or `!=` and upper-cases what comes before as the method, and negates the path match when `!=`
 * occurs anywhere. An entry where that reading is surprising is refused rather than guessed: text
 * before the `=` that is not a method (`^/a=b` would be "method `^/A`"), or a `!=` inside the regular
 * expression (which oauth2-proxy would read as a negation of the whole entry).
 */
function parseSkipRoute(ctx: Context, name: string, entry: string): SkipRule | undefined {
  const match = /^(.*?)(!?=)(.*)$/s.exec(entry);
  let rule: SkipRule;
  if (match === null) {
    rule = { method: null, negate: false, pattern: entry };
  } else {
    const [, before, operator, pattern] = match as unknown as [string, string, string, string];
    if (before !== '' && !/^[A-Za-z]+$/.test(before)) {
      ctx.errors.push(
        `${name}: in ${show(entry)} the text before "${operator}" is not an HTTP method (oauth2-proxy would read it as ` +
          `the method ${show(before.toUpperCase())}); write METHOD=REGEX, REGEX or !=REGEX, and "=" inside a regular expression as \\x3d`,
      );
      return undefined;
    }
    if (pattern.includes('!=')) {
      ctx.errors.push(
        `${name}: ${show(entry)} has "!=" inside its regular expression, which oauth2-proxy reads as negating the whole entry; write "!" there as \\x21`,
      );
      return undefined;
    }
    rule = { method: before === '' ? null : before.toUpperCase(), negate: operator === '!=', pattern };
  }
  if (rule.pattern === '') {
    ctx.errors.push(`${name}: ${show(entry)} has an empty regular expression, which matches every path`);
    return undefined;
  }
  if (!checkRegex(ctx, name, rule)) return undefined;
  if (!rule.pattern.replace(/^\(\?i\)/, '').startsWith('^')) {
    ctx.warnings.push(
      `${name}: ${show(entry)} is not anchored with ^, so it matches anywhere in the path (as Go's MatchString does)`,
    );
  }
  return rule;
}

/** A CIDR (`10.0.0.0/8`, `fd00::/8`) or a single address, written as a CIDR. */
function parseCidr(ctx: Context, name: string, text: string): string | undefined {
  const [address = '', bits, ...rest] = text.split('/');
  const version = isIP(address);
  const max = version === 6 ? 128 : 32;
  if (
    version === 0 ||
    rest.length > 0 ||
    (bits !== undefined && !(/^\d{1,3}$/.test(bits) && Number(bits) <= max))
  ) {
    ctx.errors.push(`${name}: ${show(text)} is not an IP address or CIDR range such as 10.0.0.0/8`);
    return undefined;
  }
  return `${address.toLowerCase()}/${bits ?? max}`;
}

/**
 * A labgate secret from oauth2-proxy's `cookie_secret`, which is 16, 24 or 32 bytes, raw or base64
 * (its `SecretBytes`). labgate needs at least 32 random bytes (docs/security.md, TOKEN-2). A value
 * that decodes from base64 or base64url to 32 bytes or more is used as those bytes. Anything shorter is
 * stretched deterministically, to the SHA-256 of the string as given, so that every instance reading
 * the same configuration derives the same key; stretching adds no randomness (a 16-byte secret stays a
 * 128-bit secret), hence the warning that asks for `LABGATE_SECRET`.
 */
function secretFromCookieSecret(value: string): { secret: string; stretched: boolean } {
  const normal = value.replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  try {
    const bytes = fromBase64Url(normal);
    if (bytes.length >= 32) return { secret: toBase64Url(bytes), stretched: false };
  } catch {
    // Not base64: a raw secret, stretched below.
  }
  return { secret: createHash('sha256').update(value, 'utf8').digest('base64url'), stretched: true };
}

function readSecretFile(ctx: Context, found: Found): string | undefined {
  const path = asText(ctx, found);
  if (path === undefined) return undefined;
  try {
    return readFileSync(path, 'utf8').trim();
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'error';
    ctx.errors.push(`${found.name}: cannot read ${show(path)} (${code})`);
    return undefined;
  }
}

const LEVEL_NAMES: Readonly<Record<string, string>> = {
  '10': 'guest',
  '20': 'reporter',
  '30': 'developer',
  '40': 'maintainer',
};

/** An oauth2-proxy `gitlab_projects` entry, `group/project[=LEVEL]` (LEVEL 10, 20, 30 or 40; default 20). */
function projectRule(ctx: Context, name: string, entry: string): Rule | undefined {
  const eq = entry.indexOf('=');
  const path = (eq === -1 ? entry : entry.slice(0, eq)).trim();
  const level = eq === -1 ? '20' : entry.slice(eq + 1).trim();
  const levelName = LEVEL_NAMES[level];
  if (levelName === undefined) {
    ctx.errors.push(
      `${name}: invalid gitlab project access level in ${show(entry)}: oauth2-proxy accepts 10, 20, 30 or 40 (default 20)`,
    );
    return undefined;
  }
  return ruleOf(ctx, name, `project:${path}>=${levelName}`, entry);
}

function ruleOf(ctx: Context, name: string, text: string, entry: string): Rule | undefined {
  try {
    return parseRule(text);
  } catch (error) {
    // The core's message quotes the rule; the entry as written is added when it was rewritten.
    const why = reason(error)
      .replace(/^rule: /, '')
      .replace(/; accepted: .*$/, '');
    ctx.errors.push(`${name}: ${text === entry ? '' : `${show(entry)}: `}${why}`);
    return undefined;
  }
}

// Kubernetes gives every container variables for each Service; one named oauth2-proxy yields these.
const KUBERNETES_SERVICE =
  /^OAUTH2_PROXY_(SERVICE_HOST|SERVICE_PORT(_.+)?|PORT(_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)?)$/;

function suggestion(key: string): string {
  const singular = Object.entries(PROXY_OPTIONS).find(([, spec]) => spec.flag.replace(/-/g, '_') === key);
  return singular ? ` (did you mean ${singular[0]}?)` : '';
}

/** Whether an unsupported option's value is oauth2-proxy's default, which asks for nothing. */
function isDefault(ctx: Context, spec: ProxyOption, found: Found[]): boolean {
  const probe: Context = { ...ctx, errors: [], warnings: [] };
  switch (spec.kind) {
    case 'bool':
      return asBool(probe, found[0]!) === (spec.default === 'true');
    case 'list': {
      const items = asList(probe, found);
      return items.length === 0 || (spec.default !== '' && items.length === 1 && items[0] === spec.default);
    }
    case 'duration': {
      const text = typeof found[0]!.value === 'string' ? found[0]!.value : '';
      const value = parseGoDuration(text);
      return value !== null && value === (spec.default === '' ? 0 : parseGoDuration(spec.default));
    }
    default: {
      const value = found[0]!.value;
      const text = typeof value === 'string' ? value.trim() : String(value);
      const trim = (t: string) => (t.startsWith('/') && t.length > 1 ? t.replace(/\/+$/, '') : t);
      return text === '' || trim(text).toLowerCase() === trim(spec.default).toLowerCase();
    }
  }
}

// ─── The resolution ──────────────────────────────────────────────────────────────────────────────

/** The default `LABGATE_STORE` of the gateway. */
export const DEFAULT_GATEWAY_STORE = 'sqlite:./.labgate/gateway.db';

const STORE_SCHEMES = /^(sqlite:|postgres:\/\/|postgresql:\/\/|redis:\/\/|rediss:\/\/|memory:?$)/;
const DEFAULT_SCOPES = ['openid', 'profile', 'email'];

/**
 * Resolves the gateway's configuration from flags, the environment and an oauth2-proxy config file,
 * in that order of precedence, and checks all of it at once: every error is returned, not only the
 * first, and every oauth2-proxy option labgate does not support is named (an error when ignoring it
 * would let someone in or send a request elsewhere, a warning otherwise). Pure but for reading
 * `client_secret_file` and `cookie_secret_file`.
 *
 * Sources, by option: labgate's variables (`GITLAB_URL`, `GITLAB_CLIENT_ID`, `GITLAB_CLIENT_SECRET`,
 * `GITLAB_SCOPES`, `LABGATE_URL`, `LABGATE_SECRET`, `LABGATE_STORE`, `LABGATE_ALLOW`, `LABGATE_REQUIRE`,
 * `LABGATE_RECHECK`, `LABGATE_UPSTREAM`, `LABGATE_LISTEN`, `LABGATE_METRICS_ADDRESS`, `LABGATE_ROUTES`,
 * `LABGATE_SKIP`, `LABGATE_ASSERTION`), labgate's flags ({@link GATEWAY_FLAGS}), and oauth2-proxy's
 * names: its flags, `OAUTH2_PROXY_*` variables and TOML keys. Where both name one option, labgate's
 * name is read first within a source (and the other named in a warning).
 *
 * @example
 * ```ts
 * const result = resolveGatewayConfig({
 *   flags: { upstream: ['http://127.0.0.1:3000'], route: ['/admin=group:acme/platform>=maintainer'] },
 *   env: process.env,
 *   file: { client_id: 'abc', gitlab_groups: ['acme'], cookie_secret: '…' },
 * });
 * if (!result.ok) for (const error of result.errors) console.error(error);
 * ```
 */
export function resolveGatewayConfig(sources: GatewaySources): GatewayConfigResult {
  const file: Record<string, unknown> = {};
  // viper, which reads oauth2-proxy's file, matches keys case-insensitively.
  for (const [key, value] of Object.entries(sources.file ?? {})) file[key.toLowerCase()] = value;
  const ctx: Context = { flags: sources.flags ?? {}, env: sources.env ?? {}, file, errors: [], warnings: [] };
  const { errors, warnings } = ctx;

  reportUnknown(ctx);
  reportUnsupported(ctx);

  // Where the gateway listens comes first: the default public URL depends on it.
  const listenFound = single(
    ctx,
    names({ flag: ['listen'], env: ['LABGATE_LISTEN'] }, proxy('http_address')),
  );
  const listen = listenFound ? parseListen(ctx, listenFound) : { host: '127.0.0.1', port: 4180 };
  const metricsFound = single(
    ctx,
    names({ flag: ['metrics-address'], env: ['LABGATE_METRICS_ADDRESS'] }, proxy('metrics_address')),
  );
  const metricsAddress = metricsFound ? (parseListen(ctx, metricsFound) ?? null) : null;

  const provider = single(ctx, proxy('provider'));
  if (provider) {
    const value = asText(ctx, provider);
    if (value !== undefined && value !== 'gitlab' && value !== 'oidc') {
      errors.push(
        `${provider.name} ${show(value)} is not supported: labgate signs in with GitLab (provider = "gitlab")`,
      );
    }
  }

  const upstream = resolveUpstream(ctx);
  const origin = resolveOrigin(ctx, listen);
  const labgate = resolveLabgate(ctx, origin);
  const store = resolveStore(ctx, labgate);

  const routes = resolveRoutes(ctx);
  const skipPrefixes = resolveSkipPrefixes(ctx);
  const skipRoutes = resolveSkipRoutes(ctx);
  const apiRoutes: string[] = [];
  for (const entry of asList(ctx, find(ctx, names({ flag: ['api-route'] }, proxy('api_routes'))))) {
    if (checkRegex(ctx, 'api_routes', { method: null, negate: false, pattern: entry })) apiRoutes.push(entry);
  }

  let emailDomains: string[] | null = null;
  const domainsFound = find(ctx, proxy('email_domains'));
  if (domainsFound.length > 0) {
    const domains = asList(ctx, domainsFound).map((d) =>
      d.toLowerCase().replace(/^@/, '').replace(/^\*\./, '.'),
    );
    if (!domains.includes('*')) {
      emailDomains = [];
      for (const domain of domains) {
        if (ruleOf(ctx, domainsFound[0]!.name, `email:@${domain}`, domain)) emailDomains.push(domain);
      }
    }
  }

  const bool = (key: string, fallback: boolean): boolean => {
    const found = single(ctx, proxy(key));
    return found ? (asBool(ctx, found) ?? fallback) : fallback;
  };
  const reverseProxy = bool('reverse_proxy', false);
  const trustedFound = find(ctx, proxy('trusted_proxy_ips'));
  const trustedProxies: string[] = [];
  for (const entry of asList(ctx, trustedFound)) {
    const cidr = parseCidr(ctx, trustedFound[0]!.name, entry);
    if (cidr) trustedProxies.push(cidr);
  }
  if (trustedFound.length > 0 && !reverseProxy) {
    warnings.push(`${trustedFound[0]!.name} has no effect without reverse_proxy (--reverse-proxy)`);
  }
  if (trustedFound.length === 0) {
    trustedProxies.push('127.0.0.1/32', '::1/128');
    if (reverseProxy) {
      warnings.push(
        'reverse_proxy is on and trusted_proxy_ips is not set: X-Forwarded-* headers are believed from loopback only ' +
          '(oauth2-proxy would believe them from everyone); list your proxies in trusted_proxy_ips',
      );
    }
  }

  const assertionFound = single(ctx, { flag: ['assertion'], env: ['LABGATE_ASSERTION'] });
  const assertionOn = assertionFound ? (asBool(ctx, assertionFound) ?? false) : false;

  const websocketOrigins: string[] = [];
  const originsFound = find(ctx, { flag: ['websocket-origin'] });
  for (const entry of asList(ctx, originsFound)) {
    const parsed = parseOrigin(ctx, '--websocket-origin', entry, 'a WebSocket origin');
    if (parsed) websocketOrigins.push(parsed);
  }
  if (originsFound.length === 0 && origin) websocketOrigins.push(origin);

  const timeoutFound = single(ctx, names({ flag: ['upstream-timeout'] }, proxy('upstream_timeout')));
  const upstreamTimeout = timeoutFound ? asDuration(ctx, timeoutFound) : 30;

  const flagsOn = {
    setXAuthRequest: bool('set_xauthrequest', false),
    passAccessToken: bool('pass_access_token', false),
    passUserHeaders: bool('pass_user_headers', true),
    preferEmailToUser: bool('prefer_email_to_user', false),
    skipAuthPreflight: bool('skip_auth_preflight', false),
    forceJsonErrors: bool('force_json_errors', false),
    skipProviderButton: bool('skip_provider_button', false),
  };
  finishScopes(ctx, labgate, routes, emailDomains);

  if (errors.length === 0) {
    // The core's own checks, for anything not caught above (its warnings are kept).
    try {
      resolveOptions({
        ...(labgate as LabgateOptions),
        logger: { info() {}, warn: (message) => warnings.push(reason(message)), error() {} },
      });
    } catch (error) {
      errors.push(reason(error));
    }
  }
  if (errors.length > 0 || !upstream || !listen || !origin || upstreamTimeout === undefined) {
    if (errors.length === 0) errors.push('the configuration is incomplete');
    return { ok: false, errors, warnings };
  }
  const config: GatewayConfig = {
    labgate: labgate as Omit<LabgateOptions, 'store'>,
    store,
    upstream,
    listen,
    metricsAddress,
    routes,
    skipRoutes,
    skipPrefixes,
    apiRoutes,
    emailDomains,
    reverseProxy,
    trustedProxies,
    whitelistDomains: [...((labgate.redirectDomains as string[] | undefined) ?? [])],
    ...flagsOn,
    assertion: assertionOn ? { header: 'X-Labgate-Assertion', audience: upstream.origin, ttl: 60 } : null,
    websocketOrigins,
    upstreamTimeout: Math.round(upstreamTimeout * 1000),
    shutdownTimeout: 10_000,
  };
  return { ok: true, config, warnings };
}

/** Flags, config-file keys and `OAUTH2_PROXY_*` variables that are no option at all. */
function reportUnknown(ctx: Context): void {
  for (const [key, value] of Object.entries(ctx.flags)) {
    if (value === undefined || COMMAND_FLAGS.has(key) || Object.hasOwn(GATEWAY_FLAGS, key)) continue;
    ctx.errors.push(`unknown flag --${key}`);
  }
  for (const key of Object.keys(ctx.file)) {
    if (!Object.hasOwn(PROXY_OPTIONS, key)) {
      ctx.errors.push(`unknown option ${key} in the config file${suggestion(key)}`);
    }
  }
  for (const [name, value] of Object.entries(ctx.env)) {
    if (!name.startsWith('OAUTH2_PROXY_') || value === undefined || KUBERNETES_SERVICE.test(name)) continue;
    const key = name.slice('OAUTH2_PROXY_'.length).toLowerCase();
    if (!Object.hasOwn(PROXY_OPTIONS, key)) {
      const hint = suggestion(key);
      ctx.errors.push(
        `unknown option ${name}${hint ? hint.replace(/ ([a-z_]+)\?/, (_, k) => ` ${envNameOf(k)}?`) : ''}`,
      );
    }
  }
}

/** Names every oauth2-proxy option labgate does not support that is set to something but its default. */
function reportUnsupported(ctx: Context): void {
  for (const [key, spec] of Object.entries(PROXY_OPTIONS)) {
    if (spec.treatment !== 'warning' && spec.treatment !== 'error') continue;
    const found = find(ctx, proxy(key));
    if (found.length === 0 || isDefault(ctx, spec, found)) continue;
    const message = `${found[0]!.name} is not supported${spec.hint ? `: ${spec.hint}` : ''}`;
    (spec.treatment === 'error' ? ctx.errors : ctx.warnings).push(message);
  }
}

/** `--upstream`: exactly one http(s) URL, proxied to on every path. */
function resolveUpstream(ctx: Context): URL | undefined {
  const found = find(ctx, names({ flag: ['upstream'], env: ['LABGATE_UPSTREAM'] }, proxy('upstreams')));
  const entries = asList(ctx, found);
  const name = found[0]?.name ?? '--upstream';
  if (entries.length === 0) {
    ctx.errors.push(
      '--upstream is required (LABGATE_UPSTREAM, or upstreams in the config file): the http(s) URL of the app behind the gateway',
    );
    return undefined;
  }
  if (entries.length > 1) {
    ctx.errors.push(`${name}: labgate proxies to exactly one upstream, and ${entries.length} were given`);
    return undefined;
  }
  const text = entries[0]!;
  if (/^static:/i.test(text)) {
    ctx.errors.push(
      `${name}: static:// upstreams are not supported; give the app's http(s) URL (in forward-auth mode only /oauth2/ reaches the gateway)`,
    );
    return undefined;
  }
  if (/^file:/i.test(text)) {
    ctx.errors.push(`${name}: file:// upstreams are not supported; serve the files from an http(s) app`);
    return undefined;
  }
  let url: URL | null = null;
  try {
    url = new URL(text);
  } catch {
    // Reported below.
  }
  if (url === null || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
    ctx.errors.push(`${name} ${show(text)} is not an http(s) URL`);
    return undefined;
  }
  if (
    url.username ||
    url.password ||
    url.search ||
    url.hash ||
    (url.pathname !== '/' && url.pathname !== '')
  ) {
    ctx.errors.push(
      `${name} ${show(text)}: give the upstream's origin only (no path, query or credentials); every path is proxied as requested`,
    );
    return undefined;
  }
  return url;
}

/** `LABGATE_URL`, or the origin of oauth2-proxy's `redirect_url`, which must be `<LABGATE_URL>/oauth2/callback`. */
function resolveOrigin(ctx: Context, listen: ListenAddress | undefined): string | undefined {
  const urlFound = single(ctx, { env: ['LABGATE_URL'] });
  let origin = urlFound
    ? parseOrigin(ctx, 'LABGATE_URL', asText(ctx, urlFound) ?? '', "the gateway's public URL")
    : undefined;
  const redirect = single(ctx, proxy('redirect_url'));
  const redirectText = redirect ? asText(ctx, redirect) : undefined;
  if (redirect && redirectText !== undefined) {
    let url: URL | null = null;
    try {
      url = new URL(redirectText, 'http://relative.invalid');
    } catch {
      // Reported below.
    }
    const relative = redirectText.startsWith('/');
    if (url === null || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.search || url.hash) {
      ctx.errors.push(`${redirect.name} ${show(redirectText)} is not an http(s) URL`);
    } else if (url.pathname.replace(/\/+$/, '') !== '/oauth2/callback') {
      ctx.errors.push(
        `${redirect.name} ${show(redirectText)}: the gateway's callback path is /oauth2/callback; set it to <LABGATE_URL>/oauth2/callback and register that URL in GitLab`,
      );
    } else if (!relative && origin !== undefined && url.origin !== origin) {
      ctx.errors.push(
        `${redirect.name} ${show(redirectText)} must be ${origin}/oauth2/callback (LABGATE_URL is ${origin})`,
      );
    } else if (!relative && urlFound === undefined) {
      origin = url.origin;
    }
  }
  if (origin === undefined && urlFound === undefined) {
    if (listen && isLoopbackHost(listen.host)) {
      origin = `http://localhost:${listen.port}`;
      ctx.warnings.push(
        `LABGATE_URL is not set: using ${origin}; set it to the gateway's public origin (GitLab's redirect URI is LABGATE_URL/oauth2/callback)`,
      );
    } else if (listen) {
      ctx.errors.push(
        "LABGATE_URL (or redirect_url) is required when the gateway listens beyond loopback: the gateway's public origin, such as https://app.example.com",
      );
    }
  }
  if (origin?.startsWith('http:') && !isLoopbackHost(new URL(origin).hostname)) {
    ctx.warnings.push(`LABGATE_URL ${origin} is plain http: cookies lose Secure and the __Host- prefix`);
  }
  return origin;
}

type MutableOptions = { -readonly [K in keyof LabgateOptions]?: LabgateOptions[K] };

/** The core's options: credentials, GitLab, secret, policy, cookie and session settings. */
function resolveLabgate(ctx: Context, origin: string | undefined): MutableOptions {
  const { errors, warnings } = ctx;
  // The contract's plain variables as the core reads them; every value is then taken by precedence.
  const plain = ['GITLAB_URL', 'GITLAB_CLIENT_SECRET', 'LABGATE_WEBHOOK_SECRET'];
  const base = optionsFromEnv(Object.fromEntries(plain.map((name) => [name, ctx.env[name]])));
  const labgate: MutableOptions = { prefix: '/oauth2' };
  if (base.webhookSecret) labgate.webhookSecret = base.webhookSecret;
  if (origin) labgate.url = origin;

  const clientId = single(ctx, names({ env: ['GITLAB_CLIENT_ID'] }, proxy('client_id')));
  const clientIdText = clientId ? asText(ctx, clientId) : undefined;
  if (clientIdText) labgate.clientId = clientIdText;
  else if (!clientId) {
    errors.push(
      'GITLAB_CLIENT_ID is required (or client_id): the Application ID of the OAuth application in GitLab',
    );
  }

  const secretFound = single(
    ctx,
    names({ env: ['GITLAB_CLIENT_SECRET'] }, proxy('client_secret'), proxy('client_secret_file')),
  );
  if (secretFound) {
    const value =
      secretFound.key.endsWith('_FILE') ||
      secretFound.key.endsWith('_file') ||
      secretFound.key.endsWith('-file')
        ? readSecretFile(ctx, secretFound)
        : asText(ctx, secretFound);
    if (value) labgate.clientSecret = value;
  }

  // GITLAB_URL wins over oidc_issuer_url wherever each is set: labgate discovers the issuer from it.
  const issuer = single(ctx, proxy('oidc_issuer_url'));
  const issuerText = issuer ? asText(ctx, issuer) : undefined;
  const gitlabText = base.gitlabUrl?.trim() || issuerText;
  if (base.gitlabUrl && issuerText && base.gitlabUrl.replace(/\/+$/, '') !== issuerText.replace(/\/+$/, '')) {
    warnings.push(
      `GITLAB_URL and ${issuer!.name} differ; GITLAB_URL is used and the issuer is discovered from it`,
    );
  }
  if (gitlabText) {
    let url: URL | null = null;
    try {
      url = new URL(gitlabText);
    } catch {
      // Reported below.
    }
    if (url === null || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
      errors.push(
        `${base.gitlabUrl ? 'GITLAB_URL' : issuer!.name} ${show(gitlabText)} is not an http(s) URL`,
      );
    } else {
      labgate.gitlabUrl = gitlabText.replace(/\/+$/, '');
    }
  }

  resolveSecret(ctx, labgate);
  resolvePolicy(ctx, labgate);

  const recheck = single(ctx, { env: ['LABGATE_RECHECK'] });
  if (recheck) {
    try {
      labgate.recheckInterval = parseDuration(asText(ctx, recheck) ?? '', 'LABGATE_RECHECK');
    } catch (error) {
      errors.push(reason(error));
    }
  }

  const cookieName = single(ctx, proxy('cookie_name'));
  if (cookieName) {
    // labgate adds the prefix itself on https (docs/security.md, COOKIE-1).
    const name = (asText(ctx, cookieName) ?? '').replace(/^__(Host|Secure)-/, '');
    if (/^[A-Za-z0-9_-]{1,64}$/.test(name) && !name.startsWith('__')) labgate.cookieName = name;
    else
      errors.push(
        `${cookieName.name} ${show(name)}: a cookie name is 1 to 64 letters, digits, - or _, not starting with __`,
      );
  }

  const whitelist = find(ctx, proxy('whitelist_domains'));
  const domains: string[] = [];
  for (const entry of asList(ctx, whitelist)) {
    try {
      parseRedirectDomains([entry]);
      domains.push(entry);
    } catch (error) {
      errors.push(`${whitelist[0]!.name}: ${reason(error)}`);
    }
  }
  if (domains.length > 0) labgate.redirectDomains = domains;

  const expire = single(ctx, proxy('cookie_expire'));
  if (expire) {
    const seconds = asDuration(ctx, expire);
    if (seconds !== undefined) labgate.sessionMaxAge = Math.max(1, Math.round(seconds));
  }
  resolveCookieFlags(ctx, origin);
  return labgate;
}

/** `LABGATE_SECRET`, or one derived from oauth2-proxy's `cookie_secret` (see {@link secretFromCookieSecret}). */
function resolveSecret(ctx: Context, labgate: MutableOptions): void {
  const found = single(
    ctx,
    names({ env: ['LABGATE_SECRET'] }, proxy('cookie_secret'), proxy('cookie_secret_file')),
  );
  if (!found) {
    ctx.errors.push(
      "LABGATE_SECRET is required (at least 32 random bytes in base64url; `labgate secret` prints one), or oauth2-proxy's cookie_secret",
    );
    return;
  }
  const isFile = /secret[_-]file$/i.test(found.key);
  const value = isFile ? readSecretFile(ctx, found) : asText(ctx, found);
  if (value === undefined) return;
  if (found.key === 'LABGATE_SECRET') {
    try {
      parseSecrets(value);
      labgate.secret = value;
    } catch (error) {
      ctx.errors.push(`LABGATE_SECRET: ${reason(error)}`);
    }
    return;
  }
  if (value === '') {
    ctx.errors.push(`${found.name} is empty`);
    return;
  }
  const derived = secretFromCookieSecret(value);
  labgate.secret = derived.secret;
  if (derived.stretched) {
    ctx.warnings.push(
      `${found.name} is shorter than 32 bytes: labgate stretched it with SHA-256, which adds no randomness; ` +
        'set LABGATE_SECRET to 32 random bytes (`labgate secret` prints one)',
    );
  }
}

/** `LABGATE_ALLOW`, `gitlab_groups`, `allowed_groups` and `gitlab_projects` (any one suffices), `LABGATE_REQUIRE`. */
function resolvePolicy(ctx: Context, labgate: MutableOptions): void {
  const allow: (Rule | string)[] = [];
  let require: Requirement[] | undefined;
  const allowEnv = single(ctx, { env: ['LABGATE_ALLOW'] });
  if (allowEnv) {
    try {
      allow.push(...(parsePolicy({ allow: asText(ctx, allowEnv) ?? '' }).allow ?? []));
    } catch (error) {
      ctx.errors.push(reason(error));
    }
  }
  const requireEnv = single(ctx, { env: ['LABGATE_REQUIRE'] });
  if (requireEnv) {
    try {
      require = [...(parsePolicy({ require: asText(ctx, requireEnv) ?? '' }).require ?? ['active'])];
    } catch (error) {
      ctx.errors.push(reason(error));
    }
  }
  const projectsFound = find(ctx, proxy('gitlab_projects'));
  const projectPaths = new Set<string>();
  for (const entry of asList(ctx, projectsFound)) {
    const rule = projectRule(ctx, projectsFound[0]!.name, entry);
    if (rule && 'project' in rule) {
      allow.push(rule);
      projectPaths.add(rule.project.toLowerCase());
    }
  }
  // oauth2-proxy's GitLab groups are memberships of the group itself (inherited from its ancestors
  // included), not of its subgroups only: `group-exact`, never more permissive than oauth2-proxy.
  for (const key of ['gitlab_groups', 'allowed_groups']) {
    const found = find(ctx, proxy(key));
    for (const entry of asList(ctx, found)) {
      if (entry.startsWith('project:')) {
        // oauth2-proxy's `project:PATH` group exists only for a project of gitlab_projects that passed.
        if (!projectPaths.has(entry.slice('project:'.length).toLowerCase())) {
          ctx.errors.push(
            `${found[0]!.name}: ${show(entry)} names a project that is not in gitlab_projects; list it there, with its access level`,
          );
        }
        continue;
      }
      const rule = ruleOf(ctx, found[0]!.name, `group-exact:${entry}`, entry);
      if (rule) allow.push(rule);
    }
  }
  if (allow.length === 0 && require === undefined) return;
  const access = { ...(allow.length > 0 ? { allow } : {}), ...(require ? { require } : {}) };
  try {
    normalisePolicy(access);
    labgate.access = access;
  } catch (error) {
    ctx.errors.push(reason(error));
  }
}

/** oauth2-proxy's cookie attributes: labgate sets its own (docs/security.md, COOKIE-1); a request for less is named. */
function resolveCookieFlags(ctx: Context, origin: string | undefined): void {
  const secure = single(ctx, proxy('cookie_secure'));
  if (secure && asBool(ctx, secure) === false && origin?.startsWith('https:')) {
    ctx.warnings.push(`${secure.name} is ignored: on https labgate's cookies are always Secure`);
  }
  const httpOnly = single(ctx, proxy('cookie_httponly'));
  if (httpOnly && asBool(ctx, httpOnly) === false) {
    ctx.warnings.push(`${httpOnly.name} is ignored: labgate's cookies are always HttpOnly`);
  }
  const sameSite = single(ctx, proxy('cookie_samesite'));
  const sameSiteText = sameSite ? (asText(ctx, sameSite) ?? '').toLowerCase() : '';
  if (sameSite && !['', 'lax', 'strict', 'none'].includes(sameSiteText)) {
    ctx.errors.push(`${sameSite.name} ${show(sameSiteText)} must be one of "", "lax", "strict", "none"`);
  } else if (sameSite && (sameSiteText === 'strict' || sameSiteText === 'none')) {
    ctx.warnings.push(`${sameSite.name} is ignored: labgate's session cookie is SameSite=Lax`);
  }
  const path = single(ctx, proxy('cookie_path'));
  if (path && asText(ctx, path) !== '/') {
    ctx.warnings.push(`${path.name} is ignored: labgate's session cookie covers the whole host (Path=/)`);
  }
}

/** `LABGATE_STORE`; oauth2-proxy's `session_store_type` and `redis_connection_url`. */
function resolveStore(ctx: Context, labgate: MutableOptions): string {
  const storeEnv = single(ctx, { env: ['LABGATE_STORE'] });
  const storeText = storeEnv ? asText(ctx, storeEnv) : undefined;
  const typeFound = single(ctx, proxy('session_store_type'));
  const type = typeFound ? (asText(ctx, typeFound) ?? '').toLowerCase() : undefined;
  const redisFound = single(ctx, proxy('redis_connection_url'));
  const redis = redisFound ? asText(ctx, redisFound) : undefined;
  if (typeFound && type !== 'cookie' && type !== 'redis') {
    ctx.errors.push(`${typeFound.name} ${show(type)} must be "cookie" or "redis"`);
  }
  if (type === 'cookie') {
    labgate.sessionMode = 'cookie';
    ctx.warnings.push(
      `${typeFound!.name} = cookie: sessions are sealed in the cookie (stateless), so signing out does not end copies of the session elsewhere; ` +
        'remove it to keep sessions in LABGATE_STORE',
    );
  }
  if (redis !== undefined && !/^rediss?:\/\//.test(redis)) {
    ctx.errors.push(`${redisFound!.name} must be a redis:// or rediss:// URL`);
  } else if (redis !== undefined && type !== 'redis') {
    ctx.warnings.push(`${redisFound!.name} is ignored: session_store_type is not redis`);
  }
  if (type === 'redis' && redis === undefined && storeText === undefined) {
    ctx.errors.push(`${typeFound!.name} = redis needs redis_connection_url (or LABGATE_STORE=redis://…)`);
  }
  if (type === 'redis' && redis !== undefined && storeText !== undefined && redis !== storeText) {
    ctx.warnings.push(`LABGATE_STORE and ${redisFound!.name} are both set; LABGATE_STORE is used`);
  }
  const store =
    storeText ?? (type === 'redis' && redis && /^rediss?:\/\//.test(redis) ? redis : DEFAULT_GATEWAY_STORE);
  if (!STORE_SCHEMES.test(store)) {
    ctx.errors.push('LABGATE_STORE must be one of sqlite:PATH, postgres://…, redis://…, memory:');
  }
  return store;
}

/** `--route PREFIX=RULE[,RULE]` (repeatable) or `LABGATE_ROUTES` (`;`-separated), longest prefix first. */
function resolveRoutes(ctx: Context): RouteRule[] {
  const found = find(ctx, { flag: ['route'], env: ['LABGATE_ROUTES'] });
  const entries =
    found[0]?.level === 'env'
      ? String(found[0].value)
          .split(';')
          .map((e) => e.trim())
          .filter(Boolean)
      : asList(ctx, found);
  const name = found[0]?.name ?? '--route';
  const routes: RouteRule[] = [];
  for (const entry of entries) {
    const eq = entry.indexOf('=');
    if (eq <= 0) {
      ctx.errors.push(
        `${name}: ${show(entry)} is not PREFIX=RULE[,RULE], such as /admin=group:acme/platform>=maintainer`,
      );
      continue;
    }
    const prefix = parsePrefix(ctx, name, entry.slice(0, eq).trim());
    const texts = entry
      .slice(eq + 1)
      .split(',')
      .map((t) => t.trim());
    if (texts.some((t) => t === '')) {
      ctx.errors.push(`${name}: ${show(entry)} has an empty rule (a stray comma?)`);
      continue;
    }
    const rules = texts.map((text) => ruleOf(ctx, name, text, text));
    if (prefix === undefined || rules.some((r) => r === undefined)) continue;
    if (routes.some((route) => route.prefix === prefix)) {
      ctx.errors.push(`${name}: the prefix ${prefix} is given twice`);
      continue;
    }
    routes.push({ prefix, allow: rules.map((rule) => formatRule(rule!)) });
  }
  return routes.sort((a, b) => b.prefix.length - a.prefix.length);
}

/** `--skip PREFIX` (repeatable) or `LABGATE_SKIP` (comma list). */
function resolveSkipPrefixes(ctx: Context): string[] {
  const found = find(ctx, { flag: ['skip'], env: ['LABGATE_SKIP'] });
  const prefixes: string[] = [];
  for (const entry of asList(ctx, found)) {
    const prefix = parsePrefix(ctx, found[0]!.name, entry);
    if (prefix === '/') {
      ctx.errors.push(`${found[0]!.name}: "/" would skip sign-in for every path`);
    } else if (prefix !== undefined && !prefixes.includes(prefix)) {
      prefixes.push(prefix);
    }
  }
  return prefixes;
}

/** `--skip-route` and oauth2-proxy's `skip_auth_routes`, then its deprecated `skip_auth_regex` (any method). */
function resolveSkipRoutes(ctx: Context): SkipRule[] {
  const rules: SkipRule[] = [];
  const found = find(ctx, names({ flag: ['skip-route'] }, proxy('skip_auth_routes')));
  for (const entry of asList(ctx, found)) {
    const rule = parseSkipRoute(ctx, found[0]!.name, entry);
    if (rule) rules.push(rule);
  }
  const legacy = find(ctx, proxy('skip_auth_regex'));
  if (legacy.length > 0)
    ctx.warnings.push(`${legacy[0]!.name} is deprecated (as in oauth2-proxy): use skip_auth_routes`);
  for (const entry of asList(ctx, legacy)) {
    const rule: SkipRule = { method: null, negate: false, pattern: entry };
    if (checkRegex(ctx, legacy[0]!.name, rule)) rules.push(rule);
  }
  return rules;
}

/**
 * Scopes: `GITLAB_SCOPES` or oauth2-proxy's `scope`, default `openid profile email`, plus what the
 * rules need (core `scopesForPolicy`): `read_api` for memberships with levels and projects, `email`
 * for email domains, `read_user` for the 2fa, human and internal requirements. Adding to scopes the
 * user chose is said in a warning.
 */
function finishScopes(
  ctx: Context,
  labgate: MutableOptions,
  routes: readonly RouteRule[],
  emailDomains: string[] | null,
): void {
  const found = single(ctx, names({ env: ['GITLAB_SCOPES'] }, proxy('scope')));
  const chosen = found ? (asText(ctx, found) ?? '').split(/[\s,]+/).filter(Boolean) : undefined;
  const scopes = chosen ? [...chosen] : [...DEFAULT_SCOPES];
  if (chosen && !chosen.includes('openid')) ctx.errors.push(`${found!.name} must include openid`);
  const allow = [...(labgate.access?.allow ?? []), ...routes.flatMap((route) => route.allow)];
  const require = labgate.access?.require;
  let needed: string[] = [];
  try {
    needed = scopesForPolicy({ allow, ...(require ? { require } : {}) });
  } catch {
    // A malformed rule is already reported.
  }
  const has = (...any: string[]) => any.some((scope) => scopes.includes(scope));
  const add = (scope: string, why: string) => {
    scopes.push(scope);
    if (chosen) ctx.warnings.push(`${found!.name} lacks ${scope}, needed ${why}; labgate adds it`);
  };
  if (needed.includes('read_api') && !has('read_api', 'api')) {
    add('read_api', 'to read the group and project memberships the access rules name');
  }
  if ((emailDomains !== null || needed.includes('email')) && !has('email'))
    add('email', 'to check email domains');
  if (
    require?.some((r) => r === '2fa' || r === 'human' || r === 'internal') &&
    !has('read_user', 'read_api', 'api')
  ) {
    add('read_user', 'to check the requirements of LABGATE_REQUIRE');
  }
  labgate.scopes = scopes.join(' ');
}
