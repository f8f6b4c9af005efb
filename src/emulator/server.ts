/**
 * The emulator's request pipeline: base path, injected faults, body parsing, routing, the request log.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Env } from './env.js';
import {
  BadRequest,
  json,
  parseCookies,
  parseForm,
  type Reply,
  type RequestContext,
  type Router,
  railsParam,
  readBody,
} from './http.js';
import type { Fault, LogEntry } from './state.js';

const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
const LOG_LIMIT = 10_000;

/** Paths that answer CORS requests from any origin, as GitLab (15.1+) does. */
function corsAllowed(path: string): boolean {
  return (
    path === '/oauth/token' ||
    path === '/oauth/revoke' ||
    path === '/oauth/userinfo' ||
    path === '/oauth/discovery/keys' ||
    path === '/.well-known/openid-configuration' ||
    path.startsWith('/api/')
  );
}

function findFault(faults: Fault[], method: string, path: string): Fault | undefined {
  return faults.find(
    (f) =>
      (f.method === null || f.method === method) &&
      (f.path.endsWith('*') ? path.startsWith(f.path.slice(0, -1)) : f.path === path),
  );
}

function faultReply(fault: Fault): Reply {
  const headers: Record<string, string> = { ...fault.headers };
  const status = fault.status ?? 500;
  if (fault.retryAfter !== null) headers['retry-after'] = String(fault.retryAfter);
  if (status === 429 && fault.body === null) {
    // GitLab's Rack::Attack throttle answer.
    return { status, headers: { 'content-type': 'text/plain', ...headers }, body: 'Retry later\n' };
  }
  const body =
    fault.body ??
    (status >= 500
      ? '<!DOCTYPE html>\n<html><body><h1>500</h1><p>Whoops, something went wrong on our end.</p></body></html>'
      : '');
  return {
    status,
    headers: { 'content-type': fault.contentType ?? 'text/html; charset=utf-8', ...headers },
    body,
  };
}

function send(res: ServerResponse, reply: Reply, head: boolean): void {
  if (res.destroyed) return;
  const body = reply.body ?? '';
  const headers = { ...reply.headers };
  if (!('content-length' in headers)) headers['content-length'] = String(Buffer.byteLength(body));
  res.writeHead(reply.status, headers);
  res.end(head ? undefined : body);
}

/** Builds the `node:http` request listener of one emulator. */
export function createListener(
  env: Env,
  router: Router,
): (req: IncomingMessage, res: ServerResponse) => void {
  const { state } = env;
  return (req, res) => {
    void handle(req, res).catch((error: unknown) => {
      process.stderr.write(
        `labgate emulator: internal error: ${error instanceof Error ? error.stack : String(error)}\n`,
      );
      send(res, json(500, { message: '500 Internal Server Error' }), false);
    });
  };

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', env.baseUrl || 'http://127.0.0.1');
    const raw = url.pathname;
    let method = (req.method ?? 'GET').toUpperCase();
    const entry: LogEntry = { time: state.now().toISOString(), method, path: raw, status: 0 };
    const finish = (reply: Reply) => {
      entry.status = reply.status;
      if (corsAllowed(entry.path)) {
        reply.headers = { 'access-control-allow-origin': '*', ...reply.headers };
      }
      send(res, reply, method === 'HEAD');
    };
    state.log.push(entry);
    if (state.log.length > LOG_LIMIT) state.log.splice(0, state.log.length - LOG_LIMIT);

    if (env.basePath && raw !== env.basePath && !raw.startsWith(`${env.basePath}/`)) {
      finish(json(404, { message: '404 Not Found' }));
      return;
    }
    const path = raw.slice(env.basePath.length) || '/';
    entry.path = path;

    // The control API is never subject to faults, so a test can always clear them.
    if (!path.startsWith('/-/emulator/')) {
      const fault = findFault(state.faults, method, path);
      if (fault) {
        entry.fault = fault.id;
        if (fault.remaining !== null && --fault.remaining <= 0) {
          state.faults = state.faults.filter((f) => f !== fault);
        }
        if (fault.delayMs > 0) await new Promise((resolve) => setTimeout(resolve, fault.delayMs));
        if (fault.drop) {
          entry.status = 0;
          req.socket.destroy();
          return;
        }
        if (fault.status !== null || fault.body !== null) {
          finish(faultReply(fault));
          return;
        }
      }
    }

    if (method === 'OPTIONS' && corsAllowed(path)) {
      finish({
        status: 200,
        headers: {
          'access-control-allow-methods': path.startsWith('/api/')
            ? 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS'
            : 'GET, HEAD, POST, OPTIONS',
          'access-control-allow-headers': 'Authorization',
          'access-control-max-age': '7200',
        },
        body: '',
      });
      return;
    }

    let form = new URLSearchParams();
    try {
      if (BODY_METHODS.has(method)) form = parseForm(req.headers['content-type'], await readBody(req));
    } catch (error) {
      if (error instanceof BadRequest) {
        finish(json(error.status, { error: error.message }));
        return;
      }
      throw error;
    }
    // Rails turns a POSTed `_method=delete` (HTML forms) into a DELETE.
    const override = form.get('_method')?.toUpperCase();
    if (method === 'POST' && override && ['DELETE', 'PUT', 'PATCH'].includes(override)) method = override;
    if (path === '/oauth/token') {
      const grantType = form.get('grant_type');
      if (grantType) entry.grantType = grantType;
    }
    const clientId = form.get('client_id') ?? url.searchParams.get('client_id');
    if (clientId && path.startsWith('/oauth/')) entry.clientId = clientId;

    const found = router.match(method, path);
    if (found === undefined) {
      finish(path.startsWith('/api/') ? json(404, { error: '404 Not Found' }) : notFoundPage());
      return;
    }
    if (found === 'method') {
      finish(path.startsWith('/api/') ? json(405, { error: '405 Not Allowed' }) : notFoundPage());
      return;
    }
    const ctx: RequestContext = {
      method,
      path,
      url,
      query: url.searchParams,
      form,
      headers: req.headers,
      cookies: parseCookies(req.headers.cookie),
      params: found.params,
      param: (name) => railsParam(url.searchParams, form, name),
    };
    finish(await found.handler(ctx));
  }
}

function notFoundPage(): Reply {
  return {
    status: 404,
    headers: { 'content-type': 'text/html; charset=utf-8' },
    body: '<!DOCTYPE html>\n<html><head><title>Not Found</title></head><body><h1>404</h1><p>Page Not Found</p></body></html>\n',
  };
}
