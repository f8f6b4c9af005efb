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
