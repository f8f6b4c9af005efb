/**
 * Optional contestant (bench/me.mjs --shape): bare Express with the same shape as the labgate app
 * but no authentication: an `app.use` middleware that puts a fixed user on `req` when the request
 * has a Cookie header, and a guard handler before `/me`. It tells how much of the gap to the anchor
 * is Express's own cost of one more middleware and one more route handler.
 *
 * env: SHAPE_ASYNC=1 calls next() from a promise continuation, as a middleware that awaits does.
 */
import express from 'express';
import { ALICE, listen, ready, unauthorized } from './common.mjs';

const { server, origin } = await listen();
const app = express();
const userOf = (req) => (req.headers.cookie ? ALICE : null);
if (process.env.SHAPE_ASYNC === '1') {
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
app.get(
  '/me',
  (req, res, next) => (req.user ? next() : unauthorized(res)),
  (req, res) => res.json(req.user),
);
server.on('request', app);
ready(server, { origin });
