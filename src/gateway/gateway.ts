/**
 * The gateway's request flow (docs/gateway.md): every request is read once into a normalised path,
 * then it is one of oauth2-proxy's endpoints under `/oauth2` (sign-in, callback, sign-out, userinfo,
 * the forward-auth oracle `/oauth2/auth`), a health check, or a request for the upstream — which passes
 * only with a session and the access its route needs, its identity headers set after every client-sent
 * copy was stripped. WebSocket upgrades take the same checks plus an `Origin` check, and their tunnels
 * close when the session ends. Sign-in, sessions, refresh and re-checks are labgate's core.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { sendWebResponse, toWebRequest } from '../adapters/node.js';
import { readForm } from '../core/body.js';
import { clearCookie } from '../core/cookies.js';
import { isNavigation, signInRequired } from '../core/guards.js';
import { type Guard, isLabgateError, type Labgate, LabgateError, type Session } from '../core/index.js';
import { logText } from '../core/log.js';
import { errorAnswer, htmlResponse, logoutPage, signInPage } from '../core/pages.js';
import { parseRedirectDomains } from '../core/redirects.js';
import type { Assertions } from './assertion.js';
import type { GatewayConfig } from './config.js';
import { isHeaderRefusal, upstreamHeaders } from './headers.js';
import type { Metrics, Outcome } from './metrics.js';
import { normaliseTarget } from './paths.js';
import type { Proxy as UpstreamProxy } from './proxy.js';
import { chooseRedirect } from './redirect.js';
import { compileRules, parsePolicyParams } from './rules.js';
import { isTrustedPeer } from './trust.js';
import { createTunnels } from './tunnels.js';

const PREFIX = '/oauth2';
const NONE: Guard[] = [];
const NO_IDENTITY: Record<string, string> = {};
const JSON_HEADERS = { 'content-type': 'application/json', 'cache-control': 'no-store' };

/** A structured log line's fields; values are escaped by the logger. */
export type LogFields = Record<string, string | number | boolean | null | undefined>;

/** Where the gateway logs: one JSON object a line. */
export interface GatewayLogger {
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
}

/** What a gateway is made of. */
export interface GatewayParts {
  config: GatewayConfig;
  labgate: Labgate;
  proxy: UpstreamProxy;
  metrics: Metrics;
  logger: GatewayLogger;
  assertions: Assertions | null;
}

/** The gateway's handlers for a node:http server. */
export interface Gateway {
  request(req: IncomingMessage, res: ServerResponse): void;
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  /** Closes every WebSocket tunnel (code 1001) and stops the session watch. */
  closeTunnels(): void;
}

/** A request's place: the path it was decided on, and what goes upstream. */
interface Target {
  path: string;
  forward: string;
  search: string;
}

/** Creates the gateway's handlers. */
export function createGateway(parts: GatewayParts): Gateway {
  const { config, labgate, proxy, metrics, logger, assertions } = parts;
  const origin = labgate.options.origin;
  const publicHost = new URL(origin).host;
  const proto = labgate.options.secure ? 'https' : 'http';
  const rules = compileRules(config);
  const domains = parseRedirectDomains(config.whitelistDomains);
  const cookieName = labgate.options.cookieName;
  const extraStrip = assertions ? [config.assertion!.header] : [];
  const ownCookie = (name: string) => name === cookieName || name.startsWith(`${cookieName}-tx-`);

  // Guards compiled once, and each route's list of them built once (docs/security.md, GATEWAY-7): the
  // email domains, then the route's rules. A request builds no list.
  const emailGuard =
    config.emailDomains === null
      ? null
      : labgate.guard({
          access: { allow: config.emailDomains.map((d) => `email:@${d}`), require: [] },
          api: true,
        });
  const baseGuards: Guard[] = emailGuard ? [emailGuard] : [];
  const routeGuards = new Map<string, Guard[]>();
  for (const route of config.routes)
    routeGuards.set(route.prefix, [
      ...baseGuards,
      labgate.guard({ access: { allow: route.allow, require: [] }, api: true }),
    ]);
  // `/oauth2/auth` query constraints, compiled once per distinct query.
  const queryGuards = new Map<string, { guards: Guard[]; emails: string[] | null } | TypeError>();

  labgate.on('session.created', () => metrics.signIn());
  labgate.on('token.refreshed', () => metrics.refreshed());

  function trusted(req: IncomingMessage): boolean {
    return config.reverseProxy && isTrustedPeer(req.socket.remoteAddress, config.trustedProxies);
  }

  function header(req: IncomingMessage, name: string): string | null {
    const value = req.headers[name];
    return typeof value === 'string' ? value : Array.isArray(value) ? (value[0] ?? null) : null;
  }

  /** The session of a request; `store_unavailable` propagates. */
  async function sessionOf(req: IncomingMessage): Promise<Session | null> {
    const found = labgate.sessionOf(req.headers.cookie);
    return found instanceof Promise ? found : found;
  }

  /** A signed-out request: browsers to sign in and back, everything else 401 JSON (GATEWAY-8). */
  function wantsRedirect(req: IncomingMessage, target: Target): boolean {
    if (config.forceJsonErrors || rules.isApi(target.path) || req.headers['x-requested-with']) return false;
    return isNavigation({
      method: req.method ?? 'GET',
      accept: header(req, 'accept'),
      secFetchMode: header(req, 'sec-fetch-mode'),
    });
  }

  /**
   * Whether a signed-in user may reach a path: email domains, then the route's rules, then `extra`.
   * Answers at once when every guard can (the common request); a promise only when one asks GitLab.
   */
  function allowed(session: Session, path: string, extra: Guard[] = NONE): boolean | Promise<boolean> {
    const route = rules.routeFor(path);
    const own = route ? routeGuards.get(route.prefix)! : baseGuards;
    return decideFrom(extra.length === 0 ? own : [...own, ...extra], 0, session, path);
  }

  function decideFrom(
    guards: Guard[],
    from: number,
    session: Session,
    path: string,
  ): boolean | Promise<boolean> {
    for (let i = from; i < guards.length; i++) {
      const answer = guards[i]!.check({ method: 'GET', target: path, session });
      if (answer instanceof Promise)
        return answer.then((settled) =>
          settled === null ? decideFrom(guards, i + 1, session, path) : false,
        );
      if (answer !== null) return false;
    }
    return true;
  }

  /** The identity headers for the upstream (proxy mode) or the edge (`X-Auth-Request-*`). */
  function identity(
    session: Session,
    kind: 'upstream' | 'response',
  ): Record<string, string> | Promise<Record<string, string>> {
    const { user } = session;
    const email = user.email && user.emailVerified ? user.email : '';
    const name = config.preferEmailToUser && email ? email : user.username;
    const groups = joinGroups(user.groups);
    const out: Record<string, string> = {};
    const base = kind === 'upstream' ? 'x-forwarded-' : 'x-auth-request-';
    if (kind === 'response' || config.passUserHeaders) {
      out[`${base}user`] = name;
      if (email && !(config.preferEmailToUser && kind === 'upstream')) out[`${base}email`] = email;
      out[`${base}preferred-username`] = user.username;
      if (groups) out[`${base}groups`] = groups;
    }
    const signed = kind === 'upstream' && assertions !== null;
    if (!config.passAccessToken && !signed) return out;
    return (async () => {
      if (config.passAccessToken) out[`${base}access-token`] = await labgate.getAccessToken(session);
      if (signed) out[config.assertion!.header.toLowerCase()] = await assertions!.tokenFor(session);
      return out;
    })();
  }

  /** What the upstream receives: the client's headers cleaned, and the session's identity (GATEWAY-1). */
  function headersFor(req: IncomingMessage, session: Session | null, upgrade: boolean) {
    const known = session ? identity(session, 'upstream') : NO_IDENTITY;
    return known instanceof Promise
      ? known.then((found) => cleaned(req, found, upgrade))
      : cleaned(req, known, upgrade);
  }

  function cleaned(req: IncomingMessage, found: Record<string, string>, upgrade: boolean) {
    return upstreamHeaders(req, {
      identity: found,
      ownCookie,
      clientIp: req.socket.remoteAddress ?? '',
      proto,
      host: publicHost,
      trusted: trusted(req),
      extraStrip,
      upgrade,
    });
  }

  function done(outcome: Outcome): void {
    metrics.request(outcome);
  }

  async function send(res: ServerResponse, response: Response, outcome: Outcome): Promise<void> {
    done(outcome);
    await sendWebResponse(res, response);
  }

  function json(res: ServerResponse, status: number, body: object, outcome: Outcome, extra = {}): void {
    done(outcome);
    const text = JSON.stringify(body);
    res.writeHead(status, { ...JSON_HEADERS, 'content-length': Buffer.byteLength(text), ...extra });
    res.end(text);
  }

  /** The 401 every labgate guard gives (src/core/guards.ts). */
  function unauthenticated(res: ServerResponse): Promise<void> {
    return send(res, signInRequired(), 'unauthenticated');
  }

  /** A signed-in user refused: labgate's 403 page for a browser, JSON for the rest. */
  function forbidden(res: ServerResponse, req: IncomingMessage, path: string): Promise<void> {
    metrics.denied();
    const error = new LabgateError('access_forbidden', 'no rule of this route admits the user', {
      detail: 'Your GitLab account has no access to this page.',
    });
    return send(
      res,
      errorAnswer(error, { accept: header(req, 'accept'), route: path }, labgate.options),
      'denied',
    );
  }

  function failed(res: ServerResponse, error: unknown): void {
    const code = (error as { code?: unknown } | null)?.code;
    if (isLabgateError(error) && error.statusCode < 500) {
      json(res, error.statusCode, { error: error.code, message: error.message }, 'invalid');
      return;
    }
    if (code === 'store_unavailable' || code === 'gitlab_unreachable') {
      json(res, 503, { error: code, message: 'Sign-in is unavailable for a moment' }, 'unavailable', {
        'retry-after': '5',
      });
      return;
    }
    logger.error('request failed', { error: logText(String((error as Error)?.message ?? error), 200) });
    json(res, 500, { error: 'internal', message: 'The gateway could not answer' }, 'invalid');
  }

  /** Where a sign-in, sign-in page or sign-out sends the browser afterwards (docs/security.md, REDIRECT-4, GATEWAY-10). */
  function redirectOf(req: IncomingMessage, target: Target, rd: string | null): string {
    const trust = trusted(req);
    return chooseRedirect({
      rd,
      authRequestRedirect: header(req, 'x-auth-request-redirect'),
      forwarded: trust
        ? {
            proto: header(req, 'x-forwarded-proto'),
            host: header(req, 'x-forwarded-host'),
            uri: header(req, 'x-forwarded-uri'),
          }
        : null,
      requestUri: `${target.forward}${target.search}`,
      host: header(req, 'host'),
      prefix: PREFIX,
      origin,
      domains,
    });
  }

  /** A core route under the prefix, asked with a request built for it. */
  async function core(res: ServerResponse, request: Request): Promise<void> {
    const response = await labgate.handle(request);
    await send(res, response ?? Response.json({ error: 'not_found' }, { status: 404 }), 'endpoint');
  }

  /** A request for a core route, with the headers the core reads from the client's. */
  function rebuilt(
    req: IncomingMessage,
    path: string,
    init: { method?: string; body?: string } = {},
  ): Request {
    const headers = new Headers();
    for (const name of ['cookie', 'accept', 'origin', 'sec-fetch-site', 'sec-fetch-mode', 'user-agent']) {
      const value = header(req, name);
      if (value !== null) headers.set(name, value);
    }
    if (init.body !== undefined) headers.set('content-type', 'application/x-www-form-urlencoded');
    return new Request(`${origin}${path}`, { ...init, headers });
  }

  /** `/oauth2/*`: oauth2-proxy's endpoints, and the core's routes for the rest (the callback). */
  async function endpoint(req: IncomingMessage, res: ServerResponse, target: Target): Promise<void> {
    const route = target.path.slice(PREFIX.length);
    const query = new URLSearchParams(target.search);
    const method = req.method ?? 'GET';
    switch (route) {
      case '/auth':
        return forwardAuth(req, res, target, query);
      case '/start': {
        const rd = redirectOf(req, target, query.get('rd'));
        return core(res, rebuilt(req, `${PREFIX}/login?returnTo=${encodeURIComponent(rd)}`));
      }
      case '/sign_in': {
        // oauth2-proxy's sign-in page also ends the browser's session (its CVE-2026-34454 was a regression there).
        const rd = redirectOf(req, target, query.get('rd'));
        const start = `${PREFIX}/start?rd=${encodeURIComponent(rd)}`;
        const clear = { 'set-cookie': clearSession() };
        if (config.skipProviderButton) {
          done('redirected');
          res.writeHead(302, { location: start, 'cache-control': 'no-store', ...clear });
          res.end();
          return;
        }
        return send(res, htmlResponse(signInPage(start), 200, clear), 'endpoint');
      }
      case '/sign_out': {
        if (method === 'GET' || method === 'HEAD') {
          const rd = redirectOf(req, target, query.get('rd'));
          return send(res, htmlResponse(logoutPage(`${PREFIX}/sign_out`, rd)), 'endpoint');
        }
        if (method !== 'POST')
          return json(res, 405, { error: 'method_not_allowed' }, 'invalid', { allow: 'GET, HEAD, POST' });
        // The same-origin check comes before the body is read (docs/security.md, CSRF-1): the core's.
        const form = sameSite(req) ? await readForm(toWebRequest(req, { origin })) : new URLSearchParams();
        const rd = redirectOf(req, target, form.get('rd') ?? query.get('rd'));
        const body = new URLSearchParams({ returnTo: rd }).toString();
        return core(res, rebuilt(req, `${PREFIX}/logout`, { method: 'POST', body }));
      }
      case '/userinfo': {
        const session = await sessionOf(req);
        if (!session) return unauthenticated(res);
        const { user } = session;
        return json(
          res,
          200,
          {
            user: user.username,
            ...(user.email && user.emailVerified ? { email: user.email } : {}),
            ...(user.groups.length ? { groups: user.groups } : {}),
            preferredUsername: user.username,
          },
          'endpoint',
        );
      }
      case '/jwks.json':
        if (!assertions) break;
        done('endpoint');
        res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'public, max-age=300' });
        res.end(assertions.jwks);
        return;
    }
    return core(res, toWebRequest(req, { origin, response: res }));
  }

  function sameSite(req: IncomingMessage): boolean {
    const from = header(req, 'origin');
    return from !== null ? from === origin : header(req, 'sec-fetch-site') === 'same-origin';
  }

  function clearSession(): string {
    return clearCookie(cookieName, { secure: labgate.options.secure });
  }

  /**
   * `/oauth2/auth` for nginx `auth_request`, Traefik ForwardAuth and Caddy `forward_auth`: 202 with
   * the identity headers, 401 without a session, 403 for a signed-in user the rules refuse
   * (docs/gateway.md, "Forward-auth"; docs/security.md, GATEWAY-5).
   */
  async function forwardAuth(
    req: IncomingMessage,
    res: ServerResponse,
    target: Target,
    query: URLSearchParams,
  ): Promise<void> {
    // The original request, from a trusted proxy only; otherwise only the app-wide rules can apply.
    const trust = trusted(req);
    const uri = trust ? header(req, 'x-forwarded-uri') : null;
    const original = uri === null ? null : normaliseTarget(uri);
    if (uri !== null && original === null) return json(res, 400, { error: 'request_invalid' }, 'invalid');
    const method = (
      (trust && (header(req, 'x-forwarded-method') || header(req, 'x-original-method'))) ||
      'GET'
    ).toUpperCase();
    const path = original?.path ?? '/';
    // Skip rules need the request they skip: without a trusted X-Forwarded-Uri none applies (a negated
    // rule would otherwise let every request through).
    const skippable = original !== null || (trust && config.skipAuthPreflight);
    if (skippable && (rules.skips(method, path) || (config.skipAuthPreflight && method === 'OPTIONS'))) {
      done('skipped');
      res.writeHead(202, { 'cache-control': 'no-store' });
      res.end();
      return;
    }
    let constraints = queryGuards.get(target.search);
    if (constraints === undefined) {
      const parsed = parsePolicyParams(query);
      constraints =
        parsed instanceof TypeError
          ? parsed
          : {
              guards: parsed.policies.map((access) => labgate.guard({ access, api: true })),
              emails: parsed.emails,
            };
      if (queryGuards.size > 1000) queryGuards.clear();
      queryGuards.set(target.search, constraints);
    }
    if (constraints instanceof TypeError)
      return json(res, 400, { error: 'request_invalid', message: constraints.message }, 'invalid');
    const session = await sessionOf(req);
    if (!session) return unauthenticated(res);
    const email = session.user.emailVerified ? (session.user.email ?? '').toLowerCase() : '';
    if (
      (constraints.emails !== null && !constraints.emails.includes(email)) ||
      !(await allowed(session, path, constraints.guards))
    )
      return forbidden(res, req, path);
    const headers: Record<string, string> = {
      'gap-auth':
        session.user.emailVerified && session.user.email ? session.user.email : session.user.username,
      'cache-control': 'no-store',
    };
    if (config.setXAuthRequest) Object.assign(headers, await identity(session, 'response'));
    else if (config.passAccessToken)
      headers['x-auth-request-access-token'] = await labgate.getAccessToken(session);
    done('authorized');
    res.writeHead(202, headers);
    res.end();
  }

  /** Everything else goes upstream, when allowed. */
  async function upstream(req: IncomingMessage, res: ServerResponse, target: Target): Promise<void> {
    const method = req.method ?? 'GET';
    const skipped = rules.skips(method, target.path) || (config.skipAuthPreflight && method === 'OPTIONS');
    let session: Session | null = null;
    if (!skipped) {
      const found = labgate.sessionOf(req.headers.cookie);
      session = found instanceof Promise ? await found : found;
      if (!session) {
        if (!wantsRedirect(req, target)) return unauthenticated(res);
        done('redirected');
        const rd = `${target.forward}${target.search}`;
        res.writeHead(302, {
          location: `${PREFIX}/start?rd=${encodeURIComponent(rd)}`,
          'cache-control': 'no-store',
        });
        res.end();
        return;
      }
      const verdict = allowed(session, target.path);
      if (!(verdict === true || (verdict !== false && (await verdict))))
        return forbidden(res, req, target.path);
    }
    const prepared = headersFor(req, session, false);
    const headers = prepared instanceof Promise ? await prepared : prepared;
    if (isHeaderRefusal(headers))
      return json(res, 400, { error: 'request_invalid', message: headers.error }, 'invalid');
    const { status, upstreamMs } = await proxy.forward(req, res, {
      path: `${target.forward}${target.search}`,
      headers,
      ownCookie,
    });
    metrics.upstream(upstreamMs);
    done(status === 502 || status === 504 ? 'upstream_error' : skipped ? 'skipped' : 'proxied');
  }

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const target = normaliseTarget(req.url ?? '');
    if (target === null)
      return json(res, 400, { error: 'request_invalid', message: 'bad request target' }, 'invalid');
    const { path } = target;
    if (path === '/ping') {
      done('endpoint');
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'no-store' });
      res.end('OK');
      return;
    }
    if (path === '/ready') {
      const ok = await labgate.store.get('labgate:gateway:ready').then(
        () => true,
        () => false,
      );
      done('endpoint');
      res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain', 'cache-control': 'no-store' });
      res.end(ok ? 'OK' : 'store unavailable');
      return;
    }
    if (path === '/robots.txt') {
      done('endpoint');
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('User-agent: *\nDisallow: /\n');
      return;
    }
    if (path === PREFIX || path.startsWith(`${PREFIX}/`)) return endpoint(req, res, target);
    return upstream(req, res, target);
  }

  // ─── WebSockets ────────────────────────────────────────────────────────────────────────────

  const tunnels = createTunnels(labgate);

  function refuse(socket: Duplex, status: number, reason: string): void {
    done(status === 401 ? 'unauthenticated' : status === 403 ? 'denied' : 'invalid');
    socket.end(`HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
  }

  async function upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const target = normaliseTarget(req.url ?? '');
    if (target === null) return refuse(socket, 400, 'Bad Request');
    // Never an upgrade on the gateway's own endpoints (docs/security.md, GATEWAY-11).
    if (
      target.path === PREFIX ||
      target.path.startsWith(`${PREFIX}/`) ||
      target.path === '/ping' ||
      target.path === '/ready'
    )
      return refuse(socket, 400, 'Bad Request');
    if ((header(req, 'upgrade') ?? '').toLowerCase() !== 'websocket')
      return refuse(socket, 400, 'Bad Request');
    const requestOrigin = header(req, 'origin');
    if (requestOrigin === null || !config.websocketOrigins.includes(requestOrigin))
      return refuse(socket, 403, 'Forbidden');
    const skipped = rules.skips('GET', target.path);
    let session: Session | null = null;
    if (!skipped) {
      session = await sessionOf(req);
      if (!session) return refuse(socket, 401, 'Unauthorized');
      if (!(await allowed(session, target.path))) {
        metrics.denied();
        return refuse(socket, 403, 'Forbidden');
      }
    }
    const headers = await headersFor(req, session, true);
    if (isHeaderRefusal(headers)) return refuse(socket, 400, 'Bad Request');
    const tunnel = await proxy.upgrade(req, socket, head, {
      path: `${target.forward}${target.search}`,
      headers,
      ownCookie,
    });
    done(tunnel ? (skipped ? 'skipped' : 'proxied') : 'upstream_error');
    if (tunnel && session) tunnels.add(session, req.headers.cookie, tunnel, socket);
  }

  return {
    request(req, res) {
      route(req, res).catch((error: unknown) => {
        if (res.headersSent) res.destroy();
        else failed(res, error);
      });
    },
    upgrade(req, socket, head) {
      socket.on('error', () => {});
      upgrade(req, socket, head).catch((error: unknown) => {
        const code = (error as { code?: unknown } | null)?.code;
        refuse(
          socket,
          code === 'store_unavailable' ? 503 : 500,
          code === 'store_unavailable' ? 'Service Unavailable' : 'Internal Server Error',
        );
      });
    },
    closeTunnels: tunnels.closeAll,
  };
}

/** Groups joined oauth2-proxy's way (`,`, no space), cut on a whole entry to stay under 8 KiB. */
function joinGroups(groups: readonly string[]): string {
  let out = '';
  for (const group of groups) {
    const next = out ? `${out},${group}` : group;
    if (next.length > 8192) break;
    out = next;
  }
  return out;
}
