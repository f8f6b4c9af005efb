/**
 * The checks of `labgate doctor`, one function each, every one returning what it found as a
 * {@link CheckResult} with the fix and its section of docs/doctor.md. They read the configuration the
 * app, the gateway and the demo read (`optionsFromEnv`), probe GitLab the way labgate talks to it (the
 * same `fetch`, the same client authentication), and never need a user. What one check learns (the
 * resolved options, the discovery document) the later ones reuse through the {@link DoctorContext}.
 * Everything beyond `node:*` loads lazily (test/package/imports.test.ts).
 */
import { randomBytes } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { isIP, connect as tcpConnect } from 'node:net';
import { dirname, resolve } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import type { LabgateOptions, ResolvedOptions } from '../core/options.js';
import type { Provider } from '../core/provider.js';
import type { CheckResult, CheckStatus } from './report.js';

type Env = Readonly<Record<string, string | undefined>>;

/** What the checks read and what they learn on the way. */
export interface DoctorContext {
  /** The configuration: the process environment over the `.env` file's values. */
  env: Env;
  /** The process environment alone: what Node itself read at start (`NODE_EXTRA_CA_CERTS`, proxies). */
  processEnv: Env;
  /** The `.env` file that was read, or null. */
  envFile: string | null;
  /** `--gateway`: the redirect URI is `LABGATE_URL/oauth2/callback` and the gateway's defaults apply. */
  gateway: boolean;
  /** Milliseconds each request or connection may take. */
  timeoutMs: number;
  /** Where a relative sqlite path is resolved. */
  cwd: string;
  /** `GITLAB_URL` parsed, trailing slashes dropped; null when it is not a URL. */
  gitlabUrl: URL | null;
  /** The options as the app would resolve them; null when the configuration is refused. */
  resolved: ResolvedOptions | null;
  /** The policy (`LABGATE_ALLOW`, `LABGATE_REQUIRE`) when it parses. */
  options: LabgateOptions | null;
  /** DNS and TCP reached GitLab's host (null: not checked). */
  reachable: boolean | null;
  /** The discovery document once its issuer matched; `kind` says whether GitLab has OpenID Connect. */
  discovery: { kind: 'oidc' | 'oauth'; document: Record<string, unknown> } | null;
  /** GitLab's `Date` header and the local time halfway through that request, in epoch milliseconds. */
  serverDate: { server: number; local: number } | null;
  /** The GitLab connection as labgate's core builds it (for requests sent exactly as labgate sends them). */
  provider: Provider | null;
}

/** The default `LABGATE_URL` of the gateway (it listens on 127.0.0.1:4180). */
const GATEWAY_URL = 'http://localhost:4180';
/** The default stores (src/stores/index.ts, src/gateway/config.ts). */
const APP_STORE = 'sqlite:./.labgate/labgate.db';
const GATEWAY_STORE = 'sqlite:./.labgate/gateway.db';
/** The ID token clock tolerance (DESIGN.md): beyond it sign-ins fail. */
const CLOCK_FAIL_SECONDS = 60;
const CLOCK_WARN_SECONDS = 10;

/** The docs section of a check. */
export function docsLink(id: string): string {
  return `docs/doctor.md#${id}`;
}

function check(
  id: string,
  status: CheckStatus,
  title: string,
  more: { detail?: string | undefined; fix?: string | undefined } = {},
): CheckResult {
  const result: CheckResult = { id, title, status };
  if (more.detail) result.detail = more.detail;
  if (more.fix && (status === 'warn' || status === 'fail')) result.fix = more.fix;
  result.docs = docsLink(id);
  return result;
}

async function core() {
  const [log, options, access, crypto, provider, oauth] = await Promise.all([
    import('../core/log.js'),
    import('../core/options.js'),
    import('../core/access.js'),
    import('../core/crypto.js'),
    import('../core/provider.js'),
    import('oauth4webapi'),
  ]);
  return { ...log, ...options, ...access, ...crypto, ...provider, oauth };
}

/** Text from GitLab or the environment, safe for a terminal line. */
async function show(value: unknown, max = 200): Promise<string> {
  return (await import('../core/log.js')).logText(value, max);
}

function message(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).replace(/^labgate: /, '');
}

/** The system error code under a rejected `fetch` (`ECONNREFUSED`, `DEPTH_ZERO_SELF_SIGNED_CERT`, …). */
function errorCode(error: unknown): string {
  let current: unknown = error;
  for (let depth = 0; depth < 4 && typeof current === 'object' && current !== null; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string' && code !== 'UND_ERR_SOCKET') return code;
    current = (current as { cause?: unknown }).cause;
  }
  if (error instanceof DOMException && (error.name === 'TimeoutError' || error.name === 'AbortError'))
    return 'TIMEOUT';
  return '';
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(Object.assign(new Error(`${what}: no answer in ${ms} ms`), { code: 'TIMEOUT' })),
      ms,
    );
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function seconds(ms: number): string {
  return `${Math.round(ms / 100) / 10} s`;
}

/** `GITLAB_URL` (default gitlab.com) parsed, trailing slashes dropped as labgate drops them. */
function parseGitlabUrl(env: Env): URL | null {
  try {
    const url = new URL(env['GITLAB_URL'] || 'https://gitlab.com');
    if (url.protocol !== 'https:' && url.protocol !== 'http:') return null;
    url.pathname = url.pathname.replace(/\/+$/, '');
    url.search = '';
    url.hash = '';
    return url;
  } catch {
    return null;
  }
}

/** The base URL without a trailing slash, as labgate compares it with the issuer. */
function baseOf(url: URL): string {
  return url.href.replace(/\/+$/, '');
}

/** Creates the context the checks share. */
export function createDoctorContext(options: {
  env: Env;
  processEnv: Env;
  envFile: string | null;
  gateway: boolean;
  timeoutMs: number;
  cwd: string;
}): DoctorContext {
  return {
    ...options,
    gitlabUrl: parseGitlabUrl(options.env),
    resolved: null,
    options: null,
    reachable: null,
    discovery: null,
    serverDate: null,
    provider: null,
  };
}

// ─── Configuration ──────────────────────────────────────────────────────────────────────────────

/** The fix for a configuration the core refuses, from the variable its message names. */
function configurationFix(text: string, gateway: boolean): string {
  if (/clientId is required/.test(text))
    return 'Set GITLAB_CLIENT_ID to the Application ID GitLab shows for your OAuth application';
  if (/GitLab URL .* uses http:/.test(text) || /gitlabUrl/.test(text))
    return 'Set GITLAB_URL to the https:// address of GitLab, with its sub-path if it has one (https://gitlab.example.com/gitlab)';
  if (/\burl\b/.test(text))
    return `Set LABGATE_URL to the public origin of the ${gateway ? 'gateway' : 'app'}, without a path (https://app.example.com)`;
  if (/scope/.test(text)) return 'Add the scope the message names to GITLAB_SCOPES (space-separated)';
  if (/policy|rule|LABGATE_ALLOW|LABGATE_REQUIRE/i.test(text))
    return 'Correct LABGATE_ALLOW / LABGATE_REQUIRE (docs/access.md lists the rules)';
  if (/LABGATE_RECHECK/.test(text)) return 'Set LABGATE_RECHECK to a duration such as 30s or 5m';
  return 'Correct the setting the message names';
}

/**
 * Reads the configuration as the app (or, with `--gateway`, the gateway) reads it and lets the core
 * check it: every misuse labgate would refuse at startup is a ✗ here.
 */
export async function checkConfiguration(ctx: DoctorContext): Promise<CheckResult> {
  const { optionsFromEnv, resolveOptions } = await core();
  const notes: string[] = [];
  let options: LabgateOptions;
  try {
    options = optionsFromEnv(ctx.env);
    if (ctx.gateway) {
      options.prefix = '/oauth2';
      if (!ctx.env['LABGATE_URL']) options.url = GATEWAY_URL;
    }
    options.requestTimeout = ctx.timeoutMs;
    ctx.options = options;
    ctx.resolved = resolveOptions({
      ...options,
      logger: { info() {}, warn: (line) => notes.push(line.replace(/^labgate: /, '')), error() {} },
    });
  } catch (error) {
    if (!(error instanceof TypeError)) throw error;
    const text = message(error);
    return check('configuration', 'fail', `The configuration is refused: ${await show(text, 300)}`, {
      fix: configurationFix(text, ctx.gateway),
      detail: ctx.envFile ? `read from the environment and ${await show(ctx.envFile)}` : undefined,
    });
  }
  const r = ctx.resolved;
  const lines = [
    `GitLab ${baseOf(r.gitlabUrl)}, client ${await show(r.clientId, 80)}, ${r.clientSecret ? 'with a secret (confidential)' : 'no secret (public client, PKCE only)'}`,
    `redirect URI ${r.redirectUri} (register exactly this in GitLab), scopes ${r.scopes.join(' ')}`,
  ];
  if (!ctx.env['LABGATE_URL']) lines.push(`LABGATE_URL is not set: using ${r.origin}`);
  if (ctx.envFile)
    lines.push(`read from the environment and ${await show(ctx.envFile)} (the environment wins)`);
  for (const note of notes) lines.push(await show(note, 300));
  return check('configuration', 'ok', `Configuration read${ctx.gateway ? ' (gateway)' : ''}`, {
    detail: lines.join('\n'),
  });
}

// ─── Reaching GitLab ────────────────────────────────────────────────────────────────────────────

function hostOf(url: URL): string {
  return url.hostname.replace(/^\[|\]$/g, '');
}

function portOf(url: URL): number {
  return Number(url.port) || (url.protocol === 'https:' ? 443 : 80);
}

/** Whether a proxy variable is set for GitLab's scheme (and NO_PROXY does not exempt its host). */
function proxyFor(env: Env, url: URL): { name: string; value: string } | null {
  const names = url.protocol === 'https:' ? ['HTTPS_PROXY', 'https_proxy'] : ['HTTP_PROXY', 'http_proxy'];
  const name = names.find((n) => env[n]);
  if (!name) return null;
  const noProxy = (env['NO_PROXY'] ?? env['no_proxy'] ?? '')
    .split(/[\s,]+/)
    .map((entry) => entry.trim().toLowerCase())
    .filter(Boolean);
  const host = hostOf(url).toLowerCase();
  const port = String(portOf(url));
  for (const entry of noProxy) {
    if (entry === '*') return null;
    const [entryHost, entryPort] = entry.includes(']') ? [entry, undefined] : entry.split(':');
    if (entryPort !== undefined && entryPort !== port) continue;
    const bare = (entryHost ?? '').replace(/^\*?\./, '').replace(/^\[|\]$/g, '');
    if (host === bare || host.endsWith(`.${bare}`)) return null;
  }
  return { name, value: env[name]! };
}

/** DNS, then TCP: does anything answer at GitLab's host and port? */
export async function checkReachable(ctx: DoctorContext): Promise<CheckResult> {
  const url = ctx.gitlabUrl;
  if (!url) {
    ctx.reachable = false;
    return check('gitlab-reachable', 'fail', 'GITLAB_URL is not an http(s) URL', {
      detail: `GITLAB_URL=${await show(ctx.env['GITLAB_URL'] ?? '')}`,
      fix: 'Set GITLAB_URL to the address of GitLab, such as https://gitlab.example.com',
    });
  }
  const host = hostOf(url);
  const port = portOf(url);
  const proxyHint = proxyFor(ctx.env, url)
    ? ' If this network reaches GitLab only through a proxy, see #proxy.'
    : '';
  let addresses: string[];
  try {
    addresses = isIP(host)
      ? [host]
      : (await withTimeout(lookup(host, { all: true }), ctx.timeoutMs, 'DNS')).map((a) => a.address);
  } catch (error) {
    ctx.reachable = false;
    return check('gitlab-reachable', 'fail', `GitLab's host name ${host} does not resolve`, {
      detail: `DNS: ${errorCode(error) || message(error)}`,
      fix: `Check the host name in GITLAB_URL (a typo?) and this machine's DNS settings.${proxyHint}`,
    });
  }
  const started = Date.now();
  let lastError: unknown = null;
  for (const address of addresses) {
    try {
      await withTimeout(
        new Promise<void>((resolveConnect, reject) => {
          const socket = tcpConnect({ host: address, port });
          socket.once('connect', () => {
            socket.destroy();
            resolveConnect();
          });
          socket.once('error', reject);
          socket.setTimeout(ctx.timeoutMs, () => {
            socket.destroy();
            reject(Object.assign(new Error('timeout'), { code: 'TIMEOUT' }));
          });
        }),
        ctx.timeoutMs,
        'TCP',
      );
      ctx.reachable = true;
      return check('gitlab-reachable', 'ok', `GitLab's host answers at ${url.host}`, {
        detail: `DNS: ${host}${isIP(host) ? '' : ` → ${addresses.join(', ')}`}; TCP: port ${port} open (${Date.now() - started} ms)`,
      });
    } catch (error) {
      lastError = error;
    }
  }
  ctx.reachable = false;
  const code = errorCode(lastError);
  const where = `${host}:${port}`;
  if (code === 'ECONNREFUSED') {
    return check('gitlab-reachable', 'fail', `Nothing listens at ${where}`, {
      detail: `TCP: connection refused (${addresses.join(', ')})`,
      fix: `Check the port and scheme in GITLAB_URL (https is port 443) and that GitLab is running.${proxyHint}`,
    });
  }
  if (code === 'TIMEOUT' || code === 'ETIMEDOUT') {
    return check('gitlab-reachable', 'fail', `No answer from ${where} within ${seconds(ctx.timeoutMs)}`, {
      detail: 'TCP: the connection attempt timed out (a firewall drops it, or the host is down)',
      fix: `Check that this machine may reach ${where} (firewall, security group, VPN).${proxyHint}`,
    });
  }
  return check('gitlab-reachable', 'fail', `Cannot connect to ${where}`, {
    detail: `TCP: ${code || message(lastError)}`,
    fix: `Check the network route from this machine to ${where}.${proxyHint}`,
  });
}

const UNTRUSTED = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'CERT_UNTRUSTED',
  'CERT_CHAIN_TOO_LONG',
]);

function certName(part: unknown): string {
  const fields = (part ?? {}) as Record<string, unknown>;
  const value = fields['CN'] ?? fields['O'] ?? '';
  return Array.isArray(value) ? value.join(', ') : String(value);
}

/**
 * The TLS handshake with GitLab and the certificate's verification against Node's CAs plus
 * `NODE_EXTRA_CA_CERTS` (which Node reads only when the process starts).
 */
export async function checkTls(ctx: DoctorContext): Promise<CheckResult> {
  const url = ctx.gitlabUrl;
  if (!url) return check('gitlab-tls', 'skip', 'TLS not checked: GITLAB_URL is not a URL');
  const { isLoopbackHost } = await core();
  if (url.protocol === 'http:') {
    if (isLoopbackHost(url.hostname)) {
      return check('gitlab-tls', 'ok', 'Plain http to a GitLab on loopback: no TLS to check', {
        detail: 'labgate accepts http:// only for loopback hosts (development)',
      });
    }
    return check('gitlab-tls', 'fail', 'GitLab is plain http: tokens would cross the network in clear', {
      fix: 'Use https:// in GITLAB_URL (labgate refuses http:// for hosts other than loopback)',
    });
  }
  if (ctx.reachable === false)
    return check('gitlab-tls', 'skip', 'TLS not checked: GitLab cannot be reached');
  const host = hostOf(url);
  const port = portOf(url);
  const socket = tlsConnect({
    host,
    port,
    // Verification is judged below, so that the certificate can be described either way.
    rejectUnauthorized: false,
    ALPNProtocols: ['http/1.1'],
    ...(isIP(host) ? {} : { servername: host }),
  });
  try {
    await withTimeout(
      new Promise<void>((resolveTls, reject) => {
        socket.once('secureConnect', () => resolveTls());
        socket.once('error', reject);
      }),
      ctx.timeoutMs,
      'TLS',
    );
  } catch (error) {
    socket.destroy();
    const code = errorCode(error);
    return check('gitlab-tls', 'fail', `No TLS handshake with ${host}:${port}`, {
      detail: `TLS: ${code || message(error)}`,
      fix:
        code === 'ERR_SSL_WRONG_VERSION_NUMBER' || code === 'EPROTO'
          ? `${host}:${port} does not speak TLS: use the https port in GITLAB_URL (http:// is accepted only for loopback)`
          : `Check that GitLab (or the proxy in front of it) serves https on ${host}:${port}`,
    });
  }
  const cert = socket.getPeerCertificate();
  const authorized = socket.authorized;
  const reason = String(socket.authorizationError ?? '');
  socket.destroy();
  const subject = (await show(certName(cert.subject), 100)) || '(no name)';
  const issuer = (await show(certName(cert.issuer), 100)) || '(no name)';
  const validTo = cert.valid_to ? new Date(cert.valid_to) : null;
  const described = `certificate for ${subject}, issued by ${issuer}${validTo ? `, valid until ${validTo.toISOString().slice(0, 10)}` : ''}`;
  if (authorized) {
    const left = validTo ? validTo.getTime() - Date.now() : Number.POSITIVE_INFINITY;
    if (left < 14 * 24 * 3600 * 1000) {
      return check(
        'gitlab-tls',
        'warn',
        `GitLab's certificate expires in ${Math.max(0, Math.floor(left / 86_400_000))} day(s)`,
        {
          detail: described,
          fix: "Renew GitLab's certificate before it expires: sign-ins fail from then on",
        },
      );
    }
    return check('gitlab-tls', 'ok', 'TLS verified', { detail: described });
  }
  const extra = ctx.processEnv['NODE_EXTRA_CA_CERTS'];
  if (UNTRUSTED.has(reason)) {
    const fromFile = !extra && ctx.env['NODE_EXTRA_CA_CERTS'];
    let fix: string;
    if (extra) {
      const readable = await access(extra, constants.R_OK).then(
        () => true,
        () => false,
      );
      fix = readable
        ? `NODE_EXTRA_CA_CERTS=${await show(extra)} does not hold the CA that issued GitLab's certificate (${issuer}): add that CA's certificate (PEM) to the file, then restart`
        : `NODE_EXTRA_CA_CERTS=${await show(extra)} cannot be read: point it at the PEM file of your private CA (issuer ${issuer}), then restart`;
    } else if (fromFile) {
      fix = `NODE_EXTRA_CA_CERTS is set in ${await show(ctx.envFile ?? '.env')}, but Node reads it only when the process starts: export NODE_EXTRA_CA_CERTS=${await show(fromFile)} in the environment that starts labgate`;
    } else {
      fix = `Set NODE_EXTRA_CA_CERTS=/path/to/ca.pem (the certificate of the private CA that issued GitLab's certificate, ${issuer}) in the environment that starts labgate; Node reads it only at process start`;
    }
    return check('gitlab-tls', 'fail', "GitLab's certificate is not trusted (a private or self-signed CA)", {
      detail: `${described}; TLS: ${reason}`,
      fix,
    });
  }
  if (reason === 'CERT_HAS_EXPIRED' || reason === 'CERT_NOT_YET_VALID') {
    return check(
      'gitlab-tls',
      'fail',
      `GitLab's certificate is ${reason === 'CERT_HAS_EXPIRED' ? 'expired' : 'not valid yet'}`,
      {
        detail: `${described}; TLS: ${reason}`,
        fix: "Renew GitLab's certificate, or correct this machine's clock if it is wrong",
      },
    );
  }
  if (reason === 'ERR_TLS_CERT_ALTNAME_INVALID' || /does not match|altnames/i.test(reason)) {
    return check('gitlab-tls', 'fail', `GitLab's certificate does not name ${host}`, {
      detail: `${described}; names: ${await show(cert.subjectaltname ?? subject)}`,
      fix: "Use in GITLAB_URL the host name GitLab's certificate names, or reissue the certificate for this name",
    });
  }
  return check('gitlab-tls', 'fail', "GitLab's certificate does not verify", {
    detail: `${described}; TLS: ${await show(reason)}`,
    fix: "Fix GitLab's certificate chain (serve the intermediate certificates too)",
  });
}

/** Node 20's `fetch` ignores proxy variables; Node ≥ 22.21 and 24 honour them with NODE_USE_ENV_PROXY=1. */
function nodeHonoursEnvProxy(processEnv: Env): boolean {
  const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
  const supported = major >= 24 || (major === 22 && minor >= 21);
  const asked = processEnv['NODE_USE_ENV_PROXY'] === '1' || process.execArgv.includes('--use-env-proxy');
  return supported && asked;
}

/** Proxy variables in the environment, and whether Node's `fetch` (which labgate uses) follows them. */
export async function checkProxy(ctx: DoctorContext): Promise<CheckResult> {
  const url = ctx.gitlabUrl;
  if (!url) return check('proxy', 'skip', 'Proxy not checked: GITLAB_URL is not a URL');
  const any = ['HTTPS_PROXY', 'https_proxy', 'HTTP_PROXY', 'http_proxy'].find((n) => ctx.env[n]);
  if (!any) return check('proxy', 'ok', 'No proxy in the environment: labgate connects to GitLab directly');
  const proxy = proxyFor(ctx.env, url);
  if (!proxy) {
    return check(
      'proxy',
      'ok',
      `${any} is set, but not for GitLab: labgate connects to ${url.host} directly`,
      {
        detail:
          proxyFor({ ...ctx.env, NO_PROXY: '', no_proxy: '' }, url) !== null
            ? `NO_PROXY exempts ${hostOf(url)}`
            : `GitLab is ${url.protocol}// and ${url.protocol === 'https:' ? 'HTTPS_PROXY' : 'HTTP_PROXY'} is not set`,
      },
    );
  }
  const where = await show(proxy.value.replace(/\/\/[^@/]*@/, '//***@'));
  if (!(proxy.name in ctx.processEnv) || ctx.processEnv[proxy.name] !== proxy.value) {
    return check(
      'proxy',
      'warn',
      `${proxy.name} comes from ${await show(ctx.envFile ?? '.env')}: Node never reads it there`,
      {
        detail: `${proxy.name}=${where}`,
        fix: `Proxy variables act only when set in the environment that starts the process (and then only as below); remove ${proxy.name} from the .env file`,
      },
    );
  }
  if (nodeHonoursEnvProxy(ctx.processEnv)) {
    return check('proxy', 'ok', `Requests to GitLab go through the proxy ${where}`, {
      detail: `Node ${process.versions.node} with NODE_USE_ENV_PROXY=1: fetch follows ${proxy.name} and NO_PROXY`,
    });
  }
  const reached =
    ctx.reachable === true
      ? ' GitLab answered directly, so the proxy is only needed if your policy requires it.'
      : '';
  return check(
    'proxy',
    'warn',
    `${proxy.name} is set, but Node's fetch ignores it: labgate connects to GitLab directly`,
    {
      detail: `${proxy.name}=${where}; Node ${process.versions.node}. Node's built-in fetch follows HTTP_PROXY, HTTPS_PROXY and NO_PROXY only from Node 22.21 / 24 on, and only with NODE_USE_ENV_PROXY=1 (or --use-env-proxy); Node 20 never does.${reached}`,
      fix: `If GitLab must be reached through the proxy: run labgate on Node ≥ 22.21 with NODE_USE_ENV_PROXY=1, or, in your own app, pass createLabgate a \`fetch\` that uses the proxy (undici's EnvHttpProxyAgent). If GitLab is reached directly: add ${hostOf(url)} to NO_PROXY`,
    },
  );
}

// ─── Discovery and capabilities ─────────────────────────────────────────────────────────────────

interface Fetched {
  status: number;
  location: string | null;
  json: Record<string, unknown> | null;
  type: string;
}

/** A GET as labgate's guard sends it: no redirects followed, a timeout; notes GitLab's `Date`. */
async function get(ctx: DoctorContext, url: string): Promise<Fetched> {
  const sent = Date.now();
  const response = await fetch(url, {
    redirect: 'manual',
    headers: { accept: 'application/json' },
    signal: AbortSignal.timeout(ctx.timeoutMs),
  });
  const received = Date.now();
  const date = Date.parse(response.headers.get('date') ?? '');
  if (!Number.isNaN(date) && ctx.serverDate === null)
    ctx.serverDate = { server: date, local: (sent + received) / 2 };
  const type = (response.headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
  const text = await response.text();
  let json: Record<string, unknown> | null = null;
  if (type.endsWith('json')) {
    try {
      const parsed = JSON.parse(text) as unknown;
      if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed))
        json = parsed as Record<string, unknown>;
    } catch {}
  }
  return { status: response.status, location: response.headers.get('location'), json, type };
}

function discoveryUrl(base: string): string {
  return `${base}/.well-known/openid-configuration`;
}

/** Where else GitLab may live when discovery is not at GITLAB_URL: the parent paths, or `/gitlab`. */
async function otherBases(ctx: DoctorContext, url: URL): Promise<string[]> {
  const candidates: string[] = [];
  const segments = url.pathname.split('/').filter(Boolean);
  for (let n = segments.length - 1; n >= 0; n--) {
    candidates.push(`${url.origin}${n ? `/${segments.slice(0, n).join('/')}` : ''}`);
  }
  if (segments.length === 0) {
    // A web server in front of a GitLab under a sub-path often redirects its root there.
    try {
      const root = await get(ctx, `${url.origin}/`);
      if (root.location) {
        const target = new URL(root.location, `${url.origin}/`);
        const first = target.pathname.split('/').filter(Boolean)[0];
        if (target.origin === url.origin && first && first !== 'users')
          candidates.push(`${url.origin}/${first}`);
      }
    } catch {}
    candidates.push(`${url.origin}/gitlab`);
  }
  return [...new Set(candidates)];
}

/** Why an issuer differs from GITLAB_URL, in GitLab's words where the cause is a sub-path. */
function issuerMismatch(base: URL, issuer: string): { title: string; fix: string } {
  let other: URL | null = null;
  try {
    other = new URL(issuer);
  } catch {}
  if (other && other.origin === base.origin) {
    const mine = base.pathname.replace(/\/+$/, '');
    const theirs = other.pathname.replace(/\/+$/, '');
    if (theirs.startsWith(`${mine}/`) || (mine === '' && theirs !== '')) {
      return {
        title: `GitLab lives under ${theirs}: set GITLAB_URL=${issuer.replace(/\/+$/, '')}`,
        fix: `Set GITLAB_URL=${issuer.replace(/\/+$/, '')} (GitLab's relative URL root is part of its address)`,
      };
    }
    if (mine.startsWith(`${theirs}/`) || theirs === '') {
      return {
        title: `GitLab lives at ${issuer.replace(/\/+$/, '')}, not under ${mine}: set GITLAB_URL=${issuer.replace(/\/+$/, '')}`,
        fix: `Set GITLAB_URL=${issuer.replace(/\/+$/, '')}`,
      };
    }
  }
  return {
    title: `GitLab's discovery names the issuer ${issuer}, not ${baseOf(base)}`,
    fix: `Set GITLAB_URL=${issuer.replace(/\/+$/, '')} if that is where GitLab is reached; otherwise correct GitLab's external_url (the issuer must equal GITLAB_URL exactly)`,
  };
}

/**
 * OpenID Connect discovery at `GITLAB_URL`: it answers, and its issuer equals `GITLAB_URL` exactly.
 * When it does not answer there, the parent paths and `/gitlab` are tried, so that a sub-path
 * mistake is named with the value to set.
 */
export async function checkDiscovery(ctx: DoctorContext): Promise<CheckResult> {
  const url = ctx.gitlabUrl;
  if (!url) return check('discovery', 'skip', 'Discovery not checked: GITLAB_URL is not a URL');
  if (ctx.reachable === false)
    return check('discovery', 'skip', 'Discovery not checked: GitLab cannot be reached');
  const base = baseOf(url);
  let answer: Fetched;
  try {
    answer = await get(ctx, discoveryUrl(base));
  } catch (error) {
    const code = errorCode(error);
    return check('discovery', 'fail', `Discovery at ${base} did not answer`, {
      detail: `GET ${discoveryUrl(base)}: ${code || message(error)}`,
      fix: UNTRUSTED.has(code)
        ? "See #gitlab-tls: Node does not trust GitLab's certificate"
        : 'See #gitlab-reachable and #gitlab-tls; check that GITLAB_URL is the address of GitLab',
    });
  }
  if (answer.status === 200 && answer.json && typeof answer.json['issuer'] === 'string') {
    const issuer = answer.json['issuer'];
    if (issuer !== base) {
      const mismatch = issuerMismatch(url, issuer);
      return check('discovery', 'fail', await show(mismatch.title, 300), {
        detail: `GET ${discoveryUrl(base)} names the issuer ${await show(issuer)}; labgate requires it to equal GITLAB_URL (${base}) exactly`,
        fix: await show(mismatch.fix, 300),
      });
    }
    // Every endpoint on the issuer's origin, as labgate's core requires (docs/security.md).
    for (const key of ['authorization_endpoint', 'token_endpoint', 'userinfo_endpoint', 'jwks_uri']) {
      const value = answer.json[key];
      if (typeof value !== 'string') continue;
      let endpoint: URL | null = null;
      try {
        endpoint = new URL(value);
      } catch {}
      const schemeOk =
        endpoint !== null &&
        (endpoint.protocol === 'https:' || (endpoint.protocol === 'http:' && url.protocol === 'http:'));
      if (!endpoint || !schemeOk || endpoint.host !== url.host) {
        return check('discovery', 'fail', `GitLab's ${key} is not on ${url.origin}`, {
          detail: `${key}: ${await show(value)}`,
          fix: "Set GitLab's external_url to the address in GITLAB_URL (scheme, host and port), so that every endpoint it publishes is on it",
        });
      }
    }
    ctx.discovery = { kind: 'oidc', document: answer.json };
    return check('discovery', 'ok', `Discovery answers and names the issuer ${base}`);
  }
  if (answer.status >= 300 && answer.status < 400) {
    const to = answer.location ? new URL(answer.location, discoveryUrl(base)) : null;
    const fix =
      to && to.protocol === 'https:' && url.protocol === 'http:' && to.host === url.host
        ? `Set GITLAB_URL=https://${url.host}${url.pathname}`
        : 'Set GITLAB_URL to the address GitLab is served at (labgate never follows redirects to GitLab: credentials must not be replayed elsewhere)';
    return check('discovery', 'fail', `Discovery at ${base} redirects`, {
      detail: `GET ${discoveryUrl(base)}: ${answer.status} to ${await show(answer.location ?? '(nowhere)')}`,
      fix,
    });
  }
  if (answer.status === 404) {
    for (const candidate of await otherBases(ctx, url)) {
      let found: Fetched;
      try {
        found = await get(ctx, discoveryUrl(candidate));
      } catch {
        continue;
      }
      const issuer = found.json?.['issuer'];
      if (found.status === 200 && typeof issuer === 'string' && issuer.replace(/\/+$/, '') === candidate) {
        const mismatch = issuerMismatch(url, issuer);
        return check('discovery', 'fail', await show(mismatch.title, 300), {
          detail: `GET ${discoveryUrl(base)}: 404; GitLab's discovery answers at ${discoveryUrl(candidate)}`,
          fix: await show(mismatch.fix, 300),
        });
      }
    }
    // No discovery anywhere: a GitLab without OpenID Connect still answers its token endpoint.
    let tokenStatus = 0;
    let tokenError: unknown = null;
    try {
      const response = await fetch(`${base}/oauth/token`, {
        method: 'POST',
        redirect: 'manual',
        headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
        body: 'grant_type=authorization_code',
        signal: AbortSignal.timeout(ctx.timeoutMs),
      });
      tokenStatus = response.status;
      const body = (await response.json().catch(() => null)) as { error?: unknown } | null;
      tokenError = body?.error;
    } catch {}
    if ((tokenStatus === 400 || tokenStatus === 401) && typeof tokenError === 'string') {
      ctx.discovery = { kind: 'oauth', document: {} };
      return check(
        'discovery',
        'warn',
        `${base} has no OpenID Connect discovery: labgate signs in with plain OAuth`,
        {
          detail: `GET ${discoveryUrl(base)}: 404, but ${base}/oauth/token answers as GitLab's OAuth provider`,
          fix: 'labgate works without it (profile from /api/v4/user, which needs the read_user scope); a GitLab with OpenID Connect gives verified ID tokens',
        },
      );
    }
    return check('discovery', 'fail', `No GitLab at ${base}`, {
      detail: `GET ${discoveryUrl(base)}: 404, and ${base}/oauth/token ${tokenStatus ? `answers ${tokenStatus}` : 'does not answer'}`,
      fix: 'Set GITLAB_URL to the address of GitLab, with its sub-path if it is served under one (https://host/gitlab)',
    });
  }
  return check(
    'discovery',
    'fail',
    answer.status === 200
      ? `Discovery at ${base} answered, but not with a discovery document (${await show(answer.type || 'no body', 60)})`
      : `Discovery at ${base} answered ${answer.status}`,
    {
      detail: `GET ${discoveryUrl(base)}`,
      fix:
        answer.status >= 500
          ? 'GitLab has a problem: try again later, or check its logs'
          : 'Check that GITLAB_URL is the address of GitLab (and that nothing in front of it answers instead)',
    },
  );
}

function list(document: Record<string, unknown>, key: string): string[] | null {
  const value = document[key];
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : null;
}

/** OpenID Connect as labgate uses it: the `openid` scope, RS256 ID tokens, userinfo, published keys. */
export async function checkOidc(ctx: DoctorContext): Promise<CheckResult> {
  const found = ctx.discovery;
  if (!found) return check('oidc', 'skip', 'OpenID Connect not checked: discovery failed');
  if (found.kind === 'oauth') {
    return check('oidc', 'warn', 'No OpenID Connect: sign-in uses plain OAuth and /api/v4/user', {
      fix: 'Nothing to do for labgate to work; add the read_user scope to GITLAB_SCOPES. Upgrading GitLab gives signed ID tokens',
    });
  }
  const doc = found.document;
  const problems: string[] = [];
  if (!(list(doc, 'scopes_supported') ?? ['openid']).includes('openid'))
    problems.push('the openid scope is not offered');
  if (!(list(doc, 'response_types_supported') ?? ['code']).includes('code'))
    problems.push('the code response type is not offered');
  if (!(list(doc, 'id_token_signing_alg_values_supported') ?? ['RS256']).includes('RS256'))
    problems.push('ID tokens are not signed with RS256');
  if (typeof doc['userinfo_endpoint'] !== 'string') problems.push('no userinfo endpoint');
  let keys = 0;
  const jwksUri = doc['jwks_uri'];
  if (typeof jwksUri !== 'string') problems.push('no jwks_uri');
  else {
    try {
      const answer = await get(ctx, jwksUri);
      const set = answer.json?.['keys'];
      keys = Array.isArray(set)
        ? set.filter((k) => typeof k === 'object' && k !== null && (k as { kty?: unknown }).kty === 'RSA')
            .length
        : 0;
      if (answer.status !== 200 || keys === 0)
        problems.push(
          `the signing keys at ${await show(jwksUri)} answered ${answer.status} without an RSA key`,
        );
    } catch (error) {
      problems.push(
        `the signing keys at ${await show(jwksUri)} did not answer (${errorCode(error) || message(error)})`,
      );
    }
  }
  if (problems.length > 0) {
    return check('oidc', 'fail', "GitLab's OpenID Connect is not usable", {
      detail: problems.join('; '),
      fix: "Check what sits in front of GitLab (a proxy that blocks /oauth/discovery/keys or /oauth/userinfo), or GitLab's OpenID Connect settings",
    });
  }
  return check('oidc', 'ok', `OpenID Connect: RS256 ID tokens, ${keys} signing key(s) published, userinfo`);
}

/** PKCE with S256, which labgate uses on every sign-in. */
export async function checkPkce(ctx: DoctorContext): Promise<CheckResult> {
  const found = ctx.discovery;
  if (!found) return check('pkce', 'skip', 'PKCE not checked: discovery failed');
  const methods = list(found.document, 'code_challenge_methods_supported');
  if (methods === null) {
    return check('pkce', 'warn', 'GitLab does not announce PKCE', {
      detail:
        'code_challenge_methods_supported is missing from discovery (GitLab before 15.7, or no OpenID Connect)',
      fix: 'Upgrade GitLab: without PKCE a stolen authorization code can be exchanged by anyone holding the client secret',
    });
  }
  if (!methods.includes('S256')) {
    return check('pkce', 'fail', 'GitLab does not offer PKCE with S256', {
      detail: `code_challenge_methods_supported: ${await show(methods.join(' '))}`,
      fix: 'Upgrade GitLab: labgate sends an S256 code challenge on every sign-in',
    });
  }
  return check('pkce', 'ok', 'PKCE with S256 offered');
}

/** The scopes the configuration and its policy need, against GitLab's `scopes_supported`. */
export async function checkScopes(ctx: DoctorContext): Promise<CheckResult> {
  const found = ctx.discovery;
  if (!found) return check('scopes', 'skip', 'Scopes not checked: discovery failed');
  const { scopesForPolicy } = await core();
  const configured =
    ctx.resolved?.scopes ??
    (ctx.env['GITLAB_SCOPES'] || 'openid profile email').split(/[\s,]+/).filter(Boolean);
  let fromPolicy: string[] = [];
  try {
    fromPolicy = ctx.options?.access ? scopesForPolicy(ctx.options.access) : [];
  } catch {}
  const needed = [...new Set([...configured, ...fromPolicy])];
  const offered = list(found.document, 'scopes_supported');
  if (offered === null) {
    return check('scopes', found.kind === 'oauth' ? 'ok' : 'warn', `Scopes needed: ${needed.join(' ')}`, {
      detail: 'GitLab does not list the scopes it offers; --signin checks them with a real sign-in',
      fix: 'Run labgate doctor --signin to check the scopes with a real sign-in',
    });
  }
  const missing = needed.filter((scope) => !offered.includes(scope));
  if (missing.length > 0) {
    return check(
      'scopes',
      'fail',
      `GitLab does not offer the scope${missing.length > 1 ? 's' : ''} ${await show(missing.join(' '))}`,
      {
        detail: `needed: ${await show(needed.join(' '))}${fromPolicy.length ? ` (the policy needs ${fromPolicy.join(' ')})` : ''}`,
        fix: 'Remove the scope from GITLAB_SCOPES, or upgrade GitLab if the policy (LABGATE_ALLOW, LABGATE_REQUIRE) needs it',
      },
    );
  }
  return check('scopes', 'ok', `GitLab offers the scopes needed: ${needed.join(' ')}`, {
    detail: 'whether the application has them enabled is seen only at sign-in: labgate doctor --signin',
  });
}

/** GitLab's connection as labgate's core builds it, once (null when the core refuses the configuration). */
async function providerOf(ctx: DoctorContext): Promise<Provider | string> {
  if (ctx.provider) return ctx.provider;
  if (!ctx.resolved) return 'the configuration is refused (see #configuration)';
  const { discover } = await core();
  try {
    ctx.provider = await discover(ctx.resolved);
    return ctx.provider;
  } catch (error) {
    return message(error);
  }
}

async function oauthError(response: Response): Promise<{ error: string; description: string }> {
  const body = (await response.json().catch(() => null)) as Record<string, unknown> | null;
  return {
    error: typeof body?.['error'] === 'string' ? body['error'] : '',
    description: typeof body?.['error_description'] === 'string' ? body['error_description'] : '',
  };
}

/**
 * Device authorization (`POST /oauth/authorize_device`, GitLab 17.2+; not in discovery): reported
 * for information, never as a failure, since labgate's sign-in does not need it.
 */
export async function checkDeviceFlow(ctx: DoctorContext): Promise<CheckResult> {
  if (!ctx.discovery) return check('device-flow', 'skip', 'Device flow not checked: discovery failed');
  const provider = await providerOf(ctx);
  if (typeof provider === 'string')
    return check('device-flow', 'skip', `Device flow not checked: ${await show(provider)}`);
  const { oauth } = await core();
  const endpoint = `${provider.issuer}/oauth/authorize_device`;
  let response: Response;
  try {
    response = await oauth.deviceAuthorizationRequest(
      { ...provider.server, device_authorization_endpoint: endpoint },
      provider.client,
      provider.clientAuth,
      { scope: ctx.resolved!.scopes.join(' ') },
      provider.http,
    );
  } catch (error) {
    return check('device-flow', 'warn', 'Device flow: could not tell', {
      detail: `POST ${endpoint}: ${await show(errorCode(error) || message(error))}`,
      fix: 'Nothing to do unless you sign in from devices without a browser',
    });
  }
  if (response.status === 200) {
    await response.body?.cancel();
    // The device code it returned is never used and expires by itself.
    return check('device-flow', 'ok', 'Device flow available (sign-in from devices without a browser)');
  }
  if (response.status === 404) {
    await response.body?.cancel();
    return check('device-flow', 'warn', 'Device flow not available', {
      detail: `POST ${endpoint}: 404 (GitLab before 17.2)`,
      fix: 'Nothing to do unless you sign in from devices without a browser; that needs GitLab 17.2 or later',
    });
  }
  const { error } = await oauthError(response);
  return check('device-flow', 'warn', 'Device flow: could not tell', {
    detail: `POST ${endpoint}: ${response.status} ${await show(error, 60)}${error === 'invalid_client' ? ' (GitLab refused the client: see #client-credentials)' : ''}`,
    fix: 'Nothing to do unless you sign in from devices without a browser',
  });
}

function credentialHints(resolved: ResolvedOptions, env: Env): string[] {
  const hints: string[] = [];
  if (!/^[0-9a-f]{64}$/.test(resolved.clientId))
    hints.push('GITLAB_CLIENT_ID does not look like a GitLab Application ID (64 hexadecimal characters)');
  const secret = env['GITLAB_CLIENT_SECRET'] ?? '';
  if (secret !== secret.trim()) hints.push('GITLAB_CLIENT_SECRET starts or ends with white space');
  return hints;
}

/**
 * The client id and secret, without a user: a token request with a made-up code, sent exactly as
 * labgate's core sends the real one (its client authentication, its guarded fetch). GitLab checks the
 * client before the code: 401 `invalid_client` means an unknown id, a wrong or renewed secret, or a
 * confidential application probed without its secret; 400 `invalid_grant` means the client passed.
 */
export async function checkClientCredentials(ctx: DoctorContext): Promise<CheckResult> {
  if (!ctx.discovery)
    return check('client-credentials', 'skip', 'Client credentials not checked: discovery failed');
  const provider = await providerOf(ctx);
  if (typeof provider === 'string')
    return check('client-credentials', 'skip', `Client credentials not checked: ${await show(provider)}`);
  const resolved = ctx.resolved!;
  const { oauth } = await core();
  const state = oauth.generateRandomState();
  let response: Response;
  try {
    const params = oauth.validateAuthResponse(
      provider.server,
      provider.client,
      new URLSearchParams({ code: 'labgate-doctor-probe', state }),
      state,
    );
    response = await oauth.authorizationCodeGrantRequest(
      provider.server,
      provider.client,
      provider.clientAuth,
      params,
      resolved.redirectUri,
      oauth.generateRandomCodeVerifier(),
      provider.http,
    );
  } catch (error) {
    return check('client-credentials', 'fail', 'The token endpoint did not answer', {
      detail: await show(errorCode(error) || message(error)),
      fix: 'See #gitlab-reachable and #gitlab-tls',
    });
  }
  const { error, description } = await oauthError(response);
  const hints = credentialHints(resolved, ctx.env);
  if (error === 'invalid_grant') {
    return check(
      'client-credentials',
      'ok',
      resolved.clientSecret
        ? 'GitLab knows the client id and accepts the secret'
        : 'GitLab knows the client id (a public application: no secret needed)',
    );
  }
  if (error === 'invalid_client') {
    const detail = [
      `${response.status} invalid_client${description ? `: ${await show(description)}` : ''}`,
      ...hints,
    ].join('\n');
    if (!resolved.clientSecret) {
      return check(
        'client-credentials',
        'fail',
        'this application is confidential: set GITLAB_CLIENT_SECRET',
        {
          detail: `${detail}\n(or GitLab has no application with this client id)`,
          fix: 'Set GITLAB_CLIENT_SECRET to the application\'s secret (GitLab shows it once; "Renew secret" gives a new one), and check that GITLAB_CLIENT_ID is its Application ID',
        },
      );
    }
    return check('client-credentials', 'fail', 'GitLab refused the client id or secret', {
      detail: `${detail}\nan unknown client id, a wrong secret, or a secret renewed in GitLab (the old one stops working at once)`,
      fix: "In GitLab's application settings (User settings → Applications, the group's or the Admin area's Applications), check that the Application ID equals GITLAB_CLIENT_ID; then set GITLAB_CLIENT_SECRET to the current secret, or click \"Renew secret\" and set the new one",
    });
  }
  return check(
    'client-credentials',
    'fail',
    `The token endpoint answered ${response.status}${error ? ` ${await show(error, 60)}` : ''}`,
    {
      detail: [description ? await show(description) : '', ...hints].filter(Boolean).join('\n') || undefined,
      fix:
        response.status >= 500
          ? 'GitLab has a problem: try again later, or check its logs'
          : 'Check GITLAB_CLIENT_ID and GITLAB_CLIENT_SECRET against the application in GitLab',
    },
  );
}

/** The local clock against GitLab's `Date` header: ID tokens are checked with a 60 s tolerance. */
export async function checkClock(ctx: DoctorContext): Promise<CheckResult> {
  if (!ctx.serverDate) {
    return check(
      'clock',
      ctx.reachable === false || !ctx.gitlabUrl ? 'skip' : 'warn',
      'Clock not compared: GitLab sent no Date header',
      {
        fix: "Keep this machine's clock synchronised (NTP): ID tokens are refused beyond 60 s of skew",
      },
    );
  }
  const skew = (ctx.serverDate.server - ctx.serverDate.local) / 1000;
  // The Date header has whole seconds: a skew under one second is noise.
  const size = Math.abs(skew) < 1 ? 0 : Math.round(Math.abs(skew));
  const direction = skew > 0 ? 'behind' : 'ahead of';
  const detail = `GitLab's Date: ${new Date(ctx.serverDate.server).toISOString()}; here: ${new Date(ctx.serverDate.local).toISOString()}`;
  const fix = 'Synchronise the clocks of this machine and of GitLab (NTP: timedatectl set-ntp true, chrony)';
  if (size > CLOCK_FAIL_SECONDS) {
    return check(
      'clock',
      'fail',
      `This clock is ${size} s ${direction} GitLab's: ID tokens will be refused (tolerance ${CLOCK_FAIL_SECONDS} s)`,
      {
        detail,
        fix,
      },
    );
  }
  if (size > CLOCK_WARN_SECONDS) {
    return check('clock', 'warn', `This clock is ${size} s ${direction} GitLab's`, {
      detail: `${detail}; sign-ins fail beyond ${CLOCK_FAIL_SECONDS} s`,
      fix,
    });
  }
  return check('clock', 'ok', `Clock agrees with GitLab's (${size === 0 ? 'under 1 s' : `${size} s`} apart)`);
}

// ─── Local settings ─────────────────────────────────────────────────────────────────────────────

/** `LABGATE_SECRET`: present, base64url, ≥ 32 bytes each (as the core requires), and not a pattern. */
export async function checkSecret(ctx: DoctorContext): Promise<CheckResult> {
  const { parseSecrets } = await core();
  const value = ctx.env['LABGATE_SECRET'] ?? '';
  const fix =
    'Set LABGATE_SECRET to the output of `npx labgate secret` (32 random bytes, base64url); to rotate, put the new one first: LABGATE_SECRET=new,old';
  let secrets: Uint8Array[];
  try {
    secrets = parseSecrets(value);
  } catch (error) {
    return check(
      'secret',
      'fail',
      value.trim() ? `LABGATE_SECRET is refused: ${message(error)}` : 'LABGATE_SECRET is not set',
      {
        fix,
      },
    );
  }
  const texts = value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const weak = secrets.flatMap((bytes, i) => {
    const distinctBytes = new Set(bytes).size;
    const distinctChars = new Set(texts[i] ?? '').size;
    // 32 random bytes hold about 30 distinct values and their text about 30 distinct characters.
    return distinctBytes < 16 || distinctChars < 12 ? [`#${i + 1}`] : [];
  });
  if (weak.length > 0) {
    return check(
      'secret',
      'warn',
      `LABGATE_SECRET ${weak.join(', ')} looks typed, not random (few distinct characters)`,
      {
        detail: 'it is long enough, but a repeated or patterned value can be guessed',
        fix,
      },
    );
  }
  return check(
    'secret',
    'ok',
    `LABGATE_SECRET: ${secrets.length} secret${secrets.length > 1 ? 's (the first seals, all open)' : ''} of ${Math.min(...secrets.map((s) => s.length))}+ bytes`,
  );
}

/** The session cookie's attributes as `LABGATE_URL` makes them. */
export async function checkCookies(ctx: DoctorContext): Promise<CheckResult> {
  const { isLoopbackHost } = await core();
  let url: URL;
  try {
    url = new URL(
      ctx.resolved?.origin ??
        ctx.env['LABGATE_URL'] ??
        (ctx.gateway ? GATEWAY_URL : `http://localhost:${ctx.env['PORT'] ?? 3000}`),
    );
  } catch {
    return check('cookies', 'skip', 'Cookies not checked: LABGATE_URL is not a URL');
  }
  const name = ctx.resolved?.cookieName ?? (url.protocol === 'https:' ? '__Host-labgate' : 'labgate');
  if (url.protocol === 'https:') {
    return check('cookies', 'ok', `Cookies: ${name}, Secure, HttpOnly, SameSite=Lax`);
  }
  if (isLoopbackHost(url.hostname)) {
    return check(
      'cookies',
      'ok',
      `Cookies: ${name}, HttpOnly, SameSite=Lax, not Secure (plain http on loopback)`,
      {
        detail:
          'fine for development on this machine; in production LABGATE_URL is https:// and cookies get Secure and the __Host- prefix',
      },
    );
  }
  return check('cookies', 'warn', `LABGATE_URL is plain http on ${url.host}: cookies are not Secure`, {
    detail:
      'the session cookie crosses the network in clear and can be stolen on the way; it has no __Host- prefix',
    fix: `Serve the ${ctx.gateway ? 'gateway' : 'app'} over https and set LABGATE_URL=https://${url.host}`,
  });
}

/** The nearest path at or above `path` that exists, and whether it is a folder. */
async function nearestExisting(path: string): Promise<{ path: string; folder: boolean }> {
  let current = path;
  for (;;) {
    try {
      return { path: current, folder: (await stat(current)).isDirectory() };
    } catch {}
    const parent = dirname(current);
    if (parent === current) return { path: current, folder: true };
    current = parent;
  }
}

/**
 * `LABGATE_STORE`: reachable, migrated (opening a store migrates it, as the app does at start), and a
 * value can be written and read back; for SQLite, also that its folder is writable.
 */
export async function checkStore(ctx: DoctorContext): Promise<CheckResult> {
  const url = ctx.env['LABGATE_STORE'] || (ctx.gateway ? GATEWAY_STORE : APP_STORE);
  const { describeStore, openStore } = await import('../stores/index.js');
  const shown = await show(describeStore(url));
  if (url === 'memory:' || url === 'memory') {
    return check('store', 'warn', 'The store is memory: sessions end at every restart and are not shared', {
      fix: 'Use sqlite:PATH, postgres://… or redis://… outside development (LABGATE_STORE)',
    });
  }
  let note = '';
  if (url.startsWith('sqlite:')) {
    const path = resolve(
      ctx.cwd,
      url.slice('sqlite:'.length).replace(/^\/\/(?=\/)/, '') || APP_STORE.slice(7),
    );
    const nearest = await nearestExisting(dirname(path));
    const existing = nearest.path;
    if (!nearest.folder) {
      return check(
        'store',
        'fail',
        `The SQLite store's folder cannot be made: ${await show(existing)} is a file`,
        {
          detail: `LABGATE_STORE=${shown}`,
          fix: 'Point LABGATE_STORE at a file in a folder (sqlite:./.labgate/labgate.db)',
        },
      );
    }
    const writable = await access(existing, constants.W_OK).then(
      () => true,
      () => false,
    );
    if (!writable) {
      return check('store', 'fail', `The SQLite folder ${await show(existing)} is not writable`, {
        detail: `LABGATE_STORE=${shown}`,
        fix: `Let the user that runs labgate write to ${await show(existing)} (chown or chmod), or point LABGATE_STORE at a writable place`,
      });
    }
    const exists = await stat(path).then(
      () => true,
      () => false,
    );
    if (!exists) {
      // Creating the file here could leave it owned by whoever ran doctor, not by the app's user.
      return check('store', 'ok', `The SQLite store ${shown} will be created at first start`, {
        detail: `${await show(existing)} is writable`,
      });
    }
    note = ' (its folder is writable)';
  }
  let store: Awaited<ReturnType<typeof openStore>> | undefined;
  const opening = openStore(url);
  try {
    store = await withTimeout(opening, ctx.timeoutMs, 'store');
    const key = `labgate:doctor:${randomBytes(8).toString('hex')}`;
    await store.put(key, 'ok', 10_000);
    const read = await store.get(key);
    await store.delete(key);
    if (read !== 'ok') throw new Error('a value written could not be read back');
  } catch (error) {
    const text = await show(message(error), 300);
    const fix = /newer than this labgate/.test(text)
      ? 'Upgrade labgate: the database was migrated by a newer version'
      : error instanceof TypeError
        ? 'Correct LABGATE_STORE, or install the driver the message names'
        : url.startsWith('redis')
          ? 'Start Redis, or correct the host, port and password in LABGATE_STORE'
          : url.startsWith('postgres')
            ? 'Start PostgreSQL, or correct the host, port, user, password and database in LABGATE_STORE'
            : 'Check the file and its folder (permissions, free space)';
    return check('store', 'fail', `The store ${shown} is not usable: ${text}`, { fix });
  } finally {
    if (store) await store.close?.().catch(() => undefined);
    // A store that opens after the timeout must not keep the process alive.
    else
      opening
        .then(
          (late) => late.close?.(),
          () => undefined,
        )
        .catch(() => undefined);
  }
  return check('store', 'ok', `The store ${shown} is reachable and migrated${note}`);
}

/** One check as the runner knows it: its id (for progress) and how to run it. */
export interface DoctorCheck {
  id: string;
  /** What the progress line says while it runs. */
  label: string;
  run: (ctx: DoctorContext) => Promise<CheckResult>;
}

/**
 * Every check, in the order they run and print. The GitLab checks depend on the ones before them;
 * the store is independent.
 *
 * @example
 * ```ts
 * const ctx = createDoctorContext({ env: process.env, processEnv: process.env, envFile: null, gateway: false, timeoutMs: 10_000, cwd: process.cwd() });
 * for (const c of DOCTOR_CHECKS) console.log(await c.run(ctx));
 * ```
 */
export const DOCTOR_CHECKS: readonly DoctorCheck[] = [
  { id: 'configuration', label: 'reading the configuration', run: checkConfiguration },
  { id: 'gitlab-reachable', label: 'reaching GitLab', run: checkReachable },
  { id: 'gitlab-tls', label: 'checking TLS', run: checkTls },
  { id: 'proxy', label: 'checking proxies', run: checkProxy },
  { id: 'discovery', label: 'reading GitLab’s discovery', run: checkDiscovery },
  { id: 'oidc', label: 'checking OpenID Connect', run: checkOidc },
  { id: 'pkce', label: 'checking PKCE', run: checkPkce },
  { id: 'scopes', label: 'checking scopes', run: checkScopes },
  { id: 'client-credentials', label: 'probing the client credentials', run: checkClientCredentials },
  { id: 'device-flow', label: 'probing the device flow', run: checkDeviceFlow },
  { id: 'clock', label: 'comparing clocks', run: checkClock },
  { id: 'secret', label: 'checking LABGATE_SECRET', run: checkSecret },
  { id: 'cookies', label: 'checking cookie settings', run: checkCookies },
  { id: 'store', label: 'opening the store', run: checkStore },
];
