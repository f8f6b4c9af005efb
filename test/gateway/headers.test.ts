/**
 * The headers the upstream receives (src/gateway/headers.ts; docs/security.md, GATEWAY-1, GATEWAY-2,
 * GATEWAY-4): every spoofed spelling of an identity header, forwarding header or `Connection` trick is
 * sent by a raw TCP client (no HTTP client normalises names) through a small node:http server that
 * builds the headers and forwards to the echo upstream, which reports what arrived, byte for byte.
 */
import { once } from 'node:events';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  filterSetCookie,
  IDENTITY_VALUE_MAX,
  identityHeaderName,
  isHeaderRefusal,
  type UpstreamInit,
  upstreamHeaders,
} from '../../src/gateway/headers.js';
import { createProxy } from '../../src/gateway/proxy.js';
import { type Echo, startUpstream, type Upstream } from './upstream.js';

const HOST = 'gateway.test';
const ASSERTION = 'X-Labgate-Assertion';
const ALICE = {
  'X-Forwarded-User': 'alice',
  'X-Forwarded-Email': 'alice@example.com',
  'X-Forwarded-Groups': 'acme,acme/platform',
  'X-Forwarded-Preferred-Username': 'alice',
};
const ownCookie = (name: string) => name === 'labgate' || name.startsWith('labgate-tx-');

/** A header name as the strip rule reads it. */
const normalised = (name: string) => name.toLowerCase().replace(/[_.]/g, '-');

let upstream: Upstream;
const servers: { close(): Promise<void> }[] = [];
beforeAll(async () => {
  upstream = await startUpstream();
});
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});
afterAll(() => upstream.close());

/** A gateway reduced to building the headers and forwarding; a refusal is answered 400 with its reason. */
async function gateway(init: Partial<UpstreamInit> = {}): Promise<number> {
  const proxy = createProxy({ upstream: new URL(upstream.url), timeout: 10_000 });
  const server = http.createServer(async (req, res) => {
    const headers = upstreamHeaders(req, {
      identity: ALICE,
      ownCookie,
      clientIp: req.socket.remoteAddress ?? '',
      proto: 'https',
      host: HOST,
      trusted: false,
      extraStrip: [ASSERTION],
      ...init,
    });
    if (isHeaderRefusal(headers)) {
      res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify(headers));
      return;
    }
    await proxy.forward(req, res, { path: req.url ?? '/', headers, ownCookie });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  servers.push({
    close: async () => {
      proxy.close();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  });
  return (server.address() as AddressInfo).port;
}

/** An answer read off the wire. */
interface RawAnswer {
  status: number;
  head: string;
  body: string;
}

/**
 * Sends `GET path` with exactly these header lines (plus `Host`, and `Connection: close` unless a
 * `Connection` line is given) over a plain TCP connection, and reads the answer until the server closes
 * (the client never half-closes: Node's server would drop the request).
 */
async function raw(port: number, path: string, lines: string[]): Promise<RawAnswer> {
  const socket = net.connect(port, '127.0.0.1');
  const extra = lines.some((l) => /^connection:/i.test(l)) ? [] : ['Connection: close'];
  socket.write([`GET ${path} HTTP/1.1`, `Host: ${HOST}`, ...lines, ...extra, '', ''].join('\r\n'));
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  await once(socket, 'close');
  const all = Buffer.concat(chunks);
  const end = all.indexOf('\r\n\r\n');
  const head = all.subarray(0, end).toString('latin1');
  let body = all.subarray(end + 4);
  if (/^transfer-encoding:\s*chunked/im.test(head)) {
    const parts: Buffer[] = [];
    for (let at = 0; ; ) {
      const eol = body.indexOf('\r\n', at);
      const size = Number.parseInt(body.subarray(at, eol).toString(), 16);
      if (!size) break;
      parts.push(body.subarray(eol + 2, eol + 2 + size));
      at = eol + 2 + size + 2;
    }
    body = Buffer.concat(parts);
  }
  return { status: Number(head.split(' ')[1]), head, body: body.toString() };
}

/** The echo of what the upstream received, from an answer that reached it. */
function echoOf(answer: RawAnswer): Echo {
  expect(answer.status).toBe(200);
  return JSON.parse(answer.body) as Echo;
}

/** The header lines the upstream received, as `[name, value]`. */
function pairs(echo: Echo): [string, string][] {
  const out: [string, string][] = [];
  for (let i = 0; i < echo.rawHeaders.length; i += 2)
    out.push([echo.rawHeaders[i]!, echo.rawHeaders[i + 1]!]);
  return out;
}

describe('identityHeaderName', () => {
  it.each([
    'X-Forwarded-User',
    'x-forwarded-user',
    'X_FORWARDED_USER',
    'X.Forwarded.User',
    'x-forwarded_email',
    'X-Forwarded-Groups',
    'X-Forwarded-Preferred-Username',
    'x_forwarded_access_token',
    'X-Auth-Request-User',
    'x_auth_request_email',
    'X-Auth-Request-Anything-New',
    'Remote-User',
    'remote_user',
    'X-Remote-User',
    'GAP-Auth',
    'gap_signature',
    'X-Labgate-Assertion',
    'x_labgate.internal',
  ])('%s is stripped', (name) => {
    expect(identityHeaderName(name)).toBe(true);
  });

  it.each([
    'X-Forwarded-For',
    'X-Forwarded-Username',
    'X-User',
    'Authorization',
    'Cookie',
    'X-Auth-Requested',
  ])('%s is not an identity header', (name) => {
    expect(identityHeaderName(name)).toBe(false);
  });

  it('takes extra names in any spelling', () => {
    expect(identityHeaderName('x_app_assertion', ['X-App-Assertion'])).toBe(true);
    expect(identityHeaderName('X-App-Assertion', ['x.app.assertion'])).toBe(true);
    expect(identityHeaderName('X-App-Other', ['X-App-Assertion'])).toBe(false);
  });
});

describe('filterSetCookie', () => {
  it('drops the lines that name the gateway’s cookies, keeps the rest in order', () => {
    expect(
      filterSetCookie(
        [
          'theme=dark; Path=/',
          'labgate=forged; Path=/; HttpOnly',
          ' labgate =spaced',
          'labgate-tx-abc=1',
          'app=1; Path=/labgate=x',
          'labgatex=1',
        ],
        ownCookie,
      ),
    ).toEqual(['theme=dark; Path=/', 'app=1; Path=/labgate=x', 'labgatex=1']);
  });

  it('has nothing to filter without lines', () => {
    expect(filterSetCookie(undefined, ownCookie)).toEqual([]);
    expect(filterSetCookie([], ownCookie)).toEqual([]);
  });
});

describe('upstreamHeaders on the wire', () => {
  it('strips every spelling of every identity header, then sets each exactly once', async () => {
    const port = await gateway();
    const spoofed = [
      'X-Forwarded-User: spoof1',
      'x-forwarded-user: spoof2',
      'X_Forwarded_User: spoof3',
      'X.Forwarded.User: spoof4',
      'X-FORWARDED-USER: spoof5',
      'x-forwarded_email: spoof6',
      'X-Forwarded-Groups: spoof7',
      'X_Forwarded_Groups: spoof8',
      'X-Forwarded-Preferred-Username: spoof9',
      'X_Forwarded_Access_Token: spoof10',
      'X-Auth-Request-User: spoof11',
      'x_auth_request_email: spoof12',
      'X-Auth-Request-Groups: spoof13',
      'Remote-User: spoof14',
      'remote_user: spoof15',
      'X-Remote-User: spoof16',
      'GAP-Auth: spoof17',
      'gap_signature: spoof18',
      'X-Labgate-Assertion: spoof19',
      'x_labgate_assertion: spoof20',
      'X-Labgate-Internal: spoof21',
    ];
    const echo = echoOf(await raw(port, '/spoof', [...spoofed, 'X-Custom: kept']));
    const received = pairs(echo);
    expect(received.map(([, v]) => v).filter((v) => v.startsWith('spoof'))).toEqual([]);
    for (const [name, value] of Object.entries(ALICE)) {
      const copies = received.filter(([n]) => normalised(n) === normalised(name));
      expect(copies).toEqual([[name.toLowerCase(), value]]);
    }
    expect(received.filter(([n]) => identityHeaderName(n)).map(([n]) => n.toLowerCase())).toEqual(
      Object.keys(ALICE).map((n) => n.toLowerCase()),
    );
    expect(echo.headers['x-custom']).toBe('kept');
  });

  it('strips the identity headers when no one is signed in, and sets none', async () => {
    const port = await gateway({ identity: {} });
    const echo = echoOf(
      await raw(port, '/anonymous', ['X-Forwarded-User: admin', 'x_forwarded_groups: admins']),
    );
    expect(pairs(echo).filter(([n]) => identityHeaderName(n))).toEqual([]);
  });

  it('rebuilds X-Forwarded-* and drops every other forwarding header in every spelling', async () => {
    const port = await gateway();
    const echo = echoOf(
      await raw(port, '/forwarded', [
        'X-Forwarded-For: 198.51.100.1',
        'X_Forwarded_For: 198.51.100.2',
        'X-Forwarded-Host: evil.example',
        'X_Forwarded_Host: evil.example',
        'X-Forwarded-Proto: http',
        'X-Forwarded-Port: 8443',
        'X-Forwarded-Prefix: /admin',
        'X-Forwarded-Uri: /admin',
        'X-Forwarded-Method: DELETE',
        'X-Original-URL: /admin',
        'X.Original.URI: /admin',
        'X-Real-IP: 198.51.100.3',
        'Forwarded: for=198.51.100.4;host=evil.example;proto=http',
      ]),
    );
    const received = pairs(echo).map(([n, v]) => [n.toLowerCase(), v]);
    const forwarding = received.filter(
      ([n]) =>
        /^(forwarded|x-forwarded-|x-original-|x-real-ip)/.test(normalised(n!)) && !identityHeaderName(n!),
    );
    expect(forwarding).toEqual([
      ['x-forwarded-for', '127.0.0.1'],
      ['x-forwarded-proto', 'https'],
      ['x-forwarded-host', HOST],
    ]);
    expect(echo.headers['host']).toBe(HOST);
  });

  it('keeps a trusted proxy’s X-Forwarded-For chain and appends the peer', async () => {
    const port = await gateway({ trusted: true });
    const echo = echoOf(
      await raw(port, '/trusted', [
        'X-Forwarded-For: 203.0.113.9',
        'x-forwarded-for: 10.0.0.1',
        'X_Forwarded_For: 198.51.100.2',
      ]),
    );
    expect(echo.headers['x-forwarded-for']).toBe('203.0.113.9, 10.0.0.1, 127.0.0.1');
  });

  it.each([
    'close, X-Forwarded-User',
    'close, x_forwarded_email',
    'close, X-Auth-Request-User',
    'close, Remote-User',
    'close, X-Labgate-Assertion',
    'close, Cookie',
    'close, Authorization',
    'close, host',
  ])('refuses Connection: %s with 400, before the upstream', async (connection) => {
    const port = await gateway();
    const before = upstream.requests.length;
    const answer = await raw(port, '/connection', [`Connection: ${connection}`, 'X-Forwarded-User: mallory']);
    expect(answer.status).toBe(400);
    expect(JSON.parse(answer.body)).toHaveProperty('error');
    expect(upstream.requests.length).toBe(before);
  });

  it('refuses a Connection that names the configured assertion header', async () => {
    const port = await gateway({ extraStrip: ['X-App-Assertion'] });
    const answer = await raw(port, '/connection', ['Connection: close, x_app_assertion']);
    expect(answer.status).toBe(400);
  });

  it('drops hop-by-hop headers and those Connection names, before injecting', async () => {
    const port = await gateway();
    const echo = echoOf(
      await raw(port, '/hop', [
        'Connection: close, X-Secret-Hop, Keep-Alive',
        'X-Secret-Hop: dropped',
        'Keep-Alive: timeout=5',
        'TE: trailers',
        'Trailer: X-Checksum',
        'Proxy-Authorization: Basic c2VjcmV0',
        'Proxy-Connection: keep-alive',
        'Upgrade: h2c',
        'X-Kept: yes',
      ]),
    );
    const names = pairs(echo).map(([n]) => n.toLowerCase());
    for (const gone of [
      'x-secret-hop',
      'keep-alive',
      'te',
      'trailer',
      'proxy-authorization',
      'proxy-connection',
      'upgrade',
    ]) {
      expect(names).not.toContain(gone);
    }
    // Node's client sends its own Connection to its pool; none of the client's tokens survive.
    expect(echo.headers['connection']).toBe('keep-alive');
    expect(echo.headers['x-kept']).toBe('yes');
  });

  it('removes the gateway’s cookies from every Cookie header and sends the rest as one', async () => {
    const port = await gateway();
    const echo = echoOf(
      await raw(port, '/cookies', [
        'Cookie: labgate=session; a=1',
        'cookie: labgate-tx-1=t;b=2; labgate = spaced',
      ]),
    );
    expect(pairs(echo).filter(([n]) => n.toLowerCase() === 'cookie')).toEqual([['cookie', 'a=1; b=2']]);
  });

  it('sends no Cookie when only the gateway’s cookies were there', async () => {
    const port = await gateway();
    const echo = echoOf(await raw(port, '/cookies', ['Cookie: labgate=session; labgate-tx-9=t']));
    expect(echo.headers['cookie']).toBeUndefined();
  });

  it('keeps repeated end-to-end headers and a header named Error', async () => {
    const port = await gateway();
    const echo = echoOf(
      await raw(port, '/repeated', ['Accept: text/html', 'accept: application/json', 'Error: none']),
    );
    expect(pairs(echo).filter(([n]) => n.toLowerCase() === 'accept')).toEqual([
      ['accept', 'text/html'],
      ['accept', 'application/json'],
    ]);
    expect(echo.headers['error']).toBe('none');
  });

  it('leaves out identity values with CR, LF or NUL, caps long ones at whole entries, sends UTF-8', async () => {
    const groups = Array.from({ length: 1200 }, (_, i) => `acme/team-${i}`);
    const port = await gateway({
      identity: {
        'X-Forwarded-User': 'alice\r\nX-Admin: 1',
        'X-Forwarded-Email': 'alice@example.com\u0000',
        'X-Forwarded-Groups': groups.join(','),
        'X-Forwarded-Preferred-Username': 'jürgen',
        'X-Auth-Request-Note': 'x'.repeat(IDENTITY_VALUE_MAX + 1),
      },
    });
    const echo = echoOf(await raw(port, '/values', []));
    expect(echo.headers['x-forwarded-user']).toBeUndefined();
    expect(echo.headers['x-admin']).toBeUndefined();
    expect(echo.headers['x-forwarded-email']).toBeUndefined();
    expect(echo.headers['x-auth-request-note']).toBeUndefined();
    const sent = echo.headers['x-forwarded-groups'] as string;
    expect(sent.length).toBeLessThanOrEqual(IDENTITY_VALUE_MAX);
    expect(sent.length).toBeGreaterThan(IDENTITY_VALUE_MAX - 20);
    // Only whole group paths, the first ones, in order.
    const kept = sent.split(',');
    expect(kept).toEqual(groups.slice(0, kept.length));
    expect(
      Buffer.from(echo.headers['x-forwarded-preferred-username'] as string, 'latin1').toString('utf8'),
    ).toBe('jürgen');
  });
});
