/**
 * labgate/express in a real Express app on a real socket, signed in through the emulator, and the
 * reference app of examples/express.
 */
import { createServer, IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import express4 from 'express4';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createApp } from '../../examples/express/app.js';
import { labgate, requireAccess, requireRole, requireUser } from '../../src/adapters/express.js';
import { createLabgate, type Labgate, MemoryStore, type Store } from '../../src/core/index.js';
import { type RunningEmulator, startEmulator } from '../../src/emulator/index.js';
import { Browser, navigationFetch } from '../emulator/browser.js';

const SECRET = 'test-secret-test-secret-test-secret-test-secret';

let gitlab: RunningEmulator;
beforeAll(async () => {
  gitlab = await startEmulator();
});
afterAll(() => gitlab.close());
beforeEach(() => gitlab.control.reset());

/** Starts a server on a free loopback port and returns its origin; the app is attached afterwards. */
async function listen(): Promise<{ server: Server; origin: string }> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

function auth(origin: string, store?: Store): Labgate {
  const app = gitlab.applications[0]!;
  return createLabgate({
    gitlabUrl: gitlab.url,
    clientId: app.uid,
    clientSecret: app.secret,
    url: origin,
    secret: SECRET,
    scopes: 'openid profile email read_user read_api',
    logger: false,
    ...(store ? { store } : {}),
  });
}

/** Signs a new browser in through the app's own sign-in link; returns the browser and the final page. */
async function signIn(origin: string, path = '/profile', user = 'alice') {
  const browser = new Browser();
  const start = await browser.get(`${origin}${path}`);
  expect(start.status).toBe(302);
  const login = await browser.get(start.location!);
  const location = await browser.approveToClient({
    url: gitlab.url,
    authorizeUrl: login.location!,
    login: user,
    password: `${user}-password`,
  });
  const callback = await browser.get(location);
  expect(callback.status).toBe(303);
  const page = await browser.get(callback.location!);
  return { browser, page };
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

/** An app whose store is down answers `path` with labgate's 503 page, which names no internal error. */
async function expectStoreDownPage(
  path: string,
  mount: (app: express.Express, auth: Labgate) => void,
): Promise<void> {
  const { server: down, origin: downOrigin } = await listen();
  const failing = withGetSession(new MemoryStore(), () =>
    Promise.reject(new Error('connect ECONNREFUSED 127.0.0.1:6379')),
  );
  const app = express();
  mount(app, auth(downOrigin, failing));
  down.on('request', app);
  try {
    const res = await fetch(`${downOrigin}${path}`, {
      headers: { cookie: `labgate=${'a'.repeat(22)}.${'b'.repeat(43)}` },
    });
    expect(res.status).toBe(503);
    const body = await res.text();
    expect(body).toContain('Sign-in is temporarily unavailable');
    expect(body).not.toContain('ECONNREFUSED');
  } finally {
    await new Promise<void>((resolve) => down.close(() => resolve()));
  }
}

/**
 * Signed out, `/profile` sends a browser to sign in (and back), and `api` (with `headers`) answers 401
 * `session_required`.
 */
async function expectSignInDemanded(origin: string, api: string, headers: Record<string, string>) {
  // A browser navigating (Sec-Fetch-Mode: navigate), and one too old to send Sec-Fetch-*.
  for (const navigation of [{ 'sec-fetch-mode': 'navigate' }, {}]) {
    const html = await navigationFetch(`${origin}/profile?tab=1`, {
      headers: { accept: 'text/html', ...navigation },
    });
    expect(html.status).toBe(302);
    expect(html.headers.get('location')).toBe('/auth/login?returnTo=%2Fprofile%3Ftab%3D1');
  }
  const answer = await fetch(api, { headers });
  expect(answer.status).toBe(401);
  expect(await answer.json()).toMatchObject({ error: 'session_required' });
  // A script's fetch (Node's and browsers' send Sec-Fetch-Mode: cors) gets 401 even when it asks for HTML.
  const script = await fetch(`${origin}/profile`, { headers: { accept: 'text/html' }, redirect: 'manual' });
  expect(script.status).toBe(401);
}

describe('labgate/express', () => {
  let server: Server;
  let origin: string;
  let instance: Labgate;

  beforeAll(async () => {
    ({ server, origin } = await listen());
    instance = auth(origin);
    const app = express();
    app.use(labgate(instance));
    app.get('/public', (req, res) => res.json({ user: req.labgate?.user?.username ?? null }));
    app.get('/profile', requireUser(), (req, res) => res.send(`hello ${req.labgate!.user!.username}`));
    app.get('/api/me', requireUser({ api: true }), (req, res) => res.json(req.labgate!.user));
    app.get('/token', requireUser(), async (req, res) =>
      res.json({ length: (await req.labgate!.accessToken()).length }),
    );
    server.on('request', app);
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it('signs in and returns to the page that asked for it', async () => {
    const { page } = await signIn(origin);
    expect(page.status).toBe(200);
    expect(page.body).toBe('hello alice');
  });

  it('puts the user on req for every route, null when signed out', async () => {
    const { browser } = await signIn(origin);
    expect(JSON.parse((await browser.get(`${origin}/public`)).body)).toEqual({ user: 'alice' });
    expect(JSON.parse((await new Browser().get(`${origin}/public`)).body)).toEqual({ user: null });
  });

  it('sends browsers to sign in and answers API calls with 401', async () => {
    await expectSignInDemanded(origin, `${origin}/profile`, { accept: 'application/json' });
    const forced = await fetch(`${origin}/api/me`, { headers: { accept: 'text/html' } });
    expect(forced.status).toBe(401);
  });

  it('gives the route the GitLab token of the session', async () => {
    const { browser } = await signIn(origin);
    expect(JSON.parse((await browser.get(`${origin}/token`)).body)).toEqual({ length: 64 });
  });

  it('answers /auth/session and signs out with a same-origin POST', async () => {
    const { browser } = await signIn(origin);
    const session = await browser.get(`${origin}/auth/session`);
    expect(JSON.parse(session.body).user).toMatchObject({ username: 'alice', emailVerified: true });
    const out = await browser.request(`${origin}/auth/logout`, {
      method: 'POST',
      body: new URLSearchParams(),
      headers: { origin },
    });
    expect(out.status).toBe(303);
    expect(out.headers.getSetCookie().some((c) => c.startsWith('labgate=;'))).toBe(true);
    expect((await browser.get(`${origin}/auth/session`)).status).toBe(401);
    expect(gitlab.control.requests({ path: '/oauth/revoke' })).toHaveLength(1);
  });

  it('refuses a cross-site sign-out', async () => {
    const { browser } = await signIn(origin);
    const out = await browser.request(`${origin}/auth/logout`, {
      method: 'POST',
      body: new URLSearchParams(),
      headers: { origin: 'http://evil.example' },
    });
    expect(out.status).toBe(403);
    expect((await browser.get(`${origin}/auth/session`)).status).toBe(200);
  });

  it('answers HEAD on labgate routes without a body', async () => {
    const res = await fetch(`${origin}/auth/login`, { method: 'HEAD', redirect: 'manual' });
    expect(res.status).toBe(302);
    expect(await res.text()).toBe('');
  });

  it('answers 503 with a page, not a crash, when the store is down', async () => {
    await expectStoreDownPage('/', (app, downAuth) => {
      app.use(labgate(downAuth));
      app.get('/', (_req, res) => res.send('ok'));
    });
  });
});

describe('labgate/express mounted at its prefix, guards given the instance', () => {
  let server: Server;
  let origin: string;
  let instance: Labgate;
  let lookups = 0;

  beforeAll(async () => {
    ({ server, origin } = await listen());
    const store = new MemoryStore();
    // Counts the store's session reads: a route without a guard must not cause any.
    const counting = withGetSession(store, (...args) => {
      lookups++;
      return store.getSession(...args);
    });
    instance = createLabgate({
      gitlabUrl: gitlab.url,
      clientId: gitlab.applications[0]!.uid,
      clientSecret: gitlab.applications[0]!.secret,
      url: origin,
      secret: SECRET,
      scopes: 'openid profile email read_user read_api',
      logger: false,
      store: counting,
      access: { roles: { staff: 'group:acme' } },
    });
    const app = express();
    app.use(instance.options.prefix, labgate(instance));
    app.get('/public', (req, res) => res.json({ labgate: req.labgate === undefined ? 'absent' : 'set' }));
    app.get('/profile', requireUser(instance), (req, res) =>
      res.send(`hello ${req.labgate!.user!.username}`),
    );
    app.get('/api/me', requireUser(instance, { api: true }), (req, res) => res.json(req.labgate!.user));
    app.get('/staff', requireRole('staff', instance), (_req, res) => res.send('staff only'));
    app.get('/admins', requireRole('admin', instance, { api: true }), (_req, res) => res.send('admins'));
    app.get('/app', requireAccess('project:acme/app>=developer', instance), (_req, res) => res.send('app'));
    app.get('/unguarded', requireUser(), (_req, res) => res.send('never'));
    app.get('/maybe', labgate(instance), (req, res) =>
      res.json({ user: req.labgate!.user?.username ?? null }),
    );
    app.use((error: Error, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
      res.status(500).json({ error: error.message });
    });
    server.on('request', app);
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it('signs in through the mounted routes and lets the user through the guard', async () => {
    const { browser, page } = await signIn(origin);
    expect(page.status).toBe(200);
    expect(page.body).toBe('hello alice');
    const me = await browser.get(`${origin}/api/me`);
    expect(JSON.parse(me.body)).toMatchObject({ username: 'alice' });
    expect(JSON.parse((await browser.get(`${origin}/auth/session`)).body).user.username).toBe('alice');
  });

  it('leaves routes without a guard alone: no req.labgate, no store read', async () => {
    const { browser } = await signIn(origin);
    const before = lookups;
    const page = await browser.get(`${origin}/public`);
    expect(JSON.parse(page.body)).toEqual({ labgate: 'absent' });
    expect(lookups).toBe(before);
  });

  it('labgate(auth) on one route gives it the user, or null, without requiring sign-in', async () => {
    const { browser } = await signIn(origin);
    expect(JSON.parse((await browser.get(`${origin}/maybe`)).body)).toEqual({ user: 'alice' });
    expect(await (await fetch(`${origin}/maybe`)).json()).toEqual({ user: null });
  });

  it('sends browsers to sign in and answers API calls with 401', async () => {
    await expectSignInDemanded(origin, `${origin}/api/me`, {});
  });

  it('requireRole and requireAccess take the instance too', async () => {
    const { browser } = await signIn(origin);
    expect((await browser.get(`${origin}/staff`)).body).toBe('staff only');
    const admins = await browser.request(`${origin}/admins`, { headers: { accept: 'application/json' } });
    expect(admins.status).toBe(403);
    expect((await browser.get(`${origin}/app`)).body).toBe('app');
    expect((await fetch(`${origin}/app`, { headers: { accept: 'application/json' } })).status).toBe(401);
  });

  it('a guard with neither the instance nor app.use(labgate(auth)) is an error of the app, said plainly', async () => {
    const res = await fetch(`${origin}/unguarded`);
    expect(res.status).toBe(500);
    expect((await res.json()).error).toContain('requireUser(auth)');
  });

  it('answers 503 with a page from the guard when the store is down', async () => {
    await expectStoreDownPage('/me', (app, downAuth) => {
      app.use(downAuth.options.prefix, labgate(downAuth));
      app.get('/me', requireUser(downAuth), (_req, res) => res.send('ok'));
    });
  });
});

describe.each([
  ['Express 5', express],
  ['Express 4', express4],
])('where req.labgate lives (%s)', (_major, express) => {
  let server: Server;
  let origin: string;
  let instance: Labgate;

  /** What a route sees of req.labgate: whether it is the request's own property, and the user. */
  const seen = (req: express.Request, res: express.Response) =>
    res.json({
      own: Object.hasOwn(req, 'labgate'),
      user: req.labgate ? (req.labgate.user?.username ?? null) : 'absent',
      locals: Object.keys(res.locals),
    });

  beforeAll(async () => {
    ({ server, origin } = await listen());
    instance = auth(origin);
    const app = express();
    app.use(instance.options.prefix, labgate(instance));
    app.get('/guarded', requireUser(instance), seen);
    app.get('/optional', labgate(instance), seen);
    // A sub-app: labgate runs in it, and the parent's route after it still sees the context.
    const sub = express();
    sub.get('/inner', labgate(instance), (_req, _res, next) => next());
    app.use('/sub', sub);
    app.get('/sub/inner', seen);
    // An app that sets req.labgate itself (a test double, say) gets a plain property.
    app.get(
      '/assigned',
      (req, _res, next) => {
        req.labgate = { user: null, session: null, labgate: instance, accessToken: () => Promise.reject() };
        next();
      },
      requireUser(instance, { api: true }),
      seen,
    );
    app.get('/app-wide', (req, res, next) => labgate(instance)(req, res, next), seen);
    // Guards that decide without the handler reading req.labgate (see the test on lookups).
    app.get('/quiet', requireUser(instance, { api: true }), (_req, res) => res.send('ok'));
    app.get('/quiet-app-wide', labgate(instance), requireUser({ api: true }), (_req, res) => res.send('ok'));
    // An app that clears req.labgate after labgate set it.
    app.get(
      '/cleared',
      labgate(instance),
      (req, _res, next) => {
        req.labgate = undefined;
        next();
      },
      seen,
    );
    // A middleware after labgate that replaces res.locals wholesale does not lose the context.
    app.get(
      '/locals-replaced',
      labgate(instance),
      (_req, res, next) => {
        res.locals = Object.create(null);
        next();
      },
      seen,
    );
    server.on('request', app);
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it('Express: an accessor, not a property added to each request, and nothing in res.locals', async () => {
    const { browser } = await signIn(origin, '/guarded');
    for (const path of ['/guarded', '/optional', '/app-wide', '/locals-replaced'])
      expect(JSON.parse((await browser.get(`${origin}${path}`)).body)).toEqual({
        own: false,
        user: 'alice',
        locals: [],
      });
    expect(await (await fetch(`${origin}/optional`)).json()).toEqual({ own: false, user: null, locals: [] });
  });

  it('is still there after a sub-app that set it hands the request back', async () => {
    const { browser } = await signIn(origin, '/guarded');
    expect(JSON.parse((await browser.get(`${origin}/sub/inner`)).body)).toMatchObject({ user: 'alice' });
  });

  it('an app that assigns req.labgate itself keeps its own value', async () => {
    const { browser } = await signIn(origin, '/guarded');
    const res = await browser.request(`${origin}/assigned`, { headers: { accept: 'application/json' } });
    // Its context has no user: the guard decides on it (401) instead of looking the session up.
    expect(res.status).toBe(401);
  });

  it('guards read the context without looking req.labgate up on the request', async () => {
    const { browser } = await signIn(origin, '/guarded');
    // The accessor labgate installed on Express's request prototype, wrapped to count reads.
    let base: object = express.request;
    while (Object.getPrototypeOf(base) !== IncomingMessage.prototype) base = Object.getPrototypeOf(base);
    const descriptor = Object.getOwnPropertyDescriptor(base, 'labgate')!;
    let reads = 0;
    Object.defineProperty(base, 'labgate', {
      ...descriptor,
      get(this: IncomingMessage) {
        reads++;
        return descriptor.get!.call(this);
      },
    });
    try {
      for (const path of ['/quiet', '/quiet-app-wide']) {
        const res = await browser.request(`${origin}${path}`, { headers: { accept: 'application/json' } });
        expect([path, res.status, res.body]).toEqual([path, 200, 'ok']);
      }
      expect(reads).toBe(0);
      // …while the app's own reads still go through it.
      expect(JSON.parse((await browser.get(`${origin}/guarded`)).body)).toMatchObject({ user: 'alice' });
      expect(reads).toBeGreaterThan(0);
    } finally {
      Object.defineProperty(base, 'labgate', descriptor);
    }
  });

  it('an app that assigns undefined to req.labgate clears it', async () => {
    const { browser } = await signIn(origin, '/guarded');
    expect(JSON.parse((await browser.get(`${origin}/cleared`)).body)).toEqual({
      own: false,
      user: 'absent',
      locals: [],
    });
  });

  it('outside Express (plain node:http), a plain property', async () => {
    const { browser } = await signIn(origin, '/guarded');
    const cookie = browser.jar.cookies('127.0.0.1').find((c) => c.name === 'labgate')!;
    const { server: plain, origin: plainOrigin } = await listen();
    const middleware = labgate(instance);
    plain.on('request', (req: Parameters<typeof middleware>[0], res) =>
      middleware(req, res, () =>
        res.end(JSON.stringify({ own: Object.hasOwn(req, 'labgate'), user: req.labgate?.user?.username })),
      ),
    );
    try {
      const res = await fetch(`${plainOrigin}/x`, { headers: { cookie: `labgate=${cookie.value}` } });
      expect(await res.json()).toEqual({ own: true, user: 'alice' });
    } finally {
      await new Promise<void>((resolve) => plain.close(() => resolve()));
    }
  });
});

describe('the reference app (examples/express)', () => {
  let server: Server;
  let origin: string;

  beforeAll(async () => {
    ({ server, origin } = await listen());
    server.on('request', createApp(auth(origin)));
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it('shows "Sign in with GitLab" on the home page', async () => {
    const home = await (await fetch(`${origin}/`)).text();
    expect(home).toContain('Sign in with GitLab');
    expect(home).toContain('href="/auth/login?returnTo=%2Fprofile"');
  });

  it('shows the profile with GitLab data and the projects read with the user’s token', async () => {
    const { page } = await signIn(origin, '/profile');
    expect(page.status).toBe(200);
    expect(page.body).toContain('data-testid="name">Alice Liddell<');
    expect(page.body).toContain('@alice');
    expect(page.body).toContain('alice@acme.test');
    expect(page.body).toContain('verified');
    expect(page.body).toContain(`${gitlab.url}/alice`);
    expect(page.body).toContain('14 March 2023');
    expect(page.body).toContain('Acme / App');
    expect(page.body).toContain('action="/auth/logout"');
  });

  it('serves /me as JSON for a signed-in user', async () => {
    const { browser } = await signIn(origin, '/profile', 'bob');
    const me = await browser.request(`${origin}/me`, { headers: { accept: 'application/json' } });
    expect(JSON.parse(me.body)).toMatchObject({ username: 'bob', name: 'Bob Builder' });
  });
});
