/**
 * Runs the Hono example app on @hono/node-server from the environment (README.md, "Configuration"):
 * GITLAB_URL, GITLAB_CLIENT_ID, GITLAB_CLIENT_SECRET, GITLAB_SCOPES, LABGATE_URL, LABGATE_SECRET,
 * LABGATE_STORE, PORT.
 */
import type { Server } from 'node:http';
import { createAdaptorServer } from '@hono/node-server';
import { createLabgate, type LabgateOptions, optionsFromEnv } from 'labgate';
import { DEFAULT_STORE, describeStore, openStore } from 'labgate/stores';
import { createApp } from './app.js';

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

/**
 * Starts the example app; resolves once it listens.
 * @example
 * ```ts
 * const { url } = await startExampleApp(process.env);
 * ```
 */
export async function startExampleApp(
  env: Record<string, string | undefined> = process.env,
  overrides: Partial<LabgateOptions> = {},
  timeouts: ServerTimeouts = {},
): Promise<{ server: Server; url: string }> {
  const storeUrl = env['LABGATE_STORE'] ?? DEFAULT_STORE;
  const store = overrides.store ?? (await openStore(storeUrl));
  const options = {
    scopes: 'openid profile email read_user read_api',
    ...optionsFromEnv(env),
    ...overrides,
    store,
  };
  const auth = createLabgate(options);
  if (!overrides.store) auth.options.logger.info(`labgate example: sessions in ${describeStore(storeUrl)}`);
  const requestTimeout = timeouts.requestTimeout ?? 30_000;
  const headersTimeout = timeouts.headersTimeout ?? 10_000;
  const shortest = Math.min(...[headersTimeout, requestTimeout].filter((t) => t > 0), 5_000);
  const server = createAdaptorServer({
    fetch: createApp(auth).fetch,
    serverOptions: {
      // Node refuses a headers limit longer than the request limit.
      headersTimeout: requestTimeout > 0 ? Math.min(headersTimeout, requestTimeout) : headersTimeout,
      requestTimeout,
      // Node checks both limits on this interval (30 s by default), so a limit is kept only to
      // within the interval: check often enough to keep it to within a fifth of itself.
      connectionsCheckingInterval: Math.max(10, Math.min(1000, Math.floor(shortest / 5))),
      keepAliveTimeout: timeouts.keepAliveTimeout ?? 5_000,
    },
  }) as Server;
  const port = Number(env['PORT'] ?? 3000);
  const host = env['HOST'] ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('close', () => void store.close?.());
  return { server, url: auth.options.origin };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  startExampleApp()
    .then(({ url }) => process.stdout.write(`labgate example (Hono) listening at ${url}\n`))
    .catch((error: unknown) => {
      process.stderr.write(`labgate example: ${error instanceof Error ? error.message : String(error)}\n`);
      process.exitCode = 1;
    });
}
