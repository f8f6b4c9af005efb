/**
 * Sessions. Server mode (default): the cookie holds `id.secret`, the store keeps only a hash of the
 * secret, compared in constant time; the sliding expiry is written at most once per touch interval.
 * Cookie mode: the whole session (never group lists) sealed in the cookie, for apps without a store.
 *
 * Verified sessions are cached in this process for at most `sessionCacheTtl` seconds (≤ 5), so the
 * check on every request is nearly free; a session ended here leaves the cache at once, one ended by
 * another instance within that bound.
 */
import { clearCookie, readCookie, serializeCookie } from './cookies.js';
import { type KeyRing, randomToken, sha256, timingSafeEqual } from './crypto.js';
import { LabgateError } from './errors.js';
import type { ResolvedOptions } from './options.js';
import type { SessionRecord, SessionUser, Store, TokenSet } from './store.js';

/** A signed-in session, as the app sees it. */
export interface Session {
  /** Opaque session id (not the cookie value; safe to log). */
  id: string;
  /** The labgate user: stable across the GitLab accounts linked to it. */
  userId: string;
  user: SessionUser;
  /** Epoch milliseconds. */
  createdAt: number;
  /** Absolute end, epoch milliseconds. */
  expiresAt: number;
}

/** A session as listed to its user (never its tokens or secret). */
export interface SessionInfo {
  id: string;
  createdAt: number;
  expiresAt: number;
  /** The session of the request that asked. */
  current: boolean;
}

function info(session: { id: string; createdAt: number; expiresAt: number }, currentId: string): SessionInfo {
  return {
    id: session.id,
    createdAt: session.createdAt,
    expiresAt: session.expiresAt,
    current: session.id === currentId,
  };
}

/** What the core keeps beside a {@link Session}: its sealed tokens. */
export interface SessionState {
  session: Session;
  tokens: string;
  idleExpiresAt: number;
  /** The last access decision, shared by every instance through the store. */
  access?: AccessState;
}

/** When access was last checked against GitLab, and with what result. */
export interface AccessState {
  roles: string[];
  /** Epoch ms of the last check (successful or not). */
  checkedAt: number;
  /** Epoch ms of the last check that reached GitLab. */
  okAt: number;
}

interface CookieSession {
  v: 1;
  id: string;
  userId: string;
  user: SessionUser;
  tokens: string;
  createdAt: number;
  expiresAt: number;
}

const CACHE_LIMIT = 10_000;
const MAX_COOKIE_BYTES = 4000;

/** The session cookie's name: `__Host-labgate` on https (no Domain, Path=/, Secure), `labgate` on plain http. */
export function sessionCookieName(secure: boolean): string {
  return secure ? '__Host-labgate' : 'labgate';
}

/** The state of a stored session record. */
function stateOf(record: SessionRecord): SessionState {
  return {
    session: {
      id: record.id,
      userId: record.userId,
      user: record.user,
      createdAt: record.createdAt,
      expiresAt: record.expiresAt,
    },
    tokens: record.tokens,
    idleExpiresAt: record.idleExpiresAt,
  };
}

/** Creates, finds and ends sessions. */
export class Sessions {
  readonly #options: ResolvedOptions;
  readonly #store: Store;
  readonly #keys: () => Promise<KeyRing>;
  readonly #cache = new Map<string, { state: SessionState; until: number }>();
  readonly cookieName: string;

  constructor(options: ResolvedOptions, store: Store, keys: () => Promise<KeyRing>) {
    this.#options = options;
    this.#store = store;
    this.#keys = keys;
    this.cookieName = sessionCookieName(options.secure);
  }

  /** Starts a session (a brand-new id: sessions are never carried across sign-ins); returns its `Set-Cookie`. */
  async create(
    user: SessionUser,
    tokens: TokenSet,
    userId: string,
  ): Promise<{ state: SessionState; setCookie: string }> {
    const keys = await this.#keys();
    const now = this.#options.now();
    const id = randomToken(16);
    const sealedTokens = await keys.seal(JSON.stringify(tokens), 'token', id);
    const session: Session = {
      id,
      userId,
      user,
      createdAt: now,
      expiresAt: now + this.#options.sessionMaxAge * 1000,
    };
    const idleExpiresAt = Math.min(session.expiresAt, now + this.#options.sessionIdleTimeout * 1000);
    const maxAge = this.#options.sessionMaxAge;
    if (this.#options.sessionMode === 'cookie') {
      const payload: CookieSession = {
        v: 1,
        id,
        userId,
        user: { ...user, groups: [] },
        tokens: sealedTokens,
        createdAt: session.createdAt,
        expiresAt: session.expiresAt,
      };
      const value = await keys.seal(JSON.stringify(payload), 'session', this.cookieName);
      if (value.length + this.cookieName.length > MAX_COOKIE_BYTES) {
        throw new LabgateError(
          'store_unavailable',
          'the session does not fit in a cookie; use server sessions with a store',
        );
      }
      const state = {
        session: { ...session, user: payload.user },
        tokens: sealedTokens,
        idleExpiresAt: session.expiresAt,
      };
      return { state, setCookie: this.#cookie(value, maxAge) };
    }
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
    await this.#guard(() => this.#store.setSession(record));
    return {
      state: { session, tokens: sealedTokens, idleExpiresAt },
      setCookie: this.#cookie(`${id}.${secret}`, maxAge),
    };
  }

  #cookie(value: string, maxAge: number): string {
    return serializeCookie(this.cookieName, value, { secure: this.#options.secure, maxAge });
  }

  /** A `Set-Cookie` that removes the session cookie. */
  clearCookie(): string {
    return clearCookie(this.cookieName, { secure: this.#options.secure });
  }

  async #guard<T>(run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (error) {
      if (error instanceof LabgateError) throw error;
      throw new LabgateError(
        'store_unavailable',
        `the session store failed: ${(error as Error)?.message ?? error}`,
        {
          cause: error,
        },
      );
    }
  }

  /** Whether a `Cookie` header carries the session cookie at all, usable or not. */
  holdsCookie(header: string | null | undefined): boolean {
    return !!header?.includes(this.cookieName) && readCookie(header, this.cookieName) !== undefined;
  }

  /** The session cookie's value in a `Cookie` header, or null when there is none that can be used. */
  #cookieValue(header: string | null | undefined): string | null {
    if (!header?.includes(this.cookieName)) return null;
    // Sent twice (one tossed in by a sibling domain), the cookie is ambiguous: readCookie says null.
    const value = readCookie(header, this.cookieName);
    if (!value || value.length > MAX_COOKIE_BYTES) return null;
    return value;
  }

  /** The cached state of a cookie value while it is good; drops it otherwise. */
  #cached(value: string, now: number): SessionState | undefined {
    const cached = this.#cache.get(value);
    if (!cached) return undefined;
    if (cached.until > now && cached.state.session.expiresAt > now && cached.state.idleExpiresAt > now) {
      return cached.state;
    }
    this.#cache.delete(value);
    return undefined;
  }

  /**
   * What a `Cookie` header says without any I/O: null when it holds no usable session cookie, the state
   * when its session was verified less than `sessionCacheTtl` seconds ago, undefined when only
   * {@link fromCookieHeader} can tell. Lets adapters serve the common request synchronously.
   */
  fromCache(header: string | null | undefined): SessionState | null | undefined {
    const value = this.#cookieValue(header);
    return value === null ? null : this.#cached(value, this.#options.now());
  }

  /** The session of a `Cookie` header, or null. A malformed, forged or expired cookie is simply no session. */
  async fromCookieHeader(header: string | null | undefined): Promise<SessionState | null> {
    const value = this.#cookieValue(header);
    if (value === null) return null;
    const now = this.#options.now();
    const cached = this.#cached(value, now);
    if (cached) return cached;
    const state =
      this.#options.sessionMode === 'cookie'
        ? await this.#openCookie(value, now)
        : await this.#load(value, now);
    if (state) await this.#withAccess(state);
    if (state && this.#options.sessionCacheTtl > 0) {
      if (this.#cache.size >= CACHE_LIMIT) this.#cache.delete(this.#cache.keys().next().value!);
      this.#cache.set(value, { state, until: now + this.#options.sessionCacheTtl * 1000 });
    }
    return state;
  }

  async #openCookie(value: string, now: number): Promise<SessionState | null> {
    const keys = await this.#keys();
    const opened = await keys.open(value, 'session', this.cookieName);
    if (!opened) return null;
    let payload: CookieSession;
    try {
      payload = JSON.parse(opened.plaintext) as CookieSession;
    } catch {
      return null;
    }
    if (payload.v !== 1 || typeof payload.expiresAt !== 'number' || payload.expiresAt <= now) return null;
    // Sign-out must fail closed: a store that cannot answer is an error, not "not signed out".
    if ((await this.#guard(() => this.#store.get(`ended:${payload.id}`))) !== null) return null;
    const endedAll = await this.#guard(() => this.#store.get(`ended-user:${payload.userId}`));
    if (endedAll !== null && payload.createdAt <= Number(endedAll)) return null;
    // Tokens refreshed after the cookie was set live in the store (the cookie is not rewritten).
    const refreshed = await this.#guard(() => this.#store.get(`tokens:${payload.id}`));
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

  async #load(value: string, now: number): Promise<SessionState | null> {
    const dot = value.indexOf('.');
    if (dot <= 0) return null;
    const id = value.slice(0, dot);
    const secret = value.slice(dot + 1);
    if (!/^[A-Za-z0-9_-]{16,64}$/.test(id) || !/^[A-Za-z0-9_-]{32,128}$/.test(secret)) return null;
    const record = await this.#guard(() => this.#store.getSession(id));
    if (!record) return null;
    if (!timingSafeEqual(await sha256(secret), record.secretHash)) return null;
    if (record.expiresAt <= now || record.idleExpiresAt <= now) return null;
    let idleExpiresAt = record.idleExpiresAt;
    const lastTouch = idleExpiresAt - this.#options.sessionIdleTimeout * 1000;
    if (now - lastTouch >= this.#options.touchInterval * 1000) {
      idleExpiresAt = Math.min(record.expiresAt, now + this.#options.sessionIdleTimeout * 1000);
      await this.#guard(() => this.#store.touchSession(id, idleExpiresAt));
    }
    const session: Session = {
      id,
      userId: record.userId,
      user: record.user,
      createdAt: record.createdAt,
      expiresAt: record.expiresAt,
    };
    return { session, tokens: record.tokens, idleExpiresAt };
  }

  /**
   * A live session found by its id alone (a host that kept only the id), with its last access
   * decision; null when it has ended, and always in cookie mode, where only the cookie holds it.
   */
  async byId(id: string): Promise<SessionState | null> {
    if (this.#options.sessionMode === 'cookie') return null;
    const record = await this.#guard(() => this.#store.getSession(id));
    const now = this.#options.now();
    if (!record || record.expiresAt <= now || record.idleExpiresAt <= now) return null;
    return this.#withAccess(stateOf(record));
  }

  /** Adds the access decision every instance shares to a state just loaded. */
  async #withAccess(state: SessionState): Promise<SessionState> {
    const access = await this.#guard(() => this.#store.get(`access:${state.session.id}`));
    if (access !== null) {
      state.access = JSON.parse(access) as AccessState;
      state.session.user = { ...state.session.user, roles: state.access.roles };
    }
    return state;
  }

  /** Replaces a session's sealed tokens (after a refresh). */
  async updateTokens(state: SessionState, tokens: TokenSet): Promise<void> {
    const keys = await this.#keys();
    state.tokens = await keys.seal(JSON.stringify(tokens), 'token', state.session.id);
    if (this.#options.sessionMode === 'cookie') {
      const ttl = state.session.expiresAt - this.#options.now();
      if (ttl > 0) await this.#guard(() => this.#store.put(`tokens:${state.session.id}`, state.tokens, ttl));
    } else {
      const record = await this.#guard(() => this.#store.getSession(state.session.id));
      if (record) await this.#guard(() => this.#store.setSession({ ...record, tokens: state.tokens }));
    }
  }

  /**
   * Reads the session's tokens from the store again (another process may have refreshed them);
   * updates `state` in place. False when the session no longer exists.
   */
  async reload(state: SessionState): Promise<boolean> {
    if (this.#options.sessionMode === 'cookie') {
      const refreshed = await this.#guard(() => this.#store.get(`tokens:${state.session.id}`));
      if (refreshed !== null) state.tokens = refreshed;
      return (await this.#guard(() => this.#store.get(`ended:${state.session.id}`))) === null;
    }
    const record = await this.#guard(() => this.#store.getSession(state.session.id));
    if (!record) return false;
    state.tokens = record.tokens;
    return true;
  }

  /** Records an access decision for every instance to see. */
  async setAccess(state: SessionState, access: AccessState): Promise<void> {
    state.access = access;
    state.session.user = { ...state.session.user, roles: access.roles };
    const ttl = state.session.expiresAt - this.#options.now();
    if (ttl > 0)
      await this.#guard(() => this.#store.put(`access:${state.session.id}`, JSON.stringify(access), ttl));
  }

  // Opened token sets, per sealed value: a fresh token is then a lookup, not a decryption.
  readonly #opened = new WeakMap<SessionState, { sealed: string; tokens: TokenSet }>();

  /** Opens a session's tokens. */
  async tokens(state: SessionState): Promise<TokenSet> {
    const known = this.#opened.get(state);
    if (known && known.sealed === state.tokens) return known.tokens;
    const keys = await this.#keys();
    const opened = await keys.open(state.tokens, 'token', state.session.id);
    if (!opened) {
      throw new LabgateError(
        'session_required',
        'the session tokens cannot be opened with the configured secrets',
      );
    }
    const tokens = JSON.parse(opened.plaintext) as TokenSet;
    this.#opened.set(state, { sealed: state.tokens, tokens });
    return tokens;
  }

  /** The live sessions of a user (cookie mode keeps no records: only `current` is known). */
  async list(current: SessionState): Promise<SessionInfo[]> {
    if (this.#options.sessionMode === 'cookie') return [info(current.session, current.session.id)];
    const records = await this.#guard(() => this.#store.listSessions(current.session.userId));
    return records.map((r) => info(r, current.session.id));
  }

  /** The sealed tokens of each live session of a user, for revocation. */
  async tokensOfUser(current: SessionState): Promise<SessionState[]> {
    if (this.#options.sessionMode === 'cookie') return [current];
    const records = await this.#guard(() => this.#store.listSessions(current.session.userId));
    return records.map(stateOf);
  }

  /** The live sessions of a user, each with its last access decision (server mode). */
  async ofUser(userId: string): Promise<SessionState[]> {
    const records = await this.#guard(() => this.#store.listSessions(userId));
    return Promise.all(records.map((record) => this.#withAccess(stateOf(record))));
  }

  /** Ends one session of the same user; false when there is no such session of this user. */
  async endOne(current: SessionState, id: string): Promise<boolean> {
    if (id === current.session.id) {
      await this.end(current);
      return true;
    }
    if (this.#options.sessionMode === 'cookie') return false;
    const record = await this.#guard(() => this.#store.getSession(id));
    if (!record || record.userId !== current.session.userId) return false;
    this.#forget(id);
    await this.#guard(() => this.#store.deleteSession(id));
    return true;
  }

  /** Ends every session of the user ("sign out everywhere"); in cookie mode, every cookie issued until now. */
  async endAll(current: SessionState): Promise<void> {
    const { userId } = current.session;
    for (const [key, entry] of this.#cache)
      if (entry.state.session.userId === userId) this.#cache.delete(key);
    if (this.#options.sessionMode === 'cookie') {
      await this.#guard(() =>
        this.#store.put(
          `ended-user:${userId}`,
          String(this.#options.now()),
          this.#options.sessionMaxAge * 1000,
        ),
      );
      return;
    }
    await this.#guard(() => this.#store.deleteUserSessions(userId));
  }

  #forget(id: string): void {
    for (const [key, entry] of this.#cache) if (entry.state.session.id === id) this.#cache.delete(key);
  }

  /** Ends a session everywhere: the store record (or, in cookie mode, a tombstone until it would expire). */
  async end(state: SessionState): Promise<void> {
    for (const [key, entry] of this.#cache)
      if (entry.state.session.id === state.session.id) this.#cache.delete(key);
    if (this.#options.sessionMode === 'cookie') {
      const ttl = state.session.expiresAt - this.#options.now();
      if (ttl > 0) await this.#guard(() => this.#store.put(`ended:${state.session.id}`, '1', ttl));
      return;
    }
    await this.#guard(() => this.#store.deleteSession(state.session.id));
  }
}
