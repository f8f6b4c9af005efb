/**
 * A GitLab that runs inside a test suite: OAuth 2.0, OpenID Connect, the REST API v4 calls that
 * sign-in and access control need, fixtures, faults and a controllable clock, all offline.
 *
 * It imports nothing from labgate's client code: it is the independent oracle labgate is tested
 * against, and any project can use it to test its own GitLab integration.
 *
 * @example
 * ```ts
 * import { startEmulator } from 'labgate/emulator';
 *
 * const gitlab = await startEmulator();            // the demo fixtures, a free port
 * const app = gitlab.applications[0];              // client id, secret, redirect URIs
 * gitlab.control.advanceClock(7200);               // expire every access token
 * await gitlab.close();
 * ```
 * @packageDocumentation
 */
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { registerApiRoutes } from './api.js';
import { registerAvatarRoutes } from './avatar.js';
import { EmulatorControl, registerControlRoutes } from './control.js';
import { createEnv } from './env.js';
import { type Application, type Fixtures, normaliseFixtures, type User } from './fixtures.js';
import { Router } from './http.js';
import { registerOAuthRoutes } from './oauth.js';
import { registerOidcRoutes } from './oidc.js';
import { createListener } from './server.js';
import { type EmulatorBehaviour, EmulatorState } from './state.js';

export type { FaultSpec, MembershipSpec, MintedToken, RequestFilter, ShareSpec } from './control.js';
export { ControlError, EmulatorControl } from './control.js';
export type {
  AccessLevelInput,
  FixtureApplication,
  FixtureGroup,
  FixtureMembership,
  FixtureProject,
  FixtureShare,
  Fixtures,
  FixtureUser,
} from './fixtures.js';
export { ACCESS_LEVELS, FixtureError } from './fixtures.js';
export type { EmulatorBehaviour, LogEntry } from './state.js';

/** Options of {@link startEmulator}. */
export interface EmulatorOptions extends Partial<EmulatorBehaviour> {
  /** TCP port; 0 (the default) picks a free one. */
  port?: number;
  /** Interface to listen on (default `127.0.0.1`). */
  host?: string;
  /** Serve everything under a relative URL root, as a self-managed GitLab at `https://host/gitlab`. */
  basePath?: string;
  /** A fixture document, or the path of a JSON file holding one (default: the demo fixtures). */
  fixtures?: Fixtures | string;
  /**
   * Milliseconds a client has to send a whole request, headers and body (default 30 000; 0 turns the
   * limit off). A slower client gets `408 Request Timeout` and its connection is closed, so a client
   * that trickles a body cannot hold a connection open.
   */
  requestTimeout?: number;
  /**
   * Milliseconds a client has to send the request headers (default 10 000, and never more than
   * `requestTimeout`; 0 turns the limit off). A slower client gets `408` and is disconnected.
   */
  headersTimeout?: number;
  /**
   * Milliseconds an idle keep-alive connection stays open after a response (default 5 000; 0 keeps
   * it open), advertised as `Keep-Alive: timeout=…`. Node closes the connection one second after
   * that, so that a client trusting the header never reuses a connection being closed. A test can
   * set it low to see how its client copes with a server closing idle connections.
   * @example
   * ```ts
   * const gitlab = await startEmulator({ keepAliveTimeout: 1000 }); // idle connections end after ~2 s
   * ```
   */
  keepAliveTimeout?: number;
}

/**
 * The emulator's default server timeouts, in milliseconds: see {@link EmulatorOptions}.
 * @example
 * ```ts
 * const gitlab = await startEmulator({ requestTimeout: DEFAULT_TIMEOUTS.requestTimeout / 10 });
 * ```
 */
export const DEFAULT_TIMEOUTS = {
  requestTimeout: 30_000,
  headersTimeout: 10_000,
  keepAliveTimeout: 5_000,
} as const;

type Timeouts = { requestTimeout: number; headersTimeout: number; keepAliveTimeout: number };

function readTimeouts(options: Pick<EmulatorOptions, keyof Timeouts>): Timeouts {
  for (const name of ['requestTimeout', 'headersTimeout', 'keepAliveTimeout'] as const) {
    const value = options[name];
    if (value !== undefined && !(Number.isSafeInteger(value) && value >= 0)) {
      throw new TypeError(`${name} must be a whole number of milliseconds, 0 or more (got ${String(value)})`);
    }
  }
  const requestTimeout = options.requestTimeout ?? DEFAULT_TIMEOUTS.requestTimeout;
  let headersTimeout = options.headersTimeout ?? DEFAULT_TIMEOUTS.headersTimeout;
  // Node refuses a headers limit longer than the request limit; the default gives way to a short one.
  if (requestTimeout > 0 && headersTimeout > requestTimeout) {
    if (options.headersTimeout !== undefined) {
      throw new TypeError(
        `headersTimeout (${headersTimeout}) must not exceed requestTimeout (${requestTimeout})`,
      );
    }
    headersTimeout = requestTimeout;
  }
  return {
    requestTimeout,
    headersTimeout,
    keepAliveTimeout: options.keepAliveTimeout ?? DEFAULT_TIMEOUTS.keepAliveTimeout,
  };
}

/** A running emulator. */
export interface RunningEmulator {
  /** The GitLab base URL and OIDC issuer (with the base path, no trailing slash). */
  url: string;
  /** Test control: clock, keys, faults, memberships, users, tokens, request log. */
  control: EmulatorControl;
  /** The registered OAuth applications (client id, secret, redirect URIs, scopes). */
  applications: Application[];
  /** The users of the fixtures, with their passwords. */
  users: User[];
  /** Stops listening and closes open connections. */
  close(): Promise<void>;
}

/** The demo fixtures that ship with the package: users, nested groups, projects, shares and one application. */
export function demoFixtures(): Fixtures {
  return JSON.parse(readFileSync(new URL('./demo-fixtures.json', import.meta.url), 'utf8')) as Fixtures;
}

/** Reads a fixture file. */
export function loadFixtures(path: string): Fixtures {
  return JSON.parse(readFileSync(path, 'utf8')) as Fixtures;
}

function normaliseBasePath(basePath: string | undefined): string {
  if (!basePath || basePath === '/') return '';
  const trimmed = `/${basePath.replace(/^\/+|\/+$/g, '')}`;
  if (!/^(\/[A-Za-z0-9._~-]+)+$/.test(trimmed))
    throw new TypeError(`basePath ${JSON.stringify(basePath)} is not a URL path`);
  return trimmed;
}

/** The `node:http` server and state of an emulator, before it listens. */
export interface EmulatorServer {
  server: Server;
  control: EmulatorControl;
  state: EmulatorState;
  /** Call once the server listens, with the origin it is reachable at (`http://127.0.0.1:3999`). */
  setOrigin(origin: string): void;
}

/**
 * Builds an emulator server without listening: for hosting it on your own `node:http` server or port.
 * The server already carries the request, headers and keep-alive timeouts of the options.
 * @example
 * ```ts
 * const { server, setOrigin } = createEmulatorServer({ requestTimeout: 5_000 });
 * server.listen(3999, '127.0.0.1', () => setOrigin('http://127.0.0.1:3999'));
 * ```
 */
export function createEmulatorServer(options: Omit<EmulatorOptions, 'port' | 'host'> = {}): EmulatorServer {
  const timeouts = readTimeouts(options);
  const fixtures =
    options.fixtures === undefined
      ? demoFixtures()
      : typeof options.fixtures === 'string'
        ? loadFixtures(options.fixtures)
        : options.fixtures;
  const model = normaliseFixtures(structuredClone(fixtures));
  const behaviour: EmulatorBehaviour = {
    autoApprove: options.autoApprove ?? 'page',
    refreshTokenRotation: options.refreshTokenRotation ?? 'immediate',
    idTokenClaims: options.idTokenClaims ?? 'current',
    idTokenLifetime: options.idTokenLifetime ?? 120,
    pkce: options.pkce ?? 'public',
  };
  const state = new EmulatorState(model, behaviour);
  const env = createEnv(state, normaliseBasePath(options.basePath));
  const control = new EmulatorControl(env, fixtures);
  control.setBehaviour(behaviour);
  const router = new Router();
  registerOidcRoutes(router, env);
  registerOAuthRoutes(router, env);
  registerApiRoutes(router, env);
  registerAvatarRoutes(router, env);
  registerControlRoutes(router, control);
  const limits = [timeouts.requestTimeout, timeouts.headersTimeout].filter((t) => t > 0);
  const server = createServer(
    {
      requestTimeout: timeouts.requestTimeout,
      headersTimeout: timeouts.headersTimeout,
      // Node checks both limits on this interval (30 s by default): check often enough that a short
      // limit is kept to within a fraction of itself.
      connectionsCheckingInterval: Math.min(1000, Math.max(50, Math.floor(Math.min(...limits, 5000) / 5))),
    },
    createListener(env, router),
  );
  server.keepAliveTimeout = timeouts.keepAliveTimeout;
  return {
    server,
    control,
    state,
    setOrigin(origin) {
      env.baseUrl = `${origin.replace(/\/+$/, '')}${env.basePath}`;
    },
  };
}

/**
 * Starts a GitLab emulator on loopback.
 * @example
 * ```ts
 * const gitlab = await startEmulator({ basePath: '/gitlab', fixtures: './test/gitlab.json' });
 * const discovery = await fetch(`${gitlab.url}/.well-known/openid-configuration`).then((r) => r.json());
 * ```
 */
export async function startEmulator(options: EmulatorOptions = {}): Promise<RunningEmulator> {
  const host = options.host ?? '127.0.0.1';
  const emulator = createEmulatorServer(options);
  const { server } = emulator;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const hostPart = host.includes(':') ? `[${host}]` : host;
  emulator.setOrigin(`http://${hostPart}:${port}`);
  const url = `http://${hostPart}:${port}${normaliseBasePath(options.basePath)}`;
  return {
    url,
    control: emulator.control,
    get applications() {
      return structuredClone(emulator.state.model.applications);
    },
    get users() {
      return structuredClone(emulator.state.model.users);
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
