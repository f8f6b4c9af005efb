/**
 * Runs the Hono example app on @hono/node-server from the environment (README.md, "Configuration";
 * examples/serve.ts).
 */
import type { Server } from 'node:http';
import { createAdaptorServer } from '@hono/node-server';
import { exampleApp, serverOptions } from '../serve.js';
import { createApp } from './app.js';

/** Starts the example app; resolves once it listens (`startExampleApp(process.env)`). */
export const startExampleApp = exampleApp(
  'Hono',
  import.meta.url,
  (auth, timeouts) =>
    createAdaptorServer({ fetch: createApp(auth).fetch, serverOptions: serverOptions(timeouts) }) as Server,
);
