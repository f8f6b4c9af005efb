/**
 * What every adapter puts on a request (`req.labgate`, `request.labgate`, `c.var.labgate`): the user,
 * the session and its GitLab token, written once for every host.
 */
import type { Labgate } from './labgate.js';
import type { Session } from './sessions.js';
import type { SessionUser } from './store.js';

/** labgate's part of a request, as a host's handlers see it. */
export interface LabgateContext {
  /** The signed-in user, or null. */
  user: SessionUser | null;
  /** The session, or null. */
  session: Session | null;
  /** The user's GitLab access token (refreshed when about to expire). Rejects without a session. */
  accessToken(): Promise<string>;
  /** The labgate instance. */
  labgate: Labgate;
}

/** A {@link LabgateContext}: a class, not an object literal with a closure — one small allocation a request. */
export class RequestContext implements LabgateContext {
  readonly user: SessionUser | null;
  constructor(
    readonly labgate: Labgate,
    readonly session: Session | null,
  ) {
    this.user = session === null ? null : session.user;
  }

  accessToken(): Promise<string> {
    return this.session
      ? this.labgate.getAccessToken(this.session)
      : Promise.reject(new TypeError('labgate: no signed-in user on this request'));
  }
}
