/**
 * One behaviour table that every host runs, as every store runs the store suite: an app on a loopback
 * socket with labgate's routes and four pages, signed in through the emulator.
 *
 * | request                                   | answer                                   |
 * |-------------------------------------------|------------------------------------------|
 * | browser navigation, signed out            | 302 to sign in, `returnTo` the page      |
 * | `fetch`/XHR or JSON client, signed out    | 401 JSON `session_required`              |
 * | signed in                                 | the page, with the user                  |
 * | signed in, without the role or the access | 403 (page, or JSON for JSON clients)     |
 * | the store down                            | 503, never a stack trace                 |
 * | labgate's routes                          | answered by labgate (sign-in, `/auth/session`, 405 with `Allow`), several `Set-Cookie` kept apart |
 *
 * A host under test serves, beside labgate's routes:
 * - `GET /public`: no guard; `public <username>` or `public anonymous` (the session looked up);
 * - `GET /me`: signed-in users; JSON `{ "username": … }`;
 * - `GET /admin`: the role `admin` (`group:acme>=owner`: alice has it, bob not); text `admin <username>`;
 * - `GET /maintain`: `requireAccess('project:acme/app>=maintainer')` (alice yes, bob no); text `maintain`;
 * - `GET /token`: signed-in users; JSON `{ "length": <length of the user's GitLab token> }`.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  createLabgate,
  type Labgate,
  type LabgateOptions,
  MemoryStore,
  type Store,
} from '../../src/core/index.js';
import { type RunningEmulator, startEmulator } from '../../src/emulator/index.js';
import { testSecret } from '../core/harness.js';
import { Browser, navigationFetch } from '../emulator/browser.js';

/** What the suite hands a host: everything but the app's own origin, which the host learns on listening. */
export interface HostConfig {
  gitlabUrl: string;
  clientId: string;
  clientSecret: string;
  secret: string;
  /** A store the suite can take down (in-process hosts pass it to labgate). */
  store: Store;
}

/** A host's app, running. */
export interface RunningHost {
  /** `http://127.0.0.1:<port>`. */
  origin: string;
  close(): Promise<void>;
}

/** A host under test. */
export interface HostUnderTest {
  /** `express`, `fastify`, … */
  name: string;
  /** Starts the app described above on 127.0.0.1, port 0. */
  start(config: HostConfig): Promise<RunningHost>;
  /** False for a host that runs in another process and cannot be handed the suite's store. */
  sharesStore?: boolean;
}

/** The labgate options of a host's app: the suite's config on the app's origin. */
export function labgateOptions(config: HostConfig, origin: string): LabgateOptions {
  return {
    gitlabUrl: config.gitlabUrl,
    clientId: config.clientId,
    clientSecret: config.clientSecret,
    url: origin,
    secret: config.secret,
    store: config.store,
    scopes: 'openid profile email read_user read_api',
    access: { roles: { admin: 'group:acme>=owner' } },
    logger: false,
  };
}

/** labgate for a host's app. */
export function labgateFor(config: HostConfig, origin: string): Labgate {
  return createLabgate(labgateOptions(config, origin));
}

/** A store that answers as the memory store does until the test takes it down. */
class SwitchableStore extends MemoryStore {
  down = false;
  constructor() {
    super();
    for (const name of Object.getOwnPropertyNames(MemoryStore.prototype)) {
      if (name === 'constructor') continue;
      const method = (this as unknown as Record<string, unknown>)[name];
      if (typeof method !== 'function') continue;
      (this as unknown as Record<string, unknown>)[name] = (...args: unknown[]) =>
        this.down
          ? Promise.reject(new Error('the store is down'))
          : (method as (...a: unknown[]) => unknown).apply(this, args);
    }
  }
}

/** Runs the behaviour table on a host. */
export function hostBehaviour(host: HostUnderTest): void {
  describe(`${host.name}: the behaviour every host shares`, () => {
    let gitlab: RunningEmulator;
    let app: RunningHost;
    let store: SwitchableStore;

    beforeAll(async () => {
      gitlab = await startEmulator();
      const registered = gitlab.applications[0]!;
      store = new SwitchableStore();
      app = await host.start({
        gitlabUrl: gitlab.url,
        clientId: registered.uid,
        clientSecret: registered.secret,
        secret: testSecret(),
        store,
      });
    });
    afterAll(async () => {
      await app?.close();
      await gitlab?.close();
    });
    beforeEach(() => {
      store.down = false;
    });

    async function signIn(user: string, returnTo = '/public'): Promise<Browser> {
      const browser = new Browser();
      const start = await browser.get(`${app.origin}/auth/login?returnTo=${encodeURIComponent(returnTo)}`);
      expect(start.status, start.body).toBe(302);
      const location = await browser.approveToClient({
        url: gitlab.url,
        authorizeUrl: start.location!,
        login: user,
        password: `${user}-password`,
      });
      const back = await browser.get(location);
      expect(back.status, back.body).toBe(303);
      // Two cookies in one answer: the transaction cleared, the session set, each its own header.
      const names = back.headers.getSetCookie().map((c) => c.slice(0, c.indexOf('=')));
      expect(names).toContain('labgate');
      expect(names.some((n) => n.startsWith('labgate-tx-'))).toBe(true);
      expect(back.headers.get('location')).toBe(returnTo);
      return browser;
    }

    it('sends a signed-out browser navigation to sign in, and back afterwards', async () => {
      for (const headers of [
        { accept: 'text/html,application/xhtml+xml', 'sec-fetch-mode': 'navigate' },
        { accept: 'text/html' },
      ]) {
        const page = await navigationFetch(`${app.origin}/me?tab=1`, { headers });
        expect(page.status).toBe(302);
        expect(page.headers.get('location')).toBe('/auth/login?returnTo=%2Fme%3Ftab%3D1');
      }
      const browser = await signIn('alice', '/me?tab=1');
      expect(JSON.parse((await browser.get(`${app.origin}/me?tab=1`)).body)).toEqual({ username: 'alice' });
    });

    it('answers a signed-out fetch or JSON client 401 JSON', async () => {
      const script = await fetch(`${app.origin}/me`, { redirect: 'manual' });
      const json = await navigationFetch(`${app.origin}/me`, { headers: { accept: 'application/json' } });
      for (const answer of [script, json]) {
        expect(answer.status).toBe(401);
        expect(answer.headers.get('www-authenticate')).toBe('Cookie realm="labgate"');
        expect(await answer.json()).toMatchObject({ error: 'session_required' });
      }
    });

    it('gives the page the signed-in user and the GitLab token', async () => {
      const browser = await signIn('alice');
      expect((await browser.get(`${app.origin}/public`)).body).toBe('public alice');
      expect((await new Browser().get(`${app.origin}/public`)).body).toBe('public anonymous');
      expect(JSON.parse((await browser.get(`${app.origin}/token`)).body)).toEqual({ length: 64 });
    });

    it('lets the role and the access through, and refuses the others 403', async () => {
      const alice = await signIn('alice');
      expect((await alice.get(`${app.origin}/admin`)).body).toBe('admin alice');
      expect((await alice.get(`${app.origin}/maintain`)).body).toBe('maintain');
      const bob = await signIn('bob');
      for (const path of ['/admin', '/maintain']) {
        const page = await bob.get(`${app.origin}${path}`);
        expect(page.status).toBe(403);
        expect(page.headers.get('content-type')).toMatch(/^text\/html/);
        expect(page.body).toContain('access_forbidden');
        const json = await bob.request(`${app.origin}${path}`, { headers: { accept: 'application/json' } });
        expect(json.status).toBe(403);
        expect(JSON.parse(json.body)).toMatchObject({ error: 'access_forbidden' });
      }
    });

    it("answers labgate's routes, 405 with Allow for a method a route does not take", async () => {
      const session = await fetch(`${app.origin}/auth/session`, { headers: { accept: 'application/json' } });
      expect(session.status).toBe(401);
      const wrong = await fetch(`${app.origin}/auth/callback`, { method: 'POST' });
      expect(wrong.status).toBe(405);
      expect(wrong.headers.get('allow')).toBe('GET');
      const head = await fetch(`${app.origin}/auth/login`, { method: 'HEAD', redirect: 'manual' });
      expect(head.status).toBe(302);
      expect(await head.text()).toBe('');
    });

    it('answers 503 while the store is down, never a stack trace', async () => {
      if (host.sharesStore === false) return;
      const alice = await signIn('alice');
      store.down = true;
      // A session verified moments ago is still known for up to sessionCacheTtl; a new cookie is not.
      const stranger = 'labgate=AAAAAAAAAAAAAAAAAAAAAA.BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB';
      for (const path of ['/me', '/public']) {
        const page = await navigationFetch(`${app.origin}${path}`, { headers: { cookie: stranger } });
        expect(page.status).toBe(503);
        expect(await page.text()).not.toMatch(/ at |node_modules|\.ts:\d/);
      }
      store.down = false;
      expect((await alice.get(`${app.origin}/public`)).body).toBe('public alice');
    });
  });
}
