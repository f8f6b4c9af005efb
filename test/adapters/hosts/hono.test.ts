/** The behaviour every host shares (test/adapters/suite.ts), on labgate/hono served by @hono/node-server. */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { getRequestListener } from '@hono/node-server';
import { Hono } from 'hono';
import {
  type LabgateEnv,
  labgate,
  requireAccess,
  requireRole,
  requireUser,
} from '../../../src/adapters/hono.js';
import { hostBehaviour, labgateFor } from '../suite.js';

hostBehaviour({
  name: 'hono',
  async start(config) {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const auth = labgateFor(config, origin);
    const app = new Hono<LabgateEnv>();
    app.use(labgate(auth));
    app.get('/public', (c) => c.text(`public ${c.var.labgate.user?.username ?? 'anonymous'}`));
    app.get('/me', requireUser(), (c) => c.json({ username: c.var.labgate.user.username }));
    app.get('/admin', requireRole('admin'), (c) => c.text(`admin ${c.var.labgate.user.username}`));
    app.get('/maintain', requireAccess('project:acme/app>=maintainer'), (c) => c.text('maintain'));
    app.get('/token', requireUser(), async (c) =>
      c.json({ length: (await c.var.labgate.accessToken()).length }),
    );
    server.on('request', getRequestListener(app.fetch));
    return { origin, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
  },
});
