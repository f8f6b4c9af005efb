/**
 * labgate/hono in Hono's idiom: signed in through the emulator with `app.request()` (no socket for the
 * app), refusals as `HTTPException`s that `app.onError` sees and Hono's default handler answers right,
 * typed context variables, and on @hono/node-server: the methods Fetch refuses, and the reference app of
 * examples/hono.
 */
import { request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createAdaptorServer } from '@hono/node-server';
import { type Context, Hono } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createApp } from '../../examples/hono/app.js';
import { startExampleApp } from '../../examples/hono/server.js';
import {
  type LabgateEnv,
  type LabgateVariables,
  labgate,
  requireAccess,
  requireRole,
  requireUser,
} from '../../src/adapters/hono.js';
import {
  createLabgate,
  isLabgateError,
  type Labgate,
  type LabgateOptions,
  MemoryStore,
  type Store,
} from '../../src/core/index.js';
import { type RunningEmulator, startEmulator } from '../../src/emulator/index.js';
import { Browser, navigationFetch } from '../emulator/browser.js';

const SECRET = 'test-secret-test-secret-test-secret-test-secret';
/** The origin of the apps served through `app.request()`: nothing listens there. */
const ORIGIN = 'http://127.0.0.1:4999';

let gitlab: RunningEmulator;
beforeAll(async () => {
  gitlab = await startEmulator();
});
afterAll(() => gitlab.close());
beforeEach(() => gitlab.control.reset());

function createAuth(origin: string, extra: Partial<LabgateOptions> = {}): Labgate {
  const registered = gitlab.applications[0]!;
  return createLabgate({
    gitlabUrl: gitlab.url,
    clientId: registered.uid,
    clientSecret: registered.secret,
    url: origin,
    secret: SECRET,
    scopes: 'openid profile email read_user read_api',
    access: { roles: { admin: 'group:acme>=owner' } },
    logger: false,
    ...extra,
  });
}

/** The store with its `getSession` replaced (every other method as it is). */
function withGetSession(store: MemoryStore, getSession: MemoryStore['getSession']): Store {
  return new Proxy(store, {
    get(target, name, receiver) {
      if (name === 'getSession') return getSession;
      const value = Reflect.get(target, name, receiver);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

/** A browser whose requests to {@link ORIGIN} go to `app.request()`, and to GitLab over the socket. */
function browserFor(app: { request: Hono['request'] }): Browser {
  return new Browser({
    fetch: (input, init) => {
      const url = input instanceof Request ? input.url : String(input);
      return url.startsWith(`${ORIGIN}/`)
        ? Promise.resolve(app.request(url, init))
        : navigationFetch(input, init);
    },
  });
}

/** Signs `user` in through the app's own redirect from `path`; returns the browser on the page. */
async function signIn(browser: Browser, origin: string, path: string, user = 'alice') {
  const start = await browser.get(`${origin}${path}`);
  expect(start.status, start.body).toBe(302);
  const login = await browser.get(start.location!);
  const location = await browser.approveToClient({
    url: gitlab.url,
    authorizeUrl: login.location!,
    login: user,
    password: `${user}-password`,
  });
  const callback = await browser.get(location);
  expect(callback.status, callback.body).toBe(303);
  // The transaction cleared and the session set: two Set-Cookie, each kept whole.
  const names = callback.headers.getSetCookie().map((c) => c.slice(0, c.indexOf('=')));
  expect(names).toContain('labgate');
  expect(names.some((n) => n.startsWith('labgate-tx-'))).toBe(true);
  return { browser, page: await browser.get(callback.location!) };
}

/** An app with labgate for every request, the guards after it, and an `onError` that records errors. */
function guardedApp(auth: Labgate, onError: 'default' | 'styled') {
  const errors: Error[] = [];
  const app = new Hono<LabgateEnv>();
  app.use(labgate(auth));
  app.get('/public', (c) => c.json({ user: c.var.labgate.user?.username ?? null }));
  // Behind a guard the user is typed non-null: no `!` here.
  app.get('/profile', requireUser(), (c) => c.text(`hello ${c.var.labgate.user.username}`));
  app.get('/api/me', requireUser({ api: true }), (c) => c.json(c.var.labgate.user));
  app.get('/admin', requireRole('admin'), (c) => c.text(`admin ${c.var.labgate.session.user.username}`));
  app.get('/maintain', requireAccess('project:acme/app>=maintainer'), (c) => c.text('maintain'));
  app.get('/token', requireUser(), async (c) =>
    c.json({ length: (await c.var.labgate.accessToken()).length }),
  );
  const sub = new Hono<LabgateEnv>();
  sub.get('/page', requireUser(), (c) => c.text('sub page'));
  app.route('/sub', sub);
  if (onError === 'styled') {
    app.onError((error, c) => {
      errors.push(error);
      if (error instanceof HTTPException) return c.json({ styled: error.status }, error.status);
      return c.json({ styled: 500, message: error.message }, 500);
    });
  }
  return { app, errors };
}

describe('labgate/hono through app.request()', () => {
  let auth: Labgate;
  let plain: ReturnType<typeof guardedApp>;
  let styled: ReturnType<typeof guardedApp>;

  beforeAll(() => {
    auth = createAuth(ORIGIN);
    plain = guardedApp(auth, 'default');
    styled = guardedApp(auth, 'styled');
  });
  beforeEach(() => {
    styled.errors.length = 0;
  });

  it('signs in and returns to the page that asked for it', async () => {
    const { browser, page } = await signIn(browserFor(plain.app), ORIGIN, '/profile?tab=1');
    expect(page.url).toBe(`${ORIGIN}/profile?tab=1`);
    expect([page.status, page.body]).toEqual([200, 'hello alice']);
    expect(JSON.parse((await browser.get(`${ORIGIN}/token`)).body)).toEqual({ length: 64 });
  });

  it('sets c.var.labgate on every request: the user, or null when signed out', async () => {
    const { browser } = await signIn(browserFor(plain.app), ORIGIN, '/profile');
    expect(JSON.parse((await browser.get(`${ORIGIN}/public`)).body)).toEqual({ user: 'alice' });
    expect(await (await plain.app.request('/public')).json()).toEqual({ user: null });
  });

  it('returns the sign-in redirect (not thrown: onError never sees it), with the full path of a sub-app', async () => {
    for (const path of ['/profile?tab=1', '/sub/page?x=1']) {
      const res = await styled.app.request(path, {
        headers: { accept: 'text/html', 'sec-fetch-mode': 'navigate' },
      });
      expect(res.status).toBe(302);
      expect(res.headers.get('location')).toBe(`/auth/login?returnTo=${encodeURIComponent(path)}`);
    }
    expect(styled.errors).toEqual([]);
  });

  it("throws the 401 as an HTTPException whose res is labgate's answer, which Hono's default handler sends", async () => {
    for (const [path, headers] of [
      ['/profile', { accept: 'application/json' }],
      ['/profile', { accept: 'text/html', 'sec-fetch-mode': 'cors' }],
      ['/api/me', { accept: 'text/html', 'sec-fetch-mode': 'navigate' }],
    ] as const) {
      const res = await plain.app.request(path, { headers });
      expect([path, res.status]).toEqual([path, 401]);
      expect(res.headers.get('www-authenticate')).toBe('Cookie realm="labgate"');
      expect(res.headers.get('cache-control')).toBe('no-store');
      expect(await res.json()).toMatchObject({ error: 'session_required' });
    }
    const seen = await styled.app.request('/api/me');
    expect(await seen.json()).toEqual({ styled: 401 });
    const [error] = styled.errors;
    expect(error).toBeInstanceOf(HTTPException);
    expect((error as HTTPException).status).toBe(401);
    expect(error!.message).toBe('labgate: sign-in required');
    expect(await (error as HTTPException).getResponse().json()).toMatchObject({ error: 'session_required' });
  });

  it('lets the role and the access through, and throws the 403 page (JSON for JSON clients)', async () => {
    const { browser: alice } = await signIn(browserFor(plain.app), ORIGIN, '/profile');
    expect((await alice.get(`${ORIGIN}/admin`)).body).toBe('admin alice');
    expect((await alice.get(`${ORIGIN}/maintain`)).body).toBe('maintain');
    const { browser: bob } = await signIn(browserFor(plain.app), ORIGIN, '/profile', 'bob');
    for (const path of ['/admin', '/maintain']) {
      const page = await bob.get(`${ORIGIN}${path}`);
      expect(page.status).toBe(403);
      expect(page.headers.get('content-type')).toMatch(/^text\/html/);
      expect(page.body).toContain('access_forbidden');
      const json = await bob.request(`${ORIGIN}${path}`, { headers: { accept: 'application/json' } });
      expect([json.status, JSON.parse(json.body).error]).toEqual([403, 'access_forbidden']);
    }
    const { browser: bobStyled } = await signIn(browserFor(styled.app), ORIGIN, '/profile', 'bob');
    const page = await bobStyled.get(`${ORIGIN}/admin`);
    expect(JSON.parse(page.body)).toEqual({ styled: 403 });
    expect(styled.errors.map((e) => [e.constructor.name, e.message])).toEqual([
      ['HTTPException', 'labgate: access forbidden'],
    ]);
  });

  it("answers labgate's routes: the session, HEAD, 405 with Allow, a same-origin sign-out", async () => {
    const session = await plain.app.request('/auth/session', { headers: { accept: 'application/json' } });
    expect(session.status).toBe(401);
    const head = await plain.app.request('/auth/login', { method: 'HEAD' });
    expect(head.status).toBe(302);
    expect(head.headers.get('location')).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/oauth\/authorize\?/);
    expect(await head.text()).toBe('');
    const wrong = await plain.app.request('/auth/callback', { method: 'POST' });
    expect([wrong.status, wrong.headers.get('allow')]).toEqual([405, 'GET']);

    const { browser } = await signIn(browserFor(plain.app), ORIGIN, '/profile');
    const out = await browser.request(`${ORIGIN}/auth/logout`, {
      method: 'POST',
      body: new URLSearchParams(),
      headers: { origin: ORIGIN },
    });
    expect(out.status).toBe(303);
    expect(out.headers.getSetCookie().some((c) => c.startsWith('labgate=;'))).toBe(true);
    expect((await browser.get(`${ORIGIN}/auth/session`)).status).toBe(401);
    expect(gitlab.control.requests({ path: '/oauth/revoke' })).toHaveLength(1);
  });

  it('a guard with neither the instance nor labgate(auth) before it is an error of the app, said plainly', async () => {
    const app = new Hono();
    const errors: Error[] = [];
    app.onError((error, c) => {
      errors.push(error);
      return c.text('app error', 500);
    });
    app.get('/x', requireUser(), (c) => c.text('never'));
    expect((await app.request('/x')).status).toBe(500);
    expect(errors.map((e) => e.constructor.name)).toEqual(['TypeError']);
    expect(errors[0]!.message).toContain('requireUser(auth)');
  });

  it('refuses a bad rule when the route is declared', () => {
    expect(() => requireRole('', auth)).toThrow(TypeError);
    expect(() => requireAccess('nonsense:acme', auth)).toThrow(TypeError);
    expect(() => requireAccess('nonsense:acme')).toThrow(TypeError);
  });

  it('types c.var.labgate in an app with its own Bindings and Variables', async () => {
    type AppEnv = { Bindings: { region: string }; Variables: { requestId: string } & LabgateVariables };
    const app = new Hono<AppEnv>();
    app.use(async (c, next) => {
      c.set('requestId', 'r-1');
      await next();
    });
    app.use(labgate(auth));
    app.get('/who', (c: Context<AppEnv>) =>
      c.json({ region: c.env.region, id: c.var.requestId, user: c.var.labgate.user?.username ?? null }),
    );
    app.get('/mine', requireUser({ api: true }), (c) => c.text(c.var.labgate.user.username));
    const res = await app.request('/who', {}, { region: 'eu' });
    expect(await res.json()).toEqual({ region: 'eu', id: 'r-1', user: null });
    expect((await app.request('/mine', {}, { region: 'eu' })).status).toBe(401);
  });
});

describe('labgate/hono mounted at its prefix, guards given the instance', () => {
  let lookups = 0;
  let app: Hono<LabgateEnv>;

  beforeAll(() => {
    const store = new MemoryStore();
    // Counts the store's session reads: a route without a guard must not cause any.
    const counting = withGetSession(store, (...args) => {
      lookups++;
      return store.getSession(...args);
    });
    const auth = createAuth(ORIGIN, { store: counting, access: { roles: { staff: 'group:acme' } } });
    app = new Hono<LabgateEnv>();
    app.use(`${auth.options.prefix}/*`, labgate(auth));
    app.get('/public', (c) => c.json({ labgate: c.get('labgate') === undefined ? 'absent' : 'set' }));
    app.get('/profile', requireUser(auth), (c) => c.text(`hello ${c.var.labgate.user.username}`));
    app.get('/staff', requireRole('staff', auth), (c) => c.text('staff only'));
    app.get('/admins', requireRole('admin', auth, { api: true }), (c) => c.text('admins'));
    app.get('/app', requireAccess('project:acme/app>=developer', auth), (c) => c.text('app'));
  });

  it('signs in through the mounted routes and lets the user through the guards', async () => {
    const { browser, page } = await signIn(browserFor(app), ORIGIN, '/profile');
    expect(page.body).toBe('hello alice');
    expect((await browser.get(`${ORIGIN}/staff`)).body).toBe('staff only');
    expect((await browser.get(`${ORIGIN}/app`)).body).toBe('app');
    const admins = await browser.request(`${ORIGIN}/admins`, { headers: { accept: 'application/json' } });
    expect(admins.status).toBe(403);
    expect((await app.request('/app', { headers: { accept: 'application/json' } })).status).toBe(401);
  });

  it('leaves routes without a guard alone: no c.var.labgate, no store read', async () => {
    const { browser } = await signIn(browserFor(app), ORIGIN, '/profile');
    const before = lookups;
    expect(JSON.parse((await browser.get(`${ORIGIN}/public`)).body)).toEqual({ labgate: 'absent' });
    expect(lookups).toBe(before);
  });
});

describe('labgate/hono while the store is down', () => {
  const stranger = { cookie: `labgate=${'a'.repeat(22)}.${'b'.repeat(43)}` };
  let auth: Labgate;

  beforeAll(() => {
    const failing = withGetSession(new MemoryStore(), () =>
      Promise.reject(new Error('connect ECONNREFUSED 127.0.0.1:6379')),
    );
    auth = createAuth(ORIGIN, { store: failing });
  });

  it("answers labgate's 503 page through Hono's default handler, naming no internal error", async () => {
    const app = new Hono<LabgateEnv>();
    app.use(labgate(auth));
    app.get('/', (c) => c.text('ok'));
    app.get('/guarded', requireUser(auth), (c) => c.text('ok'));
    const bare = new Hono<LabgateEnv>().get('/guarded', requireUser(auth), (c) => c.text('ok'));
    for (const [target, path] of [
      [app, '/'],
      [bare, '/guarded'],
    ] as const) {
      const res = await target.request(path, { headers: { ...stranger, accept: 'text/html' } });
      expect([path, res.status]).toEqual([path, 503]);
      const body = await res.text();
      expect(body).toContain('Sign-in is temporarily unavailable');
      expect(body).not.toMatch(/ECONNREFUSED| at |node_modules|\.ts:\d/);
    }
  });

  it('hands app.onError an HTTPException whose cause is the store_unavailable error', async () => {
    const errors: Error[] = [];
    const app = new Hono<LabgateEnv>();
    app.use(labgate(auth));
    app.get('/', (c) => c.text('ok'));
    app.onError((error, c) => {
      errors.push(error);
      return error instanceof HTTPException ? error.getResponse() : c.text('app error', 500);
    });
    const res = await app.request('/', { headers: { ...stranger, accept: 'application/json' } });
    expect(res.status).toBe(503);
    expect(await res.json()).toMatchObject({ error: 'store_unavailable' });
    expect(errors).toHaveLength(1);
    const [error] = errors as [HTTPException];
    expect(error).toBeInstanceOf(HTTPException);
    expect(error.message).not.toContain('ECONNREFUSED');
    expect(isLabgateError(error.cause) && error.cause.code).toBe('store_unavailable');
  });
});

/** Starts `app` on @hono/node-server on a loopback port; the app is built once the origin is known. */
async function serveOnNode(build: (origin: string) => Hono<LabgateEnv>) {
  let app: Hono<LabgateEnv> | undefined;
  const server = createAdaptorServer({ fetch: (request, env) => app!.fetch(request, env) });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  app = build(origin);
  return {
    origin,
    server: server as Server,
    close: () => new Promise<void>((resolve) => (server as Server).close(() => resolve())),
  };
}

/** A request with any method, over a socket (Fetch refuses to send TRACE, TRACK or CONNECT). */
function rawRequest(origin: string, method: string, path: string) {
  const { hostname, port } = new URL(origin);
  return new Promise<{
    status: number;
    headers: Record<string, string | string[] | undefined>;
    body: string;
  }>((resolve, reject) => {
    const req = httpRequest(
      { host: hostname, port, method, path, headers: { accept: 'application/json' } },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          body += chunk;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

describe('labgate/hono on @hono/node-server', () => {
  let running: Awaited<ReturnType<typeof serveOnNode>>;

  beforeAll(async () => {
    running = await serveOnNode((origin) => {
      const app = new Hono<LabgateEnv>();
      app.use(labgate(createAuth(origin)));
      app.get('/', (c) => c.text('home'));
      return app;
    });
  });
  afterAll(() => running.close());

  it('answers TRACE on a labgate route 405 with Allow, never a stack trace', async () => {
    const res = await rawRequest(running.origin, 'TRACE', '/auth/login');
    expect(res.status).toBe(405);
    expect(res.headers['allow']).toBe('GET, HEAD');
    expect(JSON.parse(res.body)).toMatchObject({ error: 'method_not_allowed' });
  });

  it('keeps several Set-Cookie apart over the socket', async () => {
    const { browser } = await signIn(new Browser(), running.origin, '/auth/login?returnTo=%2F');
    // The callback's two Set-Cookie (checked in signIn) each applied: the transaction cleared, the session kept.
    const names = browser.jar.cookies('127.0.0.1').map((c) => c.name);
    expect(names).toContain('labgate');
    expect(names.filter((name) => name.startsWith('labgate-tx-'))).toEqual([]);
    const session = await browser.get(`${running.origin}/auth/session`);
    expect(JSON.parse(session.body).user).toMatchObject({ username: 'alice' });
  });
});

describe('the reference app (examples/hono)', () => {
  let running: Awaited<ReturnType<typeof serveOnNode>>;

  beforeAll(async () => {
    running = await serveOnNode((origin) => createApp(createAuth(origin)) as Hono<LabgateEnv>);
  });
  afterAll(() => running.close());

  it('shows "Sign in with GitLab" on the home page', async () => {
    const home = await (await fetch(`${running.origin}/`)).text();
    expect(home).toContain('Sign in with GitLab');
    expect(home).toContain('href="/auth/login?returnTo=%2Fprofile"');
  });

  it('shows the profile with GitLab data and the projects read with the user’s token, and signs out', async () => {
    const { browser, page } = await signIn(new Browser(), running.origin, '/profile');
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    expect(page.body).toContain('data-testid="name">Alice Liddell<');
    expect(page.body).toContain('@alice');
    expect(page.body).toContain('alice@acme.test');
    expect(page.body).toContain(`${gitlab.url}/alice`);
    expect(page.body).toContain('14 March 2023');
    expect(page.body).toContain('Acme / App');
    const form = page.forms.find((f) => f.action === `${running.origin}/auth/logout`)!;
    expect(form.method).toBe('post');
    const out = await browser.request(form.action, {
      method: 'POST',
      body: new URLSearchParams(form.fields),
      headers: { origin: running.origin },
    });
    expect(out.status).toBe(303);
    expect((await browser.get(`${running.origin}/profile`)).status).toBe(302);
  });

  it('serves /me as JSON for a signed-in user, 401 for a signed-out client', async () => {
    const { browser } = await signIn(new Browser(), running.origin, '/profile', 'bob');
    const me = await browser.request(`${running.origin}/me`, { headers: { accept: 'application/json' } });
    expect(JSON.parse(me.body)).toMatchObject({ username: 'bob', name: 'Bob Builder' });
    expect((await fetch(`${running.origin}/me`)).status).toBe(401);
  });

  it('startExampleApp bounds slow clients as the Express one does: headers 10 s, request 30 s, keep-alive 5 s', async () => {
    const env = {
      GITLAB_URL: gitlab.url,
      GITLAB_CLIENT_ID: 'demo',
      GITLAB_CLIENT_SECRET: 'demo-secret',
      LABGATE_URL: 'http://127.0.0.1:3000',
      LABGATE_SECRET: SECRET,
      PORT: '0',
    };
    const { server, url } = await startExampleApp(env, { store: new MemoryStore(), logger: false });
    const shorter = await startExampleApp(
      env,
      { store: new MemoryStore(), logger: false },
      { headersTimeout: 2_000, requestTimeout: 3_000, keepAliveTimeout: 1_000 },
    );
    try {
      expect(url).toBe('http://127.0.0.1:3000');
      expect([server.headersTimeout, server.requestTimeout, server.keepAliveTimeout]).toEqual([
        10_000, 30_000, 5_000,
      ]);
      expect([
        shorter.server.headersTimeout,
        shorter.server.requestTimeout,
        shorter.server.keepAliveTimeout,
      ]).toEqual([2_000, 3_000, 1_000]);
      const { port } = server.address() as AddressInfo;
      const home = await fetch(`http://127.0.0.1:${port}/`);
      expect(await home.text()).toContain('Sign in with GitLab');
    } finally {
      for (const s of [server, shorter.server]) {
        s.closeAllConnections();
        await new Promise((resolve) => s.close(resolve));
      }
    }
  });
});
