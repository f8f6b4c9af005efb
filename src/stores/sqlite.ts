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
import { chmodSync, closeSync, fchmodSync, mkdirSync, openSync } from 'node:fs';
import { dirname, join, relative, sep } from 'node:path';
import type Database from 'better-sqlite3';
import { migrate, type Row, type SqlExecutor, SqlStore } from './sql.js';

/** Options of {@link createSqliteStore}. */
export interface SqliteStoreOptions {
  /**
   * Database file; `:memory:` for a private in-memory database. A missing file is created `0600` and
   * missing folders `0700`, whatever the umask; existing ones keep their modes.
   */
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

/**
 * Creates the database's folder, and each missing folder above it, `0700` whatever the umask: the
 * database holds sessions and (encrypted) GitLab tokens. A folder that already exists is the user's
 * choice and is left as it is.
 */
function createFolder(folder: string): void {
  const first = mkdirSync(folder, { recursive: true, mode: 0o700 });
  if (first === undefined) return;
  // mkdirSync's mode passes through the umask: set it on every folder this call created.
  let current = first;
  chmodSync(current, 0o700);
  for (const part of relative(first, folder).split(sep).filter(Boolean)) {
    current = join(current, part);
    chmodSync(current, 0o700);
  }
}

/**
 * Creates the database file `0600` (owner only) if it does not exist, whatever the umask; returns
 * whether this call created it. SQLite gives the `-wal` and `-shm` files the database file's mode.
 */
function createDatabaseFile(path: string): boolean {
  let fd: number;
  try {
    fd = openSync(path, 'wx', 0o600);
  } catch (error) {
    // Another process (or an earlier run) made it first: an existing file keeps its owner's mode.
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw error;
  }
  try {
    fchmodSync(fd, 0o600);
  } finally {
    closeSync(fd);
  }
  return true;
}

/** Sets `0600` on the `-wal` and `-shm` files of a database this process created, where they exist. */
function restrictSidecars(path: string): void {
  for (const file of [`${path}-wal`, `${path}-shm`]) {
    try {
      chmodSync(file, 0o600);
    } catch (error) {
      // Absent (not in WAL yet, or removed by the last close): nothing to restrict.
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
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
  const onDisk = options.path !== ':memory:' && options.path !== '';
  let created = false;
  if (onDisk) {
    createFolder(dirname(options.path));
    created = createDatabaseFile(options.path);
  }
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
    if (created) restrictSidecars(options.path);
  } catch (error) {
    db.close();
    throw error;
  }
  return new SqlStore(executor, now);
}
