/**
 * The Express guards of labgate/express in a real Express app on a loopback socket, signed in through
 * the emulator: `requireRole` (the policy's role mapping) and `requireAccess` (a rule or policy checked
 * against GitLab for the route, cached per session for the re-check interval). A refusal is a 403
 * page that says what failed and never lists the user's groups (JSON for API clients); signed-out
 * users are sent to sign in; a malformed rule stops the app when the route is declared.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { labgate, requireAccess, requireRole } from '../../src/adapters/express.js';
import { createLabgate, type Labgate } from '../../src/core/index.js';
import { type RunningEmulator, startEmulator } from '../../src/emulator/index.js';
import { Clock, testSecret } from '../core/harness.js';
import { Browser, totp } from '../emulator/browser.js';
import {
  ALL_SCOPES,
  CAROL_TOTP_SECRET,
  detailOf,
  expectNoneOf,
  NO_RULE_MATCHED,
  recordEvents,
} from './helpers.js';

let gitlab: RunningEmulator;
let server: Server;
let origin: string;
let auth: Labgate;
const clock = new Clock();
const INTERVAL = 60;

beforeAll(async () => {
  gitlab = await startEmulator();
  server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const app = gitlab.applications[0]!;
  auth = createLabgate({
    gitlabUrl: gitlab.url,
    clientId: app.uid,
    clientSecret: app.secret,
    url: origin,
    secret: testSecret(),
    scopes: ALL_SCOPES,
    access: { roles: { admin: 'group:acme>=owner', developer: 'group:acme/platform>=developer' } },
    recheckInterval: INTERVAL,
    now: clock.now,
    logger: false,
  });
  const web = express();
  web.use(labgate(auth));
  web.get('/admin', requireRole('admin'), (req, res) => res.send(`admin ${req.labgate!.user!.username}`));
  web.get('/api/admin', requireRole('admin', { api: true }), (_req, res) => res.json({ ok: true }));
  web.get('/app-admin', requireAccess('project:acme/app>=maintainer'), (req, res) =>
    res.send(`app admin ${req.labgate!.user!.username}`),
  );
  web.get(
    '/platform-2fa',
    requireAccess({ allow: ['group:acme/platform>=developer'], require: ['2fa'] }),
    (_req, res) => res.send('platform with 2fa'),
  );
  server.on('request', web);
});
afterAll(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await gitlab.close();
});
beforeEach(() => {
  gitlab.control.reset();
  // The reset puts the emulator's clock back to real time: keep it with labgate's.
  gitlab.control.advanceClock((clock.now() - Date.now()) / 1000);
});

/** Moves labgate's clock and the emulator's together. */
function advance(seconds: number): void {
  clock.advance(seconds);
  gitlab.control.advanceClock(seconds);
}

/** Signs a new browser in through the app's `/auth/login` (with carol's TOTP for carol). */
async function signIn(user: string): Promise<Browser> {
  const browser = new Browser();
  const login = await browser.get(`${origin}/auth/login?returnTo=%2F`);
  expect(login.status).toBe(302);
  const location = await browser.approveToClient({
    url: gitlab.url,
    authorizeUrl: login.location!,
    login: user,
    password: `${user}-password`,
    ...(user === 'carol' ? { otp: totp(CAROL_TOTP_SECRET, gitlab.control.now().getTime()) } : {}),
  });
  const callback = await browser.get(location);
  expect(callback.status, callback.body).toBe(303);
  return browser;
}

const JSON_ACCEPT = { accept: 'application/json' };

describe('requireRole', () => {
  it('lets a user with the role through', async () => {
    const alice = await signIn('alice');
    const page = await alice.get(`${origin}/admin`);
    expect(page.status).toBe(200);
    expect(page.body).toBe('admin alice');
  });

  it('refuses a user without it with a 403 page that names the missing role', async () => {
    const bob = await signIn('bob');
    const page = await bob.get(`${origin}/admin`);
    expect(page.status).toBe(403);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    expect(page.headers.get('cache-control')).toBe('no-store');
    expect(page.body).toContain('Error <code>access_forbidden</code>');
    expect(detailOf(page.body)).toBe('This page needs the role “admin”.');
    // bob holds another role (developer): neither it nor his groups are listed.
    expectNoneOf(page.body, ['developer', 'acme', 'Platform']);
  });

  it('answers JSON 403 to a client that accepts JSON', async () => {
    const bob = await signIn('bob');
    const res = await bob.request(`${origin}/admin`, { headers: JSON_ACCEPT });
    expect(res.status).toBe(403);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    expect(JSON.parse(res.body)).toMatchObject({ error: 'access_forbidden' });
  });

  it('sends a signed-out browser to sign in, and answers an API 401', async () => {
    const page = await new Browser().request(`${origin}/admin`, { headers: { accept: 'text/html' } });
    expect(page.status).toBe(302);
    expect(new URL(page.location!).pathname + new URL(page.location!).search).toBe(
      '/auth/login?returnTo=%2Fadmin',
    );
    const api = await new Browser().request(`${origin}/api/admin`, { headers: JSON_ACCEPT });
    expect(api.status).toBe(401);
    expect(JSON.parse(api.body)).toMatchObject({ error: 'session_required' });
    const json = await new Browser().request(`${origin}/admin`, { headers: JSON_ACCEPT });
    expect(json.status).toBe(401);
  });

  it('follows the re-check: a role granted in GitLab opens the route after the interval', async () => {
    const bob = await signIn('bob');
    expect((await bob.get(`${origin}/admin`)).status).toBe(403);
    gitlab.control.setMembership({ user: 'bob', group: 'acme', accessLevel: 'owner' });
    advance(INTERVAL + 1);
    const page = await bob.get(`${origin}/admin`);
    expect(page.status).toBe(200);
    expect(page.body).toBe('admin bob');
  });
});

describe('requireAccess', () => {
  it('lets carol (maintainer of acme/app) through', async () => {
    const carol = await signIn('carol');
    const page = await carol.get(`${origin}/app-admin`);
    expect(page.status).toBe(200);
    expect(page.body).toBe('app admin carol');
  });

  it('refuses bob (reporter) with the detail sentence and none of his groups', async () => {
    const bob = await signIn('bob');
    const denied = recordEvents(auth, 'access.denied');
    const page = await bob.get(`${origin}/app-admin`);
    expect(page.status).toBe(403);
    expect(page.body).toContain('Error <code>access_forbidden</code>');
    expect(detailOf(page.body)).toBe(NO_RULE_MATCHED);
    // Neither bob's groups and projects, nor the rule, nor his level there.
    expectNoneOf(page.body, ['acme', 'platform', 'infra', 'reporter', 'maintainer']);
    expect(denied.of('access.denied')).toMatchObject([{ username: 'bob', reason: 'no-rule-matched' }]);
    expect(denied.of('access.denied')[0]!.sessionId).toEqual(expect.any(String));

    const json = await bob.request(`${origin}/app-admin`, { headers: JSON_ACCEPT });
    expect(json.status).toBe(403);
    expect(JSON.parse(json.body)).toMatchObject({ error: 'access_forbidden' });
    expectNoneOf(json.body, ['acme', 'platform']);
  });

  it('says which requirement failed', async () => {
    const bob = await signIn('bob');
    const page = await bob.get(`${origin}/platform-2fa`);
    expect(page.status).toBe(403);
    expect(detailOf(page.body)).toBe('This requires two-factor authentication on your GitLab account.');
  });

  it('sends a signed-out browser to sign in', async () => {
    const page = await new Browser().request(`${origin}/app-admin`, { headers: { accept: 'text/html' } });
    expect(page.status).toBe(302);
    expect(page.location).toContain('/auth/login?returnTo=%2Fapp-admin');
  });

  it('caches the decision per session for the re-check interval, then asks GitLab again', async () => {
    const bob = await signIn('bob');
    expect((await bob.get(`${origin}/app-admin`)).status).toBe(403);
    gitlab.control.setMembership({ user: 'bob', project: 'acme/app', accessLevel: 'maintainer' });
    gitlab.control.clearRequests();
    expect((await bob.get(`${origin}/app-admin`)).status).toBe(403);
    expect(gitlab.control.requests().filter((r) => r.path.startsWith('/api/'))).toEqual([]);
    advance(INTERVAL + 1);
    expect((await bob.get(`${origin}/app-admin`)).status).toBe(200);
    // Another user's session never gets bob's cached answer.
    const erin = await signIn('erin');
    expect((await erin.get(`${origin}/app-admin`)).status).toBe(403);
  });

  it('GitLab down: refused with "could not be read", not cached, so it passes once GitLab is back', async () => {
    const carol = await signIn('carol');
    gitlab.control.injectFault({ path: '/api/v4/*', status: 503 });
    const page = await carol.get(`${origin}/app-admin`);
    expect(page.status).toBe(403);
    expect(detailOf(page.body)).toBe(
      'Your GitLab memberships could not be read right now. Try again in a moment.',
    );
    gitlab.control.clearFaults();
    expect((await carol.get(`${origin}/app-admin`)).status).toBe(200);
  });

  it('a malformed rule throws a TypeError when the route is declared', () => {
    expect(() => requireAccess('projekt:acme/app')).toThrow(TypeError);
    expect(() => requireAccess('group:acme>=root')).toThrow(TypeError);
    expect(() => requireAccess('group:')).toThrow(TypeError);
    expect(() => requireAccess({ allow: [{ group: 'acme', minAcessLevel: 30 } as never] })).toThrow(
      TypeError,
    );
    expect(() => requireAccess({ require: ['mfa' as never] })).toThrow(TypeError);
    expect(() => requireAccess('project:acme/app>=maintainer')).not.toThrow();
  });
});
