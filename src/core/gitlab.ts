/**
 * A small client of GitLab's REST API v4 on the signed-in user's behalf: the base URL with its
 * sub-path, `Authorization: Bearer` only (never `?access_token=`), one retry after a refresh on 401,
 * `429` honoured with a bounded `Retry-After`, one retry of a `GET` whose connection was reset before
 * GitLab answered, an async iterator over GitLab's pagination, JSON refused when an object names a
 * member twice, and typed errors that never carry the token.
 */
import { parseStrictJson, StrictJsonError } from './json.js';
import { logText } from './log.js';
import { isConnectionReset } from './provider.js';

/** A GitLab API error: the status and GitLab's message, never the token or the query string. */
export class GitLabApiError extends Error {
  override name = 'GitLabApiError';
  /** HTTP status (0 when GitLab could not be reached). */
  readonly status: number;
  /** `GET`, `POST`, … */
  readonly method: string;
  /** The API path, without the query string. */
  readonly path: string;
  /** GitLab's `message` or `error` field, when it sent one. */
  readonly gitlabMessage: string | null;
  /**
   * GitLab's OAuth error code, from the body's `error` or the `WWW-Authenticate` challenge's
   * `error="…"`: `insufficient_scope` (a 403 for a token without the scope the endpoint needs),
   * `invalid_token` (a 401 for an expired or revoked token); null for other answers.
   */
  readonly error: string | null;

  constructor(init: {
    status: number;
    method: string;
    path: string;
    gitlabMessage: string | null;
    error?: string | null;
    cause?: unknown;
  }) {
    super(
      `GitLab API ${init.method} ${init.path} failed${init.status ? ` with ${init.status}` : ''}${init.gitlabMessage ? `: ${init.gitlabMessage}` : ''}`,
      init.cause === undefined ? undefined : { cause: init.cause },
    );
    this.status = init.status;
    this.method = init.method;
    this.path = init.path;
    this.gitlabMessage = init.gitlabMessage;
    this.error = init.error ?? null;
  }
}

/** Query parameters; arrays become repeated `name[]` parameters as GitLab expects. */
export type Query = Record<string, string | number | boolean | readonly (string | number)[] | undefined>;

/** Options of one request. */
export interface RequestOptions {
  query?: Query;
  /** A JSON body (POST, PUT, PATCH). */
  body?: unknown;
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

/** A GitLab API client bound to one user's token. */
export interface GitLabClient {
  /** The API base, `https://gitlab.example.com/gitlab/api/v4`. */
  readonly apiUrl: string;
  /** Any request; resolves the parsed JSON body (or null for 204). */
  request<T = unknown>(method: string, path: string, options?: RequestOptions): Promise<T>;
  /** `GET` a path. */
  get<T = unknown>(path: string, query?: Query): Promise<T>;
  /** Every item of a paginated list, page after page (100 a page by default), following `x-next-page`. */
  paginate<T = unknown>(path: string, query?: Query): AsyncIterable<T>;
  /** The current access token (for other clients, such as `@gitbeaker/rest`'s `oauthToken`). */
  token(): Promise<string>;
}

/** What {@link createGitLabClient} needs. */
export interface GitLabClientOptions {
  /** GitLab's base URL (with its sub-path). */
  gitlabUrl: string;
  /** The user's access token; `forceRefresh` after GitLab answered 401. */
  getToken(options: { forceRefresh: boolean }): Promise<string>;
  fetch?: typeof fetch;
  /** Per-request timeout in milliseconds (default 10 000). */
  timeout?: number;
  /** Longest wait honoured from a `Retry-After` on 429, in milliseconds (default 10 000). */
  maxRetryAfter?: number;
  /** Retries after a 429 (default 2). */
  maxRetries?: number;
}

function appendQuery(url: URL, query: Query | undefined): void {
  for (const [name, value] of Object.entries(query ?? {})) {
    if (value === undefined) continue;
    if (Array.isArray(value)) for (const item of value) url.searchParams.append(`${name}[]`, String(item));
    else url.searchParams.set(name, String(value));
  }
}

function retryAfterMs(header: string | null, now: number): number | null {
  if (!header) return null;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(header);
  return Number.isNaN(date) ? null : Math.max(0, date - now);
}

/** GitLab's words in a failed answer: its message, and its OAuth error code (body, else challenge). */
async function gitlabFailure(
  response: Response,
): Promise<{ gitlabMessage: string | null; error: string | null }> {
  const challenge =
    /\berror="([a-z_]{1,64})"/.exec(response.headers.get('www-authenticate') ?? '')?.[1] ?? null;
  try {
    const text = await response.text();
    const body = JSON.parse(text) as { message?: unknown; error?: unknown; error_description?: unknown };
    const message = body.message ?? body.error_description ?? body.error;
    const code = typeof body.error === 'string' && /^[a-z_]{1,64}$/.test(body.error) ? body.error : challenge;
    // GitLab's text goes into the error's message, and so into log lines.
    return {
      gitlabMessage:
        typeof message === 'string'
          ? logText(message, 300)
          : message === undefined
            ? null
            : logText(JSON.stringify(message), 300),
      error: code,
    };
  } catch {
    return { gitlabMessage: null, error: challenge };
  }
}

/**
 * Creates a GitLab API client. `labgate.gitlab(session)` makes one bound to a session, whose tokens
 * refresh themselves.
 *
 * @example
 * ```ts
 * const api = labgate.gitlab(session);
 * const me = await api.get<{ username: string }>('/user');
 * for await (const project of api.paginate<{ path_with_namespace: string }>('/projects', { membership: true })) {
 *   console.log(project.path_with_namespace);
 * }
 * ```
 */
export function createGitLabClient(options: GitLabClientOptions): GitLabClient {
  const apiUrl = `${options.gitlabUrl.replace(/\/+$/, '')}/api/v4`;
  const doFetch = options.fetch ?? globalThis.fetch;
  const timeout = options.timeout ?? 10_000;
  const maxRetryAfter = options.maxRetryAfter ?? 10_000;
  const maxRetries = options.maxRetries ?? 2;

  /** The path of a request as error messages name it: below the API base, without a query string. */
  function barePath(path: string): string {
    return new URL(`${apiUrl}${path}`).pathname.slice(new URL(apiUrl).pathname.length);
  }

  /** The JSON of an answer, refused when it is not JSON or an object names a member twice. */
  function parseBody(text: string, response: Response, method: string, path: string): unknown {
    try {
      return parseStrictJson(text);
    } catch (cause) {
      throw new GitLabApiError({
        status: response.status,
        method,
        path: barePath(path),
        gitlabMessage:
          cause instanceof StrictJsonError && cause.reason === 'duplicate'
            ? `the response names the member ${JSON.stringify(logText(cause.member, 64))} twice`
            : 'the response is not JSON',
        cause,
      });
    }
  }

  async function send(method: string, path: string, request: RequestOptions): Promise<Response> {
    if (!path.startsWith('/'))
      throw new TypeError(`labgate: GitLab API paths start with "/" (got ${JSON.stringify(logText(path))})`);
    const url = new URL(`${apiUrl}${path}`);
    appendQuery(url, request.query);
    const bare = barePath(path);
    const idempotent = method === 'GET' || method === 'HEAD';
    // The token GitLab answered 401 to. Only that one is refreshed: a call whose 401 arrives after a
    // concurrent call already refreshed takes the new token instead of refreshing (and, as GitLab
    // rotates, revoking) it again; a 429 retry after the 401 retry never refreshes.
    let rejected: string | null = null;
    let retries = 0;
    let resent = false;
    for (;;) {
      let token = await options.getToken({ forceRefresh: false });
      if (token === rejected) token = await options.getToken({ forceRefresh: true });
      // Through Headers, so that a caller's `Authorization` or `Accept` in any case replaces ours
      // instead of being joined to it (`Basic x, Bearer y` would be a 401 and a needless refresh).
      const headers = new Headers(request.headers);
      if (!headers.has('accept')) headers.set('accept', 'application/json');
      headers.set('authorization', `Bearer ${token}`);
      let body: string | undefined;
      if (request.body !== undefined) {
        headers.set('content-type', 'application/json');
        body = JSON.stringify(request.body);
      }
      const signal = request.signal
        ? AbortSignal.any([request.signal, AbortSignal.timeout(timeout)])
        : AbortSignal.timeout(timeout);
      let response: Response;
      try {
        response = await doFetch(url, {
          method,
          headers,
          signal,
          redirect: 'manual',
          ...(body === undefined ? {} : { body }),
        });
      } catch (cause) {
        // A connection closed before any answer (an idle keep-alive GitLab or a proxy dropped) is worth
        // one more try for a read; a write might have been applied, and a timeout would only double.
        if (idempotent && !resent && !signal.aborted && isConnectionReset(cause)) {
          resent = true;
          continue;
        }
        throw new GitLabApiError({ status: 0, method, path: bare, gitlabMessage: null, cause });
      }
      if (response.status === 401 && rejected === null) {
        // Expired or revoked at GitLab: one refresh, one retry. A second 401 is final.
        await response.body?.cancel();
        rejected = token;
        continue;
      }
      if (response.status === 429 && retries < maxRetries) {
        const wait = retryAfterMs(response.headers.get('retry-after'), Date.now()) ?? 1000;
        if (wait <= maxRetryAfter) {
          await response.body?.cancel();
          retries++;
          await new Promise((resolve) => setTimeout(resolve, wait));
          continue;
        }
      }
      if (!response.ok) {
        throw new GitLabApiError({
          status: response.status,
          method,
          path: bare,
          ...(await gitlabFailure(response)),
        });
      }
      return response;
    }
  }

  async function request<T>(method: string, path: string, requestOptions: RequestOptions = {}): Promise<T> {
    const response = await send(method.toUpperCase(), path, requestOptions);
    if (response.status === 204) return null as T;
    const text = await response.text();
    return (text === '' ? null : parseBody(text, response, method.toUpperCase(), path)) as T;
  }

  return {
    apiUrl,
    request,
    get: (path, query) => request('GET', path, query ? { query } : {}),
    async *paginate<T>(path: string, query: Query = {}): AsyncIterable<T> {
      let page: string | null = String(query['page'] ?? 1);
      const perPage = query['per_page'] ?? 100;
      while (page) {
        const response = await send('GET', path, { query: { ...query, per_page: perPage, page } });
        const items = parseBody(await response.text(), response, 'GET', path) as T[];
        if (!Array.isArray(items))
          throw new GitLabApiError({
            status: response.status,
            method: 'GET',
            path: barePath(path),
            gitlabMessage: 'not a list',
          });
        for (const item of items) yield item;
        // x-next-page is empty on the last page; totals may be absent on large lists.
        page = response.headers.get('x-next-page') || null;
      }
    },
    token: () => options.getToken({ forceRefresh: false }),
  };
}
