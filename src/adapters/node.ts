/**
 * The one place where Node's `http` objects become Web `Request`/`Response` and back. Every
 * labgate feature is a fetch handler (`Request → Response`); the Express, Fastify and Next adapters
 * and the gateway reach Node through these functions only.
 *
 * {@link createNodeListener} is built for speed: the `Request` it hands over is lazy (nothing is
 * built that the handler does not read), and a {@link LightResponse} is written without a stream.
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

/** A header name or method: an RFC 9110 token. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** Methods the Fetch standard upper-cases; any other keeps its case (RFC 9110 §9.1: case-sensitive). */
const NORMALIZED_METHODS = new Set(['DELETE', 'GET', 'HEAD', 'OPTIONS', 'POST', 'PUT']);

/**
 * A request target the URL parser leaves exactly as it is: a path (and query) of characters it never
 * percent-encodes or rewrites. Anything else (`'`, `\`, `#`, spaces, non-ASCII…) goes through `URL`.
 */
const VERBATIM_TARGET = /^\/[A-Za-z0-9\-._~!$&()*+,;=:@/?%]*$/;
/** A `.` or `..` segment, also percent-encoded, which the URL parser resolves. */
const DOT_SEGMENT = /\/(?:\.|%2e){1,2}(?=[/?]|$)/i;

/** Statuses whose response never has a body (Fetch: "null body status"). */
const NULL_BODY_STATUSES = new Set([101, 103, 204, 205, 304]);
/** What a status text may hold (RFC 9112 §4: reason-phrase). */
const REASON_PHRASE = /^[\t\x20-\x7e\x80-\xff]*$/;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
const TEXT_TYPE = 'text/plain;charset=UTF-8';
const JSON_TYPE = 'application/json';

const GlobalResponse = globalThis.Response;

/**
 * Converts a Node request into a Web `Request`: URL, method, headers (repeated headers kept) and a
 * streamed body, or the body an Express/body-parser middleware already parsed.
 *
 * The URL is `origin` + the request target when `origin` is given; otherwise `http://` (or
 * `https://` on a TLS socket) + `Host`, or, with `trustProxy`, the first `X-Forwarded-Proto` and
 * `X-Forwarded-Host` values. A target that is not a path (`//evil.example/x`, `http://evil/`) is
 * kept as a path on that origin: it never chooses the host.
 *
 * This builds the whole `Request` at once; {@link createNodeListener} hands its handler a lazy one
 * that builds only what the handler reads.
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
  const method = fetchMethod(req.method, 'toWebRequest');
  const origin = options.origin === undefined ? undefined : normalizeOrigin(options.origin);
  const url = requestUrl(req, origin, options.trustProxy === true);
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

/** What {@link writeResponse} sends at once: a {@link LightResponse} nothing has made Node's `Response` of. */
interface LightParts {
  status: number;
  statusText: string;
  headers: Headers | undefined;
  /** The implied `Content-Type` when `headers` is undefined. */
  type: string | undefined;
  body: string | Uint8Array | null;
}
let lightParts: (response: unknown) => LightParts | undefined;
let nativeResponse: (response: LightResponse) => Response;

/**
 * A `Response` that {@link createNodeListener} and {@link sendWebResponse} write in one piece
 * (`Content-Length` and a single `res.end(body)`), without a stream, when its body is a string,
 * bytes or null. It is `instanceof Response` and behaves as one: reading its body, `clone()` or
 * anything else a `Response` has builds Node's own `Response` behind it, once, and answers from it.
 * Any other body (a stream, a `Blob`, `FormData`…) makes Node's `Response` at once.
 *
 * Why it exists: Node's `Response` wraps even a string in a stream, and that stream costs more than
 * the rest of a small request. Nothing is replaced globally: use it where speed matters, as you
 * would `Response`; a handler may return either. `LightResponse.json()` and
 * `LightResponse.redirect()` return light responses too.
 *
 * @example
 * ```ts
 * import { createNodeListener, LightResponse } from 'labgate/node';
 *
 * createNodeListener(async (request) =>
 *   (await labgate.handle(request)) ?? LightResponse.json({ hello: 'world' }),
 * );
 * ```
 * @see https://fetch.spec.whatwg.org/#response-class
 */
export class LightResponse {
  #body: string | Uint8Array<ArrayBuffer> | null = null;
  #status = 200;
  #statusText = '';
  /** Made from `init.headers`, or when something reads `headers`. */
  #headers: Headers | undefined;
  /** The `Content-Type` the body implies while no `Headers` exists yet. */
  #impliedType: string | undefined;
  /** Whether the `Content-Type` in `#headers` is the one the body implied (Response.json replaces it). */
  #typeImplied = false;
  /** Node's own `Response`: made at once for other bodies, otherwise when something needs it. */
  #real: Response | undefined;
  /** Whether this response holds its parts itself (false: everything is `#real`'s). */
  #light = false;

  /**
   * The same arguments as `new Response(body, init)`, and the same `TypeError`/`RangeError` for a
   * status, status text or header Fetch refuses.
   */
  constructor(body?: BodyInit | null, init?: ResponseInit) {
    const status = init?.status ?? 200;
    const statusText = init?.statusText ?? '';
    const simple =
      body === null || body === undefined || typeof body === 'string' || body instanceof Uint8Array;
    if (
      !simple ||
      !Number.isInteger(status) ||
      status < 200 ||
      status > 599 ||
      (body != null && NULL_BODY_STATUSES.has(status)) ||
      typeof statusText !== 'string' ||
      !REASON_PHRASE.test(statusText)
    ) {
      // Node's Response decides (and throws for what Fetch refuses).
      this.#real = new GlobalResponse(body, init);
      return;
    }
    this.#light = true;
    // A copy, as Fetch makes: bytes changed after this do not change the response.
    this.#body = body instanceof Uint8Array ? new Uint8Array(body) : (body ?? null);
    this.#status = status;
    this.#statusText = statusText;
    if (init?.headers !== undefined) {
      this.#headers = new Headers(init.headers);
      if (typeof body === 'string' && !this.#headers.has('content-type')) {
        this.#headers.set('content-type', TEXT_TYPE);
        this.#typeImplied = true;
      }
    } else if (typeof body === 'string') this.#impliedType = TEXT_TYPE;
  }

  /** A JSON response, as `Response.json(data, init)`. */
  static json(data: unknown, init?: ResponseInit): LightResponse {
    const text = JSON.stringify(data);
    if (text === undefined) throw new TypeError('LightResponse.json: the value cannot be serialised to JSON');
    const response = new LightResponse(text, init);
    if (response.#light) {
      if (response.#headers === undefined) response.#impliedType = JSON_TYPE;
      else if (response.#typeImplied) response.#headers.set('content-type', JSON_TYPE);
    }
    return response;
  }

  /** A redirect to an absolute URL, as `Response.redirect(url, status)`. */
  static redirect(url: string | URL, status = 302): LightResponse {
    const location = new URL(String(url)).href;
    if (!REDIRECT_STATUSES.has(status))
      throw new RangeError(`LightResponse.redirect: ${status} is not a redirect status`);
    return new LightResponse(null, { status, headers: { location } });
  }

  /** A network error, as `Response.error()`. */
  static error(): Response {
    return GlobalResponse.error();
  }

  static {
    lightParts = (response) => {
      if (!(typeof response === 'object' && response !== null && #light in response)) return undefined;
      if (!response.#light || response.#real !== undefined) return undefined;
      return {
        status: response.#status,
        statusText: response.#statusText,
        headers: response.#headers,
        type: response.#impliedType,
        body: response.#body,
      };
    };
    nativeResponse = (response) => LightResponse.#native(response);
  }

  /** Node's own `Response` with the same parts, made once. */
  static #native(response: LightResponse): Response {
    response.#real ??= new GlobalResponse(response.#body, {
      status: response.#status,
      statusText: response.#statusText,
      headers: response.headers,
    });
    return response.#real;
  }

  get status(): number {
    return this.#light ? this.#status : this.#real!.status;
  }
  get statusText(): string {
    return this.#light ? this.#statusText : this.#real!.statusText;
  }
  get ok(): boolean {
    return this.status >= 200 && this.status <= 299;
  }
  get headers(): Headers {
    if (!this.#light) return this.#real!.headers;
    if (this.#headers === undefined) {
      this.#headers = new Headers();
      if (this.#impliedType !== undefined) this.#headers.set('content-type', this.#impliedType);
    }
    return this.#headers;
  }
  get type(): ResponseType {
    return this.#light ? 'default' : this.#real!.type;
  }
  get url(): string {
    return this.#light ? '' : this.#real!.url;
  }
  get redirected(): boolean {
    return this.#light ? false : this.#real!.redirected;
  }
  get body(): ReadableStream<Uint8Array<ArrayBuffer>> | null {
    if (this.#light && this.#body === null) return null;
    return LightResponse.#native(this).body;
  }
  get bodyUsed(): boolean {
    return this.#real?.bodyUsed ?? false;
  }
  clone(): Response {
    return LightResponse.#native(this).clone();
  }
  arrayBuffer(): Promise<ArrayBuffer> {
    return LightResponse.#native(this).arrayBuffer();
  }
  blob(): Promise<Blob> {
    return LightResponse.#native(this).blob();
  }
  bytes(): Promise<Uint8Array<ArrayBuffer>> {
    return LightResponse.#native(this).bytes();
  }
  formData(): Promise<FormData> {
    return LightResponse.#native(this).formData();
  }
  json(): Promise<unknown> {
    return LightResponse.#native(this).json();
  }
  text(): Promise<string> {
    return LightResponse.#native(this).text();
  }
}
// `instanceof Response` holds, and whatever a later Node adds to Response answers from the real one.
Object.setPrototypeOf(LightResponse.prototype, GlobalResponse.prototype);
delegateMissing(LightResponse.prototype, GlobalResponse.prototype, (response) => nativeResponse(response));

/**
 * Writes a Web `Response` to a Node `ServerResponse`: status, status text, every header (each
 * `Set-Cookie` as its own header line, after any the response already had), then the body. A
 * {@link LightResponse} with a string, bytes or no body is written at once with a `Content-Length`;
 * another body is read: one that is a single chunk ready at once (a `Response` made from a string
 * or bytes) also gets a `Content-Length`, any other is streamed with backpressure. A `HEAD` request
 * gets the headers only.
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
  await writeResponse(res, response, (options.method ?? res.req?.method ?? '').toUpperCase());
  await settled(res);
}

/**
 * Writes the response; `undefined` when it was written at once, else a promise of the body's end
 * (not of the response's flush: {@link sendWebResponse} waits for that).
 */
function writeResponse(res: ServerResponse, response: Response, method: string): Promise<void> | undefined {
  if (res.headersSent) {
    throw new TypeError(
      'sendWebResponse: the headers of this ServerResponse were already sent, so the Response cannot be written; something else answered first',
    );
  }
  const light = lightParts(response);
  if (light === undefined) return writeNative(res, response, method);
  if (res.destroyed || res.writableEnded) return undefined;
  const { body } = light;
  let hasLength = false;
  if (light.headers !== undefined) hasLength = putHeaders(res, light.headers);
  else if (light.type !== undefined) res.setHeader('content-type', light.type);
  if (body !== null && !hasLength) {
    res.setHeader('content-length', typeof body === 'string' ? Buffer.byteLength(body) : body.byteLength);
  }
  if (light.statusText) res.writeHead(light.status, light.statusText);
  else res.writeHead(light.status);
  if (body === null || method === 'HEAD') res.end();
  else res.end(body);
  return undefined;
}

/** Copies a response's headers to `res`; true when they hold a `Content-Length`. */
function putHeaders(res: ServerResponse, headers: Headers): boolean {
  let hasLength = false;
  const cookies: string[] = [];
  for (const [name, value] of headers) {
    if (name === 'set-cookie') cookies.push(value);
    else if (HOP_BY_HOP.has(name)) {
      // `Connection: close` (a 413 whose body was not read, say) ends the connection after this
      // response, so Node does not read the rest of the body to reuse it; the framing stays Node's.
      if (name === 'connection' && value.toLowerCase() === 'close') res.shouldKeepAlive = false;
    } else {
      if (name === 'content-length') hasLength = true;
      res.setHeader(name, value);
    }
  }
  if (cookies.length > 0) {
    // Keep cookies a middleware set on `res` before: each Set-Cookie is independent.
    const existing = res.getHeader('set-cookie');
    const before = existing === undefined ? [] : Array.isArray(existing) ? existing : [String(existing)];
    res.setHeader('set-cookie', [...before, ...cookies]);
  }
  return hasLength;
}

async function writeNative(res: ServerResponse, response: Response, method: string): Promise<void> {
  const body = response.body;
  if (response.bodyUsed || body?.locked) {
    throw new TypeError('sendWebResponse: the Response body was already read or is locked');
  }
  if (res.destroyed || res.writableEnded) {
    // The client left before there was anything to send.
    await body?.cancel().catch(() => {});
    return;
  }
  const hasLength = putHeaders(res, response.headers);
  const { status, statusText } = response;
  let headWritten = false;
  const writeHead = () => {
    if (headWritten) return;
    headWritten = true;
    if (statusText) res.writeHead(status, statusText);
    else res.writeHead(status);
  };
  if (body === null || method === 'HEAD') {
    writeHead();
    res.end();
    await body?.cancel().catch(() => {});
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
    if (res.destroyed) return;
    writeHead();
    res.flushHeaders();
  });
  try {
    let next = reader.read();
    let first = true;
    for (;;) {
      const { done, value } = await next;
      if (done || gone) break;
      if (!(value instanceof Uint8Array)) {
        throw new TypeError('sendWebResponse: a Response body chunk is not a Uint8Array');
      }
      next = reader.read();
      if (first && !headWritten) {
        // A body made from a string or bytes is one chunk, then its end a few microtasks later:
        // sent whole, with a Content-Length, instead of chunked.
        const after = await peek(next);
        if (after?.done && !gone && !res.destroyed) {
          clearImmediate(flush);
          if (!hasLength) res.setHeader('content-length', value.byteLength);
          writeHead();
          res.end(value);
          return;
        }
      }
      first = false;
      clearImmediate(flush);
      writeHead();
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
    clearImmediate(flush);
    res.off('close', onClose);
  }
  if (gone || res.destroyed) return;
  writeHead();
  res.end();
}

/** The outcome of `promise` if it settles within a few microtasks, else undefined (it keeps going). */
async function peek<T>(promise: Promise<T>): Promise<T | undefined> {
  let outcome: T | undefined;
  let settledYet = false;
  promise.then(
    (value) => {
      outcome = value;
      settledYet = true;
    },
    () => {
      settledYet = true;
    },
  );
  for (let tick = 0; tick < 4 && !settledYet; tick++) await Promise.resolve();
  return outcome;
}

/**
 * A `node:http` request listener around a fetch handler: converts the request, calls the handler,
 * sends its `Response`, or calls `notFound` when it returns `null`. A handler that throws gives a
 * generic `500 Internal Server Error`, and the error goes to `onError`. Never rejects, never
 * throws into Node. Throws `TypeError` at creation on a bad `origin`.
 *
 * The handler's `Request` is lazy, so a request that only needs its URL, method and a header or two
 * (a session check) costs next to nothing: `url` and `method` are plain strings; `headers.get()` and
 * `headers.has()` read Node's header list directly until something needs a real `Headers` (iterating,
 * changing it); the `AbortSignal` is made when `signal` is first read (already aborted if the client
 * left before); the body stream and Node's own `Request` behind it when anything else is read
 * (`body`, `text()`, `json()`, `clone()`…). It is `instanceof Request` and its `headers`
 * `instanceof Headers`. One limit: Node's `fetch(request)` and `new Request(request)` read private
 * state that only a `Request` Node made has, which a lazy one gets only on Node 20 and 22; write
 * `fetch(request.url, request)` / `new Request(request.url, request)` (the same request, on every
 * version), or use {@link toWebRequest}.
 *
 * A {@link LightResponse} is written at once, without a stream.
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
  const origin = options.origin === undefined ? undefined : normalizeOrigin(options.origin);
  const trustProxy = options.trustProxy === true;
  const outer = options.signal;
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
    let request: Request;
    try {
      request = lazyRequest(req, res, origin, trustProxy, outer);
    } catch {
      // A fetch handler can never be given these methods: no route behind this listener allows them.
      if (FORBIDDEN_METHODS.has((req.method ?? '').toUpperCase()))
        sendText(res, 405, 'Method Not Allowed', { allow: FETCH_METHODS });
      else sendText(res, 400, 'Bad Request');
      return;
    }
    const failed = (error: unknown) => {
      // A handler that gave up because the client left is not an error worth a log line.
      if (!(request.signal.aborted && isAbortError(error, request.signal))) report(error, req);
      if (!res.headersSent) sendText(res, 500, 'Internal Server Error');
      else if (!res.writableEnded) res.destroy();
    };
    const answer = (response: Response | null) => {
      if (response === null) {
        notFound(req, res);
        return;
      }
      if (!(response instanceof GlobalResponse)) {
        failed(new TypeError('createNodeListener: the handler returned neither a Response nor null'));
        return;
      }
      try {
        writeResponse(res, response, request.method)?.catch((error: unknown) => report(error, req));
      } catch (error) {
        report(error, req);
      }
    };
    let result: ReturnType<FetchHandler>;
    try {
      result = handler(request);
    } catch (error) {
      failed(error);
      return;
    }
    // A handler that answers synchronously is answered in the same turn.
    if (result === null || result instanceof GlobalResponse) answer(result);
    else
      Promise.resolve(result)
        .then(answer, failed)
        .catch((error: unknown) => report(error, req));
  };
}

/**
 * Copies onto `target` every member of `source` (a Web class's prototype) it lacks, each answering
 * from the object `resolve` gives: Node's own methods refuse a `this` they did not make.
 */
function delegateMissing(target: object, source: object, resolve: (self: never) => object): void {
  for (const key of Reflect.ownKeys(source)) {
    if (key === 'constructor' || key === Symbol.toStringTag || Object.hasOwn(target, key)) continue;
    const descriptor = Object.getOwnPropertyDescriptor(source, key)!;
    if (descriptor.get !== undefined) {
      Object.defineProperty(target, key, {
        configurable: true,
        get(this: never) {
          return Reflect.get(resolve(this), key);
        },
      });
    } else if (typeof descriptor.value === 'function') {
      Object.defineProperty(target, key, {
        configurable: true,
        writable: true,
        value(this: never, ...args: unknown[]) {
          const self = resolve(this);
          return (Reflect.get(self, key) as (...a: unknown[]) => unknown).apply(self, args);
        },
      });
    }
  }
}

const inspectSymbol = Symbol.for('nodejs.util.inspect.custom');

let materialiseHeaders: (headers: NodeHeaders) => Headers;
let followHeaders: (headers: NodeHeaders, target: Headers) => void;
/**
 * The `Headers` of a lazy request: `get()` and `has()` read Node's raw header list (joining repeated
 * lines as `Headers` does); anything else makes a real `Headers` once and answers from it. Once the
 * `Request` behind is built, it answers from that request's own headers.
 */
class NodeHeaders {
  readonly #incoming: IncomingMessage;
  #target: Headers | undefined;

  constructor(incoming: IncomingMessage, target: Headers | undefined) {
    this.#incoming = incoming;
    this.#target = target;
  }

  get(name: string): string | null {
    if (this.#target !== undefined) return this.#target.get(name);
    const key = `${name}`;
    // A name Headers refuses throws as Headers would.
    if (!TOKEN.test(key)) return NodeHeaders.#materialise(this).get(key);
    return joinedHeader(this.#incoming, key.toLowerCase());
  }

  has(name: string): boolean {
    if (this.#target !== undefined) return this.#target.has(name);
    const key = `${name}`;
    if (!TOKEN.test(key)) return NodeHeaders.#materialise(this).has(key);
    return joinedHeader(this.#incoming, key.toLowerCase()) !== null;
  }

  static #materialise(headers: NodeHeaders): Headers {
    headers.#target ??= requestHeaders(headers.#incoming);
    return headers.#target;
  }

  static {
    materialiseHeaders = (headers) => NodeHeaders.#materialise(headers);
    followHeaders = (headers, target) => {
      headers.#target = target;
    };
  }

  [inspectSymbol](depth: number, options: object, inspect: (value: unknown, options: object) => string) {
    return `Headers ${inspect(Object.fromEntries(NodeHeaders.#materialise(this)), { ...options, depth })}`;
  }
}
Object.setPrototypeOf(NodeHeaders.prototype, Headers.prototype);
delegateMissing(NodeHeaders.prototype, Headers.prototype, (headers: NodeHeaders) =>
  materialiseHeaders(headers),
);

let buildRequest: (request: NodeRequest) => Request;
/**
 * The `Request` {@link createNodeListener} hands its handler: `instanceof Request`, with `method` and
 * `url` as plain strings, and everything else made when first read. Its prototype chain holds
 * `Request.prototype` (as `@hono/node-server` does) without running Node's constructor, which is the
 * expensive part; every member it does not define answers from Node's own `Request`, built once.
 */
class NodeRequest {
  readonly #incoming: IncomingMessage;
  readonly #response: ServerResponse;
  readonly #outer: AbortSignal | undefined;
  readonly #method: string;
  readonly #url: string;
  #headers: NodeHeaders | undefined;
  #signal: AbortSignal | undefined;
  #real: Request | undefined;

  constructor(
    incoming: IncomingMessage,
    response: ServerResponse,
    method: string,
    url: string,
    outer: AbortSignal | undefined,
  ) {
    this.#incoming = incoming;
    this.#response = response;
    this.#method = method;
    this.#url = url;
    this.#outer = outer;
  }

  get method(): string {
    return this.#method;
  }

  get url(): string {
    return this.#url;
  }

  get headers(): Headers {
    this.#headers ??= new NodeHeaders(this.#incoming, this.#real?.headers);
    return this.#headers as unknown as Headers;
  }

  get signal(): AbortSignal {
    if (this.#signal === undefined) {
      const options: ToWebRequestOptions = { response: this.#response };
      if (this.#outer !== undefined) options.signal = this.#outer;
      this.#signal = requestSignal(this.#incoming, options).signal;
    }
    return this.#signal;
  }

  get body(): ReadableStream<Uint8Array> | null {
    if (this.#real === undefined && (this.#method === 'GET' || this.#method === 'HEAD')) return null;
    return NodeRequest.#build(this).body;
  }

  get bodyUsed(): boolean {
    return this.#real?.bodyUsed ?? false;
  }

  /** Node's own `Request` for this one, built once, with the same headers, signal and body. */
  static #build(request: NodeRequest): Request {
    if (request.#real !== undefined) return request.#real;
    const headers =
      request.#headers === undefined
        ? requestHeaders(request.#incoming)
        : materialiseHeaders(request.#headers);
    const init: RequestInit & { duplex?: 'half' } = {
      method: request.#method,
      headers,
      signal: request.signal,
    };
    if (request.#method !== 'GET' && request.#method !== 'HEAD') {
      const body = requestBody(request.#incoming, headers, request.#response);
      if (body !== null) {
        init.body = body;
        init.duplex = 'half';
      }
    }
    const real = new Request(request.#url, init);
    request.#real = real;
    // From now on, changes to the headers are the real request's.
    if (request.#headers !== undefined) followHeaders(request.#headers, real.headers);
    return real;
  }

  static {
    buildRequest = (request) => NodeRequest.#build(request);
  }

  [inspectSymbol](depth: number, options: object, inspect: (value: unknown, options: object) => string) {
    const shown = { method: this.#method, url: this.#url, headers: this.headers };
    return `Request ${inspect(shown, { ...options, depth })}`;
  }
}
Object.setPrototypeOf(NodeRequest.prototype, Request.prototype);
delegateMissing(NodeRequest.prototype, Request.prototype, (request: NodeRequest) => buildRequest(request));
// Node 20 and 22 (undici 6) read a Request given to `fetch()` or `new Request()` through symbols on
// the instance: answered from the real one, a lazy request works there too. Later versions keep that
// state in private fields, which no other object can answer (see createNodeListener).
for (const key of Object.getOwnPropertySymbols(new Request('http://localhost/'))) {
  Object.defineProperty(NodeRequest.prototype, key, {
    configurable: true,
    get(this: NodeRequest) {
      return Reflect.get(buildRequest(this), key);
    },
  });
}

/** The lazy request of {@link createNodeListener}; throws `TypeError` for a method or URL Fetch refuses. */
function lazyRequest(
  req: IncomingMessage,
  res: ServerResponse,
  origin: string | undefined,
  trustProxy: boolean,
  outer: AbortSignal | undefined,
): Request {
  const method = fetchMethod(req.method, 'createNodeListener');
  const request = new NodeRequest(req, res, method, requestUrl(req, origin, trustProxy), outer);
  // A middleware (body-parser) already read the body and changes the headers that describe it:
  // built now, so the headers read the same before and after.
  if (method !== 'GET' && method !== 'HEAD' && (req.readableDidRead || req.readableEnded)) {
    buildRequest(request);
  }
  return request as unknown as Request;
}

/** The method as Fetch keeps it (six common ones upper-cased); `TypeError` for one it refuses. */
function fetchMethod(method: string | undefined, caller: string): string {
  switch (method) {
    case undefined:
      return 'GET';
    case 'GET':
    case 'HEAD':
    case 'POST':
    case 'PUT':
    case 'PATCH':
    case 'DELETE':
    case 'OPTIONS':
      return method;
  }
  const upper = method.toUpperCase();
  if (FORBIDDEN_METHODS.has(upper) || !TOKEN.test(method)) {
    throw new TypeError(`${caller}: the ${method} method cannot be represented as a Fetch Request`);
  }
  return NORMALIZED_METHODS.has(upper) ? upper : method;
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

/** The request's URL: `origin` (normalised) or the scheme and host the request says, then its target. */
function requestUrl(req: IncomingMessage, origin: string | undefined, trustProxy: boolean): string {
  if (origin !== undefined) return joinUrl(origin, req.url ?? '/');

  const socket: unknown = req.socket;
  let scheme =
    typeof socket === 'object' && socket !== null && 'encrypted' in socket && socket.encrypted === true
      ? 'https'
      : 'http';
  let host = singleHeader(req, 'host') ?? singleHeader(req, ':authority');
  host = host === undefined ? undefined : knownHost(host);
  if (trustProxy) {
    const proto = firstListValue(req, 'x-forwarded-proto')?.toLowerCase();
    if (proto === 'http' || proto === 'https') scheme = proto;
    const forwardedHost = firstListValue(req, 'x-forwarded-host');
    const parsed = forwardedHost === undefined ? undefined : knownHost(forwardedHost);
    if (parsed !== undefined) host = parsed;
  }
  return joinUrl(`${scheme}://${host ?? 'localhost'}`, req.url ?? '/');
}

/**
 * `base` (a serialised origin) + the request target, as the URL parser would write it. Whatever the
 * target looks like, it is a path on that origin, never chosen by the target.
 */
function joinUrl(base: string, target: string): string {
  // The common target is already what the parser would write: no parse needed.
  if (VERBATIM_TARGET.test(target) && !DOT_SEGMENT.test(target)) return `${base}${target}`;
  // A raw '#' is not valid in a target (RFC 9112 §3.2); kept as data, it cannot start a fragment.
  const path = (target.startsWith('/') ? target : `/${target}`).replaceAll('#', '%23');
  return new URL(`${base}${path}`).href;
}

/** Hosts seen lately, parsed: a server sees few, and parsing one is a URL parse. */
const hostCache = new Map<string, string | undefined>();
const HOST_CACHE_SIZE = 64;

/** {@link parseHost}, remembered. */
function knownHost(value: string): string | undefined {
  if (hostCache.has(value)) return hostCache.get(value);
  const host = parseHost(value);
  // Any client can send any Host: the cache is bounded, and simply starts over when full.
  if (hostCache.size >= HOST_CACHE_SIZE) hostCache.clear();
  hostCache.set(value, host);
  return host;
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

/**
 * The value `Headers#get(name)` would give for the request's header `name` (lower case): every
 * line of it, trimmed and joined with ", " ("; " for cookies), or null.
 */
function joinedHeader(req: IncomingMessage, name: string): string | null {
  const raw = req.rawHeaders ?? [];
  let joined: string | null = null;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const key = raw[i]!;
    if (key.length !== name.length || key.toLowerCase() !== name) continue;
    const value = trimWhitespace(raw[i + 1]!);
    // RFC 9113 §8.2.3: several cookie fields are joined with "; ", not ", ".
    joined = joined === null ? value : `${joined}${name === 'cookie' ? '; ' : ', '}${value}`;
  }
  return joined;
}

/** Fetch's header value normalisation: no leading or trailing tab, space, CR or LF. */
function trimWhitespace(value: string): string {
  const last = value.length - 1;
  if (last < 0 || (value.charCodeAt(0) > 0x20 && value.charCodeAt(last) > 0x20)) return value;
  return value.replace(/^[\t\n\r ]+|[\t\n\r ]+$/g, '');
}

/** Every received value of a header (lower-case name), in order. */
function headerValues(req: IncomingMessage, name: string): string[] {
  const raw = req.rawHeaders ?? [];
  const values: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const key = raw[i]!;
    if (key.length === name.length && key.toLowerCase() === name) values.push(raw[i + 1]!);
  }
  return values;
}

/** Every received value of each header, in order, keyed by lower-case name. */
function distinctHeaders(req: IncomingMessage): Map<string, string[]> {
  const headers = new Map<string, string[]>();
  const raw = req.rawHeaders ?? [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    const values = headers.get(name);
    if (values === undefined) headers.set(name, [raw[i + 1]!]);
    else values.push(raw[i + 1]!);
  }
  return headers;
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
  for (const [name, values] of distinctHeaders(req)) {
    if (name.startsWith(':')) continue;
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
