/**
 * `GET /auth/callback`, the one owner of a sign-in's end: the protocol's checks (src/core/signin.ts),
 * the access decision, the user the account belongs to (never linked by a cookie that happens to be
 * there: docs/security.md, SESSION-7), a brand-new session, and the answer — a redirect to where the
 * sign-in began, or the error page with the transaction cookie cleared.
 */
import { randomToken } from './crypto.js';
import { isLabgateError, LabgateError } from './errors.js';
import { logText } from './log.js';
import { errorAnswer, PAGE_HEADERS } from './pages.js';
import type { AccessChecks } from './recheck.js';
import type { Runtime } from './runtime.js';
import { completeSignIn } from './signin.js';
import type { Tokens } from './tokens.js';

/** The callback route of an instance. */
export function createCallback(
  rt: Runtime,
  checks: AccessChecks,
  tokens: Tokens,
): (request: Request) => Promise<Response> {
  const { options, store, sessions, events } = rt;
  const { logger, prefix } = options;

  return async (request) => {
    const headers = new Headers(PAGE_HEADERS);
    try {
      const done = await completeSignIn(rt, request, (cookie) => headers.append('set-cookie', cookie));
      const decision = await checks.atSignIn(done.user, done.tokens);
      done.user.roles = decision.roles;
      const current = await sessions.fromCookieHeader(request.headers.get('cookie')).catch(() => null);
      // The session is always the account's that just signed in: a cookie that happens to be there
      // links nothing. Only a link its user asked for (POST /auth/link) on this very session does.
      let linkTo: string | undefined;
      if (done.link !== null) {
        if (!options.accountLinking || current?.session.id !== done.link) {
          await tokens.revokeQuietly(done.tokens);
          throw new LabgateError('transaction_invalid', 'the account link was asked for by another session');
        }
        linkTo = current.session.userId;
      }
      const who = `${logText(done.user.username, 64)} (${done.user.issuer} ${logText(done.user.sub, 64)})`;
      const userId = await rt.storeCall(() =>
        store.upsertIdentity(
          { issuer: done.user.issuer, sub: done.user.sub, profile: done.user, updatedAt: options.now() },
          { newUserId: randomToken(16), ...(linkTo === undefined ? {} : { linkTo }) },
        ),
      );
      if (linkTo !== undefined) {
        if (userId !== linkTo) {
          await tokens.revokeQuietly(done.tokens);
          throw new LabgateError('access_forbidden', 'the GitLab account belongs to another user', {
            detail: 'This GitLab account is already linked to another user, so it cannot be linked to yours.',
          });
        }
        logger.info(`labgate: ${who} linked to user ${userId}`);
      }
      // The browser's previous session is ended when it was the same user's (a new sign-in rotates
      // it); another user's session is not this sign-in's to end.
      if (current && current.session.userId === userId) await sessions.end(current);
      const { setCookie, state } = await sessions.create(done.user, done.tokens, userId);
      const now = options.now();
      await sessions.setAccess(state, { roles: decision.roles, checkedAt: now, okAt: now });
      await rt.storeCall(() =>
        store.put(`identity-user:${done.user.issuer} ${done.user.sub}`, userId, options.sessionMaxAge * 1000),
      );
      headers.append('set-cookie', setCookie);
      headers.set('location', done.returnTo);
      logger.info(`labgate: ${who} signed in, session ${state.session.id}`);
      events.emit('session.created', {
        sessionId: state.session.id,
        userId,
        issuer: done.user.issuer,
        sub: done.user.sub,
        username: done.user.username,
      });
      return new Response(null, { status: 303, headers });
    } catch (error) {
      const response = errorAnswer(
        error,
        { accept: request.headers.get('accept'), route: `${prefix}/callback` },
        options,
      );
      events.emit('signin.failed', {
        code: isLabgateError(error) ? error.code : 'gitlab_error',
        reference: response.headers.get('x-labgate-reference') ?? '',
      });
      for (const cookie of headers.getSetCookie()) response.headers.append('set-cookie', cookie);
      return response;
    }
  };
}
