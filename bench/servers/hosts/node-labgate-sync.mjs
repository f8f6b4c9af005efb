/**
 * bench/hosts.mjs --only node-sync: labgate/node as node-labgate.mjs, with a handler that stays
 * synchronous while the session is known without I/O: `routeOf` before `auth.handle`,
 * `auth.sessionOf` instead of `auth.getSession`, the guard's answer awaited only when it is a promise.
 * createNodeListener then writes the response in the same turn, as a bare server does.
 */
import { createLabgate, MemoryStore, routeOf } from 'labgate';
import { createNodeListener, LightResponse } from 'labgate/node';
import { labgateOptions, listen, publicUser, ready } from '../common.mjs';

const { server, origin } = await listen();
const auth = createLabgate({ ...labgateOptions(origin), store: new MemoryStore() });
const { prefix } = auth.options;
const signedIn = auth.guard({ api: true });

/** The guard's answer, or the user's JSON; a promise only when the guard needs I/O. */
function answer(request, target, session) {
  const refused = signedIn.check({
    method: request.method,
    target,
    accept: request.headers.get('accept'),
    secFetchMode: request.headers.get('sec-fetch-mode'),
    session,
  });
  const respond = (refusal) => refusal ?? LightResponse.json(publicUser(session.user));
  return refused instanceof Promise ? refused.then(respond) : respond(refused);
}

server.on(
  'request',
  createNodeListener(
    (request) => {
      // The lazy Request's URL is the listener's origin and the request target.
      const target = request.url.slice(auth.options.origin.length);
      if (routeOf(target, prefix) !== null) return auth.handle(request);
      if (target !== '/me') return null;
      const session = auth.sessionOf(request.headers.get('cookie'));
      return session instanceof Promise
        ? session.then((known) => answer(request, target, known))
        : answer(request, target, session);
    },
    { origin: auth.options.origin },
  ),
);
ready(server, { origin, cookieName: 'labgate' });
