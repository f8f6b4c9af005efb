/**
 * The gateway behind a real nginx with oauth2-proxy's documented `auth_request` configuration
 * (test/gateway/configs/nginx.conf): sign-in through nginx and back, the identity nginx hands the upstream,
 * client-sent identity headers, per-route rules, a user removed in GitLab, sign-out (docs/gateway.md,
 * "Forward-auth"; docs/security.md, GATEWAY-5, GATEWAY-7, GATEWAY-14).
 */
import { expect, it } from 'vitest';
import { describeWithService } from '../support/services.js';
import { echoOf, edgePerTest, nginxBinary, signInRoundTrip, startNginx } from './edge.js';
import { recheckingPlatform, testClock } from './harness.js';

const start = edgePerTest(startNginx);
const echo = echoOf;

describeWithService(nginxBinary, 'nginx auth_request in front of the gateway', () => {
  it('sends a signed-out navigation to the sign-in page and, signed in there, back to the URL with its query', async () => {
    const e = await start();
    const seen = await signInRoundTrip(e);
    // From the auth subrequest's X-Auth-Request-User and -Email (auth_request_set).
    expect(seen.headers['x-user']).toBe('bob');
    expect(seen.headers['x-email']).toBe('bob@acme.test');
  });

  it('takes the identity from the gateway only; what else a client sends, nginx passes on', async () => {
    const e = await start();
    const bob = await e.signIn('bob');
    const seen = echo(
      await bob.request(`${e.url}/page`, {
        headers: {
          'X-User': 'root',
          'X-Email': 'root@evil.example',
          'X-Auth-Request-User': 'root',
          'X-Forwarded-User': 'root',
          X_Forwarded_User: 'root',
        },
      }),
    );
    // proxy_set_header replaces the client's X-User and X-Email with the gateway's answer, and the
    // client's X-Auth-Request-User never stands in for the gateway's (the auth response's own header).
    expect(seen.headers['x-user']).toBe('bob');
    expect(seen.headers['x-email']).toBe('bob@acme.test');
    // The documented configuration strips nothing else: an upstream behind it must read only X-User
    // and X-Email (docs/security.md, GATEWAY-9). nginx drops names with `_` itself
    // (ignore_invalid_headers), and the session cookie reaches the upstream, as the gateway only
    // removes it in proxy mode (GATEWAY-4).
    expect(seen.headers['x-auth-request-user']).toBe('root');
    expect(seen.headers['x-forwarded-user']).toBe('root');
    expect(Object.keys(seen.headers).filter((name) => name.includes('_'))).toEqual([]);
    expect(String(seen.headers['cookie'])).toMatch(/(^|; )labgate=/);
  });

  it('answers 403 for a signed-in user a route rule refuses, deciding on the X-Forwarded-Uri nginx sends', async () => {
    const e = await start({ config: { routes: [{ prefix: '/admin', allow: ['user:alice'] }] } });
    const bob = await e.signIn('bob');
    const refused = await bob.get(`${e.url}/admin/users?page=2`);
    expect(refused.status).toBe(403);
    // The client's own X-Forwarded-Uri is replaced by nginx's `$request_uri`.
    expect(
      (await bob.request(`${e.url}/admin/users`, { headers: { 'X-Forwarded-Uri': '/elsewhere' } })).status,
    ).toBe(403);
    expect(e.stack.upstream.requests).toHaveLength(0);
    expect(echo(await bob.get(`${e.url}/elsewhere`)).url).toBe('/elsewhere');
    const alice = await e.signIn('alice');
    expect(echo(await alice.get(`${e.url}/admin/users?page=2`)).headers['x-user']).toBe('alice');
  });

  it('sends a user removed from the group in GitLab back to sign in once the re-check interval has passed', async () => {
    const clock = testClock();
    const e = await start({
      labgate: recheckingPlatform(clock),
    });
    const bob = await e.signIn('bob');
    expect((await bob.get(`${e.url}/work`)).status).toBe(200);
    e.stack.gitlab.control.removeMembership({ user: 'bob', group: 'acme/platform' });
    clock.advance(30_000);
    expect((await bob.get(`${e.url}/work`)).status).toBe(200);
    clock.advance(31_000);
    const after = await bob.get(`${e.url}/work`);
    expect(after.status).toBe(302);
    expect(after.location).toBe(`${e.url}/oauth2/sign_in?rd=${e.url}/work`);
    expect((await bob.get(`${e.url}/oauth2/userinfo`)).status).toBe(401);
  });

  it('signs out through nginx: asks first, then a same-site POST ends the session and follows rd', async () => {
    const e = await start();
    const bob = await e.signIn('bob');
    const confirm = await bob.get(`${e.url}/oauth2/sign_out?rd=%2Fbye`);
    expect(confirm.status).toBe(200);
    const form = confirm.forms[0]!;
    expect(form.action).toBe(`${e.url}/oauth2/sign_out`);
    const out = await bob.request(form.action, {
      method: 'POST',
      body: new URLSearchParams(form.fields),
      headers: { origin: e.url },
    });
    expect(out.status).toBe(303);
    expect(out.location).toBe(`${e.url}/bye`);
    expect((await bob.get(`${e.url}/oauth2/userinfo`)).status).toBe(401);
    expect((await bob.get(`${e.url}/work`)).status).toBe(302);
    expect(e.stack.gitlab.control.requests({ path: '/oauth/revoke' }).length).toBeGreaterThan(0);
  });
});
