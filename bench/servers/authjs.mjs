/**
 * Contestant 4: Auth.js for Express (@auth/express) with its default JWT sessions and the GitLab
 * provider configured. bench/me.mjs mints the session cookie with `@auth/core/jwt`'s `encode`
 * (salt = cookie name, secret = AUTH_SECRET); `/me` calls `getSession(req, config)`.
 *
 * env: GITLAB_URL, GITLAB_CLIENT_ID, GITLAB_CLIENT_SECRET, AUTH_SECRET.
 */
import { ExpressAuth, getSession } from '@auth/express';
import GitLab from '@auth/express/providers/gitlab';
import express from 'express';
import { listen, ready, unauthorized } from './common.mjs';

const { server, origin } = await listen();
const config = {
  secret: process.env.AUTH_SECRET,
  trustHost: true,
  session: { strategy: 'jwt' },
  providers: [
    GitLab({
      clientId: process.env.GITLAB_CLIENT_ID,
      clientSecret: process.env.GITLAB_CLIENT_SECRET,
      authorization: `${process.env.GITLAB_URL}/oauth/authorize?scope=read_user`,
      token: `${process.env.GITLAB_URL}/oauth/token`,
      userinfo: `${process.env.GITLAB_URL}/api/v4/user`,
    }),
  ],
  callbacks: {
    jwt: ({ token }) => token,
    session: ({ session, token }) => ({
      ...session,
      user: { id: token.id, username: token.username, name: token.name, email: token.email },
    }),
  },
};

const app = express();
app.set('trust proxy', false);
app.use('/auth/*splat', ExpressAuth(config));
app.get('/me', async (req, res, next) => {
  try {
    const current = await getSession(req, config);
    if (!current?.user) return unauthorized(res);
    res.json(current.user);
  } catch (error) {
    next(error);
  }
});
server.on('request', app);
ready(server, { origin, cookieName: 'authjs.session-token' });
