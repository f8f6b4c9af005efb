/**
 * Contestant 3: express-session (MemoryStore) + passport with the passport-gitlab2 strategy
 * configured, users (de)serialised by id. The session is created by a bench-only route that calls
 * `req.login(user)` once (no GitLab round trip: the OAuth dance is not what is measured).
 *
 * With SESSION_REDIS_URL the sessions live in Redis through connect-redis (the usual multi-instance
 * setup) instead of express-session's MemoryStore.
 *
 * env: GITLAB_URL, GITLAB_CLIENT_ID, GITLAB_CLIENT_SECRET, SESSION_SECRET, SESSION_REDIS_URL.
 */
import express from 'express';
import session from 'express-session';
import passport from 'passport';
import { Strategy as GitLabStrategy } from 'passport-gitlab2';
import { ALICE, listen, publicUser, ready, unauthorized } from './common.mjs';

const { server, origin } = await listen();
const users = new Map([[ALICE.id, { ...ALICE }]]);

passport.use(
  new GitLabStrategy(
    {
      clientID: process.env.GITLAB_CLIENT_ID,
      clientSecret: process.env.GITLAB_CLIENT_SECRET,
      callbackURL: `${origin}/auth/gitlab/callback`,
      baseURL: process.env.GITLAB_URL,
    },
    (_accessToken, _refreshToken, profile, done) => done(null, users.get(Number(profile.id)) ?? false),
  ),
);
passport.serializeUser((user, done) => done(null, user.id));
passport.deserializeUser((id, done) => done(null, users.get(id) ?? false));

let store;
if (process.env.SESSION_REDIS_URL) {
  const { createClient } = await import('redis');
  const { RedisStore } = await import('connect-redis');
  const client = createClient({ url: process.env.SESSION_REDIS_URL });
  await client.connect();
  store = new RedisStore({ client, prefix: `lg_bench_sess_${process.pid}:` });
}

const app = express();
app.use(
  session({
    ...(store ? { store } : {}),
    secret: process.env.SESSION_SECRET,
    resave: false,
    saveUninitialized: false,
    cookie: { httpOnly: true, sameSite: 'lax', secure: false },
  }),
);
app.use(passport.session());
app.get('/auth/gitlab', passport.authenticate('gitlab'));
app.get('/auth/gitlab/callback', passport.authenticate('gitlab', { failureRedirect: '/' }), (_req, res) =>
  res.redirect('/me'),
);
// Bench only: signs Alice in without the OAuth round trip.
app.post('/bench/login', (req, res, next) => {
  req.login(users.get(ALICE.id), (error) => (error ? next(error) : res.json({ ok: true })));
});
app.get('/me', (req, res) => (req.user ? res.json(publicUser(req.user)) : unauthorized(res)));
server.on('request', app);
ready(server, { origin, cookieName: 'connect.sid' });
