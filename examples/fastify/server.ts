/**
 * Runs the Fastify example app from the environment (README.md, "Configuration"; examples/serve.ts):
 * Fastify on a node:http server with the same limits on slow clients as every example.
 */
import { createServer, type Server } from 'node:http';
import type { LabgateOptions } from 'labgate';
import {
  type Env,
  labgateFromEnv,
  listen,
  runWhenMain,
  type ServerTimeouts,
  serverOptions,
} from '../serve.js';
import { createApp } from './app.js';

/**
 * Starts the example app; resolves once it listens.
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
  const app = await createApp(auth, {
    serverFactory: (handler) => createServer(serverOptions(timeouts), handler),
  });
  // Fastify with a server of its own making: ready first, then the server listens.
  await app.ready();
  return listen(app.server, env, auth);
}

runWhenMain(import.meta.url, 'Fastify', () => startExampleApp());
