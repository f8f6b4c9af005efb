/**
 * Which requests are labgate's routes (docs/security.md, HTTP-4): one function, `routeOf`, decides for
 * the core and the Express adapter, and this one table holds for both, over real sockets for Express:
 * dot segments, encoded dots and slashes, backslashes, repeated and trailing slashes. Also (HTTP-2):
 * any method on a labgate route answers 405 with the route's `Allow`, never a stack trace.
 */
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { labgate as labgateMiddleware } from '../../src/adapters/express.js';
import { createLabgate, routeOf } from '../../src/core/index.js';

const ORIGIN = 'http://127.0.0.1:3000';

/** Raw request target → the labgate route it names (`null`: the app's). */
const TABLE: [string, string | null][] = [
  ['/auth/session', '/session'],
  ['/auth/session/', '/session'],
  ['/auth/session?x=1', '/session'],
  ['/auth/session#frag', '/session'],
  ['/auth', ''],
  ['/auth/', ''],
  ['/auth?returnTo=/', ''],
  ['/authx', null],
  ['/authx/session', null],
  ['/Auth/session', null],
  ['/', null],
  ['/app/auth/session', null],
  ['/x/../auth/session', '/session'],
  ['/auth/./session', '/session'],
  ['/auth/x/../session', '/session'],
  ['/auth/../auth/session', '/session'],
  ['/auth/..', null],
  ['/x/%2e%2e/auth/session', '/session'],
  ['/x/%2E%2e/auth/session', '/session'],
  ['/auth/%2e/session', '/session'],
  ['/auth%2Fsession', null],
  ['/auth%2fsession', null],
  ['/auth/session%2F', '/session%2F'],
  ['//auth/session', null],
  ['/auth//session', '//session'],
  ['/auth\\session', '/session'],
  ['/x/..\\auth\\session', '/session'],
  ['/auth/%73ession', '/%73ession'],
];

describe('routeOf', () => {
  it.each(TABLE)('%s → %s', (target, route) => {
    expect(routeOf(target, '/auth')).toBe(route);
  });
});

const auth = createLabgate({
  gitlabUrl: 'http://127.0.0.1:9',
  clientId: 'routes',
  url: ORIGIN,
  secret: randomBytes(32).toString('base64url'),
  logger: false,
});

/** What the core says of a target: `route` when labgate answers it, `app` when it returns null. */
async function coreAnswer(target: string): Promise<{ who: 'labgate' | 'app'; status: number }> {
  const response = await auth.handle(
    new Request(`${ORIGIN}${target}`, { headers: { accept: 'application/json' } }),
  );
  return response ? { who: 'labgate', status: response.status } : { who: 'app', status: 200 };
}

let port: number;
let server: http.Server;
beforeAll(async () => {
  const app = express();
  app.use(labgateMiddleware(auth));
  app.use((_req, res) => {
    res.status(200).set('x-answered-by', 'app').send('app');
  });
  server = http.createServer(app);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  port = (server.address() as AddressInfo).port;
});
afterAll(() => new Promise((resolve) => server.close(resolve)));

/** Sends a raw request line (no normalisation by any client) to the Express app. */
function raw(
  method: string,
  target: string,
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const request = http.request({
      host: '127.0.0.1',
      port,
      method,
      path: target,
      agent: false,
      headers: { accept: 'application/json' },
    });
    request.on('response', (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (c: Buffer) => chunks.push(c));
      response.on('end', () =>
        resolve({
          status: response.statusCode ?? 0,
          headers: response.headers,
          body: Buffer.concat(chunks).toString(),
        }),
      );
    });
    request.on('error', reject);
    request.end();
  });
}

describe('the core and Express agree on every target', () => {
  it.each(TABLE.filter(([target]) => !target.includes('#')))('%s', async (target, route) => {
    const core = await coreAnswer(target);
    const viaExpress = await raw('GET', target);
    const expressWho = viaExpress.headers['x-answered-by'] === 'app' ? 'app' : 'labgate';
    expect(core.who).toBe(route === null ? 'app' : 'labgate');
    expect(expressWho).toBe(core.who);
    expect(viaExpress.status).toBe(core.status);
  });
});

describe('methods on labgate routes', () => {
  it('answers TRACE through Express with 405, the route’s Allow and labgate’s error, no stack trace', async () => {
    for (const [target, allow] of [
      ['/auth/login', 'GET, HEAD'],
      ['/auth/callback', 'GET'],
      ['/auth/logout', 'GET, HEAD, POST'],
      ['/x/../auth/session', 'GET, HEAD'],
    ] as const) {
      const answer = await raw('TRACE', target);
      expect(answer.status).toBe(405);
      expect(answer.headers['allow']).toBe(allow);
      expect(JSON.parse(answer.body)).toMatchObject({ error: 'method_not_allowed' });
      expect(answer.body).not.toMatch(/ at |node_modules|\.ts:/);
    }
    // Not labgate's: the app (here, its catch-all) decides.
    expect((await raw('TRACE', '/other')).headers['x-answered-by']).toBe('app');
  });

  it('answers every other method alike in the core and through Express', async () => {
    for (const method of ['PUT', 'DELETE', 'PATCH', 'OPTIONS', 'PROPFIND']) {
      const core = await auth.handle(new Request(`${ORIGIN}/auth/callback`, { method }));
      const viaExpress = await raw(method, '/auth/callback');
      expect(core?.status).toBe(405);
      expect(core?.headers.get('allow')).toBe('GET');
      expect(viaExpress.status).toBe(405);
      expect(viaExpress.headers['allow']).toBe('GET');
    }
  });
});
