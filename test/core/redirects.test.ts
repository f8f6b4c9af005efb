/**
 * `safeReturnTo`, the one validator of every redirect target labgate is given (docs/security.md,
 * REDIRECT-1, REDIRECT-2): the open-redirect catalogue of oauth2-proxy, mod_auth_openidc and
 * next-auth, as a table.
 */
import { describe, expect, it } from 'vitest';
import { safeReturnTo } from '../../src/core/index.js';
import { parseRedirectDomains, safeRedirect } from '../../src/core/redirects.js';

const ORIGIN = 'https://app.example.com';

describe('safeReturnTo refuses (falls back to /)', () => {
  const refused: [string, unknown][] = [
    // REDIRECT-1: scheme-relative and absolute
    ['scheme-relative', '//evil.example'],
    ['scheme-relative with a path', '//evil.example/path'],
    ['three slashes', '///evil.example'],
    ['absolute https', 'https://evil.example'],
    ['absolute http', 'http://evil.example/'],
    ['absolute URL of the app itself (relative paths only)', 'https://app.example.com/me'],
    ['a scheme without slashes', 'http:evil.example'],
    ['a scheme with one slash', 'http:/evil.example'],
    ['javascript:', 'javascript:alert(1)'],
    ['JavaScript: in mixed case', 'JaVaScRiPt:alert(1)'],
    ['data:', 'data:text/html,<script>alert(1)</script>'],
    ['vbscript:', 'vbscript:msgbox(1)'],
    ['mailto:', 'mailto:a@evil.example'],
    // REDIRECT-1: backslashes, which WHATWG URL turns into slashes
    ['/\\ (CVE-2020-5233)', '/\\evil.example'],
    ['\\\\', '\\\\evil.example'],
    ['\\/', '\\/evil.example'],
    ['/\\/', '/\\/evil.example'],
    ['a backslash later in the path', '/ok\\..\\evil'],
    // REDIRECT-1: whitespace and control characters, which WHATWG URL strips
    ['/<tab>/ (CVE-2020-11053)', '/\t/evil.example'],
    ['/<LF>/', '/\n/evil.example'],
    ['/<CR>/', '/\r/evil.example'],
    ['/<space>/', '/ /evil.example'],
    ['/<tab>/<tab>\\ (CVE-2020-4037)', '/\t/\t\\evil.example'],
    ['a leading tab', '\t//evil.example'],
    ['a leading space', ' /ok'],
    ['NUL', '/ok\u0000'],
    ['DEL', '/ok\u007f'],
    ['a vertical tab after /', '/\u000b/evil.example'],
    // REDIRECT-1: encoded slashes and backslashes in the first segment
    ['/%2F%2F', '/%2F%2Fevil.example'],
    ['/%2f%2f lower case', '/%2f%2fevil.example'],
    ['/%5C', '/%5Cevil.example'],
    ['/%5c lower case', '/%5cevil.example'],
    ['/%2F alone', '/%2Fevil.example'],
    // REDIRECT-1: dot segments
    ['/../x', '/../x'],
    ['/a/../../x', '/a/../../x'],
    ['/./\\ (CVE-2020-4037)', '/./\\evil.example'],
    ['an encoded dot segment', '/%2e%2e/x'],
    ['a mixed encoded dot segment', '/.%2E/x'],
    ['a trailing ..', '/a/..'],
    ['/.// (a dot segment hiding //)', '/.//evil.example'],
    ['/%2e// (an encoded dot segment hiding //)', '/%2e//evil.example'],
    ['/%2E// upper case', '/%2E//evil.example'],
    ['a single dot segment in the middle', '/a/./b'],
    ['a dot segment then an encoded slash', '/./%2Fevil.example'],
    // REDIRECT-1: no leading slash
    ['a bare host', 'evil.example'],
    ['a relative path', 'me'],
    ['a query only', '?x=1'],
    ['a fragment only', '#top'],
    ['a dot', '.'],
    // REDIRECT-1: userinfo tricks never pass as relative paths
    ['userinfo', 'https://app.example.com@evil.example'],
    ['userinfo after //', '//app.example.com@evil.example'],
    // REDIRECT-1, REDIRECT-2: malformed, oversized, wrong types
    ['empty', ''],
    ['over 2 KiB', `/${'a'.repeat(2048)}`],
    ['null', null],
    ['undefined', undefined],
    ['a number', 42],
    ['an object', { toString: () => '/ok' }],
    ['an array', ['/ok']],
  ];
  it.each(refused)('%s', (_name, value) => {
    expect(safeReturnTo(value as string, ORIGIN)).toBe('/');
    expect(safeReturnTo(value as string, ORIGIN, '/home')).toBe('/home');
  });
  it('covers 30+ cases', () => {
    expect(refused.length).toBeGreaterThanOrEqual(30);
  });
});

describe('safeReturnTo keeps same-origin paths', () => {
  const kept: [string, string, string][] = [
    ['the root', '/', '/'],
    ['a path', '/projects', '/projects'],
    ['a nested path', '/a/b/c', '/a/b/c'],
    ['a query', '/search?q=a&b=c', '/search?q=a&b=c'],
    ['a fragment', '/page#section', '/page#section'],
    ['a query and fragment', '/p?x=1#y', '/p?x=1#y'],
    ['an encoded slash after the first segment', '/projects/acme%2Fapp', '/projects/acme%2Fapp'],
    ['an encoded space', '/a%20b', '/a%20b'],
    ['dots inside a name', '/file.tar.gz', '/file.tar.gz'],
    ['three dots', '/.../x', '/.../x'],
    ['a colon later in the path', '/a:b', '/a:b'],
    ['a URL in the query', '/go?next=https://evil.example', '/go?next=https://evil.example'],
    ['two slashes in the query', '/go?x=//evil', '/go?x=//evil'],
    ['unicode', '/café', '/caf%C3%A9'],
    ['an @ in the path', '/@alice', '/@alice'],
  ];
  it.each(kept)('%s', (_name, value, expected) => {
    expect(safeReturnTo(value, ORIGIN)).toBe(expected);
  });
});

describe('safeReturnTo never throws and never leaves the origin (REDIRECT-2)', () => {
  it('for 20,000 random strings built from the dangerous alphabet', () => {
    const alphabet = [
      '/',
      '\\',
      '.',
      '%',
      '2',
      'f',
      'F',
      '5',
      'c',
      ':',
      '@',
      '?',
      '#',
      '\t',
      ' ',
      'a',
      'e',
      '\n',
      'h',
      '%2e',
    ];
    let seed = 42;
    const random = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed / 0x7fffffff;
    };
    for (let i = 0; i < 20_000; i++) {
      let value = random() < 0.7 ? '/' : '';
      const length = Math.floor(random() * 12);
      for (let j = 0; j < length; j++) value += alphabet[Math.floor(random() * alphabet.length)];
      const result = safeReturnTo(value, ORIGIN);
      expect(result.startsWith('/'), value).toBe(true);
      expect(result.startsWith('//'), value).toBe(false);
      expect(result.includes('\\'), value).toBe(false);
      expect(new URL(result, ORIGIN).origin, value).toBe(ORIGIN);
      // The result is itself safe: validating it again changes nothing.
      expect(safeReturnTo(result, ORIGIN), value).toBe(result);
    }
  });

  it('resolves against the configured origin, whatever origin string it is given', () => {
    expect(safeReturnTo('/x', 'http://127.0.0.1:3000')).toBe('/x');
    expect(safeReturnTo('/x', 'https://app.example.com/')).toBe('/x');
  });
});

describe('safeRedirect: absolute URLs on allow-listed hosts (REDIRECT-5)', () => {
  const domains = parseRedirectDomains([
    'docs.example.com',
    '.example.org',
    'ports.example.com:8443',
    'any.example.com:*',
  ]);
  const cases: [string, string][] = [
    ['https://app.example.com/me?x=1', '/me?x=1'],
    ['https://docs.example.com/a', 'https://docs.example.com/a'],
    ['https://example.org/', 'https://example.org/'],
    ['https://deep.sub.example.org/x', 'https://deep.sub.example.org/x'],
    ['https://evilexample.org/', '/'],
    ['https://example.org.evil.example/', '/'],
    ['https://docs.example.com:8443/', '/'],
    ['https://ports.example.com:8443/', 'https://ports.example.com:8443/'],
    ['https://ports.example.com/', '/'],
    ['https://any.example.com:9999/', 'https://any.example.com:9999/'],
    ['https://docs.example.com@evil.example/', '/'],
    ['https://user:pw@docs.example.com/', '/'],
    ['https://docs.example.com\\@evil.example/', '/'],
    ['https://docs.example.com/\t', '/'],
    ['javascript://docs.example.com/%0aalert(1)', '/'],
    ['https://app.example.com//evil.example', '/'],
    ['/plain/path', '/plain/path'],
    ['//docs.example.com/', '/'],
  ];
  for (const [value, expected] of cases) {
    it(`${JSON.stringify(value)} → ${expected}`, () => {
      expect(safeRedirect(value, ORIGIN, domains)).toBe(expected);
    });
  }

  it('refuses entries that are not host names', () => {
    for (const bad of ['https://x.example', 'x.example/path', '*.', 'a b', '*example.com'])
      expect(() => parseRedirectDomains([bad]), bad).toThrow(TypeError);
  });
});
