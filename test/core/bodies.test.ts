/**
 * Bodies on labgate's routes (docs/security.md, HTTP-1): one capped reader (forms 8 KiB, webhooks
 * `webhookMaxBytes`), 413 above the cap with the connection closed, same-origin and session checks
 * before a byte is read, and memory that stays flat under a 64 MiB body, on node:http, Express and
 * Fastify.
 */
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import Fastify from 'fastify';
import { afterAll, describe, expect, it } from 'vitest';
import { labgate as labgateMiddleware } from '../../src/adapters/express.js';
import { labgate as fastifyLabgate } from '../../src/adapters/fastify.js';
import { createNodeListener } from '../../src/adapters/node.js';
import { createLabgate, type LabgateOptions } from '../../src/core/index.js';
import { type Sent, sendBody } from '../support/http.js';

const ORIGIN = 'http://127.0.0.1:3000';
const MiB = 1024 * 1024;

function auth(extra: Partial<LabgateOptions> = {}) {
  return createLabgate({
    // Nothing here reaches GitLab: no session is ever found.
    gitlabUrl: 'http://127.0.0.1:9',
    clientId: 'bodies',
    url: ORIGIN,
    secret: randomBytes(32).toString('base64url'),
    logger: false,
    ...extra,
  });
}

const servers: http.Server[] = [];
afterAll(() => Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve)))));

async function listen(handler: http.RequestListener): Promise<number> {
  const server = http.createServer(handler);
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as AddressInfo).port;
}

/** POSTs `size` bytes of a form, with or without a declared length. */
function post(
  port: number,
  path: string,
  size: number,
  options: { headers?: Record<string, string>; declare?: boolean } = {},
): Promise<Sent> {
  return sendBody(port, {
    method: 'POST',
    path,
    size,
    declare: options.declare ?? false,
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...options.headers },
  });
}

const HOSTS = {
  'node:http': (options: Partial<LabgateOptions> = {}) => {
    const instance = auth(options);
    return listen(
      createNodeListener(async (request) => (await instance.handle(request)) ?? new Response('app'), {
        origin: ORIGIN,
      }),
    );
  },
  fastify: async (options: Partial<LabgateOptions> = {}) => {
    const app = Fastify();
    await app.register(fastifyLabgate, { labgate: auth(options) });
    app.all('/*', async () => 'app');
    await app.ready();
    return listen((req, res) => app.routing(req, res));
  },
  express: (options: Partial<LabgateOptions> = {}) => {
    const app = express();
    app.use(labgateMiddleware(auth(options)));
    app.use((_req, res) => {
      res.send('app');
    });
    return listen(app);
  },
};

for (const [host, start] of Object.entries(HOSTS)) {
  describe(`bodies on ${host}`, () => {
    it('refuses a 64 MiB sign-out body with 413, and memory stays flat (declared or streamed)', async () => {
      const port = await start();
      for (const declare of [true, false]) {
        global.gc?.();
        const before = process.memoryUsage.rss();
        const sent = await post(port, '/auth/logout', 64 * MiB, { declare, headers: { origin: ORIGIN } });
        const grown = process.memoryUsage.rss() - before;
        expect(sent.status).toBe(413);
        expect(sent.headers['connection']).toBe('close');
        expect(JSON.stringify(sent.headers)).not.toMatch(/stack|node_modules/);
        // Far less than the body: the reader kept at most its 8 KiB cap.
        expect(grown).toBeLessThan(24 * MiB);
        expect(sent.written).toBeLessThan(64 * MiB);
      }
    });

    it('reads a small sign-out form', async () => {
      const port = await start();
      const small = await post(port, '/auth/logout', 1024, { declare: true, headers: { origin: ORIGIN } });
      expect(small.status).toBe(303);
      const limit = await post(port, '/auth/logout', 8 * 1024, { headers: { origin: ORIGIN } });
      expect(limit.status).toBe(303);
      const over = await post(port, '/auth/logout', 8 * 1024 + 1, { headers: { origin: ORIGIN } });
      expect(over.status).toBe(413);
    });

    it('refuses a cross-site sign-out and a signed-out session end before reading the body', async () => {
      const port = await start();
      const forged = await post(port, '/auth/logout', 64 * MiB, { headers: { origin: 'http://127.0.0.2' } });
      expect(forged.status).toBe(403);
      expect(forged.written).toBeLessThan(64 * MiB);
      const signedOut = await post(port, '/auth/sessions', 64 * MiB, { headers: { origin: ORIGIN } });
      expect(signedOut.status).toBe(401);
      expect(signedOut.written).toBeLessThan(64 * MiB);
    });

    it('reads webhooks up to webhookMaxBytes (1 MiB by default), after the token check', async () => {
      const port = await start({ webhookSecret: 'hook-secret-0123456789' });
      const token = { 'x-gitlab-token': 'hook-secret-0123456789', 'content-type': 'application/json' };
      const wrong = await post(port, '/auth/webhooks/gitlab', 64 * MiB, {
        headers: { 'x-gitlab-token': 'wrong', 'content-type': 'application/json' },
      });
      expect(wrong.status).toBe(401);
      const big = await post(port, '/auth/webhooks/gitlab', MiB + 1, { declare: true, headers: token });
      expect(big.status).toBe(413);
      const raised = await start({ webhookSecret: 'hook-secret-0123456789', webhookMaxBytes: 2 * MiB });
      // Not JSON, but read: a 400 for the payload, not a 413 for its size.
      const read = await post(raised, '/auth/webhooks/gitlab', MiB + 1, { declare: true, headers: token });
      expect(read.status).toBe(400);
    });
  });
}
