/**
 * The boundary every adapter stands on, at the core: `sessionOf` (the session of a raw `Cookie` header,
 * synchronous when known without I/O), `guard(rule).check(request as plain data)` (pass, or the
 * response to send: the guards' rules written once), and the session's GitLab token by id.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { isNavigation } from '../../src/core/guards.js';
import { type RunningEmulator, startEmulator } from '../../src/emulator/index.js';
import { APP, createHarness, type Harness, signIn } from './harness.js';

let gitlab: RunningEmulator;
let h: Harness;
beforeAll(async () => {
  gitlab = await startEmulator();
});
afterAll(() => gitlab.close());
beforeEach(() => {
  gitlab.control.reset();
  h = createHarness(gitlab, {
    scopes: 'openid profile email read_user read_api',
    access: { roles: { admin: 'group:acme>=owner' } },
  });
});

async function cookieOf(user = 'alice'): Promise<string> {
  const { browser } = await signIn(h, { user });
  return browser.jar.header(`${APP}/`);
}

describe('isNavigation', () => {
  it.each([
    ['GET', 'text/html,application/xhtml+xml', 'navigate', true],
    ['GET', '*/*', 'navigate', true],
    ['HEAD', 'text/html', undefined, true],
    ['GET', '*/*', undefined, true],
    ['GET', '', undefined, true],
    ['GET', '*/*', 'cors', false],
    ['GET', 'text/html', 'cors', false],
    ['GET', 'text/html', 'no-cors', false],
    ['GET', 'application/json', 'navigate', false],
    ['GET', 'application/json', undefined, false],
    ['POST', 'text/html', 'navigate', false],
  ] as const)('%s Accept %s Sec-Fetch-Mode %s → %s', (method, accept, secFetchMode, expected) => {
    expect(isNavigation({ method, accept, secFetchMode })).toBe(expected);
  });
});

describe('sessionOf', () => {
  it('answers without a promise when there is no session cookie, and for a session verified moments ago', async () => {
    expect(h.labgate.sessionOf(undefined)).toBeNull();
    expect(h.labgate.sessionOf('other=1')).toBeNull();
    const cookie = await cookieOf();
    const first = h.labgate.sessionOf(cookie);
    // The first sight of a cookie may need the store; the next is known.
    const session = first instanceof Promise ? await first : first;
    const again = h.labgate.sessionOf(cookie);
    expect(again).not.toBeInstanceOf(Promise);
    expect((again as typeof session)?.id).toBe(session!.id);
  });
});

describe('guard', () => {
  it('refuses a bad rule when it is made', () => {
    expect(() => h.labgate.guard({ access: 'group:' })).toThrow(TypeError);
    expect(() => h.labgate.guard({ role: '' })).toThrow(TypeError);
  });

  it('answers a signed-out request at once: a navigation to sign in, a script 401', () => {
    const guard = h.labgate.guard();
    const navigation = guard.check({
      method: 'GET',
      target: '/reports?year=2026',
      accept: 'text/html',
      secFetchMode: 'navigate',
      session: null,
    }) as Response;
    expect(navigation.status).toBe(302);
    expect(navigation.headers.get('location')).toBe('/auth/login?returnTo=%2Freports%3Fyear%3D2026');
    const script = guard.check({ method: 'GET', target: '/reports', secFetchMode: 'cors', session: null });
    expect((script as Response).status).toBe(401);
    const api = h.labgate
      .guard({ api: true })
      .check({ method: 'GET', target: '/x', accept: 'text/html', secFetchMode: 'navigate', session: null });
    expect((api as Response).status).toBe(401);
    // A target that would leave the site is not where sign-in returns.
    const away = guard.check({
      method: 'GET',
      target: '//evil.example/x',
      accept: 'text/html',
      session: null,
    });
    expect((away as Response).headers.get('location')).toBe('/auth/login');
  });

  it('decides a role at once, and an access rule at once once decided', async () => {
    const alice = (await h.labgate.sessionOf(await cookieOf('alice')))!;
    const bob = (await h.labgate.sessionOf(await cookieOf('bob')))!;
    const admins = h.labgate.guard({ role: 'admin' });
    expect(admins.check({ method: 'GET', target: '/admin', session: alice })).toBeNull();
    const refused = admins.check({
      method: 'GET',
      target: '/admin',
      accept: 'application/json',
      session: bob,
    });
    expect((refused as Response).status).toBe(403);
    const maintainers = h.labgate.guard({ access: 'project:acme/app>=maintainer' });
    const first = maintainers.check({ method: 'GET', target: '/m', session: alice });
    expect(first).toBeInstanceOf(Promise);
    expect(await first).toBeNull();
    expect(maintainers.check({ method: 'GET', target: '/m', session: alice })).toBeNull();
    const denied = await maintainers.check({ method: 'GET', target: '/m', session: bob });
    expect(denied!.status).toBe(403);
    expect(await denied!.text()).toContain('access_forbidden');
  });

  it('takes a session by its id alone: a copy of the session works as the original', async () => {
    const session = (await h.labgate.sessionOf(await cookieOf('alice')))!;
    const copy = structuredClone(session);
    const token = await h.labgate.getAccessToken(session);
    expect(await h.labgate.getAccessToken(copy)).toBe(token);
    expect(await h.labgate.getAccessToken(session.id)).toBe(token);
    expect((await h.labgate.gitlab(session.id).get<{ username: string }>('/user')).username).toBe('alice');
    expect((await h.labgate.listSessions(session.id)).map((s) => s.id)).toEqual([session.id]);
  });

  it('finds a session by id that this process has not seen, from the store', async () => {
    const session = (await h.labgate.sessionOf(await cookieOf('alice')))!;
    const other = createHarness(gitlab, { store: h.labgate.store, secret: h.secret });
    expect((await other.labgate.getAccessToken(session.id)).length).toBe(64);
    await h.labgate.endSession(session.id);
    await expect(other.labgate.getAccessToken('no-such-session-id')).rejects.toMatchObject({
      code: 'session_required',
    });
  });
});
