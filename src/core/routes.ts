/**
 * Which request is one of labgate's routes, decided once for every host (docs/security.md, HTTP-4):
 * the core and every adapter call {@link routeOf}, so a path that one of them takes for a labgate route
 * is one for all of them, and the app never sees a request that labgate answers elsewhere.
 */

/** Each route and the methods it answers (the `Allow` of a 405). */
export const ROUTE_METHODS: Readonly<Record<string, string>> = {
  '/login': 'GET, HEAD',
  '/callback': 'GET',
  '/logout': 'GET, HEAD, POST',
  '/sessions': 'GET, HEAD, POST',
  '/session': 'GET, HEAD',
  '/link': 'GET, HEAD, POST',
  '/webhooks/gitlab': 'POST',
};

// A path that URL parsing would change: dot segments (also `%2e`-encoded), backslashes, and the tab
// and newlines it drops. Only such a path pays for the parse.
const NEEDS_PARSING = /[.%\\\t\n\r]/;

/**
 * The labgate route a request target (`/auth/login?returnTo=/`, or a URL's pathname) names, below
 * `prefix`: `'/login'`, `''` for the prefix itself, or a route labgate does not have (it answers 404);
 * `null` when the target is not under `prefix`, and the app serves it. The path is read as WHATWG URL
 * parsing reads it, as a `Request` built from the target would be: dot segments resolved (`/x/../auth`),
 * backslashes as slashes; encoded slashes stay encoded (`/auth%2Flogin` is not a route), and a repeated
 * slash is kept (`//auth/login` is not a route, `/auth//login` is an unknown one). Trailing slashes do not
 * count (`/auth/login/` is `/login`).
 */
export function routeOf(target: string, prefix: string): string | null {
  let end = target.length;
  const query = target.indexOf('?');
  if (query !== -1) end = query;
  const hash = target.indexOf('#');
  if (hash !== -1 && hash < end) end = hash;
  let path = end === target.length ? target : target.slice(0, end);
  if (NEEDS_PARSING.test(path)) {
    try {
      // The fixed origin keeps a target like `//host/x` a path.
      path = new URL(`http://labgate.invalid${path.startsWith('/') ? '' : '/'}${path}`).pathname;
    } catch {
      return null;
    }
  }
  if (!path.startsWith(prefix)) return null;
  if (path.length !== prefix.length && path.charCodeAt(prefix.length) !== 47 /* / */) return null;
  let last = path.length;
  while (last > prefix.length && path.charCodeAt(last - 1) === 47) last--;
  return path.slice(prefix.length, last);
}

/** The `Allow` value for a route (`routeOf`'s answer). */
export function allowedMethods(route: string): string {
  return ROUTE_METHODS[route] ?? 'GET, HEAD';
}
