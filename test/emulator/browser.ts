/**
 * A small scripted browser and OAuth client for the emulator's protocol tests: a cookie jar, requests
 * that never follow redirects by themselves, an HTML form parser, and the sign-in/consent walk a user
 * does at GitLab. Everything here is written from the specs and GitLab's page markup, never from the
 * emulator's code, so a bug in the emulator cannot hide by being mirrored here.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import http from 'node:http';
import type { RunningEmulator } from '../../src/emulator/index.js';

// ---------------------------------------------------------------------------------------------
// Cookies (RFC 6265, host-only cookies, Path honoured)

interface Cookie {
  name: string;
  value: string;
  path: string;
}

/** RFC 6265 §5.1.4: the directory of the request path. */
function defaultPath(pathname: string): string {
  if (!pathname.startsWith('/') || pathname.lastIndexOf('/') === 0) return '/';
  return pathname.slice(0, pathname.lastIndexOf('/'));
}

/** RFC 6265 §5.1.4 path-match. */
function pathMatches(requestPath: string, cookiePath: string): boolean {
  if (requestPath === cookiePath) return true;
  if (!requestPath.startsWith(cookiePath)) return false;
  return cookiePath.endsWith('/') || requestPath[cookiePath.length] === '/';
}

/** A cookie jar keyed by host (not port, as browsers do) that honours `Path`, `Max-Age` and `Expires`. */
export class CookieJar {
  readonly #hosts = new Map<string, Cookie[]>();

  /** Stores the `Set-Cookie` headers of a response to `url`. */
  store(url: string, setCookies: string[]): void {
    const { hostname, pathname } = new URL(url);
    const cookies = this.#hosts.get(hostname) ?? [];
    for (const header of setCookies) {
      const [pair = '', ...attributes] = header.split(';');
      const at = pair.indexOf('=');
      if (at <= 0) continue;
      const cookie: Cookie = {
        name: pair.slice(0, at).trim(),
        value: pair.slice(at + 1).trim(),
        path: defaultPath(pathname),
      };
      let expired = false;
      for (const attribute of attributes) {
        const eq = attribute.indexOf('=');
        const key = (eq === -1 ? attribute : attribute.slice(0, eq)).trim().toLowerCase();
        const value = eq === -1 ? '' : attribute.slice(eq + 1).trim();
        if (key === 'path' && value.startsWith('/')) cookie.path = value;
        if (key === 'max-age' && Number(value) <= 0) expired = true;
        if (key === 'expires' && Date.parse(value) <= Date.now()) expired = true;
      }
      const rest = cookies.filter((c) => !(c.name === cookie.name && c.path === cookie.path));
      if (!expired) rest.push(cookie);
      cookies.splice(0, cookies.length, ...rest);
    }
    this.#hosts.set(hostname, cookies);
  }

  /** The `Cookie` header for a request to `url`, longest paths first (RFC 6265 §5.4). */
  header(url: string): string {
    const { hostname, pathname } = new URL(url);
    return (this.#hosts.get(hostname) ?? [])
      .filter((c) => pathMatches(pathname, c.path))
      .sort((a, b) => b.path.length - a.path.length)
      .map((c) => `${c.name}=${c.value}`)
      .join('; ');
  }

  /** Every cookie stored for a host, for assertions. */
  cookies(hostname: string): Cookie[] {
    return [...(this.#hosts.get(hostname) ?? [])];
  }
}

// ---------------------------------------------------------------------------------------------
// HTML forms

/** One `<form>` of a page, with its successful controls. */
export interface Form {
  /** The absolute action URL (resolved against the page URL). */
  action: string;
  /** Lower case: `get` or `post` (Rails' `_method` is an ordinary field). */
  method: string;
  id: string | null;
  /** The `data-testid`s inside the form, its own included (buttons, fields). */
  testIds: string[];
  /** The element ids inside the form. */
  ids: string[];
  /** Named inputs (hidden, text, password, checked boxes), entities decoded; a later duplicate wins. */
  fields: Record<string, string>;
}

const NAMED_ENTITIES: Record<string, string> = {
  amp: '&',
  lt: '<',
  gt: '>',
  quot: '"',
  apos: "'",
  nbsp: '\u00a0',
};

/** Decodes the HTML character references that Rails and HAML emit. */
export function decodeEntities(text: string): string {
  return text.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, (whole, ref: string) => {
    if (ref[0] === '#') {
      const code =
        ref[1] === 'x' || ref[1] === 'X' ? Number.parseInt(ref.slice(2), 16) : Number(ref.slice(1));
      return Number.isFinite(code) ? String.fromCodePoint(code) : whole;
    }
    return NAMED_ENTITIES[ref.toLowerCase()] ?? whole;
  });
}

/** The attributes of a start tag's source (`name="x" checked`), values decoded. */
function attributes(source: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of source.matchAll(/([^\s=/>"']+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>"']+)))?/g)) {
    out[m[1]!.toLowerCase()] = decodeEntities(m[2] ?? m[3] ?? m[4] ?? '');
  }
  return out;
}

const SUBMITTED_TYPES = new Set(['hidden', 'text', 'password', 'email', 'number', 'tel', 'search', 'url']);

/** Every `<form>` of an HTML page; relative actions resolve against `pageUrl`. */
export function forms(html: string, pageUrl?: string): Form[] {
  const found: Form[] = [];
  for (const m of html.matchAll(/<form\b([^>]*)>([\s\S]*?)<\/form>/gi)) {
    const own = attributes(m[1]!);
    const inner = m[2]!;
    const fields: Record<string, string> = {};
    for (const input of inner.matchAll(/<input\b([^>]*)>/gi)) {
      const a = attributes(input[1]!);
      const type = (a['type'] ?? 'text').toLowerCase();
      if (!a['name']) continue;
      if (SUBMITTED_TYPES.has(type)) fields[a['name']] = a['value'] ?? '';
      else if ((type === 'checkbox' || type === 'radio') && 'checked' in a)
        fields[a['name']] = a['value'] ?? 'on';
    }
    const inside = (name: string) =>
      [...`${m[1]} ${inner}`.matchAll(new RegExp(`\\b${name}\\s*=\\s*(?:"([^"]*)"|'([^']*)')`, 'gi'))].map(
        (x) => decodeEntities(x[1] ?? x[2] ?? ''),
      );
    const action = own['action'] ?? '';
    found.push({
      action: pageUrl ? new URL(action, pageUrl).href : action,
      method: (own['method'] ?? 'get').toLowerCase(),
      id: own['id'] ?? null,
      testIds: inside('data-testid'),
      ids: inside('id'),
      fields,
    });
  }
  return found;
}

// ---------------------------------------------------------------------------------------------
// The browser

/** A response as the browser saw it: redirects are never followed for you. */
export interface Page {
  status: number;
  /** The URL that was requested. */
  url: string;
  /** The absolute `Location` of a redirect, or null. */
  location: string | null;
  headers: Headers;
  body: string;
  /** The page's forms, actions resolved. */
  forms: Form[];
}

/** The form holding an element with this `data-testid` (or this field name). */
export function formWith(page: Page, match: { testId?: string; field?: string }): Form {
  const form = page.forms.find(
    (f) =>
      (match.testId === undefined || f.testIds.includes(match.testId)) &&
      (match.field === undefined || match.field in f.fields),
  );
  if (!form) {
    throw new Error(
      `no form with ${JSON.stringify(match)} on ${page.url} (status ${page.status}):\n${page.body.slice(0, 2000)}`,
    );
  }
  return form;
}

/** The outcome of walking through GitLab's sign-in to the authorization endpoint. */
export type AuthorizeOutcome =
  /** GitLab's consent page (Authorize / Deny). */
  | { kind: 'consent'; page: Page }
  /** A 302 that leaves the emulator: the answer to the client. */
  | { kind: 'redirect'; location: string; page: Page }
  /** Any other page: an error page, the "Redirecting" page, a sign-in page with a flash… */
  | { kind: 'page'; page: Page };

export interface SignInOptions {
  /** The emulator's base URL: redirects below it are followed, others are returned. */
  url: string;
  /** Where the walk starts (an authorize URL, the device page…). */
  authorizeUrl: string;
  login: string;
  password: string;
  /** The two-factor code (TOTP or recovery code), if the user has 2FA. */
  otp?: string;
}

/**
 * A `fetch` over node:http that sends the headers as given. Node's own `fetch` always sends
 * `Sec-Fetch-Mode: cors`, which marks a script's request; a browser's navigation says `navigate`.
 */
export const navigationFetch: typeof fetch = async (input, init = {}) => {
  const request = new Request(input, init);
  const url = new URL(request.url);
  const body = request.body ? Buffer.from(await request.arrayBuffer()) : undefined;
  const headers: Record<string, string> = {};
  for (const [name, value] of request.headers) headers[name] = value;
  if (body) headers['content-length'] = String(body.length);
  return new Promise<Response>((resolve, reject) => {
    const outgoing = http.request(
      {
        host: url.hostname,
        port: url.port,
        path: `${url.pathname}${url.search}`,
        method: request.method,
        headers,
      },
      (incoming) => {
        const chunks: Buffer[] = [];
        incoming.on('data', (chunk: Buffer) => chunks.push(chunk));
        incoming.on('error', reject);
        incoming.on('end', () => {
          const answer = new Headers();
          for (let i = 0; i < incoming.rawHeaders.length; i += 2)
            answer.append(incoming.rawHeaders[i]!, incoming.rawHeaders[i + 1]!);
          const status = incoming.statusCode ?? 0;
          const empty = status === 204 || status === 304 || request.method === 'HEAD';
          resolve(new Response(empty ? null : Buffer.concat(chunks), { status, headers: answer }));
        });
      },
    );
    outgoing.on('error', reject);
    outgoing.end(body);
  });
};

/** A scripted browser: one cookie jar, no automatic redirects, requests sent as navigations. */
export class Browser {
  readonly jar = new CookieJar();
  readonly #fetch: typeof fetch;

  /** `fetch` may route some origins elsewhere, e.g. an app's `handle(request)` without a socket. */
  constructor(options: { fetch?: typeof fetch } = {}) {
    this.#fetch = options.fetch ?? navigationFetch;
  }

  /** Sends a request with the jar's cookies and stores the cookies of the answer. */
  async request(
    url: string,
    init: { method?: string; body?: URLSearchParams; headers?: Record<string, string> } = {},
  ): Promise<Page> {
    const headers = new Headers(init.headers);
    // A click or a typed address: the browser navigates (a form posted by a click navigates too).
    if (!headers.has('sec-fetch-mode')) headers.set('sec-fetch-mode', 'navigate');
    if (!headers.has('accept')) headers.set('accept', '*/*');
    const cookie = this.jar.header(url);
    if (cookie) headers.set('cookie', cookie);
    if (init.body) headers.set('content-type', 'application/x-www-form-urlencoded');
    const res = await this.#fetch(url, {
      method: init.method ?? 'GET',
      headers,
      redirect: 'manual',
      ...(init.body ? { body: init.body.toString() } : {}),
    });
    this.jar.store(url, res.headers.getSetCookie());
    const body = await res.text();
    const location = res.headers.get('location');
    return {
      status: res.status,
      url,
      location: location === null ? null : new URL(location, url).href,
      headers: res.headers,
      body,
      forms: forms(body, url),
    };
  }

  get(url: string): Promise<Page> {
    return this.request(url);
  }

  /**
   * Submits a form with its fields; `overrides` replace fields, and a `null` override removes one
   * (to send a form without its CSRF token, say).
   */
  submit(form: Form, overrides: Record<string, string | null> = {}): Promise<Page> {
    const fields = new URLSearchParams();
    for (const [name, value] of Object.entries({ ...form.fields, ...overrides })) {
      if (value !== null) fields.append(name, value);
    }
    if (form.method === 'get') {
      const target = new URL(form.action);
      target.search = fields.toString();
      return this.get(target.href);
    }
    return this.request(form.action, { method: 'POST', body: fields });
  }

  /**
   * Starts at `authorizeUrl` and does what a user does: follows redirects inside the emulator, fills
   * GitLab's sign-in form (`user[login]`, `user[password]`, `authenticity_token`) and its two-factor
   * form (`user[otp_attempt]`), once each. Stops at the consent page, at a redirect out of the
   * emulator (the answer to the client) or at any other page.
   */
  async signInAndAuthorize(options: SignInOptions): Promise<AuthorizeOutcome> {
    const inside = (location: string) => location === options.url || location.startsWith(`${options.url}/`);
    let page = await this.get(options.authorizeUrl);
    let signedIn = false;
    let otpSent = false;
    for (let step = 0; step < 20; step++) {
      if (page.status >= 300 && page.status < 400 && page.location) {
        if (!inside(page.location)) return { kind: 'redirect', location: page.location, page };
        page = await this.get(page.location);
        continue;
      }
      const signIn = page.forms.find((f) => 'user[login]' in f.fields);
      if (signIn && !signedIn) {
        signedIn = true;
        page = await this.submit(signIn, {
          'user[login]': options.login,
          'user[password]': options.password,
        });
        continue;
      }
      const twoFactor = page.forms.find((f) => 'user[otp_attempt]' in f.fields);
      if (twoFactor && !otpSent && options.otp !== undefined) {
        otpSent = true;
        page = await this.submit(twoFactor, { 'user[otp_attempt]': options.otp });
        continue;
      }
      if (page.forms.some((f) => f.testIds.includes('authorization-button')))
        return { kind: 'consent', page };
      return { kind: 'page', page };
    }
    throw new Error(`too many redirects from ${options.authorizeUrl}`);
  }

  /**
   * Does what a user does until GitLab answers the client: signs in, approves the consent page when
   * GitLab shows one, follows GitLab's "Redirecting" page. Returns the URL GitLab sends the browser to.
   */
  async approveToClient(options: SignInOptions): Promise<string> {
    const outcome = await this.signInAndAuthorize(options);
    if (outcome.kind === 'redirect') return outcome.location;
    if (outcome.kind === 'consent') {
      const approved = await this.submit(formWith(outcome.page, { testId: 'authorization-button' }));
      if (!approved.location) throw new Error(`approving failed: ${approved.status}`);
      return approved.location;
    }
    return redirectingLink(outcome.page);
  }
}

/** The link of GitLab's 200 "Redirecting" page (auto-approval), entities decoded. */
export function redirectingLink(page: Page): string {
  const match = /<a href="([^"]*)">Click here to redirect to/.exec(page.body);
  if (!match) throw new Error(`not a "Redirecting" page:\n${page.body.slice(0, 2000)}`);
  return decodeEntities(match[1]!);
}

/** The `<pre>` description of GitLab's OAuth error page, or null. */
export function errorPageDescription(page: Page): string | null {
  const match = /<h3 class="page-title">An error has occurred<\/h3>[\s\S]*?<pre>([\s\S]*?)<\/pre>/.exec(
    page.body,
  );
  return match ? decodeEntities(match[1]!) : null;
}

// ---------------------------------------------------------------------------------------------
// PKCE and TOTP, computed here independently of the emulator

/** RFC 7636 S256: a 43-character verifier and its challenge. */
export function pkce(): { verifier: string; challenge: string; method: 'S256' } {
  const verifier = randomBytes(32).toString('base64url');
  const challenge = createHash('sha256').update(verifier, 'ascii').digest('base64url');
  return { verifier, challenge, method: 'S256' };
}

function base32(secret: string): Buffer {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const char of secret.replace(/=+$/, '').toUpperCase()) {
    const index = alphabet.indexOf(char);
    if (index < 0) throw new TypeError(`not base32: ${secret}`);
    bits += index.toString(2).padStart(5, '0');
  }
  const bytes = bits.match(/.{8}/g) ?? [];
  return Buffer.from(bytes.map((b) => Number.parseInt(b, 2)));
}

/** RFC 6238 TOTP (HMAC-SHA1, 30 s steps, 6 digits) of a base32 secret at `timeMs`. */
export function totp(secret: string, timeMs: number): string {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(timeMs / 1000 / 30)));
  const mac = createHmac('sha1', base32(secret)).update(counter).digest();
  const offset = mac[19]! & 0xf;
  const binary =
    ((mac[offset]! & 0x7f) << 24) | (mac[offset + 1]! << 16) | (mac[offset + 2]! << 8) | mac[offset + 3]!;
  return String(binary % 1_000_000).padStart(6, '0');
}

// ---------------------------------------------------------------------------------------------
// The OAuth client side, with plain fetch

/** A successful token response. */
export interface TokenSet {
  access_token: string;
  token_type: string;
  expires_in: number;
  refresh_token: string;
  scope: string;
  created_at: number;
  id_token?: string;
}

/** POSTs an urlencoded form (undefined fields are left out). */
export function postForm(
  url: string,
  fields: Record<string, string | undefined>,
  headers: Record<string, string> = {},
): Promise<Response> {
  const body = new URLSearchParams();
  for (const [name, value] of Object.entries(fields)) if (value !== undefined) body.append(name, value);
  return fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: body.toString(),
    redirect: 'manual',
  });
}

/** An authorize URL with these query parameters (undefined ones left out). */
export function authorizeUrl(baseUrl: string, params: Record<string, string | undefined>): string {
  const url = new URL(`${baseUrl}/oauth/authorize`);
  for (const [name, value] of Object.entries(params))
    if (value !== undefined) url.searchParams.set(name, value);
  return url.href;
}

/** The query parameters of a redirect to the client. */
export function callbackParams(location: string): Record<string, string> {
  return Object.fromEntries(new URL(location).searchParams);
}

/** The user's password from the fixtures. */
export function passwordOf(gitlab: RunningEmulator, username: string): string {
  const user = gitlab.users.find((u) => u.username === username);
  if (!user) throw new Error(`no user ${username}`);
  return user.password;
}

export interface CodeFlowOptions {
  /** Default `alice`. */
  user?: string;
  /** Index in `gitlab.applications` (default 0, the confidential demo app). */
  app?: number;
  /** Default `openid profile email read_user`. */
  scope?: string;
  nonce?: string;
  /** Reuse a signed-in browser. */
  browser?: Browser;
}

/**
 * The authorization code flow with PKCE S256 as a client does it: authorize, sign in, approve the
 * consent page (or take the auto-approval link), redeem the code with `client_secret_post`.
 */
export async function codeFlow(
  gitlab: RunningEmulator,
  options: CodeFlowOptions = {},
): Promise<{ tokens: TokenSet; browser: Browser }> {
  const app = gitlab.applications[options.app ?? 0]!;
  const user = options.user ?? 'alice';
  const browser = options.browser ?? new Browser();
  const { verifier, challenge } = pkce();
  const redirectUri = app.redirectUris.find((u) => u.startsWith('http://127.0.0.1')) ?? app.redirectUris[0]!;
  const outcome = await browser.signInAndAuthorize({
    url: gitlab.url,
    login: user,
    password: passwordOf(gitlab, user),
    authorizeUrl: authorizeUrl(gitlab.url, {
      client_id: app.uid,
      redirect_uri: redirectUri,
      response_type: 'code',
      scope: options.scope ?? 'openid profile email read_user',
      state: 'flow-state',
      nonce: options.nonce,
      code_challenge: challenge,
      code_challenge_method: 'S256',
    }),
  });
  let location: string;
  if (outcome.kind === 'consent') {
    const approved = await browser.submit(formWith(outcome.page, { testId: 'authorization-button' }));
    if (approved.status !== 302 || !approved.location) throw new Error(`approval failed: ${approved.status}`);
    location = approved.location;
  } else if (outcome.kind === 'redirect') {
    location = outcome.location;
  } else {
    location = redirectingLink(outcome.page);
  }
  const code = callbackParams(location)['code'];
  if (!code) throw new Error(`no code in ${location}`);
  const res = await postForm(`${gitlab.url}/oauth/token`, {
    grant_type: 'authorization_code',
    code,
    redirect_uri: redirectUri,
    client_id: app.uid,
    client_secret: app.confidential ? app.secret : undefined,
    code_verifier: verifier,
  });
  if (res.status !== 200) throw new Error(`token request failed: ${res.status} ${await res.text()}`);
  return { tokens: (await res.json()) as TokenSet, browser };
}
