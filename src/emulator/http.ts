/**
 * The emulator's small HTTP layer: a router over `node:http`, request parsing with limits, and reply
 * helpers. The emulator imports nothing from labgate's client code, so it keeps its own.
 */
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';

/** What a handler answers. */
export interface Reply {
  status: number;
  headers?: Record<string, string | string[]>;
  body?: string | Uint8Array | null;
}

/** A parsed request, as handlers see it. */
export interface RequestContext {
  /** The method after Rails' `_method` override of HTML forms. */
  method: string;
  /** The path below the emulator's base path, still percent-encoded. */
  path: string;
  /** The full URL the client asked for. */
  url: URL;
  query: URLSearchParams;
  /** Form fields of an urlencoded or JSON body (JSON values are stringified). */
  form: URLSearchParams;
  headers: IncomingHttpHeaders;
  cookies: Map<string, string>;
  /** Path parameters, percent-decoded. */
  params: Record<string, string>;
  /**
   * Query and body merged as Rails' `params` merges them (`request_parameters.merge(query_parameters)`):
   * a name in the query wins over the same name in the body; of repeated names the last counts.
   */
  param(name: string): string | undefined;
}

export type Handler = (ctx: RequestContext) => Reply | Promise<Reply>;

interface Route {
  methods: string[];
  pattern: RegExp;
  names: string[];
  handler: Handler;
}

/** Maps method and path to a handler; `:name` segments capture one path segment. */
export class Router {
  readonly #routes: Route[] = [];

  on(methods: string | string[], path: string, handler: Handler): void {
    const names: string[] = [];
    const source = path
      .split('/')
      .map((segment) => {
        if (!segment.startsWith(':')) return segment.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
        names.push(segment.slice(1));
        return '([^/]+)';
      })
      .join('/');
    this.#routes.push({
      methods: Array.isArray(methods) ? methods : [methods],
      pattern: new RegExp(`^${source}$`),
      names,
      handler,
    });
  }

  /** The handler for a request: `undefined` when no path matches, `'method'` when only the method is wrong. */
  match(
    method: string,
    path: string,
  ): { handler: Handler; params: Record<string, string> } | 'method' | undefined {
    let pathMatched = false;
    for (const route of this.#routes) {
      const found = route.pattern.exec(path);
      if (!found) continue;
      pathMatched = true;
      if (!route.methods.includes(method) && !(method === 'HEAD' && route.methods.includes('GET'))) continue;
      const params: Record<string, string> = {};
      for (const [i, name] of route.names.entries()) {
        try {
          params[name] = decodeURIComponent(found[i + 1]!);
        } catch {
          params[name] = found[i + 1]!;
        }
      }
      return { handler: route.handler, params };
    }
    return pathMatched ? 'method' : undefined;
  }
}

/** Thrown while reading a request that is too large or malformed; answered with its status. */
export class BadRequest extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const MAX_BODY = 1024 * 1024;

/**
 * Reads a request body up to 1 MiB. A body that never arrives in full (the client went away, or the
 * server's `requestTimeout` cut it off) is a {@link BadRequest}, not an internal error.
 */
export async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > MAX_BODY) throw new BadRequest(413, 'Request Entity Too Large');
      chunks.push(chunk as Buffer);
    }
  } catch (error) {
    if (error instanceof BadRequest) throw error;
    throw new BadRequest(400, 'Incomplete request body');
  }
  return Buffer.concat(chunks);
}

/**
 * One parameter as Rails' `params` reads it: `request_parameters.merge(query_parameters)`, so the
 * query wins over the body, and Rack keeps the last of repeated names.
 * @example
 * ```ts
 * railsParam(new URLSearchParams('a=1'), new URLSearchParams('a=2&b=3'), 'a'); // '1'
 * ```
 */
export function railsParam(query: URLSearchParams, form: URLSearchParams, name: string): string | undefined {
  return (query.has(name) ? query : form).getAll(name).at(-1);
}

/** Parses an urlencoded or JSON body into form fields. */
export function parseForm(contentType: string | undefined, body: Buffer): URLSearchParams {
  const type = (contentType ?? '').split(';')[0]!.trim().toLowerCase();
  if (body.length === 0) return new URLSearchParams();
  if (type === 'application/json') {
    let data: unknown;
    try {
      data = JSON.parse(body.toString('utf8'));
    } catch {
      throw new BadRequest(400, 'Malformed JSON body');
    }
    const form = new URLSearchParams();
    if (data && typeof data === 'object' && !Array.isArray(data)) {
      for (const [key, value] of Object.entries(data)) {
        if (value !== null && value !== undefined) {
          form.append(key, typeof value === 'string' ? value : JSON.stringify(value));
        }
      }
    }
    return form;
  }
  if (type === 'application/x-www-form-urlencoded' || type === '')
    return new URLSearchParams(body.toString('utf8'));
  return new URLSearchParams();
}

/** Parses a `Cookie` header. */
export function parseCookies(header: string | undefined): Map<string, string> {
  const cookies = new Map<string, string>();
  for (const part of (header ?? '').split(';')) {
    const at = part.indexOf('=');
    if (at <= 0) continue;
    const name = part.slice(0, at).trim();
    if (!cookies.has(name)) cookies.set(name, part.slice(at + 1).trim());
  }
  return cookies;
}

/** A JSON reply with GitLab's content type. */
export function json(status: number, body: unknown, headers: Record<string, string | string[]> = {}): Reply {
  return {
    status,
    headers: { 'content-type': 'application/json; charset=utf-8', ...headers },
    body: JSON.stringify(body),
  };
}

/** An HTML reply. */
export function html(status: number, body: string, headers: Record<string, string | string[]> = {}): Reply {
  return { status, headers: { 'content-type': 'text/html; charset=utf-8', ...headers }, body };
}

/** A plain-text reply. */
export function text(status: number, body: string, headers: Record<string, string | string[]> = {}): Reply {
  return { status, headers: { 'content-type': 'text/plain; charset=utf-8', ...headers }, body };
}

/** A redirect, as Rails sends it (302 with a tiny HTML body). */
export function redirect(location: string, headers: Record<string, string | string[]> = {}): Reply {
  return html(
    302,
    `<html><body>You are being <a href="${escapeHtml(location)}">redirected</a>.</body></html>`,
    {
      location,
      ...headers,
    },
  );
}

/** Escapes text for HTML element content and attribute values. */
export function escapeHtml(value: string): string {
  return value.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c,
  );
}
