/**
 * The gateway's reverse proxy (src/gateway/proxy.ts) between a real client, a small node:http server
 * that does what the gateway does for a request (`upstreamHeaders`, then `forward` or `upgrade`) and
 * the echo upstream of ./upstream.ts: streamed bodies with flat memory, 502/504, an upstream dying
 * mid-body, keep-alive reuse, the gateway's cookies kept from the upstream (docs/security.md,
 * GATEWAY-4), WebSocket tunnels.
 */
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import http, { type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { isHeaderRefusal, upstreamHeaders } from '../../src/gateway/headers.js';
import {
  createProxy,
  type ForwardResult,
  type Proxy as GatewayProxy,
  type Tunnel,
} from '../../src/gateway/proxy.js';
import { connectWebSocket, type Echo, startUpstream, streamSha256, type Upstream } from './upstream.js';

const MiB = 1024 * 1024;
const HOST = 'gateway.test';
const IDENTITY = {
  'X-Forwarded-User': 'alice',
  'X-Forwarded-Email': 'alice@example.com',
  'X-Forwarded-Groups': 'acme,acme/platform',
};
const ownCookie = (name: string) => name === 'labgate' || name.startsWith('labgate-tx-');

/** A gateway reduced to the proxying: every request is "signed in" as alice. */
interface TestGateway {
  port: number;
  proxy: GatewayProxy;
  /** How each forwarded request ended, in order. */
  results: ForwardResult[];
  /** The headers built for each request, in order. */
  built: OutgoingHttpHeaders[];
  /** The next forward's result. */
  nextResult(): Promise<ForwardResult>;
  /** The next upgrade's outcome. */
  nextUpgrade(): Promise<Tunnel | null>;
  close(): Promise<void>;
}

async function startGateway(upstream: string, timeout = 10_000): Promise<TestGateway> {
  const proxy = createProxy({ upstream: new URL(upstream), timeout });
  const results: ForwardResult[] = [];
  const built: OutgoingHttpHeaders[] = [];
  const resultWaiters: ((r: ForwardResult) => void)[] = [];
  const upgradeWaiters: ((t: Tunnel | null) => void)[] = [];
  const upgrades: (Tunnel | null)[] = [];
  const init = (req: http.IncomingMessage, upgrade: boolean) => ({
    identity: IDENTITY,
    ownCookie,
    clientIp: req.socket.remoteAddress ?? '',
    proto: 'http' as const,
    host: HOST,
    trusted: false,
    upgrade,
  });
  const server = http.createServer(async (req, res) => {
    const headers = upstreamHeaders(req, init(req, false));
    if (isHeaderRefusal(headers)) {
      res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify(headers));
      return;
    }
    built.push(headers);
    const result = await proxy.forward(req, res, { path: req.url ?? '/', headers, ownCookie });
    results.push(result);
    resultWaiters.shift()?.(result);
  });
  server.on('upgrade', async (req, socket, head) => {
    const headers = upstreamHeaders(req, init(req, true));
    if (isHeaderRefusal(headers)) {
      socket.destroy();
      return;
    }
    built.push(headers);
    const tunnel = await proxy.upgrade(req, socket, head, { path: req.url ?? '/', headers, ownCookie });
    const waiter = upgradeWaiters.shift();
    if (waiter) waiter(tunnel);
    else upgrades.push(tunnel);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as AddressInfo).port,
    proxy,
    results,
    built,
    nextResult: () => new Promise((resolve) => resultWaiters.push(resolve)),
    nextUpgrade: () =>
      upgrades.length > 0
        ? Promise.resolve(upgrades.shift()!)
        : new Promise((resolve) => upgradeWaiters.push(resolve)),
    close: async () => {
      proxy.close();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** An answer read whole. */
interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** One request on its own connection, the body (if any) sent from a stream. */
function send(
  port: number,
  path: string,
  init: { method?: string; headers?: Record<string, string>; body?: Readable; agent?: http.Agent } = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1',
      port,
      path,
      method: init.method ?? 'GET',
      headers: init.headers,
      agent: init.agent ?? false,
    });
    req.on('error', reject);
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
      );
    });
    if (init.body) pipeline(init.body, req).catch(reject);
    else req.end();
  });
}

// The collector on demand (as `node --expose-gc` gives it), so memory is read without garbage in it.
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** The resident set once garbage is collected (V8 frees buffers' memory after the collection returns). */
async function settledRss(): Promise<number> {
  gc();
  await new Promise(setImmediate);
  gc();
  return process.memoryUsage().rss;
}

/** Reports bytes as a body streams; may ask the stream to wait for a measurement. */
type Step = (bytes: number) => Promise<void> | undefined;

/**
 * How much more memory the process holds while a body streams through than before: the resident set
 * read after a collection every 4 MiB, and the median of those readings (the native allocator alone
 * can swing the resident set by 20 MiB for a moment). A proxy that held the body would grow with it,
 * reading after reading.
 */
async function memoryWatch(): Promise<{ step: Step; grown(): number }> {
  const before = await settledRss();
  const readings: number[] = [];
  let next = 4 * MiB;
  let seen = 0;
  return {
    step(bytes) {
      seen += bytes;
      if (seen < next) return undefined;
      next += 4 * MiB;
      return settledRss().then((rss) => {
        readings.push(rss - before);
      });
    },
    grown: () => {
      const sorted = [...readings].sort((a, b) => a - b);
      return sorted[Math.floor(sorted.length / 2)] ?? Number.POSITIVE_INFINITY;
    },
  };
}

/**
 * `size` bytes cycled from a few random blocks of odd sizes (so no TCP segment lines up with them),
 * generated as they are read and hashed on the way: nothing holds the whole body.
 */
function generated(size: number, onChunk?: Step): { stream: Readable; sha256: () => string } {
  const blocks = [65521, 65519, 32749, 16381].map((n) => randomBytes(n));
  const hash = createHash('sha256');
  async function* chunks() {
    let left = size;
    for (let i = 0; left > 0; i++) {
      const block = blocks[i % blocks.length]!;
      const part = left >= block.length ? block : block.subarray(0, left);
      left -= part.length;
      hash.update(part);
      await onChunk?.(part.length);
      yield part;
    }
  }
  return { stream: Readable.from(chunks(), { objectMode: false }), sha256: () => hash.digest('hex') };
}

/** PUTs `size` generated bytes with a declared length; the answer and the body's SHA-256. */
async function upload(
  port: number,
  size: number,
  onChunk?: Step,
  path = '/upload',
): Promise<{ answer: Answer; sha256: string }> {
  const body = generated(size, onChunk);
  const answer = await send(port, path, {
    method: 'PUT',
    headers: { 'content-length': String(size), 'content-type': 'application/octet-stream' },
    body: body.stream,
  });
  return { answer, sha256: body.sha256() };
}

/** GETs `/stream?mb=N`, hashing the body as it comes and keeping none of it. */
function download(
  port: number,
  mb: number,
  onChunk?: Step,
): Promise<{ status: number; received: number; sha256: string }> {
  const hash = createHash('sha256');
  let received = 0;
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: `/stream?mb=${mb}`, agent: false });
    req.on('error', reject);
    req.on('response', (res) => {
      res.on('data', (chunk: Buffer) => {
        received += chunk.length;
        hash.update(chunk);
        const measuring = onChunk?.(chunk.length);
        if (measuring) {
          res.pause();
          void measuring.then(() => res.resume());
        }
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, received, sha256: hash.digest('hex') }));
      res.on('error', reject);
    });
  });
}

let upstream: Upstream;
const gateways: TestGateway[] = [];
async function gateway(target = upstream.url, timeout?: number): Promise<TestGateway> {
  const started = await startGateway(target, timeout);
  gateways.push(started);
  return started;
}

beforeAll(async () => {
  upstream = await startUpstream();
});
afterEach(async () => {
  await Promise.all(gateways.splice(0).map((g) => g.close()));
});
afterAll(() => upstream.close());

describe('forward', () => {
  it('delivers the headers as built, below the upstream’s base path', async () => {
    const gw = await gateway(`${upstream.url}/base/`);
    const answer = await send(gw.port, '/hello?x=1', {
      headers: {
        cookie: 'labgate=session; app=1; labgate-tx-abc=2',
        'x-forwarded-user': 'mallory',
        'x-forwarded-for': '198.51.100.1',
        'x-custom': 'yes',
      },
    });
    expect(answer.status).toBe(200);
    const echo = JSON.parse(answer.body.toString()) as Echo;
    expect(echo.url).toBe('/base/hello?x=1');
    const built = gw.built[0]!;
    for (const [name, value] of Object.entries(built)) expect(echo.headers[name]).toBe(value);
    expect(echo.headers['x-forwarded-user']).toBe('alice');
    expect(echo.headers['x-forwarded-for']).toBe('127.0.0.1');
    expect(echo.headers['x-forwarded-host']).toBe(HOST);
    expect(echo.headers['host']).toBe(HOST);
    expect(echo.headers['cookie']).toBe('app=1');
    expect(echo.headers['x-custom']).toBe('yes');
    // Exactly one of each identity header, whatever the client sent.
    const names = echo.rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());
    expect(names.filter((n) => n === 'x-forwarded-user')).toHaveLength(1);
    expect(gw.results[0]).toMatchObject({ status: 200 });
    expect(gw.results[0]!.upstreamMs).toBeGreaterThanOrEqual(0);
  });

  it('answers the upstream’s status and headers, minus hop-by-hop ones', async () => {
    const gw = await gateway();
    const answer = await send(gw.port, '/stream?mb=1');
    expect(answer.status).toBe(200);
    expect(answer.headers['content-length']).toBe(String(MiB));
    expect(answer.headers['content-type']).toBe('application/octet-stream');
    expect(answer.body.length).toBe(MiB);
    expect(createHash('sha256').update(answer.body).digest('hex')).toBe(streamSha256(1));
  });

  it('streams a 100 MB upload without holding it: the upstream gets every byte, memory stays flat', async () => {
    const gw = await gateway();
    // The allocator's working set settles during a first, smaller body; the 100 MB must add nothing.
    await upload(gw.port, 32 * MiB);
    const memory = await memoryWatch();
    const { answer, sha256 } = await upload(gw.port, 100 * MiB, memory.step);
    expect(answer.status).toBe(200);
    const echo = JSON.parse(answer.body.toString()) as Echo;
    expect(echo.bodyBytes).toBe(100 * MiB);
    expect(echo.sha256).toBe(sha256);
    expect(memory.grown()).toBeLessThan(20 * MiB);
  });

  it('sends a chunked body of unknown length on, chunked, intact', async () => {
    const gw = await gateway();
    const body = generated(3 * MiB + 17);
    const answer = await send(gw.port, '/chunked', { method: 'POST', body: body.stream });
    const echo = JSON.parse(answer.body.toString()) as Echo;
    expect(echo.headers['transfer-encoding']).toBe('chunked');
    expect(echo.bodyBytes).toBe(3 * MiB + 17);
    expect(echo.sha256).toBe(body.sha256());
  });

  it('streams a 100 MB download without holding it', async () => {
    const gw = await gateway();
    await download(gw.port, 32);
    const memory = await memoryWatch();
    const { status, received, sha256 } = await download(gw.port, 100, memory.step);
    expect(status).toBe(200);
    expect(received).toBe(100 * MiB);
    expect(sha256).toBe(streamSha256(100));
    expect(memory.grown()).toBeLessThan(20 * MiB);
  });

  it('answers 502 upstream_unavailable when nothing listens upstream', async () => {
    const closed = http.createServer();
    closed.listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const gw = await gateway(`http://127.0.0.1:${port}`);
    const answer = await send(gw.port, '/anything');
    expect(answer.status).toBe(502);
    expect(answer.headers['content-type']).toBe('application/json');
    expect(JSON.parse(answer.body.toString())).toMatchObject({ error: 'upstream_unavailable' });
    expect(answer.body.toString()).not.toMatch(/ECONNREFUSED|at |node:/);
    expect(gw.results[0]).toMatchObject({ status: 502, failure: 'ECONNREFUSED' });
  });

  it('answers 502 to a request with a body too, reading the rest of the body so the answer arrives', async () => {
    const closed = http.createServer();
    closed.listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const gw = await gateway(`http://127.0.0.1:${port}`);
    const { answer } = await upload(gw.port, 16 * MiB);
    expect(answer.status).toBe(502);
    expect(JSON.parse(answer.body.toString())).toMatchObject({ error: 'upstream_unavailable' });
  });

  it('relays an answer the upstream gives before reading the body', async () => {
    const gw = await gateway();
    const { answer } = await upload(gw.port, 16 * MiB, undefined, '/early');
    expect(answer.status).toBe(413);
    expect(JSON.parse(answer.body.toString())).toEqual({ error: 'too_large' });
    expect(gw.results[0]).toMatchObject({ status: 413 });
  });

  it('answers 504 upstream_timeout when the upstream sends no headers in time, and drops its request', async () => {
    const gw = await gateway(upstream.url, 200);
    const answer = await send(gw.port, '/slow?timeout');
    expect(answer.status).toBe(504);
    expect(JSON.parse(answer.body.toString())).toMatchObject({ error: 'upstream_timeout' });
    expect(gw.results[0]).toMatchObject({ status: 504, failure: 'timeout' });
    // The upstream sees its connection closed: the gateway gave up on the request.
    await (await upstream.arrival('/slow?timeout')).closed;
  });

  it('destroys the client’s connection when the upstream dies mid-body, never hangs', async () => {
    const gw = await gateway();
    const result = gw.nextResult();
    const seen = await new Promise<{ error: string; received: number; declared: string | undefined }>(
      (resolve) => {
        let received = 0;
        let declared: string | undefined;
        const req = http.get({ host: '127.0.0.1', port: gw.port, path: '/die', agent: false });
        req.on('error', (error) => resolve({ error: error.message, received, declared }));
        req.on('response', (res) => {
          declared = res.headers['content-length'];
          res.on('data', (chunk: Buffer) => {
            received += chunk.length;
          });
          res.on('error', (error) => resolve({ error: error.message, received, declared }));
          res.on('end', () => resolve({ error: 'none', received, declared }));
        });
      },
    );
    expect(seen.error).not.toBe('none');
    expect(seen.declared).toBe(String(MiB));
    expect(seen.received).toBeLessThan(MiB);
    expect(await result).toMatchObject({ status: 200, failure: 'upstream_aborted' });
  });

  it('drops the upstream request when the client leaves', async () => {
    const gw = await gateway();
    const result = gw.nextResult();
    const req = http.get({ host: '127.0.0.1', port: gw.port, path: '/slow?client-leaves', agent: false });
    req.on('error', () => undefined);
    const arrived = await upstream.arrival('/slow?client-leaves');
    req.destroy();
    await arrived.closed;
    expect(await result).toMatchObject({ status: 499, failure: 'client_closed' });
  });

  it('reuses one upstream connection for requests in sequence (keep-alive)', async () => {
    const gw = await gateway();
    await send(gw.port, '/keep-alive/1');
    await send(gw.port, '/keep-alive/2');
    const first = await upstream.arrival('/keep-alive/1');
    const second = await upstream.arrival('/keep-alive/2');
    expect(second.remotePort).toBe(first.remotePort);
  });

  it('drops the upstream’s Set-Cookie lines for the gateway’s own cookies', async () => {
    const gw = await gateway();
    const answer = await send(gw.port, '/set-cookie?name=app&name=labgate&name=labgate-tx-1&name=theme');
    expect(answer.headers['set-cookie']).toEqual([
      'app=from-upstream; Path=/',
      'theme=from-upstream; Path=/',
    ]);
  });

  it('refuses an invalid upstream URL or timeout at creation', () => {
    expect(() => createProxy({ upstream: new URL('ftp://127.0.0.1/'), timeout: 1000 })).toThrow(TypeError);
    expect(() => createProxy({ upstream: new URL('http://127.0.0.1/'), timeout: 0 })).toThrow(TypeError);
  });
});

describe('upgrade', () => {
  it('tunnels a WebSocket after the upstream’s 101, and close() ends it', async () => {
    const gw = await gateway(`${upstream.url}/`);
    const client = await connectWebSocket(gw.port, '/ws/chat?room=1', {
      'X-Forwarded-User': 'mallory',
      Cookie: 'labgate=session; app=1',
    });
    expect(client.status).toBe(101);
    expect(client.headers.find(([n]) => n === 'upgrade')?.[1]).toBe('websocket');
    expect(client.headers.some(([n]) => n === 'sec-websocket-accept')).toBe(true);
    const tunnel = await gw.nextUpgrade();
    expect(tunnel).not.toBeNull();

    client.send('hello');
    expect(await client.next()).toBe('hello');
    client.send('x'.repeat(70_000));
    expect(await client.next()).toBe('x'.repeat(70_000));

    const seen = await upstream.arrival('/ws/chat?room=1');
    expect(seen.headers['x-forwarded-user']).toBe('alice');
    expect(seen.headers['cookie']).toBe('app=1');
    expect(seen.headers['upgrade']).toBe('websocket');

    tunnel!.close();
    await client.closed;
    await tunnel!.closed;
    await seen.closed;
  });

  it('ends the tunnel when the upstream closes', async () => {
    const gw = await gateway();
    const client = await connectWebSocket(gw.port, '/ws/closing');
    const tunnel = await gw.nextUpgrade();
    const seen = await upstream.arrival('/ws/closing');
    client.send('ping');
    expect(await client.next()).toBe('ping');
    // A close frame: the echo answers it and ends its socket.
    client.socket.write(Buffer.from([0x88, 0x80, 1, 2, 3, 4]));
    await seen.closed;
    await tunnel!.closed;
    await client.closed;
  });

  it('relays any other answer as a plain response, without the gateway’s cookies, and ends it', async () => {
    const gw = await gateway();
    const client = await connectWebSocket(gw.port, '/not-a-socket');
    expect(client.status).toBe(403);
    expect(JSON.parse(client.body)).toEqual({ error: 'no_websocket_here' });
    expect(client.headers.some(([n]) => n === 'set-cookie')).toBe(false);
    expect(client.headers.find(([n]) => n === 'connection')?.[1]).toBe('close');
    expect(await gw.nextUpgrade()).toBeNull();
  });

  it('answers 502 on the socket when the upstream is unreachable', async () => {
    const closed = http.createServer();
    closed.listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const gw = await gateway(`http://127.0.0.1:${port}`);
    const client = await connectWebSocket(gw.port, '/ws/x');
    expect(client.status).toBe(502);
    expect(JSON.parse(client.body)).toMatchObject({ error: 'upstream_unavailable' });
    expect(await gw.nextUpgrade()).toBeNull();
  });
});
