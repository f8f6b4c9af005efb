/**
 * Runs the Express example app from the environment (README.md, "Configuration"; examples/serve.ts).
 */
import { createServer, type RequestListener, type Server } from 'node:http';
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

export type { ServerTimeouts } from '../serve.js';

/**
 * An `http.Server` for a request handler, with {@link ServerTimeouts} set.
 * @example
 * ```ts
 * createHttpServer(createApp(auth)).listen(3000);
 * ```
 */
export function createHttpServer(handler: RequestListener, timeouts: ServerTimeouts = {}): Server {
  return createServer(serverOptions(timeouts), handler);
}

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
  return listen(createHttpServer(createApp(auth), timeouts), env, auth);
}

runWhenMain(import.meta.url, 'Express', () => startExampleApp());
