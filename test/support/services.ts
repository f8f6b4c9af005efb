/**
 * The services some tests need (PostgreSQL, Redis) and the isolation each test gets in them.
 *
 * Project rule: in CI (`CI=true`) a test that needs a service FAILS when the service is missing;
 * elsewhere it is skipped, and the skip says which service is missing and how to start it.
 *
 * Isolation: every PostgreSQL store gets a fresh schema (`lg_<random>`, chosen through the
 * connection's `search_path`), every Redis store a fresh key prefix, every SQLite store a fresh
 * temporary folder; each is removed afterwards.
 *
 * @example
 * ```ts
 * const pg = await postgres();
 * describeWithService(pg, () => {
 *   it('works', async () => {
 *     const schema = await createPgSchema();
 *     // createPostgresStore({ ...schema.config })
 *     await schema.drop();
 *   });
 * });
 * ```
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PoolConfig } from 'pg';
import { describe, it } from 'vitest';

/** True when the tests run in CI, where a missing service is a failure. */
export const inCi = process.env['CI'] === 'true';

/** The result of probing a service. */
export interface Service {
  /** `PostgreSQL`, `Redis`. */
  name: string;
  /** Where it was looked for. */
  address: string;
  available: boolean;
  /** Why it is unavailable (the connection error), or `''`. */
  reason: string;
  /** How to start it. */
  start: string;
}

const PG_HOST = process.env['PGHOST'] ?? '127.0.0.1';
const PG_PORT = Number(process.env['PGPORT'] ?? 5432);
const PG_USER = process.env['PGUSER'] ?? 'postgres';
const PG_DATABASE = process.env['PGDATABASE'] ?? 'test';
const REDIS_URL = process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379';
const PROBE_TIMEOUT_MS = 1500;

/** Connection settings of the test database (no schema chosen). */
export const pgBase: PoolConfig = { host: PG_HOST, port: PG_PORT, user: PG_USER, database: PG_DATABASE };

/** The test Redis. */
export const redisUrl = REDIS_URL;

/** A connection string to the test database, with a `search_path` when `schema` is given. */
export function pgUrl(schema?: string): string {
  const url = new URL(`postgres://${encodeURIComponent(PG_USER)}@${PG_HOST}:${PG_PORT}/${PG_DATABASE}`);
  if (schema) url.searchParams.set('options', `-c search_path=${schema}`);
  return url.href;
}

function message(error: unknown): string {
  return error instanceof Error ? error.message || error.name : String(error);
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

let pgProbe: Promise<Service> | undefined;

/** Probes PostgreSQL once per test file (a connection with a short timeout and `SELECT 1`). */
export function postgres(): Promise<Service> {
  pgProbe ??= (async () => {
    const service: Service = {
      name: 'PostgreSQL',
      address: `${PG_HOST}:${PG_PORT}/${PG_DATABASE}`,
      available: false,
      reason: '',
      start: 'pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start',
    };
    try {
      const { Client } = (await import('pg')).default;
      const client = new Client({ ...pgBase, connectionTimeoutMillis: PROBE_TIMEOUT_MS });
      client.on('error', () => undefined);
      try {
        await withTimeout(client.connect(), PROBE_TIMEOUT_MS + 500, 'connect');
        await withTimeout(client.query('SELECT 1'), PROBE_TIMEOUT_MS, 'SELECT 1');
        service.available = true;
      } finally {
        await client.end().catch(() => undefined);
      }
    } catch (error) {
      service.reason = message(error);
    }
    return service;
  })();
  return pgProbe;
}

let redisProbe: Promise<Service> | undefined;

/** Probes Redis once per test file (a connection with a short timeout and `PING`). */
export function redis(): Promise<Service> {
  redisProbe ??= (async () => {
    const service: Service = {
      name: 'Redis',
      address: REDIS_URL,
      available: false,
      reason: '',
      start:
        'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log',
    };
    try {
      const { Redis } = await import('ioredis');
      const client = new Redis(REDIS_URL, {
        lazyConnect: true,
        connectTimeout: PROBE_TIMEOUT_MS,
        enableOfflineQueue: false,
        maxRetriesPerRequest: 0,
        retryStrategy: () => null,
      });
      // ioredis rejects connect() with "Connection is closed."; the cause comes as an error event.
      let cause: unknown;
      client.on('error', (error) => {
        cause ??= error;
      });
      try {
        await withTimeout(client.connect(), PROBE_TIMEOUT_MS + 500, 'connect').catch((error) => {
          throw cause ?? error;
        });
        const pong = await withTimeout(client.ping(), PROBE_TIMEOUT_MS, 'PING');
        service.available = pong === 'PONG';
        if (!service.available) service.reason = `PING answered ${pong}`;
      } finally {
        client.disconnect();
      }
    } catch (error) {
      service.reason = message(error);
    }
    return service;
  })();
  return redisProbe;
}

/**
 * `describe` for tests that need a service. Available: the tests run. Missing in CI: one failing test
 * says so. Missing elsewhere: the tests are listed as skipped under a title naming the service, and a
 * warning says how to start it.
 */
export function describeWithService(service: Service, name: string, fn: () => void): void {
  if (service.available) {
    describe(name, fn);
    return;
  }
  const why = `${service.name} is not reachable at ${service.address} (${service.reason})`;
  if (inCi) {
    describe(name, () => {
      it(`needs ${service.name}`, () => {
        throw new Error(`${why}; CI=true requires it. Start it with: ${service.start}`);
      });
    });
    return;
  }
  console.warn(`[labgate tests] skipping "${name}": ${why}. Start it with: ${service.start}`);
  describe.skip(`${name} [skipped: ${why}; set CI=true to make this a failure]`, fn);
}

/** A random lowercase identifier: `lg_` and 16 hex digits. */
export function uniqueName(prefix = 'lg_'): string {
  return `${prefix}${randomBytes(8).toString('hex')}`;
}

/** A fresh PostgreSQL schema and the pool settings that put a store in it. */
export interface PgSchema {
  schema: string;
  /** Pool settings for `createPostgresStore`: the test database with `search_path` set to the schema. */
  config: PoolConfig;
  /** Every row of every table in the schema, as text (one line per row, values tab-separated). */
  dump(): Promise<string>;
  /** Runs one query in the schema (for assertions). */
  query(sql: string, params?: unknown[]): Promise<Record<string, unknown>[]>;
  /** Drops the schema and everything in it. */
  drop(): Promise<void>;
}

async function pgAdmin<T>(fn: (client: import('pg').Client) => Promise<T>): Promise<T> {
  const { Client } = (await import('pg')).default;
  const client = new Client({ ...pgBase, connectionTimeoutMillis: 3000 });
  client.on('error', () => undefined);
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Creates an empty schema `lg_<random>` in the test database. */
export async function createPgSchema(): Promise<PgSchema> {
  const schema = uniqueName();
  await pgAdmin((client) => client.query(`CREATE SCHEMA ${schema}`));
  const config: PoolConfig = { ...pgBase, options: `-c search_path=${schema}` };
  const query = (sql: string, params: unknown[] = []) =>
    pgAdmin(async (client) => {
      await client.query(`SET search_path = ${schema}`);
      return (await client.query(sql, params)).rows as Record<string, unknown>[];
    });
  return {
    schema,
    config,
    query,
    async dump() {
      return pgAdmin(async (client) => {
        const tables = await client.query<{ table_name: string }>(
          "SELECT table_name FROM information_schema.tables WHERE table_schema = $1 AND table_type = 'BASE TABLE' ORDER BY table_name",
          [schema],
        );
        const out: string[] = [];
        for (const { table_name } of tables.rows) {
          out.push(`# ${table_name}`);
          // Every column cast to text by PostgreSQL itself: what is on disk, not a driver's rendering.
          const rows = await client.query<{ row: string }>(
            `SELECT t::text AS row FROM ${schema}.${table_name} t`,
          );
          for (const { row } of rows.rows) out.push(row);
        }
        return out.join('\n');
      });
    },
    async drop() {
      await pgAdmin((client) => client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`));
    },
  };
}

/** A fresh Redis key prefix and its cleanup. */
export interface RedisPrefix {
  /** `lg_<random>:`. */
  prefix: string;
  /** Every key under the prefix with its value (strings, hashes, sets, lists, sorted sets), as text. */
  dump(): Promise<string>;
  /** The keys under the prefix. */
  keys(): Promise<string[]>;
  /** Deletes every key under the prefix (found with SCAN, never KEYS). */
  clean(): Promise<void>;
}

async function redisAdmin<T>(fn: (client: import('ioredis').Redis) => Promise<T>): Promise<T> {
  const { Redis } = await import('ioredis');
  const client = new Redis(REDIS_URL, { lazyConnect: true, connectTimeout: 3000, maxRetriesPerRequest: 1 });
  client.on('error', () => undefined);
  await client.connect();
  try {
    return await fn(client);
  } finally {
    client.disconnect();
  }
}

async function scanKeys(client: import('ioredis').Redis, prefix: string): Promise<string[]> {
  // The prefix is `lg_` and hex digits, so it has no glob characters to escape.
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await client.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== '0');
  return [...new Set(keys)].sort();
}

/** Picks a key prefix no other test uses. */
export function createRedisPrefix(): RedisPrefix {
  const prefix = `${uniqueName()}:`;
  return {
    prefix,
    keys: () => redisAdmin((client) => scanKeys(client, prefix)),
    async dump() {
      return redisAdmin(async (client) => {
        const out: string[] = [];
        for (const key of await scanKeys(client, prefix)) {
          const type = await client.type(key);
          let value: unknown;
          if (type === 'string') value = await client.get(key);
          else if (type === 'hash') value = await client.hgetall(key);
          else if (type === 'set') value = await client.smembers(key);
          else if (type === 'list') value = await client.lrange(key, 0, -1);
          else if (type === 'zset') value = await client.zrange(key, 0, -1, 'WITHSCORES');
          else value = `<${type}>`;
          out.push(`${key}\t${type}\t${typeof value === 'string' ? value : JSON.stringify(value)}`);
        }
        return out.join('\n');
      });
    },
    async clean() {
      await redisAdmin(async (client) => {
        const keys = await scanKeys(client, prefix);
        for (let i = 0; i < keys.length; i += 500) await client.del(...keys.slice(i, i + 500));
      });
    },
  };
}

/** A fresh temporary folder. */
export interface TempDir {
  path: string;
  remove(): Promise<void>;
}

/** Creates a temporary folder (for SQLite files). */
export async function createTempDir(prefix = 'labgate-test-'): Promise<TempDir> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}

/**
 * Polls `check` until it returns true, or fails after `timeoutMs`. For waiting on real time (Redis
 * expiry) without fixed sleeps: the wait ends as soon as the condition holds.
 */
export async function pollUntil(
  check: () => Promise<boolean> | boolean,
  options: { timeoutMs: number; intervalMs?: number; what: string },
): Promise<void> {
  const deadline = Date.now() + options.timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline)
      throw new Error(`timed out after ${options.timeoutMs} ms waiting for ${options.what}`);
    await new Promise((resolve) => setTimeout(resolve, options.intervalMs ?? 10));
  }
}
