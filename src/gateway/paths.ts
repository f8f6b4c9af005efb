/**
 * The one normalised path of a gateway request (docs/security.md, GATEWAY-3): every route, skip and
 * API decision is taken on it, and the upstream receives exactly it, re-encoded canonically, so no
 * second parser can read the request as another path than the one that was decided on.
 */

/** A request target split and normalised by {@link normaliseTarget}. */
export interface NormalisedTarget {
  /** The path, percent-decoded once and with `//` runs collapsed: what every decision uses. */
  path: string;
  /** `path` re-encoded canonically: what is sent to the upstream. */
  forward: string;
  /** The query with its leading `?`, as the client sent it, or ''. */
  search: string;
}

// Printable ASCII only: a request target is ASCII (RFC 3986), and anything else (spaces, control
// characters, raw bytes the HTTP parser passed through) has no single meaning.
const RAW_ALLOWED = /^[\u0021-\u007e]*$/;
// Encoded `/`, `\` and NUL would turn into separators or terminators after decoding.
const ENCODED_FORBIDDEN = /%(2f|5c|00)/i;
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
// What may stay unencoded in a path segment: unreserved, sub-delims, `:` and `@` (RFC 3986 §3.3).
const SEGMENT_KEEP = /[^A-Za-z0-9\-._~!$&'()*+,;=:@]/gu;

// A path that decoding, collapsing and re-encoding would leave as it is: segment characters only (no
// `%`), no empty segment but a trailing one, no `.` or `..` segment. Most requests: nothing to build.
const PLAIN_PATH = /^(?:\/(?!\.\.?(?:\/|$))[A-Za-z0-9\-._~!$&'()*+,;=:@]+)*\/?$/;

/**
 * Splits and normalises an origin-form request target (`/a/b?x=1`) as the client sent it, or
 * returns null when it must be refused (the caller answers 400):
 *
 * - not origin-form: an absolute-form `http://h/a`, `*`, anything not starting with `/`;
 * - anything but printable ASCII in the target (spaces, control characters, raw non-ASCII bytes);
 * - a backslash, or an encoded `/` (`%2F`), `\` (`%5C`) or NUL (`%00`) in the path;
 * - invalid percent-encoding (including invalid UTF-8), or a control character once decoded;
 * - a `.` or `..` segment once decoded (so `%2e%2e` too).
 *
 * The fragment is dropped, the query kept apart, the path percent-decoded exactly once and runs of
 * `/` collapsed into one (a trailing `/` is kept). Matching on `path` is **case-sensitive**: `/Admin`
 * is not `/admin`, as most upstreams see it. `forward` re-encodes every character outside
 * RFC 3986's segment characters, so a decoded `%` goes upstream as `%25` and never decodes twice.
 *
 * @example
 * ```ts
 * normaliseTarget('//docs/caf%C3%A9/?q=1#top'); // { path: '/docs/café/', forward: '/docs/caf%C3%A9/', search: '?q=1' }
 * normaliseTarget('/a/%2e%2e/admin'); // null
 * ```
 */
export function normaliseTarget(target: string): NormalisedTarget | null {
  if (!target.startsWith('/') || !RAW_ALLOWED.test(target)) return null;
  const withoutFragment = target.split('#', 1)[0]!;
  const q = withoutFragment.indexOf('?');
  const rawPath = q === -1 ? withoutFragment : withoutFragment.slice(0, q);
  const search = q === -1 || q === withoutFragment.length - 1 ? '' : withoutFragment.slice(q);
  if (PLAIN_PATH.test(rawPath)) return { path: rawPath, forward: rawPath, search };
  if (rawPath.includes('\\') || ENCODED_FORBIDDEN.test(rawPath)) return null;
  let decoded: string;
  try {
    decoded = decodeURIComponent(rawPath);
  } catch {
    return null;
  }
  if (CONTROL.test(decoded)) return null;
  const path = decoded.replace(/\/{2,}/g, '/');
  const segments = path.split('/');
  if (segments.some((segment) => segment === '.' || segment === '..')) return null;
  const forward = segments
    .map((segment) => segment.replace(SEGMENT_KEEP, (c) => encodeURIComponent(c)))
    .join('/');
  return { path, forward, search };
}

/**
 * Whether a normalised `path` lies under `prefix` on whole segments: `/admin` (or `/admin/`) covers
 * `/admin`, `/admin/` and `/admin/x`, never `/administrator`; `/` covers everything. Case-sensitive.
 *
 * @example
 * ```ts
 * isUnderPrefix('/admin/users', '/admin'); // true
 * isUnderPrefix('/administrator', '/admin'); // false
 * ```
 */
export function isUnderPrefix(path: string, prefix: string): boolean {
  const base = prefix.replace(/\/+$/, '');
  return base === '' || path === base || path.startsWith(`${base}/`);
}
