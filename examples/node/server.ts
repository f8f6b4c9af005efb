/**
 * Runs the node:http example app from the environment (README.md, "Configuration"; examples/serve.ts).
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
  return listen(createServer(serverOptions(timeouts), createApp(auth)), env, auth);
}

runWhenMain(import.meta.url, 'node:http', () => startExampleApp());
