/**
 * `labgate gateway` end to end on loopback: the emulator, the gateway and an echo upstream. Proxy mode
 * (sign-in, identity headers, 401 for scripts, per-route rules, skip rules), the oauth2-proxy endpoints,
 * forward-auth answers, the signed assertion, metrics, a user removed during a live session, and a
 * GitLab under a sub-path (docs/gateway.md; docs/security.md, GATEWAY-1 to GATEWAY-12).
 */
import { createPublicKey } from 'node:crypto';
import { createLocalJWKSet, jwtVerify } from 'jose';
import { describe, expect, it } from 'vitest';
import { Browser } from '../emulator/browser.js';
import { sendBody } from '../support/http.js';
import { recheckingPlatform, type StackOptions, stackPerTest, testClock } from './harness.js';

const start = stackPerTest();

/** What the echo upstream says it received. */
interface Echo {
  method: string;
  url: string;
  headers: Record<string, string | string[]>;
}

async function echo(page: { status: number; body: string }): Promise<Echo> {
  expect(page.status).toBe(200);
  return JSON.parse(page.body) as Echo;
}

/** A script's request (Node's fetch sends `Sec-Fetch-Mode: cors`). */
function script(url: string, init: RequestInit = {}): Promise<Response> {
  return fetch(url, { redirect: 'manual', ...init });
}

describe('proxy mode', () => {
  it('sends a signed-out navigation to sign in and back, then proxies with the identity headers', async () => {
    const s = await start();
    const browser = new Browser();
    const first = await browser.get(`${s.url}/reports?year=2026`);
    expect(first.status).toBe(302);
    expect(first.location).toBe(`${s.url}/oauth2/start?rd=${encodeURIComponent('/reports?year=2026')}`);
    expect(s.upstream.requests).toHaveLength(0);

    const bob = await s.signIn('bob', { browser, rd: '/reports?year=2026' });
    const seen = await echo(await browser.get(`${s.url}/reports?year=2026`));
    expect(seen.url).toBe('/reports?year=2026');
    expect(seen.headers['x-forwarded-user']).toBe('bob');
    expect(seen.headers['x-forwarded-email']).toBe('bob@acme.test');
    expect(seen.headers['x-forwarded-preferred-username']).toBe('bob');
    expect(seen.headers['x-forwarded-groups']).toBe('acme/platform,acme/platform/infra');
    expect(seen.headers['x-forwarded-proto']).toBe('http');
    expect(seen.headers['x-forwarded-host']).toBe(new URL(s.url).host);
    // labgate's cookies never reach the upstream (GATEWAY-4); the test browser's others do.
    expect(bob.jar.header(s.url)).toMatch(/(^|; )labgate=/);
    expect(String(seen.headers['cookie'] ?? '')).not.toMatch(/(^|; )labgate/);
    expect(seen.headers['x-forwarded-access-token']).toBeUndefined();
  });

  it('answers scripts, API routes and non-GET requests without a session with 401 JSON, never a redirect', async () => {
    const s = await start({ config: { apiRoutes: ['^/api/'] } });
    const fromFetch = await script(`${s.url}/page`);
    expect(fromFetch.status).toBe(401);
    expect(await fromFetch.json()).toMatchObject({ error: 'session_required' });
    const browser = new Browser();
    expect((await browser.request(`${s.url}/page`, { headers: { accept: 'application/json' } })).status).toBe(
      401,
    );
    expect((await browser.get(`${s.url}/api/items`)).status).toBe(401);
    expect(
      (await browser.request(`${s.url}/page`, { headers: { 'x-requested-with': 'XMLHttpRequest' } })).status,
    ).toBe(401);
    expect(
      (await browser.request(`${s.url}/form`, { method: 'POST', body: new URLSearchParams({ a: '1' }) }))
        .status,
    ).toBe(401);
    expect(s.upstream.requests).toHaveLength(0);
  });

  it('applies the longest matching route rule on the path the upstream receives, with 403 for the signed-in user it refuses', async () => {
    const s = await start({
      config: {
        routes: [
          { prefix: '/admin/users', allow: ['user:alice'] },
          { prefix: '/admin', allow: ['group:acme/platform>=developer'] },
        ],
      },
    });
    const bob = await s.signIn('bob');
    expect((await bob.get(`${s.url}/admin/settings`)).status).toBe(200);
    expect((await bob.get(`${s.url}/admin/users`)).status).toBe(403);
    // The same route written other ways is the same route.
    expect((await bob.get(`${s.url}/admin//users`)).status).toBe(403);
    expect((await bob.get(`${s.url}/admin/%75sers`)).status).toBe(403);
    // Sent raw (a browser would resolve the dot segment itself): refused, never decided differently.
    const port = Number(new URL(s.url).port);
    const raw = await sendBody(port, {
      method: 'GET',
      path: '/admin/x/../users',
      headers: { cookie: bob.jar.header(s.url) },
    });
    expect(raw.status).toBe(400);
    expect((await bob.get(`${s.url}/administrator`)).status).toBe(200);
    const erin = await s.signIn('erin');
    expect((await erin.get(`${s.url}/admin/settings`)).status).toBe(403);
    expect((await erin.get(`${s.url}/elsewhere`)).status).toBe(200);
  });

  it('lets skip-auth routes through without a session and without any identity header a client sent', async () => {
    const s = await start({
      config: {
        skipRoutes: [{ method: 'GET', negate: false, pattern: '^/public/' }],
        skipPrefixes: ['/healthz'],
      },
    });
    const seen = await echo(
      await new Browser().request(`${s.url}/public/logo.png?x=1`, {
        headers: {
          'X-Forwarded-User': 'root',
          x_forwarded_email: 'root@acme.test',
          'X-Auth-Request-User': 'root',
        },
      }),
    );
    expect(seen.headers['x-forwarded-user']).toBeUndefined();
    expect(seen.headers['x-forwarded-email']).toBeUndefined();
    expect(seen.headers['x-auth-request-user']).toBeUndefined();
    expect(
      Object.keys(seen.headers).some((h) => h.replace(/[_.]/g, '-').startsWith('x-forwarded-user')),
    ).toBe(false);
    expect((await script(`${s.url}/healthz`)).status).toBe(200);
    // POST is not in the rule; the query does not count.
    expect((await script(`${s.url}/public/x`, { method: 'POST' })).status).toBe(401);
    expect((await script(`${s.url}/private?/public/`)).status).toBe(401);
  });

  it('shows a refused browser labgate’s 403 page, and a script JSON', async () => {
    const s = await start({ config: { routes: [{ prefix: '/admin', allow: ['user:alice'] }] } });
    const bob = await s.signIn('bob');
    const page = await bob.request(`${s.url}/admin`, { headers: { accept: 'text/html' } });
    expect(page.status).toBe(403);
    expect(page.headers.get('content-type')).toMatch(/text\/html/);
    expect(page.headers.get('content-security-policy')).toMatch(/default-src 'none'/);
    const json = await bob.request(`${s.url}/admin`, { headers: { accept: 'application/json' } });
    expect(JSON.parse(json.body)).toMatchObject({ error: 'access_forbidden' });
  });

  it('passes the GitLab access token only when asked', async () => {
    const s = await start({ config: { passAccessToken: true } });
    const alice = await s.signIn('alice');
    const seen = await echo(await alice.get(`${s.url}/`));
    const token = seen.headers['x-forwarded-access-token'] as string;
    expect(token).toMatch(/.{20,}/);
    const me = await fetch(`${s.gitlab.url}/api/v4/user`, { headers: { authorization: `Bearer ${token}` } });
    expect(((await me.json()) as { username: string }).username).toBe('alice');
  });
});

describe('the oauth2-proxy endpoints', () => {
  it('/ping and /ready answer without a session; /ready says when the store is down', async () => {
    const s = await start();
    expect(await (await script(`${s.url}/ping`)).text()).toBe('OK');
    expect((await script(`${s.url}/ready`)).status).toBe(200);
    s.store.get = () => Promise.reject(new Error('down'));
    expect((await script(`${s.url}/ready`)).status).toBe(503);
  });

  it('/oauth2/userinfo answers the user as oauth2-proxy does, 401 without a session', async () => {
    const s = await start();
    expect((await script(`${s.url}/oauth2/userinfo`)).status).toBe(401);
    const bob = await s.signIn('bob');
    const page = await bob.get(`${s.url}/oauth2/userinfo`);
    expect(JSON.parse(page.body)).toEqual({
      user: 'bob',
      email: 'bob@acme.test',
      groups: ['acme/platform', 'acme/platform/infra'],
      preferredUsername: 'bob',
    });
  });

  it('/oauth2/sign_in clears the session and links to GitLab with a validated rd', async () => {
    const s = await start();
    const bob = await s.signIn('bob');
    const page = await bob.get(`${s.url}/oauth2/sign_in?rd=${encodeURIComponent('//evil.example/x')}`);
    expect(page.status).toBe(200);
    expect(page.body).toContain(`href="/oauth2/start?rd=%2F"`);
    expect((await bob.get(`${s.url}/oauth2/userinfo`)).status).toBe(401);
  });

  it('/oauth2/start takes rd (same origin, or an absolute URL on the gateway itself), refusing the open-redirect tricks', async () => {
    const s = await start();
    for (const [rd, expected] of [
      ['/x?y=1', '/x?y=1'],
      [`${s.url}/abs`, '/abs'],
      ['https://evil.example/', '/'],
      ['/\\evil.example', '/'],
      ['/\t/evil.example', '/'],
      ['/%2F%2Fevil.example', '/'],
    ] as const) {
      const browser = await s.signIn('bob', { rd });
      // The last redirect of the sign-in went where rd said, validated.
      const again = await browser.get(`${s.url}/oauth2/start?rd=${encodeURIComponent(rd)}`);
      expect(again.status).toBe(302);
      const callback = await browser.approveToClient({
        url: s.gitlab.url,
        authorizeUrl: again.location!,
        login: 'bob',
        password: s.gitlab.users.find((u) => u.username === 'bob')!.password,
      });
      const done = await browser.get(callback);
      expect(done.location, rd).toBe(`${s.url}${expected}`);
    }
  });

  it('/oauth2/sign_out asks first, then on a same-site POST ends the session, revokes the token and follows rd', async () => {
    const s = await start();
    const bob = await s.signIn('bob');
    const confirm = await bob.get(`${s.url}/oauth2/sign_out?rd=%2Fbye`);
    expect(confirm.status).toBe(200);
    expect((await bob.get(`${s.url}/oauth2/userinfo`)).status).toBe(200);
    const crossSite = await bob.request(`${s.url}/oauth2/sign_out`, {
      method: 'POST',
      body: new URLSearchParams({ rd: '/bye' }),
      headers: { origin: 'https://evil.example' },
    });
    expect(crossSite.status).toBe(403);
    expect((await bob.get(`${s.url}/oauth2/userinfo`)).status).toBe(200);
    const form = confirm.forms[0]!;
    expect(form.fields['rd']).toBe('/bye');
    const out = await bob.request(form.action, {
      method: 'POST',
      body: new URLSearchParams(form.fields),
      headers: { origin: s.url },
    });
    expect(out.status).toBe(303);
    expect(out.location).toBe(`${s.url}/bye`);
    expect((await bob.get(`${s.url}/oauth2/userinfo`)).status).toBe(401);
    expect(s.gitlab.control.requests({ path: '/oauth/revoke' }).length).toBeGreaterThan(0);
  });
});

describe('forward-auth: /oauth2/auth', () => {
  const trusting = { config: { reverseProxy: true } } satisfies StackOptions;

  it('answers 202 with X-Auth-Request-* (set_xauthrequest), 401 without a session', async () => {
    const s = await start({ config: { reverseProxy: true, setXAuthRequest: true } });
    expect((await script(`${s.url}/oauth2/auth`)).status).toBe(401);
    const bob = await s.signIn('bob');
    const ok = await bob.get(`${s.url}/oauth2/auth`);
    expect(ok.status).toBe(202);
    expect(ok.body).toBe('');
    expect(ok.headers.get('x-auth-request-user')).toBe('bob');
    expect(ok.headers.get('x-auth-request-email')).toBe('bob@acme.test');
    expect(ok.headers.get('x-auth-request-groups')).toBe('acme/platform,acme/platform/infra');
    expect(ok.headers.get('gap-auth')).toBe('bob@acme.test');
    expect(s.upstream.requests).toHaveLength(0);
  });

  it('decides per route on the X-Forwarded-Uri of a trusted proxy, and 403 for a signed-in user who is refused', async () => {
    const s = await start({
      config: { reverseProxy: true, routes: [{ prefix: '/admin', allow: ['user:alice'] }] },
    });
    const bob = await s.signIn('bob');
    const at = (uri: string) => bob.request(`${s.url}/oauth2/auth`, { headers: { 'x-forwarded-uri': uri } });
    expect((await at('/admin/x')).status).toBe(403);
    expect((await at('/admin%2Fx')).status).toBe(400);
    expect((await at('/other')).status).toBe(202);
  });

  it('ignores X-Forwarded-Uri unless reverse_proxy is on and the peer is trusted', async () => {
    const s = await start({
      config: {
        routes: [
          { prefix: '/', allow: ['user:alice'] },
          { prefix: '/open', allow: ['group:acme'] },
        ],
      },
    });
    const bob = await s.signIn('bob');
    // Untrusted: the path is unknown, so the root rule decides.
    expect(
      (await bob.request(`${s.url}/oauth2/auth`, { headers: { 'x-forwarded-uri': '/open' } })).status,
    ).toBe(403);
  });

  it("takes oauth2-proxy's query constraints and labgate rules in the same query", async () => {
    const s = await start(trusting);
    const bob = await s.signIn('bob');
    const ask = async (query: string) => (await bob.get(`${s.url}/oauth2/auth?${query}`)).status;
    expect(await ask('allowed_groups=acme/platform')).toBe(202);
    expect(await ask('allowed_groups=acme/marketing,partners')).toBe(403);
    expect(await ask('allowed_groups=partners&allowed_groups=acme/platform')).toBe(202);
    expect(await ask('allowed_emails=bob@acme.test')).toBe(202);
    expect(await ask('allowed_emails=alice@acme.test')).toBe(403);
    expect(await ask('allowed_email_domains=acme.test')).toBe(202);
    expect(await ask('allowed_email_domains=contractor.test')).toBe(403);
    expect(await ask('allow=project:acme/app>=reporter')).toBe(202);
    expect(await ask('allow=project:acme/app>=developer')).toBe(403);
    expect(await ask('allowed_groups=acme/platform&allow=project:acme/app>=developer')).toBe(403);
    expect(await ask('allow=nonsense:x')).toBe(400);
  });

  it('applies no skip rule without a trusted X-Forwarded-Uri: a negated rule cannot open everything', async () => {
    const s = await start({
      config: { skipRoutes: [{ method: null, negate: true, pattern: '^/private/' }] },
    });
    // Not trusted (reverse_proxy off): the path is unknown, so nothing is skipped.
    const answer = await script(`${s.url}/oauth2/auth`, {
      headers: { 'x-forwarded-uri': '/private/x', 'x-original-method': 'OPTIONS' },
    });
    expect(answer.status).toBe(401);
  });

  it('lets skip-auth routes through with 202 and no identity', async () => {
    const s = await start({
      config: { reverseProxy: true, skipRoutes: [{ method: null, negate: false, pattern: '^/public' }] },
    });
    const answer = await script(`${s.url}/oauth2/auth`, { headers: { 'x-forwarded-uri': '/public/a' } });
    expect(answer.status).toBe(202);
    expect(answer.headers.get('x-auth-request-user')).toBeNull();
  });
});

describe('GitLab access kept current', () => {
  it('a user removed from the group in GitLab loses access within the re-check interval', async () => {
    const clock = testClock();
    const s = await start({
      labgate: recheckingPlatform(clock),
    });
    const bob = await s.signIn('bob');
    expect((await bob.get(`${s.url}/work`)).status).toBe(200);
    s.gitlab.control.removeMembership({ user: 'bob', group: 'acme/platform' });
    // Within the interval the last decision stands; once it has passed, GitLab is asked again.
    clock.advance(30_000);
    expect((await bob.get(`${s.url}/work`)).status).toBe(200);
    clock.advance(31_000);
    const after = await bob.get(`${s.url}/work`);
    expect(after.status).toBe(302);
    expect((await bob.get(`${s.url}/oauth2/userinfo`)).status).toBe(401);
  });
});

describe('a GitLab under a sub-path', () => {
  it('signs in and proxies with GitLab at /gitlab', async () => {
    const s = await start({ emulator: { basePath: '/gitlab' } });
    expect(s.gitlab.url).toMatch(/\/gitlab$/);
    const alice = await s.signIn('alice');
    expect((await echo(await alice.get(`${s.url}/`))).headers['x-forwarded-user']).toBe('alice');
  });
});

describe('the signed identity assertion', () => {
  it('carries a short-lived JWT the upstream verifies against the gateway’s JWKS; clients cannot send their own', async () => {
    const t = await start({
      config: { assertion: { header: 'X-Labgate-Assertion', audience: 'http://upstream.test', ttl: 60 } },
    });
    const alice = await t.signIn('alice');
    const seen = await echo(
      await alice.request(`${t.url}/`, { headers: { 'x-labgate-assertion': 'forged' } }),
    );
    const jwt = seen.headers['x-labgate-assertion'] as string;
    expect(jwt).not.toBe('forged');
    const jwks = (await (await script(`${t.url}/oauth2/jwks.json`)).json()) as { keys: JsonWebKey[] };
    const { payload, protectedHeader } = await jwtVerify(jwt, createLocalJWKSet(jwks as never), {
      issuer: t.url,
      audience: 'http://upstream.test',
    });
    expect(protectedHeader.alg).toBe('EdDSA');
    expect(payload['preferred_username']).toBe('alice');
    expect(payload.exp! - payload.iat!).toBe(60);
    expect(createPublicKey({ key: jwks.keys[0] as never, format: 'jwk' }).asymmetricKeyType).toBe('ed25519');
  });
});

describe('operations', () => {
  it('serves Prometheus metrics on their own address', async () => {
    const s = await start({ config: { metricsAddress: { host: '127.0.0.1', port: 0 } } });
    const bob = await s.signIn('bob');
    await bob.get(`${s.url}/x`);
    await script(`${s.url}/y`);
    const text = await (await fetch(s.gateway.metricsUrl!)).text();
    expect(text).toContain('labgate_gateway_requests_total{outcome="proxied"} 1');
    expect(text).toContain('labgate_gateway_requests_total{outcome="unauthenticated"} 1');
    expect(text).toContain('labgate_gateway_signins_total 1');
    expect(text).toMatch(/labgate_gateway_upstream_seconds_count 1\n/);
    expect((await script(`${s.url}/metrics`)).status).toBe(401);
  });

  it('logs JSON lines with no token, secret or cookie', async () => {
    const s = await start({ config: { passAccessToken: true } });
    const bob = await s.signIn('bob');
    await bob.get(`${s.url}/x`);
    expect(s.logs.length).toBeGreaterThan(0);
    for (const line of s.logs) expect(() => JSON.parse(line)).not.toThrow();
    const text = s.logs.join('');
    const cookie = bob.jar.header(s.url);
    expect(cookie).not.toBe('');
    expect(text).not.toContain(cookie.split('=')[1]!);
    expect(text).not.toContain(s.gitlab.applications[0]!.secret);
    expect(text).not.toContain(String(s.config.labgate.secret));
  });

  it('finishes an in-flight request on shutdown and refuses new connections', async () => {
    const s = await start();
    const bob = await s.signIn('bob');
    const cookie = bob.jar.header(s.url);
    const download = fetch(`${s.url}/stream?mb=16`, { headers: { cookie } }).then(async (r) => ({
      status: r.status,
      bytes: (await r.arrayBuffer()).byteLength,
    }));
    await s.upstream.arrival('/stream');
    const closing = s.gateway.close();
    expect(await download).toEqual({ status: 200, bytes: 16 * 1024 * 1024 });
    await closing;
    await expect(fetch(`${s.url}/x`)).rejects.toThrow();
  });
});
