/**
 * The store interface labgate keeps its state in, and the in-memory store of the core.
 *
 * It is small on purpose: single-use values with expiry, taken atomically (sign-in transactions,
 * replay guards, locks), and session records. Every store (memory, SQLite, PostgreSQL, Redis) passes
 * the same conformance suite.
 */

/** The signed-in user, normalised from the ID token, userinfo and `/api/v4/user`. */
export interface SessionUser {
  /** OIDC subject: GitLab's numeric user id, as a string. With `issuer`, the identity key. */
  sub: string;
  /** The GitLab instance (OIDC issuer) the user signed in with. */
  issuer: string;
  /** GitLab's numeric user id. */
  id: number;
  username: string;
  name: string;
  /** The email GitLab released: primary with the `email` scope, else the public email; may be null. */
  email: string | null;
  /** True only when GitLab says the email is verified. Never link accounts on an unverified email. */
  emailVerified: boolean;
  avatarUrl: string | null;
  /** The user's GitLab profile page. */
  webUrl: string | null;
  /** Account creation (ISO 8601), when the scopes allow reading it (`read_user`). */
  createdAt: string | null;
  /** The sign-in before this one (ISO 8601), when the scopes allow reading it. */
  lastSignInAt: string | null;
  /** `active`, `blocked`, …, when the scopes allow reading it. */
  state: string | null;
  bot: boolean | null;
  external: boolean | null;
  twoFactorEnabled: boolean | null;
  /** Full paths of the user's groups (direct and their subgroups), from userinfo. Never put in a cookie. */
  groups: string[];
  /** Roles granted by the access policy's role mapping (`roles: { admin: 'group:acme>=maintainer' }`). */
  roles: string[];
}

/** The GitLab tokens of a session, stored sealed. */
export interface TokenSet {
  accessToken: string;
  refreshToken: string | null;
  /** Epoch milliseconds. */
  expiresAt: number;
  scope: string;
}

/** A GitLab account (`issuer`, `sub`) linked to a labgate user, with the profile last seen. */
export interface IdentityRecord {
  issuer: string;
  sub: string;
  /** The labgate user this GitLab account belongs to. */
  userId: string;
  profile: SessionUser;
  /** Epoch milliseconds of the last sign-in with this account. */
  updatedAt: number;
}

/** A server-side session. Only a hash of the cookie's secret is kept. */
export interface SessionRecord {
  id: string;
  /** SHA-256 (base64url) of the secret half of the cookie. */
  secretHash: string;
  /** The labgate user (one user may have linked several GitLab accounts). */
  userId: string;
  /** The GitLab account signed in with: `issuer` + ' ' + `sub`. */
  identity: string;
  user: SessionUser;
  /** {@link TokenSet} sealed with the key ring (purpose `token`). */
  tokens: string;
  /** Epoch milliseconds. */
  createdAt: number;
  /** Absolute end of the session, epoch milliseconds. */
  expiresAt: number;
  /** Sliding end: moved forward on use, at most once per touch interval. */
  idleExpiresAt: number;
}

/**
 * Where labgate keeps state. Every method may reject when the backing service is down; labgate then
 * answers 503 with `store_unavailable`.
 */
export interface Store {
  /** Stores a value that expires after `ttlMs`, replacing any value under the key. */
  put(key: string, value: string, ttlMs: number): Promise<void>;
  /** Stores a value only when the key is absent (or expired); true when this call stored it. */
  add(key: string, value: string, ttlMs: number): Promise<boolean>;
  /** Returns and deletes a value in one atomic step: of concurrent takers, exactly one gets it. */
  take(key: string): Promise<string | null>;
  /** Reads a value without consuming it. */
  get(key: string): Promise<string | null>;
  /** Deletes a value. */
  delete(key: string): Promise<void>;

  /** Creates or replaces a session. */
  setSession(record: SessionRecord): Promise<void>;
  /** A session that has not expired, or null. */
  getSession(id: string): Promise<SessionRecord | null>;
  /** Moves a session's sliding expiry. */
  touchSession(id: string, idleExpiresAt: number): Promise<void>;
  /** Deletes a session. */
  deleteSession(id: string): Promise<void>;
  /** The live sessions of a user. */
  listSessions(userId: string): Promise<SessionRecord[]>;
  /** Ends every session of a user; returns how many there were. */
  deleteUserSessions(userId: string): Promise<number>;

  /**
   * Records a sign-in with a GitLab account and returns the labgate user it belongs to: the user the
   * account is already linked to; else `linkTo` (link a further account to a signed-in user); else a
   * new user with id `newUserId`. The profile snapshot is replaced. Accounts are never linked by email.
   */
  upsertIdentity(
    identity: Omit<IdentityRecord, 'userId'>,
    options: { linkTo?: string; newUserId: string },
  ): Promise<string>;
  /** The GitLab accounts linked to a user. */
  listIdentities(userId: string): Promise<IdentityRecord[]>;

  /** Releases connections. */
  close?(): Promise<void>;
}

interface Entry {
  value: string;
  expiresAt: number;
}

/**
 * A {@link Store} in this process's memory: fast, for one process and for tests; everything is lost
 * on restart. Expired entries are swept as they are met and on a bounded sweep per write.
 *
 * @example
 * ```ts
 * const labgate = createLabgate({ ...options, store: new MemoryStore() });
 * ```
 */
export class MemoryStore implements Store {
  readonly #values = new Map<string, Entry>();
  readonly #sessions = new Map<string, SessionRecord>();
  readonly #identities = new Map<string, IdentityRecord>();
  readonly #now: () => number;

  constructor(options: { now?: () => number } = {}) {
    this.#now = options.now ?? Date.now;
  }

  #live(key: string): Entry | undefined {
    const entry = this.#values.get(key);
    if (entry && entry.expiresAt <= this.#now()) {
      this.#values.delete(key);
      return undefined;
    }
    return entry;
  }

  #sweep(): void {
    // Sweep a bounded number of entries per write so memory stays bounded without timers.
    let budget = 16;
    const now = this.#now();
    for (const [key, entry] of this.#values) {
      if (budget-- === 0) break;
      if (entry.expiresAt <= now) this.#values.delete(key);
    }
    budget = 16;
    for (const [id, record] of this.#sessions) {
      if (budget-- === 0) break;
      if (Math.min(record.expiresAt, record.idleExpiresAt) <= now) this.#sessions.delete(id);
    }
  }

  async put(key: string, value: string, ttlMs: number): Promise<void> {
    this.#sweep();
    this.#values.set(key, { value, expiresAt: this.#now() + ttlMs });
  }

  async add(key: string, value: string, ttlMs: number): Promise<boolean> {
    if (this.#live(key)) return false;
    await this.put(key, value, ttlMs);
    return true;
  }

  async take(key: string): Promise<string | null> {
    const entry = this.#live(key);
    if (!entry) return null;
    this.#values.delete(key);
    return entry.value;
  }

  async get(key: string): Promise<string | null> {
    return this.#live(key)?.value ?? null;
  }

  async delete(key: string): Promise<void> {
    this.#values.delete(key);
  }

  async setSession(record: SessionRecord): Promise<void> {
    this.#sweep();
    this.#sessions.set(record.id, structuredClone(record));
  }

  async getSession(id: string): Promise<SessionRecord | null> {
    const record = this.#liveSession(id);
    return record ? structuredClone(record) : null;
  }

  #liveSession(id: string): SessionRecord | undefined {
    const record = this.#sessions.get(id);
    if (record && Math.min(record.expiresAt, record.idleExpiresAt) <= this.#now()) {
      this.#sessions.delete(id);
      return undefined;
    }
    return record;
  }

  async touchSession(id: string, idleExpiresAt: number): Promise<void> {
    // Only a live session slides: touching one that has ended must not bring it back.
    const record = this.#liveSession(id);
    if (record) record.idleExpiresAt = idleExpiresAt;
  }

  async deleteSession(id: string): Promise<void> {
    this.#sessions.delete(id);
  }

  async listSessions(userId: string): Promise<SessionRecord[]> {
    const now = this.#now();
    return [...this.#sessions.values()]
      .filter((r) => r.userId === userId && Math.min(r.expiresAt, r.idleExpiresAt) > now)
      .sort((a, b) => a.createdAt - b.createdAt)
      .map((r) => structuredClone(r));
  }

  async deleteUserSessions(userId: string): Promise<number> {
    // Counts the sessions this call ended; ones that had already expired are removed but not counted.
    const now = this.#now();
    let count = 0;
    for (const [id, record] of this.#sessions) {
      if (record.userId !== userId) continue;
      this.#sessions.delete(id);
      if (Math.min(record.expiresAt, record.idleExpiresAt) > now) count++;
    }
    return count;
  }

  async upsertIdentity(
    identity: Omit<IdentityRecord, 'userId'>,
    options: { linkTo?: string; newUserId: string },
  ): Promise<string> {
    const key = `${identity.issuer} ${identity.sub}`;
    const existing = this.#identities.get(key);
    const userId = existing?.userId ?? options.linkTo ?? options.newUserId;
    this.#identities.set(key, structuredClone({ ...identity, userId }));
    return userId;
  }

  async listIdentities(userId: string): Promise<IdentityRecord[]> {
    return [...this.#identities.values()].filter((i) => i.userId === userId).map((i) => structuredClone(i));
  }
}
