/**
 * What labgate answers itself: the answer to every error (a page that says what happened and what to
 * do, or JSON), and the sign-out and link confirmations. Plain HTML, no scripts, no third-party
 * resources, under a strict Content-Security-Policy.
 */
import { randomToken } from './crypto.js';
import { ERROR_CODES, isLabgateError, LabgateError, type LabgateErrorCode } from './errors.js';
import { logText } from './log.js';
import type { Logger } from './options.js';

/** Escapes text for HTML content and attribute values. */
export function escapeHtml(value: string): string {
  return value.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c,
  );
}

const STYLE =
  'body{font:16px/1.5 system-ui,sans-serif;margin:0;color:#1f1e24;background:#fafafa}' +
  'main{max-width:34rem;margin:12vh auto;padding:2rem;background:#fff;border:1px solid #dcdcde;border-radius:8px}' +
  'h1{font-size:1.4rem;margin-top:0}.code{color:#626168;font-size:.85rem}' +
  'a.button,button{display:inline-block;padding:.5rem 1rem;border-radius:4px;border:0;background:#1f75cb;color:#fff;text-decoration:none;font:inherit;cursor:pointer}';

/** The SHA-256 of {@link STYLE}, base64: the one style the pages' policy lets in (a test checks it). */
export const STYLE_HASH = 'sha256-q/Ode45/nx08+WlCINALc6yKqMPZGfd0ss9drtkcW9g=';

/**
 * The headers of every page and error labgate answers itself (docs/security.md, HTTP-5): never cached,
 * no referrer, no sniffing, and for HTML a policy that loads nothing but the page's own style, posts
 * forms only to this origin and cannot be framed.
 */
export const PAGE_HEADERS: Readonly<Record<string, string>> = {
  'cache-control': 'no-store',
  'referrer-policy': 'no-referrer',
  'x-content-type-options': 'nosniff',
};
const HTML_HEADERS: Readonly<Record<string, string>> = {
  ...PAGE_HEADERS,
  'content-type': 'text/html; charset=utf-8',
  'content-security-policy': `default-src 'none'; style-src '${STYLE_HASH}'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'`,
};

/** An HTML page of labgate's as a `Response`, with {@link HTML_HEADERS} and any `extra` headers. */
export function htmlResponse(html: string, status = 200, extra: Record<string, string> = {}): Response {
  return new Response(html, { status, headers: { ...HTML_HEADERS, ...extra } });
}

function page(title: string, body: string): string {
  return `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>${escapeHtml(title)}</title><style>${STYLE}</style></head>
<body><main>
${body}
</main></body>
</html>
`;
}

/** The page for an error code; `again` is where "Start again" leads. */
export function errorPage(
  code: LabgateErrorCode,
  options: { again: string; reference: string; detail?: string | undefined },
): string {
  const { title, advice } = ERROR_CODES[code];
  const detail = options.detail ? `<p data-testid="error-detail">${escapeHtml(options.detail)}</p>\n` : '';
  return page(
    title,
    `<h1>${escapeHtml(title)}</h1>
${detail}<p>${escapeHtml(advice)}</p>
<p><a class="button" href="${escapeHtml(options.again)}">Start again</a></p>
<p class="code">Error <code>${code}</code> · reference <code>${escapeHtml(options.reference)}</code></p>`,
  );
}

/** `GET /auth/logout`: signing out changes state, so it takes a POST from this page. */
export function logoutPage(action: string, returnTo?: string): string {
  const field =
    returnTo === undefined ? '' : `<input type="hidden" name="rd" value="${escapeHtml(returnTo)}">`;
  return page(
    'Sign out',
    `<h1>Sign out?</h1>
<p>You will be signed out of this site, and its access to your GitLab account will be revoked.</p>
<form method="post" action="${escapeHtml(action)}">${field}<button type="submit">Sign out</button></form>`,
  );
}

/**
 * The gateway's `GET /oauth2/sign_in`: one link to sign in with GitLab (a link, not a form: the
 * pages' `form-action 'self'` would stop a form's redirect on to GitLab).
 */
export function signInPage(start: string): string {
  return page(
    'Sign in',
    `<h1>Sign in</h1>
<p>This site is open to the members of its GitLab groups.</p>
<p><a class="button" href="${escapeHtml(start)}">Sign in with GitLab</a></p>`,
  );
}

/** `GET /auth/link`: linking another GitLab account changes who may act as this user, so it takes a POST. */
export function linkPage(action: string): string {
  return page(
    'Link another GitLab account',
    `<h1>Link another GitLab account?</h1>
<p>You will sign in with another GitLab account (on this or another GitLab). It will then belong to your
user here: signing in with either account opens the same user.</p>
<form method="post" action="${escapeHtml(action)}"><button type="submit">Link an account</button></form>`,
  );
}

/** Whether a client asked for JSON rather than a page. */
export function wantsJson(accept: string | null | undefined): boolean {
  return !!accept && accept.includes('application/json') && !accept.includes('text/html');
}

/**
 * The one answer to an error, for every route and guard: the status of its code, a page that says
 * what to do (JSON for a client that asked for JSON), a reference that is also in the one log line
 * written for it. Never GitLab's words, a token or a stack trace (docs/security.md, LOG-3). Anything that
 * is not a {@link LabgateError} is answered as `gitlab_error`.
 */
export function errorAnswer(
  error: unknown,
  request: { accept: string | null | undefined; route: string; headers?: Record<string, string> },
  instance: { prefix: string; logger: Logger },
): Response {
  const { route } = request;
  const { prefix, logger } = instance;
  const reference = randomToken(6);
  const failure = isLabgateError(error)
    ? error
    : new LabgateError('gitlab_error', 'unexpected failure', { cause: error });
  const code: LabgateErrorCode = failure.code;
  const status = ERROR_CODES[code].status;
  const line = `labgate: ${logText(route)} failed: ${code}: ${failure.message} (reference ${reference})`;
  if (!isLabgateError(error)) logger.error(`${line}: ${error instanceof Error ? error.name : typeof error}`);
  else if (status >= 500) logger.error(line);
  else logger.warn(line);
  const extra: Record<string, string> = { 'x-labgate-reference': reference, ...request.headers };
  // The body of a 413 was not read: the connection closes rather than read the rest.
  if (code === 'payload_too_large') extra['connection'] = 'close';
  if (wantsJson(request.accept)) {
    return Response.json(
      { error: code, message: ERROR_CODES[code].title, reference },
      { status, headers: { ...PAGE_HEADERS, ...extra } },
    );
  }
  const again =
    code === 'session_required' || route.endsWith('/callback') || route.endsWith('/login')
      ? `${prefix}/login`
      : '/';
  return htmlResponse(errorPage(code, { again, reference, detail: failure.detail }), status, extra);
}
