/**
 * Traffic through the whole gateway, signed in: a 100 MB upload streamed with bounded memory, a slow
 * and a dead upstream, an upstream that tries to set labgate's cookie, identity headers spoofed in every
 * spelling on every kind of path, and the HTTP parsing the gateway refuses (docs/security.md,
 * GATEWAY-1, GATEWAY-4, GATEWAY-12, GATEWAY-13).
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { type GatewayStack, stackPerTest } from './harness.js';
import type { Echo } from './upstream.js';

const MiB = 1024 * 1024;

const start = stackPerTest();

const port = (s: GatewayStack) => Number(new URL(s.url).port);

/** One request, its body from a stream, its answer read whole. */
function send(
  s: GatewayStack,
  path: string,
  init: { method?: string; headers?: Record<string, string>; body?: Readable } = {},
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1',
      port: port(s),
      path,
      method: init.method ?? 'GET',
      headers: init.headers,
      agent: false,
    });
    req.on('error', reject);
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks).toString(),
        }),
      );
    });
    if (init.body) init.body.pipe(req);
    else req.end();
  });
}

/** Sends raw bytes and reads the status line of the answer. */
function raw(s: GatewayStack, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port(s), '127.0.0.1');
    let received = '';
    socket.on('data', (chunk) => {
      received += chunk.toString('latin1');
    });
    socket.on('error', reject);
    socket.on('close', () => resolve(received.split('\r\n')[0] ?? ''));
    socket.end(text);
  });
}

/** `size` bytes made as they are read, and their SHA-256 once all were read. */
function generated(size: number): { stream: Readable; sha256: () => string } {
  const hash = createHash('sha256');
  const block = Buffer.alloc(256 * 1024, 7);
  let left = size;
  const stream = new Readable({
    read() {
      if (left === 0) return void this.push(null);
      const chunk = left >= block.length ? block : block.subarray(0, left);
      left -= chunk.length;
      hash.update(chunk);
      this.push(chunk);
    },
  });
  return { stream, sha256: () => hash.digest('hex') };
}

describe('bodies and upstream failures', () => {
  it('streams a 100 MB upload of a signed-in user to the upstream intact (its memory: command.test.ts)', async () => {
    const s = await start();
    const cookie = (await s.signIn('bob')).jar.header(s.url);
    const body = generated(100 * MiB);
    const answer = await send(s, '/upload', {
      method: 'PUT',
      headers: { cookie, 'content-length': String(100 * MiB), 'content-type': 'application/octet-stream' },
      body: body.stream,
    });
    expect(answer.status).toBe(200);
    const echo = JSON.parse(answer.body) as Echo;
    expect(echo.bodyBytes).toBe(100 * MiB);
    expect(echo.sha256).toBe(body.sha256());
    expect(echo.headers['x-forwarded-user']).toBe('bob');
  });

  it('answers 504 when the upstream does not answer in time, 502 when it is down', async () => {
    const s = await start({ config: { upstreamTimeout: 300 } });
    const cookie = (await s.signIn('bob')).jar.header(s.url);
    const slow = await send(s, '/slow', { headers: { cookie } });
    expect(slow.status).toBe(504);
    expect(JSON.parse(slow.body)).toMatchObject({ error: 'upstream_timeout' });
    await s.upstream.close();
    const dead = await send(s, '/x', { headers: { cookie } });
    expect(dead.status).toBe(502);
    expect(JSON.parse(dead.body)).toMatchObject({ error: 'upstream_unavailable' });
    expect(dead.body).not.toMatch(/ECONNREFUSED|at .*\.js/);
    // The gateway itself answers on.
    expect((await send(s, '/ping')).status).toBe(200);
  });

  it('drops an upstream’s Set-Cookie for labgate’s cookie, keeps the app’s own', async () => {
    const s = await start();
    const cookie = (await s.signIn('bob')).jar.header(s.url);
    const answer = await send(s, '/set-cookie?name=app&name=labgate&name=labgate-tx-abc', {
      headers: { cookie },
    });
    const set = answer.headers['set-cookie'] ?? [];
    expect(set.some((c) => c.startsWith('app='))).toBe(true);
    expect(set.some((c) => c.startsWith('labgate'))).toBe(false);
  });
});

describe('identity headers sent by clients (GATEWAY-1)', () => {
  const spoofs = [
    'X-Forwarded-User',
    'x-forwarded-user',
    'X_Forwarded_User',
    'X.Forwarded.User',
    'X-Forwarded-Email',
    'X-Forwarded-Groups',
    'X-Forwarded-Preferred-Username',
    'X-Forwarded-Access-Token',
    'X-Auth-Request-User',
    'X_Auth_Request_Email',
    'Remote-User',
    'X-Remote-User',
    'GAP-Auth',
    'X-Labgate-Assertion',
  ];
  const spoofed = Object.fromEntries(spoofs.map((name) => [name, 'root']));
  const forged = (echo: Echo) =>
    echo.rawHeaders.filter((_, i) => i % 2 === 1).filter((value) => value === 'root').length;

  it('are stripped on a skip-auth route, on a preflight, and replaced once after sign-in', async () => {
    const s = await start({
      config: { skipPrefixes: ['/public'], skipAuthPreflight: true },
    });
    const skipped = JSON.parse((await send(s, '/public/x', { headers: spoofed })).body) as Echo;
    expect(forged(skipped)).toBe(0);
    const preflight = JSON.parse(
      (await send(s, '/api/x', { method: 'OPTIONS', headers: spoofed })).body,
    ) as Echo;
    expect(forged(preflight)).toBe(0);
    const cookie = (await s.signIn('bob')).jar.header(s.url);
    const signedIn = JSON.parse((await send(s, '/x', { headers: { ...spoofed, cookie } })).body) as Echo;
    expect(forged(signedIn)).toBe(0);
    const users = signedIn.rawHeaders.filter(
      (_, i) => i % 2 === 0 && signedIn.rawHeaders[i]!.toLowerCase() === 'x-forwarded-user',
    );
    expect(users).toHaveLength(1);
    expect(signedIn.headers['x-forwarded-user']).toBe('bob');
  });

  it('never reach the upstream from a request that is refused, and health checks never proxy', async () => {
    const s = await start();
    expect((await send(s, '/x', { headers: spoofed })).status).toBe(302);
    expect((await send(s, '/x', { headers: { ...spoofed, accept: 'application/json' } })).status).toBe(401);
    expect(
      (await send(s, '/ping', { headers: { ...spoofed, 'user-agent': 'kube-probe/1.29' } })).status,
    ).toBe(200);
    expect(s.upstream.requests).toHaveLength(0);
  });

  it('refuses a Connection header naming an identity header', async () => {
    const s = await start({ config: { skipPrefixes: ['/public'] } });
    const answer = await send(s, '/public/x', { headers: { connection: 'x-forwarded-user' } });
    expect(answer.status).toBe(400);
    expect(s.upstream.requests).toHaveLength(0);
  });
});

describe('HTTP parsing (GATEWAY-13)', () => {
  it('refuses Content-Length with Transfer-Encoding, two Content-Lengths and folded headers', async () => {
    const s = await start({ config: { skipPrefixes: ['/'] } });
    const head = 'POST /x HTTP/1.1\r\nHost: 127.0.0.1\r\n';
    expect(await raw(s, `${head}Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`)).toMatch(
      / 400 /,
    );
    expect(await raw(s, `${head}Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd`)).toMatch(/ 400 /);
    expect(await raw(s, `${head}X-A: 1\r\n folded\r\nContent-Length: 0\r\n\r\n`)).toMatch(/ 400 /);
    expect(s.upstream.requests).toHaveLength(0);
  });
});
