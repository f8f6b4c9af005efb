/**
 * Runs the Fastify example app from the environment (README.md, "Configuration"; examples/serve.ts):
 * Fastify on a node:http server with the same limits on slow clients as every example.
 */
import { createServer } from 'node:http';
import { exampleApp, serverOptions } from '../serve.js';
import { createApp } from './app.js';

/** Starts the example app; resolves once it listens (`startExampleApp(process.env)`). */
export const startExampleApp = exampleApp('Fastify', import.meta.url, async (auth, timeouts) => {
  const app = await createApp(auth, {
    serverFactory: (handler) => createServer(serverOptions(timeouts), handler),
  });
  // Fastify with a server of its own making: ready first, then the server listens.
  await app.ready();
  return app.server;
});
