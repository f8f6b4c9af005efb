/**
 * Runs the Hono example app on @hono/node-server from the environment (README.md, "Configuration";
 * examples/serve.ts).
 */
import type { Server } from 'node:http';
import { createAdaptorServer } from '@hono/node-server';
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
  const server = createAdaptorServer({
    fetch: createApp(auth).fetch,
    serverOptions: serverOptions(timeouts),
  });
  return listen(server as Server, env, auth);
}

runWhenMain(import.meta.url, 'Hono', () => startExampleApp());
