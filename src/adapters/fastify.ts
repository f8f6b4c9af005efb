/**
 * labgate for Fastify 5: a plugin that answers labgate's routes and puts the signed-in user on
 * `request.labgate`, and the guards `requireUser()`, `requireRole()` and `requireAccess()` for the
 * routes that need one (as `preHandler`s or `onRequest` hooks, alone or inside `@fastify/auth`).
 *
 * @example
 * ```ts
 * import Fastify from 'fastify';
 * import { createLabgate } from 'labgate';
 * import { labgate, requireUser } from 'labgate/fastify';
 *
 * const auth = createLabgate({ clientId, clientSecret, url: 'http://localhost:3000', secret });
 * const app = Fastify();
 * await app.register(labgate, { labgate: auth });
 * app.get('/me', { preHandler: requireUser() }, (request) => request.labgate!.user);
 * ```
 * @packageDocumentation
 */
import type { FastifyPluginCallback, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { type LabgateContext, RequestContext } from '../core/context.js';
import { hostGuard, type RequireUserOptions } from '../core/guards.js';
import {
  type Guard,
  type GuardRule,
  isLabgateError,
  type Labgate,
  LabgateError,
  type Policy,
  routeOf,
} from '../core/index.js';
import { toWebRequest } from './node.js';

export type { LabgateContext } from '../core/context.js';

declare module 'fastify' {
  interface FastifyRequest {
    /**
     * Set by labgate's `onRequest` hook on every request but labgate's own routes; null before it
     * (a hook registered ahead of the plugin) and on those routes.
     */
    labgate: LabgateContext | null;
  }
}

/** Options of the {@link labgate} plugin. */
export interface FastifyLabgateOptions {
  /** The instance (`createLabgate(…)`). */
  labgate: Labgate;
  /** Trust `X-Forwarded-*` from a proxy in front of the app (only for labgate's own routes' client address). Default false. */
  trustProxy?: boolean;
}

/**
 * A guard's refusal, in the shape Fastify's error handling and `@fastify/auth` expect of a failed
 * check: an `Error` with a `statusCode` and a `code`. The client gets labgate's own answer, `response`
 * (a redirect to sign in, 401 JSON or a 403 page), whatever the app's error handler renders; the
 * error handler and `onError` hooks still see the refusal, to log or count it.
 */
export class GuardRefusal extends Error {
  override name = 'GuardRefusal';
  /** 401 (also for a redirect to sign in: Fastify's error handling takes only error statuses) or 403. */
  readonly statusCode: number;
  /** `session_required` or `access_forbidden`. */
  readonly code: string;
  /** What labgate answers. */
  readonly response: Response;

  constructor(response: Response) {
    const forbidden = response.status === 403;
    super(forbidden ? 'Access forbidden' : 'Sign-in required');
    this.statusCode = forbidden ? 403 : 401;
    this.code = forbidden ? 'access_forbidden' : 'session_required';
    this.response = response;
  }
}

/** The errors labgate answers itself when they reach Fastify's error handling, per reply. */
const answered = new WeakMap<FastifyReply, GuardRefusal | LabgateError>();

function isLabgate(value: unknown): value is Labgate {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as Labgate).handle === 'function' &&
    typeof (value as Labgate).sessionOf === 'function'
  );
}

/** What an error page needs of a request (its path and what the client accepts), as a Web `Request`. */
function standIn(auth: Labgate, request: FastifyRequest): Request {
  const headers = { accept: request.headers.accept ?? '' };
  try {
    return new Request(`${auth.options.origin}${request.url.startsWith('/') ? '' : '/'}${request.url}`, {
      headers,
    });
  } catch {
    return new Request(`${auth.options.origin}${auth.options.prefix}`, { headers });
  }
}

/**
 * labgate's answer, to send as Fastify sends a `Response`. A `Set-Cookie` set on the raw response
 * before (by a Node middleware) moves to the reply: Fastify writes its own `Set-Cookie` with
 * `writeHead`, which would replace it (fastify/fastify#6979), and every cookie is its own header.
 */
function withRawCookies(reply: FastifyReply, response: Response): Response {
  const early = reply.raw.getHeader('set-cookie');
  if (early !== undefined && response.headers.has('set-cookie')) {
    reply.raw.removeHeader('set-cookie');
    reply.header('set-cookie', Array.isArray(early) ? early : [String(early)]);
  }
  return response;
}

const plugin: FastifyPluginCallback<FastifyLabgateOptions> = (fastify, options, done) => {
  const auth = options.labgate;
  if (!isLabgate(auth)) {
    done(new TypeError('labgate/fastify: register the plugin with { labgate: createLabgate(…) }'));
    return;
  }
  const prefix = auth.options.prefix;
  const trustProxy = options.trustProxy ?? false;

  /** Answers one of labgate's routes, from the raw request: labgate's capped reader reads the body. */
  const answer = (request: FastifyRequest, reply: FastifyReply): void => {
    let webRequest: Request;
    try {
      webRequest = toWebRequest(request.raw, {
        origin: auth.options.origin,
        trustProxy,
        response: reply.raw,
      });
    } catch (error) {
      // A method Fetch refuses (TRACE): labgate's 405 with the route's Allow, as every host answers it.
      const method = request.method.toUpperCase();
      const failure =
        method === 'TRACE' || method === 'TRACK' || method === 'CONNECT'
          ? new LabgateError('method_not_allowed')
          : new LabgateError('request_invalid', 'the request cannot be read', { cause: error });
      reply.send(auth.errorResponse(failure, standIn(auth, request)));
      return;
    }
    auth.handle(webRequest).then(
      (response) => (response ? reply.send(withRawCookies(reply, response)) : reply.callNotFound()),
      (error: unknown) => reply.send(error),
    );
  };

  fastify.decorateRequest('labgate', null);

  fastify.addHook('onRequest', (request, reply, next) => {
    // labgate answers its requests here, before Fastify reads a body and before the app's own
    // preHandlers (a guard added app-wide would otherwise stand in front of sign-in), and for every
    // target routeOf names, also those Fastify's router reads otherwise (`/x/../auth/login`):
    // docs/security.md, HTTP-4.
    if (routeOf(request.url, prefix) !== null) {
      answer(request, reply);
      return;
    }
    const found = auth.sessionOf(request.headers.cookie);
    if (!(found instanceof Promise)) {
      request.labgate = new RequestContext(auth, found);
      next();
      return;
    }
    found.then((session) => {
      request.labgate = new RequestContext(auth, session);
      next();
    }, next);
  });

  // labgate's errors (a store outage, a guard's refusal, a LabgateError from the app's handler) take
  // Fastify's error path, so the app's error handler and onError hooks see them; the client gets
  // labgate's answer, which the core decides (docs/errors.md).
  fastify.addHook('onError', (_request, reply, error, next) => {
    if (error instanceof GuardRefusal || isLabgateError(error)) answered.set(reply, error);
    next();
  });
  fastify.addHook('onSend', (request, reply, payload, next) => {
    const error = answered.get(reply);
    if (error === undefined) {
      next(null, payload);
      return;
    }
    answered.delete(reply);
    // The error handler's body goes, and its framing with it.
    reply.removeHeader('content-type');
    reply.removeHeader('content-length');
    const response =
      error instanceof GuardRefusal ? error.response : auth.errorResponse(error, standIn(auth, request));
    next(null, withRawCookies(reply, response));
  });

  // Fastify's router knows labgate's routes (they are listed, and no not-found handler runs for
  // them). The onRequest hook answers every target routeOf names before these handlers would; one
  // that only a differently configured router takes for them (`caseSensitive: false`: `/AUTH/login`)
  // is not labgate's, and the core returns null for it: not found.
  fastify.all(prefix, answer);
  fastify.all(`${prefix}/*`, answer);
  done();
};

/**
 * The plugin: answers `/auth/*` (or your prefix) for every method, and for every other request finds
 * the session from the cookie in an `onRequest` hook (at once when the cookie alone tells, the common
 * request) and sets `request.labgate`. Works with or without `@fastify/cookie`. When the session store
 * is down, the request gets labgate's 503 page through Fastify's error handling.
 * @example
 * ```ts
 * await app.register(labgate, { labgate: auth });
 * app.get('/', (request) => `hello ${request.labgate?.user?.name ?? 'stranger'}`);
 * ```
 */
export const labgate = fp(plugin, { name: 'labgate', fastify: '5.x' });
export default labgate;

export type { RequireUserOptions } from '../core/guards.js';

/**
 * A guard as Fastify and `@fastify/auth` call it: passes with `done()`, refuses with
 * `done(new GuardRefusal(…))`.
 */
export type LabgateGuard = (
  request: FastifyRequest,
  reply: FastifyReply,
  done: (error?: Error) => void,
) => void;

/** A Fastify hook around a core guard (the rules are the core's: `Labgate.guard`), compiled once per instance. */
function guarded(rule: GuardRule, options: RequireUserOptions = {}): LabgateGuard {
  const { guardOf } = hostGuard<Labgate>(rule, options);
  return function labgateGuard(request, _reply, done) {
    const context = request.labgate;
    if (!context) {
      done(
        new TypeError(
          'labgate: a guard needs the plugin registered before the route: app.register(labgate, { labgate: auth })',
        ),
      );
      return;
    }
    let guard: Guard;
    try {
      guard = guardOf(context.labgate);
    } catch (error) {
      done(error as Error);
      return;
    }
    const outcome = guard.check({
      method: request.method,
      target: request.url,
      accept: request.headers.accept,
      secFetchMode: request.headers['sec-fetch-mode'] as string | undefined,
      session: context.session,
    });
    if (outcome === null) done();
    else if (outcome instanceof Response) done(new GuardRefusal(outcome));
    else outcome.then((answer) => done(answer ? new GuardRefusal(answer) : undefined), done);
  };
}

/**
 * Lets signed-in users through. Browsers are sent to sign in (and back here afterwards); API calls get
 * 401 `{"error":"session_required"}`. A `preHandler` (or an `onRequest` hook: it needs no body), alone
 * or among `@fastify/auth`'s strategies.
 * @example
 * ```ts
 * app.get('/profile', { preHandler: requireUser() }, (request) => request.labgate!.user);
 * app.get('/api/me', { preHandler: app.auth([verifyApiKey, requireUser({ api: true })]) }, handler);
 * ```
 */
export function requireUser(options?: RequireUserOptions): LabgateGuard {
  return guarded({}, options);
}

/**
 * Lets through signed-in users who hold a role of the access policy's role mapping
 * (`access: { roles: { admin: 'group:acme/platform>=maintainer' } }`); others get 403 with a page that
 * names the missing role, and signed-out users are sent to sign in (or get 401).
 * @example
 * ```ts
 * app.get('/admin', { preHandler: requireRole('admin') }, () => 'admins only');
 * ```
 */
export function requireRole(role: string, options?: RequireUserOptions): LabgateGuard {
  return guarded({ role }, options);
}

/**
 * Lets through signed-in users who satisfy a rule or policy, checked against GitLab (cached per
 * session for the re-check interval). The 403 page says which requirement failed, without listing the
 * user's other groups.
 * @example
 * ```ts
 * app.post('/deploy', { preHandler: requireAccess('project:acme/app>=developer') }, deploy);
 * ```
 */
export function requireAccess(policy: Policy | string, options?: RequireUserOptions): LabgateGuard {
  return guarded({ access: policy }, options);
}
