/** The behaviour every host shares (test/adapters/suite.ts), on labgate/fastify with Fastify 5. */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import Fastify from 'fastify';
import { labgate, requireAccess, requireRole, requireUser } from '../../../src/adapters/fastify.js';
import { hostBehaviour, labgateFor } from '../suite.js';

hostBehaviour({
  name: 'fastify',
  async start(config) {
    // The origin is known once the socket listens: the server first, Fastify's handler on it after.
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const auth = labgateFor(config, origin);
    const app = Fastify({ serverFactory: (handler) => server.on('request', handler) });
    await app.register(labgate, { labgate: auth });
    app.get('/public', async (request) => `public ${request.labgate?.user?.username ?? 'anonymous'}`);
    app.get('/me', { preHandler: requireUser() }, async (request) => ({
      username: request.labgate!.user!.username,
    }));
    app.get('/admin', { preHandler: requireRole('admin') }, async (request) => {
      return `admin ${request.labgate!.user!.username}`;
    });
    app.get(
      '/maintain',
      { preHandler: requireAccess('project:acme/app>=maintainer') },
      async () => 'maintain',
    );
    app.get('/token', { preHandler: requireUser() }, async (request) => ({
      length: (await request.labgate!.accessToken()).length,
    }));
    await app.ready();
    return {
      origin,
      // Fastify closes only a server it listened on itself.
      close: async () => {
        await app.close();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      },
    };
  },
});
