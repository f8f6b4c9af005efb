/**
 * The one validator for every place labgate redirects to a value it was given (`returnTo`, the
 * post-logout target, the gateway's `rd`): same-origin relative paths only.
 */

// Control characters, backslashes and whitespace tricks that browsers and WHATWG URL normalise away.
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
const FORBIDDEN = /[\u0000-\u001f\u007f\\]/;

/**
 * Returns `value` when it is a safe same-origin path (`/projects?tab=1#top`), else `fallback`.
 * Refused: absolute URLs, scheme-relative `//host`, backslashes, control characters, encoded slashes
 * or backslashes in the first segment, `.` and `..` segments, and anything that leaves `origin` once resolved.
 *
 * @example
 * ```ts
 * safeReturnTo('/me', 'https://app.example'); // '/me'
 * safeReturnTo('//evil.example', 'https://app.example'); // '/'
 * ```
 */
export function safeReturnTo(value: string | null | undefined, origin: string, fallback = '/'): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > 2048) return fallback;
  if (!value.startsWith('/') || value.startsWith('//') || FORBIDDEN.test(value)) return fallback;
  if (/^\/\s/.test(value)) return fallback;
  const firstSegment = value.slice(1).split(/[/?#]/, 1)[0] ?? '';
  if (/%(2f|5c)/i.test(firstSegment)) return fallback;
  const path = value.split(/[?#]/, 1)[0]!;
  // Dot segments, plain or encoded: URL parsing removes them, so `/.//evil` would resolve to `//evil`.
  if (path.split('/').some((segment) => /^(%2e|\.){1,2}$/i.test(segment))) return fallback;
  let url: URL;
  try {
    url = new URL(value, origin);
  } catch {
    return fallback;
  }
  if (url.origin !== new URL(origin).origin) return fallback;
  const result = `${url.pathname}${url.search}${url.hash}`;
  // What goes into Location must itself pass: never scheme-relative after normalisation.
  if (result.startsWith('//') || result.includes('\\')) return fallback;
  return result;
}

/**
 * One entry of a redirect allow-list, as oauth2-proxy's `whitelist_domains` writes them: `app.example.com`
 * (that host), `.example.com` or `*.example.com` (its subdomains, on a dot boundary, and the domain
 * itself), each on the scheme's default port unless `:8080` or `:*` follows.
 */
export interface DomainEntry {
  host: string;
  subdomains: boolean;
  /** A port, `*` for any, or '' for the default port only. */
  port: string;
}

/** Parses allow-list entries; throws `TypeError` for one that is not a host name. */
export function parseRedirectDomains(domains: readonly string[]): DomainEntry[] {
  return domains.map((raw) => {
    const entry = raw.trim().toLowerCase();
    const match = /^(\*\.|\.)?([a-z0-9-]+(?:\.[a-z0-9-]+)*)(?::(\d{1,5}|\*))?$/.exec(entry);
    if (!match) throw new TypeError(`labgate: redirect domain ${JSON.stringify(raw)} is not a host name`);
    return { host: match[2]!, subdomains: match[1] !== undefined, port: match[3] ?? '' };
  });
}

function allowedHost(url: URL, domains: readonly DomainEntry[]): boolean {
  const host = url.hostname.toLowerCase();
  return domains.some(
    (d) =>
      (host === d.host || (d.subdomains && host.endsWith(`.${d.host}`))) &&
      (d.port === '*' || url.port === d.port),
  );
}

/**
 * {@link safeReturnTo}, and also absolute `http(s)` URLs: one of the app's own origin becomes its path;
 * one on a host of `domains` (see {@link parseRedirectDomains}) is kept whole (docs/security.md,
 * REDIRECT-5). Absolute URLs with credentials, control characters or backslashes are refused.
 */
export function safeRedirect(
  value: string | null | undefined,
  origin: string,
  domains: readonly DomainEntry[],
  fallback = '/',
): string {
  if (typeof value !== 'string' || !/^https?:\/\//i.test(value)) return safeReturnTo(value, origin, fallback);
  if (value.length > 2048 || FORBIDDEN.test(value) || /\s/.test(value)) return fallback;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return fallback;
  }
  if (url.username || url.password) return fallback;
  if (url.origin === origin) return safeReturnTo(`${url.pathname}${url.search}${url.hash}`, origin, fallback);
  return allowedHost(url, domains) ? url.href : fallback;
}
