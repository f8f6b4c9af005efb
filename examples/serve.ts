/**
 * What every host's example server shares: labgate from the environment (README.md, "Configuration":
 * GITLAB_URL, GITLAB_CLIENT_ID, GITLAB_CLIENT_SECRET, GITLAB_SCOPES, LABGATE_URL, LABGATE_SECRET,
 * LABGATE_STORE, PORT, HOST), the limits that keep a slow client from holding a connection, and
 * listening. Each `examples/<host>/server.ts` only builds its app on these.
 */
import type { Server, ServerOptions } from 'node:http';
import { createLabgate, type Labgate, type LabgateOptions, optionsFromEnv } from 'labgate';
import { DEFAULT_STORE, describeStore, openStore } from 'labgate/stores';

/**
 * How long a client may take, in milliseconds. Node's defaults let a client hold a connection for
 * five minutes by sending its request a byte at a time; these bound it.
 */
export interface ServerTimeouts {
  /** To send the request headers (default 10 000; never more than `requestTimeout`; 0: no limit). */
  headersTimeout?: number;
  /** To send the whole request, headers and body (default 30 000; 0: no limit); a slower client gets `408`. */
  requestTimeout?: number;
  /** An idle keep-alive connection stays open this long after a response (default 5 000). */
  keepAliveTimeout?: number;
}

/** The environment an example reads. */
export type Env = Record<string, string | undefined>;

/**
 * `http.createServer` options for {@link ServerTimeouts}.
 * @example
 * ```ts
 * createServer(serverOptions({ requestTimeout: 10_000 }), handler);
 * ```
 */
export function serverOptions(timeouts: ServerTimeouts = {}): ServerOptions {
  const requestTimeout = timeouts.requestTimeout ?? 30_000;
  const headersTimeout = timeouts.headersTimeout ?? 10_000;
  const shortest = Math.min(...[headersTimeout, requestTimeout].filter((t) => t > 0), 5_000);
  return {
    // Node refuses a headers limit longer than the request limit.
    headersTimeout: requestTimeout > 0 ? Math.min(headersTimeout, requestTimeout) : headersTimeout,
    requestTimeout,
    // Node checks both limits on this interval (30 s by default), so a limit is kept only to within
    // the interval: check often enough to keep it to within a fifth of itself.
    connectionsCheckingInterval: Math.max(10, Math.min(1000, Math.floor(shortest / 5))),
    keepAliveTimeout: timeouts.keepAliveTimeout ?? 5_000,
  };
}

/**
 * labgate from the environment, its store opened (`LABGATE_STORE`, SQLite by default) unless
 * `overrides.store` gives one; the store closes with `server`.
 * @example
 * ```ts
 * const auth = await labgateFromEnv(process.env);
 * ```
 */
export async function labgateFromEnv(env: Env, overrides: Partial<LabgateOptions> = {}): Promise<Labgate> {
  const storeUrl = env['LABGATE_STORE'] ?? DEFAULT_STORE;
  const store = overrides.store ?? (await openStore(storeUrl));
  const auth = createLabgate({
    scopes: 'openid profile email read_user read_api',
    ...optionsFromEnv(env),
    ...overrides,
    store,
  });
  if (!overrides.store) auth.options.logger.info(`labgate example: sessions in ${describeStore(storeUrl)}`);
  return auth;
}

/**
 * Listens on `PORT` (3000) and `HOST` (127.0.0.1); resolves once it does. The example's store closes
 * with the server.
 */
export async function listen(
  server: Server,
  env: Env,
  auth: Labgate,
): Promise<{ server: Server; url: string }> {
  const port = Number(env['PORT'] ?? 3000);
  const host = env['HOST'] ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('close', () => void auth.store.close?.());
  return { server, url: auth.options.origin };
}

/** Starts a host's example app; resolves once it listens. */
export type StartExampleApp = (
  env?: Env,
  overrides?: Partial<LabgateOptions>,
  timeouts?: ServerTimeouts,
) => Promise<{ server: Server; url: string }>;

/**
 * A host's `startExampleApp`: labgate from the environment, the server `serve` builds for it, listening;
 * started at once when its module is the program.
 * @example
 * ```ts
 * export const startExampleApp = exampleApp('node:http', import.meta.url, (auth, timeouts) =>
 *   createServer(serverOptions(timeouts), createApp(auth)),
 * );
 * ```
 */
export function exampleApp(
  host: string,
  moduleUrl: string,
  serve: (auth: Labgate, timeouts: ServerTimeouts) => Server | Promise<Server>,
): StartExampleApp {
  const start: StartExampleApp = async (env = process.env, overrides = {}, timeouts = {}) => {
    const auth = await labgateFromEnv(env, overrides);
    return listen(await serve(auth, timeouts), env, auth);
  };
  runWhenMain(moduleUrl, host, () => start());
  return start;
}

/** Runs `start` when the module is the program (`node build/examples/<host>/server.js`). */
export function runWhenMain(moduleUrl: string, host: string, start: () => Promise<{ url: string }>): void {
  if (moduleUrl !== `file://${process.argv[1]}`) return;
  start()
    .then(({ url }) => process.stdout.write(`labgate example (${host}) listening at ${url}\n`))
    .catch((error: unknown) => {
      process.stderr.write(`labgate example: ${error instanceof Error ? error.message : String(error)}\n`);
      process.exitCode = 1;
    });
}
