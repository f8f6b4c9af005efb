/**
 * The store goes away under a running app, and comes back. The reference app runs as its own process
 * on Redis (and on PostgreSQL), reached through a TCP proxy owned by this test, so the test can cut the
 * connection without touching the shared services. While the store is cut, a request with a session
 * cookie is answered 503 with labgate's "Sign-in is temporarily unavailable" page (once the ≤ 5 s
 * session cache has run out), the process keeps answering, and its log has one line per failure with
 * neither a stack trace nor a secret. Once the store is back the same cookie works again, without
 * restarting anything.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningEmulator, startEmulator } from '../../src/emulator/index.js';
import {
  createPgSchema,
  createRedisPrefix,
  describeWithService,
  pgBase,
  postgres,
  redis,
  redisUrl,
  type Service,
} from '../support/services.js';
import {
  type AppProcess,
  appEnv,
  freePort,
  getWithCookie,
  launchApp,
  newSecret,
  passwordOf,
  signIn,
  startApp,
  startTcpProxy,
  stopEverything,
  type TcpProxy,
  waitFor,
} from './harness.js';

/** The session cache bound (5 s) plus margin. */
const OUTAGE_DEADLINE_MS = 7_000;
/** Reconnecting: ioredis backs off up to 2 s, pg opens a new connection per query. */
const RECOVERY_DEADLINE_MS = 15_000;
/** An app that cannot open its store must give up quickly (connect timeouts are 3 s). */
const STARTUP_EXIT_DEADLINE_MS = 8_000;

interface Backend {
  name: string;
  service: Service;
  target: { host: string; port: number };
  /** Creates an isolated place in the store; returns the store URL through the proxy and its cleanup. */
  open(proxyPort: number): Promise<{ url: string; cleanup(): Promise<void> }>;
}

const [rd, pg] = await Promise.all([redis(), postgres()]);
const redisTarget = new URL(redisUrl);

const BACKENDS: Backend[] = [
  {
    name: 'Redis',
    service: rd,
    target: { host: redisTarget.hostname, port: Number(redisTarget.port || 6379) },
    async open(proxyPort) {
      const keys = createRedisPrefix();
      const url = new URL(redisUrl);
      url.hostname = '127.0.0.1';
      url.port = String(proxyPort);
      url.searchParams.set('prefix', keys.prefix);
      return { url: url.href, cleanup: () => keys.clean() };
    },
  },
  {
    name: 'PostgreSQL',
    service: pg,
    target: { host: String(pgBase.host), port: Number(pgBase.port) },
    async open(proxyPort) {
      const schema = await createPgSchema();
      const url = new URL(
        `postgres://${encodeURIComponent(String(pgBase.user))}@127.0.0.1/${pgBase.database}`,
      );
      url.port = String(proxyPort);
      url.searchParams.set('options', `-c search_path=${schema.schema}`);
      return { url: url.href, cleanup: () => schema.drop() };
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

/** A stack frame as V8 prints it. */
const STACK_FRAME = /^\s+at .+(:\d+:\d+\)?|\(native\)|<anonymous>\)?)$/m;

describe.each(BACKENDS)('the store ($name) fails under a running app', (backend) => {
  describeWithService(backend.service, `an app process on ${backend.name} through a TCP proxy`, () => {
    let proxy: TcpProxy;
    let store: { url: string; cleanup(): Promise<void> } | undefined;
    let app: AppProcess;
    const secret = newSecret();

    beforeAll(async () => {
      proxy = await startTcpProxy(backend.target);
      store = await backend.open(proxy.port);
      app = await startApp(appEnv(gitlab, { store: store.url, secret }));
    }, 30_000);

    afterAll(async () => {
      await app?.kill();
      await proxy?.close();
      await store?.cleanup();
    });

    it('answers 503 while the store is cut, stays up, logs safely, and recovers without a restart', async () => {
      const { cookie } = await signIn(gitlab, app.direct, { user: 'alice' });
      const session = await getWithCookie(`${app.direct}/auth/session`, cookie);
      expect(session.status).toBe(200);
      const sessionId = JSON.parse(session.body).session.id as string;
      expect((await getWithCookie(`${app.direct}/me`, cookie)).status).toBe(200);
      const pid = app.pid;
      const logBefore = app.output().length;

      // --- the store goes away
      await proxy.cut();
      const cutAt = Date.now();
      let page = { status: 0, body: '', headers: new Headers() };
      await waitFor(
        'a 503 for the session cookie',
        async () => {
          page = await getWithCookie(`${app.direct}/auth/session`, cookie, 'text/html');
          return page.status === 503;
        },
        OUTAGE_DEADLINE_MS,
      );
      const outageSeenAfter = Date.now() - cutAt;
      expect(page.body).toContain('Sign-in is temporarily unavailable');
      expect(page.body).toContain('store_unavailable');
      expect(page.headers.get('content-type')).toMatch(/^text\/html/);
      expect(page.headers.get('cache-control')).toBe('no-store');

      // An app route (the session is looked up by the middleware) answers the same page, and APIs JSON.
      const appRoute = await getWithCookie(`${app.direct}/me`, cookie, 'text/html');
      expect(appRoute.status).toBe(503);
      expect(appRoute.body).toContain('Sign-in is temporarily unavailable');
      const api = await getWithCookie(`${app.direct}/auth/session`, cookie);
      expect(api.status).toBe(503);
      expect(JSON.parse(api.body)).toMatchObject({ error: 'store_unavailable' });

      // The process is alive and still answers what needs no store.
      expect(app.alive()).toBe(true);
      expect((await getWithCookie(`${app.direct}/`, null, 'text/html')).status).toBe(200);
      const login = await getWithCookie(`${app.direct}/auth/login`, null, 'text/html');
      expect(login.status).toBe(302);

      // Its log says what failed, in one line, with no stack trace and no secret.
      await waitFor(
        'the failure in the log',
        () => app.output().slice(logBefore).includes('store_unavailable'),
        3_000,
      );
      const outageLog = app.output().slice(logBefore);
      expect(outageLog).toMatch(/labgate: \/auth\/session failed: store_unavailable: .*\(reference [\w-]+\)/);
      expect(outageLog).not.toMatch(STACK_FRAME);

      // --- the store comes back
      await proxy.restore();
      const restoredAt = Date.now();
      let back = { status: 0, body: '', headers: new Headers() };
      await waitFor(
        'the same cookie to work again',
        async () => {
          back = await getWithCookie(`${app.direct}/auth/session`, cookie);
          return back.status === 200;
        },
        RECOVERY_DEADLINE_MS,
        100,
      );
      const recoveredAfter = Date.now() - restoredAt;
      expect(JSON.parse(back.body)).toMatchObject({
        user: { username: 'alice' },
        session: { id: sessionId },
      });
      expect((await getWithCookie(`${app.direct}/me`, cookie)).status).toBe(200);
      // And a new sign-in works too (it writes to the store).
      expect((await signIn(gitlab, app.direct, { user: 'bob' })).landed.status).toBe(200);
      expect(app.alive()).toBe(true);
      expect(app.pid).toBe(pid);

      // Nothing the process ever printed holds a secret or token.
      const log = app.output();
      const application = gitlab.applications[0]!;
      const [, cookieValue = ''] = cookie.split('=');
      const [, sessionSecret = ''] = cookieValue.split('.');
      for (const [what, value] of Object.entries({
        LABGATE_SECRET: secret,
        GITLAB_CLIENT_SECRET: application.secret,
        'the session cookie': cookieValue,
        'the session secret': sessionSecret,
        'a password': passwordOf(gitlab, 'alice'),
      })) {
        expect(value.length, what).toBeGreaterThan(8);
        expect(log.includes(value), `the log holds ${what}`).toBe(false);
      }
      // GitLab's tokens and codes are 64 hex digits (the client id is the one such value that is public).
      const hex = (log.match(/\b[0-9a-f]{64}\b/g) ?? []).filter((h) => h !== application.uid);
      expect(hex, 'tokens or codes in the log').toEqual([]);
      expect(log, 'a JWT in the log').not.toMatch(/eyJ[\w-]{10,}\.[\w-]{10,}/);
      expect(log).not.toMatch(STACK_FRAME);
      console.info(
        `[multi/failure/${backend.name}] 503 after ${outageSeenAfter} ms of outage; 200 again ${recoveredAfter} ms after restore\n` +
          outageLog
            .split('\n')
            .filter((l) => l.includes('store_unavailable'))
            .slice(0, 2)
            .map((l) => `  log: ${l}`)
            .join('\n'),
      );
    }, 60_000);
  });
});

/**
 * The store is unreachable when the app starts (a port nobody listens on): the process must say so in
 * one line and exit non-zero, so that a supervisor restarts it, instead of lingering without listening.
 */
describe('the store is down when the app starts', () => {
  const exitsAtOnce = async (store: (port: number) => string) => {
    const app = launchApp(
      appEnv(gitlab, { store: store(await freePort()), secret: newSecret() }),
      await freePort(),
    );
    const ended = await Promise.race([
      app.exited,
      new Promise<null>((resolve) => setTimeout(() => resolve(null), STARTUP_EXIT_DEADLINE_MS)),
    ]);
    const output = app.output();
    await app.kill();
    expect(
      ended,
      `still running after ${STARTUP_EXIT_DEADLINE_MS} ms; it printed:\n${output}`,
    ).not.toBeNull();
    expect(ended!.code).toBe(1);
    expect(output).toMatch(/^labgate example: .+$/m);
    expect(output).not.toContain('listening at');
    expect(output).not.toMatch(STACK_FRAME);
  };

  it('PostgreSQL: the process exits with a one-line error', async () => {
    await exitsAtOnce((port) => `postgres://postgres@127.0.0.1:${port}/test`);
  }, 20_000);

  // createRedisStore disconnects a client whose first connect failed, so the process can exit.
  it('Redis: the process exits with a one-line error', async () => {
    await exitsAtOnce((port) => `redis://127.0.0.1:${port}`);
  }, 20_000);
});
