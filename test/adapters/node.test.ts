/**
 * The Node↔Web conversion, tested over real sockets: `node:http` servers on 127.0.0.1 and real
 * `fetch`/`node:http`/`node:net` clients. No mocks; synchronisation by events, never by sleeping.
 */
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  clientAddress,
  createNodeListener,
  type FetchHandler,
  LightResponse,
  type NodeListenerOptions,
  sendWebResponse,
  toWebRequest,
} from '../../src/adapters/node.js';

const servers: http.Server[] = [];
const agents: http.Agent[] = [];

afterEach(async () => {
  for (const agent of agents.splice(0)) agent.destroy();
  await Promise.all(
    servers.splice(0).map((server) => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(resolve));
    }),
  );
});

interface Served {
  url: string;
  port: number;
  server: http.Server;
}

async function serve(listener: (req: IncomingMessage, res: ServerResponse) => void): Promise<Served> {
  const server = http.createServer(listener);
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, port, server };
}

function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

interface Sent {
  status: number;
  statusMessage: string;
  headers: http.IncomingHttpHeaders;
  rawHeaders: string[];
  body: Buffer;
}

interface SendInit {
  method?: string;
  path?: string;
  /** Raw header list `[name, value, name, value…]`; when it holds `Host`, no other is added. */
  headers?: string[];
  body?: Buffer | string;
  agent?: http.Agent;
}

/** One request with `node:http`, which sends targets and repeated headers exactly as given. */
function send(port: number, init: SendInit = {}): Promise<Sent> {
  const headers = init.headers ?? [];
  const hasHost = headers.some((value, i) => i % 2 === 0 && value.toLowerCase() === 'host');
  return new Promise((resolve, reject) => {
    const request = http.request(
      {
        host: '127.0.0.1',
        port,
        method: init.method ?? 'GET',
        path: init.path ?? '/',
        headers: hasHost ? headers : ['Host', `127.0.0.1:${port}`, ...headers],
        setHost: false,
        agent: init.agent ?? false,
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('error', reject);
        response.on('end', () =>
          resolve({
            status: response.statusCode ?? 0,
            statusMessage: response.statusMessage ?? '',
            headers: response.headers,
            rawHeaders: response.rawHeaders,
            body: Buffer.concat(chunks),
          }),
        );
      },
    );
    request.on('error', reject);
    request.end(init.body);
  });
}

/** The exact bytes a server answers to `request` (which must ask for `Connection: close`). */
async function exchangeRaw(port: number, request: string): Promise<string> {
  const socket = net.connect(port, '127.0.0.1');
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.write(request);
  await once(socket, 'close');
  return Buffer.concat(chunks).toString('latin1');
}

interface Echo {
  method: string;
  url: string;
  headers: [string, string][];
  body: string;
}

const echo: FetchHandler = async (request) =>
  Response.json({
    method: request.method,
    url: request.url,
    headers: [...request.headers],
    body: request.body ? await request.text() : '',
  } satisfies Echo);

async function echoServer(options: NodeListenerOptions = {}): Promise<Served> {
  return serve(createNodeListener(echo, options));
}

async function echoed(port: number, init: SendInit = {}): Promise<Echo> {
  const sent = await send(port, init);
  expect(sent.status).toBe(200);
  return JSON.parse(sent.body.toString('utf8')) as Echo;
}

function header(result: Echo, name: string): string | undefined {
  return result.headers.find(([key]) => key === name)?.[1];
}

function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

describe('toWebRequest: URL', () => {
  it('keeps the method, path, query and percent-encoding as received', async () => {
    const { port } = await echoServer();
    const path = '/a%20b/%E2%9C%93/c%2Fd?q=a%26b&plus=1+2&slash=%2F&empty=&q=2';
    const result = await echoed(port, { method: 'PUT', path, body: '' });
    expect(result.method).toBe('PUT');
    expect(result.url).toBe(`http://127.0.0.1:${port}${path}`);
    expect(new URL(result.url).searchParams.getAll('q')).toEqual(['a&b', '2']);
  });

  it('takes the host from Host and ignores X-Forwarded-* without trustProxy', async () => {
    const { port } = await echoServer();
    const result = await echoed(port, {
      path: '/x?y=1',
      headers: ['Host', 'internal:8080', 'X-Forwarded-Proto', 'https', 'X-Forwarded-Host', 'public.example'],
    });
    expect(result.url).toBe('http://internal:8080/x?y=1');
    // Still visible as headers, for whoever wants to read them.
    expect(header(result, 'x-forwarded-host')).toBe('public.example');
  });

  it('honours the first X-Forwarded-Proto and X-Forwarded-Host with trustProxy', async () => {
    const { port } = await echoServer({ trustProxy: true });
    const result = await echoed(port, {
      path: '/x?y=1',
      headers: [
        'Host',
        'internal:8080',
        'X-Forwarded-Proto',
        'https, http',
        'X-Forwarded-Host',
        'public.example:8443, internal:8080',
      ],
    });
    expect(result.url).toBe('https://public.example:8443/x?y=1');
  });

  it('refuses forwarded values that are not a scheme or a host, with trustProxy', async () => {
    const { port } = await echoServer({ trustProxy: true });
    const result = await echoed(port, {
      path: '/x',
      headers: [
        'Host',
        'internal:8080',
        'X-Forwarded-Proto',
        'javascript',
        'X-Forwarded-Host',
        'evil.example/x@y',
      ],
    });
    expect(result.url).toBe('http://internal:8080/x');
    const proxied = await echoed(port, {
      path: '/x',
      headers: [
        'Host',
        'internal:8080',
        'X-Forwarded-Proto',
        'HTTPS',
        'X-Forwarded-Host',
        'evil.example:99999',
      ],
    });
    expect(proxied.url).toBe('https://internal:8080/x');
  });

  it('lets the configured origin win over Host and X-Forwarded-Host, even with trustProxy', async () => {
    const { port } = await echoServer({ origin: 'https://app.example.com', trustProxy: true });
    const result = await echoed(port, {
      path: '/auth/callback?code=1',
      headers: ['Host', 'evil.example', 'X-Forwarded-Host', 'evil2.example', 'X-Forwarded-Proto', 'http'],
    });
    expect(result.url).toBe('https://app.example.com/auth/callback?code=1');
  });

  it('keeps malformed request targets as paths on the configured origin', async () => {
    const { port } = await echoServer({ origin: 'https://app.example.com/' });
    const cases: [string, string][] = [
      ['//evil.example/x', 'https://app.example.com//evil.example/x'],
      ['http://evil.example/y?z=1', 'https://app.example.com/http://evil.example/y?z=1'],
      ['*', 'https://app.example.com/*'],
      ['/a#frag?x=1', 'https://app.example.com/a%23frag?x=1'],
    ];
    for (const [path, expected] of cases) {
      const result = await echoed(port, { method: 'OPTIONS', path });
      expect(result.url).toBe(expected);
      expect(new URL(result.url).origin).toBe('https://app.example.com');
    }
  });

  it('keeps malformed request targets on the Host origin without a configured one', async () => {
    const { port } = await echoServer();
    const result = await echoed(port, { path: '//evil.example/x', headers: ['Host', 'app.internal'] });
    expect(new URL(result.url).host).toBe('app.internal');
    expect(new URL(result.url).pathname).toBe('//evil.example/x');
  });

  it('falls back to localhost when Host is invalid or sent twice', async () => {
    const { port } = await echoServer();
    const invalid = await echoed(port, { path: '/p', headers: ['Host', 'evil.example/x@y'] });
    expect(invalid.url).toBe('http://localhost/p');
    const twice = await echoed(port, { path: '/p', headers: ['Host', 'a.example', 'Host', 'b.example'] });
    expect(twice.url).toBe('http://localhost/p');
  });

  it('refuses an origin that is not a bare http(s) origin, at creation', () => {
    for (const origin of [
      'app.example.com',
      'ftp://app.example.com',
      'https://app.example.com/base',
      'https://u:p@a.example',
    ]) {
      expect(() => createNodeListener(echo, { origin })).toThrow(TypeError);
    }
  });
});

describe('toWebRequest: headers', () => {
  it('keeps repeated headers: ", " in general, "; " for cookies, pseudo-headers never', async () => {
    const { port } = await echoServer();
    const result = await echoed(port, {
      headers: [
        'Accept',
        'text/html',
        'accept',
        'application/json',
        'X-Custom',
        '1',
        'X-Custom',
        '2',
        'Cookie',
        'a=1',
        'Cookie',
        'b=2',
        'Authorization',
        'Bearer t',
      ],
    });
    expect(header(result, 'accept')).toBe('text/html, application/json');
    expect(header(result, 'x-custom')).toBe('1, 2');
    expect(header(result, 'cookie')).toBe('a=1; b=2');
    expect(header(result, 'authorization')).toBe('Bearer t');
    expect(result.headers.some(([name]) => name.startsWith(':'))).toBe(false);
  });
});

describe('toWebRequest: body', () => {
  it('streams urlencoded, JSON and a 1 MiB binary body to the handler intact', async () => {
    const { url } = await serve(
      createNodeListener(async (request) => {
        const type = request.headers.get('content-type') ?? '';
        if (type.startsWith('application/x-www-form-urlencoded')) {
          const form = await request.formData();
          return Response.json({ a: form.getAll('a'), b: form.get('b') });
        }
        if (type.startsWith('application/json')) return Response.json(await request.json());
        return new Response(sha256(new Uint8Array(await request.arrayBuffer())));
      }),
    );
    const form = await fetch(`${url}/form`, {
      method: 'POST',
      body: new URLSearchParams([
        ['a', '1'],
        ['a', 'two words'],
        ['b', 'é&='],
      ]),
    });
    expect(await form.json()).toEqual({ a: ['1', 'two words'], b: 'é&=' });

    const json = { nested: { list: [1, 'x', null] }, text: 'ü' };
    const posted = await fetch(`${url}/json`, {
      method: 'PATCH',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(json),
    });
    expect(await posted.json()).toEqual(json);

    const big = randomBytes(1024 * 1024);
    const binary = await fetch(`${url}/bytes`, {
      method: 'POST',
      headers: { 'content-type': 'application/octet-stream' },
      body: big,
    });
    expect(await binary.text()).toBe(sha256(big));
  });

  it('rebuilds a body an Express-like middleware already parsed into req.body', async () => {
    const seen: { type: string | null; length: string | null; encoding: string | null; body: string }[] = [];
    const { url } = await serve(async (req, res) => {
      // What body-parser does: read the whole stream, then leave the result on req.body.
      const chunks: Buffer[] = [];
      for await (const chunk of req) chunks.push(chunk as Buffer);
      const raw = Buffer.concat(chunks);
      const type = req.headers['content-type'] ?? '';
      const parsed = req as IncomingMessage & { body?: unknown };
      if (type.startsWith('application/json')) parsed.body = JSON.parse(raw.toString('utf8'));
      else if (type.startsWith('application/x-www-form-urlencoded')) {
        const body: Record<string, string | string[]> = {};
        for (const [key, value] of new URLSearchParams(raw.toString('utf8'))) {
          const previous = body[key];
          body[key] = previous === undefined ? value : [...[previous].flat(), value];
        }
        parsed.body = body;
      } else if (type.startsWith('text/')) parsed.body = raw.toString('utf8');
      else parsed.body = raw;

      const request = toWebRequest(req, { response: res });
      const bytes = new Uint8Array(await request.arrayBuffer());
      seen.push({
        type: request.headers.get('content-type'),
        length: request.headers.get('content-length'),
        encoding: request.headers.get('content-encoding'),
        body: type.startsWith('application/octet-stream') ? sha256(bytes) : new TextDecoder().decode(bytes),
      });
      await sendWebResponse(res, new Response('ok'));
    });

    const post = async (type: string, body: BodyInit) => {
      const response = await fetch(url, { method: 'POST', headers: { 'content-type': type }, body });
      expect(await response.text()).toBe('ok');
      return seen.at(-1)!;
    };

    const json = await post('application/json', JSON.stringify({ user: { name: 'Ada' }, n: [1, 2] }));
    expect(JSON.parse(json.body)).toEqual({ user: { name: 'Ada' }, n: [1, 2] });
    expect(json.length).toBe(String(Buffer.byteLength(json.body)));

    const form = await post('application/x-www-form-urlencoded', 'a=1&a=2&b=x+y&c=%C3%A9');
    expect([...new URLSearchParams(form.body)]).toEqual([
      ['a', '1'],
      ['a', '2'],
      ['b', 'x y'],
      ['c', 'é'],
    ]);
    expect(form.type).toBe('application/x-www-form-urlencoded');

    const text = await post('text/plain;charset=utf-8', 'plain text ✓');
    expect(text.body).toBe('plain text ✓');

    const big = randomBytes(1024 * 1024);
    const binary = await post('application/octet-stream', big);
    expect(binary.body).toBe(sha256(big));
    expect(binary.length).toBe(String(big.byteLength));
  });

  it('drains the rest of a body the handler stopped reading, so the connection carries the next request', async () => {
    let connections = 0;
    const { port, server } = await serve(
      createNodeListener(async (request) => {
        if (request.body) {
          const reader = request.body.getReader();
          await reader.read();
          reader.releaseLock();
        }
        return new Response(`${request.method} answered`);
      }),
    );
    server.on('connection', () => connections++);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    agents.push(agent);
    const first = await send(port, { method: 'POST', body: Buffer.alloc(64 * 1024 * 1024, 7), agent });
    expect(first.body.toString()).toBe('POST answered');
    expect((await send(port, { agent })).body.toString()).toBe('GET answered');
    expect(connections).toBe(1);
  });

  it('streams the body when a middleware set req.body without reading the stream', async () => {
    const { url } = await serve((req, res) => {
      // body-parser 1.x leaves `{}` for content types it does not parse, the stream untouched.
      (req as IncomingMessage & { body?: unknown }).body = {};
      const request = toWebRequest(req, { response: res });
      void request.text().then((text) => sendWebResponse(res, new Response(text)));
    });
    const response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'multipart/form-data; boundary=x' },
      body: '--x\r\ncontent-disposition: form-data; name="f"\r\n\r\nv\r\n--x--\r\n',
    });
    expect(await response.text()).toContain('name="f"\r\n\r\nv\r\n--x--');
  });

  it('reads nothing until the handler does: a later middleware still gets the whole body', async () => {
    const big = randomBytes(1024 * 1024);
    const { url } = await serve(async (req, res) => {
      // A labgate middleware converts every request; a handler that returns null reads no body.
      toWebRequest(req, { response: res });
      await Promise.resolve();
      // Then body-parser (raw-body) listens to 'data' without calling resume().
      const body = await new Promise<Buffer>((resolve, reject) => {
        const chunks: Buffer[] = [];
        req.on('data', (chunk: Buffer) => chunks.push(chunk));
        req.on('end', () => resolve(Buffer.concat(chunks)));
        req.on('error', reject);
      });
      res.end(sha256(body));
    });
    const response = await fetch(url, { method: 'POST', body: big });
    expect(await response.text()).toBe(sha256(big));
  });

  it('drains a body the handler never read, so a keep-alive connection carries the next request', async () => {
    let connections = 0;
    const { port, server } = await serve(
      createNodeListener((request) => new Response(`${request.method} answered`)),
    );
    server.on('connection', () => connections++);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    agents.push(agent);
    // Larger than the loopback buffers, so the client can finish only if the server reads it.
    const big = Buffer.alloc(64 * 1024 * 1024, 7);
    const first = await send(port, { method: 'POST', body: big, agent });
    expect(first.body.toString()).toBe('POST answered');
    const second = await send(port, { agent });
    expect(second.body.toString()).toBe('GET answered');
    expect(connections).toBe(1);
  });
});

describe('toWebRequest: signal', () => {
  it('aborts request.signal when the client disconnects while the handler awaits', async () => {
    const entered = deferred();
    const aborted = deferred<unknown>();
    const { port } = await serve(
      createNodeListener(async (request) => {
        request.signal.addEventListener('abort', () => aborted.resolve(request.signal.reason));
        entered.resolve();
        await aborted.promise;
        return new Response('too late');
      }),
    );
    const client = http.get({ host: '127.0.0.1', port, path: '/slow', agent: false });
    client.on('error', () => {});
    await entered.promise;
    client.destroy();
    const reason = await aborted.promise;
    expect(reason).toBeInstanceOf(DOMException);
    expect((reason as DOMException).name).toBe('AbortError');
  });

  it('aborts after a POST body was fully read, while the response is pending', async () => {
    const read = deferred<string>();
    const aborted = deferred();
    const { port } = await serve(
      createNodeListener(async (request) => {
        read.resolve(await request.text());
        if (!request.signal.aborted) {
          await once(request.signal as unknown as EventTarget, 'abort');
        }
        aborted.resolve();
        return new Response('too late');
      }),
    );
    const client = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/', agent: false });
    client.on('error', () => {});
    client.end('payload');
    expect(await read.promise).toBe('payload');
    client.destroy();
    await aborted.promise;
  });

  it('without `response`, aborts while the request is still in flight', async () => {
    const entered = deferred<Request>();
    const aborted = deferred();
    const { port } = await serve((req) => {
      const request = toWebRequest(req);
      request.signal.addEventListener('abort', () => aborted.resolve());
      entered.resolve(request);
    });
    const client = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/', agent: false });
    client.on('error', () => {});
    client.write('part of a body');
    await entered.promise;
    client.destroy();
    await aborted.promise;
    expect((await entered.promise).signal.aborted).toBe(true);
  });

  it('does not abort once the response was sent, even when the connection closes afterwards', async () => {
    const handled = deferred<Request>();
    const socketClosed = deferred();
    const { port, server } = await serve(async (req, res) => {
      const request = toWebRequest(req, { response: res });
      await sendWebResponse(res, new Response('done'));
      handled.resolve(request);
    });
    server.on('connection', (socket: net.Socket) => socket.on('close', () => socketClosed.resolve()));
    const sent = await send(port, { path: '/' });
    expect(sent.body.toString()).toBe('done');
    const request = await handled.promise;
    await socketClosed.promise;
    expect(request.signal.aborted).toBe(false);
  });

  it('follows an external signal', async () => {
    const shutdown = new AbortController();
    const { url } = await serve(
      createNodeListener(
        async (request) => {
          shutdown.abort('shutting down');
          return new Response(`${request.signal.aborted} ${String(request.signal.reason)}`);
        },
        { signal: shutdown.signal },
      ),
    );
    expect(await (await fetch(url)).text()).toBe('true shutting down');
  });
});

describe('sendWebResponse', () => {
  const cookies = [
    'session=abc; Path=/; HttpOnly; Expires=Wed, 21 Oct 2037 07:28:00 GMT',
    'theme=dark; Path=/',
    'tx=1; Max-Age=600; SameSite=Lax',
  ];

  function withCookies(): Response {
    const headers = new Headers({ 'content-type': 'text/plain' });
    for (const cookie of cookies) headers.append('set-cookie', cookie);
    return new Response('cookies', { headers });
  }

  it('sends several Set-Cookie headers as separate header lines', async () => {
    const { url, port } = await serve(createNodeListener(() => withCookies()));
    const fetched = await fetch(url);
    expect(fetched.headers.getSetCookie()).toEqual(cookies);

    const raw = await send(port);
    const lines = raw.rawHeaders.filter(
      (_, i) => i % 2 === 1 && raw.rawHeaders[i - 1]!.toLowerCase() === 'set-cookie',
    );
    expect(lines).toEqual(cookies);
  });

  it('keeps a Set-Cookie a middleware already put on res, after it', async () => {
    const { url } = await serve(async (_req, res) => {
      res.setHeader('set-cookie', 'earlier=1; Path=/');
      res.setHeader('x-overridden', 'old');
      await sendWebResponse(res, new Response('ok', { headers: { 'x-overridden': 'new' } }));
    });
    const plain = await fetch(url);
    expect(plain.headers.getSetCookie()).toEqual(['earlier=1; Path=/']);
    expect(plain.headers.get('x-overridden')).toBe('new');

    const { url: url2 } = await serve(async (_req, res) => {
      res.setHeader('set-cookie', 'earlier=1; Path=/');
      await sendWebResponse(res, withCookies());
    });
    expect((await fetch(url2)).headers.getSetCookie()).toEqual(['earlier=1; Path=/', ...cookies]);
  });

  it('sends the status, the status text and every header, but not hop-by-hop ones', async () => {
    const { port } = await serve(
      createNodeListener(
        () =>
          new Response('short and stout', {
            status: 418,
            statusText: 'Short And Stout',
            headers: [
              ['x-multi', 'a'],
              ['x-multi', 'b'],
              ['cache-control', 'no-store'],
              ['connection', 'close'],
              ['transfer-encoding', 'gzip'],
            ],
          }),
      ),
    );
    const sent = await send(port);
    expect(sent.status).toBe(418);
    expect(sent.statusMessage).toBe('Short And Stout');
    expect(sent.headers['x-multi']).toBe('a, b');
    expect(sent.headers['cache-control']).toBe('no-store');
    // Framing is Node's: a body ready whole goes with its length, never with the response's "gzip".
    expect(sent.headers['transfer-encoding']).toBeUndefined();
    expect(sent.headers['content-length']).toBe('15');
    expect(sent.body.toString()).toBe('short and stout');
  });

  it('frames a stream of several chunks itself (chunked), whatever Transfer-Encoding the response says', async () => {
    const { port } = await serve(
      createNodeListener(() => {
        const parts = ['one ', 'two ', 'three'];
        return new Response(
          new ReadableStream<Uint8Array>({
            async pull(controller) {
              // Each chunk a macrotask later: not a body that is ready whole.
              await new Promise((resolve) => setImmediate(resolve));
              const part = parts.shift();
              if (part === undefined) controller.close();
              else controller.enqueue(new TextEncoder().encode(part));
            },
          }),
          { headers: { 'transfer-encoding': 'gzip' } },
        );
      }),
    );
    const sent = await send(port);
    expect(sent.headers['transfer-encoding']).toBe('chunked');
    expect(sent.headers['content-length']).toBeUndefined();
    expect(sent.body.toString()).toBe('one two three');
  });

  it('answers HEAD with the headers, content-length included, and no body', async () => {
    const cancelled = deferred();
    const { port } = await serve(
      createNodeListener(
        () =>
          new Response(
            new ReadableStream({
              start(controller) {
                // Never closed: only cancelling it lets the response end.
                controller.enqueue(new TextEncoder().encode('hello world'));
              },
              cancel() {
                cancelled.resolve();
              },
            }),
            { headers: { 'content-type': 'text/plain', 'content-length': '11' } },
          ),
      ),
    );
    const raw = await exchangeRaw(
      port,
      `HEAD /page HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`,
    );
    expect(raw).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(raw).toMatch(/\r\ncontent-length: 11\r\n/i);
    expect(raw).toMatch(/\r\ncontent-type: text\/plain\r\n/i);
    // Nothing after the blank line ending the headers.
    expect(raw.endsWith('\r\n\r\n')).toBe(true);
    expect(raw).not.toContain('hello');
    await cancelled.promise;

    const viaClient = await send(port, { method: 'HEAD' });
    expect(viaClient.headers['content-length']).toBe('11');
    expect(viaClient.body.byteLength).toBe(0);
  });

  it('sends headers only when options.method says HEAD, whatever res.req says', async () => {
    const cancelled = deferred();
    const { port } = await serve(async (_req, res) => {
      const body = new ReadableStream({
        start(controller) {
          controller.enqueue(new TextEncoder().encode('body'));
        },
        cancel: () => cancelled.resolve(),
      });
      await sendWebResponse(res, new Response(body, { headers: { 'content-length': '4' } }), {
        method: 'head',
      });
    });
    const raw = await exchangeRaw(port, `GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
    expect(raw).toMatch(/\r\ncontent-length: 4\r\n/i);
    expect(raw.endsWith('\r\n\r\n')).toBe(true);
    await cancelled.promise;
  });

  it('sends the headers before the first chunk of a stream that starts later', async () => {
    let push!: (text: string) => void;
    const { url } = await serve(
      createNodeListener(
        () =>
          new Response(
            new ReadableStream<Uint8Array>({
              start(controller) {
                push = (text) => {
                  controller.enqueue(new TextEncoder().encode(text));
                  controller.close();
                };
              },
            }),
            { headers: { 'content-type': 'text/event-stream' } },
          ),
      ),
    );
    // fetch resolves on the headers; the first event is produced only after that.
    const response = await fetch(url);
    expect(response.headers.get('content-type')).toBe('text/event-stream');
    push('data: first\n\n');
    expect(await response.text()).toBe('data: first\n\n');
  });

  it('streams a large body intact', async () => {
    const chunk = randomBytes(64 * 1024);
    const count = 256; // 16 MiB: the socket fills up, so writing waits for 'drain'
    const expected = createHash('sha256');
    for (let i = 0; i < count; i++) expected.update(chunk);
    let produced = 0;
    const { url } = await serve(
      createNodeListener(
        () =>
          new Response(
            new ReadableStream<Uint8Array>({
              pull(controller) {
                if (produced++ === count) controller.close();
                else controller.enqueue(new Uint8Array(chunk));
              },
            }),
          ),
      ),
    );
    const body = new Uint8Array(await (await fetch(url)).arrayBuffer());
    expect(body.byteLength).toBe(count * chunk.byteLength);
    expect(sha256(body)).toBe(expected.digest('hex'));
  });

  it('stops reading a streaming body when the client disconnects', async () => {
    const cancelled = deferred<unknown>();
    const sending = deferred<{ done: Promise<void> }>();
    const { port } = await serve((_req, res) => {
      const infinite = new ReadableStream<Uint8Array>({
        pull(controller) {
          controller.enqueue(new Uint8Array(16 * 1024));
        },
        cancel(reason) {
          cancelled.resolve(reason);
        },
      });
      sending.resolve({ done: sendWebResponse(res, new Response(infinite)) });
    });
    const client = http.get({ host: '127.0.0.1', port, path: '/', agent: false }, (response) => {
      response.once('data', () => client.destroy());
    });
    client.on('error', () => {});
    await cancelled.promise;
    await expect((await sending.promise).done).resolves.toBeUndefined();
  });

  it('cancels an idle stream (waiting for its next chunk) when the client disconnects', async () => {
    const cancelled = deferred();
    const { port } = await serve(
      createNodeListener(
        () =>
          new Response(
            new ReadableStream<Uint8Array>({
              start(controller) {
                controller.enqueue(new TextEncoder().encode('data: hello\n\n'));
              },
              pull() {
                // The next event never comes.
                return new Promise(() => {});
              },
              cancel() {
                cancelled.resolve();
              },
            }),
          ),
      ),
    );
    const client = http.get({ host: '127.0.0.1', port, path: '/', agent: false }, (response) => {
      response.once('data', () => client.destroy());
    });
    client.on('error', () => {});
    await cancelled.promise;
  });

  it('rejects with a TypeError when the headers were already sent', async () => {
    const outcome = deferred<unknown>();
    const { url } = await serve(async (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      outcome.resolve(await sendWebResponse(res, new Response('second')).catch((error: unknown) => error));
      res.end('first');
    });
    expect(await (await fetch(url)).text()).toBe('first');
    const error = await outcome.promise;
    expect(error).toBeInstanceOf(TypeError);
    expect((error as TypeError).message).toMatch(/already sent/);
  });

  it('resolves without writing, and cancels the body, when the client is already gone', async () => {
    const entered = deferred();
    const cancelled = deferred();
    const outcome = deferred<unknown>();
    const { port } = await serve((_req, res) => {
      res.once('close', () => {
        const body = new ReadableStream({ cancel: () => cancelled.resolve() });
        sendWebResponse(res, new Response(body)).then(
          () => outcome.resolve('resolved'),
          (error: unknown) => outcome.resolve(error),
        );
      });
      entered.resolve();
    });
    const client = http.get({ host: '127.0.0.1', port, path: '/', agent: false });
    client.on('error', () => {});
    await entered.promise;
    client.destroy();
    expect(await outcome.promise).toBe('resolved');
    await cancelled.promise;
  });

  it('destroys the connection and rejects when the body fails half-way', async () => {
    const outcome = deferred<unknown>();
    const failure = new Error('upstream broke');
    const { url } = await serve((_req, res) => {
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(new TextEncoder().encode('partial'));
        },
        pull(controller) {
          controller.error(failure);
        },
      });
      sendWebResponse(res, new Response(body)).then(
        () => outcome.resolve('resolved'),
        (error: unknown) => outcome.resolve(error),
      );
    });
    // The client must not mistake the truncated body for a complete one: it gets an error, either
    // before the headers or while reading the body, depending on what reached the socket.
    await expect(fetch(url).then((response) => response.text())).rejects.toThrow();
    expect(await outcome.promise).toBe(failure);
  });
});

describe('createNodeListener', () => {
  it('answers 404 text/plain when the handler returns null', async () => {
    const { port } = await serve(createNodeListener(() => null));
    const sent = await send(port, { path: '/nothing' });
    expect(sent.status).toBe(404);
    expect(sent.headers['content-type']).toMatch(/^text\/plain/);
    expect(sent.body.toString()).toBe('Not Found');
    const head = await send(port, { method: 'HEAD', path: '/nothing' });
    expect(head.status).toBe(404);
    expect(head.body.byteLength).toBe(0);
  });

  it('calls a custom notFound when the handler returns null', async () => {
    const { port } = await serve(
      createNodeListener(async () => null, {
        notFound: (req, res) => {
          res.statusCode = 404;
          res.end(`no route for ${req.url}`);
        },
      }),
    );
    const sent = await send(port, { path: '/x' });
    expect(sent.status).toBe(404);
    expect(sent.body.toString()).toBe('no route for /x');
  });

  it('answers a generic 500 when the handler throws, and reports the error', async () => {
    const reported = deferred<{ error: unknown; method: string | undefined }>();
    const failure = new Error('database password is hunter2');
    const { port } = await serve(
      createNodeListener(
        () => {
          throw failure;
        },
        { onError: (error, req) => reported.resolve({ error, method: req.method }) },
      ),
    );
    const sent = await send(port, { method: 'POST', path: '/x?code=abc', body: 'x' });
    expect(sent.status).toBe(500);
    expect(sent.body.toString()).toBe('Internal Server Error');
    expect(await reported.promise).toEqual({ error: failure, method: 'POST' });
  });

  it('does not report the error of a handler that gave up because the client left', async () => {
    const entered = deferred();
    const gaveUp = deferred();
    const reported: unknown[] = [];
    const { port } = await serve(
      createNodeListener(
        async (request) => {
          if (new URL(request.url).pathname === '/broken') throw new Error('a real bug');
          entered.resolve();
          await once(request.signal as unknown as EventTarget, 'abort');
          gaveUp.resolve();
          throw request.signal.reason;
        },
        { onError: (error) => reported.push(error) },
      ),
    );
    const client = http.get({ host: '127.0.0.1', port, path: '/slow', agent: false });
    client.on('error', () => {});
    await entered.promise;
    client.destroy();
    await gaveUp.promise;
    // A later request's error is reported, and it is the only one.
    expect((await send(port, { path: '/broken' })).status).toBe(500);
    expect(reported.map((error) => (error as Error).message)).toEqual(['a real bug']);
  });

  it('answers 500 when the handler returns something that is not a Response', async () => {
    const reported = deferred<unknown>();
    const { port } = await serve(
      createNodeListener(async () => 'oops' as unknown as Response, {
        onError: (error) => reported.resolve(error),
      }),
    );
    expect((await send(port)).status).toBe(500);
    expect(await reported.promise).toBeInstanceOf(TypeError);
  });

  it('logs one stderr line with the method and path, never cookies, authorization or the query', async () => {
    const written = deferred<string>();
    const write = vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
      const text = String(chunk);
      if (text.startsWith('labgate:')) written.resolve(text);
      return true;
    });
    try {
      const { port } = await serve(
        createNodeListener(() => {
          throw new Error('handler exploded');
        }),
      );
      const sent = await send(port, {
        path: '/private/page?code=secret-code&state=s',
        headers: ['Cookie', 'session=secret-cookie', 'Authorization', 'Bearer secret-token'],
      });
      expect(sent.status).toBe(500);
      const line = await written.promise;
      expect(line).toMatch(/^labgate: GET \/private\/page failed: Error: handler exploded/);
      for (const secret of ['secret-code', 'secret-cookie', 'secret-token', 'Bearer', '?']) {
        expect(line).not.toContain(secret);
      }
    } finally {
      write.mockRestore();
    }
  });

  it('answers 405 with Allow to methods a Fetch Request cannot carry', async () => {
    let called = false;
    const { port } = await serve(
      createNodeListener(() => {
        called = true;
        return new Response('no');
      }),
    );
    // (CONNECT never reaches a request listener: Node hands it to the server's 'connect' event; its
    // parser refuses TRACK.)
    for (const method of ['TRACE']) {
      const sent = await send(port, { method, path: '/auth/login' });
      expect(sent.status).toBe(405);
      expect(sent.headers['allow']).toBe('GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS');
      expect(sent.body.toString()).toBe('Method Not Allowed');
    }
    expect(called).toBe(false);
  });
});

describe('createNodeListener: the lazy request', () => {
  /** Counts what Node's Request, Headers and AbortController build while `run` runs. */
  async function counting<T>(run: () => Promise<T>): Promise<{ result: T; built: Record<string, number> }> {
    const built = { Request: 0, Headers: 0, AbortController: 0 };
    class CountedRequest extends Request {
      constructor(...args: ConstructorParameters<typeof Request>) {
        super(...args);
        built.Request++;
      }
    }
    class CountedHeaders extends Headers {
      constructor(...args: ConstructorParameters<typeof Headers>) {
        super(...args);
        built.Headers++;
      }
    }
    class CountedAbortController extends AbortController {
      constructor() {
        super();
        built.AbortController++;
      }
    }
    vi.stubGlobal('Request', CountedRequest);
    vi.stubGlobal('Headers', CountedHeaders);
    vi.stubGlobal('AbortController', CountedAbortController);
    try {
      return { result: await run(), built };
    } finally {
      vi.unstubAllGlobals();
    }
  }

  it('builds no Request, Headers or AbortSignal for a handler that reads the URL, method and one header', async () => {
    const { port } = await serve(
      createNodeListener((request) => {
        const path = new URL(request.url).pathname;
        const cookie = request.headers.get('cookie');
        if (path === '/auth/login' || !request.headers.has('cookie')) return null;
        return LightResponse.json({ method: request.method, path, cookie });
      }),
    );
    const lean = await counting(() =>
      send(port, { path: '/me?x=1', headers: ['Cookie', 'labgate=abc.def', 'Cookie', 'theme=dark'] }),
    );
    expect(JSON.parse(lean.result.body.toString())).toEqual({
      method: 'GET',
      path: '/me',
      cookie: 'labgate=abc.def; theme=dark',
    });
    expect(lean.built).toEqual({ Request: 0, Headers: 0, AbortController: 0 });

    // The counters see what a handler that reads more makes (so the zeros above mean something).
    const { port: fuller } = await serve(
      createNodeListener(async (request) => {
        request.signal.throwIfAborted();
        return new Response(`${[...request.headers].length} ${await request.text()}`);
      }),
    );
    const full = await counting(() => send(fuller, { method: 'POST', body: 'hello' }));
    expect(full.result.body.toString()).toMatch(/^\d+ hello$/);
    expect(full.built.Request).toBeGreaterThanOrEqual(1);
    expect(full.built.Headers).toBeGreaterThanOrEqual(1);
    expect(full.built.AbortController).toBeGreaterThanOrEqual(1);
  });

  it('is instanceof Request, with headers instanceof Headers that read as Headers do', async () => {
    const seen = deferred<Record<string, unknown>>();
    const { port } = await serve(
      createNodeListener((request) => {
        const headers = request.headers;
        let refused: unknown;
        try {
          headers.get('bad name');
        } catch (error) {
          refused = error;
        }
        const read = {
          request: request instanceof Request,
          tag: Object.prototype.toString.call(request),
          headers: headers instanceof Headers,
          same: request.headers === headers,
          accept: headers.get('ACCEPT'),
          custom: headers.get('x-custom'),
          padded: headers.get('x-padded'),
          missing: headers.get('x-missing'),
          has: [headers.has('X-Custom'), headers.has('x-missing')],
          refused: refused instanceof TypeError,
          body: request.body,
          bodyUsed: request.bodyUsed,
          entries: [...headers].filter(([name]) => name.startsWith('x-')),
        };
        headers.set('x-added', '1');
        seen.resolve({ ...read, afterSet: headers.get('x-added') });
        return new Response('ok');
      }),
    );
    await send(port, {
      headers: [
        'Accept',
        'text/html',
        'accept',
        'application/json',
        'X-Custom',
        '1',
        'x-custom',
        '2',
        'X-Padded',
        ' v ',
      ],
    });
    expect(await seen.promise).toEqual({
      request: true,
      tag: '[object Request]',
      headers: true,
      same: true,
      accept: 'text/html, application/json',
      custom: '1, 2',
      padded: 'v',
      missing: null,
      has: [true, false],
      refused: true,
      body: null,
      bodyUsed: false,
      entries: [
        ['x-custom', '1, 2'],
        ['x-padded', 'v'],
      ],
      afterSet: '1',
    });
  });

  it('gives the body and the signal when read late, and copies into new Request(url, request)', async () => {
    const outcome = deferred<Record<string, unknown>>();
    const { port } = await serve(
      createNodeListener(async (request) => {
        // Read after other work: the body waited in Node's stream.
        await new Promise((resolve) => setImmediate(resolve));
        const clone = request.clone();
        const copy = new Request(request.url, request);
        outcome.resolve({
          copy: [copy.method, copy.url, copy.headers.get('x-trace'), await copy.text()],
          clone: clone instanceof Request ? await clone.text() : 'not a Request',
          used: request.bodyUsed,
          aborted: request.signal.aborted,
        });
        return new Response('ok');
      }),
    );
    const sent = await send(port, {
      method: 'PUT',
      path: '/p?q=1',
      headers: ['X-Trace', 't1'],
      body: 'payload',
    });
    expect(sent.body.toString()).toBe('ok');
    expect(await outcome.promise).toEqual({
      copy: ['PUT', `http://127.0.0.1:${port}/p?q=1`, 't1', 'payload'],
      clone: 'payload',
      used: true,
      aborted: false,
    });
  });

  // Node 20 and 22 read a Request given as input through symbols the lazy request answers; later
  // versions keep private fields no other object can answer (documented on createNodeListener).
  it.runIf(Number(process.versions.node.split('.')[0]) <= 22)(
    'can be the input of new Request(request) on Node 20 and 22',
    async () => {
      const outcome = deferred<string[]>();
      const { port } = await serve(
        createNodeListener(async (request) => {
          const copy = new Request(request);
          outcome.resolve([copy.method, copy.url, copy.headers.get('x-trace') ?? '', await copy.text()]);
          return new Response('ok');
        }),
      );
      await send(port, { method: 'POST', path: '/in', headers: ['X-Trace', 't2'], body: 'as input' });
      expect(await outcome.promise).toEqual(['POST', `http://127.0.0.1:${port}/in`, 't2', 'as input']);
    },
  );

  it('gives an aborted signal when first read after the client left', async () => {
    const entered = deferred();
    const left = deferred();
    const outcome = deferred<{ aborted: boolean; name: string }>();
    const listener = createNodeListener(async (request) => {
      entered.resolve();
      await left.promise;
      outcome.resolve({ aborted: request.signal.aborted, name: (request.signal.reason as Error).name });
      return new Response('too late');
    });
    const { port } = await serve((req, res) => {
      res.once('close', () => left.resolve());
      listener(req, res);
    });
    const client = http.get({ host: '127.0.0.1', port, path: '/slow', agent: false });
    client.on('error', () => {});
    await entered.promise;
    client.destroy();
    expect(await outcome.promise).toEqual({ aborted: true, name: 'AbortError' });
  });

  it('writes URLs exactly as the URL parser does, whatever the target', async () => {
    const { port } = await echoServer();
    for (const path of [
      '/plain/path?x=1&y=two',
      '/',
      '/?',
      '/a/./b/../c',
      '/a/%2e%2E/b',
      "/q?name='quoted'",
      '/pct%20ok/%zz?a=%2F',
      '/a|b{c}^d`e',
      '/a\\b',
      '/caf%C3%A9',
    ]) {
      const result = await echoed(port, { path });
      expect(result.url).toBe(new URL(`http://127.0.0.1:${port}${path}`).href);
    }
  });

  it('rebuilds a body a middleware already parsed, with headers that describe the rebuilt body', async () => {
    const listener = createNodeListener(echo);
    const { url } = await serve(async (req, res) => {
      const chunks: Buffer[] = [];
      for await (const chunk of req) chunks.push(chunk as Buffer);
      (req as IncomingMessage & { body?: unknown }).body = JSON.parse(Buffer.concat(chunks).toString());
      listener(req, res);
    });
    const response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-length': '20' },
      body: '{ "a" : [1,   2] }  ',
    });
    const result = (await response.json()) as Echo;
    expect(JSON.parse(result.body)).toEqual({ a: [1, 2] });
    expect(header(result, 'content-length')).toBe(String(Buffer.byteLength(result.body)));
  });
});

describe('LightResponse', () => {
  it('is a Response: instanceof, status, headers, body readers, clone', async () => {
    const response = LightResponse.json({ a: 1 }, { status: 201, headers: { 'x-one': '1' } });
    expect(response).toBeInstanceOf(Response);
    expect(Object.prototype.toString.call(response)).toBe('[object Response]');
    expect([response.status, response.ok, response.statusText, response.type, response.redirected]).toEqual([
      201,
      true,
      '',
      'default',
      false,
    ]);
    expect(response.headers).toBeInstanceOf(Headers);
    expect(response.headers.get('content-type')).toBe('application/json');
    expect(response.headers.get('x-one')).toBe('1');
    expect(await response.clone().json()).toEqual({ a: 1 });
    expect(await response.text()).toBe('{"a":1}');
    expect(response.bodyUsed).toBe(true);

    expect(new LightResponse('hi').headers.get('content-type')).toBe('text/plain;charset=UTF-8');
    expect(new LightResponse(new Uint8Array([1, 2])).headers.has('content-type')).toBe(false);
    expect(
      LightResponse.json('x', { headers: { 'content-type': 'application/ld+json' } }).headers.get(
        'content-type',
      ),
    ).toBe('application/ld+json');
    expect(LightResponse.redirect('https://example.com/next', 303).headers.get('location')).toBe(
      'https://example.com/next',
    );
    const streamed = new LightResponse(new Blob(['blob body']));
    expect(await streamed.text()).toBe('blob body');
  });

  it('refuses what Response refuses, with the same errors', () => {
    expect(() => new LightResponse('x', { status: 99 })).toThrow(RangeError);
    expect(() => new LightResponse('x', { status: 204 })).toThrow(TypeError);
    expect(() => new LightResponse('x', { statusText: 'bad\nline' })).toThrow(TypeError);
    expect(() => new LightResponse('x', { headers: { 'bad name': 'v' } })).toThrow(TypeError);
    expect(() => LightResponse.json(undefined)).toThrow(TypeError);
    expect(() => LightResponse.redirect('https://example.com/', 200)).toThrow(RangeError);
    expect(() => LightResponse.redirect('/relative')).toThrow(TypeError);
  });

  it('is written at once with a Content-Length, also for HEAD, with every Set-Cookie and header changed late', async () => {
    const bytes = new Uint8Array([0, 1, 2, 250]);
    const { port } = await serve(
      createNodeListener((request) => {
        const path = new URL(request.url).pathname;
        if (path === '/bytes')
          return new LightResponse(bytes, { headers: { 'content-type': 'application/octet-stream' } });
        if (path === '/empty') return new LightResponse(null, { status: 204, statusText: 'Nothing Here' });
        const response = LightResponse.json({ greeting: 'héllo' });
        response.headers.append('set-cookie', 'a=1; Path=/');
        response.headers.append('set-cookie', 'b=2; Path=/');
        return response;
      }),
    );
    const json = await send(port, { path: '/json' });
    expect(json.headers['content-type']).toBe('application/json');
    expect(json.headers['content-length']).toBe(String(Buffer.byteLength('{"greeting":"héllo"}')));
    expect(json.headers['transfer-encoding']).toBeUndefined();
    expect(json.headers['set-cookie']).toEqual(['a=1; Path=/', 'b=2; Path=/']);
    expect(JSON.parse(json.body.toString())).toEqual({ greeting: 'héllo' });

    const head = await exchangeRaw(
      port,
      'HEAD /json HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n',
    );
    expect(head).toMatch(/\r\ncontent-length: 21\r\n/i);
    expect(head.endsWith('\r\n\r\n')).toBe(true);

    const sentBytes = await send(port, { path: '/bytes' });
    expect([...sentBytes.body]).toEqual([...bytes]);
    expect(sentBytes.headers['content-length']).toBe('4');

    const empty = await send(port, { path: '/empty' });
    expect([empty.status, empty.statusMessage, empty.body.byteLength]).toEqual([204, 'Nothing Here', 0]);
  });

  it('keeps the bytes it was given, as Response does', async () => {
    const bytes = new Uint8Array([1, 2, 3]);
    const response = new LightResponse(bytes);
    bytes[0] = 9;
    expect([...new Uint8Array(await response.arrayBuffer())]).toEqual([1, 2, 3]);
  });
});

describe('clientAddress', () => {
  async function addresses(headers: string[]): Promise<{ plain: string; trusted: string }> {
    const { port } = await serve((req, res) => {
      res.end(
        JSON.stringify({
          plain: clientAddress(req),
          trusted: clientAddress(req, { trustProxy: true }),
        }),
      );
    });
    return JSON.parse((await send(port, { headers })).body.toString()) as { plain: string; trusted: string };
  }

  it('is the socket address without trustProxy, whatever X-Forwarded-For says', async () => {
    const result = await addresses(['X-Forwarded-For', '203.0.113.7']);
    expect(result.plain).toBe('127.0.0.1');
  });

  it('is the left-most valid X-Forwarded-For address with trustProxy', async () => {
    expect((await addresses(['X-Forwarded-For', 'unknown, 203.0.113.7, 10.0.0.1'])).trusted).toBe(
      '203.0.113.7',
    );
    expect((await addresses(['X-Forwarded-For', '[2001:db8::1]:443, 10.0.0.1'])).trusted).toBe('2001:db8::1');
    expect((await addresses(['X-Forwarded-For', '198.51.100.2:8080'])).trusted).toBe('198.51.100.2');
    expect(
      (await addresses(['X-Forwarded-For', '198.51.100.9', 'X-Forwarded-For', '10.0.0.1'])).trusted,
    ).toBe('198.51.100.9');
  });

  it('falls back to the socket address when X-Forwarded-For holds no valid address', async () => {
    expect((await addresses(['X-Forwarded-For', 'unknown, _hidden'])).trusted).toBe('127.0.0.1');
    expect((await addresses([])).trusted).toBe('127.0.0.1');
  });
});
