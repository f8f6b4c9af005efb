/**
 * labgate/next: its helpers on Web requests (no Next needed), then the reference app of examples/next
 * built with `next build` and served by its custom server (examples/next/server.ts), signed in through
 * the emulator.
 */
import { execFile } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startExampleApp } from '../../examples/next/server.js';
import { handlers, labgateProxy, requireUser } from '../../src/adapters/next.js';
import { createLabgate, type Labgate, MemoryStore } from '../../src/core/index.js';
import { type RunningEmulator, startEmulator } from '../../src/emulator/index.js';
import { testSecret } from '../core/harness.js';
import { launchChromium, skipBrowserTests } from '../e2e/browser.js';
import { authorize, enterPassword, listedProjects, openGitLabSignIn, text } from '../e2e/stack.js';
import { Browser, navigationFetch } from '../emulator/browser.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const NEXT_BIN = fileURLToPath(new URL('../../node_modules/next/dist/bin/next', import.meta.url));

/** Builds a Next project with `next build` (telemetry off); resolves with the seconds it took. */
async function nextBuild(dir: string): Promise<number> {
  const started = performance.now();
  await promisify(execFile)(process.execPath, [NEXT_BIN, 'build', dir], {
    cwd: ROOT,
    env: { ...process.env, NEXT_TELEMETRY_DISABLED: '1', NODE_ENV: 'production' },
    timeout: 240_000,
    maxBuffer: 16 * 1024 * 1024,
  });
  return Math.round((performance.now() - started) / 100) / 10;
}

/** A free loopback port (the custom server listens on the port of `PORT`). */
async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as AddressInfo;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

/** Sends one request line over a raw socket; resolves with the whole answer (the server closes). */
async function rawRequest(origin: string, line: string): Promise<string> {
  const { port } = new URL(origin);
  const socket = connect(Number(port), '127.0.0.1');
  socket.write(`${line}\r\nHost: 127.0.0.1:${port}\r\nAccept: application/json\r\nConnection: close\r\n\r\n`);
  let answer = '';
  socket.setEncoding('utf8');
  for await (const chunk of socket) answer += chunk;
  return answer;
}

/** A memory store that fails every call while `down` is set. */
class SwitchableStore extends MemoryStore {
  down = false;
  constructor() {
    super();
    for (const name of Object.getOwnPropertyNames(MemoryStore.prototype)) {
      const method = (this as unknown as Record<string, unknown>)[name];
      if (name === 'constructor' || typeof method !== 'function') continue;
      (this as unknown as Record<string, unknown>)[name] = (...args: unknown[]) =>
        this.down
          ? Promise.reject(new Error('the store is down'))
          : (method as (...a: unknown[]) => unknown).apply(this, args);
    }
  }
}

let gitlab: RunningEmulator;
beforeAll(async () => {
  gitlab = await startEmulator();
});
afterAll(() => gitlab?.close());

function labgateOn(origin: string): Labgate {
  const app = gitlab.applications[0]!;
  return createLabgate({
    gitlabUrl: gitlab.url,
    clientId: app.uid,
    clientSecret: app.secret,
    url: origin,
    secret: testSecret(),
    scopes: 'openid profile email read_user read_api',
    access: { roles: { admin: 'group:acme>=owner' } },
    logger: false,
  });
}

describe('labgate/next on Web requests', () => {
  const origin = 'http://127.0.0.1:3000';
  const navigate = { accept: 'text/html', 'sec-fetch-mode': 'navigate' };

  it("answers labgate's routes from one catch-all route, every method through labgate", async () => {
    const auth = labgateOn(origin);
    const route = handlers(auth);
    const login = await route.GET(new Request(`${origin}/auth/login?returnTo=/profile`));
    expect(login.status).toBe(302);
    expect(login.headers.get('location')).toMatch(/\/oauth\/authorize\?/);
    const put = await route.PUT(new Request(`${origin}/auth/callback`, { method: 'PUT' }));
    expect(put.status).toBe(405);
    expect(put.headers.get('allow')).toBe('GET');
    // Mounted outside the prefix: labgate's 404 page, not a silent null.
    const stray = await route.GET(
      new Request(`${origin}/elsewhere`, { headers: { accept: 'application/json' } }),
    );
    expect(stray.status).toBe(404);
    expect(await stray.json()).toMatchObject({ error: 'not_found' });
  });

  it('creates labgate from a function once, at the first request, not when the module loads', async () => {
    let calls = 0;
    const source = () => {
      calls++;
      return labgateOn(origin);
    };
    const route = handlers(source);
    const me = requireUser(source, () => new Response('never'));
    expect(calls).toBe(0);
    await Promise.all([route.GET(new Request(`${origin}/auth/session`)), me(new Request(`${origin}/me`))]);
    await route.GET(new Request(`${origin}/auth/session`));
    expect(calls).toBe(1);
  });

  it('guards a route handler with the core guard: sign-in for browsers, 401 for scripts', async () => {
    const auth = labgateOn(origin);
    let ran = false;
    const me = requireUser(auth, () => {
      ran = true;
      return new Response('secret');
    });
    const browser = await me(new Request(`${origin}/me?tab=1`, { headers: navigate }));
    expect(browser.status).toBe(302);
    expect(browser.headers.get('location')).toBe('/auth/login?returnTo=%2Fme%3Ftab%3D1');
    const script = await me(
      new Request(`${origin}/me`, { headers: { accept: '*/*', 'sec-fetch-mode': 'cors' } }),
    );
    expect(script.status).toBe(401);
    expect(await script.json()).toMatchObject({ error: 'session_required' });
    expect(ran).toBe(false);
  });

  it('refuses a bad rule when the route is declared, not at a request', () => {
    const auth = labgateOn(origin);
    expect(() => requireUser(auth, () => new Response(), { access: 'project:' })).toThrow(TypeError);
    expect(() => labgateProxy(auth, { protect: ['profile'] })).toThrow(TypeError);
    expect(() => handlers({} as Labgate)).toThrow(TypeError);
  });

  it('guards the paths it protects in the proxy, as Next routes them, and lets the rest through', async () => {
    const auth = labgateOn(origin);
    const proxy = labgateProxy(auth, { protect: ['/profile', { path: '/admin/', role: 'admin' }] });
    for (const path of [
      '/profile',
      '/profile/',
      '/profile/keys?x=1',
      '/%70rofile',
      '/admin',
      '/admin/users',
    ]) {
      const answer = await proxy(new Request(`${origin}${path}`, { headers: navigate }));
      expect(answer?.status, path).toBe(302);
      // Absolute: Next refuses a relative Location from a proxy.
      expect(answer?.headers.get('location'), path).toMatch(
        /^http:\/\/127\.0\.0\.1:3000\/auth\/login\?returnTo=%2F/,
      );
    }
    const api = await proxy(new Request(`${origin}/profile`, { headers: { accept: 'application/json' } }));
    expect(api?.status).toBe(401);
    for (const path of ['/', '/profiles', '/auth/login', '/public/profile']) {
      expect(await proxy(new Request(`${origin}${path}`, { headers: navigate })), path).toBeUndefined();
    }
  });

  it('answers 503 from the proxy and the guard while the store is down', async () => {
    const store = new SwitchableStore();
    const app = gitlab.applications[0]!;
    const auth = createLabgate({
      gitlabUrl: gitlab.url,
      clientId: app.uid,
      clientSecret: app.secret,
      url: origin,
      secret: testSecret(),
      store,
      logger: false,
    });
    store.down = true;
    const cookie = 'labgate=AAAAAAAAAAAAAAAAAAAAAA.BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB';
    const proxied = await labgateProxy(auth, { protect: ['/'] })(
      new Request(`${origin}/x`, { headers: { ...navigate, cookie } }),
    );
    const guarded = await requireUser(
      auth,
      () => new Response('never'),
    )(new Request(`${origin}/me`, { headers: { cookie, accept: 'application/json' } }));
    for (const answer of [proxied!, guarded]) {
      expect(answer.status).toBe(503);
      expect(await answer.text()).not.toMatch(/ at |node_modules|\.ts:\d/);
    }
  });
});

describe('the reference app of examples/next, built and served by its custom server', () => {
  let server: Server;
  let origin: string;
  let store: SwitchableStore;

  beforeAll(async () => {
    const seconds = await nextBuild('examples/next');
    // The build's time, for the report of a slow run (type-check included).
    console.info(`next build examples/next: ${seconds} s`);
    const port = await freePort();
    origin = `http://127.0.0.1:${port}`;
    store = new SwitchableStore();
    const registered = gitlab.applications[0]!;
    ({ server } = await startExampleApp(
      {
        GITLAB_URL: gitlab.url,
        GITLAB_CLIENT_ID: registered.uid,
        GITLAB_CLIENT_SECRET: registered.secret,
        LABGATE_URL: origin,
        LABGATE_SECRET: testSecret(),
        PORT: String(port),
      },
      { store, logger: false },
    ));
  }, 300_000);
  afterAll(async () => {
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  });
  beforeEach(() => {
    store.down = false;
  });

  /** Signs a browser in from the home page's sign-in link; returns it on the profile page. */
  async function signIn(user = 'alice') {
    const browser = new Browser();
    const home = await browser.get(`${origin}/`);
    expect(home.status).toBe(200);
    const link = /data-testid="sign-in" href="([^"]+)"/.exec(home.body)?.[1]?.replace(/&amp;/g, '&');
    expect(link).toBe('/auth/login?returnTo=%2Fprofile');
    const start = await browser.get(`${origin}${link}`);
    expect(start.status, start.body).toBe(302);
    const location = await browser.approveToClient({
      url: gitlab.url,
      authorizeUrl: start.location!,
      login: user,
      password: `${user}-password`,
    });
    const back = await browser.get(location);
    expect(back.status, back.body).toBe(303);
    // The transaction cleared and the session set: two Set-Cookie, kept apart.
    const names = back.headers.getSetCookie().map((c) => c.slice(0, c.indexOf('=')));
    expect(names).toContain('labgate');
    expect(names.some((n) => n.startsWith('labgate-tx-'))).toBe(true);
    expect(back.location).toBe(`${origin}/profile`);
    return { browser, profile: await browser.get(back.location!) };
  }

  it('signs in through GitLab: the profile with projects, /me, the home page, and signs out', async () => {
    const { browser, profile } = await signIn();
    expect(profile.status).toBe(200);
    expect(profile.headers.get('content-type')).toMatch(/^text\/html/);
    expect(profile.body).toContain('data-testid="name">Alice');
    expect(profile.body).toContain('data-testid="projects"');
    expect(profile.body).toContain('action="/auth/logout"');
    const me = JSON.parse((await browser.get(`${origin}/me`)).body);
    expect(me).toMatchObject({ username: 'alice', emailVerified: true });
    expect((await browser.get(`${origin}/`)).body).toContain('Hello, Alice');
    // A server component reads the same session (getSession, read-only).
    const account = await browser.get(`${origin}/account`);
    expect(account.status).toBe(200);
    expect(account.body).toMatch(/data-testid="name">Alice[^<]*</);
    expect(account.body).toMatch(/data-testid="username">@(<!-- -->)?alice</);
    expect(account.headers.getSetCookie()).toEqual([]);
    const out = await browser.request(`${origin}/auth/logout`, {
      method: 'POST',
      body: new URLSearchParams(),
      headers: { origin },
    });
    expect(out.status).toBe(303);
    expect(out.headers.getSetCookie().some((c) => c.startsWith('labgate=;'))).toBe(true);
    expect((await browser.request(`${origin}/me`, { headers: { accept: 'application/json' } })).status).toBe(
      401,
    );
  });

  it.skipIf(skipBrowserTests)(
    'signs alice in in a real browser (chromium), profile and sign-out',
    async () => {
      const chromium = await launchChromium();
      try {
        const { page } = chromium;
        const stack = { gitlab, origin, close: async () => {} };
        await openGitLabSignIn(page, stack);
        await enterPassword(page, 'alice');
        await authorize(page, stack);
        expect(await text(page, 'name')).toBe('Alice Liddell');
        expect(await listedProjects(page)).toContain('Acme / App');
        await page.getByRole('button', { name: 'Sign out' }).click();
        await page.waitForURL(`${origin}/`);
        expect(await text(page, 'sign-in')).toBe('Sign in with GitLab');
      } finally {
        await chromium.close();
      }
    },
  );

  it('sends signed-out browsers to sign in and answers scripts 401, at the proxy and the route', async () => {
    const page = await navigationFetch(`${origin}/profile?tab=2`, {
      headers: { accept: 'text/html', 'sec-fetch-mode': 'navigate' },
    });
    expect(page.status).toBe(302);
    // Next makes a same-origin Location relative again.
    expect(page.headers.get('location')).toBe('/auth/login?returnTo=%2Fprofile%3Ftab%3D2');
    // A server component sends a signed-out visitor to sign in with Next's redirect.
    const account = await navigationFetch(`${origin}/account`, { headers: { accept: 'text/html' } });
    expect(account.status).toBe(307);
    expect(account.headers.get('location')).toBe('/auth/login?returnTo=%2Faccount');
    const script = await fetch(`${origin}/me`);
    expect(script.status).toBe(401);
    expect(await script.json()).toMatchObject({ error: 'session_required' });
  });

  it('still refuses a request that claims to skip the proxy (CVE-2025-29927)', async () => {
    const skip = 'middleware:middleware:middleware:middleware:middleware';
    for (const name of ['proxy', 'middleware', 'src/middleware']) {
      const answer = await fetch(`${origin}/me`, {
        headers: { 'x-middleware-subrequest': skip.replaceAll('middleware', name) },
      });
      expect(answer.status).toBe(401);
    }
  });

  it("answers labgate's routes: HEAD without a body, 405 with Allow for a method a route does not take", async () => {
    const head = await fetch(`${origin}/auth/login`, { method: 'HEAD', redirect: 'manual' });
    expect(head.status).toBe(302);
    expect(await head.text()).toBe('');
    for (const method of ['POST', 'PUT', 'DELETE']) {
      const wrong = await fetch(`${origin}/auth/callback`, { method });
      expect(wrong.status, method).toBe(405);
      expect(wrong.headers.get('allow')).toBe('GET');
    }
    const session = await fetch(`${origin}/auth/session`, { headers: { accept: 'application/json' } });
    expect(session.status).toBe(401);
    // A method Fetch cannot carry, over a raw socket: labgate's 405 through the custom server.
    const trace = await rawRequest(origin, 'TRACE /auth/login HTTP/1.1');
    expect(trace).toMatch(/^HTTP\/1\.1 405 /);
    expect(trace).toMatch(/\r\nallow: GET, HEAD\r\n/i);
    expect(trace).toContain('"error":"method_not_allowed"');
  });

  it('answers 503 with a page while the store is down, never a stack trace', async () => {
    store.down = true;
    const cookie = 'labgate=AAAAAAAAAAAAAAAAAAAAAA.BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB';
    for (const path of ['/', '/profile', '/me']) {
      const page = await navigationFetch(`${origin}${path}`, { headers: { cookie, accept: 'text/html' } });
      expect(page.status, path).toBe(503);
      expect(await page.text()).not.toMatch(/ at |node_modules|\.ts:\d/);
    }
    // A server component cannot answer with a Response: Next's own error page, without a stack trace.
    const account = await navigationFetch(`${origin}/account`, { headers: { cookie, accept: 'text/html' } });
    expect(account.status).toBe(500);
    expect(await account.text()).not.toMatch(/ at |node_modules|\.ts:\d|the store is down/);
  });
});
