/**
 * Optional contestant (bench/me.mjs --shape): bare Express with the same shape as the labgate app
 * but no authentication: an `app.use` middleware that puts a fixed user on `req` when the request
 * has a Cookie header, and a guard handler before `/me`. It tells how much of the gap to the anchor
 * is Express's own cost of one more middleware and one more route handler.
 *
 * env: SHAPE_ASYNC=1 calls next() from a promise continuation, as a middleware that awaits does;
 * SHAPE_PARTS=use keeps only the `app.use` middleware (the handler checks `req.user`), SHAPE_PARTS=guard
 * only the guard (it reads the Cookie header itself): what each of the two costs on its own.
 * SHAPE_PARTS=bare-guard: a guard that reads the Cookie header and sets nothing (one more route handler);
 * property: no guard, the handler adds `req.user` (one property added to an Express request);
 * locals: the same in `res.locals.user`; weakmap: in a WeakMap keyed by the request (where labgate
 * keeps its context).
 * SHAPE_PARTS=mounted: the bare guard, behind a middleware mounted at `/auth` that answers there (as
 * labgate's prefix form is mounted); bench/me.mjs sends one such server (shapeMountedUsed) the two
 * requests of a sign-in before the load and the other (shapeMounted) none: what an Express app that
 * has answered other routes pays at `/me`.
 * SHAPE_LOAD=labgate: the same app in a process that has loaded labgate, made an instance and
 * discovered GitLab, with nothing of labgate on the request path: what the process alone costs.
 * SHAPE_LOAD=import only imports labgate's modules; SHAPE_LOAD=fetch only fetches GitLab's discovery
 * document with Node's fetch (no labgate): the two halves of it.
 */
import express from 'express';
import { ALICE, labgateOptions, listen, ready, unauthorized } from './common.mjs';

const { server, origin } = await listen();
if (process.env.SHAPE_LOAD === 'labgate') {
  // The process of a labgate app without labgate on the request path: its modules loaded, an instance
  // made and GitLab discovered over fetch (as at a sign-in), kept alive as an app keeps it.
  const { createLabgate } = await import('labgate');
  await import('labgate/express');
  await import('labgate/stores');
  const auth = createLabgate(labgateOptions(origin));
  await auth.ready();
  globalThis.labgate = auth;
} else if (process.env.SHAPE_LOAD === 'import') {
  globalThis.labgate = [
    await import('labgate'),
    await import('labgate/express'),
    await import('labgate/stores'),
  ];
} else if (process.env.SHAPE_LOAD === 'fetch') {
  const discovery = await fetch(new URL('.well-known/openid-configuration', `${process.env.GITLAB_URL}/`));
  if (!discovery.ok) throw new Error(`GitLab's discovery document answered ${discovery.status}`);
  globalThis.discovery = await discovery.json();
}
const app = express();
const userOf = (req) => (req.headers.cookie ? ALICE : null);
const parts = process.env.SHAPE_PARTS ?? 'use+guard';
if (parts === 'mounted') {
  app.use('/auth', (req, res, next) => {
    if (req.url.startsWith('/login')) res.redirect(302, '/auth/callback');
    else if (req.url.startsWith('/callback')) res.redirect(303, '/me');
    else next();
  });
}
if (parts === 'bare-guard' || parts === 'mounted') {
  app.get(
    '/me',
    (req, res, next) => (req.headers.cookie ? next() : unauthorized(res)),
    (_req, res) => res.json(ALICE),
  );
} else if (parts === 'property') {
  app.get('/me', (req, res) => {
    req.user = userOf(req);
    return req.user ? res.json(req.user) : unauthorized(res);
  });
} else if (parts === 'weakmap') {
  const users = new WeakMap();
  app.get('/me', (req, res) => {
    users.set(req, userOf(req));
    const user = users.get(req);
    return user ? res.json(user) : unauthorized(res);
  });
} else if (parts === 'locals') {
  app.get('/me', (req, res) => {
    res.locals.user = userOf(req);
    return res.locals.user ? res.json(res.locals.user) : unauthorized(res);
  });
} else if (parts === 'guard') {
  app.get(
    '/me',
    (req, res, next) => {
      req.user = userOf(req);
      return req.user ? next() : unauthorized(res);
    },
    (req, res) => res.json(req.user),
  );
} else if (parts === 'use') {
  app.use((req, _res, next) => {
    req.user = userOf(req);
    next();
  });
  app.get('/me', (req, res) => (req.user ? res.json(req.user) : unauthorized(res)));
} else if (process.env.SHAPE_ASYNC === '1') {
  app.use((req, _res, next) => {
    Promise.resolve(userOf(req)).then((user) => {
      req.user = user;
      next();
    });
  });
} else {
  app.use((req, _res, next) => {
    req.user = userOf(req);
    next();
  });
}
if (parts === 'use+guard') {
  app.get(
    '/me',
    (req, res, next) => (req.user ? next() : unauthorized(res)),
    (req, res) => res.json(req.user),
  );
}
server.on('request', app);
ready(server, { origin });
