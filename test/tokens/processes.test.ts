/**
 * The token refresh across OS processes: three app processes (`fixtures/server.mjs`, on the built
 * package) share one store and one `LABGATE_SECRET`. One sign-in, then every clock (the emulator's
 * and each process's) moves past the access token's end, and 200 requests hit each process at once.
 * GitLab must see exactly ONE `refresh_token` grant and no refused one, whatever the store (SQLite
 * file, PostgreSQL, Redis), and with the older GitLab's rotation (`on-first-use`) too: the lock in
 * the store lets one process refresh, and the others re-read the rotated pair.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type RunningEmulator, startEmulator } from '../../src/emulator/index.js';
import { APP, testSecret } from '../core/harness.js';
import { Browser, passwordOf } from '../emulator/browser.js';
import {
  createPgSchema,
  createRedisPrefix,
  createTempDir,
  describeWithService,
  pgUrl,
  postgres,
  redis,
  redisUrl,
  type Service,
} from '../support/services.js';
import { refreshGrants, tokenErrors } from './support.js';

const SERVER = fileURLToPath(new URL('./fixtures/server.mjs', import.meta.url));
const BUILT = fileURLToPath(new URL('../../dist/core/index.js', import.meta.url));
const PROCESSES = 3;
const REQUESTS = 200;

interface AppProcess {
  child: ChildProcess;
  url: string;
  output(): string;
  advance(seconds: number): Promise<void>;
  stop(): Promise<void>;
}

function exited(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
}

/** Forks one app process and waits (at most 15 s) until it listens. */
async function startApp(env: Record<string, string>): Promise<AppProcess> {
  const child = fork(SERVER, [], {
    env: { ...process.env, ...env },
    execArgv: [],
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  let output = '';
  child.stdout!.on('data', (chunk) => (output += chunk));
  child.stderr!.on('data', (chunk) => (output += chunk));
  let nextId = 0;
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`app process not ready in 15 s:\n${output}`));
    }, 15_000);
    child.on('message', (message: { ready?: number }) => {
      if (message.ready) {
        clearTimeout(timer);
        resolve(message.ready);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`app process exited (${code}) before it listened:\n${output}`));
    });
  });
  return {
    child,
    url: `http://127.0.0.1:${port}`,
    output: () => output,
    advance: (seconds) =>
      new Promise((resolve, reject) => {
        const id = ++nextId;
        const timer = setTimeout(() => reject(new Error('no answer to a clock move in 5 s')), 5000);
        const listen = (message: { advanced?: number }) => {
          if (message.advanced !== id) return;
          clearTimeout(timer);
          child.off('message', listen);
          resolve();
        };
        child.on('message', listen);
        child.send({ advance: seconds, id });
      }),
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const done = exited(child);
      child.send('stop');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await done;
      clearTimeout(timer);
    },
  };
}

/** Signs alice in through GitLab's pages, talking to `app` as if it were at APP; returns the cookie. */
async function signInThrough(gitlab: RunningEmulator, app: AppProcess): Promise<string> {
  const browser = new Browser({
    fetch: (input, init) => {
      const url = String(input);
      return fetch(url.startsWith(APP) ? app.url + url.slice(APP.length) : url, init);
    },
  });
  const login = await browser.get(`${APP}/auth/login`);
  expect(login.status, login.body).toBe(302);
  const callbackUrl = await browser.approveToClient({
    url: gitlab.url,
    authorizeUrl: login.location!,
    login: 'alice',
    password: passwordOf(gitlab, 'alice'),
  });
  const callback = await browser.get(callbackUrl);
  expect(callback.status, `${callback.body}\n${app.output()}`).toBe(303);
  const cookie = callback.headers
    .getSetCookie()
    .find((c) => c.startsWith('labgate=') && !c.startsWith('labgate=;'));
  expect(cookie).toBeDefined();
  return cookie!.split(';')[0]!;
}

async function getToken(
  app: AppProcess,
  cookie: string,
): Promise<{ status: number; token?: string; error?: string }> {
  const response = await fetch(`${app.url}/token`, {
    headers: { cookie },
    signal: AbortSignal.timeout(30_000),
  });
  return { status: response.status, ...((await response.json()) as { token?: string; error?: string }) };
}

interface StoreCase {
  name: string;
  service: (() => Promise<Service>) | null;
  rotation: 'immediate' | 'on-first-use';
  /** Makes a fresh, isolated store; returns its `STORE` URL and its cleanup. */
  open(): Promise<{ url: string; cleanup(): Promise<void> }>;
}

const sqlite = async () => {
  const dir = await createTempDir('labgate-tokens-');
  return { url: `sqlite:${join(dir.path, 'labgate.db')}`, cleanup: () => dir.remove() };
};

const cases: StoreCase[] = [
  { name: 'SQLite (a file)', service: null, rotation: 'immediate', open: sqlite },
  {
    name: 'PostgreSQL',
    service: postgres,
    rotation: 'immediate',
    async open() {
      const schema = await createPgSchema();
      // `search_path` through the connection string, as an operator would set it.
      const url = `${pgUrl().split('?')[0]}?options=-c%20search_path%3D${schema.schema}`;
      return { url, cleanup: () => schema.drop() };
    },
  },
  {
    name: 'Redis',
    service: redis,
    rotation: 'immediate',
    async open() {
      const prefix = createRedisPrefix();
      return {
        url: `${redisUrl}?prefix=${encodeURIComponent(prefix.prefix)}`,
        cleanup: () => prefix.clean(),
      };
    },
  },
  { name: 'SQLite (a file), on-first-use rotation', service: null, rotation: 'on-first-use', open: sqlite },
];

// Probed before the suites are declared, so a missing service shows as a skip (or, in CI, a failure).
const services = new Map<StoreCase['service'], Service>();
for (const c of cases) if (c.service && !services.has(c.service)) services.set(c.service, await c.service());

let gitlab: RunningEmulator;
beforeAll(async () => {
  if (!existsSync(BUILT)) throw new Error(`${BUILT} is missing: run \`npm run build\` first`);
  gitlab = await startEmulator();
});
afterAll(() => gitlab?.close());
beforeEach(() => gitlab.control.reset());

describe.each(cases.map((c) => [c.name, c] as const))('%s', (_name, storeCase) => {
  const body = () => {
    const apps: AppProcess[] = [];
    let cleanup: (() => Promise<void>) | undefined;

    afterAll(async () => {
      await Promise.allSettled(apps.map((app) => app.stop()));
      await cleanup?.();
    });

    it(`${PROCESSES} processes × ${REQUESTS} concurrent requests on an expired token: one refresh, one token`, async () => {
      gitlab.control.setBehaviour({ refreshTokenRotation: storeCase.rotation });
      const store = await storeCase.open();
      cleanup = store.cleanup;
      const app = gitlab.applications[0]!;
      const env = {
        GITLAB_URL: gitlab.url,
        GITLAB_CLIENT_ID: app.uid,
        GITLAB_CLIENT_SECRET: app.secret,
        LABGATE_URL: APP,
        LABGATE_SECRET: testSecret(),
        STORE: store.url,
      };
      // The first opens (and migrates) the store; the others then start together.
      // Each is registered as soon as it runs, so afterAll stops it whatever fails later.
      apps.push(await startApp(env));
      await Promise.all(
        Array.from({ length: PROCESSES - 1 }, async () => {
          apps.push(await startApp(env));
        }),
      );
      const logs = () => apps.map((a, i) => `--- process ${i}\n${a.output()}`).join('\n');

      const cookie = await signInThrough(gitlab, apps[0]!);
      // The session (store + shared secret) works on every process; the fresh token costs no refresh.
      const before = await Promise.all(apps.map((a) => getToken(a, cookie)));
      expect(
        before.map((r) => r.status),
        logs(),
      ).toEqual(Array(PROCESSES).fill(200));
      expect(new Set(before.map((r) => r.token)).size).toBe(1);
      expect(refreshGrants(gitlab)).toBe(0);

      gitlab.control.advanceClock(7201);
      await Promise.all(apps.map((a) => a.advance(7201)));

      const answers = await Promise.all(
        apps.flatMap((a) => Array.from({ length: REQUESTS }, () => getToken(a, cookie))),
      );
      const failures = answers.filter((r) => r.status !== 200);
      expect(failures.slice(0, 5), logs()).toEqual([]);
      const tokens = new Set(answers.map((r) => r.token));
      expect(tokens.size, logs()).toBe(1);
      expect(tokens.has(before[0]!.token)).toBe(false);
      expect(refreshGrants(gitlab), logs()).toBe(1);
      expect(tokenErrors(gitlab), logs()).toBe(0);

      // Every process ends with the same (working) token, and nobody refreshes again.
      const after = await Promise.all(apps.map((a) => getToken(a, cookie)));
      expect(after.map((r) => r.token)).toEqual(Array(PROCESSES).fill([...tokens][0]));
      expect(refreshGrants(gitlab)).toBe(1);
      const info = await fetch(`${gitlab.url}/oauth/token/info`, {
        headers: { authorization: `Bearer ${[...tokens][0]}` },
      });
      expect(info.status).toBe(200);
    }, 90_000);
  };
  const service = storeCase.service && services.get(storeCase.service);
  if (service) describeWithService(service, `needs ${service.name}`, body);
  else body();
});
