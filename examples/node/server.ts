/**
 * Runs the node:http example app from the environment (README.md, "Configuration"; examples/serve.ts).
 */
import { createServer } from 'node:http';
import { exampleApp, serverOptions } from '../serve.js';
import { createApp } from './app.js';

/** Starts the example app; resolves once it listens (`startExampleApp(process.env)`). */
export const startExampleApp = exampleApp('node:http', import.meta.url, (auth, timeouts) =>
  createServer(serverOptions(timeouts), createApp(auth)),
);
