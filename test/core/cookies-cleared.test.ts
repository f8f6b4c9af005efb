/**
 * Cookies labgate leaves behind (docs/security.md, COOKIE-3 and COOKIE-4): every failed callback clears
 * the transaction it belonged to, also when it fails early (state mismatch, malformed or oversized
 * callback, `error=`); a session cookie that does not open is cleared; `Set-Cookie` only ever names
 * cookies of labgate's own pattern.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type RunningEmulator, startEmulator } from '../../src/emulator/index.js';
import { APP, CALLBACK, createHarness, type Harness, login, signIn } from './harness.js';

let gitlab: RunningEmulator;
let h: Harness;
beforeAll(async () => {
  gitlab = await startEmulator();
});
afterAll(() => gitlab.close());
beforeEach(() => {
  gitlab.control.reset();
  h = createHarness(gitlab);
});

/** The names a response's `Set-Cookie` headers delete. */
function cleared(response: Response | { headers: Headers }): string[] {
  return response.headers
    .getSetCookie()
    .filter((c) => /;\s*Max-Age=0\b/i.test(c))
    .map((c) => c.slice(0, c.indexOf('=')));
}

/** A started sign-in: its transaction cookie (`name=value`) and the state GitLab will send back. */
async function started(): Promise<{ cookie: string; name: string; state: string }> {
  const browser = h.browser();
  const { page, authorizeUrl } = await login(h, browser);
  const set = page.headers.getSetCookie().find((c) => c.startsWith('labgate-tx-'))!;
  const cookie = set.slice(0, set.indexOf(';'));
  return {
    cookie,
    name: cookie.slice(0, cookie.indexOf('=')),
    state: authorizeUrl.searchParams.get('state')!,
  };
}

function callback(query: string, cookie: string): Promise<Response> {
  return h.fetch(`${CALLBACK}?${query}`, { headers: { cookie } });
}

describe('a failed callback clears its transaction', () => {
  it.each([
    ['a state this browser did not start', (s: string) => `code=abc&state=${s}x`],
    ['no state', () => 'code=abc'],
    ['the state twice', (s: string) => `code=abc&state=${s}&state=${s}`],
    ['an error from GitLab', (s: string) => `error=access_denied&state=${s}`],
    ['an error without a state', () => 'error=access_denied'],
    ['a parameter name with a newline', (s: string) => `code=abc&state=${s}&x%0Ay=1`],
    ['a value with a control character', (s: string) => `code=abc&state=${s}&error_description=a%07b`],
    ['an oversized callback', (s: string) => `code=abc&state=${s}&pad=${'a'.repeat(9000)}`],
    ['tokens in the callback', (s: string) => `code=abc&state=${s}&access_token=x`],
  ])('%s', async (_what, query) => {
    const tx = await started();
    const response = await callback(query(tx.state), tx.cookie);
    expect(response.status).toBeGreaterThanOrEqual(400);
    expect(cleared(response)).toContain(tx.name);
  });

  it("leaves other tabs' transactions alone when it cannot tell which one came back", async () => {
    const one = await started();
    const two = await started();
    const response = await callback(`code=abc&state=${one.state}x`, `${one.cookie}; ${two.cookie}`);
    expect(response.status).toBe(400);
    expect(cleared(response)).toEqual([]);
    // The one it names is cleared even when the other's is there too.
    const named = await callback(`error=access_denied&state=${one.state}`, `${one.cookie}; ${two.cookie}`);
    expect(cleared(named)).toEqual([one.name]);
  });
});

describe('a session cookie that does not open', () => {
  it('is cleared by the 401 of /auth/session and by /auth/login, and kept while it opens', async () => {
    const forged = 'labgate=forged.value';
    const session = await h.fetch(`${APP}/auth/session`, { headers: { cookie: forged } });
    expect(session.status).toBe(401);
    expect(cleared(session)).toContain('labgate');
    const loginPage = await h.fetch(`${APP}/auth/login`, { headers: { cookie: forged } });
    expect(loginPage.status).toBe(302);
    expect(cleared(loginPage)).toContain('labgate');

    const { browser } = await signIn(h);
    const cookie = browser.jar.header(`${APP}/`);
    expect((await h.fetch(`${APP}/auth/session`, { headers: { cookie } })).status).toBe(200);
    const again = await h.fetch(`${APP}/auth/login`, { headers: { cookie } });
    expect(cleared(again)).not.toContain('labgate');
  });

  it('is cleared once its session has ended elsewhere', async () => {
    const { browser } = await signIn(h);
    const cookie = browser.jar.header(`${APP}/`);
    const session = (await h.labgate.getSession(new Request(`${APP}/`, { headers: { cookie } })))!;
    await h.labgate.endSession(session);
    const answer = await h.fetch(`${APP}/auth/session`, {
      headers: { cookie, accept: 'application/json' },
    });
    expect(answer.status).toBe(401);
    expect(cleared(answer)).toContain('labgate');
  });
});

describe('Set-Cookie names', () => {
  it("never echoes a cookie name a client made up, even one that starts like labgate's", async () => {
    const tx = await started();
    const made = [
      'labgate-tx-short',
      'labgate-tx-AAAAAAAAAAAAAAAA-extra',
      'labgate-tx-AAAAAAAA<script>AA',
      'labgate-tx-AAAAAAAAAAAAAAA\u00e9',
      'labgate-tx-',
    ];
    const cookie = [...made.map((name) => `${name}=v`), tx.cookie].join('; ');
    for (const response of [
      await h.fetch(`${APP}/auth/login`, { headers: { cookie } }),
      await callback(`code=abc&state=${tx.state}x`, cookie),
      await callback('code=abc', cookie),
    ]) {
      for (const set of response.headers.getSetCookie()) {
        const name = set.slice(0, set.indexOf('='));
        expect(name).toMatch(/^(labgate|labgate-tx-[A-Za-z0-9_-]{16})$/);
      }
    }
  });
});
