/** bench/hosts.mjs: bare Fastify 5, `/me` returns a fixed user (no authentication at all). */
import Fastify from 'fastify';
import { ALICE, listen, ready } from '../common.mjs';

const { server, origin } = await listen();
// serverFactory: Fastify answers on the server that already listens on the free loopback port.
const app = Fastify({
  serverFactory: (handler) => server.on('request', handler),
});
app.get('/me', () => ALICE);
await app.ready();
ready(server, { origin });
