/**
 * The request headers the upstream receives from the gateway, and the `Set-Cookie` lines it may send
 * back. Client-sent identity and control headers are removed in every spelling, `X-Forwarded-*` are
 * rebuilt from what the gateway knows, labgate's own cookies never reach the upstream, and each
 * identity header is set exactly once (docs/security.md, GATEWAY-1, GATEWAY-2, GATEWAY-4).
 */
import type { IncomingMessage, OutgoingHttpHeaders } from 'node:http';

/** What {@link upstreamHeaders} builds from: who the user is and how the request reached the gateway. */
export interface UpstreamInit {
  /** Identity headers to set, lower- or mixed-case names (`X-Forwarded-User` → `alice`); `{}` when signed out. */
  identity: Record<string, string>;
  /** Whether a cookie name is one of the gateway's own (session, its chunks, sign-in transactions). */
  ownCookie: (name: string) => boolean;
  /** The client's address as the gateway determined it (the peer, or derived from trusted proxies). */
  clientIp: string;
  /** The scheme of the public URL the client used. */
  proto: 'http' | 'https';
  /** The validated public host (with port when not the default). Sent as `Host` and `X-Forwarded-Host`. */
  host: string;
  /** The peer is a trusted proxy: its `X-Forwarded-For` chain is kept and `clientIp` appended. */
  trusted: boolean;
  /** More header names to strip as identity headers (the signed assertion's header). */
  extraStrip?: string[];
  /** A WebSocket upgrade: keep `Upgrade` and send `Connection: upgrade`. */
  upgrade?: boolean;
}

/** Why {@link upstreamHeaders} refused a request; the caller answers 400. */
export interface HeaderRefusal {
  error: string;
}

/** The longest identity header value sent upstream, in bytes. */
export const IDENTITY_VALUE_MAX = 8 * 1024;

/** Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the proxy ones. */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'proxy-authorization',
  'proxy-authenticate',
]);

// Identity and control headers a client must never choose (docs/security.md, GATEWAY-1).
const IDENTITY = new Set([
  'x-forwarded-user',
  'x-forwarded-email',
  'x-forwarded-groups',
  'x-forwarded-preferred-username',
  'x-forwarded-access-token',
  'remote-user',
  'x-remote-user',
  'gap-auth',
  'gap-signature',
]);
const IDENTITY_PREFIXES = ['x-auth-request-', 'x-labgate-'];

// Forwarding headers the gateway rebuilds itself (docs/security.md, GATEWAY-2); `X-Forwarded-For` is
// handled apart because a trusted proxy's chain is kept.
const FORWARDING = new Set([
  'forwarded',
  'x-forwarded-for',
  'x-forwarded-host',
  'x-forwarded-proto',
  'x-forwarded-port',
  'x-forwarded-prefix',
  'x-forwarded-uri',
  'x-forwarded-method',
  'x-original-url',
  'x-original-uri',
  'x-real-ip',
]);

// A `Connection` header naming one of these would have the gateway drop what it must see or set.
const PROTECTED = new Set(['cookie', 'authorization', 'host']);

/**
 * A header name as servers behind the gateway may read it: lower-case, `_` and `.` as `-` (CGI,
 * WSGI, PHP and some frameworks map `X_Forwarded_User` and `X-Forwarded-User` to one variable).
 */
function normalise(name: string): string {
  return name.toLowerCase().replace(/[_.]/g, '-');
}

/**
 * Whether a client-sent header is an identity or control header the gateway strips, in any spelling
 * (case, `_`, `.`): `X-Forwarded-User`, `-Email`, `-Groups`, `-Preferred-Username`,
 * `-Access-Token`, every `X-Auth-Request-*`, `Remote-User`, `X-Remote-User`, `GAP-Auth`,
 * `GAP-Signature`, every `X-Labgate-*`, and the names in `extra`.
 *
 * @example
 * ```ts
 * identityHeaderName('X_Forwarded_User'); // true
 * identityHeaderName('x-auth-request.email'); // true
 * identityHeaderName('X-Assertion', ['x-assertion']); // true
 * identityHeaderName('X-Forwarded-For'); // false: rebuilt, not stripped as identity
 * ```
 */
export function identityHeaderName(name: string, extra: readonly string[] = []): boolean {
  const n = normalise(name);
  if (IDENTITY.has(n)) return true;
  for (const prefix of IDENTITY_PREFIXES) if (n.startsWith(prefix)) return true;
  for (const e of extra) if (normalise(e) === n) return true;
  return false;
}

/**
 * Whether {@link upstreamHeaders} refused the request (the same as `'error' in result`: the headers
 * it builds never have a key spelled `error`).
 */
export function isHeaderRefusal(result: OutgoingHttpHeaders | HeaderRefusal): result is HeaderRefusal {
  return 'error' in result;
}

/**
 * An identity value as it may go on the wire, or null to leave the header out: CR, LF, NUL and other
 * controls are refused (they would end or split the header); UTF-8 is sent as its bytes; a value over
 * {@link IDENTITY_VALUE_MAX} keeps the whole comma-separated entries that fit (a cut group path could
 * name another group), or is left out.
 */
function identityValue(value: string): string | null {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
  if (/[\u0000-\u0008\u000a-\u001f\u007f]/.test(value)) return null;
  let bytes = Buffer.from(value, 'utf8').toString('latin1');
  if (bytes.length <= IDENTITY_VALUE_MAX) return bytes;
  bytes = bytes.slice(0, IDENTITY_VALUE_MAX + 1);
  const cut = bytes.lastIndexOf(',');
  return cut > 0 ? bytes.slice(0, cut) : null;
}

/** The `Cookie` pairs the upstream may see: every `Cookie` line joined, the gateway's own removed. */
function upstreamCookie(lines: string[], ownCookie: (name: string) => boolean): string | null {
  const kept: string[] = [];
  for (const line of lines) {
    for (const part of line.split(';')) {
      const pair = part.trim();
      if (pair === '') continue;
      const at = pair.indexOf('=');
      const name = at === -1 ? '' : pair.slice(0, at).trim();
      if (!ownCookie(name)) kept.push(pair);
    }
  }
  return kept.length === 0 ? null : kept.join('; ');
}

/**
 * The headers to send upstream for `req` (docs/security.md, GATEWAY-1, GATEWAY-2, GATEWAY-4):
 *
 * 1. read from `req.rawHeaders`, so every spelling the client sent is seen;
 * 2. drop hop-by-hop headers and each header `Connection` names (before anything is injected); a
 *    `Connection` naming an identity header, `Cookie`, `Authorization` or `Host` refuses the request;
 * 3. drop identity and control headers ({@link identityHeaderName}) and the forwarding headers
 *    (`Forwarded`, `X-Forwarded-Host/-Proto/-Port/-Prefix/-Uri/-Method`, `X-Original-URL/-URI`,
 *    `X-Real-IP`), in every spelling;
 * 4. set `Host` and `X-Forwarded-Host` to `init.host`, `X-Forwarded-Proto`, and `X-Forwarded-For`
 *    (the incoming chain plus `clientIp` from a trusted proxy, else `clientIp` alone);
 * 5. remove the gateway's own cookies from `Cookie` (dropped when nothing is left);
 * 6. set each identity header of `init.identity` once (values with CR/LF/NUL left out, 8 KiB at most).
 *
 * @returns the headers, or a {@link HeaderRefusal} (check with {@link isHeaderRefusal}) to answer 400.
 * @example
 * ```ts
 * const headers = upstreamHeaders(req, {
 *   identity: { 'x-forwarded-user': 'alice' },
 *   ownCookie: (name) => name === 'labgate',
 *   clientIp: '203.0.113.7', proto: 'https', host: 'app.example.com', trusted: false,
 * });
 * if (isHeaderRefusal(headers)) return answer(400, headers.error);
 * ```
 * @see https://www.rfc-editor.org/rfc/rfc9110#section-7.6.1
 */
export function upstreamHeaders(
  req: IncomingMessage,
  init: UpstreamInit,
): OutgoingHttpHeaders | HeaderRefusal {
  const raw = req.rawHeaders;
  const extra = init.extraStrip ?? [];
  const named = new Set<string>();
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i]!.toLowerCase() !== 'connection') continue;
    for (const token of raw[i + 1]!.split(',')) {
      const name = token.trim().toLowerCase();
      if (name === '') continue;
      if (identityHeaderName(name, extra) || PROTECTED.has(normalise(name))) {
        return { error: 'The Connection header names a header the gateway sets or reads.' };
      }
      named.add(name);
    }
  }

  const headers: OutgoingHttpHeaders = {};
  const chain: string[] = [];
  const cookies: string[] = [];
  const upgrades: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    const value = raw[i + 1]!;
    if (name === 'upgrade' && init.upgrade) upgrades.push(value);
    if (HOP_BY_HOP.has(name) || named.has(name) || identityHeaderName(name, extra)) continue;
    const n = normalise(name);
    if (FORWARDING.has(n)) {
      // Only the exact spelling is a proxy's chain; `X_Forwarded_For` is a client's invention.
      if (name === 'x-forwarded-for') chain.push(value);
      continue;
    }
    if (name === 'host') continue;
    if (name === 'cookie') {
      cookies.push(value);
      continue;
    }
    // Node's parser has already refused differing lengths; one is enough.
    if (name === 'content-length') {
      headers[name] = value;
      continue;
    }
    // A client header named `error` goes on as `Error` (the same header on the wire), so a caller's
    // `'error' in result` still tells a refusal from headers.
    const key = name === 'error' ? 'Error' : name;
    const seen = headers[key];
    if (seen === undefined) headers[key] = value;
    else if (Array.isArray(seen)) seen.push(value);
    else headers[key] = [String(seen), value];
  }

  if (init.upgrade && upgrades.length > 0) {
    headers['upgrade'] = upgrades.join(', ');
    headers['connection'] = 'upgrade';
  }
  headers['host'] = init.host;
  const incoming = init.trusted ? chain.map((v) => v.trim()).filter((v) => v !== '') : [];
  headers['x-forwarded-for'] = [...incoming, init.clientIp].join(', ');
  headers['x-forwarded-proto'] = init.proto;
  headers['x-forwarded-host'] = init.host;
  const cookie = upstreamCookie(cookies, init.ownCookie);
  if (cookie !== null) headers['cookie'] = cookie;

  for (const [name, value] of Object.entries(init.identity)) {
    const safe = identityValue(value);
    if (safe !== null) headers[name.toLowerCase()] = safe;
  }
  return headers;
}

/**
 * The upstream's `Set-Cookie` lines without those naming one of the gateway's own cookies: an
 * upstream must not set or overwrite the session (docs/security.md, GATEWAY-4).
 *
 * @example
 * ```ts
 * filterSetCookie(['labgate=x; Path=/', 'theme=dark'], (name) => name === 'labgate'); // ['theme=dark']
 * ```
 */
export function filterSetCookie(
  values: string[] | undefined,
  ownCookie: (name: string) => boolean,
): string[] {
  if (values === undefined) return [];
  return values.filter((line) => {
    const pair = line.split(';', 1)[0]!;
    const at = pair.indexOf('=');
    return !ownCookie(at === -1 ? '' : pair.slice(0, at).trim());
  });
}
