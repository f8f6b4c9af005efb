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
  // better-sqlite3 is synchronous; a transaction that awaits must not let other calls in between.
  #queue: Promise<unknown> = Promise.resolve();
  #inTransaction = false;

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
    if (this.#inTransaction) return Promise.resolve().then(run);
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
      this.#inTransaction = true;
      try {
        const result = await fn(this);
        this.#db.exec('COMMIT');
        return result;
      } catch (error) {
        if (this.#db.inTransaction) this.#db.exec('ROLLBACK');
        throw error;
      } finally {
        this.#inTransaction = false;
      }
    });
  }

  async close(): Promise<void> {
    await this.#queue;
    this.#db.close();
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
  db.pragma(`busy_timeout = ${options.busyTimeout ?? 5000}`);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma('foreign_keys = ON');
  const executor = new SqliteExecutor(db);
  const now = options.now ?? Date.now;
  try {
    await migrate(executor, now);
  } catch (error) {
    db.close();
    throw error;
  }
  return new SqlStore(executor, now);
}
