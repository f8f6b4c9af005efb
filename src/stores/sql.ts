/**
 * The SQL store shared by SQLite and PostgreSQL: one schema, versioned migrations applied at start
 * under a lock (so several processes may start at once), and every {@link Store} operation as one
 * statement, atomic on its own (`DELETE … RETURNING` for take, `INSERT … ON CONFLICT` for add).
 */
import type { IdentityRecord, SessionRecord, SessionUser, Store } from '../core/store.js';

/** One row as a driver returns it. */
export type Row = Record<string, unknown>;

/** What a SQL driver provides to {@link SqlStore}. Statements use `?` placeholders. */
export interface SqlExecutor {
  /** Runs a statement and returns its rows (SELECT, or … RETURNING). */
  all(sql: string, params: readonly unknown[]): Promise<Row[]>;
  /** Runs a statement and returns the number of rows it changed. */
  run(sql: string, params: readonly unknown[]): Promise<number>;
  /** Runs `fn` in one transaction; with `lock`, first takes the cross-process migration lock. */
  transaction<T>(fn: (tx: SqlExecutor) => Promise<T>, options?: { lock?: boolean }): Promise<T>;
  close(): Promise<void>;
  /** `BIGINT`-style integer type name for epoch milliseconds. */
  readonly bigint: string;
}

/** The schema, one entry per version; never edit an applied entry, add a new one. */
export function migrations(bigint: string): string[][] {
  return [
    [
      `CREATE TABLE labgate_kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at ${bigint} NOT NULL)`,
      'CREATE INDEX labgate_kv_expires ON labgate_kv (expires_at)',
      `CREATE TABLE labgate_users (id TEXT PRIMARY KEY, created_at ${bigint} NOT NULL)`,
      `CREATE TABLE labgate_identities (
        issuer TEXT NOT NULL,
        sub TEXT NOT NULL,
        user_id TEXT NOT NULL REFERENCES labgate_users (id) ON DELETE CASCADE,
        profile TEXT NOT NULL,
        updated_at ${bigint} NOT NULL,
        PRIMARY KEY (issuer, sub)
      )`,
      'CREATE INDEX labgate_identities_user ON labgate_identities (user_id)',
      `CREATE TABLE labgate_sessions (
        id TEXT PRIMARY KEY,
        secret_hash TEXT NOT NULL,
        user_id TEXT NOT NULL,
        identity TEXT NOT NULL,
        user_profile TEXT NOT NULL,
        tokens TEXT NOT NULL,
        created_at ${bigint} NOT NULL,
        expires_at ${bigint} NOT NULL,
        idle_expires_at ${bigint} NOT NULL
      )`,
      'CREATE INDEX labgate_sessions_user ON labgate_sessions (user_id)',
      'CREATE INDEX labgate_sessions_expires ON labgate_sessions (expires_at)',
    ],
  ];
}

/** The newest schema version this code knows. */
export const SCHEMA_VERSION = 1;

/** Applies the migrations not yet applied, under the executor's cross-process lock. */
export async function migrate(db: SqlExecutor, now: () => number): Promise<number> {
  return db.transaction(
    async (tx) => {
      await tx.run(
        `CREATE TABLE IF NOT EXISTS labgate_schema (version INTEGER PRIMARY KEY, applied_at ${db.bigint} NOT NULL)`,
        [],
      );
      const rows = await tx.all('SELECT MAX(version) AS version FROM labgate_schema', []);
      const current = Number(rows[0]?.['version'] ?? 0);
      if (current > SCHEMA_VERSION) {
        throw new Error(
          `the database schema is version ${current}, newer than this labgate (${SCHEMA_VERSION}): upgrade labgate`,
        );
      }
      const steps = migrations(db.bigint);
      for (let version = current + 1; version <= steps.length; version++) {
        for (const statement of steps[version - 1]!) await tx.run(statement, []);
        await tx.run('INSERT INTO labgate_schema (version, applied_at) VALUES (?, ?)', [
          version,
          wholeMs(now()),
        ]);
      }
      return steps.length;
    },
    { lock: true },
  );
}

function toSession(row: Row): SessionRecord {
  return {
    id: String(row['id']),
    secretHash: String(row['secret_hash']),
    userId: String(row['user_id']),
    identity: String(row['identity']),
    user: JSON.parse(String(row['user_profile'])) as SessionUser,
    tokens: String(row['tokens']),
    createdAt: Number(row['created_at']),
    expiresAt: Number(row['expires_at']),
    idleExpiresAt: Number(row['idle_expires_at']),
  };
}

function toIdentity(row: Row): IdentityRecord {
  return {
    issuer: String(row['issuer']),
    sub: String(row['sub']),
    userId: String(row['user_id']),
    profile: JSON.parse(String(row['profile'])) as SessionUser,
    updatedAt: Number(row['updated_at']),
  };
}

const SWEEP_EVERY = 200;

/**
 * Times are stored as whole milliseconds: PostgreSQL's BIGINT refuses a fraction, which an injected
 * clock (`performance.timeOrigin + performance.now()`, say) gives.
 */
function wholeMs(time: number): number {
  return Math.floor(time);
}

/** A {@link Store} over any {@link SqlExecutor}. */
export class SqlStore implements Store {
  readonly #db: SqlExecutor;
  readonly #now: () => number;
  #writes = 0;

  constructor(db: SqlExecutor, now: () => number = Date.now) {
    this.#db = db;
    this.#now = () => wholeMs(now());
  }

  async #sweep(): Promise<void> {
    // Expired rows are invisible already; deleting them now and then keeps tables small.
    if (++this.#writes % SWEEP_EVERY !== 0) return;
    const now = this.#now();
    await this.#db.run('DELETE FROM labgate_kv WHERE expires_at <= ?', [now]);
    await this.#db.run('DELETE FROM labgate_sessions WHERE expires_at <= ? OR idle_expires_at <= ?', [
      now,
      now,
    ]);
  }

  async put(key: string, value: string, ttlMs: number): Promise<void> {
    await this.#db.run(
      'INSERT INTO labgate_kv (key, value, expires_at) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at',
      [key, value, this.#now() + Math.ceil(ttlMs)],
    );
    await this.#sweep();
  }

  async add(key: string, value: string, ttlMs: number): Promise<boolean> {
    const now = this.#now();
    // Inserts, or replaces an expired value; a live value wins and nothing is returned.
    const rows = await this.#db.all(
      'INSERT INTO labgate_kv (key, value, expires_at) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at WHERE labgate_kv.expires_at <= ? RETURNING key',
      [key, value, now + Math.ceil(ttlMs), now],
    );
    await this.#sweep();
    return rows.length === 1;
  }

  async take(key: string): Promise<string | null> {
    const rows = await this.#db.all('DELETE FROM labgate_kv WHERE key = ? RETURNING value, expires_at', [
      key,
    ]);
    const row = rows[0];
    return row && Number(row['expires_at']) > this.#now() ? String(row['value']) : null;
  }

  async get(key: string): Promise<string | null> {
    const rows = await this.#db.all('SELECT value FROM labgate_kv WHERE key = ? AND expires_at > ?', [
      key,
      this.#now(),
    ]);
    return rows[0] ? String(rows[0]['value']) : null;
  }

  async delete(key: string): Promise<void> {
    await this.#db.run('DELETE FROM labgate_kv WHERE key = ?', [key]);
  }

  async setSession(record: SessionRecord): Promise<void> {
    await this.#db.run(
      `INSERT INTO labgate_sessions (id, secret_hash, user_id, identity, user_profile, tokens, created_at, expires_at, idle_expires_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (id) DO UPDATE SET secret_hash = excluded.secret_hash, user_id = excluded.user_id,
         identity = excluded.identity, user_profile = excluded.user_profile, tokens = excluded.tokens,
         created_at = excluded.created_at, expires_at = excluded.expires_at, idle_expires_at = excluded.idle_expires_at`,
      [
        record.id,
        record.secretHash,
        record.userId,
        record.identity,
        JSON.stringify(record.user),
        record.tokens,
        wholeMs(record.createdAt),
        wholeMs(record.expiresAt),
        wholeMs(record.idleExpiresAt),
      ],
    );
    await this.#sweep();
  }

  async getSession(id: string): Promise<SessionRecord | null> {
    const now = this.#now();
    const rows = await this.#db.all(
      'SELECT * FROM labgate_sessions WHERE id = ? AND expires_at > ? AND idle_expires_at > ?',
      [id, now, now],
    );
    return rows[0] ? toSession(rows[0]) : null;
  }

  async touchSession(id: string, idleExpiresAt: number): Promise<void> {
    // Only a live session slides: touching one that has ended must not bring it back.
    const now = this.#now();
    await this.#db.run(
      'UPDATE labgate_sessions SET idle_expires_at = ? WHERE id = ? AND expires_at > ? AND idle_expires_at > ?',
      [wholeMs(idleExpiresAt), id, now, now],
    );
  }

  async deleteSession(id: string): Promise<void> {
    await this.#db.run('DELETE FROM labgate_sessions WHERE id = ?', [id]);
  }

  async listSessions(userId: string): Promise<SessionRecord[]> {
    const now = this.#now();
    const rows = await this.#db.all(
      'SELECT * FROM labgate_sessions WHERE user_id = ? AND expires_at > ? AND idle_expires_at > ? ORDER BY created_at',
      [userId, now, now],
    );
    return rows.map(toSession);
  }

  async deleteUserSessions(userId: string): Promise<number> {
    // Counts the sessions this call ended; rows that had already expired are removed but not counted.
    const now = this.#now();
    const rows = await this.#db.all(
      'DELETE FROM labgate_sessions WHERE user_id = ? RETURNING expires_at, idle_expires_at',
      [userId],
    );
    return rows.filter((row) => Number(row['expires_at']) > now && Number(row['idle_expires_at']) > now)
      .length;
  }

  async upsertIdentity(
    identity: Omit<IdentityRecord, 'userId'>,
    options: { linkTo?: string; newUserId: string },
  ): Promise<string> {
    const candidate = options.linkTo ?? options.newUserId;
    return this.#db.transaction(async (tx) => {
      await tx.run('INSERT INTO labgate_users (id, created_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING', [
        candidate,
        this.#now(),
      ]);
      // The account keeps the user it is linked to; only the profile snapshot is replaced.
      const rows = await tx.all(
        `INSERT INTO labgate_identities (issuer, sub, user_id, profile, updated_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (issuer, sub) DO UPDATE SET profile = excluded.profile, updated_at = excluded.updated_at
         RETURNING user_id`,
        [
          identity.issuer,
          identity.sub,
          candidate,
          JSON.stringify(identity.profile),
          wholeMs(identity.updatedAt),
        ],
      );
      const userId = String(rows[0]!['user_id']);
      if (userId !== candidate && !options.linkTo)
        await tx.run('DELETE FROM labgate_users WHERE id = ?', [candidate]);
      return userId;
    });
  }

  async listIdentities(userId: string): Promise<IdentityRecord[]> {
    const rows = await this.#db.all(
      'SELECT * FROM labgate_identities WHERE user_id = ? ORDER BY issuer, sub',
      [userId],
    );
    return rows.map(toIdentity);
  }

  async close(): Promise<void> {
    await this.#db.close();
  }
}
