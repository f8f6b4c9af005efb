/**
 * Runs the example app on Next.js from the environment (README.md, "Configuration"; examples/serve.ts).
 * Next's custom server: the app built by `next build examples/next`, served in this process on a
 * node:http server with the same timeouts as every example.
 */
import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { LabgateOptions } from 'labgate';
import { wrapRequestHandler } from 'labgate/next';
import nextModule from 'next';
import {
  type Env,
  labgateFromEnv,
  listen,
  runWhenMain,
  type ServerTimeouts,
  serverOptions,
} from '../serve.js';
import { provideLabgate } from './lib/labgate.js';

// Next is CommonJS (`module.exports = createServer`); its types describe it as an ES module's default.
const next = nextModule as unknown as typeof nextModule.default;

/** The Next project: this folder, or examples/next of the repository when this file runs compiled. */
function projectDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  return existsSync(join(here, 'next.config.ts')) ? here : resolve(here, '../../../examples/next');
}

/**
 * Starts the example app (built beforehand with `next build examples/next`); resolves once it listens.
 * @example
 * ```ts
 * const { url } = await startExampleApp(process.env);
 * ```
 */
export async function startExampleApp(
  env: Env = process.env,
  overrides: Partial<LabgateOptions> = {},
  timeouts: ServerTimeouts = {},
): Promise<{ server: Server; url: string }> {
  const auth = await labgateFromEnv(env, overrides);
  const port = Number(env['PORT'] ?? 3000);
  const host = env['HOST'] ?? '127.0.0.1';
  // The app's routes find this instance (lib/labgate.ts): one labgate, one store, for the process.
  provideLabgate(auth);
  const app = next({ dev: false, dir: projectDir(), hostname: host, port });
  try {
    await app.prepare();
  } catch (error) {
    provideLabgate(null);
    await auth.store.close?.();
    throw error;
  }
  const handle = wrapRequestHandler(auth, app.getRequestHandler());
  const server = createServer(serverOptions(timeouts), (req, res) => {
    handle(req, res).catch(() => {
      // Next answers its own errors; this is a failure to answer at all.
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  });
  server.on('close', () => {
    provideLabgate(null);
    void app.close();
  });
  return listen(server, env, auth);
}

runWhenMain(import.meta.url, 'Next.js', () => startExampleApp());
