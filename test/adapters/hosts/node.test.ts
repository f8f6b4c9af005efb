/**
 * The behaviour every host shares (test/adapters/suite.ts), on plain node:http with labgate/node: the
 * app's own fetch handler calls `handle`, `getSession` and a core guard, as the README shows.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createNodeListener } from '../../../src/adapters/node.js';
import { hostBehaviour, labgateFor } from '../suite.js';

hostBehaviour({
  name: 'node:http',
  async start(config) {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const auth = labgateFor(config, origin);
    const signedIn = auth.guard();
    const admins = auth.guard({ role: 'admin' });
    const maintainers = auth.guard({ access: 'project:acme/app>=maintainer' });
    const listener = createNodeListener(
      async (request) => {
        const own = await auth.handle(request);
        if (own) return own;
        const url = new URL(request.url);
        let session: Awaited<ReturnType<typeof auth.getSession>>;
        try {
          session = await auth.getSession(request);
        } catch (error) {
          return auth.errorResponse(error, request);
        }
        const guardRequest = {
          method: request.method,
          target: `${url.pathname}${url.search}`,
          accept: request.headers.get('accept'),
          secFetchMode: request.headers.get('sec-fetch-mode'),
          session,
        };
        switch (url.pathname) {
          case '/public':
            return new Response(`public ${session?.user.username ?? 'anonymous'}`);
          case '/me':
            return (
              (await signedIn.check(guardRequest)) ?? Response.json({ username: session!.user.username })
            );
          case '/admin':
            return (await admins.check(guardRequest)) ?? new Response(`admin ${session!.user.username}`);
          case '/maintain':
            return (await maintainers.check(guardRequest)) ?? new Response('maintain');
          case '/token':
            return (
              (await signedIn.check(guardRequest)) ??
              Response.json({ length: (await auth.getAccessToken(session!.id)).length })
            );
          default:
            return null;
        }
      },
      { origin },
    );
    server.on('request', listener);
    return { origin, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
  },
});
