/**
 * Cookie sessions (`sessionMode: 'cookie'`), for apps without a store of their own: the whole session
 * (never group lists) sealed in the cookie. What a cookie cannot carry lives in the store (the memory
 * store is enough for one process): tokens refreshed after the cookie was set, and the tombstones of
 * sessions signed out, which make sign-out hold (docs/security.md, SESSION-6).
 */

import { randomToken } from './crypto.js';
import { LabgateError } from './errors.js';
import { BaseSessions, MAX_COOKIE_BYTES, type Session, type SessionState } from './sessions.js';
import type { SessionUser, TokenSet } from './store.js';

/** What the cookie holds, sealed. */
interface CookieSession {
  v: 1;
  id: string;
  userId: string;
  user: SessionUser;
  tokens: string;
  createdAt: number;
  expiresAt: number;
}

/** Sessions sealed in their cookie. */
export class CookieSessions extends BaseSessions {
  async create(
    user: SessionUser,
    tokens: TokenSet,
    userId: string,
  ): Promise<{ state: SessionState; setCookie: string }> {
    const now = this.options.now();
    const id = randomToken(16);
    const payload: CookieSession = {
      v: 1,
      id,
      userId,
      user: { ...user, groups: [] },
      tokens: await this.seal(tokens, id),
      createdAt: now,
      expiresAt: now + this.options.sessionMaxAge * 1000,
    };
    const value = await (await this.keys()).seal(JSON.stringify(payload), 'session', this.cookieName);
    if (value.length + this.cookieName.length > MAX_COOKIE_BYTES) {
      throw new LabgateError(
        'store_unavailable',
        'the session does not fit in a cookie; use server sessions with a store',
      );
    }
    const session: Session = { id, userId, user: payload.user, createdAt: now, expiresAt: payload.expiresAt };
    return {
      state: { session, tokens: payload.tokens, idleExpiresAt: payload.expiresAt },
      setCookie: this.cookie(value, this.options.sessionMaxAge),
    };
  }

  protected async open(value: string, now: number): Promise<SessionState | null> {
    const opened = await (await this.keys()).open(value, 'session', this.cookieName);
    if (!opened) return null;
    let payload: CookieSession;
    try {
      payload = JSON.parse(opened.plaintext) as CookieSession;
    } catch {
      return null;
    }
    if (payload.v !== 1 || typeof payload.expiresAt !== 'number' || payload.expiresAt <= now) return null;
    // Sign-out must fail closed: a store that cannot answer is an error, not "not signed out".
    if ((await this.guard(() => this.store.get(`ended:${payload.id}`))) !== null) return null;
    const endedAll = await this.guard(() => this.store.get(`ended-user:${payload.userId}`));
    if (endedAll !== null && payload.createdAt <= Number(endedAll)) return null;
    // Tokens refreshed after the cookie was set live in the store (the cookie is not rewritten).
    const refreshed = await this.guard(() => this.store.get(`tokens:${payload.id}`));
    if (refreshed !== null) payload.tokens = refreshed;
    const session: Session = {
      id: payload.id,
      userId: payload.userId,
      user: payload.user,
      createdAt: payload.createdAt,
      expiresAt: payload.expiresAt,
    };
    return { session, tokens: payload.tokens, idleExpiresAt: payload.expiresAt };
  }

  /** Only the cookie holds a cookie session: a session id alone finds nothing. */
  async byId(): Promise<SessionState | null> {
    return null;
  }

  async updateTokens(state: SessionState, tokens: TokenSet): Promise<void> {
    state.tokens = await this.seal(tokens, state.session.id);
    const ttl = state.session.expiresAt - this.options.now();
    if (ttl > 0) await this.guard(() => this.store.put(`tokens:${state.session.id}`, state.tokens, ttl));
  }

  async reload(state: SessionState): Promise<boolean> {
    const refreshed = await this.guard(() => this.store.get(`tokens:${state.session.id}`));
    if (refreshed !== null) state.tokens = refreshed;
    return (await this.guard(() => this.store.get(`ended:${state.session.id}`))) === null;
  }

  /** Cookie sessions keep no list: only the current one is known. */
  protected async listed(current: SessionState): Promise<Session[]> {
    return [current.session];
  }

  async tokensOfUser(current: SessionState): Promise<SessionState[]> {
    return [current];
  }

  async ofUser(): Promise<SessionState[]> {
    return [];
  }

  async endOne(current: SessionState, id: string): Promise<boolean> {
    if (id !== current.session.id) return false;
    await this.end(current);
    return true;
  }

  protected async endAllOf(userId: string): Promise<void> {
    // Every cookie of the user issued until now stops opening.
    await this.guard(() =>
      this.store.put(`ended-user:${userId}`, String(this.options.now()), this.options.sessionMaxAge * 1000),
    );
  }

  protected async endOf(state: SessionState): Promise<void> {
    const ttl = state.session.expiresAt - this.options.now();
    if (ttl > 0) await this.guard(() => this.store.put(`ended:${state.session.id}`, '1', ttl));
  }
}
