/**
 * bench/hosts.mjs: labgate/node from the built package, as examples/node/app.ts is written:
 * `createNodeListener` around `auth.handle`, `auth.getSession` and a core guard (`auth.guard`),
 * answering `LightResponse.json`; server sessions in a MemoryStore.
 */
import { createLabgate, MemoryStore } from 'labgate';
import { createNodeListener, LightResponse } from 'labgate/node';
import { labgateOptions, listen, publicUser, ready } from '../common.mjs';

const { server, origin } = await listen();
const auth = createLabgate({ ...labgateOptions(origin), store: new MemoryStore() });
const signedIn = auth.guard({ api: true });
server.on(
  'request',
  createNodeListener(
    async (request) => {
      const own = await auth.handle(request);
      if (own) return own;
      const url = new URL(request.url);
      if (url.pathname !== '/me') return null;
      const session = await auth.getSession(request);
      const refused = await signedIn.check({
        method: request.method,
        target: `${url.pathname}${url.search}`,
        accept: request.headers.get('accept'),
        secFetchMode: request.headers.get('sec-fetch-mode'),
        session,
      });
      if (refused) return refused;
      return LightResponse.json(publicUser(session.user));
    },
    { origin: auth.options.origin },
  ),
);
ready(server, { origin, cookieName: 'labgate' });
