/**
 * Account linking (docs/security.md, SESSION-7): a sign-in always yields a session of the account that
 * just signed in; a session cookie already in the browser never links two accounts. Linking a further
 * account is an explicit, same-origin `POST /auth/link` by the signed-in user, and off unless the app
 * turns it on. The sequence runs on every store.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Session, Store } from '../../src/core/index.js';
import { MemoryStore } from '../../src/core/index.js';
import { type RunningEmulator, startEmulator } from '../../src/emulator/index.js';
import { createPostgresStore } from '../../src/stores/postgres.js';
import { createRedisStore } from '../../src/stores/redis.js';
import { createSqliteStore } from '../../src/stores/sqlite.js';
import {
  createPgSchema,
  createRedisPrefix,
  createTempDir,
  describeWithService,
  postgres,
  redis,
  type Service,
} from '../support/services.js';
import { APP, authorize, createHarness, errorCode, type Harness, login, signIn } from './harness.js';

let gitlab: RunningEmulator;
beforeAll(async () => {
  gitlab = await startEmulator();
});
afterAll(() => gitlab.close());
beforeEach(() => gitlab.control.reset());

type Browser = ReturnType<Harness['browser']>;

/** The session a browser's labgate cookies open, or null. */
function sessionOf(h: Harness, browser: Browser): Promise<Session | null> {
  return h.labgate.getSession(new Request(`${APP}/`, { headers: { cookie: browser.jar.header(`${APP}/`) } }));
}

/** Signs the browser out of GitLab (not of the app), so that another person can sign in at GitLab in it. */
function leaveGitLab(browser: Browser): void {
  browser.jar.store(`${gitlab.url}/`, ['_gitlab_session=; Path=/; Max-Age=0']);
}

interface StoreKind {
  name: string;
  service?: () => Promise<Service>;
  open(): Promise<{ store: Store; close(): Promise<void> }>;
}

const KINDS: StoreKind[] = [
  { name: 'memory', open: async () => ({ store: new MemoryStore(), close: async () => {} }) },
  {
    name: 'sqlite',
    async open() {
      const dir = await createTempDir('labgate-linking-');
      const store = await createSqliteStore({ path: join(dir.path, 'labgate.db') });
      return {
        store,
        close: async () => {
          await store.close();
          await dir.remove();
        },
      };
    },
  },
  {
    name: 'postgres',
    service: postgres,
    async open() {
      const schema = await createPgSchema();
      const store = await createPostgresStore(schema.config);
      return {
        store,
        close: async () => {
          await store.close();
          await schema.drop();
        },
      };
    },
  },
  {
    name: 'redis',
    service: redis,
    async open() {
      const prefix = createRedisPrefix();
      const store = await createRedisStore({ url: 'redis://127.0.0.1:6379', prefix: prefix.prefix });
      return {
        store,
        close: async () => {
          await store.close();
          await prefix.clean();
        },
      };
    },
  },
];

for (const kind of KINDS) {
  const service: Service = kind.service
    ? await kind.service()
    : { name: kind.name, address: '', available: true, reason: '', start: '' };
  describeWithService(service, `account linking on the ${kind.name} store`, () => {
    let opened: Awaited<ReturnType<StoreKind['open']>>;
    beforeEach(async () => {
      opened = await kind.open();
      return () => opened.close();
    });

    it("a second person signing in in the same browser never takes over the first one's user", async () => {
      const h = createHarness(gitlab, { store: opened.store });
      const shared = h.browser();
      expect((await signIn(h, { user: 'alice', browser: shared })).callback.status).toBe(303);
      const aliceHere = (await sessionOf(h, shared))!;
      const aliceCookie = shared.jar.header(`${APP}/`);
      // Alice on a second machine too.
      const elsewhere = h.browser();
      expect((await signIn(h, { user: 'alice', browser: elsewhere })).callback.status).toBe(303);
      const aliceElsewhere = (await sessionOf(h, elsewhere))!;
      const aliceToken = await h.labgate.getAccessToken(aliceElsewhere);
      const aliceSessionsBefore = (await h.labgate.listSessions(aliceElsewhere)).map((s) => s.id).sort();
      expect(aliceSessionsBefore).toEqual([aliceHere.id, aliceElsewhere.id].sort());

      // Bob, in Alice's browser with her session cookie still in it.
      leaveGitLab(shared);
      expect((await signIn(h, { user: 'bob', browser: shared })).callback.status).toBe(303);
      const bob = (await sessionOf(h, shared))!;
      expect(bob.user.username).toBe('bob');
      expect(bob.userId).not.toBe(aliceHere.userId);

      // Bob's user holds Bob's account only, and Alice's hers only.
      const aliceIdentities = await opened.store.listIdentities(aliceHere.userId);
      expect(aliceIdentities.map((i) => i.profile.username)).toEqual(['alice']);
      expect((await opened.store.listIdentities(bob.userId)).map((i) => i.profile.username)).toEqual(['bob']);
      // Bob lists only his own sessions.
      expect((await h.labgate.listSessions(bob)).map((s) => s.id)).toEqual([bob.id]);

      // "Sign out everywhere" by Bob, from any browser, ends Bob's sessions only.
      await h.labgate.signOutEverywhere(bob);
      expect((await h.labgate.listSessions(aliceElsewhere)).map((s) => s.id).sort()).toEqual(
        aliceSessionsBefore,
      );
      expect(
        await h.labgate.getSession(new Request(`${APP}/`, { headers: { cookie: aliceCookie } })),
      ).not.toBeNull();
      // Alice's GitLab token was not revoked.
      expect((await h.labgate.checkToken(aliceToken)).active).toBe(true);
      expect(await h.labgate.getAccessToken(aliceElsewhere)).toBe(aliceToken);
    });

    it('links a further account only through POST /auth/link, when the app turns linking on', async () => {
      const h = createHarness(gitlab, { store: opened.store, accountLinking: true });
      const browser = h.browser();
      await signIn(h, { user: 'alice', browser });
      const alice = (await sessionOf(h, browser))!;
      leaveGitLab(browser);
      const started = await browser.request(`${APP}/auth/link`, {
        method: 'POST',
        headers: { origin: APP },
        body: new URLSearchParams({ returnTo: '/settings' }),
      });
      expect(started.status).toBe(302);
      const back = await browser.get(await authorize(h, browser, started.location!, { user: 'bob' }));
      expect(back.status, back.body).toBe(303);
      expect(back.headers.get('location')).toBe('/settings');
      const linked = (await sessionOf(h, browser))!;
      expect(linked.user.username).toBe('bob');
      expect(linked.userId).toBe(alice.userId);
      const names = (await opened.store.listIdentities(alice.userId)).map((i) => i.profile.username).sort();
      expect(names).toEqual(['alice', 'bob']);
    });
  });
}

describe('POST /auth/link', () => {
  it('answers 404 while linking is off (the default)', async () => {
    const h = createHarness(gitlab);
    const browser = h.browser();
    await signIn(h, { user: 'alice', browser });
    for (const method of ['GET', 'POST']) {
      const page = await browser.request(`${APP}/auth/link`, { method, headers: { origin: APP } });
      expect(page.status).toBe(404);
    }
  });

  it('refuses a request from another site, and one without a session, before reading its body', async () => {
    const h = createHarness(gitlab, { accountLinking: true });
    const browser = h.browser();
    await signIn(h, { user: 'alice', browser });
    const forged = await browser.request(`${APP}/auth/link`, {
      method: 'POST',
      headers: { origin: 'http://127.0.0.2:3000' },
    });
    expect(forged.status).toBe(403);
    expect(errorCode(forged)).toBe('csrf_rejected');
    const anonymous = await h.browser().request(`${APP}/auth/link`, {
      method: 'POST',
      headers: { origin: APP },
    });
    expect(anonymous.status).toBe(401);
  });

  it('shows a confirmation page that posts to itself, and needs a session for it', async () => {
    const h = createHarness(gitlab, { accountLinking: true });
    const browser = h.browser();
    expect((await browser.get(`${APP}/auth/link`)).status).toBe(401);
    await signIn(h, { user: 'alice', browser });
    const page = await browser.get(`${APP}/auth/link`);
    expect(page.status).toBe(200);
    expect(page.forms[0]).toMatchObject({ method: 'post', action: `${APP}/auth/link` });
  });

  it('refuses to link an account that already belongs to another user, and leaves it there', async () => {
    const h = createHarness(gitlab, { accountLinking: true });
    const bobBrowser = h.browser();
    await signIn(h, { user: 'bob', browser: bobBrowser });
    const bob = (await sessionOf(h, bobBrowser))!;
    const browser = h.browser();
    await signIn(h, { user: 'alice', browser });
    const alice = (await sessionOf(h, browser))!;
    leaveGitLab(browser);
    const started = await browser.request(`${APP}/auth/link`, { method: 'POST', headers: { origin: APP } });
    const back = await browser.get(await authorize(h, browser, started.location!, { user: 'bob' }));
    expect(back.status).toBe(403);
    expect(errorCode(back)).toBe('access_forbidden');
    expect(back.body).toContain('already linked to another user');
    expect((await h.labgate.store.listIdentities(bob.userId)).map((i) => i.profile.username)).toEqual([
      'bob',
    ]);
    expect((await h.labgate.store.listIdentities(alice.userId)).map((i) => i.profile.username)).toEqual([
      'alice',
    ]);
    // Alice is still signed in as herself.
    expect((await sessionOf(h, browser))?.userId).toBe(alice.userId);
  });

  it("does not link when the browser's session is no longer the one that asked", async () => {
    const h = createHarness(gitlab, { accountLinking: true });
    const browser = h.browser();
    await signIn(h, { user: 'alice', browser });
    const alice = (await sessionOf(h, browser))!;
    const started = await browser.request(`${APP}/auth/link`, { method: 'POST', headers: { origin: APP } });
    await h.labgate.endSession(alice);
    leaveGitLab(browser);
    const back = await browser.get(await authorize(h, browser, started.location!, { user: 'bob' }));
    expect(back.status).toBe(400);
    expect(errorCode(back)).toBe('transaction_invalid');
    expect((await h.labgate.store.listIdentities(alice.userId)).map((i) => i.profile.username)).toEqual([
      'alice',
    ]);
    // A plain sign-in afterwards is Bob's own.
    const again = await login(h, browser);
    expect(again.page.status).toBe(302);
  });
});
