/**
 * Cookie parsing and serialisation for labgate's own cookies. Attribute values never come from
 * user input.
 */

/** Parses a `Cookie` header. A name sent twice is kept once, and flagged, so callers can refuse it. */
export function parseCookieHeader(header: string | null | undefined): {
  cookies: Map<string, string>;
  duplicated: Set<string>;
} {
  const cookies = new Map<string, string>();
  const duplicated = new Set<string>();
  if (!header) return { cookies, duplicated };
  for (const part of header.split(';')) {
    const at = part.indexOf('=');
    if (at <= 0) continue;
    const name = part.slice(0, at).trim();
    const value = part.slice(at + 1).trim();
    if (cookies.has(name)) duplicated.add(name);
    else cookies.set(name, value);
  }
  return { cookies, duplicated };
}

/**
 * One cookie of a `Cookie` header, read as {@link parseCookieHeader} reads it but without building a
 * map of them all: its value, `undefined` when it is absent, `null` when the name is there twice.
 */
export function readCookie(header: string, name: string): string | null | undefined {
  let value: string | undefined;
  let start = 0;
  while (start < header.length) {
    let end = header.indexOf(';', start);
    if (end === -1) end = header.length;
    const at = header.indexOf('=', start);
    if (at > start && at < end && header.slice(start, at).trim() === name) {
      if (value !== undefined) return null;
      value = header.slice(at + 1, end).trim();
    }
    start = end + 1;
  }
  return value;
}

/** Attributes of a cookie labgate sets. */
export interface CookieOptions {
  maxAge?: number;
  secure: boolean;
  path?: string;
  sameSite?: 'Lax' | 'Strict';
}

/** Serialises a `Set-Cookie` value; HttpOnly always. */
export function serializeCookie(name: string, value: string, options: CookieOptions): string {
  let cookie = `${name}=${value}; Path=${options.path ?? '/'}; HttpOnly; SameSite=${options.sameSite ?? 'Lax'}`;
  if (options.secure) cookie += '; Secure';
  if (options.maxAge !== undefined) cookie += `; Max-Age=${Math.max(0, Math.floor(options.maxAge))}`;
  return cookie;
}

/** A `Set-Cookie` value that deletes a cookie. */
export function clearCookie(name: string, options: { secure: boolean; path?: string }): string {
  return serializeCookie(name, '', { ...options, maxAge: 0 });
}
