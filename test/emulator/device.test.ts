/**
 * The emulator's device authorization grant (RFC 8628) as GitLab serves it (docs/emulator.md, Fidelity): the
 * device request, polling on the emulator's clock, and the user's approval through GitLab's pages.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type RunningEmulator, startEmulator } from '../../src/emulator/index.js';
import { Browser, formWith, type Page, passwordOf, postForm, type TokenSet } from './browser.js';

const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

interface DeviceAuthorization {
  device_code: string;
  user_code: string;
  verification_uri: string;
  verification_uri_complete: string;
  expires_in: number;
  interval: number;
}

let gitlab: RunningEmulator;
let publicApp: RunningEmulator['applications'][number];
let confidentialApp: RunningEmulator['applications'][number];

beforeAll(async () => {
  gitlab = await startEmulator();
  confidentialApp = gitlab.applications[0]!;
  publicApp = gitlab.applications[1]!;
});
afterAll(() => gitlab.close());
beforeEach(() => gitlab.control.reset());

// ---------------------------------------------------------------------------------------------
// Helpers

function requestDevice(url: string, fields: Record<string, string | undefined>): Promise<Response> {
  return postForm(`${url}/oauth/authorize_device`, fields);
}

async function startDevice(scope = 'openid read_user'): Promise<DeviceAuthorization> {
  const res = await requestDevice(gitlab.url, { client_id: publicApp.uid, scope });
  expect(res.status).toBe(200);
  return (await res.json()) as DeviceAuthorization;
}

function poll(deviceCode: string, clientId = publicApp.uid): Promise<Response> {
  return postForm(`${gitlab.url}/oauth/token`, {
    grant_type: DEVICE_GRANT,
    device_code: deviceCode,
    client_id: clientId,
  });
}

async function expectPollError(res: Response, error: string) {
  expect(res.status).toBe(400);
  expect(res.headers.get('cache-control')).toBe('no-store, no-cache');
  const body = (await res.json()) as { error: string; error_description: string };
  expect(body.error).toBe(error);
  expect(body.error_description).toEqual(expect.any(String));
}

/** The user signs in at GitLab from the verification URI and reaches the code entry page. */
async function openDevicePage(browser: Browser, url: string): Promise<Page> {
  const outcome = await browser.signInAndAuthorize({
    url: gitlab.url,
    authorizeUrl: url,
    login: 'alice',
    password: passwordOf(gitlab, 'alice'),
  });
  expect(outcome.page.status).toBe(200);
  return outcome.page;
}

/** Enters the user code (as typed, or prefilled) and answers the confirmation page. */
async function decide(
  browser: Browser,
  entry: Page,
  decision: 'authorization-button' | 'deny-button',
  userCode?: string,
): Promise<Page> {
  const form = formWith(entry, { field: 'user_code' });
  const confirm = await browser.submit(form, userCode === undefined ? {} : { user_code: userCode });
  expect(confirm.status).toBe(200);
  const answer = await browser.submit(formWith(confirm, { testId: decision }));
  expect(answer.status).toBe(200);
  return answer;
}

// ---------------------------------------------------------------------------------------------

describe('device authorization request', () => {
  it('answers device_code, an 8-character user_code, the verification URIs, 300 s and 5 s', async () => {
    const res = await requestDevice(gitlab.url, { client_id: publicApp.uid, scope: 'openid read_user' });
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-store');
    expect(res.headers.get('pragma')).toBe('no-cache');
    expect(res.headers.get('content-type')).toBe('application/json; charset=utf-8');
    const body = (await res.json()) as DeviceAuthorization;
    expect(Object.keys(body)).toEqual([
      'device_code',
      'user_code',
      'verification_uri',
      'verification_uri_complete',
      'expires_in',
      'interval',
    ]);
    expect(body.device_code).toMatch(/^\S{32,}$/);
    expect(body.user_code).toMatch(/^[0-9A-Z]{8}$/);
    expect(body.verification_uri).toBe(`${gitlab.url}/oauth/device`);
    expect(body.verification_uri_complete).toBe(`${gitlab.url}/oauth/device?user_code=${body.user_code}`);
    expect(body.expires_in).toBe(300);
    expect(body.interval).toBe(5);
  });

  it('authenticates the client: a confidential app needs its secret', async () => {
    const without = await requestDevice(gitlab.url, { client_id: confidentialApp.uid, scope: 'openid' });
    expect(without.status).toBe(401);
    expect(((await without.json()) as { error: string }).error).toBe('invalid_client');
    const unknown = await requestDevice(gitlab.url, { client_id: 'f'.repeat(64) });
    expect(unknown.status).toBe(401);
    const withSecret = await requestDevice(gitlab.url, {
      client_id: confidentialApp.uid,
      client_secret: confidentialApp.secret,
      scope: 'openid',
    });
    expect(withSecret.status).toBe(200);
  });
});

describe('device polling', () => {
  it('answers authorization_pending, then slow_down when polled within 5 s', async () => {
    const device = await startDevice();
    await expectPollError(await poll(device.device_code), 'authorization_pending');
    await expectPollError(await poll(device.device_code), 'slow_down');
    gitlab.control.advanceClock(3);
    await expectPollError(await poll(device.device_code), 'slow_down');
    // slow_down did not move the last poll: 5 s after the first poll, polling is welcome again.
    gitlab.control.advanceClock(2);
    await expectPollError(await poll(device.device_code), 'authorization_pending');
  });

  it('issues tokens once the user approves in the browser, and only once', async () => {
    const device = await startDevice('openid read_user');
    await expectPollError(await poll(device.device_code), 'authorization_pending');

    const browser = new Browser();
    const entry = await openDevicePage(browser, device.verification_uri_complete);
    expect(formWith(entry, { field: 'user_code' }).fields['user_code']).toBe(device.user_code);
    const done = await decide(browser, entry, 'authorization-button');
    expect(done.body).toContain('Device authorized');

    gitlab.control.advanceClock(5);
    const res = await poll(device.device_code);
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-store, no-cache');
    const tokens = (await res.json()) as TokenSet;
    expect(tokens).toMatchObject({ token_type: 'Bearer', expires_in: 7200, scope: 'openid read_user' });
    expect(tokens.id_token).toBeDefined();
    const info = await fetch(`${gitlab.url}/oauth/token/info`, {
      headers: { authorization: `Bearer ${tokens.access_token}` },
    });
    expect(await info.json()).toMatchObject({ resource_owner_id: 1, application: { uid: publicApp.uid } });

    gitlab.control.advanceClock(5);
    await expectPollError(await poll(device.device_code), 'invalid_grant');
  });

  it('accepts the user code typed on the plain verification page', async () => {
    const device = await startDevice('read_user');
    const browser = new Browser();
    const entry = await openDevicePage(browser, device.verification_uri);
    expect(formWith(entry, { field: 'user_code' }).fields['user_code']).toBe('');
    await decide(browser, entry, 'authorization-button', device.user_code.toLowerCase());
    const res = await poll(device.device_code);
    expect(res.status).toBe(200);
    expect(((await res.json()) as TokenSet).scope).toBe('read_user');
  });

  it('answers access_denied after the user denies', async () => {
    const device = await startDevice();
    const browser = new Browser();
    await decide(browser, await openDevicePage(browser, device.verification_uri_complete), 'deny-button');
    await expectPollError(await poll(device.device_code), 'access_denied');
  });

  it('expires the device code after 300 s', async () => {
    const device = await startDevice();
    await expectPollError(await poll(device.device_code), 'authorization_pending');
    gitlab.control.advanceClock(301);
    await expectPollError(await poll(device.device_code), 'expired_token');
    // The user can no longer approve it either.
    const browser = new Browser();
    const entry = await openDevicePage(browser, device.verification_uri_complete);
    const refused = await browser.submit(formWith(entry, { field: 'user_code' }));
    expect(refused.body).not.toContain('data-testid="authorization-button"');
    expect(refused.body).toContain('The code is invalid or has expired.');
  });

  it('answers invalid_grant for an unknown device code or one of another client', async () => {
    await expectPollError(await poll('f'.repeat(64)), 'invalid_grant');
    const device = await startDevice();
    const res = await postForm(`${gitlab.url}/oauth/token`, {
      grant_type: DEVICE_GRANT,
      device_code: device.device_code,
      client_id: confidentialApp.uid,
      client_secret: confidentialApp.secret,
    });
    await expectPollError(res, 'invalid_grant');
  });
});

describe('device flow under a relative URL root', () => {
  let rooted: RunningEmulator;
  beforeAll(async () => {
    rooted = await startEmulator({ basePath: '/gitlab' });
  });
  afterAll(() => rooted.close());

  it('builds verification_uri without the base path, as the gem does', async () => {
    const res = await requestDevice(rooted.url, { client_id: rooted.applications[1]!.uid, scope: 'openid' });
    expect(res.status).toBe(200);
    const body = (await res.json()) as DeviceAuthorization;
    const origin = new URL(rooted.url).origin;
    expect(rooted.url).toBe(`${origin}/gitlab`);
    expect(body.verification_uri).toBe(`${origin}/oauth/device`);
    expect(body.verification_uri).not.toContain('/gitlab');
    expect(body.verification_uri_complete).toBe(`${origin}/oauth/device?user_code=${body.user_code}`);
  });
});
