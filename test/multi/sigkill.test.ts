/**
 * A crash under sign-in traffic loses no session that was handed out. The reference app runs on a
 * SQLite file; scripted browsers sign in concurrently; the process is SIGKILLed in the middle of the
 * traffic (once some callbacks have answered). Every session whose callback (303 + Set-Cookie) was
 * fully received must work on a new process started on the same file: labgate answers the callback
 * only after the session is committed.
 *
 * That the kill interrupts something is made certain, not left to timing: one sign-in (the sentinel)
 * has sent all of its callback request but the end of its headers when the kill lands, so the process
 * cannot have answered it; that request must be cut, with no answer at all.
 */
import { createConnection } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningEmulator, startEmulator } from '../../src/emulator/index.js';
import { Browser, type Page } from '../emulator/browser.js';
import { createTempDir, type TempDir } from '../support/services.js';
import {
  type AppProcess,
  appEnv,
  authorizeAtGitLab,
  getWithCookie,
  newSecret,
  sessionCookieOf,
  startApp,
  stopEverything,
} from './harness.js';

/** Sign-ins in the run. */
const SIGN_INS = 30;
/** Sign-ins in flight at once. */
const CONCURRENCY = 6;
/** The process is killed once this many callbacks have answered. */
const KILL_AFTER_CALLBACKS = 10;
/** Users of the demo fixtures who sign in with a password alone. */
const USERS = ['alice', 'bob', 'erin', 'grace', 'root'];

let gitlab: RunningEmulator;
let dir: TempDir;
beforeAll(async () => {
  gitlab = await startEmulator();
  dir = await createTempDir('labgate-sigkill-');
});
afterAll(async () => {
  await stopEverything();
  await gitlab?.close();
  await dir?.remove();
});

interface Outcome {
  user: string;
  /** `labgate=…` when the callback answered 303 with a session cookie. */
  cookie: string | null;
  /** Whether the callback answer was fully received before the SIGKILL was sent. */
  beforeKill: boolean;
  /** Whether this sign-in had started and not finished when the process was killed. */
  inFlightAtKill: boolean;
  /** What stopped it, if it failed. */
  error: string | null;
}

/**
 * Sends a callback request over a raw socket, all but the blank line that ends its headers, so the
 * server holds it open and cannot answer yet. Resolves once written; `closed` resolves with whatever
 * came back when the connection ends.
 */
async function halfSentCallback(
  port: number,
  callbackUrl: string,
  cookie: string,
): Promise<{ closed: Promise<string> }> {
  const { pathname, search } = new URL(callbackUrl);
  const socket = createConnection({ host: '127.0.0.1', port });
  let received = '';
  socket.setEncoding('utf8').on('data', (chunk: string) => {
    received += chunk;
  });
  socket.on('error', () => undefined);
  const closed = new Promise<string>((resolve) => socket.once('close', () => resolve(received)));
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve).once('error', reject);
  });
  const head = `GET ${pathname}${search} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nCookie: ${cookie}\r\n`;
  await new Promise<void>((resolve, reject) =>
    socket.write(head, (error) => (error ? reject(error) : resolve())),
  );
  return { closed };
}

describe('SIGKILL under sign-in traffic (SQLite)', () => {
  it('keeps every session whose callback answered before the kill', async () => {
    const store = `sqlite:${dir.path}/labgate.db`;
    const secret = newSecret();
    const first: AppProcess = await startApp(appEnv(gitlab, { store, secret }));
    const origin = first.direct;

    let killed = false;
    let killSent = 0;
    let callbacksAnswered = 0;
    /** Requests to the app sent and not yet answered, by path. */
    const open = new Map<string, number>();
    let openAtKill = '';
    const running = new Set<Outcome>();
    const inFlightAtKill = new Set<Outcome>();

    // The sentinel: a sign-in through GitLab whose callback request is left half-sent.
    const sentinelBrowser = new Browser();
    const sentinelLogin = await sentinelBrowser.get(`${origin}/auth/login?returnTo=%2Fme`);
    const sentinelBack = await authorizeAtGitLab(gitlab, sentinelBrowser, sentinelLogin.location!, 'alice');
    const sentinel = await halfSentCallback(
      first.port,
      sentinelBack,
      sentinelBrowser.jar.header(sentinelBack),
    );

    const maybeKill = () => {
      if (killed || callbacksAnswered < KILL_AFTER_CALLBACKS) return;
      killed = true;
      killSent = Date.now();
      openAtKill = [...open]
        .filter(([, n]) => n > 0)
        .map(([path, n]) => `${path}×${n}`)
        .join(', ');
      for (const outcome of running) inFlightAtKill.add(outcome);
      first.child.kill('SIGKILL');
    };

    /** `fetch` for the scripted browsers: counts the requests open to the app, and may kill it. */
    const tracked: typeof fetch = async (input, init) => {
      const url = String(input instanceof Request ? input.url : input);
      if (!url.startsWith(`${origin}/`)) return fetch(input, init);
      const path = new URL(url).pathname;
      open.set(path, (open.get(path) ?? 0) + 1);
      maybeKill();
      try {
        const res = await fetch(input, init);
        // The body is part of the answer: read it before the request counts as answered.
        const body = await res.arrayBuffer();
        return new Response(res.status === 204 || res.status === 304 ? null : body, {
          status: res.status,
          statusText: res.statusText,
          headers: res.headers,
        });
      } finally {
        open.set(path, open.get(path)! - 1);
      }
    };

    const signInOnce = async (user: string): Promise<Outcome> => {
      const outcome: Outcome = { user, cookie: null, beforeKill: false, inFlightAtKill: false, error: null };
      running.add(outcome);
      try {
        const browser = new Browser({ fetch: tracked });
        const login: Page = await browser.get(`${origin}/auth/login?returnTo=%2Fme`);
        if (login.status !== 302 || !login.location) throw new Error(`login answered ${login.status}`);
        const back = await authorizeAtGitLab(gitlab, browser, login.location, user);
        const callback = await browser.get(back);
        outcome.beforeKill = !killed;
        if (callback.status !== 303) throw new Error(`callback answered ${callback.status}`);
        outcome.cookie = sessionCookieOf(callback);
        if (!outcome.cookie) throw new Error('callback set no session cookie');
        callbacksAnswered++;
        maybeKill();
      } catch (error) {
        outcome.error =
          error instanceof Error ? `${error.message} ${String(error.cause ?? '')}` : String(error);
      } finally {
        running.delete(outcome);
        outcome.inFlightAtKill = inFlightAtKill.has(outcome);
      }
      return outcome;
    };

    // A pool of CONCURRENCY workers over SIGN_INS sign-ins: steady concurrent traffic, so the kill
    // lands while some sign-ins are half-way (at GitLab, in the callback, or loading the session).
    const outcomes: Outcome[] = [];
    let next = 0;
    const started = Date.now();
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < SIGN_INS) {
          const i = next++;
          outcomes.push(await signInOnce(USERS[i % USERS.length]!));
        }
      }),
    );
    const trafficMs = Date.now() - started;
    const exit = await first.exited;
    const kept = outcomes.filter((o) => o.cookie !== null);
    const keptBeforeKill = kept.filter((o) => o.beforeKill);
    const failed = outcomes.filter((o) => o.error !== null);
    const interrupted = failed.filter((o) => o.inFlightAtKill);
    const summary =
      `${SIGN_INS} sign-ins, ${CONCURRENCY} at a time, ${trafficMs} ms; SIGKILL after ${KILL_AFTER_CALLBACKS}+ callbacks ` +
      `(${killSent - started} ms in, open: ${openAtKill || 'nothing'}); ${keptBeforeKill.length} sessions answered ` +
      `before the kill (${kept.length - keptBeforeKill.length} after), ${failed.length} sign-ins failed, ` +
      `${interrupted.length} of them half-way at the kill, plus the half-sent sentinel callback, cut`;
    console.info(`[multi/sigkill] ${summary}`);
    const errors = `${summary}\n${failed.map((o) => `  ${o.user}: ${o.error}`).join('\n')}`;
    expect(killed, `the kill condition was never reached: ${errors}`).toBe(true);
    expect(exit.signal).toBe('SIGKILL');
    expect(keptBeforeKill.length, errors).toBeGreaterThanOrEqual(KILL_AFTER_CALLBACKS);
    // The kill really cut a sign-in half-way: the sentinel's callback got no answer at all.
    expect(await sentinel.closed, 'the half-sent callback was answered').toBe('');
    // And the traffic after it failed: every sign-in either got its session or failed.
    expect(failed.length, errors).toBeGreaterThanOrEqual(1);
    expect(kept.length + failed.length).toBe(SIGN_INS);

    // --- a new process on the same file
    const restartedAt = Date.now();
    const second = await startApp(appEnv(gitlab, { store, secret }));
    const restartMs = Date.now() - restartedAt;
    const statuses = await Promise.all(
      kept.map(async (o) => {
        const res = await getWithCookie(`${second.direct}/auth/session`, o.cookie);
        return {
          user: o.user,
          status: res.status,
          username: res.status === 200 ? JSON.parse(res.body).user.username : null,
        };
      }),
    );
    expect(statuses, `${summary}\n${second.output()}`).toEqual(
      kept.map((o) => ({ user: o.user, status: 200, username: o.user })),
    );
    // The file is whole: the new process takes new sign-ins.
    const browser = new Browser();
    const login = await browser.get(`${second.direct}/auth/login?returnTo=%2Fme`);
    const callback = await browser.get(await authorizeAtGitLab(gitlab, browser, login.location!, 'alice'));
    expect(callback.status).toBe(303);
    expect(second.alive()).toBe(true);
    console.info(
      `[multi/sigkill] restart ${restartMs} ms; all ${kept.length} sessions valid on the new process`,
    );
  }, 60_000);
});
