/**
 * labgate is strict with what GitLab answers: a token answer that is not `application/json`, JSON in
 * which an object names a member twice (token response, ID token header and payload, JWKS, API), and
 * GitLab's own words in error messages, which pass through `logText`. Every ID token below is signed
 * with the emulated GitLab's own key, so only the checked property differs from an honest answer.
 */
import { createSign } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import * as oauth from 'oauth4webapi';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createGitLabClient, GitLabApiError } from '../../src/core/gitlab.js';
import { parseStrictJson, repeatedMember, StrictJsonError } from '../../src/core/json.js';
import { refusedAnswerStatus, toLabgateError } from '../../src/core/provider.js';
import { createEmulatorServer, type EmulatorServer, type RunningEmulator } from '../../src/emulator/index.js';
import { createHarness, errorCode, type Harness, signIn as signInThrough } from './harness.js';

// ---------------------------------------------------------------------------------------------------
// The parser
// ---------------------------------------------------------------------------------------------------

describe('parseStrictJson', () => {
  it('parses JSON whose objects name each member once, as JSON.parse does', () => {
    const text = '{"a":1,"b":{"a":2,"c":[{"a":3},{"a":4}]},"s":"\\"a\\":1,\\"a\\":2"}';
    expect(parseStrictJson(text)).toEqual(JSON.parse(text));
    expect(repeatedMember(text)).toBeNull();
  });

  it.each([
    ['a top-level member', '{"sub":"1","sub":"2"}', 'sub'],
    ['a nested member', '{"a":{"b":1,"b":2}}', 'b'],
    ['a member in an object inside an array', '[1,{"x":null,"y":[],"x":true}]', 'x'],
    ['a \\u escape spelling the same name', '{"sub":"1","\\u0073ub":"2"}', 'sub'],
    ['an upper-case \\u escape', '{"\\u0053":"1","S":"2"}', 'S'],
    ['a name with an escaped quote', '{"a\\"b":1,"a\\u0022b":2}', 'a"b'],
    ['a name with escaped control characters', '{"a\\nb":1,"a\\u000ab":2}', 'a\nb'],
    ['a surrogate pair and its literal character', '{"\\ud83d\\ude00":1,"😀":2}', '😀'],
    ['a name ending in an escaped backslash', '{"a\\\\":1,"a\\u005c":2}', 'a\\'],
    ['a name after nested containers', '{"k":{"a":[1,{"b":2}]},"z":0,"k":1}', 'k'],
    ['the empty name', '{"":1," ":2,"":3}', ''],
    ['names after whitespace', '{ "a" : 1 ,\n\t"a" : 2 }', 'a'],
  ])('refuses %s', (_name, text, member) => {
    expect(repeatedMember(text)).toBe(member);
    let error: unknown;
    try {
      parseStrictJson(text);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(StrictJsonError);
    expect((error as StrictJsonError).reason).toBe('duplicate');
    expect((error as StrictJsonError).member).toBe(member);
  });

  it.each([
    ['sibling objects', '[{"a":1},{"a":2}]'],
    ['a parent and its child', '{"a":{"a":{"a":1}}}'],
    ['names that only differ in case', '{"sub":1,"Sub":2}'],
    ['a value that looks like a member', '{"a":"\\",\\"a\\":","b":"a"}'],
    ['distinct escapes', '{"\\u0061":1,"\\u0062":2}'],
    ['an array of names', '["a","a"]'],
    ['scalars', '"a"'],
  ])('accepts %s', (_name, text) => {
    expect(repeatedMember(text)).toBeNull();
    expect(parseStrictJson(text)).toEqual(JSON.parse(text));
  });

  it('refuses text that is not JSON, with its own reason', () => {
    for (const text of ['', '{', '{"a":1,}', "{'a':1}", '{"a":1}x']) {
      expect(() => parseStrictJson(text), text).toThrow(StrictJsonError);
      try {
        parseStrictJson(text);
      } catch (error) {
        expect((error as StrictJsonError).reason).toBe('syntax');
      }
    }
  });

  it('scans nesting as deep as a body under the size cap allows without overflowing the stack', () => {
    const depth = 200_000;
    const deep = `${'['.repeat(depth)}{"a":1,"a":2}${']'.repeat(depth)}`;
    expect(repeatedMember(deep)).toBe('a');
    const objects = `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;
    expect(repeatedMember(objects)).toBeNull();
  });

  it('never loops on text that is not JSON after all', () => {
    expect(repeatedMember('{"a')).toBeNull();
    expect(repeatedMember('{"a\\')).toBeNull();
    expect(repeatedMember('}}]]{"a":1}')).toBeNull();
  });
});

// ---------------------------------------------------------------------------------------------------
// labgate against the emulator
// ---------------------------------------------------------------------------------------------------

/** Signs in as `user` up to and including the callback; returns the callback's answer. */
async function signIn(h: Harness, user = 'alice') {
  return (await signInThrough(h, { user })).callback;
}

function sessionCookie(headers: Headers): string | undefined {
  return headers.getSetCookie().find((c) => /^labgate=[^;]/.test(c));
}

/** The same answer with another body text (and the stale length dropped). */
function withBody(response: Response, body: string, type?: string): Response {
  const headers = new Headers(response.headers);
  headers.delete('content-length');
  if (type !== undefined) headers.set('content-type', type);
  return new Response(body, { status: response.status, headers });
}

let gitlab: RunningEmulator;
let emulator: EmulatorServer;
beforeAll(async () => {
  emulator = createEmulatorServer();
  const { server } = emulator;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const { port } = server.address() as AddressInfo;
  emulator.setOrigin(`http://127.0.0.1:${port}`);
  gitlab = {
    url: `http://127.0.0.1:${port}`,
    control: emulator.control,
    get applications() {
      return structuredClone(emulator.state.model.applications);
    },
    get users() {
      return structuredClone(emulator.state.model.users);
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
});
afterAll(() => gitlab.close());
beforeEach(() => gitlab.control.reset());

const b64 = (text: string) => Buffer.from(text).toString('base64url');

/** Signs `header.payload` (both given as JSON text, so they may name a member twice) with GitLab's key. */
function sign(headerText: string, payloadText: string): string {
  const input = `${b64(headerText)}.${b64(payloadText)}`;
  const signature = createSign('RSA-SHA256').update(input).sign(emulator.state.keys[0]!.privateKey);
  return `${input}.${signature.toString('base64url')}`;
}

/** A labgate whose token answers carry an ID token GitLab signed, with its header and payload rewritten. */
function resigning(change: (header: string, payload: string) => { header: string; payload: string }) {
  return createHarness(gitlab, {
    intercept: async (url, response) => {
      if (!url.endsWith('/oauth/token')) return response;
      const body = (await response.json()) as Record<string, unknown>;
      const [h, p] = String(body['id_token']).split('.');
      const changed = change(
        Buffer.from(h!, 'base64url').toString(),
        Buffer.from(p!, 'base64url').toString(),
      );
      return withBody(response, JSON.stringify({ ...body, id_token: sign(changed.header, changed.payload) }));
    },
  });
}

function userinfoRequests(): number {
  return gitlab.control.requests({ path: '/oauth/userinfo' }).length;
}

describe('the Content-Type of a token answer', () => {
  it('an honest answer signs in (the baseline of the cases below)', async () => {
    const h = createHarness(gitlab, { intercept: async (_url, response) => response });
    const callback = await signIn(h);
    expect(callback.status, callback.body).toBe(303);
    expect(sessionCookie(callback.headers)).toBeDefined();
  });

  it.each(['text/plain', 'text/html; charset=utf-8', 'application/x-www-form-urlencoded'])(
    'a code exchange answered as %s creates no session (gitlab_error)',
    async (type) => {
      const h = createHarness(gitlab, {
        intercept: async (url, response) =>
          url.endsWith('/oauth/token') ? withBody(response, await response.text(), type) : response,
      });
      const callback = await signIn(h);
      expect(callback.status, callback.body).toBe(502);
      expect(errorCode(callback)).toBe('gitlab_error');
      expect(sessionCookie(callback.headers)).toBeUndefined();
      expect(userinfoRequests()).toBe(0);
      const line = h.logs.find((l) => l.includes('gitlab_error'));
      expect(line).toContain('not JSON');
      expect(line).toContain(type.split(';')[0]);
    },
  );

  it('a code exchange answered without any Content-Type creates no session', async () => {
    const h = createHarness(gitlab, {
      intercept: async (url, response) => {
        if (!url.endsWith('/oauth/token')) return response;
        const headers = new Headers(response.headers);
        headers.delete('content-type');
        headers.delete('content-length');
        // A Blob body carries no type, so the Response gets no Content-Type at all.
        return new Response(new Blob([await response.arrayBuffer()]), { status: 200, headers });
      },
    });
    const callback = await signIn(h);
    expect(errorCode(callback)).toBe('gitlab_error');
    expect(sessionCookie(callback.headers)).toBeUndefined();
  });

  it('a refresh answered as text/plain is refused (gitlab_error), and honest refreshes pass', async () => {
    let plain = false;
    const h = createHarness(gitlab, {
      intercept: async (url, response) =>
        plain && url.endsWith('/oauth/token')
          ? withBody(response, await response.text(), 'text/plain')
          : response,
    });
    const minted = gitlab.control.mintToken({ user: 'alice', scopes: ['openid', 'read_user'] });
    const honest = await h.labgate.refreshToken(minted.refresh_token);
    expect(honest.accessToken).toMatch(/\S{8,}/);
    plain = true;
    const error = await h.labgate.refreshToken(honest.refreshToken!).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'gitlab_error', message: expect.stringContaining('not JSON') });
    // GitLab took the grant: whoever retries must know the refresh token is spent.
    expect(refusedAnswerStatus(error)).toBe(200);
    expect(refusedAnswerStatus(new TypeError('fetch failed'))).toBeNull();
  });
});

describe('JSON that names a member twice', () => {
  it('a token response naming a member twice creates no session and asks GitLab nothing more', async () => {
    const h = createHarness(gitlab, {
      intercept: async (url, response) => {
        if (!url.endsWith('/oauth/token')) return response;
        // JSON.parse keeps the last `token_type`, the honest one: only the repetition is wrong.
        const text = await response.text();
        return withBody(response, text.replace('{', '{"token_type":"mac",'));
      },
    });
    const callback = await signIn(h);
    expect(callback.status, callback.body).toBe(502);
    expect(errorCode(callback)).toBe('gitlab_error');
    expect(sessionCookie(callback.headers)).toBeUndefined();
    expect(userinfoRequests()).toBe(0);
    expect(gitlab.control.requests({ path: '/oauth/discovery/keys' })).toHaveLength(0);
    const line = h.logs.find((l) => l.includes('gitlab_error'));
    expect(line).toContain('"token_type" twice');
  });

  it('an honest ID token re-signed by the test signs in (the baseline of the cases below)', async () => {
    const callback = await signIn(resigning((header, payload) => ({ header, payload })));
    expect(callback.status, callback.body).toBe(303);
  });

  it.each([
    [
      '"sub" twice in the payload',
      (h: string, p: string) => ({ header: h, payload: p.replace('{', '{"sub":"999999",') }),
      'payload',
      'sub',
    ],
    [
      '"sub" twice in the payload, once as \\u0073ub',
      (h: string, p: string) => ({ header: h, payload: p.replace('{', '{"\\u0073ub":"999999",') }),
      'payload',
      'sub',
    ],
    [
      '"aud" twice in the payload',
      (h: string, p: string) => ({ header: h, payload: p.replace('{', '{"aud":"another-client",') }),
      'payload',
      'aud',
    ],
    [
      '"alg" twice in the header',
      (h: string, p: string) => ({ header: h.replace('{', '{"alg":"none",'), payload: p }),
      'header',
      'alg',
    ],
    [
      '"kid" twice in the header',
      (h: string, p: string) => ({ header: h.replace('{', '{"kid":"other",'), payload: p }),
      'header',
      'kid',
    ],
  ])(
    'an ID token with %s is refused (id_token_invalid) before any further request',
    async (_name, change, part, member) => {
      const h = resigning(change);
      const callback = await signIn(h);
      expect(callback.status, callback.body).toBe(502);
      expect(errorCode(callback)).toBe('id_token_invalid');
      expect(sessionCookie(callback.headers)).toBeUndefined();
      expect(userinfoRequests()).toBe(0);
      expect(gitlab.control.requests({ path: '/oauth/discovery/keys' })).toHaveLength(0);
      const line = h.logs.find((l) => l.includes('id_token_invalid'));
      expect(line).toContain(`ID token ${part} names the member "${member}" twice`);
      expect(line).not.toContain('999999');
      expect(line).not.toContain('another-client');
    },
  );

  it('a JWKS naming a member twice is refused (gitlab_error), and no session is made', async () => {
    const h = createHarness(gitlab, {
      intercept: async (url, response) => {
        if (!url.endsWith('/oauth/discovery/keys')) return response;
        // The first `keys` is empty; JSON.parse keeps the honest second one.
        const text = await response.text();
        return withBody(response, text.replace('{', '{"keys":[],'));
      },
    });
    const callback = await signIn(h);
    expect(callback.status, callback.body).toBe(502);
    expect(errorCode(callback)).toBe('gitlab_error');
    expect(sessionCookie(callback.headers)).toBeUndefined();
    expect(userinfoRequests()).toBe(0);
    expect(h.logs.find((l) => l.includes('gitlab_error'))).toContain('"keys" twice');
  });

  it('a key in the JWKS naming a member twice is refused too', async () => {
    const h = createHarness(gitlab, {
      intercept: async (url, response) => {
        if (!url.endsWith('/oauth/discovery/keys')) return response;
        const text = await response.text();
        return withBody(
          response,
          text.replace('"kty":', '"use":"enc","kty":').replace('"kty"', '"use":"sig","kty"'),
        );
      },
    });
    const callback = await signIn(h);
    expect(errorCode(callback)).toBe('gitlab_error');
    expect(h.logs.find((l) => l.includes('gitlab_error'))).toContain('"use" twice');
  });

  it('userinfo naming a member twice is refused (gitlab_error)', async () => {
    const h = createHarness(gitlab, {
      intercept: async (url, response) =>
        url.endsWith('/oauth/userinfo')
          ? withBody(response, (await response.text()).replace('{', '{"email":"mallory@example.com",'))
          : response,
    });
    const callback = await signIn(h);
    expect(errorCode(callback)).toBe('gitlab_error');
    expect(sessionCookie(callback.headers)).toBeUndefined();
    expect(h.logs.join('\n')).not.toContain('mallory');
  });

  it('the REST API client refuses an answer naming a member twice', async () => {
    const minted = gitlab.control.mintToken({ user: 'alice', scopes: ['read_api'] });
    const api = createGitLabClient({
      gitlabUrl: gitlab.url,
      getToken: async () => minted.access_token,
      fetch: async (input, init) => {
        const response = await fetch(input, init);
        return withBody(response, (await response.text()).replace('{', '{"id":0,'));
      },
    });
    const error = await api.get('/user').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(GitLabApiError);
    expect((error as GitLabApiError).message).toContain('"id" twice');
    const list = api.paginate('/groups');
    const listError = await (async () => {
      for await (const _ of list);
    })().catch((e: unknown) => e);
    expect(listError).toBeInstanceOf(GitLabApiError);
  });
});

/** Whether a text holds a line break or an escape character (that would forge or hide a log line). */
function hasControl(text: string | undefined): boolean {
  return text === undefined || text.includes('\n') || text.includes('\u001b');
}

describe('GitLab’s words in error messages', () => {
  const hostile = `invalid_grant\n2024-01-01 labgate: signed in as admin\u001b[2J${'x'.repeat(500)}`;

  it('an OAuth error body is escaped and bounded', () => {
    const response = new Response('{}', { status: 400 });
    const error = new oauth.ResponseBodyError('server responded with an error in the response body', {
      cause: { error: hostile, error_description: 'd' },
      response,
    });
    const message = toLabgateError(error, 'token_exchange_failed', 'the code exchange').message;
    expect(hasControl(message)).toBe(false);
    expect(message).toContain('\\n2024-01-01');
    expect(message.length).toBeLessThan(200);
  });

  it('a WWW-Authenticate challenge error is escaped and bounded', () => {
    const response = new Response(null, { status: 400 });
    const error = new oauth.WWWAuthenticateChallengeError('challenge', {
      cause: [{ scheme: 'bearer', parameters: { error: hostile } }],
      response,
    });
    const message = toLabgateError(error, 'gitlab_error', 'token refresh').message;
    expect(hasControl(message)).toBe(false);
    expect(message.length).toBeLessThan(200);
  });

  it('an error message built from any thrown value is escaped', () => {
    expect(hasControl(toLabgateError(new Error(hostile), 'gitlab_error', 'x').message)).toBe(false);
    expect(hasControl(toLabgateError(new TypeError(hostile), 'gitlab_error', 'x').message)).toBe(false);
    expect(hasControl(toLabgateError(hostile, 'gitlab_error', 'x').message)).toBe(false);
  });

  it('a GitLab API message is escaped and bounded in GitLabApiError', async () => {
    gitlab.control.injectFault({
      path: '/api/v4/user',
      status: 403,
      contentType: 'application/json',
      body: JSON.stringify({ message: hostile }),
    });
    const minted = gitlab.control.mintToken({ user: 'alice', scopes: ['read_api'] });
    const api = createGitLabClient({ gitlabUrl: gitlab.url, getToken: async () => minted.access_token });
    const error = (await api.get('/user').catch((e: unknown) => e)) as GitLabApiError;
    expect(error).toBeInstanceOf(GitLabApiError);
    expect(error.status).toBe(403);
    expect(hasControl(error.message)).toBe(false);
    expect(error.message).toContain('\\n2024-01-01');
    expect(error.message.length).toBeLessThan(400);
  });

  it('a token endpoint error reaches the log as one escaped line, GitLab’s part bounded', async () => {
    gitlab.control.injectFault({
      path: '/oauth/token',
      status: 400,
      contentType: 'application/json',
      body: JSON.stringify({ error: hostile, error_description: 'no' }),
    });
    const h = createHarness(gitlab);
    const callback = await signIn(h);
    expect(callback.status).toBeGreaterThanOrEqual(400);
    const line = h.logs.find((l) => l.includes('signed in as admin'));
    expect(line).toBeDefined();
    expect(hasControl(line)).toBe(false);
    // Bounded where it was put into the message, not only where the whole line is cut.
    expect(line).not.toContain('x'.repeat(100));
  });
});
