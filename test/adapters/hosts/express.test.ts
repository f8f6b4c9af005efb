/** The behaviour every host shares (test/adapters/suite.ts), on labgate/express with Express 5. */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { labgate, requireAccess, requireRole, requireUser } from '../../../src/adapters/express.js';
import { hostBehaviour, labgateFor } from '../suite.js';

hostBehaviour({
  name: 'express',
  async start(config) {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const auth = labgateFor(config, origin);
    const app = express();
    app.use(labgate(auth));
    app.get('/public', (req, res) => {
      res.send(`public ${req.labgate?.user?.username ?? 'anonymous'}`);
    });
    app.get('/me', requireUser(), (req, res) => {
      res.json({ username: req.labgate!.user!.username });
    });
    app.get('/admin', requireRole('admin'), (req, res) => {
      res.send(`admin ${req.labgate!.user!.username}`);
    });
    app.get('/maintain', requireAccess('project:acme/app>=maintainer'), (_req, res) => {
      res.send('maintain');
    });
    app.get('/token', requireUser(), async (req, res) => {
      res.json({ length: (await req.labgate!.accessToken()).length });
    });
    server.on('request', app);
    return { origin, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
  },
});
