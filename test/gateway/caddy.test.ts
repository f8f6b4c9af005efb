/**
 * The gateway behind a real Caddy with oauth2-proxy's documented `forward_auth` configuration
 * (test/gateway/configs/Caddyfile, `copy_headers` on): sign-in through Caddy and back, the identity
 * headers Caddy copies to the upstream, client-sent identity headers, per-route rules (docs/gateway.md,
 * "Forward-auth"; docs/security.md, GATEWAY-5, GATEWAY-7).
 */
import { expect, it } from 'vitest';
import { describeWithService } from '../support/services.js';
import { caddyBinary, echoOf, edgePerTest, signInRoundTrip, startCaddy } from './edge.js';

const start = edgePerTest(startCaddy);
const echo = echoOf;

describeWithService(caddyBinary, 'Caddy forward_auth in front of the gateway', () => {
  it('sends a signed-out navigation to the sign-in page and, signed in there, back to the URL with its query', async () => {
    const e = await start();
    const seen = await signInRoundTrip(e);
    // Copied from the gateway's 202 by copy_headers.
    expect(seen.headers['x-auth-request-user']).toBe('bob');
    expect(seen.headers['x-auth-request-email']).toBe('bob@acme.test');
  });

  it('takes the copied identity from the gateway only; what else a client sends, Caddy passes on', async () => {
    const e = await start();
    const bob = await e.signIn('bob');
    const seen = echo(
      await bob.request(`${e.url}/page`, {
        headers: {
          'X-Auth-Request-User': 'root',
          'X-Auth-Request-Email': 'root@evil.example',
          'X-Auth-Request-Groups': 'acme',
          'X-Forwarded-User': 'root',
          X_Forwarded_User: 'root',
        },
      }),
    );
    // copy_headers replaces the client's copies of the headers it names.
    expect(seen.headers['x-auth-request-user']).toBe('bob');
    expect(seen.headers['x-auth-request-email']).toBe('bob@acme.test');
    // The documented configuration strips nothing else: an upstream behind it must read only the
    // copied headers (docs/security.md, GATEWAY-9); the session cookie reaches it too, as the gateway
    // only removes it in proxy mode (GATEWAY-4).
    expect(seen.headers['x-auth-request-groups']).toBe('acme');
    expect(seen.headers['x-forwarded-user']).toBe('root');
    expect(seen.headers['x_forwarded_user']).toBe('root');
    expect(String(seen.headers['cookie'])).toMatch(/(^|; )labgate=/);
  });

  it('answers 403 for a signed-in user a route rule refuses, deciding on the X-Forwarded-Uri Caddy sends', async () => {
    const e = await start({ config: { routes: [{ prefix: '/admin', allow: ['user:alice'] }] } });
    const bob = await e.signIn('bob');
    expect((await bob.get(`${e.url}/admin/users?page=2`)).status).toBe(403);
    // The client's own X-Forwarded-Uri is replaced by Caddy's `{uri}`.
    expect(
      (await bob.request(`${e.url}/admin/users`, { headers: { 'X-Forwarded-Uri': '/elsewhere' } })).status,
    ).toBe(403);
    expect(e.stack.upstream.requests).toHaveLength(0);
    expect(echo(await bob.get(`${e.url}/elsewhere`)).url).toBe('/elsewhere');
    const alice = await e.signIn('alice');
    expect(echo(await alice.get(`${e.url}/admin/users?page=2`)).headers['x-auth-request-user']).toBe('alice');
  });
});
