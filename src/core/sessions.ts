/**
 * Sessions: what both strategies share, and the interface the rest of labgate uses. Two strategies
 * implement it: server sessions (the default: the cookie holds `id.secret`, the store a hash of the
 * secret; src/core/server-sessions.ts) and cookie sessions (the whole session sealed in the cookie,
 * for apps without a store; src/core/cookie-sessions.ts).
 *
 * Verified sessions are cached in this process for at most `sessionCacheTtl` seconds (≤ 5), so the
 * check on every request is nearly free; a session ended here leaves the cache at once, one ended by
 * another instance within that bound.
 */
import { clearCookie, readCookie, serializeCookie } from './cookies.js';
import type { KeyRing } from './crypto.js';
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

/** Creates, finds and ends sessions: one interface, two strategies. */
export interface Sessions {
  readonly cookieName: string;
  /** Starts a session (a brand-new id: sessions are never carried across sign-ins); returns its `Set-Cookie`. */
  create(
    user: SessionUser,
    tokens: TokenSet,
    userId: string,
  ): Promise<{ state: SessionState; setCookie: string }>;
  /** A `Set-Cookie` that removes the session cookie. */
  clearCookie(): string;
  /** Whether a `Cookie` header carries the session cookie at all, usable or not. */
  holdsCookie(header: string | null | undefined): boolean;
  /**
   * What a `Cookie` header says without any I/O: null when it holds no usable session cookie, the state
   * when its session was verified less than `sessionCacheTtl` seconds ago, undefined when only
   * {@link fromCookieHeader} can tell.
   */
  fromCache(header: string | null | undefined): SessionState | null | undefined;
  /** The session of a `Cookie` header, or null. A malformed, forged or expired cookie is simply no session. */
  fromCookieHeader(header: string | null | undefined): Promise<SessionState | null>;
  /** A live session found by its id alone (a host that kept only the id); null when it cannot be found. */
  byId(id: string): Promise<SessionState | null>;
  /** Opens a session's tokens. */
  tokens(state: SessionState): Promise<TokenSet>;
  /** Replaces a session's sealed tokens (after a refresh). */
  updateTokens(state: SessionState, tokens: TokenSet): Promise<void>;
  /** Reads the session's tokens again (another process may have refreshed them); false once it has ended. */
  reload(state: SessionState): Promise<boolean>;
  /** Records an access decision for every instance to see. */
  setAccess(state: SessionState, access: AccessState): Promise<void>;
  /** The live sessions of the session's user. */
  list(current: SessionState): Promise<SessionInfo[]>;
  /** The states of each live session of the user, for revocation. */
  tokensOfUser(current: SessionState): Promise<SessionState[]>;
  /** The live sessions of a user by id, each with its last access decision (none in cookie mode). */
  ofUser(userId: string): Promise<SessionState[]>;
  /** Ends one session of the same user; false when there is no such session of this user. */
  endOne(current: SessionState, id: string): Promise<boolean>;
  /** Ends every session of the user ("sign out everywhere"). */
  endAll(current: SessionState): Promise<void>;
  /** Ends a session everywhere. */
  end(state: SessionState): Promise<void>;
}

const CACHE_LIMIT = 10_000;
/** The largest session cookie value read or written. */
export const MAX_COOKIE_BYTES = 4000;

function info(session: { id: string; createdAt: number; expiresAt: number }, currentId: string): SessionInfo {
  return {
    id: session.id,
    createdAt: session.createdAt,
    expiresAt: session.expiresAt,
    current: session.id === currentId,
  };
}

/** The state of a stored session record. */
export function stateOf(record: SessionRecord): SessionState {
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

/** What both strategies share: the cookie, the cache, the tokens, the access decisions. */
export abstract class BaseSessions implements Sessions {
  protected readonly options: ResolvedOptions;
  protected readonly store: Store;
  protected readonly keys: () => Promise<KeyRing>;
  readonly #cache = new Map<string, { state: SessionState; until: number }>();
  readonly cookieName: string;

  constructor(options: ResolvedOptions, store: Store, keys: () => Promise<KeyRing>) {
    this.options = options;
    this.store = store;
    this.keys = keys;
    this.cookieName = options.cookieName;
  }

  abstract create(
    user: SessionUser,
    tokens: TokenSet,
    userId: string,
  ): Promise<{ state: SessionState; setCookie: string }>;
  /** The state of a usable cookie value, verified (without its access decision), or null. */
  protected abstract open(value: string, now: number): Promise<SessionState | null>;
  abstract byId(id: string): Promise<SessionState | null>;
  abstract updateTokens(state: SessionState, tokens: TokenSet): Promise<void>;
  abstract reload(state: SessionState): Promise<boolean>;
  abstract tokensOfUser(current: SessionState): Promise<SessionState[]>;
  abstract ofUser(userId: string): Promise<SessionState[]>;
  abstract endOne(current: SessionState, id: string): Promise<boolean>;
  /** Ends every session of a user where they are kept. */
  protected abstract endAllOf(userId: string): Promise<void>;
  /** Ends one session where it is kept. */
  protected abstract endOf(state: SessionState): Promise<void>;
  /** The records of a user's live sessions to list; cookie sessions keep none. */
  protected abstract listed(
    current: SessionState,
  ): Promise<{ id: string; createdAt: number; expiresAt: number }[]>;

  protected cookie(value: string, maxAge: number): string {
    return serializeCookie(this.cookieName, value, { secure: this.options.secure, maxAge });
  }

  clearCookie(): string {
    return clearCookie(this.cookieName, { secure: this.options.secure });
  }

  /** Runs a store call; any failure becomes `store_unavailable`. */
  protected async guard<T>(run: () => Promise<T>): Promise<T> {
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

  fromCache(header: string | null | undefined): SessionState | null | undefined {
    const value = this.#cookieValue(header);
    return value === null ? null : this.#cached(value, this.options.now());
  }

  async fromCookieHeader(header: string | null | undefined): Promise<SessionState | null> {
    const value = this.#cookieValue(header);
    if (value === null) return null;
    const now = this.options.now();
    const cached = this.#cached(value, now);
    if (cached) return cached;
    const state = await this.open(value, now);
    if (!state) return null;
    await this.withAccess(state);
    if (this.options.sessionCacheTtl > 0) {
      if (this.#cache.size >= CACHE_LIMIT) this.#cache.delete(this.#cache.keys().next().value!);
      this.#cache.set(value, { state, until: now + this.options.sessionCacheTtl * 1000 });
    }
    return state;
  }

  /** Adds the access decision every instance shares to a state just loaded. */
  protected async withAccess(state: SessionState): Promise<SessionState> {
    const access = await this.guard(() => this.store.get(`access:${state.session.id}`));
    if (access !== null) {
      state.access = JSON.parse(access) as AccessState;
      state.session.user = { ...state.session.user, roles: state.access.roles };
    }
    return state;
  }

  async setAccess(state: SessionState, access: AccessState): Promise<void> {
    state.access = access;
    state.session.user = { ...state.session.user, roles: access.roles };
    const ttl = state.session.expiresAt - this.options.now();
    if (ttl > 0)
      await this.guard(() => this.store.put(`access:${state.session.id}`, JSON.stringify(access), ttl));
  }

  // Opened token sets, per sealed value: a fresh token is then a lookup, not a decryption.
  readonly #opened = new WeakMap<SessionState, { sealed: string; tokens: TokenSet }>();

  async tokens(state: SessionState): Promise<TokenSet> {
    const known = this.#opened.get(state);
    if (known && known.sealed === state.tokens) return known.tokens;
    const keys = await this.keys();
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

  /** Seals a token set for a session. */
  protected async seal(tokens: TokenSet, id: string): Promise<string> {
    return (await this.keys()).seal(JSON.stringify(tokens), 'token', id);
  }

  async list(current: SessionState): Promise<SessionInfo[]> {
    return (await this.listed(current)).map((s) => info(s, current.session.id));
  }

  async endAll(current: SessionState): Promise<void> {
    const { userId } = current.session;
    for (const [key, entry] of this.#cache)
      if (entry.state.session.userId === userId) this.#cache.delete(key);
    await this.endAllOf(userId);
  }

  /** Drops a session from this process's cache. */
  protected forget(id: string): void {
    for (const [key, entry] of this.#cache) if (entry.state.session.id === id) this.#cache.delete(key);
  }

  async end(state: SessionState): Promise<void> {
    this.forget(state.session.id);
    await this.endOf(state);
  }
}
