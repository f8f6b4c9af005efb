/**
 * Runs the example app from the environment (DESIGN.md's table): GITLAB_URL, GITLAB_CLIENT_ID,
 * GITLAB_CLIENT_SECRET, GITLAB_SCOPES, LABGATE_URL, LABGATE_SECRET, LABGATE_STORE, PORT.
 */
import type { Server } from 'node:http';
import { createLabgate, type LabgateOptions, optionsFromEnv } from 'labgate';
import { DEFAULT_STORE, describeStore, openStore } from 'labgate/stores';
import { createApp } from './app.js';

/** Starts the example app; resolves once it listens. */
export async function startExampleApp(
  env: Record<string, string | undefined> = process.env,
  overrides: Partial<LabgateOptions> = {},
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
  const port = Number(env['PORT'] ?? 3000);
  const host = env['HOST'] ?? '127.0.0.1';
  const app = createApp(auth);
  const server = await new Promise<Server>((resolve, reject) => {
    const listening = app.listen(port, host, (error?: Error) => (error ? reject(error) : resolve(listening)));
  });
  server.on('close', () => void store.close?.());
  return { server, url: auth.options.origin };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  startExampleApp()
    .then(({ url }) => process.stdout.write(`labgate example listening at ${url}\n`))
    .catch((error: unknown) => {
      process.stderr.write(`labgate example: ${error instanceof Error ? error.message : String(error)}\n`);
      process.exitCode = 1;
    });
}
