/**
 * The Redis store, on `ioredis`: chosen because it fails fast when told to (no offline queue, one
 * retry per command), reconnects by itself in the background, and speaks to Sentinel and Cluster
 * deployments with the same API. Single-use values are `SET NX PX` and `GETDEL`; expiry is Redis's own.
 *
 * @example
 * ```ts
 * import { createRedisStore } from 'labgate/stores/redis';
 * const store = await createRedisStore({ url: 'redis://127.0.0.1:6379' });
 * ```
 * @packageDocumentation
 */
import type { Redis, RedisOptions } from 'ioredis';
import type { IdentityRecord, SessionRecord, SessionUser, Store } from '../core/store.js';

/** Options of {@link createRedisStore}. */
export interface RedisStoreOptions {
  /** `redis://[:password@]host:port[/db]` or `rediss://…`. */
  url?: string;
  /** ioredis options (merged over labgate's fail-fast defaults). */
  redis?: RedisOptions;
  /** Key prefix (default `labgate:`), so several apps can share one Redis. */
  prefix?: string;
  /** Inject the clock (epoch milliseconds); expiry itself is Redis's. */
  now?: () => number;
}

/** A Lua function for the scripts below: a session's decoded data when it is live at `now`, else nil. */
const LIVE = `
local function live(key, now)
  local data = redis.call('HGET', key, 'data')
  if not data then return nil end
  local session = cjson.decode(data)
  local idle = tonumber(redis.call('HGET', key, 'idle'))
  if session.expiresAt <= now or (idle and idle <= now) then return nil end
  return session
end
`;

/**
 * Slides a live session's idle expiry (KEYS[1]; ARGV[1] the new idle expiry, ARGV[2] now). A session
 * whose time is up stays ended, even while Redis still holds its key (it drops it up to 1 ms later).
 */
const TOUCH = `${LIVE}
local now = tonumber(ARGV[2])
local session = live(KEYS[1], now)
if not session then return 0 end
local ttl = math.min(session.expiresAt, tonumber(ARGV[1])) - now
if ttl < 1 then ttl = 1 end
redis.call('HSET', KEYS[1], 'idle', ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.floor(ttl))
return 1
`;

/**
 * Deletes every session in a user's index (KEYS[1]; ARGV[1] the session key prefix) and the index, and
 * counts those that were live at ARGV[2], as every other store counts.
 */
const DELETE_USER_SESSIONS = `${LIVE}
local now = tonumber(ARGV[2])
local ended = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[1] .. id
  if live(key, now) then ended = ended + 1 end
  redis.call('DEL', key)
end
redis.call('DEL', KEYS[1])
return ended
`;

/**
 * Sets a key's expiry to ARGV[1] ms unless it already lives longer (PEXPIRE … GT needs Redis 7, and
 * treats a key without expiry as living forever).
 */
const EXTEND_EXPIRY = `local ttl = redis.call('PTTL', KEYS[1])
if ttl < tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 0`;

/** A {@link Store} on Redis. */
export class RedisStore implements Store {
  readonly #redis: Redis;
  readonly #prefix: string;
  readonly #now: () => number;

  constructor(redis: Redis, options: { prefix?: string; now?: () => number } = {}) {
    this.#redis = redis;
    this.#prefix = options.prefix ?? 'labgate:';
    this.#now = options.now ?? Date.now;
  }

  #key(kind: string, id: string): string {
    return `${this.#prefix}${kind}:${id}`;
  }

  #ttl(until: number): number {
    return Math.max(1, Math.ceil(until - this.#now()));
  }

  async put(key: string, value: string, ttlMs: number): Promise<void> {
    await this.#redis.set(this.#key('kv', key), value, 'PX', Math.max(1, Math.ceil(ttlMs)));
  }

  async add(key: string, value: string, ttlMs: number): Promise<boolean> {
    return (
      (await this.#redis.set(this.#key('kv', key), value, 'PX', Math.max(1, Math.ceil(ttlMs)), 'NX')) === 'OK'
    );
  }

  async take(key: string): Promise<string | null> {
    return this.#redis.getdel(this.#key('kv', key));
  }

  async get(key: string): Promise<string | null> {
    return this.#redis.get(this.#key('kv', key));
  }

  async delete(key: string): Promise<void> {
    await this.#redis.del(this.#key('kv', key));
  }

  async setSession(record: SessionRecord): Promise<void> {
    const key = this.#key('session', record.id);
    const { idleExpiresAt, ...data } = record;
    // A replaced session that changes user leaves its old user's index.
    const previous = await this.#redis.hget(key, 'data');
    const previousUser = previous ? (JSON.parse(previous) as SessionRecord).userId : record.userId;
    // The sliding expiry is its own field, so a touch never rewrites (and never reverts) the tokens.
    const transaction = this.#redis
      .multi()
      .hset(key, { data: JSON.stringify(data), idle: String(idleExpiresAt) })
      .pexpire(key, this.#ttl(Math.min(record.expiresAt, idleExpiresAt)))
      .sadd(this.#key('user-sessions', record.userId), record.id)
      // The user's index lives as long as the longest of its sessions can (their absolute expiry).
      .eval(EXTEND_EXPIRY, 1, this.#key('user-sessions', record.userId), String(this.#ttl(record.expiresAt)));
    if (previousUser !== record.userId) transaction.srem(this.#key('user-sessions', previousUser), record.id);
    await transaction.exec();
  }

  #toSession(fields: Record<string, string>): SessionRecord | null {
    if (!fields['data'] || !fields['idle']) return null;
    const record = {
      ...(JSON.parse(fields['data']) as Omit<SessionRecord, 'idleExpiresAt'>),
      idleExpiresAt: Number(fields['idle']),
    };
    const now = this.#now();
    return record.expiresAt > now && record.idleExpiresAt > now ? record : null;
  }

  async getSession(id: string): Promise<SessionRecord | null> {
    return this.#toSession(await this.#redis.hgetall(this.#key('session', id)));
  }

  async touchSession(id: string, idleExpiresAt: number): Promise<void> {
    // One script: only a live session is touched (one Redis has not yet dropped but whose time is up
    // stays ended), so a concurrent delete or expiry is never undone.
    await this.#redis.eval(TOUCH, 1, this.#key('session', id), String(idleExpiresAt), String(this.#now()));
  }

  async deleteSession(id: string): Promise<void> {
    const key = this.#key('session', id);
    const data = await this.#redis.hget(key, 'data');
    const pipeline = this.#redis.multi().del(key);
    if (data) pipeline.srem(this.#key('user-sessions', (JSON.parse(data) as SessionRecord).userId), id);
    await pipeline.exec();
  }

  async listSessions(userId: string): Promise<SessionRecord[]> {
    const index = this.#key('user-sessions', userId);
    const ids = await this.#redis.smembers(index);
    if (ids.length === 0) return [];
    const pipeline = this.#redis.pipeline();
    for (const id of ids) pipeline.hgetall(this.#key('session', id));
    const results = (await pipeline.exec()) ?? [];
    const live: SessionRecord[] = [];
    const gone: string[] = [];
    results.forEach(([error, fields], i) => {
      const record = error ? null : this.#toSession(fields as Record<string, string>);
      if (record?.userId === userId) live.push(record);
      else gone.push(ids[i]!);
    });
    if (gone.length > 0) await this.#redis.srem(index, ...gone);
    return live.sort((a, b) => a.createdAt - b.createdAt);
  }

  async deleteUserSessions(userId: string): Promise<number> {
    const ended = await this.#redis.eval(
      DELETE_USER_SESSIONS,
      1,
      this.#key('user-sessions', userId),
      this.#key('session', ''),
      String(this.#now()),
    );
    return Number(ended);
  }

  async upsertIdentity(
    identity: Omit<IdentityRecord, 'userId'>,
    options: { linkTo?: string; newUserId: string },
  ): Promise<string> {
    const key = this.#key('identity', `${identity.issuer} ${identity.sub}`);
    const candidate = options.linkTo ?? options.newUserId;
    // HSETNX decides atomically which user the account belongs to; later sign-ins keep it.
    const results = await this.#redis.multi().hsetnx(key, 'userId', candidate).hget(key, 'userId').exec();
    const userId = String(results?.[1]?.[1] ?? candidate);
    await this.#redis
      .multi()
      .hset(key, { profile: JSON.stringify(identity.profile), updatedAt: String(identity.updatedAt) })
      .hsetnx(this.#key('user', userId), 'createdAt', String(this.#now()))
      .sadd(this.#key('user-identities', userId), `${identity.issuer} ${identity.sub}`)
      .exec();
    return userId;
  }

  async listIdentities(userId: string): Promise<IdentityRecord[]> {
    const names = (await this.#redis.smembers(this.#key('user-identities', userId))).sort();
    const out: IdentityRecord[] = [];
    for (const name of names) {
      const fields = await this.#redis.hgetall(this.#key('identity', name));
      if (fields['userId'] !== userId || !fields['profile']) continue;
      const at = name.lastIndexOf(' ');
      out.push({
        issuer: name.slice(0, at),
        sub: name.slice(at + 1),
        userId,
        profile: JSON.parse(fields['profile']) as SessionUser,
        updatedAt: Number(fields['updatedAt']),
      });
    }
    return out;
  }

  async close(): Promise<void> {
    this.#redis.disconnect();
  }
}

/** Connects a Redis store. Commands fail fast while Redis is down; the connection comes back by itself. */
export async function createRedisStore(options: RedisStoreOptions = {}): Promise<RedisStore> {
  let Client: typeof Redis;
  try {
    Client = (await import('ioredis')).Redis;
  } catch {
    throw new TypeError('labgate: the Redis store needs ioredis: npm install ioredis');
  }
  const settings: RedisOptions = {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: 3000,
    commandTimeout: 5000,
    lazyConnect: true,
    retryStrategy: (attempt) => Math.min(attempt * 200, 2000),
    ...options.redis,
  };
  const redis = options.url ? new Client(options.url, settings) : new Client(settings);
  // Connection errors surface as failed commands (503); the client keeps reconnecting.
  redis.on('error', () => undefined);
  try {
    await redis.connect();
  } catch (error) {
    // Do not keep reconnecting in the background of a process that is about to fail its start.
    redis.disconnect();
    throw new Error(`labgate: Redis is not reachable: ${(error as Error).message}`, { cause: error });
  }
  return new RedisStore(redis, {
    ...(options.prefix !== undefined ? { prefix: options.prefix } : {}),
    ...(options.now ? { now: options.now } : {}),
  });
}
