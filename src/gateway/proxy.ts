/**
 * The gateway's reverse proxy: streams a request to the one upstream and its answer back, never
 * buffering a body, over a keep-alive pool; tunnels WebSockets after a genuine upstream `101`. It
 * decides nothing: the caller has authenticated the request and built its headers
 * (`upstreamHeaders`, docs/security.md GATEWAY-1, GATEWAY-2, GATEWAY-4) before calling it. Every
 * failure becomes an answer (502, 504) or a closed connection, never a throw, a hang or a stack trace.
 */
import http, {
  type IncomingHttpHeaders,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  type ServerResponse,
} from 'node:http';
import https from 'node:https';
import { isIP, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { pipeline } from 'node:stream';
import { filterSetCookie, HOP_BY_HOP } from './headers.js';

/** Options of {@link createProxy}. */
export interface ProxyOptions {
  /** The upstream's base URL (`http://127.0.0.1:8080/base`); its path prefixes every forwarded path. */
  upstream: URL;
  /**
   * Milliseconds the upstream has to send its response headers, counted from the start of the request
   * and again from each chunk of its body (so a long upload is not cut); then 504.
   */
  timeout: number;
  /** Most connections open to the upstream at once; more requests wait for one. Default: no limit. */
  maxSockets?: number;
}

/** What to forward: the path (with query) below the upstream's base path, and the headers as built. */
export interface ForwardInit {
  /** The normalised path and query (`/x?y=1`), joined to the upstream's base path. */
  path: string;
  /** The request headers for the upstream, from `upstreamHeaders`. */
  headers: OutgoingHttpHeaders;
  /** Whether a cookie name is the gateway's own: such `Set-Cookie` lines from the upstream are dropped. */
  ownCookie: (name: string) => boolean;
}

/** How one forwarded request ended, for the caller's log line. */
export interface ForwardResult {
  /**
   * The status sent to the client: the upstream's, 502 (unreachable), 504 (too slow), or 499 when
   * the client left before any answer.
   */
  status: number;
  /** Milliseconds until the upstream's response headers (or until it failed). */
  upstreamMs: number;
  /** Why it failed, as a short code safe to log (`ECONNREFUSED`, `timeout`, `client_closed`, `upstream_aborted`). */
  failure?: string;
}

/** What to send for a WebSocket upgrade. */
export interface UpgradeInit {
  /** The normalised path and query, joined to the upstream's base path. */
  path: string;
  /** The request headers for the upstream, from `upstreamHeaders` with `upgrade: true`. */
  headers: OutgoingHttpHeaders;
  /** Whether a cookie name is the gateway's own: such `Set-Cookie` lines of the answer are dropped. */
  ownCookie?: (name: string) => boolean;
}

/** An open WebSocket tunnel between a client and the upstream. */
export interface Tunnel {
  /** Ends both sides (the session ended, or the gateway shuts down). */
  close(): void;
  /** Settles once both sockets are closed, whichever side ended the tunnel. */
  closed: Promise<void>;
}

/** The reverse proxy to one upstream. */
export interface Proxy {
  /**
   * Streams `req` to the upstream at `init.path` and its answer to `res`. Resolves when the exchange is
   * over, never rejects.
   */
  forward(req: IncomingMessage, res: ServerResponse, init: ForwardInit): Promise<ForwardResult>;
  /**
   * Sends an upgrade request upstream. On a genuine `101` writes it to `socket` and joins both sockets
   * in a {@link Tunnel}; any other answer is relayed as a plain response, the socket ended, and the
   * promise resolves `null`. Authenticate and check `Origin` before calling it (docs/security.md, GATEWAY-1).
   */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer, init: UpgradeInit): Promise<Tunnel | null>;
  /** Destroys the pool's sockets to the upstream. */
  close(): void;
}

const ERRORS = {
  upstream_unavailable: { status: 502, message: 'The upstream is unavailable.' },
  upstream_timeout: { status: 504, message: 'The upstream did not answer in time.' },
} as const;
type ProxyError = keyof typeof ERRORS;

/** The JSON body and headers of the gateway's own answer for `code`. */
function errorAnswer(code: ProxyError): { status: number; body: string; headers: Record<string, string> } {
  const { status, message } = ERRORS[code];
  const body = JSON.stringify({ error: code, message });
  return {
    status,
    body,
    headers: {
      'content-type': 'application/json',
      'content-length': String(Buffer.byteLength(body)),
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
    },
  };
}

/**
 * The upstream's response headers to relay, as a flat `[name, value, …]` list that keeps repeated
 * headers: hop-by-hop ones and those its `Connection` names left out, and the gateway's own
 * `Set-Cookie` lines dropped. With `keepUpgrade`, `Upgrade` and `Connection` stay (a `101`).
 */
function relayedHeaders(
  response: IncomingMessage,
  ownCookie: (name: string) => boolean,
  keepUpgrade = false,
): string[] {
  const raw = response.rawHeaders;
  const named = new Set<string>();
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i]!.toLowerCase() !== 'connection') continue;
    for (const token of raw[i + 1]!.split(',')) named.add(token.trim().toLowerCase());
  }
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    const value = raw[i + 1]!;
    if (keepUpgrade && (name === 'upgrade' || name === 'connection')) {
      out.push(raw[i]!, value);
      continue;
    }
    if (HOP_BY_HOP.has(name) || named.has(name)) continue;
    if (name === 'set-cookie' && filterSetCookie([value], ownCookie).length === 0) continue;
    out.push(raw[i]!, value);
  }
  return out;
}

/** A response head written by hand onto a raw socket (an upgrade answer). */
function head(status: number, reason: string, headers: string[]): string {
  let text = `HTTP/1.1 ${status} ${reason}\r\n`;
  for (let i = 0; i < headers.length; i += 2) text += `${headers[i]}: ${headers[i + 1]}\r\n`;
  return `${text}\r\n`;
}

/** A reason phrase safe on a status line (Node's own for the code). */
function reasonOf(status: number): string {
  return http.STATUS_CODES[status] ?? 'Unknown';
}

/** Whether `req` carries a body (declared or chunked). */
function hasBody(headers: IncomingHttpHeaders): boolean {
  return headers['transfer-encoding'] !== undefined || Number(headers['content-length'] ?? 0) > 0;
}

/**
 * A reverse proxy to `options.upstream` over a keep-alive pool (`http.Agent` or `https.Agent`).
 *
 * @example
 * ```ts
 * const proxy = createProxy({ upstream: new URL('http://127.0.0.1:8080'), timeout: 30_000 });
 * server.on('request', async (req, res) => {
 *   const headers = upstreamHeaders(req, init);
 *   if (isHeaderRefusal(headers)) return answer400(res, headers.error);
 *   const { status, upstreamMs } = await proxy.forward(req, res, { path: req.url!, headers, ownCookie });
 * });
 * ```
 */
export function createProxy(options: ProxyOptions): Proxy {
  const upstream = options.upstream;
  const secure = upstream.protocol === 'https:';
  if (!secure && upstream.protocol !== 'http:') {
    throw new TypeError(`labgate: the upstream must be an http(s) URL (got ${upstream.protocol})`);
  }
  if (!Number.isFinite(options.timeout) || options.timeout <= 0) {
    throw new TypeError('labgate: the upstream timeout must be a positive number of milliseconds');
  }
  const agentOptions = { keepAlive: true, maxSockets: options.maxSockets ?? Number.POSITIVE_INFINITY };
  const agent = secure ? new https.Agent(agentOptions) : new http.Agent(agentOptions);
  const hostname = upstream.hostname.replace(/^\[(.*)\]$/, '$1');
  const port = upstream.port === '' ? (secure ? 443 : 80) : Number(upstream.port);
  const base = upstream.pathname.replace(/\/+$/, '');

  /** Starts a request upstream; `null` when Node refuses it outright (an invalid header). */
  function request(method: string, path: string, headers: OutgoingHttpHeaders): http.ClientRequest | null {
    const target = base + (path.startsWith('/') ? path : `/${path}`);
    const requestOptions: https.RequestOptions = { agent, method, hostname, port, path: target, headers };
    // TLS names the upstream, not the public Host header the request carries.
    if (secure) requestOptions.servername = isIP(hostname) === 0 ? hostname : '';
    try {
      return (secure ? https : http).request(requestOptions);
    } catch {
      return null;
    }
  }

  function forward(req: IncomingMessage, res: ServerResponse, init: ForwardInit): Promise<ForwardResult> {
    const started = performance.now();
    const elapsed = () => Math.round(performance.now() - started);
    return new Promise<ForwardResult>((resolve) => {
      let settled = false;
      let upstreamMs = -1;
      let upstreamReq: http.ClientRequest | null = null;
      let upstreamBroke = false;
      const done = (status: number, failure?: string) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        const result: ForwardResult = { status, upstreamMs: upstreamMs < 0 ? elapsed() : upstreamMs };
        if (failure !== undefined) result.failure = failure;
        resolve(result);
      };

      const fail = (code: ProxyError, failure: string) => {
        if (settled || upstreamMs >= 0) return;
        upstreamMs = elapsed();
        upstreamReq?.destroy();
        if (res.headersSent || res.destroyed) {
          res.destroy();
          done(res.headersSent ? res.statusCode : 499, failure);
          return;
        }
        const answer = errorAnswer(code);
        discardBody();
        res.writeHead(answer.status, answer.headers);
        res.end(answer.body);
        done(answer.status, failure);
      };

      // Read what is left of the request body and drop it, so the connection can carry the answer (and
      // the next request); closing it with unread data would have the kernel reset it, answer and all.
      const discardBody = () => {
        if (req.complete) return;
        req.unpipe();
        req.resume();
      };

      const headers = { ...init.headers };
      const body = hasBody(req.headers);
      // `Transfer-Encoding` is hop-by-hop and was dropped: a body of unknown length goes on chunked.
      if (headers['content-length'] === undefined && body) headers['transfer-encoding'] = 'chunked';
      const timer = setTimeout(() => fail('upstream_timeout', 'timeout'), options.timeout);

      const attempt = (retry: boolean) => {
        const sent = request(req.method ?? 'GET', init.path, headers);
        upstreamReq = sent;
        if (sent === null) {
          fail('upstream_unavailable', 'invalid_request');
          return;
        }
        sent.on('error', (error: NodeJS.ErrnoException) => {
          // The upstream answered and then stopped reading the body (a 413, say): the client still gets
          // that answer, and the rest of its body is read and dropped.
          if (upstreamMs >= 0) discardBody();
          if (settled || upstreamMs >= 0 || upstreamReq !== sent) return;
          // A pooled connection the upstream closed while idle: a request with no body is sent again
          // once on a fresh one, as nothing of it can have been acted on twice.
          if (
            retry &&
            sent.reusedSocket &&
            !body &&
            (error.code === 'ECONNRESET' || error.code === 'EPIPE')
          ) {
            attempt(false);
            return;
          }
          fail('upstream_unavailable', error.code ?? 'error');
        });
        sent.on('response', (response) => {
          if (settled || res.destroyed || upstreamReq !== sent) {
            response.destroy();
            return;
          }
          upstreamMs = elapsed();
          clearTimeout(timer);
          const status = response.statusCode ?? 502;
          // An upstream dying mid-body destroys the client's connection: a cut body must not look whole.
          response.on('error', () => {
            upstreamBroke = true;
            res.destroy();
            done(status, 'upstream_aborted');
          });
          try {
            res.writeHead(status, relayedHeaders(response, init.ownCookie));
          } catch {
            response.destroy();
            res.destroy();
            done(502, 'invalid_response');
            return;
          }
          // `pipe`, not `pipeline`: the same backpressure, without the AbortController (and its
          // DOMException) that `pipeline` makes for every response — a tenth of a small request's CPU.
          res.on('finish', () => done(status));
          response.pipe(res);
        });
        if (body) req.pipe(sent);
        else sent.end();
      };

      res.on('close', () => {
        if (res.writableFinished) return;
        // The client left: nothing more to fetch or send.
        upstreamReq?.destroy();
        done(res.headersSent ? res.statusCode : 499, upstreamBroke ? 'upstream_aborted' : 'client_closed');
      });
      // Each chunk sent re-arms the clock: the upstream has `timeout` ms after the last one.
      req.on('data', () => {
        if (upstreamMs < 0 && !settled) timer.refresh();
      });
      attempt(true);
    });
  }

  function upgrade(
    req: IncomingMessage,
    socket: Duplex,
    clientHead: Buffer,
    init: UpgradeInit,
  ): Promise<Tunnel | null> {
    return new Promise<Tunnel | null>((resolve) => {
      let settled = false;
      const finish = (tunnel: Tunnel | null) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(tunnel);
      };
      const ownCookie = init.ownCookie ?? (() => false);
      const refuse = (code: ProxyError) => {
        if (settled) return;
        upstreamReq?.destroy();
        if (!socket.destroyed && socket.writable) {
          const answer = errorAnswer(code);
          const lines = Object.entries({ ...answer.headers, connection: 'close' }).flat();
          socket.end(head(answer.status, reasonOf(answer.status), lines) + answer.body);
        }
        finish(null);
      };
      // An error on the client's socket is its leaving; never an uncaught exception.
      socket.on('error', () => socket.destroy());
      const upstreamReq = request(req.method ?? 'GET', init.path, init.headers);
      const timer = setTimeout(() => refuse('upstream_timeout'), options.timeout);
      if (upstreamReq === null) {
        refuse('upstream_unavailable');
        return;
      }
      socket.once('close', () => {
        if (settled) return;
        upstreamReq.destroy();
        finish(null);
      });
      upstreamReq.on('error', () => refuse('upstream_unavailable'));
      upstreamReq.end();

      upstreamReq.on('response', (response) => {
        // Not a 101: relay it as a plain answer, then end the connection.
        clearTimeout(timer);
        if (settled || socket.destroyed) {
          response.destroy();
          finish(null);
          return;
        }
        const status = response.statusCode ?? 502;
        const lines = relayedHeaders(response, ownCookie);
        lines.push('Connection', 'close');
        socket.write(head(status, reasonOf(status), lines), 'latin1');
        pipeline(response, socket, () => {
          socket.destroy();
          finish(null);
        });
      });

      upstreamReq.on('upgrade', (response, upstreamSocket: Socket, upstreamHead: Buffer) => {
        clearTimeout(timer);
        if (settled || socket.destroyed) {
          upstreamSocket.destroy();
          finish(null);
          return;
        }
        upstreamSocket.on('error', () => upstreamSocket.destroy());
        socket.write(head(101, 'Switching Protocols', relayedHeaders(response, ownCookie, true)), 'latin1');
        if (upstreamHead.length > 0) socket.write(upstreamHead);
        if (clientHead.length > 0) upstreamSocket.write(clientHead);
        socket.pipe(upstreamSocket);
        upstreamSocket.pipe(socket);
        const closed = Promise.all([
          new Promise((r) => (socket.destroyed ? r(null) : socket.once('close', r))),
          new Promise((r) => (upstreamSocket.destroyed ? r(null) : upstreamSocket.once('close', r))),
        ]).then(() => undefined);
        // One side gone ends the other.
        socket.once('close', () => upstreamSocket.destroy());
        upstreamSocket.once('close', () => socket.destroy());
        settled = true;
        resolve({
          closed,
          close() {
            socket.end();
            upstreamSocket.end();
            // A peer that never answers the FIN does not keep the tunnel open.
            setTimeout(() => {
              socket.destroy();
              upstreamSocket.destroy();
            }, 1000).unref();
          },
        });
      });
    });
  }

  return {
    forward,
    upgrade,
    close() {
      agent.destroy();
    },
  };
}
