/**
 * Two gateway instances on one Redis store, as a platform team runs them behind a load balancer
 * (docs/security.md, GATEWAY-14; TOKEN-4): a session made on one is honoured by the other, an expired
 * GitLab token asked for on both at once is refreshed once (its refresh token works once), and a
 * sign-out on one ends the session on the other.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Store } from '../../src/core/index.js';
import { type RunningEmulator, startEmulator } from '../../src/emulator/index.js';
import { type RunningGateway, startGateway } from '../../src/gateway/server.js';
import { openStore } from '../../src/stores/index.js';
import { Browser, passwordOf } from '../emulator/browser.js';
import { describeWithService, redis, redisUrl, uniqueName } from '../support/services.js';
import { baseConfig, freePort, testClock } from './harness.js';
import { type Echo, startUpstream, type Upstream } from './upstream.js';

const service = await redis();

describeWithService(service, 'two gateway instances on one Redis store', () => {
  let gitlab: RunningEmulator;
  let upstream: Upstream;
  let stores: Store[];
  let gateways: RunningGateway[];
  const clock = testClock();

  beforeAll(async () => {
    gitlab = await startEmulator();
    upstream = await startUpstream();
    const secret = randomBytes(32).toString('base64url');
    const prefix = `${uniqueName()}:`;
    stores = [];
    gateways = [];
    for (let i = 0; i < 2; i++) {
      const port = await freePort();
      const config = baseConfig(gitlab, upstream.url, `http://127.0.0.1:${port}`, port);
      config.labgate = { ...config.labgate, secret, now: clock.now, sessionCacheTtl: 0 };
      config.passAccessToken = true;
      const store = await openStore(`${redisUrl}?prefix=${prefix}`);
      stores.push(store);
      gateways.push(await startGateway(config, { store, write: () => {} }));
    }
  });

  afterAll(async () => {
    for (const gateway of gateways ?? []) await gateway.close();
    for (const store of stores ?? []) await store.close?.();
    await upstream?.close();
    await gitlab?.close();
  });

  /** Signs bob in on the first instance; the browser's cookie jar (by host, as browsers keep it) serves both. */
  async function signIn(): Promise<Browser> {
    const browser = new Browser();
    const start = await browser.get(`${gateways[0]!.url}/oauth2/start?rd=%2F`);
    const callback = await browser.approveToClient({
      url: gitlab.url,
      authorizeUrl: start.location!,
      login: 'bob',
      password: passwordOf(gitlab, 'bob'),
    });
    expect((await browser.get(callback)).status).toBe(303);
    return browser;
  }

  const tokenRequests = () => gitlab.control.requests({ path: '/oauth/token' }).length;

  it('share sessions, and refresh an expired GitLab token once for both', async () => {
    const bob = await signIn();
    const cookie = bob.jar.header(gateways[0]!.url);
    for (const gateway of gateways) {
      const seen = JSON.parse((await bob.get(`${gateway.url}/x`)).body) as Echo;
      expect(seen.headers['x-forwarded-user']).toBe('bob');
    }
    // Two hours on: the token has expired for labgate and for GitLab.
    clock.advance(2 * 3600 * 1000 + 1000);
    gitlab.control.advanceClock(2 * 3600 + 1);
    const before = tokenRequests();
    const answers = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        fetch(`${gateways[i % 2]!.url}/x`, { headers: { cookie } }).then(
          async (r) => (await r.json()) as Echo,
        ),
      ),
    );
    expect(tokenRequests() - before).toBe(1);
    const tokens = new Set(answers.map((a) => a.headers['x-forwarded-access-token']));
    expect(tokens.size).toBe(1);
    const me = await fetch(`${gitlab.url}/api/v4/user`, {
      headers: { authorization: `Bearer ${[...tokens][0]}` },
    });
    expect(me.status).toBe(200);
  });

  it('end a session signed out on the other instance', async () => {
    const bob = await signIn();
    const [a, b] = gateways as [RunningGateway, RunningGateway];
    expect((await bob.get(`${b.url}/oauth2/userinfo`)).status).toBe(200);
    const cookie = bob.jar.header(b.url);
    const page = await bob.get(`${a.url}/oauth2/sign_out`);
    const out = await bob.request(page.forms[0]!.action, {
      method: 'POST',
      body: new URLSearchParams(page.forms[0]!.fields),
      headers: { origin: a.url },
    });
    expect(out.status).toBe(303);
    // The cookie itself, sent again, no longer opens a session on the other instance.
    expect((await fetch(`${b.url}/oauth2/userinfo`, { headers: { cookie } })).status).toBe(401);
  });
});
