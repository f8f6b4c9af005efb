/**
 * labgate's options, their checks at startup (misuse throws `TypeError`), and the environment
 * variables of README.md's "Configuration" table read into options.
 */
import {
  type NormalisedPolicy,
  normalisePolicy,
  type Policy,
  parsePolicy,
  scopesForPolicy,
} from './access.js';
import { type Logger, safeLogger } from './log.js';
import { type DomainEntry, parseRedirectDomains } from './redirects.js';

export type { Logger } from './log.js';

import type { Store } from './store.js';

/** Options of {@link createLabgate}. */
export interface LabgateOptions {
  /** GitLab base URL, with its sub-path if any (`https://gitlab.example.com/gitlab`). Default `https://gitlab.com`. */
  gitlabUrl?: string | undefined;
  /** The OAuth application's id. */
  clientId: string;
  /** The application's secret (confidential apps). Without it labgate acts as a public client (PKCE only). */
  clientSecret?: string | undefined;
  /** Scopes to request. Default `openid profile email`. */
  scopes?: string | readonly string[] | undefined;
  /** The app's public origin (`LABGATE_URL`); the redirect URI is this plus `/auth/callback`. */
  url: string;
  /** `LABGATE_SECRET`: base64url secrets of ≥ 32 bytes, newest first (comma-separated or a list). */
  secret: string | readonly string[];
  /** Where state is kept (default: a new {@link MemoryStore}). */
  store?: Store;
  /** `server` (default): the cookie holds a session id and secret; `cookie`: the whole session, sealed. */
  sessionMode?: 'server' | 'cookie';
  /** Route prefix (default `/auth`). */
  prefix?: string;
  /**
   * The session cookie's name (default `labgate`); on https it is sent as `__Host-<name>` (host-only,
   * `Secure`, `Path=/`), and sign-in transaction cookies are named after it. Two apps on one host need
   * different names.
   */
  cookieName?: string;
  /**
   * Hosts that an absolute `returnTo` (or the gateway's `rd`) may send the browser to after sign-in or
   * sign-out, in oauth2-proxy's `whitelist_domains` syntax: `app.example.com`, `.example.com` (its
   * subdomains and itself), `example.com:8080`, `example.com:*`. Default: none, only paths of this app.
   */
  redirectDomains?: readonly string[];
  /** Absolute session lifetime in seconds (default 7 days). */
  sessionMaxAge?: number;
  /** Idle timeout in seconds (default 1 day); the sliding expiry is written at most once per `touchInterval`. */
  sessionIdleTimeout?: number;
  /** Seconds between writes of the sliding expiry (default 300). */
  touchInterval?: number;
  /**
   * Seconds a verified session may be served from this process's cache before the store is asked
   * again (default 5, at most 5): the bound on how stale a revocation made by another instance can be.
   */
  sessionCacheTtl?: number;
  /**
   * Who may sign in and which roles they get, from GitLab's groups and projects (default: everyone
   * with an active GitLab account). Strings use the `LABGATE_ALLOW` grammar.
   * @example `{ allow: ['group:acme/platform>=developer'], require: ['active', '2fa'], roles: { admin: 'group:acme>=maintainer' } }`
   */
  access?: Policy;
  /** Seconds between re-checks of access against GitLab while a session lives (`LABGATE_RECHECK`, default 300). */
  recheckInterval?: number;
  /** Seconds a session keeps its last decision while GitLab cannot be reached, then fails closed (default 900). */
  accessGracePeriod?: number;
  /**
   * The secret token of GitLab webhooks (group or project member events, system hooks) sent to
   * `POST /auth/webhooks/gitlab`; each event re-checks the affected user at once. Without it the
   * route answers 404. (`LABGATE_WEBHOOK_SECRET`)
   */
  webhookSecret?: string;
  /**
   * The largest webhook body read, in bytes (default 1 MiB); larger ones are answered 413. GitLab's
   * push payloads list commits and can be several MiB: raise it when push events are sent here.
   */
  webhookMaxBytes?: number;
  /**
   * Lets a signed-in user link a further GitLab account (another GitLab instance, say) to their user,
   * through an explicit confirmation (`POST /auth/link` from the app's own page). Off by default: every
   * sign-in then yields a user of the account that signed in, and a session already open in the
   * browser never links two accounts. (docs/security.md, SESSION-7)
   */
  accountLinking?: boolean;
  /** Refresh a GitLab access token this many seconds before it expires (default 120). */
  refreshMargin?: number;
  /** Timeout of each request to GitLab in milliseconds (default 10 000). */
  requestTimeout?: number;
  /** Largest response body accepted from GitLab, in bytes (default 512 KiB). */
  maxResponseBytes?: number;
  /** Clock tolerance for ID tokens in seconds (default 60). */
  clockTolerance?: number;
  /** Accept an `http://` GitLab that is not on loopback. Never in production: tokens would cross the network in clear. */
  dangerouslyAllowInsecureHttp?: boolean;
  /** Inject `fetch` (tests, proxies, custom CA bundles). */
  fetch?: typeof fetch;
  /** Inject the clock (epoch milliseconds). */
  now?: () => number;
  /** Where to log (default: `console`); `false` for silence. */
  logger?: Logger | false;
}

/** Options after defaults and checks. */
export interface ResolvedOptions {
  gitlabUrl: URL;
  clientId: string;
  clientSecret: string | null;
  scopes: string[];
  origin: string;
  secure: boolean;
  redirectUri: string;
  secret: string | readonly string[];
  sessionMode: 'server' | 'cookie';
  prefix: string;
  /** The session cookie's name as sent (`__Host-` prefixed on https). */
  cookieName: string;
  redirectDomains: DomainEntry[];
  sessionMaxAge: number;
  sessionIdleTimeout: number;
  touchInterval: number;
  sessionCacheTtl: number;
  access: NormalisedPolicy;
  recheckInterval: number;
  accessGracePeriod: number;
  webhookSecret: string | null;
  webhookMaxBytes: number;
  accountLinking: boolean;
  refreshMargin: number;
  requestTimeout: number;
  maxResponseBytes: number;
  clockTolerance: number;
  fetch: typeof fetch;
  now: () => number;
  logger: Logger;
}

const silent: Logger = { info() {}, warn() {}, error() {} };

/** True for `localhost`, `*.localhost`, 127.0.0.0/8 and `[::1]`. */
export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.toLowerCase();
  return (
    host === 'localhost' ||
    host.endsWith('.localhost') ||
    /^127(?:\.\d{1,3}){3}$/.test(host) ||
    host === '[::1]' ||
    host === '::1'
  );
}

function positive(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new TypeError(`labgate: ${name} must be a positive number`);
  }
  return value;
}

function parseUrl(name: string, value: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new TypeError(`labgate: ${name} ${JSON.stringify(value)} is not an absolute URL`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new TypeError(`labgate: ${name} must be an http(s) URL`);
  }
  if (url.search || url.hash || url.username || url.password) {
    throw new TypeError(`labgate: ${name} must not carry a query, fragment or credentials`);
  }
  return url;
}

/** Applies defaults and checks options; throws `TypeError` for any misuse. */
export function resolveOptions(options: LabgateOptions): ResolvedOptions {
  if (!options || typeof options !== 'object') throw new TypeError('labgate: options are required');
  const logger = options.logger === false ? silent : safeLogger(options.logger ?? console);
  if (typeof options.clientId !== 'string' || options.clientId.trim() === '') {
    throw new TypeError('labgate: clientId is required (GITLAB_CLIENT_ID: the Application ID GitLab shows)');
  }
  const gitlabUrl = parseUrl('gitlabUrl', options.gitlabUrl ?? 'https://gitlab.com');
  gitlabUrl.pathname = gitlabUrl.pathname.replace(/\/+$/, '');
  if (gitlabUrl.protocol === 'http:') {
    if (isLoopbackHost(gitlabUrl.hostname)) {
      logger.warn(
        `labgate: GitLab at ${gitlabUrl.origin} is plain http; accepted only because it is on loopback`,
      );
    } else if (options.dangerouslyAllowInsecureHttp) {
      logger.warn(
        `labgate: DANGER: GitLab at ${gitlabUrl.origin} is plain http; tokens cross the network in clear`,
      );
    } else {
      throw new TypeError(
        `labgate: GitLab URL ${gitlabUrl.origin} uses http://; use https:// (plain http is accepted only for loopback hosts)`,
      );
    }
  }
  if (typeof options.url !== 'string')
    throw new TypeError('labgate: url is required (LABGATE_URL: the public origin of the app)');
  const app = parseUrl('url', options.url);
  if (app.pathname !== '/' && app.pathname !== '') {
    throw new TypeError(
      'labgate: url must be an origin without a path (LABGATE_URL=https://app.example.com)',
    );
  }
  const prefix = `/${(options.prefix ?? '/auth').replace(/^\/+|\/+$/g, '')}`;
  if (!/^(\/[A-Za-z0-9._~-]+)+$/.test(prefix))
    throw new TypeError('labgate: prefix must be a URL path like /auth');
  const cookieBase = options.cookieName ?? 'labgate';
  if (typeof cookieBase !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(cookieBase) || /^__/.test(cookieBase))
    throw new TypeError('labgate: cookieName must be 1 to 64 letters, digits, - or _, not starting with __');
  const secure = app.protocol === 'https:';
  const scopes = (
    typeof options.scopes === 'string'
      ? options.scopes.split(/[\s,]+/)
      : [...(options.scopes ?? ['openid', 'profile', 'email'])]
  ).filter(Boolean);
  if (scopes.length === 0) throw new TypeError('labgate: scopes must not be empty');
  const sessionCacheTtl = options.sessionCacheTtl === undefined ? 5 : options.sessionCacheTtl;
  if (!(sessionCacheTtl >= 0 && sessionCacheTtl <= 5))
    throw new TypeError('labgate: sessionCacheTtl must be between 0 and 5 seconds');
  const access = normalisePolicy(options.access ?? {});
  const needed = scopesForPolicy(options.access ?? {});
  const has = (...any: string[]) => any.some((scope) => scopes.includes(scope));
  if (needed.includes('read_api') && !has('read_api', 'api')) {
    throw new TypeError(
      'labgate: the access policy reads group and project memberships: add the read_api scope (GITLAB_SCOPES)',
    );
  }
  if (
    access.require.some((r) => r === '2fa' || r === 'human' || r === 'internal') &&
    !has('read_user', 'read_api', 'api')
  ) {
    throw new TypeError(
      'labgate: requiring 2fa, human or internal reads /api/v4/user: add the read_user scope (GITLAB_SCOPES)',
    );
  }
  if (!scopes.includes('openid')) throw new TypeError('labgate: scopes must include openid');
  const sessionMode = options.sessionMode ?? 'server';
  if (sessionMode !== 'server' && sessionMode !== 'cookie')
    throw new TypeError("labgate: sessionMode must be 'server' or 'cookie'");
  return {
    gitlabUrl,
    clientId: options.clientId.trim(),
    clientSecret: options.clientSecret ? options.clientSecret : null,
    scopes: [...new Set(scopes)],
    origin: app.origin,
    secure,
    redirectUri: `${app.origin}${prefix}/callback`,
    secret: options.secret,
    sessionMode,
    prefix,
    cookieName: secure ? `__Host-${cookieBase}` : cookieBase,
    redirectDomains: parseRedirectDomains(options.redirectDomains ?? []),
    sessionMaxAge: positive('sessionMaxAge', options.sessionMaxAge, 7 * 24 * 3600),
    sessionIdleTimeout: positive('sessionIdleTimeout', options.sessionIdleTimeout, 24 * 3600),
    touchInterval: positive('touchInterval', options.touchInterval, 300),
    sessionCacheTtl,
    access,
    recheckInterval: positive('recheckInterval', options.recheckInterval, 300),
    accessGracePeriod: positive('accessGracePeriod', options.accessGracePeriod, 900),
    webhookSecret: options.webhookSecret ? options.webhookSecret : null,
    webhookMaxBytes: positive('webhookMaxBytes', options.webhookMaxBytes, 1024 * 1024),
    accountLinking: options.accountLinking === true,
    refreshMargin: positive('refreshMargin', options.refreshMargin, 120),
    requestTimeout: positive('requestTimeout', options.requestTimeout, 10_000),
    maxResponseBytes: positive('maxResponseBytes', options.maxResponseBytes, 512 * 1024),
    clockTolerance: positive('clockTolerance', options.clockTolerance, 60),
    fetch: options.fetch ?? globalThis.fetch,
    now: options.now ?? Date.now,
    logger,
  };
}

/** Parses `30s`, `5m`, `1h` or a number of seconds. */
export function parseDuration(value: string, name: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(value);
  if (!match)
    throw new TypeError(`labgate: ${name} ${JSON.stringify(value)} is not a duration like 30s, 5m or 1h`);
  const amount = Number(match[1]);
  const unit = match[2] ?? 's';
  const seconds =
    unit === 'ms' ? amount / 1000 : unit === 'm' ? amount * 60 : unit === 'h' ? amount * 3600 : amount;
  if (seconds <= 0) throw new TypeError(`labgate: ${name} must be positive`);
  return seconds;
}

/**
 * Reads the environment variables of the public contract into options:
 * `GITLAB_URL`, `GITLAB_CLIENT_ID`, `GITLAB_CLIENT_SECRET`, `GITLAB_SCOPES`, `LABGATE_URL`, `LABGATE_SECRET`,
 * `LABGATE_ALLOW`, `LABGATE_REQUIRE`, `LABGATE_RECHECK`.
 * `PORT` gives the default `LABGATE_URL` (`http://localhost:PORT`).
 *
 * @example
 * ```ts
 * const labgate = createLabgate({ ...optionsFromEnv(process.env), store });
 * ```
 */
export function optionsFromEnv(env: Record<string, string | undefined>): LabgateOptions {
  const options: LabgateOptions = {
    clientId: env['GITLAB_CLIENT_ID'] ?? '',
    url: env['LABGATE_URL'] ?? `http://localhost:${env['PORT'] ?? 3000}`,
    secret: env['LABGATE_SECRET'] ?? '',
  };
  if (env['GITLAB_URL']) options.gitlabUrl = env['GITLAB_URL'];
  if (env['GITLAB_CLIENT_SECRET']) options.clientSecret = env['GITLAB_CLIENT_SECRET'];
  if (env['GITLAB_SCOPES']) options.scopes = env['GITLAB_SCOPES'];
  if (env['LABGATE_ALLOW'] || env['LABGATE_REQUIRE']) {
    options.access = parsePolicy({
      ...(env['LABGATE_ALLOW'] ? { allow: env['LABGATE_ALLOW'] } : {}),
      ...(env['LABGATE_REQUIRE'] ? { require: env['LABGATE_REQUIRE'] } : {}),
    });
  }
  if (env['LABGATE_WEBHOOK_SECRET']) options.webhookSecret = env['LABGATE_WEBHOOK_SECRET'];
  if (env['LABGATE_RECHECK'])
    options.recheckInterval = parseDuration(env['LABGATE_RECHECK'], 'LABGATE_RECHECK');
  return options;
}
