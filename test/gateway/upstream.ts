/**
 * An upstream for the gateway's tests: a real node:http server on 127.0.0.1 that echoes what it
 * received (method, target, headers as sent, body length and SHA-256) and has paths that misbehave
 * on purpose, plus a minimal WebSocket echo (RFC 6455 handshake and text frames, written here because
 * the tests have no WebSocket library) and a raw client for it.
 *
 * - `/slow` never answers (headers included);
 * - `/die` sends headers and part of a 1 MiB body, then destroys the socket;
 * - `/early` answers 413 before reading the body (a server with a body limit; Node reads and drops the rest);
 * - `/stream?mb=N` sends {@link STREAM_BLOCK} N times (`Content-Length` N MiB), with backpressure;
 * - `/set-cookie?name=a&name=b` sets `a=from-upstream` and `b=from-upstream` (default `app`, `labgate`);
 * - an upgrade to `/ws…` with `Upgrade: websocket` is a WebSocket echo; any other upgrade gets a plain
 *   403 JSON answer that also sets `labgate=forged`. Upgrades are recorded in `requests` too.
 */
import { createHash, randomBytes } from 'node:crypto';
import { EventEmitter, once } from 'node:events';
import http, { type IncomingHttpHeaders } from 'node:http';
import net, { type AddressInfo } from 'node:net';

const MiB = 1024 * 1024;
const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** The block `/stream` repeats: random, fixed for the process. */
export const STREAM_BLOCK = randomBytes(MiB);

/** The SHA-256 (hex) of what `/stream?mb=N` sends. */
export function streamSha256(mb: number): string {
  const hash = createHash('sha256');
  for (let i = 0; i < mb; i++) hash.update(STREAM_BLOCK);
  return hash.digest('hex');
}

/** One request as the upstream received it. */
export interface UpstreamRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  /** Names and values exactly as they arrived, repeated ones included. */
  rawHeaders: string[];
  /** Body bytes received so far (all of them once `sha256` is set). */
  bodyBytes: number;
  /** SHA-256 (hex) of the whole body, once it has arrived. */
  sha256: string | null;
  /** The gateway's port of the connection it came on: equal ports mean one reused connection. */
  remotePort: number;
  /** Settles when the exchange is over: answered, or its connection closed. */
  closed: Promise<void>;
}

/** What the echo answers: the request as received. */
export interface Echo {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  rawHeaders: string[];
  bodyBytes: number;
  sha256: string;
}

/** A running upstream. */
export interface Upstream {
  url: string;
  port: number;
  requests: UpstreamRequest[];
  /** The first request (already received or still to come) whose target starts with `prefix`. */
  arrival(prefix: string): Promise<UpstreamRequest>;
  close(): Promise<void>;
}

/** Starts the upstream on 127.0.0.1, on a port the OS picks. */
export async function startUpstream(): Promise<Upstream> {
  const requests: UpstreamRequest[] = [];
  const arrivals = new EventEmitter();
  const sockets = new Set<net.Socket>();
  const server = http.createServer((req, res) => {
    const record: UpstreamRequest = {
      method: req.method ?? '',
      url: req.url ?? '',
      headers: req.headers,
      rawHeaders: req.rawHeaders,
      bodyBytes: 0,
      sha256: null,
      remotePort: req.socket.remotePort ?? 0,
      closed: once(res, 'close').then(() => undefined),
    };
    requests.push(record);
    arrivals.emit('request', record);
    const path = (req.url ?? '/').split('?')[0];
    const query = new URL(req.url ?? '/', 'http://upstream').searchParams;
    if (path === '/slow') return;
    if (path === '/die') {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(MiB) });
      res.write(Buffer.alloc(64 * 1024, 'd'), () => req.socket.destroy());
      return;
    }
    if (path === '/early') {
      res.writeHead(413, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: 'too_large' }));
      return;
    }
    if (path === '/stream') {
      const mb = Number(query.get('mb') ?? '1');
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(mb * MiB) });
      let sent = 0;
      const pump = () => {
        while (sent < mb) {
          sent++;
          if (!res.write(STREAM_BLOCK)) return void res.once('drain', pump);
        }
        res.end();
      };
      pump();
      return;
    }
    const hash = createHash('sha256');
    req.on('data', (chunk: Buffer) => {
      record.bodyBytes += chunk.length;
      hash.update(chunk);
    });
    req.on('end', () => {
      record.sha256 = hash.digest('hex');
      const echo: Echo = {
        method: record.method,
        url: record.url,
        headers: req.headers,
        rawHeaders: req.rawHeaders,
        bodyBytes: record.bodyBytes,
        sha256: record.sha256,
      };
      const headers: http.OutgoingHttpHeaders = { 'content-type': 'application/json' };
      if (path === '/set-cookie') {
        const names = query.getAll('name');
        headers['set-cookie'] = (names.length > 0 ? names : ['app', 'labgate']).map(
          (name) => `${name}=from-upstream; Path=/`,
        );
      }
      res.writeHead(200, headers);
      res.end(JSON.stringify(echo));
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  server.on('upgrade', (req, socket: net.Socket) => {
    socket.on('error', () => socket.destroy());
    const record: UpstreamRequest = {
      method: req.method ?? '',
      url: req.url ?? '',
      headers: req.headers,
      rawHeaders: req.rawHeaders,
      bodyBytes: 0,
      sha256: null,
      remotePort: socket.remotePort ?? 0,
      closed: once(socket, 'close').then(() => undefined),
    };
    requests.push(record);
    arrivals.emit('request', record);
    const key = req.headers['sec-websocket-key'];
    if (!req.url?.startsWith('/ws') || req.headers.upgrade?.toLowerCase() !== 'websocket' || !key) {
      const body = JSON.stringify({ error: 'no_websocket_here' });
      socket.end(
        'HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\n' +
          `set-cookie: labgate=forged; Path=/\r\ncontent-length: ${body.length}\r\n\r\n${body}`,
      );
      return;
    }
    const accept = createHash('sha1')
      .update(key + WS_GUID)
      .digest('base64');
    socket.write(
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
    );
    // The upgraded socket is half-open after the peer's FIN: answer it with ours.
    socket.on('end', () => socket.end());
    readFrames(socket, (opcode, payload) => {
      if (opcode === 0x8) socket.end(frame(0x8, payload, false));
      else if (opcode === 0x9) socket.write(frame(0xa, payload, false));
      else socket.write(frame(opcode, payload, false));
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    requests,
    arrival: (prefix) =>
      new Promise((resolve) => {
        const found = requests.find((r) => r.url.startsWith(prefix));
        if (found) return resolve(found);
        const listener = (record: UpstreamRequest) => {
          if (!record.url.startsWith(prefix)) return;
          arrivals.off('request', listener);
          resolve(record);
        };
        arrivals.on('request', listener);
      }),
    close: async () => {
      for (const socket of sockets) socket.destroy();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** One WebSocket frame (FIN set); client frames are masked (RFC 6455 §5.3). */
export function frame(opcode: number, payload: Buffer | string, mask: boolean): Buffer {
  const data = typeof payload === 'string' ? Buffer.from(payload) : payload;
  const length = data.length;
  const extended = length < 126 ? 0 : length < 65536 ? 2 : 8;
  const out = Buffer.alloc(2 + extended + (mask ? 4 : 0) + length);
  out[0] = 0x80 | opcode;
  out[1] = (mask ? 0x80 : 0) | (extended === 0 ? length : extended === 2 ? 126 : 127);
  if (extended === 2) out.writeUInt16BE(length, 2);
  if (extended === 8) out.writeBigUInt64BE(BigInt(length), 2);
  const at = 2 + extended;
  if (!mask) {
    data.copy(out, at);
    return out;
  }
  const key = randomBytes(4);
  key.copy(out, at);
  for (let i = 0; i < length; i++) out[at + 4 + i] = data[i]! ^ key[i % 4]!;
  return out;
}

/** Reads WebSocket frames from a stream, unmasking them, and calls `onFrame` for each whole one. */
export function readFrames(
  socket: NodeJS.ReadableStream,
  onFrame: (opcode: number, payload: Buffer) => void,
  initial: Buffer = Buffer.alloc(0),
): void {
  let buffer: Buffer = initial;
  const parse = () => {
    while (buffer.length >= 2) {
      const masked = (buffer[1]! & 0x80) !== 0;
      let length = buffer[1]! & 0x7f;
      let at = 2;
      if (length === 126) {
        if (buffer.length < 4) return;
        length = buffer.readUInt16BE(2);
        at = 4;
      } else if (length === 127) {
        if (buffer.length < 10) return;
        length = Number(buffer.readBigUInt64BE(2));
        at = 10;
      }
      const key = masked ? buffer.subarray(at, at + 4) : null;
      if (masked) at += 4;
      if (buffer.length < at + length) return;
      const payload = Buffer.from(buffer.subarray(at, at + length));
      if (key) for (let i = 0; i < payload.length; i++) payload[i]! ^= key[i % 4]!;
      const opcode = buffer[0]! & 0x0f;
      buffer = buffer.subarray(at + length);
      onFrame(opcode, payload);
    }
  };
  socket.on('data', (chunk: Buffer) => {
    buffer = Buffer.concat([buffer, chunk]);
    parse();
  });
  parse();
}

/** A raw WebSocket client's view of an upgrade: the answer, and on a 101 a way to talk. */
export interface WebSocketClient {
  status: number;
  /** The response head's header lines, lower-cased names, repeated ones kept. */
  headers: [string, string][];
  /** The body of a non-101 answer (read until the server closed). */
  body: string;
  socket: net.Socket;
  /** Sends a masked text frame. */
  send(text: string): void;
  /** The next text frame's payload, or null once the connection closed. */
  next(): Promise<string | null>;
  /** Settles when the socket is closed. */
  closed: Promise<void>;
}

/** Opens a WebSocket on `127.0.0.1:port` by hand, so nothing normalises the request. */
export function connectWebSocket(
  port: number,
  path: string,
  headers: Record<string, string> = {},
): Promise<WebSocketClient> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const closed = once(socket, 'close').then(() => undefined);
    let received = Buffer.alloc(0);
    const lines = [
      `GET ${path} HTTP/1.1`,
      `Host: 127.0.0.1:${port}`,
      'Upgrade: websocket',
      'Connection: Upgrade',
      `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}`,
      'Sec-WebSocket-Version: 13',
      ...Object.entries(headers).map(([name, value]) => `${name}: ${value}`),
    ];
    socket.write(`${lines.join('\r\n')}\r\n\r\n`);
    socket.on('error', reject);
    const onData = (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      const end = received.indexOf('\r\n\r\n');
      if (end === -1) return;
      socket.off('data', onData);
      const [statusLine, ...headerLines] = received.subarray(0, end).toString('latin1').split('\r\n');
      const status = Number(statusLine!.split(' ')[1]);
      const parsed = headerLines.map((line): [string, string] => {
        const at = line.indexOf(':');
        return [line.slice(0, at).trim().toLowerCase(), line.slice(at + 1).trim()];
      });
      const rest = received.subarray(end + 4);
      const frames: (string | null)[] = [];
      const waiting: ((text: string | null) => void)[] = [];
      const push = (text: string | null) => {
        const waiter = waiting.shift();
        if (waiter) waiter(text);
        else frames.push(text);
      };
      const client: WebSocketClient = {
        status,
        headers: parsed,
        body: '',
        socket,
        send: (text) => socket.write(frame(0x1, text, true)),
        next: () =>
          frames.length > 0
            ? Promise.resolve(frames.shift()!)
            : new Promise((resolveNext) => waiting.push(resolveNext)),
        closed,
      };
      if (status !== 101) {
        const body: Buffer[] = [rest];
        socket.on('data', (more: Buffer) => body.push(more));
        socket.on('close', () => resolve({ ...client, body: Buffer.concat(body).toString() }));
        return;
      }
      readFrames(socket, (opcode, payload) => push(opcode === 0x1 ? payload.toString() : null), rest);
      socket.on('close', () => push(null));
      resolve(client);
    };
    socket.on('data', onData);
  });
}
