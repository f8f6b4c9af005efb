/**
 * Server sessions, the default: the cookie holds `id.secret`, the store keeps the session with only a
 * SHA-256 hash of the secret, compared in constant time; the sliding expiry is written at most once per
 * touch interval (docs/security.md, SESSION-1 to SESSION-4).
 */
import { randomToken, sha256, timingSafeEqual } from './crypto.js';
import { BaseSessions, type Session, type SessionState, stateOf } from './sessions.js';
import type { SessionRecord, SessionUser, TokenSet } from './store.js';

/** Sessions kept in the store. */
export class ServerSessions extends BaseSessions {
  async create(
    user: SessionUser,
    tokens: TokenSet,
    userId: string,
  ): Promise<{ state: SessionState; setCookie: string }> {
    const now = this.options.now();
    const id = randomToken(16);
    const sealedTokens = await this.seal(tokens, id);
    const session: Session = {
      id,
      userId,
      user,
      createdAt: now,
      expiresAt: now + this.options.sessionMaxAge * 1000,
    };
    const idleExpiresAt = Math.min(session.expiresAt, now + this.options.sessionIdleTimeout * 1000);
    const secret = randomToken(32);
    const record: SessionRecord = {
      id,
      secretHash: await sha256(secret),
      userId,
      identity: `${user.issuer} ${user.sub}`,
      user,
      tokens: sealedTokens,
      createdAt: session.createdAt,
      expiresAt: session.expiresAt,
      idleExpiresAt,
    };
    await this.guard(() => this.store.setSession(record));
    return {
      state: { session, tokens: sealedTokens, idleExpiresAt },
      setCookie: this.cookie(`${id}.${secret}`, this.options.sessionMaxAge),
    };
  }

  protected async open(value: string, now: number): Promise<SessionState | null> {
    const dot = value.indexOf('.');
    if (dot <= 0) return null;
    const id = value.slice(0, dot);
    const secret = value.slice(dot + 1);
    if (!/^[A-Za-z0-9_-]{16,64}$/.test(id) || !/^[A-Za-z0-9_-]{32,128}$/.test(secret)) return null;
    const record = await this.guard(() => this.store.getSession(id));
    if (!record) return null;
    if (!timingSafeEqual(await sha256(secret), record.secretHash)) return null;
    if (record.expiresAt <= now || record.idleExpiresAt <= now) return null;
    const state = stateOf(record);
    const lastTouch = record.idleExpiresAt - this.options.sessionIdleTimeout * 1000;
    if (now - lastTouch >= this.options.touchInterval * 1000) {
      state.idleExpiresAt = Math.min(record.expiresAt, now + this.options.sessionIdleTimeout * 1000);
      await this.guard(() => this.store.touchSession(id, state.idleExpiresAt));
    }
    return state;
  }

  async byId(id: string): Promise<SessionState | null> {
    const record = await this.guard(() => this.store.getSession(id));
    const now = this.options.now();
    if (!record || record.expiresAt <= now || record.idleExpiresAt <= now) return null;
    return this.withAccess(stateOf(record));
  }

  async updateTokens(state: SessionState, tokens: TokenSet): Promise<void> {
    state.tokens = await this.seal(tokens, state.session.id);
    const record = await this.guard(() => this.store.getSession(state.session.id));
    if (record) await this.guard(() => this.store.setSession({ ...record, tokens: state.tokens }));
  }

  async reload(state: SessionState): Promise<boolean> {
    const record = await this.guard(() => this.store.getSession(state.session.id));
    if (!record) return false;
    state.tokens = record.tokens;
    return true;
  }

  protected listed(current: SessionState): Promise<SessionRecord[]> {
    return this.guard(() => this.store.listSessions(current.session.userId));
  }

  async tokensOfUser(current: SessionState): Promise<SessionState[]> {
    return (await this.listed(current)).map(stateOf);
  }

  async ofUser(userId: string): Promise<SessionState[]> {
    const records = await this.guard(() => this.store.listSessions(userId));
    return Promise.all(records.map((record) => this.withAccess(stateOf(record))));
  }

  async endOne(current: SessionState, id: string): Promise<boolean> {
    if (id === current.session.id) {
      await this.end(current);
      return true;
    }
    const record = await this.guard(() => this.store.getSession(id));
    if (!record || record.userId !== current.session.userId) return false;
    this.forget(id);
    await this.guard(() => this.store.deleteSession(id));
    return true;
  }

  protected async endAllOf(userId: string): Promise<void> {
    await this.guard(() => this.store.deleteUserSessions(userId));
  }

  protected async endOf(state: SessionState): Promise<void> {
    await this.guard(() => this.store.deleteSession(state.session.id));
  }
}
