/**
 * Real processes for the multi-instance and failure tests: the built reference app
 * (`build/examples/express/server.js`) spawned with an environment, a round-robin HTTP proxy in front
 * of several of them (no sticky sessions), a TCP proxy in front of a store that can be cut and
 * restored, and the scripted sign-in through the GitLab emulator.
 *
 * Every process and server started here is registered, and {@link stopEverything} (called from each
 * file's `afterAll`) kills the children by their own pid and closes the proxies.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { createServer as createHttpServer, request as httpRequest, type Server } from 'node:http';
import { type AddressInfo, createConnection, createServer as createNetServer, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import type { RunningEmulator } from '../../src/emulator/index.js';
import { Browser, type Page } from '../emulator/browser.js';

/** The built reference app; `npm run build` makes it (`npm test` builds first). */
export const SERVER_JS = fileURLToPath(new URL('../../build/examples/express/server.js', import.meta.url));

/** What every app process prints once it listens. */
const LISTENING = 'labgate example (Express) listening at ';

const cleanups = new Set<() => Promise<void>>();

/** Kills every child process and closes every proxy started by this module. */
export async function stopEverything(): Promise<void> {
  const all = [...cleanups];
  cleanups.clear();
  await Promise.allSettled(all.map((cleanup) => cleanup()));
}

/** A fresh `LABGATE_SECRET`: 32 random bytes, base64url. */
export function newSecret(): string {
  return randomBytes(32).toString('base64url');
}

/** A free TCP port on 127.0.0.1 (the OS picks it; it is released before returning). */
export async function freePort(): Promise<number> {
  const server = createNetServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Polls `check` every `intervalMs` until it returns true; throws after `timeoutMs`. Returns the elapsed ms. */
export async function waitFor(
  what: string,
  check: () => Promise<boolean> | boolean,
  timeoutMs: number,
  intervalMs = 50,
): Promise<number> {
  const started = Date.now();
  for (;;) {
    if (await check()) return Date.now() - started;
    if (Date.now() - started > timeoutMs)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

// ---------------------------------------------------------------------------------------------
// The app process

/** A running `node build/examples/express/server.js`. */
export interface AppProcess {
  child: ChildProcess;
  pid: number;
  port: number;
  /** `http://127.0.0.1:PORT`: the process itself (not necessarily its `LABGATE_URL`). */
  direct: string;
  /** Everything it wrote, stdout and stderr interleaved in arrival order. */
  output(): string;
  /** True until the process exits. */
  alive(): boolean;
  /** Resolves with how the process ended. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Sends a signal (default SIGKILL) to this process and waits for it to end. */
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** The environment of an app signed in through `gitlab`'s first (confidential) application. */
export function appEnv(
  gitlab: RunningEmulator,
  settings: { store: string; secret: string; url?: string },
): Record<string, string> {
  const app = gitlab.applications[0]!;
  return {
    GITLAB_URL: gitlab.url,
    GITLAB_CLIENT_ID: app.uid,
    GITLAB_CLIENT_SECRET: app.secret,
    LABGATE_SECRET: settings.secret,
    LABGATE_STORE: settings.store,
    ...(settings.url ? { LABGATE_URL: settings.url } : {}),
  };
}

/**
 * Spawns the reference app on `port` without waiting for anything. `LABGATE_URL` defaults to the
 * process's own origin; nothing of the test runner's environment (LABGATE_*, CI…) leaks into it.
 */
export function launchApp(env: Record<string, string>, port: number): AppProcess {
  if (!existsSync(SERVER_JS)) throw new Error(`${SERVER_JS} is missing: run \`npm run build\` first`);
  const direct = `http://127.0.0.1:${port}`;
  // A plain record: some frameworks' types (Next.js) make NODE_ENV required in ProcessEnv.
  const childEnv: Record<string, string> = {
    PATH: process.env['PATH'] ?? '/usr/bin:/bin',
    HOME: process.env['HOME'] ?? '/tmp',
    LABGATE_URL: direct,
    ...env,
    PORT: String(port),
    HOST: '127.0.0.1',
  };
  const child = spawn(process.execPath, [SERVER_JS], {
    env: childEnv as NodeJS.ProcessEnv,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    output += chunk;
  });
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    output += chunk;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  child.once('error', () => undefined);
  const alive = () => child.exitCode === null && child.signalCode === null;
  const kill = async (signal: NodeJS.Signals = 'SIGKILL') => {
    if (alive()) child.kill(signal);
    await exited;
  };
  cleanups.add(() => kill('SIGKILL'));
  return { child, pid: child.pid!, port, direct, output: () => output, alive, exited, kill };
}

async function spawnApp(env: Record<string, string>, port: number, timeoutMs: number): Promise<AppProcess> {
  const app = launchApp(env, port);
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`the app did not listen within ${timeoutMs} ms:\n${app.output()}`)),
        timeoutMs,
      );
      const onData = () => {
        if (app.output().includes(LISTENING)) {
          clearTimeout(timer);
          resolve();
        }
      };
      app.child.stdout!.on('data', onData);
      app.child.once('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
      void app.exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`the app exited (${signal ?? code}) before listening:\n${app.output()}`));
      });
    });
  } catch (error) {
    await app.kill('SIGKILL');
    throw error;
  }
  return app;
}

/**
 * Starts the reference app on a free 127.0.0.1 port and resolves once it prints that it listens.
 * `LABGATE_URL` defaults to the process's own origin. A port taken meanwhile is retried on another.
 */
export async function startApp(env: Record<string, string>, timeoutMs = 20_000): Promise<AppProcess> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await spawnApp(env, await freePort(), timeoutMs);
    } catch (error) {
      if (attempt >= 3 || !String(error).includes('EADDRINUSE')) throw error;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// A round-robin HTTP proxy

/** One request the proxy forwarded. */
export interface Forwarded {
  method: string;
  /** The path without the query. */
  path: string;
  /** Index of the target it went to. */
  target: number;
  status: number;
}

/** A load balancer without sticky sessions: request n goes to target n mod count. */
export interface RoundRobinProxy {
  origin: string;
  /** Requests forwarded, in order (status once answered, 0 before). */
  log: Forwarded[];
  /** Requests per target. */
  counts(): number[];
  /** Sets the ports of the targets. */
  setTargets(ports: number[]): void;
  close(): Promise<void>;
}

/** Starts the proxy on a free 127.0.0.1 port; call `setTargets` before sending requests. */
export async function startRoundRobinProxy(): Promise<RoundRobinProxy> {
  let targets: number[] = [];
  let next = 0;
  const log: Forwarded[] = [];
  const server: Server = createHttpServer((req, res) => {
    if (targets.length === 0) {
      res.writeHead(503).end('no targets');
      return;
    }
    const target = next++ % targets.length;
    const entry: Forwarded = {
      method: req.method ?? 'GET',
      path: (req.url ?? '/').split('?', 1)[0]!,
      target,
      status: 0,
    };
    log.push(entry);
    const upstream = httpRequest(
      {
        host: '127.0.0.1',
        port: targets[target],
        method: req.method,
        path: req.url,
        headers: req.headers,
      },
      (answer) => {
        entry.status = answer.statusCode ?? 0;
        // The raw header list keeps every Set-Cookie as its own line.
        res.writeHead(answer.statusCode ?? 502, answer.rawHeaders);
        answer.pipe(res);
      },
    );
    upstream.on('error', () => {
      entry.status = 502;
      if (!res.headersSent) res.writeHead(502).end('upstream failed');
      else res.destroy();
    });
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const close = () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  cleanups.add(close);
  return {
    origin,
    log,
    counts: () => targets.map((_, i) => log.filter((e) => e.target === i).length),
    setTargets(ports) {
      targets = [...ports];
    },
    close,
  };
}

// ---------------------------------------------------------------------------------------------
// A TCP proxy in front of a store

/** A TCP pass-through to a service that the test can cut off and bring back. */
export interface TcpProxy {
  port: number;
  /** Connections open now. */
  open(): number;
  /** Stops accepting (new connections are refused) and destroys every open connection. */
  cut(): Promise<void>;
  /** Accepts connections again, on the same port. */
  restore(): Promise<void>;
  close(): Promise<void>;
}

/** Starts a TCP proxy on a free 127.0.0.1 port that pipes every connection to `host:port`. */
export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const sockets = new Set<Socket>();
  const server = createNetServer((client) => {
    const upstream = createConnection({ host: target.host, port: target.port });
    sockets.add(client);
    sockets.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    client.pipe(upstream).pipe(client);
  });
  const listen = (port: number) =>
    new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
  await listen(0);
  const port = (server.address() as AddressInfo).port;
  let listening = true;
  const cut = async () => {
    if (!listening) return;
    listening = false;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const socket of sockets) socket.destroy();
    sockets.clear();
    await closed;
  };
  const close = cut;
  cleanups.add(close);
  return {
    port,
    open: () => sockets.size / 2,
    cut,
    async restore() {
      if (listening) return;
      await listen(port);
      listening = true;
    },
    close,
  };
}

// ---------------------------------------------------------------------------------------------
// Signing in

/** The password the demo fixtures give a user. */
export function passwordOf(gitlab: RunningEmulator, username: string): string {
  const user = gitlab.users.find((u) => u.username === username);
  if (!user) throw new Error(`no user ${username} in the fixtures`);
  return user.password;
}

/**
 * Walks through GitLab from the redirect that `/auth/login` answered: signs in, approves the consent
 * page (or takes the auto-approval), and returns the callback URL GitLab sends the browser to.
 */
export async function authorizeAtGitLab(
  gitlab: RunningEmulator,
  browser: Browser,
  authorizeUrl: string,
  user: string,
): Promise<string> {
  return browser.approveToClient({
    url: gitlab.url,
    authorizeUrl,
    login: user,
    password: passwordOf(gitlab, user),
  });
}

/** The `labgate=…` pair (ready for a `Cookie` header) a response set, or null. */
export function sessionCookieOf(page: Page): string | null {
  const set = page.headers.getSetCookie().find((c) => c.startsWith('labgate=') && !c.startsWith('labgate=;'));
  return set ? set.split(';', 1)[0]! : null;
}

/** The pages of one sign-in through an app at `origin`. */
export interface SignIn {
  browser: Browser;
  login: Page;
  callback: Page;
  /** The `returnTo` page the callback redirected to. */
  landed: Page;
  /** `labgate=id.secret`. */
  cookie: string;
}

/** Signs a new scripted browser in at `origin` (`/auth/login?returnTo=…`), as a user clicking through. */
export async function signIn(
  gitlab: RunningEmulator,
  origin: string,
  options: { user?: string; returnTo?: string } = {},
): Promise<SignIn> {
  const browser = new Browser();
  const returnTo = options.returnTo ?? '/me';
  const login = await browser.get(`${origin}/auth/login?returnTo=${encodeURIComponent(returnTo)}`);
  if (login.status !== 302 || !login.location) throw new Error(`/auth/login answered ${login.status}`);
  const back = await authorizeAtGitLab(gitlab, browser, login.location, options.user ?? 'alice');
  if (!back.startsWith(`${origin}/auth/callback?`)) throw new Error(`GitLab sent the browser to ${back}`);
  const callback = await browser.get(back);
  const cookie = sessionCookieOf(callback);
  if (callback.status !== 303 || !cookie)
    throw new Error(`/auth/callback answered ${callback.status}: ${callback.body.slice(0, 500)}`);
  const landed = await browser.get(callback.location!);
  return { browser, login, callback, landed, cookie };
}

/** A GET with exactly this `Cookie` header (no jar), answering status, body and headers. */
export async function getWithCookie(
  url: string,
  cookie: string | null,
  accept = 'application/json',
): Promise<{ status: number; body: string; headers: Headers }> {
  const res = await fetch(url, {
    headers: { accept, ...(cookie ? { cookie } : {}) },
    redirect: 'manual',
    signal: AbortSignal.timeout(10_000),
  });
  return { status: res.status, body: await res.text(), headers: res.headers };
}
