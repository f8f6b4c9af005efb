/**
 * The SQLite store (better-sqlite3 12, WAL): the default for one instance. Several processes may
 * share one database file; migrations run under SQLite's write lock (`BEGIN IMMEDIATE`).
 *
 * @example
 * ```ts
 * import { createSqliteStore } from 'labgate/stores/sqlite';
 * const store = await createSqliteStore({ path: './.labgate/labgate.db' });
 * ```
 * @packageDocumentation
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type Database from 'better-sqlite3';
import { migrate, type Row, type SqlExecutor, SqlStore } from './sql.js';

/** Options of {@link createSqliteStore}. */
export interface SqliteStoreOptions {
  /** Database file (created with its folder); `:memory:` for a private in-memory database. */
  path: string;
  /** How long to wait for another process's write lock, in milliseconds (default 5000). */
  busyTimeout?: number;
  /** Inject the clock (epoch milliseconds). */
  now?: () => number;
}

class SqliteExecutor implements SqlExecutor {
  readonly bigint = 'INTEGER';
  readonly #db: Database.Database;
  readonly #statements = new Map<string, Database.Statement>();
  // better-sqlite3 is synchronous; a transaction that awaits must not let other calls in between, so
  // every call outside a transaction waits its turn in one queue, even while a transaction is open.
  #queue: Promise<unknown> = Promise.resolve();
  // Inside a transaction (which holds the queue), statements run directly; a nested one joins it.
  readonly #inside: SqlExecutor = {
    bigint: this.bigint,
    all: async (sql, params) => this.#prepare(sql).all(...params) as Row[],
    run: async (sql, params) => this.#prepare(sql).run(...params).changes,
    transaction: (fn) => fn(this.#inside),
    close: async () => undefined,
  };

  constructor(db: Database.Database) {
    this.#db = db;
  }

  #prepare(sql: string): Database.Statement {
    let statement = this.#statements.get(sql);
    if (!statement) {
      statement = this.#db.prepare(sql);
      this.#statements.set(sql, statement);
    }
    return statement;
  }

  #serial<T>(run: () => T | Promise<T>): Promise<T> {
    const next = this.#queue.then(run, run);
    this.#queue = next.catch(() => undefined);
    return next;
  }

  all(sql: string, params: readonly unknown[]): Promise<Row[]> {
    return this.#serial(() => this.#prepare(sql).all(...params) as Row[]);
  }

  run(sql: string, params: readonly unknown[]): Promise<number> {
    return this.#serial(() => this.#prepare(sql).run(...params).changes);
  }

  transaction<T>(fn: (tx: SqlExecutor) => Promise<T>, options: { lock?: boolean } = {}): Promise<T> {
    return this.#serial(async () => {
      this.#db.exec(options.lock ? 'BEGIN IMMEDIATE' : 'BEGIN');
      try {
        const result = await fn(this.#inside);
        this.#db.exec('COMMIT');
        return result;
      } catch (error) {
        if (this.#db.inTransaction) this.#db.exec('ROLLBACK');
        throw error;
      }
    });
  }

  async close(): Promise<void> {
    await this.#queue;
    this.#db.close();
  }
}

/**
 * Switches the database to WAL. Several processes opening a fresh file at once race to switch it, and
 * SQLite answers the losers SQLITE_BUSY at once, without its busy handler: retry until the busy timeout.
 */
async function enableWal(db: Database.Database, busyTimeout: number): Promise<void> {
  const deadline = Date.now() + busyTimeout;
  for (;;) {
    try {
      db.pragma('journal_mode = WAL');
      return;
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      if (typeof code !== 'string' || !code.startsWith('SQLITE_BUSY') || Date.now() >= deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 5 + Math.random() * 20));
    }
  }
}

/** Opens (and migrates) a SQLite store. */
export async function createSqliteStore(options: SqliteStoreOptions): Promise<SqlStore> {
  let Driver: typeof Database;
  try {
    Driver = (await import('better-sqlite3')).default;
  } catch {
    throw new TypeError(
      'labgate: the SQLite store needs better-sqlite3 version 12: npm install better-sqlite3@12',
    );
  }
  if (options.path !== ':memory:') mkdirSync(dirname(options.path), { recursive: true });
  const db = new Driver(options.path);
  const busyTimeout = options.busyTimeout ?? 5000;
  const executor = new SqliteExecutor(db);
  const now = options.now ?? Date.now;
  try {
    db.pragma(`busy_timeout = ${busyTimeout}`);
    await enableWal(db, busyTimeout);
    db.pragma('synchronous = NORMAL');
    db.pragma('foreign_keys = ON');
    await migrate(executor, now);
  } catch (error) {
    db.close();
    throw error;
  }
  return new SqlStore(executor, now);
}
