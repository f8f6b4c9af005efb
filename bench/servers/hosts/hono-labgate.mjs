/**
 * bench/hosts.mjs: labgate/hono from the built package on @hono/node-server, `app.use(labgate(auth))`
 * and `/me` behind `requireUser({ api: true })`; server sessions in a MemoryStore.
 */
import { getRequestListener } from '@hono/node-server';
import { Hono } from 'hono';
import { createLabgate, MemoryStore } from 'labgate';
import { labgate, requireUser } from 'labgate/hono';
import { labgateOptions, listen, publicUser, ready } from '../common.mjs';

const { server, origin } = await listen();
const auth = createLabgate({ ...labgateOptions(origin), store: new MemoryStore() });
const app = new Hono();
app.use(labgate(auth));
app.get('/me', requireUser({ api: true }), (c) => c.json(publicUser(c.var.labgate.user)));
server.on('request', getRequestListener(app.fetch));
ready(server, { origin, cookieName: 'labgate' });
