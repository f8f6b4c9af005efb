/**
 * The PostgreSQL store (`pg`): for several instances behind a load balancer. Migrations run under an
 * advisory lock, so instances may start at once; every operation is one atomic statement.
 *
 * @example
 * ```ts
 * import { createPostgresStore } from 'labgate/stores/postgres';
 * const store = await createPostgresStore({ connectionString: process.env.LABGATE_STORE });
 * ```
 * @packageDocumentation
 */
import type { Pool, PoolClient, PoolConfig } from 'pg';
import { migrate, type Row, type SqlExecutor, SqlStore } from './sql.js';

/** Options of {@link createPostgresStore}: a connection string or any `pg` pool settings. */
export interface PostgresStoreOptions extends PoolConfig {
  /** Inject the clock (epoch milliseconds). */
  now?: () => number;
}

// The migration lock's key: a fixed 64-bit number chosen for labgate.
const MIGRATION_LOCK = 0x6c61_6267_6174;

function numbered(sql: string): string {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
}

class PostgresExecutor implements SqlExecutor {
  readonly bigint = 'BIGINT';
  readonly #pool: Pool | PoolClient;
  readonly #owner: Pool | null;

  constructor(pool: Pool | PoolClient, owner: Pool | null) {
    this.#pool = pool;
    this.#owner = owner;
  }

  async all(sql: string, params: readonly unknown[]): Promise<Row[]> {
    return (await this.#pool.query(numbered(sql), params as unknown[])).rows as Row[];
  }

  async run(sql: string, params: readonly unknown[]): Promise<number> {
    return (await this.#pool.query(numbered(sql), params as unknown[])).rowCount ?? 0;
  }

  async transaction<T>(fn: (tx: SqlExecutor) => Promise<T>, options: { lock?: boolean } = {}): Promise<T> {
    if (!this.#owner) return fn(this);
    const client = await this.#owner.connect();
    let broken: Error | undefined;
    try {
      await client.query('BEGIN');
      if (options.lock) await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
      const result = await fn(new PostgresExecutor(client, null));
      await client.query('COMMIT');
      return result;
    } catch (error) {
      await client.query('ROLLBACK').catch((rollback: Error) => {
        broken = rollback;
      });
      throw error;
    } finally {
      // A connection whose rollback failed is dropped from the pool, not reused.
      client.release(broken);
    }
  }

  async close(): Promise<void> {
    await this.#owner?.end();
  }
}

/** Opens (and migrates) a PostgreSQL store. */
export async function createPostgresStore(options: PostgresStoreOptions): Promise<SqlStore> {
  let PgPool: typeof Pool;
  try {
    PgPool = (await import('pg')).default.Pool;
  } catch {
    throw new TypeError('labgate: the PostgreSQL store needs pg: npm install pg');
  }
  const { now = Date.now, ...config } = options;
  const pool = new PgPool({ connectionTimeoutMillis: 3000, query_timeout: 10_000, max: 10, ...config });
  // An idle client losing its connection (the server restarted) must not crash the process.
  pool.on('error', () => undefined);
  const executor = new PostgresExecutor(pool, pool);
  try {
    await migrate(executor, now);
  } catch (error) {
    await pool.end().catch(() => undefined);
    throw error;
  }
  return new SqlStore(executor, now);
}
