/**
 * The gateway's test stack: the GitLab emulator, an echo upstream, and `startGateway` in front of it on
 * loopback ports, plus the sign-in a browser does through them. Tests change the configuration with
 * `config` (anything of {@link GatewayConfig}) and reach every part.
 */
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { afterEach } from 'vitest';
import { MemoryStore, type Store } from '../../src/core/index.js';
import { type EmulatorOptions, type RunningEmulator, startEmulator } from '../../src/emulator/index.js';
import type { GatewayConfig } from '../../src/gateway/config.js';
import { type RunningGateway, startGateway } from '../../src/gateway/server.js';
import { Browser, passwordOf } from '../emulator/browser.js';
import { startUpstream } from './upstream.js';

/** The echo upstream (test/gateway/upstream.ts). */
export type Upstream = Awaited<ReturnType<typeof startUpstream>>;

/** Everything a gateway test talks to. */
export interface GatewayStack {
  gitlab: RunningEmulator;
  upstream: Upstream;
  gateway: RunningGateway;
  /** The gateway's origin (`http://127.0.0.1:<port>`), also its `LABGATE_URL`. */
  url: string;
  config: GatewayConfig;
  /** Every JSON log line the gateway wrote. */
  logs: string[];
  store: Store;
  /** A browser signed in as `user` through the gateway (its jar holds the session cookie). */
  signIn(user: string, options?: { browser?: Browser; rd?: string }): Promise<Browser>;
  close(): Promise<void>;
}

/** What a stack may change. */
export interface StackOptions {
  config?: Partial<GatewayConfig>;
  /** Options of the core beyond the defaults (scopes, access policy, recheck interval). */
  labgate?: Partial<GatewayConfig['labgate']>;
  emulator?: EmulatorOptions;
  store?: Store;
  /** The public origin, when something else (nginx, Caddy) is in front of the gateway. */
  publicUrl?: (gatewayPort: number) => string;
  /** Start on this port (a port picked beforehand, e.g. for a proxy's config). */
  port?: number;
}

/** A free loopback port, for servers whose configuration must name it before they start. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** A configuration with every option at its default, for the emulator's first application. */
export function baseConfig(
  gitlab: RunningEmulator,
  upstream: string,
  url: string,
  port: number,
): GatewayConfig {
  const app = gitlab.applications[0]!;
  return {
    labgate: {
      gitlabUrl: gitlab.url,
      clientId: app.uid,
      clientSecret: app.secret,
      url,
      secret: randomBytes(32).toString('base64url'),
      scopes: 'openid profile email read_api',
    },
    store: 'memory:',
    upstream: new URL(upstream),
    listen: { host: '127.0.0.1', port },
    metricsAddress: null,
    routes: [],
    skipRoutes: [],
    skipPrefixes: [],
    apiRoutes: [],
    emailDomains: null,
    reverseProxy: false,
    trustedProxies: ['127.0.0.1/32', '::1/128'],
    whitelistDomains: [],
    setXAuthRequest: false,
    passAccessToken: false,
    passUserHeaders: true,
    preferEmailToUser: false,
    skipAuthPreflight: false,
    forceJsonErrors: false,
    assertion: null,
    websocketOrigins: [url],
    upstreamTimeout: 5000,
    shutdownTimeout: 2000,
    skipProviderButton: false,
  };
}

/** Starts the emulator, the upstream and the gateway. */
export async function startStack(options: StackOptions = {}): Promise<GatewayStack> {
  const gitlab = await startEmulator(options.emulator ?? {});
  const upstream = await startUpstream();
  const port = options.port ?? (await freePort());
  const url = options.publicUrl ? options.publicUrl(port) : `http://127.0.0.1:${port}`;
  const base = baseConfig(gitlab, upstream.url, url, port);
  const config: GatewayConfig = {
    ...base,
    ...options.config,
    labgate: { ...base.labgate, ...options.labgate, ...options.config?.labgate },
  };
  const logs: string[] = [];
  const store = options.store ?? new MemoryStore();
  const gateway = await startGateway(config, { store, write: (line) => logs.push(line) });

  async function signIn(user: string, opts: { browser?: Browser; rd?: string } = {}): Promise<Browser> {
    const browser = opts.browser ?? new Browser();
    const start = await browser.get(`${url}/oauth2/start?rd=${encodeURIComponent(opts.rd ?? '/')}`);
    if (start.status !== 302 || !start.location)
      throw new Error(`/oauth2/start answered ${start.status}: ${start.body}`);
    const callback = await browser.approveToClient({
      url: gitlab.url,
      authorizeUrl: start.location,
      login: user,
      password: passwordOf(gitlab, user),
    });
    const done = await browser.get(callback);
    if (done.status !== 302 && done.status !== 303)
      throw new Error(`the callback answered ${done.status}: ${done.body.slice(0, 500)}`);
    return browser;
  }

  return {
    gitlab,
    upstream,
    gateway,
    url,
    config,
    logs,
    store,
    signIn,
    async close() {
      await gateway.close();
      await upstream.close();
      await gitlab.close();
    },
  };
}

/**
 * A stack per test: the returned function starts one, and it is closed after the test.
 * @example
 * ```ts
 * const start = stackPerTest();
 * it('…', async () => { const s = await start({ config: { reverseProxy: true } }); });
 * ```
 */
export function stackPerTest(): (options?: StackOptions) => Promise<GatewayStack> {
  let current: GatewayStack | undefined;
  afterEach(async () => {
    await current?.close();
    current = undefined;
  });
  return async (options = {}) => {
    await current?.close();
    current = await startStack(options);
    return current;
  };
}

/** A clock a test moves, for the core's `now` (re-check intervals without waiting). */
export function testClock(): { now: () => number; advance(ms: number): void } {
  let at = Date.now();
  return {
    now: () => at,
    advance(ms) {
      at += ms;
    },
  };
}

/**
 * The core's options for the removal scenario: only members of `acme/platform`, re-checked every
 * 60 s on `clock`, no session cache, so the first request after `clock.advance(61_000)` asks GitLab.
 */
export function recheckingPlatform(clock: { now: () => number }): Partial<GatewayConfig['labgate']> {
  return {
    access: { allow: ['group:acme/platform'] },
    recheckInterval: 60,
    sessionCacheTtl: 0,
    now: clock.now,
  };
}
