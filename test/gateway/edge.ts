/**
 * The real edge servers of oauth2-proxy's documented configurations, nginx (`auth_request`) and Caddy
 * (`forward_auth`), run as child processes in front of the gateway's test stack (test/gateway/harness.ts):
 * each gets its own temporary folder for its configuration (test/gateway/configs/, addresses filled in),
 * pid file, temporary files and error log, listens on a loopback port chosen beforehand, is waited for
 * by polling HTTP requests until it answers, and is killed on close.
 *
 * The documented sign-in redirects build `rd` from `$scheme://$host` (nginx) and `{scheme}://{host}`
 * (Caddy): the request's host without its port, right only on the default port. On any other port the
 * `rd` names another origin, which the gateway refuses (docs/security.md, GATEWAY-10), and the user
 * lands elsewhere after signing in. So the edge is *published* at `http://127.0.0.1`, the default port,
 * as a port mapping publishes a server: {@link Edge.fetch} connects to the edge's real port and sends
 * `Host: 127.0.0.1`, and the gateway's `LABGATE_URL` is that published origin.
 *
 * A missing binary is a failure in CI (`CI=true`) and a skip elsewhere, as for the services of
 * test/support/services.ts.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { accessSync, closeSync, constants, openSync, readFileSync } from 'node:fs';
import { chmod, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { join } from 'node:path';
import { afterEach, expect, onTestFailed } from 'vitest';
import { Browser, decodeEntities, navigationFetch, type Page, passwordOf } from '../emulator/browser.js';
import { createTempDir, type Service } from '../support/services.js';
import { freePort, type GatewayStack, type StackOptions, startStack } from './harness.js';
import type { Echo } from './upstream.js';

/** The origin the edge servers are published at (see the module comment). */
export const PUBLISHED = 'http://127.0.0.1';

const CONFIGS = new URL('./configs/', import.meta.url);
const READY_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 5_000;

/** An edge server's binary: a {@link Service} for `describeWithService`, available when it is executable. */
function binary(name: string, path: string, install: string): Service {
  let reason = '';
  try {
    accessSync(path, constants.X_OK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    reason = code === 'ENOENT' ? 'not installed' : (code ?? String(error));
  }
  return { name, address: path, available: reason === '', reason, start: install };
}

/** Debian's nginx (`nginx-light`), with the auth_request module. */
export const nginxBinary = binary('nginx', '/usr/sbin/nginx', 'apt-get install -y nginx-light');

/** Debian's Caddy. */
export const caddyBinary = binary('Caddy', '/usr/bin/caddy', 'apt-get install -y caddy');

/** Where an edge server sends what it protects. */
export interface EdgeOptions {
  /** The loopback port it listens on, chosen beforehand with `freePort()`. */
  port: number;
  /** The gateway's `host:port`. */
  gateway: string;
  /** The upstream's `host:port`. */
  upstream: string;
}

/** A running edge server. */
export interface Edge {
  /** `nginx` or `Caddy`. */
  name: string;
  /** The port it listens on, on 127.0.0.1. */
  port: number;
  /** Its folder: configuration, pid file, temporary files, logs. */
  dir: string;
  /** A `fetch` that reaches it at {@link PUBLISHED} (other origins as usual), sent as navigations. */
  fetch: typeof fetch;
  /** A fresh browser whose requests to {@link PUBLISHED} reach this server. */
  browser(): Browser;
  /** Its error log so far. */
  errorLog(): string;
  /** Stops it (SIGTERM, then SIGKILL if it lingers) and removes its folder. */
  close(): Promise<void>;
}

/** The configuration template `name` of test/gateway/configs/ with its `{{PLACEHOLDERS}}` filled in. */
export async function renderConfig(name: string, values: Record<string, string>): Promise<string> {
  const template = await readFile(new URL(name, CONFIGS), 'utf8');
  return template.replace(/\{\{([A-Z]+)\}\}/g, (whole, key: string) => {
    const value = values[key];
    if (value === undefined) throw new Error(`${name}: no value for ${whole}`);
    return value;
  });
}

/** A fetch for {@link PUBLISHED} on `port`: the connection goes to the port, `Host` names no port. */
function publishedFetch(port: number): typeof fetch {
  return async (input, init) => {
    const request = new Request(input, init);
    const url = new URL(request.url);
    if (url.origin !== PUBLISHED) return navigationFetch(request);
    const headers = new Headers(request.headers);
    headers.set('host', url.host);
    url.port = String(port);
    const body = request.body ? await request.text() : undefined;
    return navigationFetch(url.href, {
      method: request.method,
      headers,
      redirect: 'manual',
      ...(body !== undefined ? { body } : {}),
    });
  };
}

/** One HTTP request to the port: whether anything answered. */
function answers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const request = http.get({ host: '127.0.0.1', port, path: '/', agent: false, timeout: 1000 }, (res) => {
      res.resume();
      resolve(true);
    });
    request.on('timeout', () => request.destroy());
    request.on('error', () => resolve(false));
  });
}

// Children still running when the test process exits are killed with it.
const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/** Starts `command` in `dir`, its output appended to `log`, and waits until its port answers HTTP. */
async function launch(options: {
  name: string;
  command: string;
  args: string[];
  dir: string;
  port: number;
  log: string;
  env?: NodeJS.ProcessEnv;
}): Promise<Edge> {
  const { name, dir, port, log } = options;
  const out = openSync(log, 'a');
  const child = spawn(options.command, options.args, {
    cwd: dir,
    env: options.env ?? process.env,
    stdio: ['ignore', out, out],
  });
  closeSync(out);
  running.add(child);
  // `once` rejects on 'error' (a binary that cannot be spawned): that is an exit too.
  const exited = once(child, 'exit').then(
    ([code, signal]) => `${signal ?? `code ${code}`}`,
    (error: Error) => error.message,
  );
  exited.then(() => running.delete(child));
  // Kept once the folder is gone, for a failed test's report.
  let finalLog: string | null = null;
  const errorLog = () => finalLog ?? readFileSync(log, 'utf8');

  // Ready when an HTTP request is answered; an exit before that is a failure with the log.
  let stopped = false;
  const ready = (async () => {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    while (!stopped && !(await answers(port))) {
      if (Date.now() > deadline) throw new Error(`${name} did not answer on port ${port}:\n${errorLog()}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  })();
  const died = exited.then((how) => {
    throw new Error(`${name} exited (${how}) before answering:\n${errorLog()}`);
  });
  try {
    await Promise.race([ready, died]);
  } catch (error) {
    stopped = true;
    child.kill('SIGKILL');
    await exited;
    await rm(dir, { recursive: true, force: true });
    throw error;
  } finally {
    stopped = true;
    died.catch(() => undefined);
  }

  const fetchVia = publishedFetch(port);
  let closing: Promise<void> | undefined;
  return {
    name,
    port,
    dir,
    fetch: fetchVia,
    browser: () => new Browser({ fetch: fetchVia }),
    errorLog,
    close() {
      closing ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGTERM');
          const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
          await exited;
          clearTimeout(timer);
        }
        finalLog = errorLog();
        await rm(dir, { recursive: true, force: true });
      })();
      return closing;
    },
  };
}

/** Starts nginx with test/gateway/configs/nginx.conf, its prefix (`-p`) a fresh temporary folder. */
export async function startNginx(options: EdgeOptions): Promise<Edge> {
  const dir = (await createTempDir('labgate-nginx-')).path;
  // As root, nginx's workers run as `nobody` and must reach the temporary folders it creates here.
  await chmod(dir, 0o755);
  const config = join(dir, 'nginx.conf');
  await writeFile(
    config,
    await renderConfig('nginx.conf', {
      LISTEN: `127.0.0.1:${options.port}`,
      GATEWAY: options.gateway,
      UPSTREAM: options.upstream,
      PUBLISHED,
    }),
  );
  const log = join(dir, 'error.log');
  return launch({
    name: 'nginx',
    command: nginxBinary.address,
    args: ['-p', `${dir}/`, '-c', config, '-e', log],
    dir,
    port: options.port,
    log,
  });
}

/** Starts Caddy with test/gateway/configs/Caddyfile; its home and data folders are a fresh temporary folder. */
export async function startCaddy(options: EdgeOptions): Promise<Edge> {
  const dir = (await createTempDir('labgate-caddy-')).path;
  const config = join(dir, 'Caddyfile');
  await writeFile(
    config,
    await renderConfig('Caddyfile', {
      LISTEN: `127.0.0.1:${options.port}`,
      GATEWAY: options.gateway,
      UPSTREAM: options.upstream,
    }),
  );
  return launch({
    name: 'Caddy',
    command: caddyBinary.address,
    args: ['run', '--config', config, '--adapter', 'caddyfile'],
    dir,
    port: options.port,
    log: join(dir, 'error.log'),
    env: { ...process.env, HOME: dir, XDG_CONFIG_HOME: dir, XDG_DATA_HOME: dir },
  });
}

/** The gateway's test stack behind an edge server. */
export interface EdgeStack {
  stack: GatewayStack;
  edge: Edge;
  /** {@link PUBLISHED}: the edge's public origin, also the gateway's `LABGATE_URL`. */
  url: string;
  /** A browser signed in as `user` through the edge (`rd` defaults to `/`). */
  signIn(user: string, options?: { rd?: string }): Promise<Browser>;
  /**
   * What a user does from the sign-in page's link: `/oauth2/start`, GitLab's sign-in and consent, the
   * callback. Returns the callback's answer (the redirect back).
   */
  signInFrom(browser: Browser, startUrl: string, user: string): Promise<Page>;
  close(): Promise<void>;
}

/** The absolute URL of the gateway sign-in page's "Sign in with GitLab" link. */
export function startLink(page: Page): string {
  const match = /<a class="button" href="([^"]*)">Sign in with GitLab<\/a>/.exec(page.body);
  if (!match) throw new Error(`not the sign-in page (${page.status}):\n${page.body.slice(0, 1000)}`);
  return new URL(decodeEntities(match[1]!), page.url).href;
}

/**
 * Starts the gateway's stack as the documented configurations expect it (`reverse_proxy`,
 * `set_xauthrequest`, `LABGATE_URL` the edge's public origin), then the edge server in front of it.
 */
export async function startEdgeStack(
  start: (options: EdgeOptions) => Promise<Edge>,
  options: StackOptions = {},
): Promise<EdgeStack> {
  const port = await freePort();
  const stack = await startStack({
    ...options,
    config: { reverseProxy: true, setXAuthRequest: true, ...options.config },
    publicUrl: () => PUBLISHED,
  });
  let edge: Edge;
  try {
    edge = await start({
      port,
      gateway: new URL(stack.gateway.url).host,
      upstream: `127.0.0.1:${stack.upstream.port}`,
    });
  } catch (error) {
    await stack.close();
    throw error;
  }
  return {
    stack,
    edge,
    url: PUBLISHED,
    signIn: (user, opts = {}) =>
      stack.signIn(user, { browser: edge.browser(), ...(opts.rd !== undefined ? { rd: opts.rd } : {}) }),
    async signInFrom(browser, startUrl, user) {
      const start = await browser.get(startUrl);
      if (start.status !== 302 || !start.location)
        throw new Error(`${startUrl} answered ${start.status}: ${start.body.slice(0, 500)}`);
      const callback = await browser.approveToClient({
        url: stack.gitlab.url,
        authorizeUrl: start.location,
        login: user,
        password: passwordOf(stack.gitlab, user),
      });
      return browser.get(callback);
    },
    async close() {
      await edge.close();
      await stack.close();
    },
  };
}

/** An edge stack per test: the returned function starts one (its error log printed if the test fails), closed after the test. */
export function edgePerTest(
  startEdge: (options: EdgeOptions) => Promise<Edge>,
): (options?: StackOptions) => Promise<EdgeStack> {
  let running: EdgeStack | undefined;
  afterEach(async () => {
    await running?.close();
    running = undefined;
  });
  return async (options = {}) => {
    const started = await startEdgeStack(startEdge, options);
    running = started;
    onTestFailed(() => console.error(`${started.edge.name}'s error log:\n${started.edge.errorLog()}`));
    return started;
  };
}

/** What the echo upstream received, from a page that must be its 200. */
export function echoOf(page: Page): Echo {
  expect(page.status, page.body).toBe(200);
  return JSON.parse(page.body) as Echo;
}

/**
 * The round trip a user makes through the edge: a signed-out navigation to `/reports?year=2026` is sent
 * to the sign-in page with an `rd` on the edge's origin, whose link signs `bob` in and brings him back
 * to the URL with its query. Returns what the upstream then received.
 */
export async function signInRoundTrip(e: EdgeStack): Promise<Echo> {
  const browser = e.edge.browser();
  const first = await browser.get(`${e.url}/reports?year=2026`);
  expect(first.status).toBe(302);
  const signIn = new URL(first.location!);
  expect(`${signIn.origin}${signIn.pathname}`).toBe(`${e.url}/oauth2/sign_in`);
  expect(signIn.searchParams.get('rd')).toBe(`${e.url}/reports?year=2026`);
  expect(e.stack.upstream.requests).toHaveLength(0);

  const page = await browser.get(first.location!);
  expect(page.status).toBe(200);
  const link = startLink(page);
  expect(link).toBe(`${e.url}/oauth2/start?rd=${encodeURIComponent('/reports?year=2026')}`);
  const back = await e.signInFrom(browser, link, 'bob');
  expect(back.location).toBe(`${e.url}/reports?year=2026`);

  const seen = echoOf(await browser.get(back.location!));
  expect(seen.url).toBe('/reports?year=2026');
  return seen;
}
