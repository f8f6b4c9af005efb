/**
 * The conformance suite on the Redis store (a fresh key prefix per test), then what is its own: every
 * key it writes stays under its prefix, and values, sessions and the index of a user's sessions carry
 * Redis expiry. Expiry cases wait
 * on Redis's real clock with a bounded poll. Needs Redis at 127.0.0.1:6379 (see test/support/services.ts).
 */
import { expect, it } from 'vitest';
import { createRedisStore } from '../../src/stores/redis.js';
import { createRedisPrefix, describeWithService, redis, redisUrl } from '../support/services.js';
import { sessionUser, storeConformance } from './suite.js';

const service = await redis();

describeWithService(service, 'redis store', () => {
  storeConformance('redis', async () => {
    const prefix = createRedisPrefix();
    const store = await createRedisStore({ url: redisUrl, prefix: prefix.prefix });
    return {
      store,
      now: Date.now,
      raw: () => prefix.dump(),
      shared: { kind: 'redis', url: redisUrl, prefix: prefix.prefix },
      close: async () => {
        await store.close();
        await prefix.clean();
      },
    };
  });

  it('keeps every key under its prefix, and values and sessions expire in Redis', async () => {
    const prefix = createRedisPrefix();
    const store = await createRedisStore({ url: redisUrl, prefix: prefix.prefix });
    try {
      const now = Date.now();
      await store.put('k', 'v', 60_000);
      await store.add('lock', '1', 60_000);
      await store.setSession({
        id: 's1',
        secretHash: 'h',
        userId: 'u1',
        identity: 'https://gitlab.example.com 1',
        user: sessionUser({ sub: '1', id: 1, username: 'u', name: 'U' }),
        tokens: 'sealed',
        createdAt: now,
        expiresAt: now + 3_600_000,
        idleExpiresAt: now + 600_000,
      });
      const keys = await prefix.keys();
      expect(keys.length).toBeGreaterThan(0);
      for (const key of keys) expect(key.startsWith(prefix.prefix)).toBe(true);
      const { Redis } = await import('ioredis');
      const client = new Redis(redisUrl);
      try {
        expect(await client.pttl(`${prefix.prefix}kv:k`)).toBeGreaterThan(59_000);
        expect(await client.pttl(`${prefix.prefix}kv:lock`)).toBeGreaterThan(59_000);
        // A session lives until the earlier of its two expiries.
        const ttl = await client.pttl(`${prefix.prefix}session:s1`);
        expect(ttl).toBeGreaterThan(590_000);
        expect(ttl).toBeLessThanOrEqual(600_000);
        await store.touchSession('s1', Date.now() + 1_200_000);
        expect(await client.pttl(`${prefix.prefix}session:s1`)).toBeGreaterThan(1_190_000);
        // The user's index of sessions expires too, with the longest absolute expiry of its sessions.
        const index = `${prefix.prefix}user-sessions:u1`;
        const indexTtl = await client.pttl(index);
        expect(indexTtl).toBeGreaterThan(3_590_000);
        expect(indexTtl).toBeLessThanOrEqual(3_600_000);
        const second = { ...(await store.getSession('s1'))!, id: 's2', expiresAt: now + 7_200_000 };
        await store.setSession(second);
        expect(await client.pttl(index)).toBeGreaterThan(7_190_000);
        await store.setSession({ ...second, id: 's3', expiresAt: now + 1_800_000 });
        expect(await client.pttl(index)).toBeGreaterThan(7_190_000);
      } finally {
        client.disconnect();
      }
    } finally {
      await store.close();
      await prefix.clean();
    }
  });

  it('a session whose time is up but whose key Redis still holds stays ended: touch, deleteUserSessions', async () => {
    const prefix = createRedisPrefix();
    const store = await createRedisStore({ url: redisUrl, prefix: prefix.prefix });
    const { Redis } = await import('ioredis');
    const client = new Redis(redisUrl);
    try {
      const now = Date.now();
      const key = `${prefix.prefix}session:late`;
      const data = { id: 'late', userId: 'u1', expiresAt: now + 3_600_000, createdAt: now - 60_000 };
      // Idle since a second ago by the app's clock; Redis would drop the key only within the minute.
      await client.hset(key, { data: JSON.stringify(data), idle: String(now - 1_000) });
      await client.pexpire(key, 60_000);
      await client.sadd(`${prefix.prefix}user-sessions:u1`, 'late');
      await store.touchSession('late', Date.now() + 600_000);
      expect(await client.hget(key, 'idle')).toBe(String(now - 1_000));
      expect(await store.getSession('late')).toBeNull();
      // Ending the user's sessions removes it, but does not count it among the sessions it ended.
      expect(await store.deleteUserSessions('u1')).toBe(0);
      expect(await client.exists(key)).toBe(0);
    } finally {
      client.disconnect();
      await store.close();
      await prefix.clean();
    }
  });

  it('fails fast, with the driver error, when the server cannot be reached', async () => {
    await expect(
      createRedisStore({ url: 'redis://127.0.0.1:1', redis: { retryStrategy: () => null } }),
    ).rejects.toThrow(/ECONNREFUSED|connect|Connection/i);
  });
});
