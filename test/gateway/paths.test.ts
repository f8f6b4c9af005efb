/**
 * `normaliseTarget`: the one path every gateway decision uses and the upstream receives
 * (docs/security.md, GATEWAY-3), as a table of targets refused and targets normalised.
 */
import { describe, expect, it } from 'vitest';
import { isUnderPrefix, normaliseTarget } from '../../src/gateway/paths.js';

describe('normaliseTarget refuses (null)', () => {
  const refused: [string, string][] = [
    ['empty', ''],
    ['asterisk-form', '*'],
    ['absolute-form', 'http://evil.example/admin'],
    ['absolute-form https', 'https://app.example/a'],
    ['authority-form', 'app.example:443'],
    ['a relative path', 'admin'],
    ['a query only', '?x=1'],
    ['.. segment', '/a/../admin'],
    ['.. at the start', '/../etc/passwd'],
    ['trailing ..', '/a/..'],
    ['. segment', '/a/./admin'],
    ['trailing .', '/a/.'],
    ['%2e%2e', '/a/%2e%2e/admin'],
    ['%2E%2E upper case', '/a/%2E%2E/admin'],
    ['.%2e mixed', '/a/.%2e/admin'],
    ['%2e alone', '/%2e/admin'],
    ['.. hidden by a // run', '/a//..//admin'],
    ['%2F', '/public%2F..%2Fadmin'],
    ['%2f lower case', '/public%2fadmin'],
    ['%5C', '/public%5Cadmin'],
    ['%5c lower case', '/public%5cadmin'],
    ['%00', '/admin%00.png'],
    ['a raw backslash', '/public\\..\\admin'],
    ['a leading backslash', '/\\evil.example'],
    ['an encoded tab', '/a%09/b'],
    ['an encoded LF', '/a%0A'],
    ['an encoded CR', '/a%0d'],
    ['an encoded DEL', '/a%7F'],
    ['an encoded C1 control', '/a%C2%85'],
    ['a raw tab', '/a\t/b'],
    ['a raw space', '/a b'],
    ['a raw NUL', '/a\u0000'],
    ['a raw control character in the query', '/a?x=\u0001'],
    ['raw non-ASCII', '/café'],
    ['invalid percent-encoding', '/a%zz'],
    ['a truncated escape', '/a%4'],
    ['a lone %', '/100%'],
    ['invalid UTF-8', '/%ff'],
    ['an overlong UTF-8 dot', '/%c0%ae%c0%ae/admin'],
    ['a lone UTF-8 continuation byte', '/%80'],
  ];
  it.each(refused)('%s', (_name, target) => {
    expect(normaliseTarget(target)).toBeNull();
  });
});

describe('normaliseTarget normalises', () => {
  const cases: [string, string, { path: string; forward: string; search: string }][] = [
    ['the root', '/', { path: '/', forward: '/', search: '' }],
    ['a plain path and query', '/a/b?x=1', { path: '/a/b', forward: '/a/b', search: '?x=1' }],
    ['a trailing slash is kept', '/admin/', { path: '/admin/', forward: '/admin/', search: '' }],
    ['a // run collapses', '//admin', { path: '/admin', forward: '/admin', search: '' }],
    ['several runs collapse', '/a///b//c//', { path: '/a/b/c/', forward: '/a/b/c/', search: '' }],
    ['// alone is the root', '//', { path: '/', forward: '/', search: '' }],
    ['the fragment is dropped', '/a#top', { path: '/a', forward: '/a', search: '' }],
    ['a fragment after the query', '/a?x=1#top', { path: '/a', forward: '/a', search: '?x=1' }],
    ['? after # is fragment', '/a#x?y=1', { path: '/a', forward: '/a', search: '' }],
    ['a ? inside the query', '/a?next=/b?c=1', { path: '/a', forward: '/a', search: '?next=/b?c=1' }],
    ['an empty query', '/a?', { path: '/a', forward: '/a', search: '' }],
    [
      'dots that are no segment',
      '/a/.../b..c/.d',
      { path: '/a/.../b..c/.d', forward: '/a/.../b..c/.d', search: '' },
    ],
    ['decoded once: %25 stays %25', '/100%25', { path: '/100%', forward: '/100%25', search: '' }],
    ['%2525 decodes to %25 only', '/a%2525', { path: '/a%25', forward: '/a%2525', search: '' }],
    ['%252e is no dot segment', '/%252e%252e/x', { path: '/%2e%2e/x', forward: '/%252e%252e/x', search: '' }],
    ['unicode', '/caf%C3%A9', { path: '/café', forward: '/caf%C3%A9', search: '' }],
    ['an astral character', '/%F0%9F%98%80', { path: '/😀', forward: '/%F0%9F%98%80', search: '' }],
    [
      'lower-case escapes become canonical',
      '/caf%c3%a9',
      { path: '/café', forward: '/caf%C3%A9', search: '' },
    ],
    ['unreserved escapes are decoded', '/%41%7e', { path: '/A~', forward: '/A~', search: '' }],
    ['an encoded space', '/a%20b', { path: '/a b', forward: '/a%20b', search: '' }],
    ['an encoded ? stays in the path', '/a%3Fb', { path: '/a?b', forward: '/a%3Fb', search: '' }],
    ['an encoded # stays in the path', '/a%23b', { path: '/a#b', forward: '/a%23b', search: '' }],
    [
      'sub-delims, : and @ stay',
      "/a:b@c!$&'()*+,;=",
      { path: "/a:b@c!$&'()*+,;=", forward: "/a:b@c!$&'()*+,;=", search: '' },
    ],
    [
      'other ASCII is encoded',
      '/a[b]|c"<>',
      { path: '/a[b]|c"<>', forward: '/a%5Bb%5D%7Cc%22%3C%3E', search: '' },
    ],
    ['case is kept', '/Admin', { path: '/Admin', forward: '/Admin', search: '' }],
  ];
  it.each(cases)('%s', (_name, target, expected) => {
    expect(normaliseTarget(target)).toEqual(expected);
  });

  it('forwards a path that normalises to itself (one decoding, no drift)', () => {
    for (const [, target] of cases) {
      const first = normaliseTarget(target)!;
      const again = normaliseTarget(`${first.forward}${first.search}`)!;
      expect(again.path).toBe(first.path);
      expect(again.forward).toBe(first.forward);
    }
  });
});

describe('isUnderPrefix (whole segments, case-sensitive)', () => {
  const cases: [string, string, boolean][] = [
    ['/admin', '/admin', true],
    ['/admin/', '/admin', true],
    ['/admin/x', '/admin', true],
    ['/administrator', '/admin', false],
    ['/Admin', '/admin', false],
    ['/admin/x', '/admin/', true],
    ['/admin', '/admin/', true],
    ['/anything', '/', true],
    ['/', '/', true],
    ['/', '/admin', false],
  ];
  it.each(cases)('%s under %s: %s', (path, prefix, expected) => {
    expect(isUnderPrefix(path, prefix)).toBe(expected);
  });
});
