/**
 * Where the gateway sends the browser after `/oauth2/start`, `/oauth2/sign_in` and `/oauth2/sign_out`:
 * the candidates of oauth2-proxy's redirect director, in its order, each checked by the core's one
 * redirect validator (docs/security.md, REDIRECT-1, REDIRECT-2), the first valid one winning.
 */
import { type DomainEntry, safeRedirect } from '../core/redirects.js';
import { isUnderPrefix } from './paths.js';

/** What {@link chooseRedirect} chooses from. */
export interface RedirectInput {
  /** The `rd` parameter (query or form), or null. */
  rd: string | null;
  /** The `X-Auth-Request-Redirect` header, or null. */
  authRequestRedirect: string | null;
  /** `X-Forwarded-Proto`, `-Host` and `-Uri`; pass them only from a trusted proxy, else null (GATEWAY-2). */
  forwarded: { proto: string | null; host: string | null; uri: string | null } | null;
  /** The request's own target (path and query), as received. */
  requestUri: string;
  /** The request's `Host` header, or null. */
  host: string | null;
  /** The gateway's route prefix, `/oauth2`. */
  prefix: string;
  /** The gateway's public origin (`LABGATE_URL`). */
  origin: string;
  /** The allow-list of hosts an absolute URL may point to, from `parseRedirectDomains`. */
  domains: DomainEntry[];
}

/** A URI under the gateway's own routes would loop back into sign-in: go to `/` instead. */
/** Whether a target (a path, or an absolute URL) names one of the gateway's own pages. */
function ownPage(target: string, origin: string, prefix: string): boolean {
  try {
    return isUnderPrefix(new URL(target, origin).pathname, prefix);
  } catch {
    return false;
  }
}

function outsidePrefix(uri: string, prefix: string): string {
  return isUnderPrefix(uri.split(/[?#]/, 1)[0]!, prefix) ? '/' : uri;
}

/**
 * Chooses the redirect target, in oauth2-proxy's order (its `redirect/director.go`):
 *
 * 1. `rd`;
 * 2. the `X-Auth-Request-Redirect` header;
 * 3. when trusted forwarded headers name another host than `Host`: `proto://host` + the forwarded
 *    URI (or the request's own), `/` in place of a URI under the prefix;
 * 4. the forwarded URI, else the request's own, unless it is under the prefix;
 * 5. `/`.
 *
 * Each candidate passes `safeRedirect` or is skipped (REDIRECT-1): a same-origin absolute URL becomes
 * its path, another host must be in `domains`. Never throws; the result is always safe for `Location`.
 *
 * @example
 * ```ts
 * chooseRedirect({
 *   rd: 'https://evil.example/', authRequestRedirect: '/docs', forwarded: null, requestUri: '/oauth2/start',
 *   host: 'app.example.com', prefix: '/oauth2', origin: 'https://app.example.com', domains: [],
 * }); // '/docs'
 * ```
 */
export function chooseRedirect(input: RedirectInput): string {
  const { forwarded, requestUri, prefix } = input;
  // A redirect header naming the gateway's own pages (nginx's `/oauth2/` block sends the sign-in
  // page's own URI) would send the browser back into sign-in after it: a loop, so it is no candidate.
  const header = input.authRequestRedirect;
  const candidates: (string | null)[] = [
    input.rd,
    header !== null && ownPage(header, input.origin, prefix) ? null : header,
  ];
  const uri = forwarded?.uri ?? requestUri;
  if (forwarded?.host && forwarded.host.toLowerCase() !== input.host?.toLowerCase()) {
    const proto = forwarded.proto ?? (/^https:/i.test(input.origin) ? 'https' : 'http');
    candidates.push(`${proto}://${forwarded.host}${outsidePrefix(uri, prefix)}`);
  }
  candidates.push(outsidePrefix(uri, prefix));
  for (const candidate of candidates) {
    // The validator returns its fallback on failure: '' cannot be a valid target, so it marks one.
    const valid = safeRedirect(candidate, input.origin, input.domains, '');
    if (valid !== '') return valid;
  }
  return '/';
}
