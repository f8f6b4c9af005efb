/**
 * Contestant 2: labgate/express, imported from the built package (dist/) as users get it.
 * Server sessions in a MemoryStore; the session cookie is obtained by signing in through the GitLab
 * emulator (bench/me.mjs does the browser part against this server's real routes).
 *
 * env: GITLAB_URL, GITLAB_CLIENT_ID, GITLAB_CLIENT_SECRET, LABGATE_SECRET; LABGATE_DIST to load
 * another build of dist/ instead of the package (bench/me.mjs --candidate DIR); BENCH_MOUNT=prefix
 * mounts labgate at its prefix only and gives the guard the instance (`requireUser(auth)`), instead
 * of `app.use(labgate(auth))` for every request; BENCH_MOUNT=process|lookup|lookup-handler are the
 * parts of the prefix form (bench/me.mjs --labgate-parts).
 */
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import express from 'express';
import { ALICE, labgateOptions, listen, publicUser, ready, unauthorized } from './common.mjs';

const dist = process.env.LABGATE_DIST;
const from = (path) => pathToFileURL(join(dist, path)).href;
const { createLabgate, MemoryStore } = await import(dist ? from('core/index.js') : 'labgate');
const { labgate, requireUser } = await import(dist ? from('adapters/express.js') : 'labgate/express');
const { openStore } = await import(dist ? from('stores/index.js') : 'labgate/stores');

const { server, origin } = await listen();
const auth = createLabgate({
  ...labgateOptions(origin),
  scopes: 'openid profile email read_user',
  // LABGATE_STORE (sqlite:…, postgres://…, redis://…) for the per-store runs; memory otherwise.
  store: process.env.LABGATE_STORE ? await openStore(process.env.LABGATE_STORE) : new MemoryStore(),
});
const app = express();
const mount = process.env.BENCH_MOUNT;
/** The session of a request (cached, or from the store), as labgate's guards find it. */
const lookUp = (req, then) => {
  const found = auth.sessionOf(req.headers.cookie);
  if (found instanceof Promise) found.then(then);
  else then(found);
};
// api: true: a request without a session gets 401 JSON whatever its Accept header (wrk sends none).
if (mount === 'process' || mount === 'lookup' || mount === 'lookup-handler') {
  // bench/me.mjs --labgate-parts: the prefix form taken apart, in the same signed-in process.
  app.use(auth.options.prefix, labgate(auth));
  if (mount === 'process')
    app.get(
      '/me',
      (req, res, next) => (req.headers.cookie ? next() : unauthorized(res)),
      (_req, res) => res.json(ALICE),
    );
  else if (mount === 'lookup')
    app.get(
      '/me',
      (req, res, next) => lookUp(req, (session) => (session ? next() : unauthorized(res))),
      (_req, res) => res.json(ALICE),
    );
  else
    app.get('/me', (req, res) =>
      lookUp(req, (session) => (session ? res.json(publicUser(session.user)) : unauthorized(res))),
    );
} else if (mount === 'prefix') {
  app.use(auth.options.prefix, labgate(auth));
  app.get('/me', requireUser(auth, { api: true }), (req, res) => res.json(publicUser(req.labgate.user)));
} else {
  app.use(labgate(auth));
  app.get('/me', requireUser({ api: true }), (req, res) => res.json(publicUser(req.labgate.user)));
}
server.on('request', app);
ready(server, { origin, cookieName: 'labgate' });
