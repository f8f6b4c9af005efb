/**
 * WebSockets through the gateway (docs/security.md, GATEWAY-11): an upgrade is authenticated and its
 * `Origin` checked before the upstream hears of it, never on the gateway's own endpoints, and the tunnel
 * closes (with a close frame) when the session ends — signed out here, re-checked away, or at shutdown.
 */
import { describe, expect, it } from 'vitest';
import { type GatewayStack, recheckingPlatform, stackPerTest, testClock } from './harness.js';
import { connectWebSocket } from './upstream.js';

const start = stackPerTest();

const port = (s: GatewayStack) => Number(new URL(s.url).port);

describe('WebSocket upgrades', () => {
  it('tunnel for a signed-in user from an allowed origin, with the identity headers and without labgate’s cookie', async () => {
    const s = await start();
    const bob = await s.signIn('bob');
    const ws = await connectWebSocket(port(s), '/ws/chat', {
      origin: s.url,
      cookie: bob.jar.header(s.url),
      'X-Forwarded-User': 'root',
    });
    expect(ws.status).toBe(101);
    ws.send('hello');
    expect(await ws.next()).toBe('hello');
    const upgrade = s.upstream.requests.find((r) => r.url === '/ws/chat')!;
    expect(upgrade.headers['x-forwarded-user']).toBe('bob');
    expect(String(upgrade.headers.cookie ?? '')).not.toMatch(/(^|; )labgate=/);
    ws.socket.destroy();
  });

  it('are refused before the upstream hears of them: no session, a foreign origin, the gateway’s endpoints', async () => {
    const s = await start();
    const bob = await s.signIn('bob');
    const cookie = bob.jar.header(s.url);
    expect((await connectWebSocket(port(s), '/ws/chat', { origin: s.url })).status).toBe(401);
    expect(
      (await connectWebSocket(port(s), '/ws/chat', { origin: 'https://evil.example', cookie })).status,
    ).toBe(403);
    expect((await connectWebSocket(port(s), '/ws/chat', { cookie })).status).toBe(403);
    expect((await connectWebSocket(port(s), '/oauth2/auth', { origin: s.url, cookie })).status).toBe(400);
    expect(
      s.upstream.requests.filter((r) => r.url.startsWith('/ws') || r.url.startsWith('/oauth2')),
    ).toHaveLength(0);
  });

  it('are refused with 403 for a signed-in user the route’s rule refuses', async () => {
    const s = await start({ config: { routes: [{ prefix: '/ws', allow: ['user:alice'] }] } });
    const bob = await s.signIn('bob');
    expect(
      (await connectWebSocket(port(s), '/ws/chat', { origin: s.url, cookie: bob.jar.header(s.url) })).status,
    ).toBe(403);
  });

  it('close with a close frame when the session is signed out', async () => {
    const s = await start();
    const bob = await s.signIn('bob');
    const ws = await connectWebSocket(port(s), '/ws/chat', { origin: s.url, cookie: bob.jar.header(s.url) });
    expect(ws.status).toBe(101);
    const page = await bob.get(`${s.url}/oauth2/sign_out`);
    await bob.request(page.forms[0]!.action, {
      method: 'POST',
      body: new URLSearchParams(page.forms[0]!.fields),
      headers: { origin: s.url },
    });
    expect(await ws.next()).toBeNull();
    await ws.closed;
  });

  it('close when a re-check finds the user removed in GitLab', async () => {
    const clock = testClock();
    const s = await start({
      labgate: recheckingPlatform(clock),
    });
    const bob = await s.signIn('bob');
    const ws = await connectWebSocket(port(s), '/ws/chat', { origin: s.url, cookie: bob.jar.header(s.url) });
    expect(ws.status).toBe(101);
    s.gitlab.control.removeMembership({ user: 'bob', group: 'acme/platform' });
    clock.advance(61_000);
    // The gateway's watch re-checks open tunnels' sessions every few seconds.
    expect(await ws.next()).toBeNull();
    await ws.closed;
  });

  it('close with 1001 at shutdown', async () => {
    const s = await start();
    const bob = await s.signIn('bob');
    const ws = await connectWebSocket(port(s), '/ws/chat', { origin: s.url, cookie: bob.jar.header(s.url) });
    const frames: Buffer[] = [];
    ws.socket.on('data', (chunk: Buffer) => frames.push(chunk));
    await s.gateway.close();
    await ws.closed;
    expect(Buffer.concat(frames).includes(Buffer.from([0x88, 0x02, 0x03, 0xe9]))).toBe(true);
  });
});
