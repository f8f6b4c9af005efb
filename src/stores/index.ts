/**
 * Opens the store named by `LABGATE_STORE`: `sqlite:PATH` (the default, `sqlite:./.labgate/labgate.db`),
 * `postgres://…` (or `postgresql://…`), `redis://…` (or `rediss://…`; `?prefix=app1:` sets the key prefix),
 * `memory:`. Drivers load lazily,
 * so only the one in use must be installed.
 *
 * @example
 * ```ts
 * import { openStore } from 'labgate/stores';
 * const store = await openStore(process.env.LABGATE_STORE);
 * ```
 * @packageDocumentation
 */
import { MemoryStore, type Store } from '../core/store.js';

/** The default `LABGATE_STORE`. */
export const DEFAULT_STORE = 'sqlite:./.labgate/labgate.db';

/** Options of {@link openStore}. */
export interface OpenStoreOptions {
  /** Inject the clock (epoch milliseconds). */
  now?: () => number;
}

/** A store URL without its password, for logs and error messages. */
export function describeStore(url: string): string {
  let parsed: URL | null = null;
  try {
    parsed = new URL(url);
  } catch {
    // Not a URL: handled below.
  }
  if (parsed?.host) {
    if (parsed.password) parsed.password = '***';
    // `pg` also reads a password from the query string (`?password=`).
    for (const name of [...parsed.searchParams.keys()]) {
      if (/pass|secret|token/i.test(name)) parsed.searchParams.set(name, '***');
    }
    return parsed.href;
  }
  // No authority the parser understood (`postgres:/user:pw@host`, `user:pw@host`): a password may sit
  // anywhere before the last `@`, so show only the scheme and what follows it.
  const at = url.lastIndexOf('@');
  if (at >= 0) return `${url.slice(0, url.indexOf(':') + 1)}***${url.slice(at)}`;
  return parsed ? url : (url.split(':', 1)[0] ?? 'store');
}

/**
 * Opens a store from a `LABGATE_STORE` value (default {@link DEFAULT_STORE}).
 * @throws {TypeError} for an unknown scheme or a missing driver.
 */
export async function openStore(url: string = DEFAULT_STORE, options: OpenStoreOptions = {}): Promise<Store> {
  const now = options.now ? { now: options.now } : {};
  if (url === 'memory:' || url === 'memory') return new MemoryStore(now);
  if (url.startsWith('sqlite:')) {
    const path =
      url.slice('sqlite:'.length).replace(/^\/\/(?=\/)/, '') || DEFAULT_STORE.slice('sqlite:'.length);
    // `sqlite://name/x.db` reads as a host and a path: neither the relative `name/x.db` it may mean
    // nor the absolute `/name/x.db` a file system would make of it is safe to guess.
    if (path.startsWith('//'))
      throw new TypeError(
        `labgate: LABGATE_STORE ${JSON.stringify(describeStore(url))} names no file: write sqlite:relative/path.db, sqlite:/absolute/path.db or sqlite:///absolute/path.db`,
      );
    const { createSqliteStore } = await import('./sqlite.js');
    return createSqliteStore({ path, ...now });
  }
  if (url.startsWith('postgres://') || url.startsWith('postgresql://')) {
    const { createPostgresStore } = await import('./postgres.js');
    return createPostgresStore({ connectionString: url, ...now });
  }
  if (url.startsWith('redis://') || url.startsWith('rediss://')) {
    // `?prefix=app1:` keeps several apps (or test runs) apart in one Redis.
    const parsed = new URL(url);
    const prefix = parsed.searchParams.get('prefix');
    parsed.searchParams.delete('prefix');
    const { createRedisStore } = await import('./redis.js');
    return createRedisStore({ url: parsed.href, ...(prefix ? { prefix } : {}), ...now });
  }
  throw new TypeError(
    `labgate: LABGATE_STORE ${JSON.stringify(describeStore(url))} is not one of sqlite:PATH, postgres://…, redis://…, memory:`,
  );
}
