/**
 * Several instances of the reference app on one shared store, behind a round-robin load balancer with
 * no sticky sessions: a sign-in whose steps land on different instances works, the session is valid on
 * every instance, the user's session list is the same everywhere, and a sign-out handled by one
 * instance ends the session on all of them: at once on that instance, and within the documented
 * 5-second cache bound on the others.
 *
 * Three real processes (`node build/examples/express/server.js`), a GitLab emulator in the test
 * process, and a tiny proxy written here. Run `npm run build` first (`npm test` does).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningEmulator, startEmulator } from '../../src/emulator/index.js';
import {
  createPgSchema,
  createRedisPrefix,
  describeWithService,
  type PgSchema,
  pgUrl,
  postgres,
  type RedisPrefix,
  redis,
  redisUrl,
  type Service,
} from '../support/services.js';
import {
  type AppProcess,
  appEnv,
  getWithCookie,
  newSecret,
  type RoundRobinProxy,
  type SignIn,
  signIn,
  startApp,
  startRoundRobinProxy,
  stopEverything,
  waitFor,
} from './harness.js';

const INSTANCES = 3;
/** The documented bound (sessionCacheTtl ≤ 5 s) plus margin for three processes under load. */
const REVOCATION_DEADLINE_MS = 7_000;

/** A store shared by the instances, isolated from every other test. */
interface SharedStore {
  url: string;
  cleanup(): Promise<void>;
}

const [pg, rd] = await Promise.all([postgres(), redis()]);

const STORES: { name: string; service: Service; open: () => Promise<SharedStore> }[] = [
  {
    name: 'PostgreSQL',
    service: pg,
    async open() {
      const schema: PgSchema = await createPgSchema();
      return { url: pgUrl(schema.schema), cleanup: () => schema.drop() };
    },
  },
  {
    name: 'Redis',
    service: rd,
    async open() {
      const keys: RedisPrefix = createRedisPrefix();
      const url = new URL(redisUrl);
      url.searchParams.set('prefix', keys.prefix);
      return { url: url.href, cleanup: () => keys.clean() };
    },
  },
];

let gitlab: RunningEmulator;
beforeAll(async () => {
  gitlab = await startEmulator();
});
afterAll(async () => {
  await stopEverything();
  await gitlab?.close();
});

describe.each(STORES)('three instances on $name', ({ name, service, open }) => {
  describeWithService(service, `${INSTANCES} app processes on ${name} behind a round-robin proxy`, () => {
    let store: SharedStore | undefined;
    let proxy: RoundRobinProxy;
    let apps: AppProcess[] = [];

    beforeAll(async () => {
      store = await open();
      proxy = await startRoundRobinProxy();
      const secret = newSecret();
      // Every instance: the same GitLab application, secret and store, and the proxy as public origin.
      const env = appEnv(gitlab, { store: store.url, secret, url: proxy.origin });
      apps = await Promise.all(Array.from({ length: INSTANCES }, () => startApp(env)));
      proxy.setTargets(apps.map((app) => app.port));
    }, 30_000);

    afterAll(async () => {
      await Promise.allSettled(apps.map((app) => app.kill()));
      await proxy?.close();
      await store?.cleanup();
    });

    /** `/auth/session` of this cookie on each instance, straight to its port. */
    const statusEverywhere = async (cookie: string) =>
      Promise.all(
        apps.map(async (app) => (await getWithCookie(`${app.direct}/auth/session`, cookie)).status),
      );

    let first: SignIn;
    let second: SignIn;

    it('signs in with login, callback and the next page on three different instances', async () => {
      const before = proxy.log.length;
      first = await signIn(gitlab, proxy.origin, { user: 'alice', returnTo: '/me' });
      const steps = proxy.log.slice(before);
      expect(steps.map((s) => `${s.method} ${s.path} ${s.status}`)).toEqual([
        'GET /auth/login 302',
        'GET /auth/callback 303',
        'GET /me 200',
      ]);
      const [login, callback, me] = steps.map((s) => s.target);
      // The transaction cookie written by one instance is opened by another; the session written
      // there is read by a third.
      expect(login).not.toBe(callback);
      expect(new Set([login, callback, me]).size).toBe(INSTANCES);
      expect(JSON.parse(first.landed.body)).toMatchObject({ username: 'alice' });
    });

    it('knows the session on every instance, asked directly', async () => {
      expect(first, 'the sign-in test must pass first').toBeDefined();
      for (const app of apps) {
        const res = await getWithCookie(`${app.direct}/auth/session`, first.cookie);
        expect(res.status, app.direct).toBe(200);
        expect(JSON.parse(res.body).user).toMatchObject({ username: 'alice', emailVerified: true });
      }
      // And through the proxy, which spreads these over every instance.
      for (let i = 0; i < INSTANCES; i++) {
        expect((await first.browser.get(`${proxy.origin}/auth/session`)).status).toBe(200);
      }
    });

    it('lists the user’s sessions made on different instances, the same on every instance', async () => {
      expect(first, 'the sign-in test must pass first').toBeDefined();
      second = await signIn(gitlab, proxy.origin, { user: 'alice', returnTo: '/me' });
      const idOf = async (s: SignIn) =>
        JSON.parse((await getWithCookie(`${proxy.origin}/auth/session`, s.cookie)).body).session.id as string;
      const ids = [await idOf(first), await idOf(second)];
      expect(ids[0]).not.toBe(ids[1]);
      for (const app of apps) {
        const res = await getWithCookie(`${app.direct}/auth/sessions`, first.cookie);
        expect(res.status, app.direct).toBe(200);
        const listed = (JSON.parse(res.body) as { sessions: { id: string; current: boolean }[] }).sessions;
        expect(listed.map((s) => s.id).sort(), app.direct).toEqual([...ids].sort());
        expect(listed.find((s) => s.current)?.id, app.direct).toBe(ids[0]);
      }
    });

    it('signs out on every instance: at once where handled, within the cache bound elsewhere', async () => {
      expect(second, 'the previous tests must pass first').toBeDefined();
      const cookie = first.cookie;
      // Every instance has just verified (and so cached) the session.
      expect(await statusEverywhere(cookie)).toEqual(apps.map(() => 200));
      const revocations = gitlab.control.requests({ path: '/oauth/revoke' }).length;

      const at = proxy.log.length;
      const out = await first.browser.request(`${proxy.origin}/auth/logout`, {
        method: 'POST',
        body: new URLSearchParams(),
        headers: { origin: proxy.origin },
      });
      const signedOutAt = Date.now();
      expect(out.status).toBe(303);
      expect(out.headers.getSetCookie().some((c) => c.startsWith('labgate=;'))).toBe(true);
      const handler = proxy.log[at]!;
      expect(handler).toMatchObject({ method: 'POST', path: '/auth/logout', status: 303 });

      // The instance that handled it forgot the session at once: the very next request is refused.
      expect((await getWithCookie(`${apps[handler.target]!.direct}/auth/session`, cookie)).status).toBe(401);

      // The others may serve it from their cache, but not for longer than the documented bound.
      const lag = await Promise.all(
        apps.map((app, i) =>
          i === handler.target
            ? 0
            : waitFor(
                `the signed-out session to be refused by ${app.direct}`,
                async () => (await getWithCookie(`${app.direct}/auth/session`, cookie)).status === 401,
                REVOCATION_DEADLINE_MS - (Date.now() - signedOutAt),
              ).then(() => Date.now() - signedOutAt),
        ),
      );
      console.info(`[multi/${name}] sign-out seen by the other instances after ${lag.join(' / ')} ms`);
      expect(await statusEverywhere(cookie)).toEqual(apps.map(() => 401));
      expect(gitlab.control.requests({ path: '/oauth/revoke' }).length).toBe(revocations + 1);

      // Only that session ended: the user's other one still works everywhere and is the only one listed.
      expect(await statusEverywhere(second.cookie)).toEqual(apps.map(() => 200));
      for (const app of apps) {
        const res = await getWithCookie(`${app.direct}/auth/sessions`, second.cookie);
        expect(JSON.parse(res.body).sessions, app.direct).toHaveLength(1);
      }
      for (const app of apps) expect(app.alive(), app.direct).toBe(true);
    }, 30_000);
  });
});
