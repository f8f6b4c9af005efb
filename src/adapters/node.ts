/**
 * The one place where Node's `http` objects become Web `Request`/`Response` and back. Every
 * labgate feature is a fetch handler (`Request → Response`); the Express, Fastify and Next adapters
 * and the gateway reach Node through these functions only.
 *
 * @see https://fetch.spec.whatwg.org/#request-class
 * @see https://www.rfc-editor.org/rfc/rfc9110
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { finished } from 'node:stream';

/** How a Node request becomes a Web `Request`. */
export interface NodeRequestOptions {
  /**
   * Take the scheme and host from `X-Forwarded-Proto` and `X-Forwarded-Host`. Turn it on only
   * behind a reverse proxy that sets (overwrites) these headers: any client can send them.
   * Ignored for the URL when `origin` is given. Default `false`.
   */
  trustProxy?: boolean;
  /**
   * The app's public origin (`https://app.example.com`, i.e. `LABGATE_URL`). When given, every
   * request URL is this origin plus the request target, whatever `Host` or `X-Forwarded-*` say.
   * Recommended in production: it makes Host-header injection impossible.
   */
  origin?: string;
  /** Aborts every request's `signal` too (a server shutting down, a deadline). */
  signal?: AbortSignal;
}

/** Options of {@link toWebRequest}. */
export interface ToWebRequestOptions extends NodeRequestOptions {
  /**
   * The `ServerResponse` paired with the request. With it, `request.signal` aborts when the client
   * disconnects at any moment before the response is finished, and a request body the handler
   * never read is discarded once the response is sent, so a keep-alive connection stays usable.
   * Without it, the signal only sees a disconnect while the request body is still arriving.
   */
  response?: ServerResponse;
}

/** Options of {@link sendWebResponse}. */
export interface SendWebResponseOptions {
  /** The request method; `HEAD` sends headers only. Default `res.req.method`. */
  method?: string;
}

/** Options of {@link clientAddress}. */
export interface ClientAddressOptions {
  /** Read `X-Forwarded-For` (its left-most valid address). Only behind a proxy that sets it. */
  trustProxy?: boolean;
}

/** A fetch handler: a `Response`, or `null` for "not mine". */
export type FetchHandler = (request: Request) => Promise<Response | null> | Response | null;

/** Options of {@link createNodeListener}. */
export interface NodeListenerOptions extends NodeRequestOptions {
  /** Answers when the handler returns `null`. Default: `404` `text/plain` `Not Found`. */
  notFound?: (req: IncomingMessage, res: ServerResponse) => void;
  /**
   * Reports an error the handler threw (the client gets a generic `500`) or a response body that
   * failed half-way. Default: one line on stderr with the method and the path (no query, no
   * headers, so no cookies or tokens) and the error's stack.
   */
  onError?: (error: unknown, req: IncomingMessage) => void;
}

/** Headers that describe one connection, not the message (RFC 9110 §7.6.1); Node frames the body itself. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade']);

/** Methods the Fetch standard refuses to put in a `Request`. */
const FORBIDDEN_METHODS = new Set(['CONNECT', 'TRACE', 'TRACK']);
/** The `Allow` of a 405 for those: the common methods a fetch handler can be given. */
const FETCH_METHODS = 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS';

/** A `Host` value: reg-name, IPv4 or bracketed IPv6, then an optional port (RFC 9110 §7.2). */
const HOST_PATTERN =
  /^(?:\[[0-9a-f:.]+\]|[a-z0-9_](?:[a-z0-9_-]{0,62})(?:\.[a-z0-9_](?:[a-z0-9_-]{0,62}))*\.?)(?::[0-9]{1,5})?$/i;

/**
 * Converts a Node request into a Web `Request`: URL, method, headers (repeated headers kept) and a
 * streamed body, or the body an Express/body-parser middleware already parsed.
 *
 * The URL is `origin` + the request target when `origin` is given; otherwise `http://` (or
 * `https://` on a TLS socket) + `Host`, or, with `trustProxy`, the first `X-Forwarded-Proto` and
 * `X-Forwarded-Host` values. A target that is not a path (`//evil.example/x`, `http://evil/`) is
 * kept as a path on that origin: it never chooses the host.
 *
 * Throws `TypeError` when `origin` is not an http(s) origin, or for a method the Fetch standard
 * refuses (`CONNECT`, `TRACE`, `TRACK`).
 *
 * @example
 * ```ts
 * import { createServer } from 'node:http';
 * import { sendWebResponse, toWebRequest } from 'labgate/node';
 *
 * createServer(async (req, res) => {
 *   const request = toWebRequest(req, { origin: 'https://app.example.com', response: res });
 *   await sendWebResponse(res, await app(request));
 * }).listen(3000);
 * ```
 * @see https://www.rfc-editor.org/rfc/rfc9112#section-3.2 request targets
 * @see https://fetch.spec.whatwg.org/#dom-requestinit-duplex why the body needs `duplex: 'half'`
 */
export function toWebRequest(req: IncomingMessage, options: ToWebRequestOptions = {}): Request {
  const method = req.method ?? 'GET';
  if (FORBIDDEN_METHODS.has(method.toUpperCase())) {
    throw new TypeError(`toWebRequest: the ${method} method cannot be represented as a Fetch Request`);
  }
  const url = requestUrl(req, options);
  const headers = requestHeaders(req);
  const { signal, detach } = requestSignal(req, options);
  const init: RequestInit & { duplex?: 'half' } = { method, headers, signal };
  if (method !== 'GET' && method !== 'HEAD') {
    const body = requestBody(req, headers, options.response);
    if (body !== null) {
      init.body = body;
      init.duplex = 'half';
    }
  }
  try {
    return new Request(url, init);
  } catch (error) {
    detach();
    throw error;
  }
}

/**
 * The client's IP address: the socket's peer, or with `trustProxy` the left-most valid address in
 * `X-Forwarded-For` (falling back to the peer). `undefined` once the socket is gone.
 *
 * The left-most entry is what the first proxy was told; it is only as trustworthy as the proxy
 * in front of the app, which must overwrite the header rather than append to a client's.
 *
 * @example
 * ```ts
 * const ip = clientAddress(req, { trustProxy: true }); // '203.0.113.7'
 * ```
 * @see https://www.rfc-editor.org/rfc/rfc7239#section-5.2 (the `for` parameter this header predates)
 */
export function clientAddress(req: IncomingMessage, options: ClientAddressOptions = {}): string | undefined {
  if (options.trustProxy) {
    for (const value of headerValues(req, 'x-forwarded-for')) {
      for (const entry of value.split(',')) {
        const address = parseAddress(entry.trim());
        if (address !== undefined) return address;
      }
    }
  }
  return req.socket?.remoteAddress;
}

/**
 * Writes a Web `Response` to a Node `ServerResponse`: status, status text, every header (each
 * `Set-Cookie` as its own header line, after any the response already had), then the body,
 * streamed with backpressure. A `HEAD` request gets the headers only.
 *
 * Resolves when the response is finished, or as soon as the client disconnects (the body stream
 * is then cancelled, never read further). Rejects with `TypeError` when the headers were already
 * sent or the body was already read, and with the body stream's own error if it fails half-way (the
 * connection is then destroyed, so the client cannot take a truncated body for a complete one).
 * Hop-by-hop headers (`Connection`, `Transfer-Encoding`, …) are not copied: framing is Node's job.
 *
 * @example
 * ```ts
 * await sendWebResponse(res, new Response('Hello', { headers: { 'content-type': 'text/plain' } }));
 * ```
 * @see https://www.rfc-editor.org/rfc/rfc6265#section-3 (never fold several Set-Cookie into one)
 */
export async function sendWebResponse(
  res: ServerResponse,
  response: Response,
  options: SendWebResponseOptions = {},
): Promise<void> {
  if (res.headersSent) {
    throw new TypeError(
      'sendWebResponse: the headers of this ServerResponse were already sent, so the Response cannot be written; something else answered first',
    );
  }
  const body = response.body;
  if (response.bodyUsed || body?.locked) {
    throw new TypeError('sendWebResponse: the Response body was already read or is locked');
  }
  if (res.destroyed || res.writableEnded) {
    // The client left before there was anything to send.
    await body?.cancel().catch(() => {});
    return;
  }

  for (const [name, value] of response.headers) {
    if (name === 'set-cookie' || HOP_BY_HOP.has(name)) continue;
    res.setHeader(name, value);
  }
  // `Connection: close` (a 413 whose body was not read, say) ends the connection after this response,
  // so Node does not read the rest of the body to reuse it; the framing itself stays Node's.
  if (response.headers.get('connection')?.toLowerCase() === 'close') res.shouldKeepAlive = false;
  const cookies = response.headers.getSetCookie();
  if (cookies.length > 0) {
    // Keep cookies a middleware set on `res` before: each Set-Cookie is independent.
    const existing = res.getHeader('set-cookie');
    const before = existing === undefined ? [] : Array.isArray(existing) ? existing : [String(existing)];
    res.setHeader('set-cookie', [...before, ...cookies]);
  }
  if (response.statusText) res.writeHead(response.status, response.statusText);
  else res.writeHead(response.status);

  const method = (options.method ?? res.req?.method ?? '').toUpperCase();
  if (body === null || method === 'HEAD') {
    res.end();
    await body?.cancel().catch(() => {});
    await settled(res);
    return;
  }

  const reader = body.getReader();
  let gone = false;
  const onClose = () => {
    if (res.writableFinished) return;
    // Also cancels a read that is waiting for a chunk (an idle event stream).
    gone = true;
    reader.cancel(new DOMException('The client disconnected', 'AbortError')).catch(() => {});
  };
  res.on('close', onClose);
  // Send the headers at once when the first chunk is not ready now (an event stream that starts later).
  const flush = setImmediate(() => {
    if (!res.destroyed) res.flushHeaders();
  });
  try {
    for (;;) {
      const { done, value } = await reader.read();
      clearImmediate(flush);
      if (done || gone) break;
      if (!(value instanceof Uint8Array)) {
        throw new TypeError('sendWebResponse: a Response body chunk is not a Uint8Array');
      }
      if (!res.write(value)) await writable(res);
      if (res.destroyed) break;
    }
  } catch (error) {
    clearImmediate(flush);
    if (gone || res.destroyed) return;
    // Ending normally would make a truncated body look complete.
    res.destroy();
    await reader.cancel(error).catch(() => {});
    throw error;
  } finally {
    res.off('close', onClose);
  }
  if (gone || res.destroyed) return;
  res.end();
  await settled(res);
}

/**
 * A `node:http` request listener around a fetch handler: converts the request, calls the handler,
 * sends its `Response`, or calls `notFound` when it returns `null`. A handler that throws gives a
 * generic `500 Internal Server Error`, and the error goes to `onError`. Never rejects, never
 * throws into Node. Throws `TypeError` at creation on a bad `origin`.
 *
 * @example
 * ```ts
 * import { createServer } from 'node:http';
 * import { createNodeListener } from 'labgate/node';
 *
 * const listener = createNodeListener((request) => labgate.handle(request), {
 *   origin: process.env.LABGATE_URL,
 * });
 * createServer(listener).listen(3000);
 * ```
 */
export function createNodeListener(
  handler: FetchHandler,
  options: NodeListenerOptions = {},
): (req: IncomingMessage, res: ServerResponse) => void {
  if (typeof handler !== 'function') throw new TypeError('createNodeListener: handler must be a function');
  const requestOptions: NodeRequestOptions = {};
  if (options.origin !== undefined) requestOptions.origin = normalizeOrigin(options.origin);
  if (options.trustProxy !== undefined) requestOptions.trustProxy = options.trustProxy;
  if (options.signal !== undefined) requestOptions.signal = options.signal;
  const notFound = options.notFound ?? sendNotFound;
  const onError = options.onError ?? logError;
  const report = (error: unknown, req: IncomingMessage) => {
    try {
      onError(error, req);
    } catch (failure) {
      logError(failure, req);
    }
  };

  return (req, res) => {
    void respond(req, res).catch((error: unknown) => report(error, req));
  };

  async function respond(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let request: Request;
    try {
      request = toWebRequest(req, { ...requestOptions, response: res });
    } catch {
      // A fetch handler can never be given these methods: no route behind this listener allows them.
      if (FORBIDDEN_METHODS.has((req.method ?? '').toUpperCase()))
        sendText(res, 405, 'Method Not Allowed', { allow: FETCH_METHODS });
      else sendText(res, 400, 'Bad Request');
      return;
    }
    let response: Response | null;
    try {
      response = await handler(request);
      if (response === null) {
        notFound(req, res);
        return;
      }
      if (!(response instanceof Response)) {
        throw new TypeError('createNodeListener: the handler returned neither a Response nor null');
      }
    } catch (error) {
      // A handler that gave up because the client left is not an error worth a log line.
      if (!(request.signal.aborted && isAbortError(error, request.signal))) report(error, req);
      if (!res.headersSent) sendText(res, 500, 'Internal Server Error');
      else if (!res.writableEnded) res.destroy();
      return;
    }
    try {
      await sendWebResponse(res, response, { method: req.method ?? 'GET' });
    } catch (error) {
      report(error, req);
    }
  }
}

function normalizeOrigin(origin: string): string {
  let url: URL;
  try {
    url = new URL(origin);
  } catch {
    throw new TypeError(
      `origin must be an absolute http(s) URL such as https://app.example.com, got ${origin}`,
    );
  }
  if (
    (url.protocol !== 'http:' && url.protocol !== 'https:') ||
    url.username !== '' ||
    url.password !== '' ||
    url.pathname !== '/' ||
    url.search !== '' ||
    url.hash !== ''
  ) {
    throw new TypeError(
      `origin must be a bare http(s) origin such as https://app.example.com (no path, query or credentials), got ${origin}`,
    );
  }
  return url.origin;
}

function requestUrl(req: IncomingMessage, options: NodeRequestOptions): string {
  // Whatever the target looks like, it is a path on an origin chosen here, never by the target.
  const target = req.url ?? '/';
  // A raw '#' is not valid in a target (RFC 9112 §3.2); kept as data, it cannot start a fragment.
  const path = (target.startsWith('/') ? target : `/${target}`).replaceAll('#', '%23');
  if (options.origin !== undefined) return new URL(`${normalizeOrigin(options.origin)}${path}`).href;

  const socket: unknown = req.socket;
  let scheme =
    typeof socket === 'object' && socket !== null && 'encrypted' in socket && socket.encrypted === true
      ? 'https'
      : 'http';
  let host = singleHeader(req, 'host') ?? singleHeader(req, ':authority');
  host = host === undefined ? undefined : parseHost(host);
  if (options.trustProxy) {
    const proto = firstListValue(req, 'x-forwarded-proto')?.toLowerCase();
    if (proto === 'http' || proto === 'https') scheme = proto;
    const forwardedHost = firstListValue(req, 'x-forwarded-host');
    const parsed = forwardedHost === undefined ? undefined : parseHost(forwardedHost);
    if (parsed !== undefined) host = parsed;
  }
  return new URL(`${scheme}://${host ?? 'localhost'}${path}`).href;
}

/** A valid `hostname[:port]`, normalised (lower case, default port dropped), or `undefined`. */
function parseHost(value: string): string | undefined {
  if (value.length > 260 || !HOST_PATTERN.test(value)) return undefined;
  try {
    return new URL(`http://${value}`).host;
  } catch {
    return undefined;
  }
}

/** An IP address from an `X-Forwarded-For` entry (`1.2.3.4`, `1.2.3.4:80`, `[::1]:80`, `::1`). */
function parseAddress(entry: string): string | undefined {
  const unquoted = entry.replace(/^"(.*)"$/, '$1');
  if (isIP(unquoted) !== 0) return unquoted;
  const bracketed = /^\[([^\]]+)\](?::\d{1,5})?$/.exec(unquoted);
  if (bracketed && isIP(bracketed[1]!) === 6) return bracketed[1]!;
  const withPort = /^([0-9.]+):\d{1,5}$/.exec(unquoted);
  if (withPort && isIP(withPort[1]!) === 4) return withPort[1]!;
  return undefined;
}

/** Every received value of each header, in order, keyed by lower-case name. */
function distinctHeaders(req: IncomingMessage): Record<string, string[]> {
  if (req.headersDistinct !== undefined) return req.headersDistinct as Record<string, string[]>;
  const headers: Record<string, string[]> = {};
  const raw = req.rawHeaders ?? [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    const values = headers[name] ?? [];
    values.push(raw[i + 1]!);
    headers[name] = values;
  }
  return headers;
}

function headerValues(req: IncomingMessage, name: string): string[] {
  return distinctHeaders(req)[name] ?? [];
}

/** A header that must appear once; sent several times, it is ambiguous and ignored. */
function singleHeader(req: IncomingMessage, name: string): string | undefined {
  const values = headerValues(req, name);
  return values.length === 1 ? values[0]!.trim() : undefined;
}

/** The first element of a comma-separated header, across repeated header lines. */
function firstListValue(req: IncomingMessage, name: string): string | undefined {
  const first = headerValues(req, name)[0]?.split(',')[0]?.trim();
  return first === '' ? undefined : first;
}

function requestHeaders(req: IncomingMessage): Headers {
  const headers = new Headers();
  for (const [name, values] of Object.entries(distinctHeaders(req))) {
    if (name.startsWith(':') || values.length === 0) continue;
    try {
      if (name === 'set-cookie') for (const value of values) headers.append(name, value);
      // RFC 9113 §8.2.3: several cookie fields are joined with "; ", not ", ".
      else headers.set(name, values.join(name === 'cookie' ? '; ' : ', '));
    } catch {
      // A name or value Fetch refuses (only from a hand-made IncomingMessage: Node's parser checks them).
    }
  }
  return headers;
}

function requestSignal(
  req: IncomingMessage,
  options: ToWebRequestOptions,
): { signal: AbortSignal; detach: () => void } {
  const controller = new AbortController();
  const { response, signal: outer } = options;
  const abort = (reason: unknown) => {
    detach();
    controller.abort(reason);
  };
  const onOuterAbort = () => abort(outer?.reason);
  const onResponseClose = () => {
    if (!response?.writableFinished) abort(disconnected());
    else detach();
  };
  const onRequestClose = () => {
    if (req.errored || !req.complete) abort(disconnected());
    else detach();
  };
  const detach = () => {
    outer?.removeEventListener('abort', onOuterAbort);
    response?.off('close', onResponseClose);
    response?.off('finish', detach);
    req.off('close', onRequestClose);
  };

  if (outer?.aborted) {
    controller.abort(outer.reason);
    return { signal: controller.signal, detach };
  }
  outer?.addEventListener('abort', onOuterAbort, { once: true });
  if (response !== undefined) {
    if (response.destroyed && !response.writableFinished) abort(disconnected());
    else {
      response.once('close', onResponseClose);
      response.once('finish', detach);
    }
  } else if (req.destroyed) {
    if (req.errored || !req.complete) abort(disconnected());
  } else {
    req.once('close', onRequestClose);
  }
  return { signal: controller.signal, detach };
}

function disconnected(): DOMException {
  return new DOMException('The client disconnected before the response was sent', 'AbortError');
}

function isAbortError(error: unknown, signal: AbortSignal): boolean {
  return error === signal.reason || (error instanceof Error && error.name === 'AbortError');
}

type ParsedRequest = IncomingMessage & { body?: unknown; rawBody?: unknown };

function requestBody(
  req: IncomingMessage,
  headers: Headers,
  response: ServerResponse | undefined,
): ReadableStream<Uint8Array> | Uint8Array<ArrayBuffer> | string | null {
  if (!req.readableDidRead && !req.readableEnded) return bodyStream(req, response);

  // A middleware (body-parser, multer, a framework) read the stream; rebuild from what it kept.
  // It may have inflated the body, and re-encoding changes the length, so those headers go.
  const { body, rawBody } = req as ParsedRequest;
  headers.delete('content-encoding');
  headers.delete('transfer-encoding');
  headers.delete('content-length');
  let rebuilt: Uint8Array<ArrayBuffer> | string | null;
  // Copies of the bytes, so the Request owns them (a Buffer may sit on a shared pool).
  if (typeof rawBody === 'string') rebuilt = rawBody;
  else if (rawBody instanceof Uint8Array) rebuilt = new Uint8Array(rawBody);
  else if (typeof body === 'string') rebuilt = body;
  else if (body instanceof Uint8Array) rebuilt = new Uint8Array(body);
  else if (body === undefined) rebuilt = null;
  else if (mediaType(headers) === 'application/x-www-form-urlencoded') rebuilt = urlencoded(body);
  else {
    rebuilt = JSON.stringify(body);
    if (!/^application\/(?:[\w.+-]*\+)?json$/.test(mediaType(headers))) {
      headers.set('content-type', 'application/json');
    }
  }
  if (rebuilt !== null) {
    const length = typeof rebuilt === 'string' ? Buffer.byteLength(rebuilt) : rebuilt.byteLength;
    headers.set('content-length', String(length));
  }
  return rebuilt;
}

function mediaType(headers: Headers): string {
  return (headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
}

/** Serialises a parsed form back: repeated keys for arrays, `a[b]` for nested objects (qs style). */
function urlencoded(value: unknown): string {
  const params = new URLSearchParams();
  const append = (key: string, item: unknown) => {
    if (item === undefined) return;
    if (Array.isArray(item)) {
      item.forEach((element, index) => {
        append(typeof element === 'object' && element !== null ? `${key}[${index}]` : key, element);
      });
    } else if (typeof item === 'object' && item !== null) {
      for (const [name, inner] of Object.entries(item)) append(`${key}[${name}]`, inner);
    } else params.append(key, item === null ? '' : String(item));
  };
  if (typeof value === 'object' && value !== null) {
    for (const [name, item] of Object.entries(value)) append(name, item);
  }
  return params.toString();
}

/**
 * The request body as a byte stream with backpressure. It touches `req` only when first read, so
 * a handler that returns `null` leaves the body whole for the next middleware (Express's
 * body-parser), and a body nobody reads is drained by Node itself after the response. Unlike
 * `Readable.toWeb`, cancelling it discards the rest as Node would, instead of destroying the
 * socket or leaving a keep-alive connection stalled on an unread body.
 */
function bodyStream(req: IncomingMessage, response: ServerResponse | undefined): ReadableStream<Uint8Array> {
  let reading = false;
  let settledOrCancelled = false;
  let onData: (chunk: Buffer | string) => void = () => {};
  let stopWatching: () => void = () => {};

  const stream = new ReadableStream<Uint8Array>(
    {
      pull(controller) {
        if (!reading) {
          reading = true;
          onData = (chunk) => {
            // Copy: Node may reuse the memory, and a consumer may transfer the buffer.
            controller.enqueue(
              typeof chunk === 'string' ? new TextEncoder().encode(chunk) : new Uint8Array(chunk),
            );
            if ((controller.desiredSize ?? 0) <= 0) req.pause();
          };
          req.on('data', onData);
          stopWatching = finished(req, (error) => {
            stopWatching();
            req.off('data', onData);
            if (settledOrCancelled) return;
            settledOrCancelled = true;
            if (error) controller.error(disconnected());
            else controller.close();
          });
        }
        req.resume();
      },
      cancel() {
        settledOrCancelled = true;
        stopWatching();
        req.off('data', onData);
        req.resume();
      },
    },
    // High-water mark 0: nothing is read ahead of the consumer, and nothing before its first read.
    new ByteLengthQueuingStrategy({ highWaterMark: 0 }),
  );

  response?.once('finish', () => {
    // A reader that let go half-way leaves Node's parser paused mid-body: drain it, as Node drains
    // a body nobody read, so the connection can carry the next request. A reader still holding
    // the stream keeps it.
    if (reading && !settledOrCancelled && !stream.locked) stream.cancel().catch(() => {});
  });
  return stream;
}

/** Resolves on `drain`, or on `close` (a client that is gone never drains). */
function writable(res: ServerResponse): Promise<void> {
  if (res.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

/** Resolves when the response is flushed or the connection closed. */
function settled(res: ServerResponse): Promise<void> {
  if (res.writableFinished || res.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      res.off('finish', done);
      res.off('close', done);
      resolve();
    };
    res.on('finish', done);
    res.on('close', done);
  });
}

function sendText(
  res: ServerResponse,
  status: number,
  text: string,
  extra: Record<string, string> = {},
): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(status, {
    ...extra,
    'content-type': 'text/plain; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  res.end(res.req?.method === 'HEAD' ? undefined : text);
}

function sendNotFound(_req: IncomingMessage, res: ServerResponse): void {
  sendText(res, 404, 'Not Found');
}

/** The path of a request, percent-encoded, without the query (which may carry codes or tokens). */
function loggablePath(req: IncomingMessage): string {
  const target = req.url ?? '/';
  try {
    return new URL(`http://localhost${target.startsWith('/') ? target : `/${target}`}`).pathname;
  } catch {
    return '/';
  }
}

function logError(error: unknown, req: IncomingMessage): void {
  const detail = error instanceof Error ? (error.stack ?? `${error.name}: ${error.message}`) : String(error);
  process.stderr.write(`labgate: ${req.method ?? 'GET'} ${loggablePath(req)} failed: ${detail}\n`);
}
