/**
 * labgate/fastify in its own idiom: a plugin (`fastify-plugin`, `request.labgate` decorated), the
 * session found in an `onRequest` hook, labgate's routes answered before Fastify reads a body, guards
 * that fail the way `@fastify/auth` composes, labgate's errors through Fastify's error handling, several
 * `Set-Cookie` kept apart with or without `@fastify/cookie`, and the reference app of examples/fastify.
 * Most requests go through `app.inject()`; what needs a socket (raw targets, methods Fetch refuses,
 * bodies streamed, HEAD) uses one on 127.0.0.1.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import fastifyCookie from '@fastify/cookie';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createApp } from '../../examples/fastify/app.js';
import { startExampleApp } from '../../examples/fastify/server.js';
import {
  GuardRefusal,
  type LabgateGuard,
  labgate,
  requireAccess,
  requireRole,
  requireUser,
} from '../../src/adapters/fastify.js';
import {
  createLabgate,
  type Labgate,
  LabgateError,
  type LabgateOptions,
  MemoryStore,
} from '../../src/core/index.js';
import { type RunningEmulator, startEmulator } from '../../src/emulator/index.js';
import { Browser, navigationFetch } from '../emulator/browser.js';
import { type Sent, sendBody } from '../support/http.js';

const SECRET = 'test-secret-test-secret-test-secret-test-secret';
const ORIGIN = 'http://127.0.0.1:3000';
const STRANGER = `labgate=${'a'.repeat(22)}.${'b'.repeat(43)}`;

let gitlab: RunningEmulator;
beforeAll(async () => {
  gitlab = await startEmulator();
});
afterAll(() => gitlab.close());
beforeEach(() => gitlab.control.reset());

function auth(options: Partial<LabgateOptions> = {}): Labgate {
  const app = gitlab.applications[0]!;
  return createLabgate({
    gitlabUrl: gitlab.url,
    clientId: app.uid,
    clientSecret: app.secret,
    url: ORIGIN,
    secret: SECRET,
    scopes: 'openid profile email read_user read_api',
    access: { roles: { admin: 'group:acme>=owner' } },
    logger: false,
    ...options,
  });
}

/**
 * A `fetch` that sends requests for the app's origin through `app.inject()` (no socket) and the
 * others (GitLab's) over HTTP, for the scripted browser.
 */
function injecting(app: FastifyInstance): typeof fetch {
  return async (input, init) => {
    const request = new Request(input, init);
    const url = new URL(request.url);
    if (url.origin !== ORIGIN) return navigationFetch(request);
    const headers: Record<string, string> = {};
    for (const [name, value] of request.headers) headers[name] = value;
    const body = request.body ? Buffer.from(await request.arrayBuffer()) : undefined;
    const answer = await app.inject({
      method: request.method as 'GET',
      url: `${url.pathname}${url.search}`,
      headers,
      ...(body ? { payload: body } : {}),
    });
    const out = new Headers();
    for (const [name, value] of Object.entries(answer.headers)) {
      for (const one of Array.isArray(value) ? value : [value])
        if (one !== undefined) out.append(name, String(one));
    }
    const empty = [204, 304].includes(answer.statusCode) || request.method === 'HEAD';
    return new Response(empty ? null : new Uint8Array(answer.rawPayload), {
      status: answer.statusCode,
      headers: out,
    });
  };
}

/** Signs alice (or `user`) in through the app's routes; the browser holds the session afterwards. */
async function signIn(browser: Browser, user = 'alice'): Promise<Headers> {
  const start = await browser.get(`${ORIGIN}/auth/login?returnTo=%2Fpublic`);
  expect(start.status, start.body).toBe(302);
  const location = await browser.approveToClient({
    url: gitlab.url,
    authorizeUrl: start.location!,
    login: user,
    password: `${user}-password`,
  });
  const back = await browser.get(location);
  expect(back.status, back.body).toBe(303);
  return back.headers;
}

/** Names of the cookies an answer sets, one `Set-Cookie` each. */
const cookieNames = (headers: Headers) => headers.getSetCookie().map((c) => c.slice(0, c.indexOf('=')));

/** A Fastify app with labgate registered, `/public` and whatever `routes` adds. */
async function appWith(
  instance: Labgate,
  routes: (app: FastifyInstance) => void = () => {},
): Promise<FastifyInstance> {
  const app = Fastify();
  await app.register(labgate, { labgate: instance });
  app.get('/public', async (request) => ({ user: request.labgate?.user?.username ?? null }));
  routes(app);
  await app.ready();
  return app;
}

describe('labgate/fastify: the plugin', () => {
  let app: FastifyInstance;
  let instance: Labgate;
  /** Whether the hook after labgate's ran before any promise settled (sessionOf answered at once). */
  const atOnce: boolean[] = [];
  /** True from a sessionOf call until the next microtask. */
  let sameTick = false;

  beforeAll(async () => {
    instance = auth();
    const sessionOf = instance.sessionOf.bind(instance);
    instance.sessionOf = (cookie) => {
      sameTick = true;
      queueMicrotask(() => {
        sameTick = false;
      });
      return sessionOf(cookie);
    };
    app = Fastify();
    const before: unknown[] = [];
    app.addHook('onRequest', (request, _reply, done) => {
      before.push(request.labgate);
      done();
    });
    await app.register(labgate, { labgate: instance });
    app.addHook('onRequest', (_request, _reply, done) => {
      atOnce.push(sameTick);
      done();
    });
    app.get('/public', async (request) => ({ user: request.labgate?.user?.username ?? null }));
    app.get('/before', async () => ({ before: before.at(-1) }));
    await app.ready();
  });
  afterAll(() => app.close());

  it('is a plugin named labgate that decorates request.labgate, null before its hook', async () => {
    expect(app.hasPlugin('labgate')).toBe(true);
    expect(app.hasRequestDecorator('labgate')).toBe(true);
    expect((await app.inject('/before')).json()).toEqual({ before: null });
    expect((await app.inject('/public')).json()).toEqual({ user: null });
  });

  it('refuses at start-up to run without a labgate instance', async () => {
    const bare = Fastify();
    bare.register(labgate, {} as never);
    await expect(bare.ready()).rejects.toThrow(/createLabgate/);
  });

  it('finds the session in onRequest, at once when the cookie alone tells', async () => {
    const browser = new Browser({ fetch: injecting(app) });
    await signIn(browser);
    atOnce.length = 0;
    // Signed out, and a session verified moments ago (by the request before): neither waits.
    expect((await app.inject('/public')).json()).toEqual({ user: null });
    expect(JSON.parse((await browser.get(`${ORIGIN}/public`)).body)).toEqual({ user: 'alice' });
    expect(JSON.parse((await browser.get(`${ORIGIN}/public`)).body)).toEqual({ user: 'alice' });
    // A cookie nobody has seen is looked up in the store: the hook waits for it.
    expect((await app.inject({ url: '/public', headers: { cookie: STRANGER } })).json()).toEqual({
      user: null,
    });
    expect([atOnce[0], atOnce[2], atOnce[3]]).toEqual([true, true, false]);
  });

  it("registers labgate's routes for every method Fastify routes", () => {
    for (const method of ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE'] as const) {
      expect(app.hasRoute({ method, url: '/auth' })).toBe(true);
      expect(app.hasRoute({ method, url: '/auth/*' })).toBe(true);
    }
  });
});

describe("labgate/fastify: labgate's routes", () => {
  let app: FastifyInstance;
  let origin: string;
  let server: http.Server;

  beforeAll(async () => {
    server = http.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    app = Fastify({ serverFactory: (handler) => server.on('request', handler) });
    await app.register(labgate, {
      labgate: auth({
        url: origin,
        webhookSecret: 'hook-secret-0123456789',
        webhookMaxBytes: 2 * 1024 * 1024,
      }),
    });
    // A guard app-wide: it must not stand in front of sign-in.
    app.addHook('preHandler', requireUser());
    app.get('/*', async () => 'app');
    app.setNotFoundHandler(async (_request, reply) =>
      reply.code(404).header('x-answered-by', 'app').send('app'),
    );
    await app.ready();
  });
  afterAll(async () => {
    await app.close();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  /** Sends a raw request target (no client normalises it) with a body of `size` bytes. */
  function raw(
    method: string,
    target: string,
    options: { size?: number; headers?: Record<string, string> } = {},
  ): Promise<Sent> {
    const { port } = server.address() as AddressInfo;
    return sendBody(port, {
      method,
      path: target,
      size: options.size ?? 0,
      headers: { accept: 'application/json', ...options.headers },
    });
  }

  it('answers them before the app’s preHandlers: a guard app-wide does not stand in front of sign-in', async () => {
    const login = await navigationFetch(`${origin}/auth/login`, { headers: { accept: 'text/html' } });
    expect(login.status).toBe(302);
    expect(login.headers.get('location')).toMatch(new RegExp(`^${gitlab.url}/oauth/authorize\\?`));
    const page = await navigationFetch(`${origin}/anything`, { headers: { accept: 'text/html' } });
    expect(page.status).toBe(302);
    expect(page.headers.get('location')).toBe('/auth/login?returnTo=%2Fanything');
  });

  it('leaves their bodies to labgate’s capped reader: Fastify parses none (docs/security.md, HTTP-1)', async () => {
    const form = { 'content-type': 'application/x-www-form-urlencoded', origin };
    // Fastify has no form parser: it would answer 415 before labgate saw the sign-out.
    const small = await raw('POST', '/auth/logout', { size: 1024, headers: form });
    expect(small.status).toBe(303);
    const over = await raw('POST', '/auth/logout', { size: 8 * 1024 + 1, headers: form });
    expect(over.status).toBe(413);
    expect(JSON.parse(over.body)).toMatchObject({ error: 'payload_too_large' });
    const huge = await raw('POST', '/auth/logout', { size: 64 * 1024 * 1024, headers: form });
    expect(huge.status).toBe(413);
    expect(huge.written).toBeLessThan(64 * 1024 * 1024);
    // Above Fastify's bodyLimit (1 MiB) and not JSON: labgate reads it (its cap is 2 MiB here) and says 400.
    const hook = { 'x-gitlab-token': 'hook-secret-0123456789', 'content-type': 'application/json' };
    const read = await raw('POST', '/auth/webhooks/gitlab', { size: 1024 * 1024 + 1, headers: hook });
    expect(read.status).toBe(400);
    expect(read.body).not.toContain('FST_');
  });

  it('answers 405 with Allow to TRACE and to methods Fastify does not route, never a stack trace', async () => {
    for (const [method, target, allow] of [
      ['TRACE', '/auth/login', 'GET, HEAD'],
      ['TRACE', '/auth/callback', 'GET'],
      ['TRACE', '/x/../auth/session', 'GET, HEAD'],
      ['PROPFIND', '/auth/callback', 'GET'],
      ['PUT', '/auth/logout', 'GET, HEAD, POST'],
    ] as const) {
      const answer = await raw(method, target);
      expect([method, target, answer.status, answer.headers['allow']]).toEqual([method, target, 405, allow]);
      expect(JSON.parse(answer.body)).toMatchObject({ error: 'method_not_allowed' });
      expect(answer.body).not.toMatch(/ at |node_modules|\.ts:/);
    }
  });

  it('answers HEAD with the headers only', async () => {
    const login = await raw('HEAD', '/auth/login');
    expect(login.status).toBe(302);
    expect(login.headers['location']).toMatch(/\/oauth\/authorize\?/);
    const session = await raw('HEAD', '/auth/session');
    expect(session.status).toBe(401);
    expect(session.body).toBe('');
  });

  it('takes the targets the core takes for its routes, whatever Fastify’s router reads (docs/security.md, HTTP-4)', async () => {
    for (const [target, whose] of [
      ['/auth/session', 'labgate'],
      ['/auth/session/', 'labgate'],
      ['/x/../auth/session', 'labgate'],
      ['/x/%2e%2e/auth/session', 'labgate'],
      ['/auth\\session', 'labgate'],
      ['/auth/nothing', 'labgate'],
      ['/auth%2Fsession', 'app'],
      ['//auth/session', 'app'],
      ['/Auth/session', 'app'],
      ['/authx', 'app'],
    ] as const) {
      const headers = { accept: 'text/html', 'sec-fetch-mode': 'navigate' };
      const core = await auth({ url: origin }).handle(new Request(`${origin}${target}`, { headers }));
      expect(core === null ? 'app' : 'labgate').toBe(whose);
      const answer = await raw('GET', target, { headers });
      if (whose === 'labgate') {
        expect([target, answer.status]).toEqual([target, core!.status]);
        expect(answer.headers['location'] ?? null).toBe(core!.headers.get('location'));
      } else {
        // The app's: its guard (app-wide) sends the signed-out browser to sign in (without a returnTo
        // that looks like labgate's), or its 404.
        const guarded = answer.status === 302 && answer.headers['location']!.startsWith('/auth/login');
        expect([target, guarded || answer.headers['x-answered-by'] === 'app']).toEqual([target, true]);
      }
    }
  });
});

describe('labgate/fastify: Set-Cookie', () => {
  it.each([
    ['without @fastify/cookie', false],
    ['with @fastify/cookie', true],
  ])('keeps every Set-Cookie its own header %s', async (_name, withCookiePlugin) => {
    const app = Fastify();
    if (withCookiePlugin) await app.register(fastifyCookie);
    // The app's own cookies, set before labgate answers: they stay, beside labgate's.
    app.addHook('onRequest', (_request, reply, done) => {
      reply.header('set-cookie', ['a=1; Path=/', 'b=2; Path=/']);
      // As a Node middleware does it (Fastify alone would let its own Set-Cookie replace this one).
      reply.raw.setHeader('set-cookie', 'raw=1; Path=/');
      if (withCookiePlugin) reply.setCookie('theme', 'dark', { path: '/' });
      done();
    });
    await app.register(labgate, { labgate: auth() });
    app.get('/public', async (request) => ({
      user: request.labgate?.user?.username ?? null,
      parsed: withCookiePlugin ? Object.keys(request.cookies).sort() : null,
    }));
    await app.ready();
    try {
      const browser = new Browser({ fetch: injecting(app) });
      const names = cookieNames(await signIn(browser));
      expect(names).toEqual(expect.arrayContaining(['a', 'b', 'raw', 'labgate']));
      expect(names.filter((n) => n.startsWith('labgate-tx-'))).toHaveLength(1);
      if (withCookiePlugin) expect(names).toContain('theme');
      const page = JSON.parse((await browser.get(`${ORIGIN}/public`)).body);
      expect(page.user).toBe('alice');
      if (withCookiePlugin) expect(page.parsed).toEqual(expect.arrayContaining(['labgate', 'theme']));
    } finally {
      await app.close();
    }
  });
});

describe('labgate/fastify: guards and errors', () => {
  let app: FastifyInstance;
  const seen: { status: number; code: string | undefined; name: string }[] = [];
  const hooked: string[] = [];

  /** How `@fastify/auth` runs strategies with relation `or` (its documented contract): the first to pass wins. */
  function anyOf(strategies: LabgateGuard[]): LabgateGuard {
    return (request, reply, done) => {
      let last: Error | undefined;
      const next = (i: number): void => {
        const strategy = strategies[i];
        if (!strategy) {
          if (reply.statusCode < 400) reply.code(401);
          done(last);
          return;
        }
        strategy(request, reply, (error) => {
          if (!error) done();
          else {
            last = error;
            next(i + 1);
          }
        });
      };
      next(0);
    };
  }

  const apiKey: LabgateGuard = (request, _reply, done) =>
    done(
      request.headers['x-api-key'] === 'k'
        ? undefined
        : Object.assign(new Error('bad key'), { statusCode: 401 }),
    );

  beforeAll(async () => {
    const store = new MemoryStore();
    app = await appWith(
      auth({
        store: new Proxy(store, {
          get(target, name, receiver) {
            if (name === 'getSession')
              return () => Promise.reject(new Error('connect ECONNREFUSED 127.0.0.1:6379'));
            const value = Reflect.get(target, name, receiver);
            return typeof value === 'function' ? value.bind(target) : value;
          },
        }),
      }),
      (app) => {
        app.setErrorHandler(
          (error: Error & { statusCode?: number; status?: number; code?: string }, _request, reply) => {
            const status = error.statusCode ?? error.status ?? 500;
            seen.push({ status, code: error.code, name: error.name });
            reply.code(status).send({ handledBy: 'app', message: error.message });
          },
        );
        app.addHook('onError', (_request, _reply, error, done) => {
          hooked.push(error.name);
          done();
        });
        app.get('/me', { preHandler: requireUser() }, async () => 'me');
        app.get('/api', { onRequest: requireUser({ api: true }) }, async () => 'api');
        app.get('/admin', { preHandler: requireRole('admin') }, async () => 'admin');
        app.get('/either', { preHandler: anyOf([apiKey, requireUser()]) }, async () => 'either');
        app.get('/key-last', { preHandler: anyOf([requireUser(), apiKey]) }, async () => 'key-last');
        app.get('/throws', async () => {
          throw new LabgateError('session_required');
        });
        app.get('/bug', async () => {
          throw new Error('a bug of the app');
        });
      },
    );
  });
  afterAll(() => app.close());
  beforeEach(() => {
    seen.length = 0;
    hooked.length = 0;
  });

  const navigate = { accept: 'text/html', 'sec-fetch-mode': 'navigate' };

  it('refuses through Fastify’s error handling; the client gets labgate’s answer', async () => {
    const page = await app.inject({ url: '/me?tab=1', headers: navigate });
    expect(page.statusCode).toBe(302);
    expect(page.headers['location']).toBe('/auth/login?returnTo=%2Fme%3Ftab%3D1');
    expect(page.body).toBe('');
    const script = await app.inject({ url: '/me', headers: { accept: 'application/json' } });
    expect(script.statusCode).toBe(401);
    expect(script.headers['www-authenticate']).toBe('Cookie realm="labgate"');
    expect(script.json()).toMatchObject({ error: 'session_required' });
    expect(script.json()).not.toHaveProperty('handledBy');
    // The app's error handler and onError hooks saw both refusals, as errors with a status and a code.
    expect(seen).toEqual([
      { status: 401, code: 'session_required', name: 'GuardRefusal' },
      { status: 401, code: 'session_required', name: 'GuardRefusal' },
    ]);
    expect(hooked).toEqual(['GuardRefusal', 'GuardRefusal']);
  });

  it('works as an onRequest hook too', async () => {
    const api = await app.inject({ url: '/api', headers: navigate });
    expect(api.statusCode).toBe(401);
    expect(api.json()).toMatchObject({ error: 'session_required' });
  });

  it('composes as @fastify/auth composes: another strategy may pass, and the last refusal answers', async () => {
    expect((await app.inject({ url: '/either', headers: { 'x-api-key': 'k' } })).body).toBe('either');
    const neither = await app.inject({ url: '/either', headers: navigate });
    expect(neither.statusCode).toBe(302);
    expect(neither.headers['location']).toBe('/auth/login?returnTo=%2Feither');
    // The other strategy refused last: its error, as the app's error handler renders it.
    const keyLast = await app.inject({ url: '/key-last', headers: navigate });
    expect(keyLast.statusCode).toBe(401);
    expect(keyLast.json()).toEqual({ handledBy: 'app', message: 'bad key' });
    expect((await app.inject({ url: '/key-last', headers: { 'x-api-key': 'k' } })).body).toBe('key-last');
  });

  it('passes a signed-in user, and gives a signed-in user without the role labgate’s 403 page', async () => {
    const store = new MemoryStore();
    const signedIn = await appWith(auth({ store }), (app) => {
      app.get('/either', { preHandler: anyOf([apiKey, requireUser()]) }, async () => 'either');
      app.get('/admin', { preHandler: requireRole('admin') }, async () => 'admin');
      app.get(
        '/maintain',
        { preHandler: requireAccess('project:acme/app>=maintainer') },
        async () => 'maintain',
      );
    });
    try {
      const alice = new Browser({ fetch: injecting(signedIn) });
      await signIn(alice);
      expect((await alice.get(`${ORIGIN}/either`)).body).toBe('either');
      expect((await alice.get(`${ORIGIN}/admin`)).body).toBe('admin');
      const bob = new Browser({ fetch: injecting(signedIn) });
      await signIn(bob, 'bob');
      for (const path of ['/admin', '/maintain']) {
        const page = await bob.get(`${ORIGIN}${path}`);
        expect(page.status).toBe(403);
        expect(page.headers.get('content-type')).toMatch(/^text\/html/);
        expect(page.body).toContain('access_forbidden');
      }
    } finally {
      await signedIn.close();
    }
  });

  it('answers a store outage with labgate’s 503 page through Fastify’s error handling, never a stack trace', async () => {
    for (const path of ['/public', '/me']) {
      const page = await app.inject({ url: path, headers: { ...navigate, cookie: STRANGER } });
      expect(page.statusCode).toBe(503);
      expect(page.headers['content-type']).toMatch(/^text\/html/);
      expect(page.body).toContain('Sign-in is temporarily unavailable');
      expect(page.body).not.toMatch(/ECONNREFUSED| at |node_modules/);
    }
    const json = await app.inject({
      url: '/public',
      headers: { accept: 'application/json', cookie: STRANGER },
    });
    expect(json.statusCode).toBe(503);
    expect(json.json()).toMatchObject({ error: 'store_unavailable' });
    expect(seen.map((s) => [s.status, s.code])).toEqual([
      [503, 'store_unavailable'],
      [503, 'store_unavailable'],
      [503, 'store_unavailable'],
    ]);
  });

  it('answers a LabgateError from a route as labgate does, and leaves other errors to the app', async () => {
    const thrown = await app.inject({ url: '/throws', headers: { accept: 'application/json' } });
    expect(thrown.statusCode).toBe(401);
    expect(thrown.json()).toMatchObject({ error: 'session_required' });
    const bug = await app.inject('/bug');
    expect(bug.statusCode).toBe(500);
    expect(bug.json()).toEqual({ handledBy: 'app', message: 'a bug of the app' });
  });

  it('a guard on an app without the plugin is an error of the app, said plainly', async () => {
    const bare = Fastify();
    bare.get('/me', { preHandler: requireUser() }, async () => 'never');
    try {
      const answer = await bare.inject('/me');
      expect(answer.statusCode).toBe(500);
      expect(answer.json().message).toContain('app.register(labgate');
    } finally {
      await bare.close();
    }
  });

  it('a bad policy is refused when the route is declared', () => {
    expect(() => requireAccess('project:')).toThrow(TypeError);
  });

  it('GuardRefusal carries labgate’s answer', () => {
    const refusal = new GuardRefusal(
      new Response(null, { status: 302, headers: { location: '/auth/login' } }),
    );
    expect([refusal.statusCode, refusal.code, refusal.response.status]).toEqual([
      401,
      'session_required',
      302,
    ]);
    const forbidden = new GuardRefusal(new Response('no', { status: 403 }));
    expect([forbidden.statusCode, forbidden.code]).toEqual([403, 'access_forbidden']);
  });
});

describe('the reference app (examples/fastify)', () => {
  let app: FastifyInstance;
  let browser: () => Browser;

  beforeAll(async () => {
    app = await createApp(auth());
    await app.ready();
    browser = () => new Browser({ fetch: injecting(app) });
  });
  afterAll(() => app.close());

  /** Signs in through the home page's link, as a user clicks it. */
  async function signInFromHome(user = 'alice'): Promise<{ client: Browser; profile: string }> {
    const client = browser();
    const home = await client.get(`${ORIGIN}/`);
    const link = home.body.match(/data-testid="sign-in" href="([^"]+)"/)![1]!.replaceAll('&amp;', '&');
    const start = await client.get(`${ORIGIN}${link}`);
    const location = await client.approveToClient({
      url: gitlab.url,
      authorizeUrl: start.location!,
      login: user,
      password: `${user}-password`,
    });
    const back = await client.get(location);
    expect(back.location).toBe(`${ORIGIN}/profile`);
    return { client, profile: (await client.get(back.location!)).body };
  }

  it('shows "Sign in with GitLab" on the home page', async () => {
    const home = await app.inject('/');
    expect(home.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(home.body).toContain('Sign in with GitLab');
    expect(home.body).toContain('href="/auth/login?returnTo=%2Fprofile"');
  });

  it('shows the profile with GitLab data and the projects read with the user’s token, and signs out', async () => {
    const { client, profile } = await signInFromHome();
    expect(profile).toContain('data-testid="name">Alice Liddell<');
    expect(profile).toContain('@alice');
    expect(profile).toContain('alice@acme.test');
    expect(profile).toContain(`${gitlab.url}/alice`);
    expect(profile).toContain('Acme / App');
    expect(profile).toContain('action="/auth/logout"');
    const out = await client.request(`${ORIGIN}/auth/logout`, {
      method: 'POST',
      body: new URLSearchParams(),
      headers: { origin: ORIGIN },
    });
    expect(out.status).toBe(303);
    expect(gitlab.control.requests({ path: '/oauth/revoke' })).toHaveLength(1);
    expect((await client.get(`${ORIGIN}/profile`)).status).toBe(302);
  });

  it('serves /me as JSON for a signed-in user, and sends a signed-out browser to sign in', async () => {
    const { client } = await signInFromHome('bob');
    const me = await client.request(`${ORIGIN}/me`, { headers: { accept: 'application/json' } });
    expect(JSON.parse(me.body)).toMatchObject({ username: 'bob', name: 'Bob Builder' });
    const signedOut = await app.inject({ url: '/profile', headers: { accept: 'text/html' } });
    expect(signedOut.statusCode).toBe(302);
    expect(signedOut.headers['location']).toBe('/auth/login?returnTo=%2Fprofile');
  });

  it('startExampleApp serves it from the environment, on a server that bounds slow clients', async () => {
    const registered = gitlab.applications[0]!;
    const { server, url } = await startExampleApp(
      {
        GITLAB_URL: gitlab.url,
        GITLAB_CLIENT_ID: registered.uid,
        GITLAB_CLIENT_SECRET: registered.secret,
        LABGATE_URL: ORIGIN,
        LABGATE_SECRET: SECRET,
        PORT: '0',
      },
      { store: new MemoryStore(), logger: false },
      { requestTimeout: 20_000 },
    );
    try {
      expect(url).toBe(ORIGIN);
      expect([server.headersTimeout, server.requestTimeout, server.keepAliveTimeout]).toEqual([
        10_000, 20_000, 5_000,
      ]);
      const { port } = server.address() as AddressInfo;
      const home = await fetch(`http://127.0.0.1:${port}/`);
      expect(await home.text()).toContain('Sign in with GitLab');
      const session = await fetch(`http://127.0.0.1:${port}/auth/session`);
      expect(session.status).toBe(401);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
