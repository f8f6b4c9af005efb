/**
 * bench/hosts.mjs: labgate/fastify from the built package, the plugin registered for the whole app
 * and `/me` behind `requireUser({ api: true })`; server sessions in a MemoryStore.
 */
import Fastify from 'fastify';
import { createLabgate, MemoryStore } from 'labgate';
import { labgate, requireUser } from 'labgate/fastify';
import { labgateOptions, listen, publicUser, ready } from '../common.mjs';

const { server, origin } = await listen();
const auth = createLabgate({ ...labgateOptions(origin), store: new MemoryStore() });
const app = Fastify({
  serverFactory: (handler) => server.on('request', handler),
});
await app.register(labgate, { labgate: auth });
app.get('/me', { preHandler: requireUser({ api: true }) }, (request) => publicUser(request.labgate.user));
await app.ready();
ready(server, { origin, cookieName: 'labgate' });
