import { afterAll, beforeAll, expect, it } from 'vitest';
import { createLabgate } from '../../src/core/index.js';
import { type RunningEmulator, startEmulator } from '../../src/emulator/index.js';
import { Browser } from '../emulator/browser.js';

let gitlab: RunningEmulator;
beforeAll(async () => {
  gitlab = await startEmulator();
});
afterAll(() => gitlab.close());

it('signs in end to end', async () => {
  const app = gitlab.applications[0]!;
  const labgate = createLabgate({
    gitlabUrl: gitlab.url,
    clientId: app.uid,
    clientSecret: app.secret,
    url: 'http://127.0.0.1:3000',
    secret: 'a'.repeat(43),
    scopes: 'openid profile email read_user',
    logger: false,
  });
  const appFetch: typeof fetch = async (input, init) => {
    const request = new Request(input, init);
    if (request.url.startsWith('http://127.0.0.1:3000/')) {
      return (await labgate.handle(request)) ?? new Response('app', { status: 200 });
    }
    return fetch(request);
  };
  const browser = new Browser({ fetch: appFetch });
  const login = await browser.get('http://127.0.0.1:3000/auth/login?returnTo=/me');
  expect(login.status).toBe(302);
  const outcome = await browser.signInAndAuthorize({
    url: gitlab.url,
    authorizeUrl: login.location!,
    login: 'alice',
    password: 'alice-password',
  });
  expect(outcome.kind).toBe('consent');
  const approved = await browser.submit(
    outcome.page.forms.find((f) => f.testIds.includes('authorization-button'))!,
  );
  const cb = await browser.get(approved.location!);
  expect(cb.status, cb.body).toBe(303);
  expect(cb.location).toBe('http://127.0.0.1:3000/me');
  const session = await browser.get('http://127.0.0.1:3000/auth/session');
  expect(session.status).toBe(200);
  console.log(session.body);
});
