/**
 * `labgate doctor --signin`: a real sign-in at GitLab that reports exactly what GitLab answered. GitLab
 * checks the redirect URI and the scopes only after someone has signed in, so no anonymous probe can
 * tell whether they are right (docs/doctor.md#signin-redirect-uri).
 *
 * Two ways to sign in. Interactive: the link is printed, the user opens it, and the callback is caught
 * on the configured redirect URI when that is a loopback address (otherwise the user pastes the address
 * the browser landed on, or GitLab's error message). Scripted, for test instances and the emulator: a
 * small cookie-keeping walker fills GitLab's own sign-in and consent forms as a given user.
 *
 * After the callback the code is exchanged as labgate exchanges it, the granted scopes are compared
 * with those asked for, the signed-in user is looked up, each group and project the policy names is
 * looked up as that user, and the token is revoked so that the probe leaves nothing behind.
 *
 * Everything beyond `node:*` and src/cli loads lazily (test/package/imports.test.ts).
 */
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createInterface } from 'node:readline';
import type { Rule } from '../core/access.js';
import type { CheckResult } from './report.js';

/** What {@link signInProbe} needs: the configuration as the app or gateway reads it, and who signs in. */
export interface SignInProbeInput {
  /** GitLab's base URL as configured (may include a sub-path). */
  gitlabUrl: string;
  clientId: string;
  clientSecret: string | null;
  /** LABGATE_URL + /auth/callback (or /oauth2/callback for the gateway). */
  redirectUri: string;
  scopes: string[];
  /** Policy rules in the LABGATE_ALLOW grammar whose groups/projects should exist and be visible. */
  allow: string[];
  /** Scripted: drive GitLab's own sign-in and consent forms as this user (test instances, the emulator). */
  user?: { login: string; password: string } | undefined;
  /** Interactive: where to print the link (stderr) — the user opens it in a browser. */
  print: (line: string) => void;
  /** Give up after this many ms (interactive default 5 min). */
  timeoutMs?: number;
  fetch?: typeof fetch;
  /**
   * Interactive: reads one line the user pastes (the address the browser landed on, or GitLab's error
   * message); null when there is nothing more to read. Default: a line from stdin. Stops at `signal`.
   */
  readLine?: (signal: AbortSignal) => Promise<string | null>;
}

/** Interactive sign-ins wait this long for the user by default. */
const INTERACTIVE_TIMEOUT_MS = 5 * 60_000;
/** A scripted sign-in is a handful of requests. */
const SCRIPTED_TIMEOUT_MS = 60_000;
/** Each request to GitLab (docs/security.md, EXCHANGE-1). */
const REQUEST_TIMEOUT_MS = 30_000;
/** GitLab's HTML pages are far smaller; a larger answer is not GitLab's page. */
const PAGE_MAX_BYTES = 4 * 1024 * 1024;
const JSON_MAX_BYTES = 512 * 1024;
/** Sign-in, consent and a few redirects take about eight steps. */
const MAX_STEPS = 20;

// GitLab's (Doorkeeper's) own texts, as its error page and its JSON errors write them.
const TEXTS = {
  invalid_redirect_uri: 'The redirect URI included is not valid.',
  invalid_scope: 'The requested scope is invalid, unknown, or malformed.',
  invalid_client:
    'Client authentication failed due to unknown client, no client authentication included, or unsupported authentication method.',
  unconfirmed_email: 'Verify the email address in your account profile before you sign in.',
  access_denied: 'The resource owner or authorization server denied the request.',
} as const;

const DOCS = {
  redirect: 'docs/doctor.md#signin-redirect-uri',
  scopes: 'docs/doctor.md#signin-scopes',
  user: 'docs/doctor.md#signin-user',
  policy: 'docs/doctor.md#signin-policy',
} as const;

const TITLES = {
  redirect: 'GitLab accepts the redirect URI',
  scopes: 'GitLab grants the scopes asked for',
  user: 'A sign-in at GitLab completes',
} as const;

// ---------------------------------------------------------------------------------------------
// The probe

/** What the lazily loaded labgate modules give the probe. */
interface Tools {
  text: (value: unknown, max?: number) => string;
  parseRule: (text: string) => Rule;
  readCapped: (
    message: { body: ReadableStream<Uint8Array> | null; headers: Headers },
    limit: number,
    tooLarge: () => Error,
  ) => Promise<Uint8Array>;
}

/** GitLab's endpoints, from its discovery document or GitLab's fixed paths. */
interface Endpoints {
  base: string;
  authorize: string;
  token: string;
  revoke: string;
  userinfo: string | null;
  api: string;
  scopesSupported: string[] | null;
}

/** Where the sign-in ended before the code exchange. */
type Arrival =
  /** The browser came back to the redirect URI (with a code, or with an error). */
  | { kind: 'callback'; url: URL }
  /** GitLab's "An error has occurred" page, with its text. */
  | { kind: 'gitlab-error'; description: string }
  /** The sign-in did not get that far (wrong password, two-factor, no answer…). */
  | { kind: 'failed'; detail: string; fix: string };

/** One probe run: its input, its tools, its secrets. */
interface Probe {
  input: SignInProbeInput;
  tools: Tools;
  fetch: typeof fetch;
  endpoints: Endpoints;
  state: string;
  verifier: string;
  redirect: URL;
}

/**
 * Runs a real sign-in at GitLab and reports what GitLab answered, one result each for the redirect
 * URI (`signin-redirect-uri`), the scopes (`signin-scopes`), the sign-in and who signed in
 * (`signin-user`), and each `group:`, `group-exact:`, `project:`, `group-id:` and `project-id:` rule
 * of `allow` (`policy-<kind>-<path>`: the group or project exists and the signed-in user sees it).
 * Rules that do not parse, and rules of other kinds, are left to the policy check. The probe's token
 * is revoked before it returns. Never throws for anything GitLab or the user does.
 *
 * @example
 * ```ts
 * const results = await signInProbe({
 *   gitlabUrl: 'https://gitlab.example.com',
 *   clientId, clientSecret,
 *   redirectUri: 'http://127.0.0.1:3000/auth/callback',
 *   scopes: ['openid', 'profile', 'email', 'read_api'],
 *   allow: ['group:acme/platform'],
 *   print: (line) => process.stderr.write(`${line}\n`),
 * });
 * ```
 */
export async function signInProbe(input: SignInProbeInput): Promise<CheckResult[]> {
  const [log, access, body] = await Promise.all([
    import('../core/log.js'),
    import('../core/access.js'),
    import('../core/body.js'),
  ]);
  const tools: Tools = { text: log.logText, parseRule: access.parseRule, readCapped: body.readCapped };
  const policy = policyTargets(input.allow, tools);
  const stopped = (fail: CheckResult): CheckResult[] => [
    fail,
    skip('signin-scopes', TITLES.scopes, DOCS.scopes, 'Not checked: the sign-in did not start.'),
    skip('signin-user', TITLES.user, DOCS.user, 'Not checked: the sign-in did not start.'),
    ...policy.map((t) => skipPolicy(t, 'Not checked: the sign-in did not start.')),
  ];

  let redirect: URL;
  try {
    redirect = new URL(input.redirectUri);
    if (redirect.protocol !== 'http:' && redirect.protocol !== 'https:') throw new TypeError('not http');
  } catch {
    return stopped({
      id: 'signin-redirect-uri',
      title: TITLES.redirect,
      status: 'fail',
      detail: `The redirect URI ${JSON.stringify(tools.text(input.redirectUri))} is not an http(s) URL.`,
      fix: 'Set LABGATE_URL to the public origin of the app, such as https://app.example.com.',
      docs: DOCS.redirect,
    });
  }

  const doFetch = input.fetch ?? globalThis.fetch;
  let endpoints: Endpoints;
  try {
    endpoints = await discover(input.gitlabUrl, doFetch, tools);
  } catch (error) {
    return stopped({
      id: 'signin-redirect-uri',
      title: TITLES.redirect,
      status: 'fail',
      detail: `Could not start a sign-in: GitLab did not answer at ${tools.text(input.gitlabUrl)} (${describe(error, tools)}).`,
      fix: 'Check GITLAB_URL and that this machine reaches GitLab (the gitlab-reachable check).',
      docs: DOCS.redirect,
    });
  }

  const probe: Probe = {
    input,
    tools,
    fetch: doFetch,
    endpoints,
    state: randomBytes(16).toString('base64url'),
    verifier: randomBytes(32).toString('base64url'),
    redirect,
  };
  const authorizeUrl = new URL(endpoints.authorize);
  const params: Record<string, string> = {
    client_id: input.clientId,
    redirect_uri: input.redirectUri,
    response_type: 'code',
    state: probe.state,
    nonce: randomBytes(16).toString('base64url'),
    code_challenge: createHash('sha256').update(probe.verifier).digest('base64url'),
    code_challenge_method: 'S256',
  };
  // Without a scope GitLab grants its default, `api`: only an empty list leaves the parameter out.
  if (input.scopes.length > 0) params['scope'] = input.scopes.join(' ');
  for (const [name, value] of Object.entries(params)) authorizeUrl.searchParams.set(name, value);

  const timeoutMs = input.timeoutMs ?? (input.user ? SCRIPTED_TIMEOUT_MS : INTERACTIVE_TIMEOUT_MS);
  const deadline = AbortSignal.timeout(timeoutMs);
  let arrival: Arrival;
  try {
    arrival = input.user
      ? await walk(probe, authorizeUrl.href, input.user, deadline)
      : await waitForBrowser(probe, authorizeUrl.href, deadline, timeoutMs);
  } catch (error) {
    arrival = deadline.aborted
      ? input.user
        ? {
            kind: 'failed',
            detail: `The sign-in did not finish within ${duration(timeoutMs)}.`,
            fix: 'Run the probe again; a GitLab this slow also fails real sign-ins.',
          }
        : {
            kind: 'failed',
            detail: `GitLab did not send the browser to ${input.redirectUri} within ${duration(timeoutMs)}.`,
            fix: [
              'Run the probe again and sign in within that time. If GitLab shows "An error has occurred" instead,',
              'paste its message: "The redirect URI included is not valid." means the redirect URI is not registered,',
              '"The requested scope is invalid, unknown, or malformed." that the application lacks a scope.',
            ].join('\n'),
          }
      : {
          kind: 'failed',
          detail: `The sign-in stopped: ${describe(error, tools)}.`,
          fix: 'Check that GitLab is reachable from here, then run the probe again.',
        };
  }
  return judge(probe, arrival, policy);
}

// ---------------------------------------------------------------------------------------------
// Discovery

async function discover(gitlabUrl: string, doFetch: typeof fetch, tools: Tools): Promise<Endpoints> {
  const base = gitlabUrl.trim().replace(/\/+$/, '');
  const url = new URL(`${base}/.well-known/openid-configuration`);
  const res = await doFetch(url, {
    headers: { accept: 'application/json' },
    redirect: 'manual',
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  const fixed: Endpoints = {
    base,
    authorize: `${base}/oauth/authorize`,
    token: `${base}/oauth/token`,
    revoke: `${base}/oauth/revoke`,
    userinfo: null,
    api: `${base}/api/v4`,
    scopesSupported: null,
  };
  // An instance without OpenID Connect (old self-managed) still has Doorkeeper's fixed paths.
  if (res.status !== 200) {
    await res.body?.cancel().catch(() => {});
    if (res.status === 404) return fixed;
    throw new Error(`discovery answered ${res.status}`);
  }
  const doc = await readJson(res, tools);
  const str = (name: string): string | null => {
    const value = doc?.[name];
    return typeof value === 'string' && /^https?:\/\//.test(value) ? value : null;
  };
  const scopes = doc?.['scopes_supported'];
  return {
    base,
    authorize: str('authorization_endpoint') ?? fixed.authorize,
    token: str('token_endpoint') ?? fixed.token,
    revoke: str('revocation_endpoint') ?? fixed.revoke,
    userinfo: str('userinfo_endpoint'),
    api: fixed.api,
    scopesSupported: Array.isArray(scopes) ? scopes.filter((s): s is string => typeof s === 'string') : null,
  };
}

// ---------------------------------------------------------------------------------------------
// Scripted: GitLab's own forms, driven as a browser would

interface Cookie {
  name: string;
  value: string;
  path: string;
}

/** Host-only cookies (RFC 6265) with `Path`; enough for GitLab's session and CSRF cookies. */
function cookieJar() {
  const hosts = new Map<string, Cookie[]>();
  return {
    store(url: URL, setCookies: string[]): void {
      const cookies = hosts.get(url.hostname) ?? [];
      for (const header of setCookies) {
        const [pair = '', ...attributes] = header.split(';');
        const eq = pair.indexOf('=');
        if (eq <= 0) continue;
        const slash = url.pathname.lastIndexOf('/');
        const cookie: Cookie = {
          name: pair.slice(0, eq).trim(),
          value: pair.slice(eq + 1).trim(),
          path: slash > 0 ? url.pathname.slice(0, slash) : '/',
        };
        let expired = false;
        for (const attribute of attributes) {
          const at = attribute.indexOf('=');
          const key = (at === -1 ? attribute : attribute.slice(0, at)).trim().toLowerCase();
          const value = at === -1 ? '' : attribute.slice(at + 1).trim();
          if (key === 'path' && value.startsWith('/')) cookie.path = value;
          if (key === 'max-age' && Number(value) <= 0) expired = true;
          if (key === 'expires' && Date.parse(value) <= Date.now()) expired = true;
        }
        const kept = cookies.filter((c) => !(c.name === cookie.name && c.path === cookie.path));
        if (!expired) kept.push(cookie);
        cookies.splice(0, cookies.length, ...kept);
      }
      hosts.set(url.hostname, cookies);
    },
    header(url: URL): string {
      const matches = (path: string) =>
        url.pathname === path ||
        (url.pathname.startsWith(path) && (path.endsWith('/') || url.pathname[path.length] === '/'));
      return (hosts.get(url.hostname) ?? [])
        .filter((c) => matches(c.path))
        .sort((a, b) => b.path.length - a.path.length)
        .map((c) => `${c.name}=${c.value}`)
        .join('; ');
    },
  };
}

/** One `<form>`: its action (absolute), method and successful named inputs. */
interface Form {
  action: string;
  method: string;
  fields: Record<string, string>;
  /** The form's markup, for telling GitLab's buttons apart. */
  html: string;
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: ' ' };

function decodeEntities(text: string): string {
  return text.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, (whole, ref: string) => {
    if (ref[0] === '#') {
      const hex = ref[1] === 'x' || ref[1] === 'X';
      const code = hex ? Number.parseInt(ref.slice(2), 16) : Number(ref.slice(1));
      return Number.isInteger(code) && code >= 0 && code <= 0x10ffff ? String.fromCodePoint(code) : whole;
    }
    return ENTITIES[ref.toLowerCase()] ?? whole;
  });
}

function attributesOf(source: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of source.matchAll(/([^\s=/>"']+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>"']+)))?/g)) {
    out[m[1]!.toLowerCase()] = decodeEntities(m[2] ?? m[3] ?? m[4] ?? '');
  }
  return out;
}

/** Text with its tags removed, entities decoded and white space collapsed. */
function plainText(html: string): string {
  return decodeEntities(html.replace(/<[^>]*>/g, ' '))
    .replace(/\s+/g, ' ')
    .trim();
}

const SENT_TYPES = new Set(['hidden', 'text', 'password', 'email', 'number', 'tel', 'search', 'url']);

function formsOf(html: string, pageUrl: URL): Form[] {
  const found: Form[] = [];
  for (const m of html.matchAll(/<form\b([^>]*)>([\s\S]*?)<\/form>/gi)) {
    const own = attributesOf(m[1]!);
    const fields: Record<string, string> = {};
    for (const input of m[2]!.matchAll(/<input\b([^>]*)>/gi)) {
      const a = attributesOf(input[1]!);
      const type = (a['type'] ?? 'text').toLowerCase();
      const name = a['name'];
      if (!name) continue;
      if (SENT_TYPES.has(type)) fields[name] = a['value'] ?? '';
      else if ((type === 'checkbox' || type === 'radio') && 'checked' in a) fields[name] = a['value'] ?? 'on';
    }
    let action: string;
    try {
      action = new URL(own['action'] ?? '', pageUrl).href;
    } catch {
      continue;
    }
    found.push({ action, method: (own['method'] ?? 'get').toLowerCase(), fields, html: m[0] });
  }
  return found;
}

/** The text of GitLab's OAuth error page (`doorkeeper/authorizations/error`), or null. */
function errorPageText(html: string): string | null {
  const at = html.search(/An error has occurred\s*<\/h\d>/i);
  if (at === -1) return null;
  const pre = /<pre\b[^>]*>([\s\S]*?)<\/pre>/i.exec(html.slice(at));
  return pre ? plainText(pre[1]!) : plainText(html.slice(at)).slice(0, 500);
}

/** The flash message of GitLab's sign-in page ("Invalid login or password."), or null. */
function flashText(html: string): string | null {
  const m =
    /<div\b[^>]*data-testid="alert-danger"[^>]*>([\s\S]*?)<\/div>/i.exec(html) ??
    /<div\b[^>]*class="[^"]*flash-alert[^"]*"[^>]*>([\s\S]*?)<\/div>/i.exec(html);
  const text = m ? plainText(m[1]!) : '';
  return text === '' ? null : text;
}

/** The link of GitLab's 200 "Redirecting" page (an application it approves without asking), or null. */
function redirectingLink(html: string, pageUrl: URL): URL | null {
  const m = /<a\b[^>]*href="([^"]*)"[^>]*>\s*Click here to redirect to/i.exec(html);
  if (!m) return null;
  try {
    return new URL(decodeEntities(m[1]!), pageUrl);
  } catch {
    return null;
  }
}

/** GitLab's consent form: the POST form of the Authorize button, not the Deny one (`_method=delete`). */
function consentForm(forms: Form[]): Form | undefined {
  const candidates = forms.filter(
    (f) =>
      f.method === 'post' &&
      'client_id' in f.fields &&
      'redirect_uri' in f.fields &&
      (f.fields['_method'] ?? 'post').toLowerCase() === 'post',
  );
  return candidates.find((f) => /authorization-button|Authorize/.test(f.html)) ?? candidates[0];
}

function pageTitle(html: string): string {
  const m = /<title\b[^>]*>([\s\S]*?)<\/title>/i.exec(html);
  return m ? plainText(m[1]!) : '';
}

/** Whether `url` is the redirect URI (GitLab sends the browser to exactly the URI it was given). */
function isCallback(url: URL, redirect: URL): boolean {
  return url.origin === redirect.origin && url.pathname === redirect.pathname;
}

/**
 * Walks GitLab's pages as a browser would: follows GitLab's redirects, fills the sign-in form once,
 * approves the consent page once, follows the "Redirecting" page, and stops at the redirect URI, at
 * GitLab's error page, or at anything else.
 */
async function walk(
  probe: Probe,
  authorizeUrl: string,
  user: { login: string; password: string },
  deadline: AbortSignal,
): Promise<Arrival> {
  const { tools, redirect } = probe;
  const jar = cookieJar();
  const origins = new Set([new URL(probe.endpoints.base).origin, new URL(authorizeUrl).origin]);
  const inside = (url: URL) => origins.has(url.origin);
  let next: { url: URL; form?: URLSearchParams; referer?: string } = { url: new URL(authorizeUrl) };
  let signedIn = false;
  let approved = false;
  for (let step = 0; step < MAX_STEPS; step++) {
    const headers = new Headers({
      accept: 'text/html,application/xhtml+xml',
      'user-agent': 'labgate-doctor',
    });
    const cookie = jar.header(next.url);
    if (cookie) headers.set('cookie', cookie);
    if (next.form) {
      headers.set('content-type', 'application/x-www-form-urlencoded');
      // A browser's form post names its origin; Rails may check it against the CSRF token's.
      headers.set('origin', next.url.origin);
      if (next.referer) headers.set('referer', next.referer);
    }
    const res = await probe.fetch(next.url, {
      method: next.form ? 'POST' : 'GET',
      headers,
      redirect: 'manual',
      signal: AbortSignal.any([deadline, AbortSignal.timeout(REQUEST_TIMEOUT_MS)]),
      ...(next.form ? { body: next.form.toString() } : {}),
    });
    jar.store(next.url, res.headers.getSetCookie());
    const location = res.headers.get('location');
    if (res.status >= 300 && res.status < 400 && location !== null) {
      await res.body?.cancel().catch(() => {});
      const target = new URL(location, next.url);
      if (isCallback(target, redirect)) return { kind: 'callback', url: target };
      if (!inside(target)) {
        return {
          kind: 'failed',
          detail: `GitLab sent the browser to ${tools.text(target.origin)}, outside GitLab and not the redirect URI (a single sign-on service?).`,
          fix: 'Sign in interactively (without --signin-user): a scripted sign-in fills only GitLab’s own forms.',
        };
      }
      next = { url: target };
      continue;
    }
    const html = new TextDecoder().decode(
      await tools.readCapped(res, PAGE_MAX_BYTES, () => new Error('GitLab’s page is larger than 4 MiB')),
    );
    const where = tools.text(next.url.pathname);
    if (res.status !== 200) {
      const refused = res.status === 422 ? ' (Rails refused the form: its CSRF check failed)' : '';
      return {
        kind: 'failed',
        detail: `GitLab answered ${res.status} at ${where}${refused}: ${tools.text(pageTitle(html) || plainText(html).slice(0, 200))}`,
        fix: 'Sign in interactively (without --signin-user) to see the page GitLab shows.',
      };
    }
    const description = errorPageText(html);
    if (description !== null) return { kind: 'gitlab-error', description };
    const forms = formsOf(html, next.url);
    const signIn = forms.find((f) => 'user[login]' in f.fields && 'user[password]' in f.fields);
    if (signIn) {
      if (signedIn) {
        const flash = flashText(html);
        return {
          kind: 'failed',
          detail: `GitLab refused the sign-in of ${tools.text(user.login)}: ${tools.text(flash ?? 'it showed its sign-in page again')}`,
          fix: 'Check the user name (--signin-user) and the password (LABGATE_DOCTOR_PASSWORD).',
        };
      }
      signedIn = true;
      next = submit(signIn, { 'user[login]': user.login, 'user[password]': user.password }, next.url);
      continue;
    }
    if (forms.some((f) => 'user[otp_attempt]' in f.fields)) {
      return {
        kind: 'failed',
        detail: `${tools.text(user.login)} has two-factor authentication: GitLab asks for a code that a scripted sign-in cannot give.`,
        fix: 'Use a test user without two-factor authentication, or sign in interactively (without --signin-user).',
      };
    }
    const consent = consentForm(forms);
    if (consent && !approved) {
      approved = true;
      next = submit(consent, {}, next.url);
      continue;
    }
    const link = redirectingLink(html, next.url);
    if (link && isCallback(link, redirect)) return { kind: 'callback', url: link };
    if (link && inside(link)) {
      next = { url: link };
      continue;
    }
    return {
      kind: 'failed',
      detail: `GitLab showed a page the probe does not know at ${where}: ${tools.text(pageTitle(html) || plainText(html).slice(0, 200))}`,
      fix: 'Sign in interactively (without --signin-user) to see the page GitLab shows.',
    };
  }
  return {
    kind: 'failed',
    detail: `GitLab redirected the browser more than ${MAX_STEPS} times.`,
    fix: 'Open GITLAB_URL in a browser: a redirect loop there breaks every sign-in.',
  };
}

function submit(
  form: Form,
  overrides: Record<string, string>,
  page: URL,
): { url: URL; form?: URLSearchParams; referer?: string } {
  const fields = new URLSearchParams({ ...form.fields, ...overrides });
  const url = new URL(form.action);
  if (form.method === 'get') {
    url.search = fields.toString();
    return { url };
  }
  return { url, form: fields, referer: page.href };
}

// ---------------------------------------------------------------------------------------------
// Interactive: the user's browser

const LOOPBACK_V4 = /^127(?:\.\d{1,3}){3}$/;

/** Where to listen for the callback, or why the probe cannot. */
function listenTarget(redirect: URL): { hosts: string[]; port: number } | { reason: string } {
  const host = redirect.hostname;
  const hosts = LOOPBACK_V4.test(host)
    ? [host]
    : host === '[::1]'
      ? ['::1']
      : host === 'localhost'
        ? ['127.0.0.1', '::1']
        : null;
  if (hosts === null) return { reason: `The redirect URI's host ${host} is not this machine` };
  if (redirect.protocol !== 'http:')
    return { reason: 'The redirect URI is https, which this probe cannot serve' };
  return { hosts, port: redirect.port === '' ? 80 : Number(redirect.port) };
}

const CLOSE_PAGE = `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>labgate doctor</title></head>
<body><p>GitLab sent you back to labgate doctor. You can close this tab and return to the terminal.</p></body></html>
`;

const OTHER_PAGE = `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>labgate doctor</title></head>
<body><p>This is not the sign-in labgate doctor started: open the link it printed.</p></body></html>
`;

/** Listens on the redirect URI's loopback port and path; resolves with the first callback of this sign-in. */
async function startCatcher(
  redirect: URL,
  target: { hosts: string[]; port: number },
  state: string,
): Promise<{ arrived: Promise<URL>; close: () => void }> {
  let arrive!: (url: URL) => void;
  const arrived = new Promise<URL>((resolve) => {
    arrive = resolve;
  });
  const servers: Server[] = [];
  const close = () => {
    for (const server of servers) {
      server.close();
      server.closeAllConnections();
    }
  };
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', redirect.origin);
    const page = (status: number, html: string) => {
      res.writeHead(status, {
        'content-type': 'text/html; charset=utf-8',
        'cache-control': 'no-store',
        'referrer-policy': 'no-referrer',
        connection: 'close',
      });
      res.end(html);
    };
    if (req.method !== 'GET' || url.pathname !== redirect.pathname) return page(404, OTHER_PAGE);
    if (url.searchParams.get('state') !== state) return page(400, OTHER_PAGE);
    res.on('finish', close);
    page(200, CLOSE_PAGE);
    arrive(url);
  };
  for (const [i, host] of target.hosts.entries()) {
    const server = createServer(handler);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(target.port, host, () => {
          server.off('error', reject);
          resolve();
        });
      });
      servers.push(server);
    } catch (error) {
      // `localhost` may have no IPv6 here: the first address is the one that must work.
      if (i === 0) {
        close();
        throw error;
      }
    }
  }
  return { arrived, close };
}

/** One line from stdin, or null at its end or when `signal` fires. */
function stdinLine(signal: AbortSignal): Promise<string | null> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve(null);
    const rl = createInterface({ input: process.stdin, terminal: false });
    let settled = false;
    const done = (line: string | null) => {
      if (settled) return;
      settled = true;
      signal.removeEventListener('abort', onAbort);
      rl.close();
      resolve(line);
    };
    const onAbort = () => done(null);
    signal.addEventListener('abort', onAbort, { once: true });
    rl.once('line', (line) => done(line));
    rl.once('close', () => done(null));
  });
}

/** What a pasted line says: the address the browser landed on, or GitLab's error message. */
function pasted(line: string, probe: Probe): Arrival | null {
  const text = line.trim();
  if (text === '') return null;
  try {
    const url = new URL(text);
    if (isCallback(url, probe.redirect) || url.searchParams.has('code') || url.searchParams.has('error')) {
      return { kind: 'callback', url };
    }
  } catch {
    // Not an address: perhaps GitLab's message.
  }
  // The whole message, or a start of it long enough to name one (copied up to an ellipsis, say).
  const start = text.replace(/(?:…|\.\.\.)$/, '');
  const known = Object.values(TEXTS).find(
    (t) => text.includes(t) || (start.length >= 20 && t.startsWith(start)),
  );
  if (known) return { kind: 'gitlab-error', description: known };
  return {
    kind: 'failed',
    detail: `What was pasted is neither the address the browser landed on nor a message of GitLab's: ${JSON.stringify(probe.tools.text(text))}`,
    fix: `Run the probe again and paste the whole address from the browser's address bar (it starts with ${probe.input.redirectUri}).`,
  };
}

/** Prints the link and waits for the callback on loopback, or for what the user pastes. */
async function waitForBrowser(
  probe: Probe,
  authorizeUrl: string,
  deadline: AbortSignal,
  timeoutMs: number,
): Promise<Arrival> {
  const { input, redirect } = probe;
  const readLine = input.readLine ?? stdinLine;
  let catcher: { arrived: Promise<URL>; close: () => void } | null = null;
  let reason = '';
  const target = listenTarget(redirect);
  if ('reason' in target) {
    reason = target.reason;
  } else {
    try {
      catcher = await startCatcher(redirect, target, probe.state);
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      reason =
        code === 'EADDRINUSE'
          ? `Port ${target.port} is in use (is the app running? stop it to let the probe catch the callback)`
          : `The probe cannot listen on port ${target.port} (${describe(error, probe.tools)})`;
    }
  }
  input.print('Open this link in a browser and sign in to GitLab:');
  input.print(`  ${authorizeUrl}`);
  if (catcher) {
    input.print(
      `Waiting up to ${duration(timeoutMs)} for GitLab to send the browser to ${input.redirectUri} (if GitLab shows an error instead, paste its message here)…`,
    );
  } else {
    input.print(`${reason}: after signing in, paste the address the browser lands on (it starts with`);
    input.print(`${input.redirectUri}), or the message GitLab shows if it shows an error:`);
  }
  const stop = new AbortController();
  const ended = new Promise<never>((_, reject) => {
    const fail = () => reject(new Error('timeout'));
    if (deadline.aborted) fail();
    deadline.addEventListener('abort', fail, { once: true });
  });
  const fromUser = async (): Promise<Arrival> => {
    for (;;) {
      const line = await readLine(stop.signal);
      if (line === null) {
        // Without a listener, the end of input ends the wait; with one, the callback may still come.
        if (!catcher && !stop.signal.aborted) {
          return {
            kind: 'failed',
            detail: 'Nothing was pasted: the input ended.',
            fix: 'Run the probe in a terminal, or with --signin-user for a scripted sign-in.',
          };
        }
        return new Promise<never>(() => {});
      }
      const arrival = pasted(line, probe);
      if (arrival) return arrival;
    }
  };
  try {
    const waits: Promise<Arrival>[] = [fromUser(), ended];
    if (catcher) waits.push(catcher.arrived.then((url) => ({ kind: 'callback', url }) as const));
    return await Promise.race(waits);
  } finally {
    stop.abort();
    catcher?.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Judging what GitLab answered

function skip(id: string, title: string, docs: string, detail: string): CheckResult {
  return { id, title, status: 'skip', detail, docs };
}

/** Why GitLab may not match the redirect URI, from the URI itself (docs/doctor.md#signin-redirect-uri). */
function redirectCauses(redirect: URL): string[] {
  const causes: string[] = [];
  const host = redirect.hostname;
  const loopbackLiteral = LOOPBACK_V4.test(host) || host === '[::1]';
  const bare = `${redirect.host}${redirect.pathname}`;
  if (redirect.pathname.length > 1 && redirect.pathname.endsWith('/')) {
    causes.push(
      `the trailing slash: ${redirect.protocol}//${bare.replace(/\/+$/, '')} and ${redirect.protocol}//${bare} are different URIs to GitLab`,
    );
  }
  if (redirect.search !== '') causes.push('the query: register the URI without one, and send it without one');
  const other = redirect.protocol === 'http:' ? 'https:' : 'http:';
  causes.push(`the scheme: is ${other}//${bare} registered instead? http and https never match`);
  if (loopbackLiteral) {
    causes.push(
      `the host: GitLab tells ${host} and localhost apart (it ignores only the port of 127.0.0.1 and [::1])`,
    );
  } else {
    causes.push(
      redirect.port !== ''
        ? `the port: is it registered without :${redirect.port}, or with another port? GitLab compares ports exactly except on 127.0.0.1 and [::1]`
        : 'the port: a registered URI with a port (:443, :8080) does not match one without',
    );
    causes.push(
      host === 'localhost'
        ? 'the host: GitLab tells localhost and 127.0.0.1 apart'
        : `the host: ${host} must be the very name registered, not an alias, an IP address or a www. variant`,
    );
  }
  if (!/\/(?:auth|oauth2)\/callback\/?$/.test(redirect.pathname)) {
    causes.push("the path: labgate's callback is LABGATE_URL/auth/callback (the gateway's /oauth2/callback)");
  }
  return causes;
}

function redirectFailure(probe: Probe, description: string): CheckResult {
  const uri = probe.input.redirectUri;
  return {
    id: 'signin-redirect-uri',
    title: TITLES.redirect,
    status: 'fail',
    detail: `GitLab answered: “${probe.tools.text(description, 500)}”\nThe probe sent the redirect URI ${uri} (GitLab does not say which it has registered).`,
    fix: [
      `Register exactly ${uri} as a redirect URI ("Callback URL") of the application in GitLab;`,
      'or, if the one registered there is right, set LABGATE_URL so that the redirect URI becomes it.',
      'Compare the two for:',
      ...redirectCauses(probe.redirect).map((c) => `  - ${c}`),
    ].join('\n'),
    docs: DOCS.redirect,
  };
}

function redirectOk(probe: Probe, how: string): CheckResult {
  return {
    id: 'signin-redirect-uri',
    title: TITLES.redirect,
    status: 'ok',
    detail: `${probe.input.redirectUri}: ${how}`,
    docs: DOCS.redirect,
  };
}

function scopeFailure(probe: Probe, description: string): CheckResult {
  const asked = probe.input.scopes;
  const unknown =
    probe.endpoints.scopesSupported === null
      ? []
      : asked.filter((s) => !probe.endpoints.scopesSupported!.includes(s));
  const lines = [
    `Enable every scope asked for on the application in GitLab (edit the application, tick the scopes), or ask for`,
    'fewer with GITLAB_SCOPES (space-separated): only scopes the application has can be asked for.',
  ];
  if (unknown.length > 0) {
    lines.push(
      `This GitLab does not offer ${unknown.map((s) => JSON.stringify(probe.tools.text(s))).join(', ')} at all.`,
    );
  }
  if (asked.some((s) => s.includes(','))) lines.push('Scopes are separated by spaces, never commas.');
  return {
    id: 'signin-scopes',
    title: TITLES.scopes,
    status: 'fail',
    detail: `GitLab answered: “${probe.tools.text(description, 500)}”\nAsked for: ${probe.tools.text(asked.join(' ') || '(none: GitLab’s default, api)')}`,
    fix: lines.join('\n'),
    docs: DOCS.scopes,
  };
}

function userFailure(detail: string, fix: string): CheckResult {
  return { id: 'signin-user', title: TITLES.user, status: 'fail', detail, fix, docs: DOCS.user };
}

/** What to do about a GitLab error page that is neither about the redirect URI nor the scopes. */
function errorPageFix(description: string): string {
  if (description === TEXTS.invalid_client) {
    return 'GITLAB_CLIENT_ID is not an application this GitLab knows: copy the Application ID from the application page in GitLab.';
  }
  if (description === TEXTS.unconfirmed_email) {
    return 'Confirm the email address of this GitLab user, or sign in as another user.';
  }
  return 'Fix what GitLab names, then run the probe again.';
}

async function judge(probe: Probe, arrival: Arrival, policy: PolicyTarget[]): Promise<CheckResult[]> {
  const { tools } = probe;
  const notSignedIn = (why: string) => policy.map((t) => skipPolicy(t, `Not checked: ${why}`));
  const skipScopes = (why: string) =>
    skip('signin-scopes', TITLES.scopes, DOCS.scopes, `Not checked: ${why}`);

  if (arrival.kind === 'failed') {
    return [
      skip(
        'signin-redirect-uri',
        TITLES.redirect,
        DOCS.redirect,
        'Not checked: GitLab checks it after the sign-in.',
      ),
      skipScopes('GitLab checks them after the sign-in.'),
      userFailure(arrival.detail, arrival.fix),
      ...notSignedIn('the sign-in did not complete.'),
    ];
  }

  if (arrival.kind === 'gitlab-error') {
    const description = arrival.description;
    if (description === TEXTS.invalid_redirect_uri) {
      return [
        redirectFailure(probe, description),
        skipScopes('GitLab stopped at the redirect URI.'),
        skip('signin-user', TITLES.user, DOCS.user, 'Not checked: GitLab stopped at the redirect URI.'),
        ...notSignedIn('the sign-in did not complete.'),
      ];
    }
    if (description === TEXTS.invalid_scope) {
      return [
        // Doorkeeper checks the redirect URI before the scopes: reaching the scopes means it passed.
        redirectOk(probe, 'GitLab accepted it (it checks the redirect URI before the scopes).'),
        scopeFailure(probe, description),
        skip('signin-user', TITLES.user, DOCS.user, 'Not checked: GitLab stopped at the scopes.'),
        ...notSignedIn('the sign-in did not complete.'),
      ];
    }
    return [
      skip('signin-redirect-uri', TITLES.redirect, DOCS.redirect, 'Not checked: GitLab stopped before it.'),
      skipScopes('GitLab stopped before them.'),
      userFailure(`GitLab answered: “${tools.text(description, 500)}”`, errorPageFix(description)),
      ...notSignedIn('the sign-in did not complete.'),
    ];
  }

  // The browser came back to the redirect URI: GitLab accepted it.
  const back = redirectOk(probe, 'GitLab accepted it and sent the browser back to it.');
  const params = arrival.url.searchParams;
  const error = params.get('error');
  if (params.get('state') !== probe.state) {
    return [
      back,
      skipScopes('the answer is not for this sign-in.'),
      userFailure(
        "GitLab's answer carries another state than the probe sent: it belongs to another sign-in.",
        'Run the probe again and use the link it prints.',
      ),
      ...notSignedIn('the sign-in did not complete.'),
    ];
  }
  if (error !== null) {
    const description = params.get('error_description') ?? '';
    const said = `GitLab answered error=${tools.text(error)}${description ? `: “${tools.text(description, 500)}”` : ''}`;
    if (error === 'invalid_scope') {
      return [
        back,
        scopeFailure(probe, description || TEXTS.invalid_scope),
        skip('signin-user', TITLES.user, DOCS.user, 'Not checked: GitLab stopped at the scopes.'),
        ...notSignedIn('the sign-in did not complete.'),
      ];
    }
    return [
      back,
      skipScopes('GitLab did not grant anything.'),
      userFailure(
        said,
        error === 'access_denied'
          ? 'Choose Authorize on GitLab’s consent page.'
          : 'Fix what GitLab names, then run the probe again.',
      ),
      ...notSignedIn('the sign-in did not complete.'),
    ];
  }
  const code = params.get('code');
  if (!code) {
    return [
      back,
      skipScopes('GitLab sent no code.'),
      userFailure('GitLab sent the browser back without a code or an error.', 'Run the probe again.'),
      ...notSignedIn('the sign-in did not complete.'),
    ];
  }

  const exchanged = await exchange(probe, code);
  if ('detail' in exchanged) {
    return [
      back,
      skipScopes('the code exchange failed.'),
      userFailure(exchanged.detail, exchanged.fix),
      ...notSignedIn('the code exchange failed.'),
    ];
  }
  const { accessToken, granted } = exchanged;
  try {
    const results: CheckResult[] = [back, scopesResult(probe, granted)];
    const who = await whoSignedIn(probe, accessToken, granted);
    results.push(who.result);
    for (const target of policy) results.push(await visible(probe, accessToken, granted, target, who.name));
    const revoked = await revoke(probe, accessToken);
    const user = results[2]!;
    if (revoked === null) {
      user.detail = `${user.detail ?? ''}\nThe probe's token has been revoked.`.trim();
    } else {
      user.detail = `${user.detail ?? ''}\nThe probe's token could not be revoked: ${revoked}`.trim();
      if (user.status === 'ok') {
        user.status = 'warn';
        user.fix =
          'Revoke it in GitLab (User settings → Applications → Authorized applications), or let it expire (2 hours).';
      }
    }
    return results;
  } catch (error) {
    // Whatever broke, the token must not outlive the probe.
    await revoke(probe, accessToken).catch(() => null);
    return [
      back,
      scopesResult(probe, granted),
      userFailure(`The probe stopped after the sign-in: ${describe(error, tools)}.`, 'Run the probe again.'),
      ...notSignedIn('the probe stopped.'),
    ];
  }
}

// ---------------------------------------------------------------------------------------------
// With the code: exchange, scopes, user, policy, revocation

function clientFields(probe: Probe): Record<string, string> {
  // As labgate authenticates (client_secret_post; only the id for a public application).
  const { clientId, clientSecret } = probe.input;
  return clientSecret ? { client_id: clientId, client_secret: clientSecret } : { client_id: clientId };
}

async function postForm(probe: Probe, url: string, fields: Record<string, string>): Promise<Response> {
  return probe.fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
    body: new URLSearchParams(fields).toString(),
    // Credentials never follow a redirect to another URL (docs/security.md, EXCHANGE-1).
    redirect: 'manual',
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
}

async function readJson(res: Response, tools: Tools): Promise<Record<string, unknown> | null> {
  const bytes = await tools.readCapped(
    res,
    JSON_MAX_BYTES,
    () => new Error('the answer is larger than 512 KiB'),
  );
  try {
    const value: unknown = JSON.parse(new TextDecoder().decode(bytes));
    return typeof value === 'object' && value !== null && !Array.isArray(value)
      ? (value as Record<string, unknown>)
      : null;
  } catch {
    return null;
  }
}

/** GitLab's words in a JSON error (`error`, `error_description`, `message`), bounded. */
function gitlabSaid(body: Record<string, unknown> | null, tools: Tools): string {
  if (!body) return '';
  const parts = [body['error'], body['error_description'], body['message']].filter(
    (v): v is string => typeof v === 'string' && v !== '',
  );
  return parts.length > 0 ? `: ${parts.map((p) => `“${tools.text(p, 300)}”`).join(' ')}` : '';
}

async function exchange(
  probe: Probe,
  code: string,
): Promise<{ accessToken: string; granted: string[] | null } | { detail: string; fix: string }> {
  const { tools } = probe;
  let res: Response;
  try {
    res = await postForm(probe, probe.endpoints.token, {
      grant_type: 'authorization_code',
      code,
      redirect_uri: probe.input.redirectUri,
      code_verifier: probe.verifier,
      ...clientFields(probe),
    });
  } catch (error) {
    return {
      detail: `The code exchange failed: GitLab's token endpoint did not answer (${describe(error, tools)}).`,
      fix: 'Check that this machine reaches GitLab, then run the probe again.',
    };
  }
  const body = await readJson(res, tools).catch(() => null);
  const accessToken = body?.['access_token'];
  if (res.status === 200 && typeof accessToken === 'string' && accessToken !== '') {
    const scope = body?.['scope'];
    return { accessToken, granted: typeof scope === 'string' ? scope.split(/\s+/).filter(Boolean) : null };
  }
  const error = typeof body?.['error'] === 'string' ? body['error'] : '';
  const fix =
    error === 'invalid_client'
      ? probe.input.clientSecret
        ? 'GITLAB_CLIENT_SECRET is wrong, or was renewed in GitLab: copy the current secret from the application page.'
        : 'The application is confidential: set GITLAB_CLIENT_SECRET.'
      : error === 'invalid_grant'
        ? 'GitLab refused the code: run the probe again; if it fails again, check for a proxy that rewrites the redirect URI.'
        : 'Check what GitLab names, then run the probe again.';
  return { detail: `The code exchange failed: GitLab answered ${res.status}${gitlabSaid(body, tools)}`, fix };
}

function scopesResult(probe: Probe, granted: string[] | null): CheckResult {
  const asked = probe.input.scopes;
  const base = { id: 'signin-scopes', title: TITLES.scopes, docs: DOCS.scopes };
  if (granted === null) {
    return {
      ...base,
      status: 'ok',
      detail: `Asked for ${asked.join(' ')}; GitLab granted them without listing them.`,
    };
  }
  const missing = asked.filter((s) => !granted.includes(s));
  const list = probe.tools.text(granted.join(' ') || '(none)', 500);
  if (missing.length === 0) return { ...base, status: 'ok', detail: `Granted: ${list}` };
  return {
    ...base,
    status: 'warn',
    detail: `Granted: ${list}\nMissing: ${probe.tools.text(missing.join(' '), 500)}`,
    fix: 'Enable the missing scopes on the application in GitLab, or remove them from GITLAB_SCOPES.',
  };
}

async function getJson(
  probe: Probe,
  url: string,
  accessToken: string,
): Promise<{ status: number; body: Record<string, unknown> | null }> {
  const res = await probe.fetch(url, {
    headers: { authorization: `Bearer ${accessToken}`, accept: 'application/json' },
    redirect: 'manual',
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  return { status: res.status, body: await readJson(res, probe.tools).catch(() => null) };
}

const str = (value: unknown): string | null => (typeof value === 'string' && value !== '' ? value : null);

/** Who signed in: userinfo with `openid`, else `/api/v4/user`, else the token's owner id. */
async function whoSignedIn(
  probe: Probe,
  accessToken: string,
  granted: string[] | null,
): Promise<{ result: CheckResult; name: string }> {
  const { tools, endpoints } = probe;
  const has = (scope: string) => granted === null || granted.includes(scope);
  const base = { id: 'signin-user', title: TITLES.user, docs: DOCS.user };
  let source: string;
  if (endpoints.userinfo && has('openid')) source = endpoints.userinfo;
  else if (has('read_user') || has('read_api') || has('api')) source = `${endpoints.api}/user`;
  else source = `${endpoints.base}/oauth/token/info`;
  const { status, body } = await getJson(probe, source, accessToken);
  if (status !== 200 || !body) {
    return {
      result: {
        ...base,
        status: 'fail',
        detail: `Signed in, but GitLab answered ${status} at ${tools.text(new URL(source).pathname)}${gitlabSaid(body, tools)}`,
        fix: 'A blocked or deactivated user cannot use a token: sign in as an active user.',
      },
      name: 'the signed-in user',
    };
  }
  const username = str(body['preferred_username']) ?? str(body['nickname']) ?? str(body['username']);
  const id = body['sub'] ?? body['id'] ?? body['resource_owner_id'];
  const name = username ? `@${tools.text(username, 100)}` : `user ${tools.text(String(id), 40)}`;
  const facts = [`GitLab user id ${tools.text(String(id), 40)}`];
  const email = str(body['email']);
  if (email)
    facts.push(`email ${tools.text(email, 200)}${body['email_verified'] === true ? ' (verified)' : ''}`);
  const groups = body['groups'];
  if (Array.isArray(groups)) facts.push(`member of ${groups.length} group${groups.length === 1 ? '' : 's'}`);
  const fullName = str(body['name']);
  return {
    result: {
      ...base,
      status: 'ok',
      detail: `Signed in as ${name}${fullName ? ` (${tools.text(fullName, 100)})` : ''}: ${facts.join(', ')}.`,
    },
    name,
  };
}

/** A group or project the policy names. */
interface PolicyTarget {
  id: string;
  kind: 'group' | 'group-exact' | 'project' | 'group-id' | 'project-id';
  /** The path (or numeric id) as the rule writes it. */
  ref: string;
}

function policyTargets(allow: string[], tools: Tools): PolicyTarget[] {
  const targets = new Map<string, PolicyTarget>();
  for (const text of allow) {
    let rule: Rule;
    try {
      rule = tools.parseRule(text);
    } catch {
      continue;
    }
    let target: Omit<PolicyTarget, 'id'> | null = null;
    if ('group' in rule) {
      target = { kind: rule.includeSubgroups === false ? 'group-exact' : 'group', ref: rule.group.trim() };
    } else if ('project' in rule) target = { kind: 'project', ref: rule.project.trim() };
    else if ('groupId' in rule) target = { kind: 'group-id', ref: String(rule.groupId) };
    else if ('projectId' in rule) target = { kind: 'project-id', ref: String(rule.projectId) };
    if (!target) continue;
    const id = `policy-${target.kind}-${target.ref}`;
    if (!targets.has(id)) targets.set(id, { id, ...target });
  }
  return [...targets.values()];
}

function policyTitle(target: PolicyTarget): string {
  const what = target.kind.startsWith('project') ? 'project' : 'group';
  const ref = target.kind.endsWith('-id') ? `id ${target.ref}` : target.ref;
  return `The ${what} ${ref} (${target.kind}:${target.ref}) exists and the signed-in user sees it`;
}

function skipPolicy(target: PolicyTarget, detail: string): CheckResult {
  return { id: target.id, title: policyTitle(target), status: 'skip', detail, docs: DOCS.policy };
}

async function visible(
  probe: Probe,
  accessToken: string,
  granted: string[] | null,
  target: PolicyTarget,
  who: string,
): Promise<CheckResult> {
  const { tools, endpoints } = probe;
  const base = { id: target.id, title: policyTitle(target), docs: DOCS.policy };
  const project = target.kind.startsWith('project');
  const readScope = 'read_api';
  if (granted !== null && !granted.includes(readScope) && !granted.includes('api')) {
    return {
      ...base,
      status: 'warn',
      detail: `Not checked: looking up ${project ? 'projects' : 'groups'} needs the read_api scope, which this sign-in was not granted.`,
      fix: 'Add read_api to GITLAB_SCOPES and to the application in GitLab.',
    };
  }
  const url = `${endpoints.api}/${project ? 'projects' : 'groups'}/${encodeURIComponent(target.ref)}${project ? '' : '?with_projects=false'}`;
  const { status, body } = await getJson(probe, url, accessToken);
  if (status === 200 && body) {
    const path = str(body[project ? 'path_with_namespace' : 'full_path']) ?? target.ref;
    const facts = [`id ${tools.text(String(body['id']), 40)}`];
    const visibility = str(body['visibility']);
    if (visibility) facts.push(`visibility ${tools.text(visibility, 20)}`);
    return {
      ...base,
      status: 'ok',
      detail: `${tools.text(path, 300)}: visible to ${who} (${facts.join(', ')}).`,
    };
  }
  if (status === 403 && body?.['error'] === 'insufficient_scope') {
    return {
      ...base,
      status: 'warn',
      detail: `Not checked: GitLab answered 403${gitlabSaid(body, tools)}`,
      fix: 'Add read_api to GITLAB_SCOPES and to the application in GitLab.',
    };
  }
  if (status === 404) {
    const what = project ? 'project' : 'group';
    return {
      ...base,
      status: 'fail',
      detail: `GitLab answered 404${gitlabSaid(body, tools)}: no such ${what}, or it is not visible to ${who} (GitLab answers both the same way).`,
      fix: target.kind.endsWith('-id')
        ? `Check the ${what} id in LABGATE_ALLOW (shown on the ${what}'s page in GitLab); if it is right, run the probe as a member of the ${what}.`
        : `Check the path in LABGATE_ALLOW against the ${what}'s address in GitLab (${endpoints.base}/${target.ref}); if it is right, run the probe as a member of the ${what}: a private ${what} is invisible to others.`,
    };
  }
  return {
    ...base,
    status: 'fail',
    detail: `GitLab answered ${status}${gitlabSaid(body, tools)}`,
    fix: 'Check what GitLab names, then run the probe again.',
  };
}

/** Revokes the probe's token (which revokes its refresh token too); null when done, else why not. */
async function revoke(probe: Probe, accessToken: string): Promise<string | null> {
  try {
    const res = await postForm(probe, probe.endpoints.revoke, {
      token: accessToken,
      token_type_hint: 'access_token',
      ...clientFields(probe),
    });
    const body = await readJson(res, probe.tools).catch(() => null);
    return res.status === 200 ? null : `GitLab answered ${res.status}${gitlabSaid(body, probe.tools)}`;
  } catch (error) {
    return describe(error, probe.tools);
  }
}

// ---------------------------------------------------------------------------------------------

function describe(error: unknown, tools: Tools): string {
  if (error instanceof Error) {
    const cause = error.cause instanceof Error ? `: ${error.cause.message}` : '';
    return tools.text(`${error.message}${cause}`, 300);
  }
  return tools.text(String(error), 300);
}

function duration(ms: number): string {
  if (ms >= 60_000 && ms % 60_000 === 0) return `${ms / 60_000} min`;
  return ms >= 1000 ? `${Math.round(ms / 1000)} s` : `${ms} ms`;
}
