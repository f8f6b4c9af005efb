/** bench/hosts.mjs: bare Hono on @hono/node-server, `/me` returns a fixed user (no authentication). */
import { getRequestListener } from '@hono/node-server';
import { Hono } from 'hono';
import { ALICE, listen, ready } from '../common.mjs';

const { server, origin } = await listen();
const app = new Hono();
app.get('/me', (c) => c.json(ALICE));
// What @hono/node-server's serve() attaches, on the server that already listens.
server.on('request', getRequestListener(app.fetch));
ready(server, { origin });
