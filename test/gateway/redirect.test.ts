/**
 * `chooseRedirect` (docs/security.md, REDIRECT-1, REDIRECT-2, GATEWAY-5): oauth2-proxy's redirect
 * director order, and its open-redirect CVE catalogue, which no candidate may get through.
 */
import { describe, expect, it } from 'vitest';
import { parseRedirectDomains } from '../../src/core/redirects.js';
import { chooseRedirect, type RedirectInput } from '../../src/gateway/redirect.js';

const ORIGIN = 'https://gate.example.com';

function input(over: Partial<RedirectInput> & { whitelist?: string[] } = {}): RedirectInput {
  const { whitelist = [], ...rest } = over;
  return {
    rd: null,
    authRequestRedirect: null,
    forwarded: null,
    requestUri: '/oauth2/start',
    host: 'gate.example.com',
    prefix: '/oauth2',
    origin: ORIGIN,
    domains: parseRedirectDomains(whitelist),
    ...rest,
  };
}

describe('the open-redirect catalogue: refused rd falls through to /', () => {
  const refused: [string, string, string[]][] = [
    ['scheme-relative', '//evil.com', []],
    ['scheme-relative with a path', '//evil.com/x', []],
    ['/\\ (CVE-2020-5233)', '/\\evil.com', []],
    ['\\\\', '\\\\evil.com', []],
    ['/<tab>/ (CVE-2020-11053)', '/\t/evil.com', []],
    [
      '/%09/ as the query decodes it (CVE-2020-11053)',
      new URLSearchParams('rd=/%09/evil.com').get('rd')!,
      [],
    ],
    ['/%0A/ as the query decodes it', new URLSearchParams('rd=/%0A/evil.com').get('rd')!, []],
    ['/<tab>/<tab>\\ (CVE-2020-4037)', '/\t/\t\\evil.com', []],
    ['/./\\ (CVE-2020-4037)', '/./\\evil.com', []],
    ['/../\\', '/../\\evil.com', []],
    ['/<space>/', '/ /evil.com', []],
    ['/%2F%2F', '/%2F%2Fevil.com', []],
    ['/%5C', '/%5Cevil.com', []],
    ['an absolute URL to another host', 'https://evil.com', []],
    ['http to another host', 'http://evil.com/', []],
    ['a suffix without a dot boundary (CVE-2021-21291)', 'https://evilexample.com', ['.example.com']],
    ['a whitelisted name inside another host', 'https://example.com.evil.com', ['.example.com']],
    ['userinfo', 'https://example.com@evil.com', ['.example.com']],
    ['userinfo on a whitelisted host', 'https://user:pw@app.example.com/', ['.example.com']],
    ['a non-default port without a port rule', 'https://example.com:8080/', ['example.com']],
    ['another port than the rule', 'https://example.com:9090/', ['example.com:8080']],
    ['javascript:', 'javascript:alert(1)', ['.example.com']],
    ['data:', 'data:text/html,x', []],
    ['a scheme with one slash', 'https:/evil.com', []],
    ['a tab inside an absolute URL', 'https://exam\tple.com/', ['example.com']],
    ['a bare host', 'evil.com', []],
    ['empty', '', []],
  ];
  it.each(refused)('%s', (_name, rd, whitelist) => {
    expect(chooseRedirect(input({ rd, whitelist }))).toBe('/');
  });
});

describe('valid rd', () => {
  const accepted: [string, string, string[], string][] = [
    ['a relative path', '/docs?page=2#top', [], '/docs?page=2#top'],
    ['a whitelisted host', 'https://app.example.com/x', ['app.example.com'], 'https://app.example.com/x'],
    ['a subdomain of .example.com', 'https://app.example.com/', ['.example.com'], 'https://app.example.com/'],
    ['the domain of .example.com itself', 'https://example.com/', ['.example.com'], 'https://example.com/'],
    [
      'a subdomain of *.example.com',
      'https://a.b.example.com/',
      ['*.example.com'],
      'https://a.b.example.com/',
    ],
    ['an allowed port', 'https://example.com:8080/x', ['example.com:8080'], 'https://example.com:8080/x'],
    ['any port with :*', 'https://example.com:9443/x', ['example.com:*'], 'https://example.com:9443/x'],
    ['the default port with :*', 'https://example.com/x', ['example.com:*'], 'https://example.com/x'],
    ['the gateway origin becomes its path', 'https://gate.example.com/app/x?y=1', [], '/app/x?y=1'],
  ];
  it.each(accepted)('%s', (_name, rd, whitelist, expected) => {
    expect(chooseRedirect(input({ rd, whitelist }))).toBe(expected);
  });

  it("nginx's rd=$scheme://$host$request_uri on the gateway's own origin", () => {
    const rd = new URLSearchParams('rd=https://gate.example.com/reports/2024?sort=asc%26desc').get('rd');
    expect(chooseRedirect(input({ rd, requestUri: `/oauth2/start?rd=${encodeURIComponent(rd!)}` }))).toBe(
      '/reports/2024?sort=asc&desc',
    );
  });

  it('a double-encoded /%2509/ stays a path on the gateway origin', () => {
    const rd = new URLSearchParams('rd=/%2509/evil.com').get('rd');
    const result = chooseRedirect(input({ rd }));
    expect(result).toBe('/%09/evil.com');
    expect(new URL(result, ORIGIN).origin).toBe(ORIGIN);
  });

  it('the same origin over http is another origin, refused without a whitelist entry', () => {
    expect(chooseRedirect(input({ rd: 'http://gate.example.com/x' }))).toBe('/');
  });
});

describe("priority: oauth2-proxy's director order, the first valid wins", () => {
  const forwarded = { proto: 'https', host: 'app.example.com', uri: '/app/page?x=1' };

  it('rd first', () => {
    expect(chooseRedirect(input({ rd: '/from-rd', authRequestRedirect: '/from-header', forwarded }))).toBe(
      '/from-rd',
    );
  });

  it('an invalid rd is skipped: X-Auth-Request-Redirect next', () => {
    expect(chooseRedirect(input({ rd: '//evil.com', authRequestRedirect: '/from-header', forwarded }))).toBe(
      '/from-header',
    );
  });

  it('an X-Auth-Request-Redirect naming the gateway’s own pages is skipped: it would loop into sign-in', () => {
    // nginx's `/oauth2/` block sends the sign-in page's own URI in this header.
    for (const header of [
      '/oauth2/sign_in?rd=http://x/y',
      '/oauth2/start',
      'https://gate.example.com/oauth2/auth',
    ])
      expect(chooseRedirect(input({ authRequestRedirect: header, forwarded }))).toBe('/app/page?x=1');
  });

  it('then proto://forwarded-host + forwarded uri, when the forwarded host differs from Host', () => {
    expect(chooseRedirect(input({ forwarded, whitelist: ['app.example.com'] }))).toBe(
      'https://app.example.com/app/page?x=1',
    );
  });

  it('a forwarded host that is not whitelisted is skipped: the forwarded uri next', () => {
    expect(chooseRedirect(input({ rd: 'https://evil.com', authRequestRedirect: '/\\evil', forwarded }))).toBe(
      '/app/page?x=1',
    );
  });

  it('a forwarded uri under the prefix becomes / on the forwarded host', () => {
    const result = chooseRedirect(
      input({ forwarded: { ...forwarded, uri: '/oauth2/sign_in' }, whitelist: ['app.example.com'] }),
    );
    expect(result).toBe('https://app.example.com/');
  });

  it('no forwarded proto: the scheme of the gateway origin', () => {
    const result = chooseRedirect(
      input({ forwarded: { ...forwarded, proto: null }, whitelist: ['app.example.com'] }),
    );
    expect(result).toBe('https://app.example.com/app/page?x=1');
  });

  it('no forwarded uri: the request uri on the forwarded host', () => {
    const result = chooseRedirect(
      input({
        forwarded: { proto: 'https', host: 'app.example.com', uri: null },
        requestUri: '/somewhere',
        whitelist: ['app.example.com'],
      }),
    );
    expect(result).toBe('https://app.example.com/somewhere');
  });

  it('a forwarded host equal to Host (any case) is not a candidate: the forwarded uri', () => {
    const same = { proto: 'https', host: 'GATE.example.com', uri: '/app/page' };
    expect(chooseRedirect(input({ forwarded: same, whitelist: ['gate.example.com'] }))).toBe('/app/page');
  });

  it('a forwarded proto that is no http(s) is refused', () => {
    const odd = { proto: 'javascript', host: 'app.example.com', uri: '/x' };
    expect(chooseRedirect(input({ forwarded: odd, whitelist: ['app.example.com'] }))).toBe('/x');
  });

  it('a forwarded host with userinfo tricks is refused', () => {
    const odd = { proto: 'https', host: 'app.example.com@evil.com', uri: '/x' };
    expect(chooseRedirect(input({ forwarded: odd, whitelist: ['app.example.com'] }))).toBe('/x');
  });

  it('without forwarded headers (untrusted peer): the request uri, unless under the prefix', () => {
    expect(chooseRedirect(input({ requestUri: '/private/page?q=1' }))).toBe('/private/page?q=1');
    expect(chooseRedirect(input({ requestUri: '/oauth2/start?rd=//evil.com' }))).toBe('/');
    expect(chooseRedirect(input({ requestUri: '/oauth2' }))).toBe('/');
  });

  it('the prefix is matched on whole segments', () => {
    expect(chooseRedirect(input({ requestUri: '/oauth2x/page' }))).toBe('/oauth2x/page');
  });

  it('a forwarded uri that is itself an open redirect is refused: /', () => {
    const odd = { proto: 'https', host: 'gate.example.com', uri: '//evil.com/x' };
    expect(chooseRedirect(input({ forwarded: odd }))).toBe('/');
  });

  it('an invalid request uri falls back to /', () => {
    expect(chooseRedirect(input({ requestUri: '/\\evil.com' }))).toBe('/');
  });
});
