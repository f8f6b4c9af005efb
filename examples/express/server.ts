/**
 * Runs the Express example app from the environment (README.md, "Configuration"; examples/serve.ts).
 */
import { createServer, type RequestListener, type Server } from 'node:http';
import { exampleApp, type ServerTimeouts, serverOptions } from '../serve.js';
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

/** Starts the example app; resolves once it listens (`startExampleApp(process.env)`). */
export const startExampleApp = exampleApp('Express', import.meta.url, (auth, timeouts) =>
  createHttpServer(createApp(auth), timeouts),
);
