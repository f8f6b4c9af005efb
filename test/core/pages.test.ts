/**
 * labgate's own pages (docs/security.md, HTTP-5): every HTML page (errors, sign-in failures, 403, the
 * sign-out and link confirmations) sends a Content-Security-Policy that loads nothing but its own
 * style and cannot be framed, `nosniff` and `no-referrer`; JSON errors send `nosniff` and `no-referrer`.
 */
import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createLabgate, LabgateError } from '../../src/core/index.js';
import { STYLE_HASH } from '../../src/core/pages.js';

const ORIGIN = 'http://127.0.0.1:3000';
const auth = createLabgate({
  gitlabUrl: 'http://127.0.0.1:9',
  clientId: 'pages',
  url: ORIGIN,
  secret: randomBytes(32).toString('base64url'),
  accountLinking: true,
  logger: false,
});

function expectPageHeaders(response: Response): void {
  expect(response.headers.get('content-type')).toBe('text/html; charset=utf-8');
  const policy = response.headers.get('content-security-policy') ?? '';
  const directives = new Map(
    policy.split(';').map((d) => {
      const [name = '', ...values] = d.trim().split(/\s+/);
      return [name, values.join(' ')] as const;
    }),
  );
  expect(directives.get('default-src')).toBe("'none'");
  expect(directives.get('frame-ancestors')).toBe("'none'");
  expect(directives.get('style-src')).toBe(`'${STYLE_HASH}'`);
  expect(directives.get('form-action')).toBe("'self'");
  expect(response.headers.get('x-content-type-options')).toBe('nosniff');
  expect(response.headers.get('referrer-policy')).toBe('no-referrer');
  expect(response.headers.get('cache-control')).toBe('no-store');
}

describe('page headers', () => {
  it('lets in exactly the style the pages carry', async () => {
    const page = await (await auth.handle(new Request(`${ORIGIN}/auth/logout`)))!.text();
    const style = /<style>([^<]*)<\/style>/.exec(page)![1]!;
    expect(`sha256-${createHash('sha256').update(style).digest('base64')}`).toBe(STYLE_HASH);
    expect(page).not.toMatch(/<script|style="/);
  });

  it('are on the sign-out page, the error pages and the 403 page', async () => {
    expectPageHeaders((await auth.handle(new Request(`${ORIGIN}/auth/logout`)))!);
    // A sign-in failure (no transaction), a 404, a 405, a 401.
    for (const target of ['/auth/callback?state=x&code=y', '/auth/nothing', '/auth/session']) {
      expectPageHeaders((await auth.handle(new Request(`${ORIGIN}${target}`)))!);
    }
    expectPageHeaders((await auth.handle(new Request(`${ORIGIN}/auth/login`, { method: 'POST' })))!);
    const forbidden = auth.errorResponse(
      new LabgateError('access_forbidden', 'denied', { detail: 'This page needs the role “admin”.' }),
      new Request(`${ORIGIN}/admin`),
    );
    expect(forbidden.status).toBe(403);
    expectPageHeaders(forbidden);
  });

  it('are on JSON errors too, without a page policy', async () => {
    const response = (await auth.handle(
      new Request(`${ORIGIN}/auth/session`, { headers: { accept: 'application/json' } }),
    ))!;
    expect(response.status).toBe(401);
    expect(response.headers.get('x-content-type-options')).toBe('nosniff');
    expect(response.headers.get('referrer-policy')).toBe('no-referrer');
  });
});
